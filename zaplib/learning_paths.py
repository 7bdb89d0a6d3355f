"""Learning paths: the negative pre-training effect and three ways to fix it.

Implements the setting of *The Negative Pretraining Effect in Sequential Deep Learning and Three
Ways to Fix It* (``shared/papers/negative-pretraining-effect.txt``; "the paper" below):

* §3, Tab. 1: a **learning path** ``T = ((τ_1, ω_1), …, (τ_n, ω_n))`` is a sequence of (task,
  learning process) pairs applied to one model in order. Here a :class:`Task` is a dataset plus a
  transform at a level (blur factor k, contrast level, random-shift width a), a
  :class:`LearningProcess` is the optimiser settings plus training to convergence with early
  stopping on the task's validation split (max epochs, patience), and a :class:`Step` is one pair,
  optionally preceded by a **bias reset** (§6: add 0.01 to every bias).
* §4 (intervention A): learning rates on task 1 / task 2 — :func:`two_task_path`.
* §5 (intervention B): discretising the change from source to target into N tasks, along one
  transform (:func:`path_1d`) or two (:func:`path_2d`: "blur then contrast", "contrast then blur",
  "diagonal", and the shift variants; Fig. 5 and its footnote 3).
* §6 (intervention C): bias reset before task 1, task 2, both or neither — :func:`two_task_path`.
* Appendix 8.3 statistics: per-layer weight and bias norms (:func:`zaplib.probes.layer_norms`),
  the fraction of active ReLUs before and after each intervention
  (:func:`zaplib.probes.relu_activity`, forward hooks) and the epochs to the best validation loss
  (``steps`` table).
* §7 "why" probe: the training loss and a sharpness proxy along the way
  (:func:`zaplib.probes.perturbed_loss_sharpness`, :func:`zaplib.probes.hessian_top_eigenvalue`).

One run is :func:`run_path`, a pure function of a plain JSON config (see :func:`path_config`)
that returns tidy DataFrames; the chapter module :mod:`zaplib.experiments.negative_pretraining`
declares it as the stored experiment and plans the chapter's sweep. Paths that share
a prefix (e.g. the blur phase of several learning-rate conditions) reuse it through an on-disk memo
(:func:`prefix_cache_dir`): each step uses its own generator seeded from (seed, step index), and the
model is built from the seed, so a prefix computed for one path is bit-for-bit the prefix of
another. :func:`warm_prefixes` computes the prefixes several paths share before the paths
themselves run.

Choices the paper leaves open (listed in the chapter's faithfulness box):

* every step starts a fresh optimiser (a new learning process ω_i; momentum is not carried over);
* a fixed-length step is ``patience=None``; ``restore_best`` says whether a step ends with its best
  validation checkpoint (early stopping) or its last weights;
* transforms are applied in the order blur → contrast → shift; validation images of a task are
  transformed once with a fixed generator, training batches on the fly.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import data, get_device, models, resets, samplers, train
from .probes import hessian_top_eigenvalue, layer_norms, perturbed_loss_sharpness, relu_activity
from .store import sweep

TRANSFORMS = ("blur", "contrast", "shift")
ORDERS_2D = ("first_then_second", "second_then_first", "diagonal")
CACHE_VERSION = 2


# =============================================================================================
# 1. Paths as data
# =============================================================================================
@dataclass(frozen=True)
class Task:
    """A supervised task τ (paper Def. 1): ``dataset`` seen through three transforms.

    ``blur`` is the factor k of ``data.blur`` (down-sample to 1/k, back up; 1 = sharp),
    ``contrast`` the level of ``data.contrast`` (0 = the 10% floor, 1 = the image), ``shift`` the
    maximum width a in pixels of ``data.random_shift`` (0 = none). The target task is all identity.
    """

    dataset: str = "cifar10"
    blur: float = 1.0
    contrast: float = 1.0
    shift: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self.blur == 1 and self.contrast == 1 and self.shift == 0

    def label(self) -> str:
        parts = []
        if self.blur != 1:
            parts.append(f"blur {self.blur:g}")
        if self.contrast != 1:
            parts.append(f"contrast {self.contrast:g}")
        if self.shift != 0:
            parts.append(f"shift {self.shift:g}")
        return ", ".join(parts) or "clean"


@dataclass(frozen=True)
class LearningProcess:
    """A learning process ω (paper Def. 2): SGD settings and the stopping rule.

    Training runs at most ``max_epochs``; with ``patience`` it stops after that many epochs without
    a lower validation loss (paper §3.1: 200 / 50; §5: 100 / 20); ``patience=None`` trains exactly
    ``max_epochs`` (a fixed-length phase). ``restore_best`` ends the step with the best-validation
    weights, otherwise with the last ones."""

    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-3
    max_epochs: int = 200
    patience: int | None = 50
    restore_best: bool = True
    batch_size: int = 128
    optimizer: str = "sgd"


@dataclass(frozen=True)
class Step:
    """One (task, learning process) pair; ``bias_shift`` is added to every bias just before it
    (paper §6, "bias reset"; 0 = no reset)."""

    task: Task
    process: LearningProcess
    bias_shift: float = 0.0


def step_to_dict(step: Step) -> dict:
    return asdict(step)


def step_from_dict(d: dict) -> Step:
    return Step(Task(**d["task"]), LearningProcess(**d["process"]), float(d.get("bias_shift", 0.0)))


def level_at(kind: str, start: float, u: float) -> float:
    """The level of transform ``kind`` a fraction ``u`` of the way from ``start`` (u=0) to the
    identity (u=1).

    Blur moves linearly in *resolution* 1/k (so N=3 from k=4 passes k=1.6, i.e. 1/k = 0.625), the
    natural axis of "down-sample to 1/k"; contrast moves linearly in level; shift linearly in width
    (``data.random_shift`` uses ⌊a⌋ pixels)."""
    if not 0 <= u <= 1:
        raise ValueError(f"u must be in [0, 1], got {u}")
    if kind == "blur":
        if start < 1:
            raise ValueError(f"blur start must be >= 1, got {start}")
        return float(1.0 / (1.0 / start + (1.0 - 1.0 / start) * u))
    if kind == "contrast":
        return float(start + (1.0 - start) * u)
    if kind == "shift":
        return float(start * (1.0 - u))
    raise ValueError(f"unknown transform {kind!r}; choose from {TRANSFORMS}")


def _task_at(dataset: str, levels: dict[str, float]) -> Task:
    return Task(dataset=dataset, **{k: float(v) for k, v in levels.items()})


def _processes(n: int, first: LearningProcess, rest: LearningProcess | None) -> list[LearningProcess]:
    rest = first if rest is None else rest
    return [first] + [rest] * (n - 1)


def path_1d(kind: str, start: float, n: int, dataset: str = "cifar10", first: LearningProcess | None = None,
            rest: LearningProcess | None = None) -> tuple[Step, ...]:
    """A one-dimensional discretised path (paper §5, Fig. 4): ``n`` ≥ 2 tasks from ``kind`` at level
    ``start`` to the clean target, evenly spaced in u (:func:`level_at`). ``n=2`` is the plain
    "jump" source → target. ``first`` is the process of the first task, ``rest`` of the others."""
    if n < 2:
        raise ValueError(f"a path needs n >= 2 tasks, got {n}")
    first = LearningProcess() if first is None else first
    procs = _processes(n, first, rest)
    us = np.linspace(0.0, 1.0, n)
    return tuple(Step(_task_at(dataset, {kind: level_at(kind, start, float(u))}), p) for u, p in zip(us, procs))


def _polyline_points(order: str, n: int) -> list[tuple[float, float]]:
    """``n`` points evenly spaced by arc length on the path from (0, 0) (source) to (1, 1) (target)
    in normalised coordinates (u_first, u_second)."""
    if order == "diagonal":
        corners = [(0.0, 0.0), (1.0, 1.0)]
    elif order == "first_then_second":
        corners = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)]
    elif order == "second_then_first":
        corners = [(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
    else:
        raise ValueError(f"unknown order {order!r}; choose from {ORDERS_2D}")
    seg = [math.dist(a, b) for a, b in zip(corners, corners[1:])]
    total = sum(seg)
    points = []
    for s in np.linspace(0.0, total, n):
        for (a, b), length in zip(zip(corners, corners[1:]), seg):
            if s <= length + 1e-12:
                t = s / length
                points.append((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])))
                break
            s -= length
    return [(round(p, 12), round(q, 12)) for p, q in points]


def path_2d(kinds: tuple[str, str], starts: tuple[float, float], order: str, n: int,
            dataset: str = "cifar10", first: LearningProcess | None = None,
            rest: LearningProcess | None = None) -> tuple[Step, ...]:
    """A two-dimensional discretised path (paper §5, Fig. 5): both transforms start at their
    ``starts`` and reach the identity. ``order``: ``"first_then_second"`` removes ``kinds[0]`` first
    (e.g. "blur then contrast": unblur at low contrast, then raise the contrast; footnote 3),
    ``"second_then_first"`` the other way round, ``"diagonal"`` both at once. The ``n`` tasks are
    evenly spaced by arc length in normalised coordinates, so n=3 on a staircase visits its corner."""
    if n < 2:
        raise ValueError(f"a path needs n >= 2 tasks, got {n}")
    if len(set(kinds)) != 2 or any(k not in TRANSFORMS for k in kinds):
        raise ValueError(f"need two different transforms from {TRANSFORMS}, got {kinds}")
    first = LearningProcess() if first is None else first
    procs = _processes(n, first, rest)
    steps = []
    for (u0, u1), proc in zip(_polyline_points(order, n), procs):
        levels = {kinds[0]: level_at(kinds[0], starts[0], u0), kinds[1]: level_at(kinds[1], starts[1], u1)}
        steps.append(Step(_task_at(dataset, levels), proc))
    return tuple(steps)


def two_task_path(source: Task, first: LearningProcess, second: LearningProcess,
                  bias_reset: tuple[bool, bool] = (False, False), bias_shift: float = 0.01,
                  target: Task | None = None) -> tuple[Step, ...]:
    """The two-task path of §4 and §6: ``source`` with ``first``, then the clean target with
    ``second``; ``bias_reset[i]`` adds ``bias_shift`` to every bias before task i+1 (the paper's
    [No, No], [No, Yes], [Yes, No], [Yes, Yes])."""
    target = Task(dataset=source.dataset) if target is None else target
    return (Step(source, first, bias_shift if bias_reset[0] else 0.0),
            Step(target, second, bias_shift if bias_reset[1] else 0.0))


def baseline_path(dataset: str, process: LearningProcess) -> tuple[Step, ...]:
    """The baseline: the clean target task only, under the same budget rules (paper §3.1)."""
    return (Step(Task(dataset=dataset), process),)


def path_config(path: Sequence[Step], seed: int, data_cfg: dict, model_cfg: dict,
                probes: dict | None = None) -> dict:
    """The plain JSON config of one run of :func:`run_path`.

    ``data_cfg``: ``dataset`` (for ``data.load``), ``n_train``, ``n_val`` (both drawn from the
    training set by a permutation seeded with ``data_seed``), ``n_test`` (0 = the whole test set),
    optionally ``n_select`` (a regime gate's evaluation images: the next ``n_select`` training
    images after the first ``n_train``; every "test" number of the run is then on them),
    ``resolution`` (image side after area down-sampling; None = native). ``model_cfg``: ``name``
    (a :data:`zaplib.models.MODEL_BUILDERS` name) plus its settings (channels and input size are
    filled in).
    ``probes``: see :data:`DEFAULT_PROBES`."""
    return {
        "seed": int(seed),
        "data": dict(data_cfg),
        "model": dict(model_cfg),
        "probes": {**DEFAULT_PROBES, **(probes or {})},
        "path": [step_to_dict(s) for s in path],
    }


DEFAULT_PROBES = {
    "n_probe": 256,            # images of the probe batch (activity, sharpness, Hessian)
    "sharpness_sigma": 0.1,    # relative size of the random weight perturbation
    "sharpness_draws": 2,      # antithetic perturbation pairs averaged per measurement
    "probe_dense": 5,          # measure the sharpness proxy at the start of each of the first epochs ...
    "probe_every": 5,          # ... then every k epochs (0 = only at the start and the end of a step)
    "hessian_iters": 0,        # power-iteration steps for λ_max at each step's start and end (0 = off)
}


# =============================================================================================
# 2. Data and transforms
# =============================================================================================
def _resample(x: torch.Tensor, side: int | None) -> torch.Tensor:
    if side is None or side == x.shape[-1]:
        return x
    out = F.interpolate(x.float(), size=(side, side), mode="area")
    return out.round_().clamp_(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=4)
def _prepared(data_json: str, device: str) -> data.Subset:
    cfg = json.loads(data_json)
    ds = data.load(cfg["dataset"], device=device)
    n_train, n_val, n_select = int(cfg["n_train"]), int(cfg["n_val"]), int(cfg.get("n_select", 0))
    if n_select < 0:
        raise ValueError(f"n_select must be >= 0, got {n_select}")
    if n_select and n_train <= 0:
        raise ValueError("n_select needs an explicit n_train: the select images follow the training images")
    if n_train + n_select + n_val > len(ds.y_train):
        raise ValueError(f"n_train + n_select + n_val = {n_train + n_select + n_val} > {len(ds.y_train)} training images")
    # The offline CIFAR-10 file is sorted by class: a seeded permutation, never "the first n".
    # Training sets are nested prefixes of it (data.subset), so the select images — the next
    # n_select of the permutation — leave the training and validation images unchanged.
    s = data.subset(ds, n_train=(n_train + n_select) if n_train > 0 else None, n_val=n_val,
                    n_test=int(cfg.get("n_test", 0)) or None,
                    generator=samplers.generator(int(cfg.get("data_seed", 0)), "split"))
    side = cfg.get("resolution")
    x_eval, y_eval = s.x_test, s.y_test
    if n_select:  # a regime gate evaluates on held-out training images, never on the test set
        x_eval, y_eval = s.x_train[n_train:], s.y_train[n_train:]
    x_train, y_train = s.x_train[:n_train] if n_train > 0 else s.x_train, s.y_train[:n_train] if n_train > 0 else s.y_train
    return data.Subset(_resample(x_train, side), y_train, _resample(s.x_val, side), s.y_val,
                       _resample(x_eval, side), y_eval, s.num_classes, s.name)


def prepare_data(data_cfg: dict, device=None) -> data.Subset:
    """The train / validation / test tensors of ``data_cfg`` (uint8 NCHW images at the config's
    resolution, int64 labels; cached per process)."""
    return _prepared(json.dumps(data_cfg, sort_keys=True), str(get_device(device)))


def task_transform(task: Task):
    """``fn(x_float, generator) -> x_float`` applying the task's transforms (blur → contrast →
    shift) to a float batch in [0, 1], or None for the identity task."""
    if task.is_identity:
        return None

    def transform(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if task.blur != 1:
            x = data.blur(x, task.blur)
        if task.contrast != 1:
            x = data.contrast(x, task.contrast)
        if task.shift != 0:
            x = data.random_shift(x, task.shift, generator=generator)
        return x

    return transform


def _transformed(x: torch.Tensor, task: Task, generator: torch.Generator) -> torch.Tensor:
    """``x`` (uint8) as floats under ``task``, random shifts drawn once from ``generator``."""
    xf = train.as_float(x)
    tf = task_transform(task)
    return xf if tf is None else tf(xf, generator)


# =============================================================================================
# 3. One run: a path for one seed
# =============================================================================================
def prefix_cache_dir() -> Path | None:
    """Where :func:`run_path` memoises path prefixes: ``$ZAPLIB_PATHS_CACHE`` ("" or "off"
    disables it), else ``~/.cache/zaplib/paths``."""
    value = os.environ.get("ZAPLIB_PATHS_CACHE")
    if value is not None and value.strip().lower() in ("", "off", "0", "none"):
        return None
    return Path(value) if value else Path.home() / ".cache" / "zaplib" / "paths"


def _prefix_key(config: dict, n_steps: int, device: torch.device) -> str:
    payload = {k: config[k] for k in ("seed", "data", "model", "probes")}
    if config.get("precision", "fp32") != "fp32":  # fp32 keys stay what they were
        payload["precision"] = config["precision"]
    payload.update(path=config["path"][:n_steps], device=device.type, version=CACHE_VERSION)
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def model_config(model_cfg: dict, in_channels: int, side: int, num_classes: int, seed: int) -> dict:
    """The :func:`zaplib.models.build` config of a path's ``model_cfg`` (``name`` + constructor
    settings), with channels / input size / classes filled in and initialised from ``seed``
    (PyTorch default init, paper appendix 8.2)."""
    cfg = {k: v for k, v in model_cfg.items() if k != "name"}
    name = model_cfg["name"]
    cfg.update(model=name, seed=seed)
    cfg.setdefault("num_classes", num_classes)
    if name in ("small_cnn", "mlp"):
        cfg.update(in_channels=in_channels, input_size=side)
    elif name in ("resnet18", "resnet10"):
        cfg["in_channels"] = in_channels
        if in_channels != 3:  # the CIFAR mean/std of the ResNet's built-in normalisation need 3 channels
            cfg.setdefault("normalize", False)
    return cfg


def _run_step(model: nn.Module, step: Step, index: int, d: data.Subset, seed: int, probes: dict,
              device: torch.device, precision: str = "fp32") -> dict[str, pd.DataFrame]:
    """Apply one (task, process) pair, with its bias reset, to ``model`` in place (training steps
    at ``precision``, :func:`zaplib.train.autocast`)."""
    gen = samplers.generator(seed, "step", index, "train")
    probe_gen = samplers.generator(seed, "step", index, "sharpness")
    n_probe = int(probes["n_probe"])
    x_probe = _transformed(d.x_train[:n_probe], step.task,
                           samplers.generator(seed, "step", index, "probe_images")).to(device)
    y_probe = d.y_train[:n_probe]
    x_val = _transformed(d.x_val, step.task, samplers.generator(seed, "step", index, "val_images"))
    norms, activity, sharp = [], [], []

    def snapshot(moment):
        norms.append(layer_norms(model).assign(step=index, moment=moment))
        activity.append(relu_activity(model, x_probe).assign(step=index, moment=moment))

    def probe(epoch):
        loss, increase = perturbed_loss_sharpness(model, x_probe, y_probe, probes["sharpness_sigma"],
                                                  int(probes["sharpness_draws"]), probe_gen)
        sharp.append({"step": index, "epoch": epoch, "probe_loss": loss, "sharpness": increase, "final": False})

    snapshot("start")
    shifted = 0
    if step.bias_shift:
        shifted = resets.shift_biases(model, step.bias_shift)
        snapshot("after_bias_reset")
    hessian = {}
    if probes.get("hessian_iters"):
        hessian["hessian_start"] = hessian_top_eigenvalue(model, x_probe, y_probe, int(probes["hessian_iters"]),
                                                          samplers.generator(seed, "step", index, "hessian"))
    every, dense = int(probes.get("probe_every", 5)), int(probes.get("probe_dense", 5))

    def callback(epoch, _model):
        # the "large-update phase" is the start of a step: probe it densely, the rest sparsely
        if epoch <= dense or (every and epoch % every == 0):
            probe(epoch)

    p = step.process
    _, records = train.train_iid(
        model, d.x_train, d.y_train, x_val, d.y_val, epochs=p.max_epochs, batch_size=p.batch_size,
        optimizer=p.optimizer, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay,
        patience=p.patience, restore_best=p.restore_best, augment=task_transform(step.task),
        generator=gen, epoch_callback=callback, precision=precision,
    )
    ran = int(records["epoch"].max()) if len(records) else 0
    probe(ran)  # the state that leaves the step (best checkpoint when restored)
    sharp[-1]["epoch"] = ran
    sharp[-1]["final"] = True
    snapshot("end")
    if probes.get("hessian_iters"):
        hessian["hessian_end"] = hessian_top_eigenvalue(model, x_probe, y_probe, int(probes["hessian_iters"]),
                                                        samplers.generator(seed, "step", index, "hessian"))
    test = train.evaluate(model, d.x_test, d.y_test)
    best_epoch = records.attrs.get("best_epoch")
    best_row = records[records["epoch"] == best_epoch] if best_epoch is not None else records.iloc[[]]
    step_row = {
        "step": index, **{f"task_{k}": v for k, v in asdict(step.task).items()},
        **{f"process_{k}": v for k, v in asdict(step.process).items()},
        "bias_shift": step.bias_shift, "entries_shifted": shifted, "epochs_run": ran,
        "best_epoch": best_epoch if best_epoch is not None else np.nan,
        "best_val_loss": float(best_row["val_loss"].iloc[0]) if len(best_row) else np.nan,
        "train_loss_at_best": float(best_row["train_loss"].iloc[0]) if len(best_row) else np.nan,
        "last_train_loss": float(records["train_loss"].iloc[-1]) if len(records) else np.nan,
        "test_loss_clean": test["loss"], "test_acc_clean": test["acc"], **hessian,
    }
    return {
        "steps": pd.DataFrame([step_row]),
        "records": records.assign(step=index),
        "probes": pd.DataFrame(sharp),
        "norms": pd.concat(norms, ignore_index=True),
        "activity": pd.concat(activity, ignore_index=True),
    }


def _load_prefix(cache: Path | None, key: str):
    if cache is None or not (cache / f"{key}.pt").exists():
        return None
    try:
        return torch.load(cache / f"{key}.pt", map_location="cpu", weights_only=False)
    except Exception:  # a damaged memo is only a missed shortcut
        return None


def _save_prefix(cache: Path | None, key: str, state: dict, frames: dict) -> None:
    if cache is None:
        return
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{key}.{os.getpid()}.tmp"
        torch.save({"state": state, "frames": {k: v.to_dict("list") for k, v in frames.items()}}, tmp)
        os.replace(tmp, cache / f"{key}.pt")
    except OSError:
        pass


def run_path(config: dict) -> dict[str, pd.DataFrame]:
    """Follow the learning path of ``config`` (:func:`path_config`) from a fresh model and return
    tidy tables (one run of the sequential learning process Ω, paper Def. 3):

    * ``final``: one row — test loss / accuracy of the final model on the clean test set (the
      paper's y-axis), total epochs, epochs to the best validation loss of the last task;
    * ``steps``: one row per step (its task and process, epochs run, best epoch, best validation
      loss, clean test loss after the step, entries changed by the bias reset, optional λ_max);
    * ``records``: one row per epoch and step (train / validation loss and accuracy);
    * ``probes``: training-batch loss and the sharpness proxy at the start of every epoch;
    * ``norms``, ``activity``: appendix statistics at each step's start, after its bias reset and
      at its end."""
    return _follow(config, memoise_end=False)


def _follow(config: dict, memoise_end: bool) -> dict[str, pd.DataFrame]:
    device = get_device()
    path = [step_from_dict(s) for s in config["path"]]
    if not path:
        raise ValueError("a learning path needs at least one step")
    seed, probes = int(config["seed"]), {**DEFAULT_PROBES, **config.get("probes", {})}
    d = prepare_data(config["data"], device)
    shape = d.x_train.shape
    model = models.build(model_config(config["model"], shape[1], shape[-1], d.num_classes, seed)).to(device)
    cache = prefix_cache_dir()
    frames: dict[str, list[pd.DataFrame]] = {}
    start = 0
    for n in range(len(path), 0, -1):  # the longest memoised prefix
        hit = _load_prefix(cache, _prefix_key(config, n, device))
        if hit is not None:
            model.load_state_dict(hit["state"])
            frames = {k: [pd.DataFrame(v)] for k, v in hit["frames"].items()}
            start = n
            break
    for index in range(start, len(path)):
        out = _run_step(model, path[index], index, d, seed, probes, device, config.get("precision", "fp32"))
        for k, v in out.items():
            frames.setdefault(k, []).append(v)
        frames = {k: [pd.concat(v, ignore_index=True)] for k, v in frames.items()}
        if index < len(path) - 1 or memoise_end:  # a complete path lives in the results store
            _save_prefix(cache, _prefix_key(config, index + 1, device),
                         {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                         {k: v[0] for k, v in frames.items()})
    tables = {k: v[0] for k, v in frames.items()}
    test = train.evaluate(model, d.x_test, d.y_test)
    last = tables["steps"].iloc[-1]
    tables["final"] = pd.DataFrame([{
        "seed": seed, "n_steps": len(path), "test_loss": test["loss"], "test_acc": test["acc"],
        "total_epochs": int(tables["steps"]["epochs_run"].sum()),
        "last_best_epoch": last["best_epoch"], "last_epochs_run": int(last["epochs_run"]),
        "last_train_loss_at_best": last["train_loss_at_best"],
    }])
    return tables


def shared_prefixes(configs: Iterable[dict]) -> list[dict]:
    """Configs truncated to every proper prefix that at least two of ``configs`` share, shortest
    first (so :func:`warm_prefixes` can compute each once before the paths that continue it)."""
    configs = list(configs)
    count: dict[str, list] = {}
    for c in configs:
        for n in range(1, len(c["path"])):
            key = _prefix_key(c, n, torch.device("cpu"))
            count.setdefault(key, [0, n, c])[0] += 1
    chosen = sorted((v for v in count.values() if v[0] >= 2), key=lambda v: v[1])
    return [{**v[2], "path": v[2]["path"][:v[1]]} for v in chosen]


def warm_prefixes(configs: Sequence[dict], executor=None, progress: bool = True) -> int:
    """Compute into the memo (:func:`prefix_cache_dir`) every prefix that at least two of
    ``configs`` share and that is not memoised yet, through :func:`zaplib.store.sweep`, so that
    parallel workers following the full paths afterwards do not each recompute it. Returns the
    number of prefixes computed (0 when the memo is off)."""
    cache = prefix_cache_dir()
    if cache is None or not configs:
        return 0
    device = get_device()
    todo = [p for p in shared_prefixes(configs)
            if _load_prefix(cache, _prefix_key(p, len(p["path"]), device)) is None]
    if todo:
        sweep(memoise_path, todo, executor=executor, progress=progress)
    return len(todo)


def step_keys(config: dict) -> list[str]:
    """One key per step of ``config``'s path, equal for two paths exactly when they share the
    path up to and including that step (the memo's keys; used to count shared work once)."""
    return [_prefix_key(config, n, torch.device("cpu")) for n in range(1, len(config["path"]) + 1)]


def memoise_path(config: dict) -> dict:
    """Follow ``config``'s path and memoise its end state as a prefix (for :func:`warm_prefixes`);
    returns an empty result."""
    _follow(config, memoise_end=True)
    return {}
