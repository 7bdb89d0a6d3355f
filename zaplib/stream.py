"""The ALMA mega-batch stream of *Learn, Unlearn and Relearn* (LURE; Ramkumar et al. 2023).

One function, :func:`run_stream`, trains one model through one stream under one method and returns
tidy tables; it is a pure function of its JSON config (:func:`make_config`), so the results store
(:class:`zaplib.store.Store`) can cache it and :func:`zaplib.store.sweep` can fan it out. The
chapter's stored experiment, its variants, configs and claims live in
:mod:`zaplib.experiments.lure`.

The stream (LURE §3 "Learn", §4, App. A.2; Caccia et al. 2021):

- The training set is shuffled once with ``order_seed`` and cut into ``n_megabatches`` equal
  mega-batches, each split 90/10 into train/validation (:func:`cut_stream`). The shuffle is ours and
  necessary: the offline CIFAR-10 copy is sorted by class, so cutting it in file order would give
  single-class mega-batches (LURE's code cuts torchvision's original, class-interleaved order).
- Replay (:func:`replay_schedule`, App. Alg. 1 lines 3–6 and §5.2): ``full`` trains on the union of
  all mega-batches so far; ``none`` on the current one only; ``buffered`` on the current one plus a
  buffer that, after each mega-batch, grows by ``buffer_size`` train (``buffer_size_val`` val)
  indices drawn from that stage's training (validation) list — LURE's code (which adds 182; the
  paper says 186/187, our default is 186).
- Per mega-batch (App. A.2 "Implementation details"): SGD momentum 0.9, weight decay 1e-4, lr 0.1
  ×0.1 at epochs 20 and 40, batch 64, 50 epochs, no early stopping; the lr is reset to 0.1 at each
  new mega-batch while the optimiser's momentum state is kept; the best-validation-accuracy epoch's
  checkpoint is carried into the next mega-batch (LURE's code). Training uses random crop 32 pad 4
  + flip; validation uses the same augmentation (LURE's code).
- Between mega-batches (before every mega-batch but the first) the method acts on the carried model:
  ``bl`` (warm start, Caccia et al.) does nothing; ``sp`` is Shrink & Perturb
  (:func:`zaplib.resets.shrink_perturb`, either form); ``llf`` re-initialises ``layer3``, ``layer4``
  and ``fc`` (:func:`zaplib.resets.reinit_layers`); ``lure`` scores the weights on a small batch,
  keeps the top ``1 − reset_fraction`` and re-draws the rest (:func:`zaplib.resets.lure_reset`,
  §3 eqs. 2–3, App. Alg. 1 lines 8–11); ``scratch`` re-initialises the whole model and optimiser
  (cold start, for reference).
- Metrics after every mega-batch (§4 "Metrics"): test accuracy and number of test errors (CER is
  their running sum), the generalisation gap (train accuracy − validation accuracy at the carried
  epoch; train accuracy is the running mean over that epoch's augmented batches, as LURE's code
  logs it), and ECE with 15 bins (§7.1; ours, the code has none).
- After the stream, optional probes of the final model: procedural corruptions (§6.1,
  :mod:`zaplib.corruptions`), PGD-10 (§6.2), Gaussian weight noise (§7.2); label noise during the
  stream is ``label_noise`` (§6.3).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import corruptions, data, metrics, models, probes, resets, samplers, train
from . import get_device

METHODS = ("bl", "sp", "llf", "lure", "scratch")
REPLAYS = ("full", "buffered", "none")

#: Every knob of :func:`run_stream`, with the values of LURE's Table 1 (CIFAR-10, ResNet-18, full
#: replay, 8 mega-batches of 6,250) as defaults.
DEFAULT_CONFIG: dict = {
    # data and stream
    "dataset": "cifar10",          # cifar10 | fashion_mnist | synthetic (tiny, for tests)
    "n_pool": None,                # training images fed to the stream (None: all 50,000)
    "n_test": None,                # test images (a fixed random subset; None: all 10,000)
    "order_seed": 0,               # the one shuffle of the stream (same for every method/seed)
    "n_megabatches": 8,
    "val_fraction": 0.1,
    "replay": "full",              # full | buffered | none
    "buffer_size": 186,            # buffered replay: train indices added per mega-batch (paper: 186; code: 182)
    "buffer_size_val": None,       # ... validation indices (None: buffer_size, as the code)
    "label_noise": 0.0,            # symmetric label noise on the training pool (§6.3)
    # model
    "model": "resnet18",           # resnet18 | resnet50 | wide_resnet50_2 | vgg16_bn
    "width": 64,                   # resnet18 only
    "channels_last": True,         # NHWC weights: same maths, ~1.4x faster small convs on the CPU
    # optimisation per mega-batch
    "epochs": 50,
    "batch_size": 64,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "lr_milestones": [20, 40],
    "lr_gamma": 0.1,
    "lr_reset": True,              # lr back to ``lr`` at every mega-batch (code); False: keep decayed lr
    "keep_optimizer_state": True,  # momentum buffers survive mega-batches (code)
    "carry_best": True,            # carry the best-validation checkpoint (code); False: last epoch
    "augment": True,               # random crop (pad 4) + flip
    "val_augment": True,           # validate on augmented images (code)
    # method
    "method": "bl",                # bl | sp | llf | lure | scratch
    "sp_form": "noise",            # noise: θ←λθ+p·N(0,1) (LURE code) | fresh: θ←λθ+p·θ_fresh (Ash & Adams)
    "sp_shrink": 0.3,              # LURE code 0.3 (paper text 0.4); Ash & Adams e.g. 0.4
    "sp_perturb": 0.001,           # LURE 0.001 (noise form); Ash & Adams e.g. 0.1 (fresh form)
    "llf_layers": ["layer3", "layer4", "fc"],
    "criterion": "snip",           # snip | fisher | magnitude | random
    "reset_fraction": 0.2,
    "reset_init": "kaiming_uniform",  # kaiming_uniform (code; BN scales -> U(-1,1)) | model
    "reset_tensors": "weight",     # weight (code: names containing "weight") | all
    "reset_scope": "global",       # global threshold (code) | layer
    "score_size": 100,             # images scored (code: one batch of 100; paper: 20% of M_i)
    "score_data": "previous",      # previous: the mega-batch just trained (Alg. 1 l.8) | upcoming
    # evaluation
    "eval_batch_size": 1000,
    "corruptions": [],             # names from zaplib.corruptions.CORRUPTIONS ("all" for every one)
    "corruption_severities": [1, 2, 3, 4, 5],
    "n_corruption": 1000,          # test images per corruption and severity
    "pgd_eps": [],                 # L∞ radii in [0, 1] pixel units, e.g. [1/255, 2/255, 4/255, 8/255]
    "pgd_steps": 10,
    "n_pgd": 500,
    "weight_noise": [],            # Gaussian σ added to every parameter (§7.2)
    "weight_noise_repeats": 3,
    "n_weight_noise": 1000,        # training-pool (and test) images evaluated per draw
    "seed": 0,
}


#: Knobs added after runs were stored (issue 15): a config carries one only when it differs from
#: this default, so every run stored before keeps its key.
#:
#: - ``precision``: training precision of every step (fp32 | bf16 autocast, :func:`zaplib.train.autocast`);
#: - ``init``: the ResNet-18's initialisation, ``pytorch`` (every module's default) or
#:   ``official`` (LURE's code: conv Kaiming-normal fan-out, BN 1/0; :class:`zaplib.models.ResNetOfficialInit`);
#: - ``llf_form``: ``ours`` (conv/linear weights and biases of ``llf_layers``) or ``official``
#:   (LURE's code: the 1×1 shortcut convs stay, the fc bias is kept);
#: - ``n_select``: evaluate on this many training images outside the pool instead of the test set
#:   (a regime gate's split: the next ``n_select`` images of the stream's shuffle; None: the test set).
OPTIONAL_CONFIG: dict = {"precision": "fp32", "init": "pytorch", "llf_form": "ours", "n_select": None}


def make_config(**overrides) -> dict:
    """A complete :func:`run_stream` config: :data:`DEFAULT_CONFIG` updated by ``overrides``
    (unknown keys are an error, so a typo cannot silently fall back to a default); the keys of
    :data:`OPTIONAL_CONFIG` enter only with a value other than their default."""
    unknown = sorted(set(overrides) - set(DEFAULT_CONFIG) - set(OPTIONAL_CONFIG))
    if unknown:
        raise KeyError(f"unknown stream config keys {unknown}; known: {sorted({**DEFAULT_CONFIG, **OPTIONAL_CONFIG})}")
    config = copy.deepcopy(DEFAULT_CONFIG)
    config.update(copy.deepcopy(overrides))
    if config.get("n_select") == 0:  # 0 and None both mean the test set: one key for one run
        config["n_select"] = None
    for key, default in OPTIONAL_CONFIG.items():
        if config.get(key, default) == default:
            config.pop(key, None)
    _check(config)
    return config


def _check(config: dict) -> None:
    if config["method"] not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {config['method']!r}")
    if config["replay"] not in REPLAYS:
        raise ValueError(f"replay must be one of {REPLAYS}, got {config['replay']!r}")
    if config["sp_form"] not in ("noise", "fresh"):
        raise ValueError(f"sp_form must be 'noise' or 'fresh', got {config['sp_form']!r}")
    if config["score_data"] not in ("previous", "upcoming"):
        raise ValueError(f"score_data must be 'previous' or 'upcoming', got {config['score_data']!r}")
    if not 0 < config["val_fraction"] < 1:
        raise ValueError("val_fraction must lie in (0, 1)")
    choices = {"precision": ("fp32", "bf16"), "init": ("pytorch", "official"), "llf_form": ("ours", "official")}
    for key, allowed in choices.items():
        if config.get(key, OPTIONAL_CONFIG[key]) not in allowed:
            raise ValueError(f"{key} must be one of {allowed}, got {config[key]!r}")
    n_select = config.get("n_select")
    if n_select is not None and (not isinstance(n_select, int) or isinstance(n_select, bool) or n_select < 0):
        raise ValueError(f"n_select must be an int >= 0 or None, got {n_select!r}")
    if config.get("init", "pytorch") != "pytorch" and config["model"] != "resnet18":
        raise ValueError(f"init {config['init']!r} is an option of the ResNet-18 only, not of {config['model']!r}")


# ---------------------------------------------------------------------------------------------
# The stream: cutting and replay
# ---------------------------------------------------------------------------------------------
def cut_stream(n: int, n_megabatches: int, val_fraction: float = 0.1,
               generator: torch.Generator | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut ``range(n)`` into ``n_megabatches`` equal mega-batches (the remainder n mod t is dropped,
    as LURE's fixed mega-batch size does) and split each into train / validation indices
    (the first ``round((1 − val_fraction)·size)`` are train, the rest validation — LURE App. A.2).

    With a ``generator`` the indices are first shuffled once (needed for class-sorted files); without
    one the original order is kept. Returns ``[(train_idx, val_idx), ...]`` as int64 CPU tensors."""
    if n_megabatches < 1:
        raise ValueError(f"n_megabatches must be >= 1, got {n_megabatches}")
    size = n // n_megabatches
    if size < 2:
        raise ValueError(f"{n} examples cannot make {n_megabatches} mega-batches of >= 2")
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    n_train = int(round((1.0 - val_fraction) * size))
    n_train = min(max(n_train, 1), size - 1)
    stream = []
    for i in range(n_megabatches):
        chunk = order[i * size:(i + 1) * size]
        stream.append((chunk[:n_train].clone(), chunk[n_train:].clone()))
    return stream


