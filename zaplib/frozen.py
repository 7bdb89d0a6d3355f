"""Mutually frozen weights: detection, update dynamics, interventions and the pre-train → retrain
protocol of the chapter "Mutually frozen weights" (its configs, stored run and claims live in
:mod:`zaplib.experiments.frozen_weights`).

Paper: Zilly, Achille, Censi & Frazzoli, *On Plasticity, Invariance, and Mutually Frozen Weights in
Sequential Task Learning*, NeurIPS 2021. Only its abstract and introduction are available and no
code is public, so every protocol here is our design, made from the claims of the abstract:

1. with weight decay, weights in successive layers become *mutually frozen* (abstract, sentence 3);
2. mutually frozen weights differ from plain sparse weights in their update dynamics, and frozen
   weights make retraining on a new task worse (introduction, "Contribution");
3. local input sensitivity E‖∂f/∂x‖ correlates with the ability to adapt (abstract, sentence 5);
4. resetting the mutually frozen connections improves transfer, depending on the target-set size and
   on the gap between pre-training and target domains (abstract, sentences 6–7).

Definitions (issue 7 §1) live in :mod:`zaplib.resets`: :func:`~zaplib.resets.frozen_mask`
(|w| < ε·σ_init of the layer), :func:`~zaplib.resets.mutually_frozen_mask` (frozen, and the weights
its gradient is proportional to are frozen too) and *plain sparse* = frozen but not mutually
frozen. This module only composes them into a protocol.

One run (:func:`pretrain_and_retrain`) = one pre-training task (the *source*) with every seed ×
weight-decay value trained at once as one :class:`~zaplib.train.StackedModels` (``vmap``), then every target of that
source × target-set size × intervention, again stacked. Everything a figure needs comes back as
tidy DataFrames for :class:`zaplib.store.Store`:

``pretrain``    per model × probe (every epoch) × layer: frozen / mutually frozen / plain sparse
                fractions, train loss, source test accuracy;
``models``      per pre-trained model: final fractions, source test accuracy, input sensitivity on
                the source and on each target's test images;
``finetune``    per model × target × target-set fraction × intervention: entries reset, target test
                accuracy right after the intervention and after fine-tuning, validation accuracy,
                frozen fractions after fine-tuning;
``dynamics``    per model × target × probe step × layer × group (mutually frozen / plain sparse /
                not frozen, fixed at the start of retraining): mean |w|/σ_init, fraction still
                frozen, mean |∂L/∂w| on a fixed probe batch, mean |Δw| per step.

Optimiser (both phases): SGD with momentum and *coupled* L2 weight decay — the gradient of
L + λ/2‖θ‖² on every parameter, as ``torch.optim.SGD(weight_decay=λ)`` — which is what the negative
pre-training paper of the same group uses (§3: SGD, momentum 0.9, weight decay 1e-3). Each stacked
model carries its own λ (:func:`add_weight_decay`). Retraining uses one common λ for every
network (``finetune_weight_decay``), so that only the pre-training differs between networks, or
(:data:`SAME_DECAY`) each network's own pre-training λ — "training a deep model more than once"
with weight decay.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import data, get_device, models, probes, resets, samplers, train

INTERVENTIONS = ("none", "reset_mutual", "reset_random", "reset_frozen", "reinit")
RESET_OPS = {  # the chapter's intervention -> its op in zaplib.resets.RESETS
    "none": "none",
    "reset_mutual": "mutually_frozen",
    "reset_random": "random_like_mutually_frozen",
    "reset_frozen": "frozen",
    "reinit": "reinit_all",
}
GROUPS = ("mutually_frozen", "plain_sparse", "not_frozen")
DATA_SEED = 0  # the fixed permutation that defines every task's subsets (same for all runs)


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------
def parse_task(task: str) -> tuple[str, float]:
    """``"mnist"`` → ("mnist", 1.0); ``"mnist:blur4"`` → ("mnist", 4.0): the dataset and the blur
    factor k of :func:`zaplib.data.blur` (down-sample to 1/k, up-sample back; k = 4 is Achille et
    al.'s and the negative pre-training paper's blur)."""
    name, _, corruption = task.partition(":")
    if not corruption:
        return name, 1.0
    if not corruption.startswith("blur"):
        raise ValueError(f"unknown corruption {corruption!r} in task {task!r}; use 'NAME:blurK'")
    k = float(corruption[4:])
    if k < 1:
        raise ValueError(f"blur factor must be >= 1, got {k} in {task!r}")
    return name, k


def parse_transfer(transfer: str) -> tuple[str, str]:
    """``"mnist:blur4>mnist"`` → ("mnist:blur4", "mnist"): pre-training task > target task."""
    source, sep, target = transfer.partition(">")
    if not sep or not source or not target:
        raise ValueError(f"a transfer is 'SOURCE>TARGET', got {transfer!r}")
    parse_task(source), parse_task(target)
    return source, target


def load_task(task: str, n_train: int, n_val: int, n_test: int, device=None) -> dict:
    """The uint8 tensors of ``task``: a fixed random permutation (seed :data:`DATA_SEED`) of the
    training set gives ``x_val`` (its last ``n_val`` images) and the training pool ``x_train``
    (its first ``min(n_train, N − n_val)``), so smaller training subsets are nested prefixes and
    never meet the validation images; ``x_test`` = ``n_test`` test images drawn by the same
    permutation's generator (:func:`zaplib.data.subset`). A blurred task blurs all three."""
    name, k = parse_task(task)
    ds = data.load(name, device)
    n = len(ds.y_train)
    n_val = min(n_val, n // 2)
    split = data.subset(ds, n_train=min(n_train, n - n_val), n_val=n_val, n_test=n_test,
                        generator=samplers.generator(DATA_SEED, "split"))

    def corrupt(x):
        return data.blur(x, k) if k > 1 else x

    return {
        "task": task,
        "x_train": corrupt(split.x_train), "y_train": split.y_train,
        "x_val": corrupt(split.x_val), "y_val": split.y_val,
        "x_test": corrupt(split.x_test), "y_test": split.y_test,
        "num_classes": split.num_classes,
    }


# ---------------------------------------------------------------------------------------------
# Models and stacked training with a weight decay per model
# ---------------------------------------------------------------------------------------------
def model_config(config: dict, input_shape: Sequence[int], num_classes: int, seed: int) -> dict:
    """The :func:`zaplib.models.build` config of the untrained network of ``config`` (``model`` =
    "mlp": ``depth`` (2) hidden layers of ``width`` units; "small_cnn":
    :class:`~zaplib.models.SmallCNN` with ``width`` channels) for inputs of shape (C, H, W),
    initialised from ``seed``. Both are plain feed-forward ReLU nets without normalisation layers,
    which is what the mutually-frozen analysis assumes."""
    if config["model"] not in ("mlp", "small_cnn"):
        raise ValueError(f"model must be 'mlp' or 'small_cnn', got {config['model']!r}")
    c, h, w = input_shape
    if h != w:
        raise ValueError(f"square images only, got {h}×{w}")
    cfg = {"model": config["model"], "width": config["width"], "in_channels": c, "input_size": h,
           "num_classes": num_classes, "seed": int(seed)}
    if config["model"] == "mlp":
        cfg["depth"] = config.get("depth", 2)
    return cfg


def add_weight_decay(stacked: train.StackedModels, weight_decays: Sequence[float]):
    """Give model s of ``stacked`` its own coupled L2 weight decay λ_s: right before every optimiser
    step, λ_s·θ_s is added to the gradient of each of its parameters — exactly what
    ``torch.optim.SGD(weight_decay=λ_s)`` does for one model, which a single stacked optimiser
    cannot do for S different λ. An optimiser step pre-hook, so it works whichever way
    :class:`~zaplib.train.StackedModels` computes its gradients. Returns the hook handle
    (``handle.remove()`` undoes it)."""
    if len(weight_decays) != len(stacked):
        raise ValueError(f"need one weight decay per model: {len(stacked)} models, "
                         f"{len(weight_decays)} values")
    pairs = []
    for p in stacked.params.values():
        if p.requires_grad:
            coef = torch.as_tensor(list(weight_decays), dtype=p.dtype, device=p.device)
            pairs.append((p, coef.reshape(-1, *([1] * (p.dim() - 1)))))

    def decay(optimizer, args, kwargs):
        with torch.no_grad():
            for p, coef in pairs:
                if p.grad is not None:
                    p.grad.add_(coef * p)

    return stacked.optimizer.register_step_pre_hook(decay)


def _batch_stream(n: int, batch_size: int, generators, device) -> Iterator[torch.Tensor]:
    """(S, B) index tensors forever: model s walks through its own seeded permutations, epoch after
    epoch (``zaplib.samplers.batches``; the incomplete last batch is dropped so all S agree)."""
    while True:
        epoch = [samplers.batches(n, batch_size, g, drop_last=True, device=device) for g in generators]
        for idx in zip(*epoch):
            yield torch.stack(idx)


def train_stacked(models_: Sequence[nn.Module], weight_decays: Sequence[float], x: torch.Tensor,
                  y: torch.Tensor, *, steps: int, batch_size: int, lr: float, momentum: float,
                  generators: Sequence[torch.Generator],
                  probe: Callable[[int, train.StackedModels], object] | None = None,
                  probe_steps: Sequence[int] = (), precision: str = "fp32") -> tuple[list[nn.Module], pd.DataFrame, list]:
    """Train S models in lock-step for ``steps`` SGD steps (momentum, per-model coupled L2 weight
    decay :func:`add_weight_decay`), model s drawing its batches with ``generators[s]``, the steps
    at ``precision`` (:func:`zaplib.train.autocast`).

    A fixed number of steps rather than epochs with early stopping, so that the number of updates a
    frozen weight receives is the same for every model, and so that probes can sit at arbitrary
    steps: ``probe(step, stacked)`` is called *before* step ``step`` for every ``step`` in
    ``probe_steps`` (``steps`` itself means after the last one). The models passed in are updated
    in place. Returns (models, losses, probe results), ``losses`` with one row per model and probe
    interval: ``model, step, train_loss`` (the mean loss of the steps since the previous probe).
    """
    batch_size = min(batch_size, len(x))
    stacked = train.StackedModels(list(models_), optimizer="sgd", lr=lr, momentum=momentum,
                                  grad_mode="func")  # vmapped backward: ~1.5–2× faster here
    add_weight_decay(stacked, weight_decays)
    wanted = set(int(s) for s in probe_steps)
    stream = _batch_stream(len(x), batch_size, generators, x.device)
    loss_sum = torch.zeros(len(stacked), device=x.device)
    since, rows, outputs = 0, [], []
    for step in range(steps + 1):
        if step in wanted:
            if since:
                mean = (loss_sum / since).cpu().numpy()
                rows += [{"model": s, "step": step, "train_loss": float(v)} for s, v in enumerate(mean)]
                loss_sum.zero_()
                since = 0
            if probe is not None:
                outputs.append(probe(step, stacked))
        if step == steps:
            break
        idx = next(stream)
        losses, _ = stacked.step(train.as_float(x[idx]), y[idx], precision)
        loss_sum += losses
        since += 1
    stacked.unstack(list(models_))
    return list(models_), pd.DataFrame(rows, columns=["model", "step", "train_loss"]), outputs


def finetune_steps(n: int, batch_size: int, epochs: float, min_steps: int) -> int:
    """Retraining length: ``epochs`` passes over the n target images, but at least ``min_steps``
    steps, so that a 1 % target set is still trained to convergence rather than for two steps."""
    per_epoch = max(1, n // min(batch_size, n))
    return max(int(min_steps), int(math.ceil(epochs * per_epoch)))


def probe_schedule(steps: int, n_probes: int) -> list[int]:
    """0, then ~``n_probes`` roughly log-spaced steps up to ``steps`` (early dynamics are fast)."""
    if steps <= 0:
        return [0]
    grid = np.unique(np.round(np.geomspace(1, steps, max(2, n_probes))).astype(int))
    return [0, *[int(s) for s in grid]]


# ---------------------------------------------------------------------------------------------
# Frozen weights: fractions, groups, interventions
# ---------------------------------------------------------------------------------------------
def frozen_table(model: nn.Module, eps: float) -> pd.DataFrame:
    """Per-layer fractions of :func:`zaplib.resets.mutually_frozen_mask` (frozen, mutually frozen,
    plain sparse), plus a row ``layer="all"`` pooling every conv/linear weight."""
    _, table = resets.mutually_frozen_mask(model, eps)
    n = table["n"].sum()
    pooled = {"layer": "all", "n": int(n)}
    for col in ("frozen_frac", "mutually_frozen_frac", "plain_sparse_frac"):
        pooled[col] = float((table[col] * table["n"]).sum() / n)
    return pd.concat([table, pd.DataFrame([pooled])], ignore_index=True)


def weight_groups(model: nn.Module, eps: float) -> dict[str, torch.Tensor]:
    """Per conv/linear weight: an int8 tensor with 0 = mutually frozen, 1 = plain sparse (frozen,
    not mutually frozen), 2 = not frozen — the codes index :data:`GROUPS`."""
    mutual, _ = resets.mutually_frozen_mask(model, eps)
    frozen = resets.frozen_mask(model, eps)
    out = {}
    for name, f in frozen.items():
        codes = torch.full(f.shape, 2, dtype=torch.int8, device=f.device)
        codes[f] = 1
        codes[mutual[name]] = 0
        out[name] = codes
    return out


def intervene(model: nn.Module, intervention: str, eps: float,
              generator: torch.Generator | None = None) -> tuple[nn.Module, int]:
    """A copy of the pre-trained ``model`` after ``intervention`` (issue 7 §4); the number of
    entries re-drawn. Each intervention is one op of :func:`zaplib.resets.apply`; re-drawn weights
    come from the layer's own init (``init="model"``; PyTorch's default U(±1/√fan_in) for MLP /
    SmallCNN); biases are kept.

    - ``none``: retrain as is;
    - ``reset_mutual``: re-draw the mutually frozen weights (:func:`resets.mutually_frozen_mask`);
    - ``reset_random``: re-draw as many weights per tensor as ``reset_mutual`` would, at uniformly
      random positions (:func:`resets.random_masks_like`) — does *which* weights matter?;
    - ``reset_frozen``: re-draw every frozen weight, plain sparse ones included — does *mutual*
      matter, or would "small" do?;
    - ``reinit``: a freshly initialised network (:func:`resets.fresh_init`): training from scratch.
    """
    if intervention not in RESET_OPS:
        raise ValueError(f"unknown intervention {intervention!r}; choose from {INTERVENTIONS}")
    op = RESET_OPS[intervention]
    settings = {} if op in ("none", "reinit_all") else {"eps": eps, "init": "model"}
    net = copy.deepcopy(model)
    return net, resets.apply(op, net, generator, **settings)


def dynamics_probe(model: nn.Module, groups: dict[str, torch.Tensor], eps: float,
                   x: torch.Tensor, y: torch.Tensor, previous: dict | None = None,
                   steps_since: int = 1) -> pd.DataFrame:
    """Per layer × group (codes of :func:`weight_groups`, fixed when retraining starts): ``n``,
    ``abs_w`` = mean |w|/σ_init, ``still_frozen`` = fraction with |w| < ε·σ_init, ``abs_grad`` =
    mean |∂L/∂w| of the cross-entropy alone (no decay term) on the batch (x, y), and ``abs_update``
    = mean |w − w_previous| / ``steps_since`` (NaN without ``previous``, a dict of earlier weights)."""
    weights = {f"{qn}.weight" if qn else "weight": m for qn, m in model.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv2d))}
    params = [weights[name].weight for name in groups]
    was_training = model.training
    model.eval()
    loss = F.cross_entropy(model(train.as_float(x)), y)
    grads = torch.autograd.grad(loss, params)
    model.train(was_training)
    rows = []
    for (name, codes), p, g in zip(groups.items(), params, grads):
        sigma = models.init_weight_std(model, weights[name])
        w = p.detach()
        for code, group in enumerate(GROUPS):
            sel = codes == code
            n = int(sel.sum())
            row = {"layer": name.removesuffix(".weight"), "group": group, "n": n}
            if n:
                row.update(abs_w=float(w[sel].abs().mean() / sigma),
                           still_frozen=float((w[sel].abs() < eps * sigma).float().mean()),
                           abs_grad=float(g[sel].abs().mean()),
                           abs_update=(float((w[sel] - previous[name][sel]).abs().mean()) / steps_since
                                       if previous is not None else float("nan")))
            rows.append(row)
    return pd.DataFrame(rows, columns=["layer", "group", "n", "abs_w", "still_frozen", "abs_grad",
                                       "abs_update"])


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------
def correlation(x, y, groups=None, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """Pearson r with its Fisher-z confidence interval (``scipy.stats.pearsonr``) and Spearman ρ
    with a paired percentile-bootstrap interval over the points (``scipy.stats.bootstrap``).

    With ``groups`` (e.g. the weight-decay value of each model), both variables are first centred
    within each group, so the result measures the association *within* groups: a confounder that
    moves both variables between groups (weight decay shrinks sensitivity and adaptability at once)
    then no longer counts. Returns a dict: n, pearson_r, pearson_lo, pearson_hi, pearson_p,
    spearman_rho, spearman_lo, spearman_hi, spearman_p."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if groups is not None:
        frame = pd.DataFrame({"x": x, "y": y, "g": np.asarray(groups)})
        x = (frame.x - frame.groupby("g").x.transform("mean")).to_numpy()
        y = (frame.y - frame.groupby("g").y.transform("mean")).to_numpy()
    out = {"n": int(len(x))}
    if len(x) < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {**out, **{k: float("nan") for k in ("pearson_r", "pearson_lo", "pearson_hi",
                "pearson_p", "spearman_rho", "spearman_lo", "spearman_hi", "spearman_p")}}
    pearson = stats.pearsonr(x, y)
    ci = pearson.confidence_interval(confidence_level=level)
    spearman = stats.spearmanr(x, y)
    boot = stats.bootstrap((x, y), lambda a, b: stats.spearmanr(a, b)[0], paired=True,
                           vectorized=False, n_resamples=n_boot, confidence_level=level,
                           method="percentile", rng=np.random.default_rng(seed))
    return {**out, "pearson_r": float(pearson.statistic), "pearson_lo": float(ci.low),
            "pearson_hi": float(ci.high), "pearson_p": float(pearson.pvalue),
            "spearman_rho": float(spearman.statistic),
            "spearman_lo": float(boot.confidence_interval.low),
            "spearman_hi": float(boot.confidence_interval.high),
            "spearman_p": float(spearman.pvalue)}


# ---------------------------------------------------------------------------------------------
# The protocol (the chapter's stored experiment is zaplib.experiments.frozen_weights.run)
# ---------------------------------------------------------------------------------------------
SAME_DECAY = -1.0  # finetune_weight_decay value meaning "retrain with the pre-training λ"


def _model_index(config: dict) -> pd.DataFrame:
    """Model s of a run: seed-major, weight decay fastest."""
    rows = [{"model": i * len(config["weight_decays"]) + j, "seed": seed, "weight_decay": wd}
            for i, seed in enumerate(config["seeds"]) for j, wd in enumerate(config["weight_decays"])]
    return pd.DataFrame(rows)


def pretrain_and_retrain(config: dict) -> dict:
    """Pre-train on ``config["source"]`` (all seeds × weight decays stacked), then retrain on each
    target of ``config["targets"]`` for every target-set fraction × intervention. See the module
    docstring for the four returned tables.

    Seeding (every stream from :func:`zaplib.samplers.generator`): model (seed s, any λ) starts
    from the stream (s, "init") and draws its batches from (s, "pretrain"), so models that differ
    only in λ — or only in the source task — are paired: same init, same batch order. Retraining
    batch order is the stream (s, "finetune", target, fraction index) and is the same for every
    intervention, so interventions are paired too; the re-draws of an intervention use their own
    stream (s, "intervene", intervention, target).
    """
    device = get_device(config.get("device"))
    eps = config["eps"]
    index = _model_index(config)
    wds = index["weight_decay"].tolist()
    ft_decay = config.get("finetune_weight_decay", SAME_DECAY)
    source = load_task(config["source"], config["n_pretrain"], config["n_val"], config["n_test"], device)
    shape = tuple(source["x_train"].shape[1:])

    nets = []
    for seed in index["seed"]:
        nets.append(models.build(model_config(config, shape, source["num_classes"], seed)).to(device))

    # ---- pre-training, fractions probed at every epoch boundary
    bs = config["batch_size"]
    per_epoch = max(1, len(source["x_train"]) // min(bs, len(source["x_train"])))
    steps = per_epoch * config["pretrain_epochs"]

    def pretrain_probe(step, stacked):
        frames = []
        for s, net in enumerate(stacked.unstack()):
            table = frozen_table(net, eps)
            table.insert(0, "model", s)
            table["test_acc"] = train.evaluate(net, source["x_test"], source["y_test"])["acc"]
            frames.append(table)
        frame = pd.concat(frames, ignore_index=True)
        frame.insert(1, "step", step)
        frame.insert(2, "epoch", step // per_epoch)
        return frame

    gens = [samplers.generator(int(seed), "pretrain") for seed in index["seed"]]
    nets, losses, pretrain_frames = train_stacked(
        nets, wds, source["x_train"], source["y_train"], steps=steps, batch_size=bs,
        lr=config["lr"], momentum=config["momentum"], generators=gens, probe=pretrain_probe,
        probe_steps=range(0, steps + 1, per_epoch), precision=config.get("precision", "fp32"))
    pretrain = pd.concat(pretrain_frames, ignore_index=True).merge(losses, on=["model", "step"], how="left")
    pretrain = index.merge(pretrain, on="model")

    # ---- the pre-trained models: fractions, accuracy, input sensitivity
    targets = {t: load_task(t, config["n_target"], config["n_val"], config["n_test"], device)
               for t in config["targets"]}
    n_sens = config["n_sensitivity"]
    model_rows = []
    for s, net in enumerate(nets):
        pooled = frozen_table(net, eps).set_index("layer").loc["all"]
        row = {"model": s, "source": config["source"],
               "source_test_acc": train.evaluate(net, source["x_test"], source["y_test"])["acc"],
               "source_val_acc": train.evaluate(net, source["x_val"], source["y_val"])["acc"],
               "frozen_frac": pooled.frozen_frac, "mutually_frozen_frac": pooled.mutually_frozen_frac,
               "plain_sparse_frac": pooled.plain_sparse_frac,
               "sensitivity_source": probes.input_sensitivity(net, source["x_test"][:n_sens])}
        for t, task in targets.items():
            row[f"sensitivity[{t}]"] = probes.input_sensitivity(net, task["x_test"][:n_sens])
            row[f"target_acc_before[{t}]"] = train.evaluate(net, task["x_test"], task["y_test"])["acc"]
        model_rows.append(row)
    model_table = index.merge(pd.DataFrame(model_rows), on="model")

    # ---- retraining: target × fraction × intervention, all stacked
    finetune_rows, dynamics_frames = [], []
    interventions = list(config["interventions"])
    for t, task in targets.items():
        for f_i, fraction in enumerate(config["target_fractions"]):
            n = max(1, int(round(fraction * len(task["x_train"]))))
            x_t, y_t = task["x_train"][:n], task["y_train"][:n]
            ft_steps = finetune_steps(n, bs, config["finetune_epochs"], config["finetune_min_steps"])
            jobs, ft_nets, ft_wds, ft_gens = [], [], [], []
            for s, net in enumerate(nets):
                seed = int(index.seed[s])
                for intervention in interventions:
                    draw = samplers.generator(seed, "intervene", intervention, t)
                    new, n_reset = intervene(net, intervention, eps, draw)
                    jobs.append({"model": s, "target": t, "fraction": fraction, "n_target": n,
                                 "steps": ft_steps, "intervention": intervention,
                                 "finetune_weight_decay": wds[s] if ft_decay == SAME_DECAY else ft_decay,
                                 "n_reset": n_reset,
                                 "reset_frac": n_reset / sum(p.numel() for p in new.parameters()),
                                 "test_acc_before": train.evaluate(new, task["x_test"], task["y_test"])["acc"]})
                    ft_nets.append(new)
                    ft_wds.append(jobs[-1]["finetune_weight_decay"])
                    ft_gens.append(samplers.generator(seed, "finetune", t, f_i))

            track = math.isclose(fraction, config["track_fraction"]) and "none" in interventions
            probe, schedule = None, ()
            if track:
                tracked = [k for k, job in enumerate(jobs) if job["intervention"] == "none"]
                groups = {k: weight_groups(ft_nets[k], eps) for k in tracked}
                xp, yp = x_t[: config["probe_batch"]], y_t[: config["probe_batch"]]
                last = {}

                def probe(step, stacked, tracked=tracked, groups=groups, xp=xp, yp=yp, last=last):
                    frames = []
                    current = stacked.unstack()
                    for k in tracked:
                        net = current[k]
                        weights = {name: p.detach().clone() for name, p in net.named_parameters()
                                   if name in groups[k]}
                        prev_step, prev = last.get(k, (None, None))
                        frame = dynamics_probe(net, groups[k], eps, xp, yp, prev,
                                               step - prev_step if prev_step is not None else 1)
                        frame.insert(0, "model", jobs[k]["model"])
                        frame.insert(1, "step", step)
                        frames.append(frame)
                        last[k] = (step, weights)
                    return pd.concat(frames, ignore_index=True)

                schedule = probe_schedule(ft_steps, config["n_probes"])

            ft_nets, _, probe_out = train_stacked(
                ft_nets, ft_wds, x_t, y_t, steps=ft_steps, batch_size=bs, lr=config["lr"],
                momentum=config["momentum"], generators=ft_gens, probe=probe, probe_steps=schedule,
                precision=config.get("precision", "fp32"))
            for job, net in zip(jobs, ft_nets):
                pooled = frozen_table(net, eps).set_index("layer").loc["all"]
                finetune_rows.append({
                    **job,
                    "val_acc": train.evaluate(net, task["x_val"], task["y_val"])["acc"],
                    "test_acc": train.evaluate(net, task["x_test"], task["y_test"])["acc"],
                    "frozen_frac_after": pooled.frozen_frac,
                    "mutually_frozen_frac_after": pooled.mutually_frozen_frac})
            if probe_out:
                frame = pd.concat(probe_out, ignore_index=True)
                frame.insert(1, "target", t)
                frame.insert(2, "fraction", fraction)
                dynamics_frames.append(frame)

    finetune = index.merge(pd.DataFrame(finetune_rows), on="model")
    finetune.insert(3, "source", config["source"])
    if not dynamics_frames:  # nothing probed: an empty table with the usual columns
        dynamics_frames = [pd.DataFrame(columns=["model", "target", "fraction", "step", "layer", "group",
                                                 "n", "abs_w", "still_frozen", "abs_grad", "abs_update"])]
    dynamics = index.merge(pd.concat(dynamics_frames, ignore_index=True), on="model")
    dynamics.insert(3, "source", config["source"])
    pretrain.insert(3, "source", config["source"])
    return {"pretrain": pretrain, "models": model_table, "finetune": finetune, "dynamics": dynamics}


__all__ = [
    "INTERVENTIONS", "GROUPS", "parse_task", "parse_transfer", "load_task",
    "model_config", "add_weight_decay", "train_stacked", "finetune_steps", "probe_schedule",
    "frozen_table", "weight_groups", "intervene", "dynamics_probe", "correlation",
    "pretrain_and_retrain", "SAME_DECAY",
]