def replay_schedule(stream: Sequence[tuple[torch.Tensor, torch.Tensor]], replay: str = "full",
                    buffer_size: int = 186, buffer_size_val: int | None = None,
                    generator: torch.Generator | None = None
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield, for each mega-batch in turn, the (train, validation) indices trained on at that stage.

    ``full``: the union of mega-batches 1..i (App. Alg. 1 line 4); ``none``: mega-batch i only;
    ``buffered``: mega-batch i plus the buffer; after the stage the buffer grows by ``buffer_size``
    indices drawn without replacement from that stage's training list (``buffer_size_val`` from its
    validation list; default the same number), capped at the list's length — LURE's code, so the
    buffer may hold an index more than once (an old example re-drawn from the buffer part)."""
    if replay not in REPLAYS:
        raise ValueError(f"replay must be one of {REPLAYS}, got {replay!r}")
    buffer_size_val = buffer_size if buffer_size_val is None else buffer_size_val
    buf_train = torch.zeros(0, dtype=torch.long)
    buf_val = torch.zeros(0, dtype=torch.long)
    for i, (tr, va) in enumerate(stream):
        if replay == "full":
            yield torch.cat([s[0] for s in stream[:i + 1]]), torch.cat([s[1] for s in stream[:i + 1]])
        elif replay == "none":
            yield tr, va
        else:
            train_list, val_list = torch.cat([tr, buf_train]), torch.cat([va, buf_val])
            yield train_list, val_list
            for lst, k, which in ((train_list, buffer_size, "train"), (val_list, buffer_size_val, "val")):
                picked = lst[torch.randperm(len(lst), generator=generator)[:min(k, len(lst))]]
                if which == "train":
                    buf_train = torch.cat([buf_train, picked])
                else:
                    buf_val = torch.cat([buf_val, picked])


# ---------------------------------------------------------------------------------------------
# Data and model
# ---------------------------------------------------------------------------------------------
def _synthetic(device, n_train=1200, n_test=400, num_classes=4, side=8, seed=1234):
    """A tiny learnable image set for tests: each class a fixed random 3×side×side prototype plus
    pixel noise, stored as uint8 like the real datasets."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(num_classes, 3, side, side, generator=g)

    def make(n):
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = (protos[y] * 0.6 + 0.4 * torch.rand(n, 3, side, side, generator=g)) * 255
        return x.round().to(torch.uint8).to(device), y.to(device)

    x_tr, y_tr = make(n_train)
    x_te, y_te = make(n_test)
    return SimpleNamespace(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
                           num_classes=num_classes, name="synthetic")


def load_data(config: dict, device=None):
    """The dataset of ``config`` on ``device`` (uint8 NCHW, int64 labels); a namespace with
    ``x_train, y_train, x_test, y_test, num_classes, name``."""
    device = get_device(device)
    if config["dataset"] == "synthetic":
        return _synthetic(device)
    return data.load(config["dataset"], device=device)


_GREY_STATS = {"fashion_mnist": ((0.2860,), (0.3530,)), "mnist": ((0.1307,), (0.3081,))}


def model_config(config: dict, num_classes: int, in_channels: int = 3) -> dict:
    """The :func:`zaplib.models.build` config of the network of ``config``, initialised from its
    ``seed``. ResNet-18 has the CIFAR stem and a width multiplier; grey-scale datasets get one
    input channel and their own normalisation statistics."""
    name = config["model"]
    cfg = {"model": name, "num_classes": num_classes, "seed": int(config["seed"])}
    if name == "resnet18":
        cfg["width"] = config["width"]
        if config.get("init", "pytorch") != "pytorch":
            cfg["init"] = config["init"]
        if in_channels == 1:
            mean, std = _GREY_STATS.get(config["dataset"], ((0.5,), (0.25,)))
            cfg.update(in_channels=1, mean=mean, std=std)
        return cfg
    if in_channels != 3:
        raise ValueError(f"{name} takes RGB inputs only")
    return cfg


def _augment_fn(config: dict):
    if not config["augment"]:
        return None
    from .data import augment_cifar

    return augment_cifar


# ---------------------------------------------------------------------------------------------
# Between mega-batches: the methods
# ---------------------------------------------------------------------------------------------
def apply_method(model: nn.Module, config: dict, score_batch=None,
                 generator: torch.Generator | None = None) -> int:
    """Apply ``config["method"]`` to ``model`` in place before a new mega-batch; returns the number
    of parameter entries re-drawn or rescaled (0 for BL).

    - ``bl``: nothing (warm start).
    - ``sp``: :func:`zaplib.resets.shrink_perturb` on every parameter (LURE's code also shrinks
      biases and BN parameters), ``sp_form`` noise (code) or fresh (Ash & Adams).
    - ``llf``: :func:`zaplib.resets.reinit_layers` on ``llf_layers`` (conv/linear only; BN kept),
      with the model's own init (PyTorch default = LURE's kaiming_uniform(a=√5) for conv/linear);
      ``llf_form="official"`` leaves the 1×1 shortcut convs and the fc bias alone (LURE's code).
    - ``lure``: :func:`zaplib.resets.lure_reset` scored on ``score_batch`` = (x float, y).
    - ``scratch``: every module re-initialised (the caller also makes a fresh optimiser).
    """
    method = config["method"]
    if method == "bl":
        return resets.apply("none", model)
    if method == "sp":
        return resets.apply("shrink_perturb", model, generator, shrink=config["sp_shrink"],
                            perturb=config["sp_perturb"], form=config["sp_form"])
    if method == "llf":
        official = config.get("llf_form", "ours") == "official"  # LURE's code: shortcuts and fc bias stay
        return resets.apply("reinit_layers", model, generator, names=list(config["llf_layers"]),
                            skip=("shortcut",) if official else (), weights_only=official)
    if method == "lure":
        if score_batch is None and config["criterion"] in ("snip", "fisher"):
            raise ValueError("LURE with a data-dependent criterion needs a score_batch")
        return resets.apply("lure", model, generator, batch=score_batch,
                            reset_fraction=config["reset_fraction"], criterion=config["criterion"],
                            tensors=config["reset_tensors"], init=config["reset_init"],
                            scope=config["reset_scope"])
    if method == "scratch":
        return resets.apply("reinit_all", model, generator)
    raise ValueError(f"unknown method {method!r}")


def _score_batch(x, y, idx, size, augment, generator):
    """``size`` random examples of ``idx`` as a float batch (augmented like training, as LURE's
    scoring loader is)."""
    pick = idx[torch.randperm(len(idx), generator=generator)[:size]].to(x.device)
    xb = train.as_float(x[pick])
    if augment is not None:
        xb = augment(xb, generator)
    return xb, y[pick]


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
def _test_metrics(model, x, y, batch_size) -> dict:
    logits = train.predict_logits(model, x, batch_size)
    with torch.no_grad():
        probs = F.softmax(logits.float(), dim=1)
        pred = logits.argmax(1)
        errors = int((pred != y).sum())
        loss = float(F.cross_entropy(logits, y))
    ece_value, reliability = metrics.ece(probs, y, n_bins=15)
    return {"test_acc": 1.0 - errors / len(y), "test_errors": errors, "test_loss": loss,
            "ece": ece_value, "reliability": reliability}


# ---------------------------------------------------------------------------------------------
# One run of the stream
# ---------------------------------------------------------------------------------------------
def run_stream(config: dict, device=None, progress: bool = False, stage_callback=None) -> dict:
    """Train one model through one ALMA stream (see the module docstring) and return tidy tables:

    - ``megabatches``: one row per mega-batch — ``megabatch`` (1-based), ``n_train``, ``n_val``,
      ``n_reset`` (entries changed by the method before it), ``best_epoch``, ``train_acc``,
      ``val_acc``, ``gen_gap`` (train − val at the carried epoch), ``test_acc``, ``test_errors``,
      ``cer`` (running sum of test errors), ``test_loss``, ``ece``, ``lr_start``, ``seconds``;
    - ``epochs``: every epoch's record (``train.train_iid`` columns plus ``megabatch``);
    - ``reliability``: the final model's 15-bin reliability-diagram data on the test set;
    - ``changed``: per mega-batch after the first and per parameter tensor, the entries the method
      changed (``tensor``, ``n_changed``, ``n_total``; :func:`zaplib.resets.changed_entries`);
    - ``summary``: one row — final ``test_acc``, ``cer``, ``gen_gap`` (last mega-batch),
      ``mean_gen_gap``, ``ece``, ``n_test``, ``data_file`` (e.g. ``cifar10_jpeg``: the lossy copy),
      ``seconds``;
    - ``corruptions`` / ``pgd`` / ``weight_noise`` when those probes are configured.

    ``stage_callback(i, model)``, if given, sees the carried model at the start of every mega-batch
    ``i`` (0-based) before the method acts (tests use it). Pure in ``config``: the global RNG is
    used only inside ``torch.random.fork_rng`` (:func:`zaplib.models.build`) and every draw comes
    from streams of :func:`zaplib.samplers.generator` under ``seed`` (init, method randomness,
    replay buffer) or ``order_seed`` (the stream and test subset, label noise, the probes'
    corrupted images).
    """
    config = make_config(**config)
    device = get_device(device)
    t_start = time.perf_counter()
    ds = load_data(config, device)
    num_classes = int(ds.num_classes)
    order_g = samplers.generator(int(config["order_seed"]), "stream")

    n_pool = len(ds.x_train) if config["n_pool"] is None else min(int(config["n_pool"]), len(ds.x_train))
    n_select = int(config.get("n_select") or 0)
    if n_pool + n_select > len(ds.x_train):
        raise ValueError(f"n_pool + n_select = {n_pool + n_select} > {len(ds.x_train)} training images")
    # training sets of data.subset are nested prefixes of one shuffle: the pool is the same with or
    # without the select images that follow it
    split = data.subset(ds, n_train=n_pool + n_select, n_test=config["n_test"], generator=order_g)
    x_pool, y_pool = split.x_train[:n_pool], split.y_train[:n_pool]
    x_test, y_test = split.x_test, split.y_test
    if n_select:  # a regime gate evaluates on held-out training images, never on the test set
        x_test, y_test = split.x_train[n_pool:], split.y_train[n_pool:]
    n_test = len(y_test)
    if config["label_noise"] > 0:
        noise_g = samplers.generator(int(config["order_seed"]), "label_noise")
        y_pool = corruptions.noisy_labels(y_pool.cpu(), config["label_noise"], num_classes,
                                          noise_g).to(device)
    # The pool is already in shuffled order, so the stream is cut in order.
    stream = cut_stream(n_pool, config["n_megabatches"], config["val_fraction"])
    buffer_g = samplers.generator(int(config["seed"]), "replay_buffer")
    stages = replay_schedule(stream, config["replay"], config["buffer_size"],
                             config["buffer_size_val"], buffer_g)

    augment = _augment_fn(config)
    val_transform = augment if config["val_augment"] else None
    g = samplers.generator(int(config["seed"]), "method")
    model = models.build(model_config(config, num_classes, in_channels=x_pool.shape[1])).to(device)
    if config["channels_last"]:
        model = model.to(memory_format=torch.channels_last)

    def new_optimizer():
        return train.make_optimizer(model.parameters(), "sgd", config["lr"], config["momentum"],
                                    config["weight_decay"])

    optimizer = new_optimizer()
    rows, epoch_frames, changed_rows = [], [], []
    final = None
    previous_train = None
    cumulative_errors = 0
    lr_start = config["lr"]
    for i, (tr_idx, va_idx) in enumerate(stages):
        tic = time.perf_counter()
        n_reset = 0
        if stage_callback is not None:
            stage_callback(i, model)
        if i > 0:
            score = None
            if config["method"] == "lure" and config["criterion"] in ("snip", "fisher"):
                source = previous_train if config["score_data"] == "previous" else tr_idx
                score = _score_batch(x_pool, y_pool, source, config["score_size"], augment, g)
            before = {name: param.detach().clone() for name, param in model.named_parameters()}
            n_reset = apply_method(model, config, score, g)
            changed_rows += [{"megabatch": i + 1, **row} for row in resets.changed_entries(before, model)]
            if config["method"] == "scratch" or not config["keep_optimizer_state"]:
                optimizer = new_optimizer()
            if not config["lr_reset"]:
                lr_start = optimizer.param_groups[0]["lr"]
        tr_dev, va_dev = tr_idx.to(device), va_idx.to(device)
        model, records = train.train_iid(
            model, x_pool[tr_dev], y_pool[tr_dev], x_pool[va_dev], y_pool[va_dev],
            epochs=config["epochs"], batch_size=config["batch_size"], optimizer=optimizer,
            lr=lr_start, lr_milestones=config["lr_milestones"], lr_gamma=config["lr_gamma"],
            monitor="val_acc", restore_best=config["carry_best"], augment=augment,
            val_transform=val_transform, generator=g, eval_batch_size=config["eval_batch_size"],
            progress=progress, precision=config.get("precision", "fp32"),
        )
        records.insert(0, "megabatch", i + 1)
        epoch_frames.append(records)
        carried = records[records["best"]] if config["carry_best"] else records.iloc[[-1]]
        carried = carried.iloc[-1]
        final = _test_metrics(model, x_test, y_test, config["eval_batch_size"])
        cumulative_errors += final["test_errors"]
        rows.append({
            "megabatch": i + 1, "n_train": len(tr_idx), "n_val": len(va_idx), "n_reset": n_reset,
            "best_epoch": int(carried["epoch"]), "train_acc": float(carried["train_acc"]),
            "val_acc": float(carried["val_acc"]),
            "gen_gap": metrics.generalisation_gap(carried["train_acc"], carried["val_acc"]),
            "test_acc": final["test_acc"], "test_errors": final["test_errors"],
            "cer": cumulative_errors, "test_loss": final["test_loss"], "ece": final["ece"],
            "lr_start": lr_start, "seconds": time.perf_counter() - tic,
        })
        previous_train = tr_idx

    mb = pd.DataFrame(rows)
    results: dict = {"megabatches": mb, "epochs": pd.concat(epoch_frames, ignore_index=True),
                     "reliability": final["reliability"]}
    if changed_rows:  # a stream of one mega-batch has no method step
        results["changed"] = pd.DataFrame(changed_rows)
    results["summary"] = pd.DataFrame([{
        "test_acc": float(mb["test_acc"].iloc[-1]),
        "cer": int(mb["test_errors"].sum()),
        "gen_gap": float(mb["gen_gap"].iloc[-1]),
        "mean_gen_gap": float(mb["gen_gap"].mean()),
        "ece": float(mb["ece"].iloc[-1]),
        "n_test": n_test,
        "data_file": str(getattr(ds, "name", config["dataset"])),
        "seconds": time.perf_counter() - t_start,
    }])

    probe_seed = int(config["order_seed"])
    names = list(config["corruptions"])
    if names == ["all"]:
        names = list(corruptions.CORRUPTIONS)
    if names:
        n = min(int(config["n_corruption"]), n_test)
        results["corruptions"] = probes.corruption_table(model, x_test[:n], y_test[:n], names,
                                                  config["corruption_severities"],
                                                  config["eval_batch_size"], probe_seed)
    if config["pgd_eps"]:
        n = min(int(config["n_pgd"]), n_test)
        results["pgd"] = probes.pgd_table(model, x_test[:n], y_test[:n], config["pgd_eps"],
                                   config["pgd_steps"], seed=probe_seed)
    if config["weight_noise"]:
        n = int(config["n_weight_noise"])
        sets = {"train": (x_pool[:n], y_pool[:n]), "test": (x_test[:n], y_test[:n])}
        results["weight_noise"] = probes.weight_noise_table(model, sets, config["weight_noise"],
                                                     config["weight_noise_repeats"],
                                                     config["eval_batch_size"], probe_seed)
    results["summary"]["seconds"] = time.perf_counter() - t_start
    return results


__all__ = [
    "METHODS",
    "REPLAYS",
    "DEFAULT_CONFIG",
    "make_config",
    "cut_stream",
    "replay_schedule",
    "load_data",
    "model_config",
    "apply_method",
    "run_stream",
]
