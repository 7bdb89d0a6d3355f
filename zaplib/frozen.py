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
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import data, get_device, models, probes, resets, samplers, train

INTERVENTIONS = ("none", "reset_mutual", "reset_random", "reset_frozen", "reset_units", "reinit")
RESET_OPS = {  # the chapter's intervention -> its op in zaplib.resets.RESETS
    "none": "none",
    "reset_mutual": "mutually_frozen",
    "reset_random": "random_like_mutually_frozen",
    "reset_frozen": "frozen",
    "reset_units": "collapsed_units",
    "reinit": "reinit_all",
}
LR_SCHEDULES = ("constant", "cosine")
READOUTS = ("last", "best_val")
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


class SeparateModels:
    """S models trained side by side *without* ``vmap``: the same interface as the parts of
    :class:`~zaplib.train.StackedModels` that :func:`train_stacked` uses (``step``, ``unstack``,
    ``optimizers``, ``len``), but each model is an ordinary module with its own SGD optimiser and
    coupled L2 weight decay (``torch.optim.SGD(weight_decay=λ_s)``, the same rule as
    :func:`add_weight_decay`). Why: on a CPU, ``vmap`` turns S convolutions into one grouped
    convolution, which can be slower than S plain ones (README, "S = 8 models at once"); which is
    faster for a given net is measured, not assumed (the chapter's regime gate)."""

    def __init__(self, models_: Sequence[nn.Module], weight_decays: Sequence[float], lr: float,
                 momentum: float):
        if len(weight_decays) != len(models_):
            raise ValueError(f"need one weight decay per model: {len(models_)} models, "
                             f"{len(weight_decays)} values")
        self.models = list(models_)
        self.optimizers = [train.make_optimizer(m.parameters(), "sgd", lr, momentum, weight_decay=float(wd))
                           for m, wd in zip(self.models, weight_decays)]

    def __len__(self) -> int:
        return len(self.models)

    def step(self, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32"):
        """One SGD step of every model s on its own batch ``(x[s], y[s])``; returns (losses (S,), None)."""
        losses = []
        for s, (model, opt) in enumerate(zip(self.models, self.optimizers)):
            model.train()
            opt.zero_grad(set_to_none=True)
            with train.autocast(precision, x.device):
                loss = F.cross_entropy(model(x[s]), y[s])
            loss.float().backward()
            opt.step()
            losses.append(loss.detach().float())
        return torch.stack(losses), None

    @torch.no_grad()
    def unstack(self, models_: Sequence[nn.Module] | None = None) -> list[nn.Module]:
        """Copies of the current models (or their weights written into ``models_``)."""
        if models_ is None:
            return [copy.deepcopy(m) for m in self.models]
        for target, model in zip(models_, self.models):
            if target is not model:
                target.load_state_dict(model.state_dict())
        return list(models_)


def _lockstep_trainer(models_: Sequence[nn.Module], weight_decays: Sequence[float], lr: float,
                      momentum: float, stack: bool):
    """The S models as one :class:`~zaplib.train.StackedModels` (``vmap``; per-model coupled L2 via
    :func:`add_weight_decay`) or as :class:`SeparateModels`, with the optimisers whose learning
    rate a schedule sets: (trainer, optimizers)."""
    if stack:
        stacked = train.StackedModels(list(models_), optimizer="sgd", lr=lr, momentum=momentum,
                                      grad_mode="func")  # vmapped backward: ~1.5–2× faster here
        add_weight_decay(stacked, weight_decays)
        return stacked, [stacked.optimizer]
    separate = SeparateModels(models_, weight_decays, lr, momentum)
    return separate, separate.optimizers


def lr_at(step: int, steps: int, lr: float, schedule: str = "constant") -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``steps``: ``"constant"``, or
    ``"cosine"`` annealing to 0 without restarts (Loshchilov & Hutter 2017, SGDR, eq. 5 with one
    cycle): lr·½(1 + cos(π·step/steps)), so step 0 uses ``lr`` and ``step = steps`` (after the last
    step) gives 0."""
    if schedule == "constant":
        return float(lr)
    if schedule == "cosine":
        return float(lr) * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / max(steps, 1)))
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")


def val_schedule(steps: int, n_evals: int) -> list[int]:
    """``n_evals`` evenly spaced validation steps ending at ``steps`` (none for ``n_evals`` ≤ 0)."""
    if n_evals <= 0 or steps <= 0:
        return []
    return sorted({max(1, int(round(steps * k / n_evals))) for k in range(1, n_evals + 1)})


def train_stacked(models_: Sequence[nn.Module], weight_decays: Sequence[float], x: torch.Tensor,
                  y: torch.Tensor, *, steps: int, batch_size: int, lr: float, momentum: float,
                  generators: Sequence[torch.Generator],
                  probe: Callable[[int, train.StackedModels], object] | None = None,
                  probe_steps: Sequence[int] = (), precision: str = "fp32", stack: bool = True,
                  lr_schedule: str = "constant", val_data: tuple[torch.Tensor, torch.Tensor] | None = None,
                  val_steps: Sequence[int] = (), readout: str = "last") -> tuple[list[nn.Module], pd.DataFrame, list]:
    """Train S models in lock-step for ``steps`` SGD steps (momentum, per-model coupled L2 weight
    decay :func:`add_weight_decay`), model s drawing its batches with ``generators[s]``, the steps
    at ``precision`` (:func:`zaplib.train.autocast`).

    A fixed number of steps rather than epochs with early stopping, so that the number of updates a
    frozen weight receives is the same for every model, and so that probes can sit at arbitrary
    steps: ``probe(step, stacked)`` is called *before* step ``step`` for every ``step`` in
    ``probe_steps`` (``steps`` itself means after the last one). The models passed in are updated
    in place. Returns (models, losses, probe results), ``losses`` with one row per model and probe
    interval: ``model, step, train_loss`` (the mean loss of the steps since the previous probe).

    Options (the defaults are the behaviour every stored ``quick`` run was computed with):

    - ``stack``: True trains the S models as one :class:`~zaplib.train.StackedModels` (``vmap``),
      False as :class:`SeparateModels` (same update rule; only the speed differs);
    - ``lr_schedule``: :func:`lr_at` ("constant" or "cosine" to 0 over ``steps``);
    - ``val_data``, ``val_steps``: validation accuracy of every model at these steps (a column
      ``val_acc`` of ``losses``, rows at the validation steps);
    - ``readout``: "last" returns the models after the last step; "best_val" the state of each model
      at its best validation accuracy among ``val_steps`` (ties: the earlier), a readout that does
      not hinge on where the last noisy SGD step happens to land (issue 17).
    """
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if readout == "best_val" and (val_data is None or not len(val_steps)):
        raise ValueError("readout='best_val' needs val_data and val_steps")
    batch_size = min(batch_size, len(x))
    stacked, optimizers = _lockstep_trainer(models_, weight_decays, lr, momentum, stack)
    wanted = set(int(s) for s in probe_steps)
    evals = set(int(s) for s in val_steps) if val_data is not None else set()
    stream = _batch_stream(len(x), batch_size, generators, x.device)
    loss_sum = torch.zeros(len(stacked), device=x.device)
    since, rows, outputs = 0, [], []
    best_acc = [-1.0] * len(stacked)
    best_state: list[dict | None] = [None] * len(stacked)
    for step in range(steps + 1):
        if step in wanted or step in evals:
            val_acc = None
            if step in evals:
                current = stacked.unstack()
                val_acc = [train.evaluate(net, *val_data)["acc"] for net in current]
                for s, (net, acc) in enumerate(zip(current, val_acc)):
                    if acc > best_acc[s]:
                        best_acc[s], best_state[s] = acc, copy.deepcopy(net.state_dict())
            if since or val_acc is not None:
                mean = (loss_sum / since).cpu().numpy() if since else np.full(len(stacked), np.nan)
                for s, v in enumerate(mean):
                    row = {"model": s, "step": step, "train_loss": float(v)}
                    if evals:
                        row["val_acc"] = float(val_acc[s]) if val_acc is not None else float("nan")
                    rows.append(row)
                loss_sum.zero_()
                since = 0
            if step in wanted and probe is not None:
                outputs.append(probe(step, stacked))
        if step == steps:
            break
        if lr_schedule != "constant":
            rate = lr_at(step, steps, lr, lr_schedule)
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = rate
        idx = next(stream)
        losses, _ = stacked.step(train.as_float(x[idx]), y[idx], precision)
        loss_sum += losses
        since += 1
    stacked.unstack(list(models_))
    if readout == "best_val":
        with torch.no_grad():
            for net, state in zip(models_, best_state):
                net.load_state_dict(state)
    columns = ["model", "step", "train_loss"] + (["val_acc"] if evals else [])
    return list(models_), pd.DataFrame(rows, columns=columns), outputs


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
    import warnings

    with warnings.catch_warnings():
        # many tied points (e.g. networks with nothing frozen) make some resamples constant: their ρ
        # is undefined and scipy warns per resample; the interval is over the defined ones
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
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


def retrain_cells(config: dict) -> list[tuple[str, float, float, str]]:
    """The retraining cells of a run, as (target, fraction, pre-training λ, intervention), in the
    order they are stacked (targets, fractions, then models seed-major with λ fastest, then
    ``config["interventions"]``; the seeds of the run share every cell).

    ``retrain_cells`` = "all" (the default; every stored ``quick`` run): every target × fraction ×
    λ × intervention. "declared" (issue 17): only the cells a figure or claim reads, with
    λ* = ``config["reset_decay"]`` (chosen on the regime gate's source validation accuracy):

    (a) every λ: each of ``grid_targets`` at the full target set, ``grid_interventions``
        (the λ grid of the adaptability figures and the validation-chosen operating point); from a
        clean source only λ = 0 and λ* (cut to fit the ``long`` budget: the λ-grid figures read
        the blurred source, whose resets the claims test);
    (b) λ*: every target × fraction; from a blurred source every intervention but ``reinit`` at
        the full target set and ``none`` / ``reset_mutual`` at the smaller ones (the random and
        unit-level controls are claimed at the full set only: cut 3 of the long plan, after the
        gate chose fp32), from a clean source ``none`` only (the clean → clean control);
    (c) λ = the smallest λ (0): every target × fraction, ``none`` (the reference of the λ claims);
    (d) from a clean source only: every target × fraction, ``reinit`` — the scratch arm, which
        does not depend on the source or λ and so is trained once; it sits in the row of the
        first λ of the run.

    A cell named by two sets is trained once."""
    targets, fractions = list(config["targets"]), list(config["target_fractions"])
    decays, interventions = list(config["weight_decays"]), list(config["interventions"])
    mode = config.get("retrain_cells", "all")
    if mode == "all":
        return [(t, f, wd, v) for t in targets for f in fractions for wd in decays for v in interventions]
    if mode != "declared":
        raise ValueError(f"retrain_cells must be 'all' or 'declared', got {mode!r}")
    star = config.get("reset_decay")
    if star is None or not any(math.isclose(star, wd) for wd in decays):
        raise ValueError(f"retrain_cells='declared' needs reset_decay among weight_decays {decays}, got {star!r}")
    star = next(wd for wd in decays if math.isclose(star, wd))
    blurred = parse_task(config["source"])[1] > 1
    wanted = set()
    grid = decays if blurred else [min(decays), star]
    for wd in grid:                                                            # (a)
        for t in config.get("grid_targets", []):
            if t in targets:
                wanted |= {(t, max(fractions), wd, v) for v in config.get("grid_interventions", ["none"])}
    for t in targets:
        for f in fractions:
            arms = [v for v in interventions if v != "reinit"] if blurred else ["none"]
            if f < max(fractions):  # cut 3 of the long plan: the controls only where their claims read them
                arms = [v for v in arms if v in ("none", "reset_mutual")]
            wanted |= {(t, f, star, v) for v in arms}                          # (b)
            wanted.add((t, f, min(decays), "none"))                            # (c)
            if not blurred:
                wanted.add((t, f, decays[0], "reinit"))                        # (d)
    return [(t, f, wd, v) for t in targets for f in fractions for wd in decays for v in interventions
            if (t, f, wd, v) in wanted]


def shift(x: torch.Tensor, pixels: int) -> torch.Tensor:
    """Every image moved ``pixels`` to the right (and down), the uncovered border black: a fixed
    translation, the nuisance "shift" of :func:`nuisance_transform`."""
    out = torch.zeros_like(x)
    out[..., pixels:, pixels:] = x[..., : x.shape[-2] - pixels, : x.shape[-1] - pixels]
    return out


def nuisance_transform(name: str, x: torch.Tensor, generator: torch.Generator | None = None):
    """The transform T of a nuisance direction d = T(x) − x for :func:`zaplib.probes.nuisance_sensitivity`
    on the float images ``x`` (the whole set, one batch): ``"blurK"`` (:func:`zaplib.data.blur`, the
    chapter's domain gap), ``"shiftK"`` (:func:`shift` by K pixels) or ``"noise"`` — a fixed Gaussian
    direction drawn once with ``generator`` (the same for every network, so the reference is paired):
    the sensitivity along a direction with no structure, against which a nuisance's is read."""
    if name == "noise":
        noise = torch.randn(x.shape, generator=generator, device=generator.device if generator else None).to(x.device)
        return lambda xb: xb + noise[: len(xb)]
    if name.startswith("blur"):
        k = float(name[4:])
        return lambda xb: data.blur(xb, k)
    if name.startswith("shift"):
        pixels = int(name[5:])
        return lambda xb: shift(xb, pixels)
    raise ValueError(f"unknown nuisance {name!r}; use 'blurK', 'shiftK' or 'noise'")


#: log10(|w| / σ_init) histogram of :func:`weight_histogram`: 28 bins over [−6, 1] (|w| = 0 and
#: anything smaller fall in the first bin, anything larger in the last).
HIST_RANGE, HIST_BINS = (-6.0, 1.0), 28


def weight_histogram(model: nn.Module) -> pd.DataFrame:
    """Per conv/linear layer, the histogram of log10(|w|/σ_init) (:data:`HIST_RANGE`,
    :data:`HIST_BINS`): columns layer, bin_lo, bin_hi, count. Whether the small weights form a
    separate population (a gap in the histogram) or the tail of one decides how much the ε of the
    definition matters."""
    edges = np.linspace(*HIST_RANGE, HIST_BINS + 1)
    rows = []
    for qn, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        sigma = models.init_weight_std(model, module)
        w = module.weight.detach().abs().flatten().double().cpu().numpy() / sigma
        logs = np.clip(np.log10(np.maximum(w, 1e-300)), edges[0], edges[-1])
        counts, _ = np.histogram(logs, bins=edges)
        rows += [{"layer": qn, "bin_lo": float(lo), "bin_hi": float(hi), "count": int(c)}
                 for lo, hi, c in zip(edges[:-1], edges[1:], counts)]
    return pd.DataFrame(rows, columns=["layer", "bin_lo", "bin_hi", "count"])


def unit_table(model: nn.Module, eps: float, x: torch.Tensor | None = None,
               taus: Sequence[float] = ()) -> pd.DataFrame:
    """Per hidden layer: units, collapsed units (:func:`zaplib.resets.collapsed_units`: incoming
    weights and bias below ε·σ_init) and, with images ``x`` and thresholds ``taus``, the units that
    are *dormant* by their activations (:func:`zaplib.probes.dormant_units`, Sokar et al. 2023),
    columns ``dormant[τ]`` — the weight-level definition beside the activation-level one of the
    dormant-neuron literature. The k-th ReLU of a plain net follows its k-th conv/linear layer."""
    _, table = resets.collapsed_units(model, eps)
    table = table.drop(columns="weights")
    if x is not None and len(taus):
        scores = probes.dormant_scores(model, train.as_float(x))  # one forward pass for every τ
        for tau in taus:
            counts = probes.dormant_table(scores, tau)["dormant"].to_numpy()[: len(table)]
            table[f"dormant[{tau:g}]"] = np.pad(counts, (0, len(table) - len(counts)), constant_values=-1)
    return table


def benchmark_steps(nets: Sequence[nn.Module], weight_decays: Sequence[float], x: torch.Tensor,
                    y: torch.Tensor, *, steps: int, batch_size: int, lr: float, momentum: float,
                    precision: str) -> pd.DataFrame:
    """Seconds per lock-step training step of copies of ``nets``, stacked (``vmap``) and as
    :class:`SeparateModels`, measured back to back on the same batches after two warm-up steps
    (the regime gate's stacking check: keep ``vmap`` only if it is faster here)."""
    rows = []
    gens = [samplers.generator(0, "benchmark", s) for s in range(len(nets))]
    for stack in (True, False):
        copies = [copy.deepcopy(n) for n in nets]
        stream = _batch_stream(len(x), min(batch_size, len(x)), gens, x.device)
        runner, _ = _lockstep_trainer(copies, weight_decays, lr, momentum, stack)
        for k in range(steps + 2):
            if k == 2:
                tic = time.perf_counter()
            idx = next(stream)
            runner.step(train.as_float(x[idx]), y[idx], precision)
        rows.append({"phase": "benchmark " + ("stacked" if stack else "separate"), "models": len(nets),
                     "steps": steps, "image_steps": steps * len(nets) * min(batch_size, len(x)),
                     "seconds": time.perf_counter() - tic})
    return pd.DataFrame(rows)


def pretrain_and_retrain(config: dict) -> dict:
    """Pre-train on ``config["source"]`` (all seeds × weight decays stacked), then retrain on each
    target of ``config["targets"]`` the cells of :func:`retrain_cells` (by default every target-set
    fraction × intervention of every network). See the module docstring for the four main tables;
    ``timing`` (seconds and image-steps of each training phase) is always returned, and optional
    keys add tables: ``eps_grid`` → ``eps`` (:func:`zaplib.resets.eps_sensitivity` per model),
    ``weight_hist`` (:func:`weight_histogram`) and ``units`` (:func:`unit_table`, dormant units at
    ``dormant_taus`` on ``n_sensitivity`` source validation images); ``nuisances`` → ``nuisance``
    (per model × target × nuisance, :func:`zaplib.probes.nuisance_sensitivity` on ``n_sensitivity``
    target test images); ``benchmark_steps`` → benchmark rows in ``timing``.

    Seeding (every stream from :func:`zaplib.samplers.generator`): model (seed s, any λ) starts
    from the stream (s, "init") and draws its batches from (s, "pretrain"), so models that differ
    only in λ — or only in the source task — are paired: same init, same batch order. Retraining
    batch order is the stream (s, "finetune", target, fraction index) and is the same for every
    intervention, so interventions are paired too; the re-draws of an intervention use their own
    stream (s, "intervene", intervention, target). With ``paired_draws`` they use (s, "intervene",
    intervention) for every target, and ``reinit`` is the seed's own initial network (the one its
    pre-training started from) rather than a fresh draw per target — so the scratch arm is the
    same network whatever the target or source.

    Retraining options (absent = the behaviour of the stored ``quick`` runs): ``lr_schedule``,
    ``val_evals`` (validation evaluations, evenly spaced) and ``readout`` of :func:`train_stacked`;
    ``stack_models`` False trains without ``vmap`` (:class:`SeparateModels`, both phases).
    """
    device = get_device(config.get("device"))
    eps = config["eps"]
    index = _model_index(config)
    wds = index["weight_decay"].tolist()
    ft_decay = config.get("finetune_weight_decay", SAME_DECAY)
    precision = config.get("precision", "fp32")
    stack = bool(config.get("stack_models", True))
    paired = bool(config.get("paired_draws", False))
    source = load_task(config["source"], config["n_pretrain"], config["n_val"], config["n_test"], device)
    shape = tuple(source["x_train"].shape[1:])

    def initial(seed):
        return models.build(model_config(config, shape, source["num_classes"], seed)).to(device)

    nets = [initial(seed) for seed in index["seed"]]
    timing = []

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
    tic = time.perf_counter()
    nets, losses, pretrain_frames = train_stacked(
        nets, wds, source["x_train"], source["y_train"], steps=steps, batch_size=bs,
        lr=config["lr"], momentum=config["momentum"], generators=gens, probe=pretrain_probe,
        probe_steps=range(0, steps + 1, per_epoch), precision=precision, stack=stack)
    timing.append({"phase": "pretrain", "models": len(nets), "steps": steps,
                   "image_steps": steps * len(nets) * min(bs, len(source["x_train"])),
                   "seconds": time.perf_counter() - tic})
    pretrain = pd.concat(pretrain_frames, ignore_index=True).merge(losses, on=["model", "step"], how="left")
    pretrain = index.merge(pretrain, on="model")
    extra = {}
    if config.get("benchmark_steps", 0):
        bench = benchmark_steps(nets, wds, source["x_train"], source["y_train"], steps=int(config["benchmark_steps"]),
                                batch_size=bs, lr=config["lr"], momentum=config["momentum"], precision=precision)
        timing += bench.to_dict("records")

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

    # ---- optional measurements of the pre-trained models (issue 17): ε sensitivity, |w| histogram,
    # unit counts, sensitivity along nuisance directions
    if config.get("eps_grid"):
        grid = sorted(set(map(float, config["eps_grid"])) | {float(eps)})
        x_units = source["x_val"][:n_sens]
        frames = {"eps": [], "weight_hist": [], "units": []}
        for s, net in enumerate(nets):
            frames["eps"].append(resets.eps_sensitivity(net, grid).assign(model=s))
            frames["weight_hist"].append(weight_histogram(net).assign(model=s))
            frames["units"].append(unit_table(net, eps, x_units, config.get("dormant_taus", ())).assign(model=s))
        for name, parts in frames.items():
            extra[name] = index.merge(pd.concat(parts, ignore_index=True), on="model")
    if config.get("nuisances"):
        rows = []
        for t, task in targets.items():
            x_t = train.as_float(task["x_test"][:n_sens])
            transforms = {name: nuisance_transform(name, x_t, samplers.generator(DATA_SEED, "nuisance", name, t))
                          for name in config["nuisances"]}
            for s, net in enumerate(nets):
                for name, transform in transforms.items():
                    rows.append({"model": s, "target": t, "nuisance": name,
                                 "sensitivity": probes.nuisance_sensitivity(net, x_t, transform, batch_size=len(x_t))})
        extra["nuisance"] = index.merge(pd.DataFrame(rows, columns=["model", "target", "nuisance", "sensitivity"]),
                                        on="model")

    # ---- retraining: the cells of retrain_cells, per target × fraction all stacked
    finetune_rows, dynamics_frames = [], []
    cells = set(retrain_cells(config))
    interventions = list(config["interventions"])
    ft_schedule = config.get("lr_schedule", "constant")
    readout = config.get("readout", "last")
    n_val_evals = int(config.get("val_evals", 0))
    for t, task in targets.items():
        for f_i, fraction in enumerate(config["target_fractions"]):
            n = max(1, int(round(fraction * len(task["x_train"]))))
            x_t, y_t = task["x_train"][:n], task["y_train"][:n]
            ft_steps = finetune_steps(n, bs, config["finetune_epochs"], config["finetune_min_steps"])
            jobs, ft_nets, ft_wds, ft_gens = [], [], [], []
            for s, net in enumerate(nets):
                seed = int(index.seed[s])
                for intervention in interventions:
                    if (t, fraction, wds[s], intervention) not in cells:
                        continue
                    if paired and intervention == "reinit":
                        # the seed's initial network: what its pre-training started from
                        new, n_reset = initial(seed), sum(p.numel() for p in net.parameters())
                    else:
                        draw = (samplers.generator(seed, "intervene", intervention) if paired else
                                samplers.generator(seed, "intervene", intervention, t))
                        new, n_reset = intervene(net, intervention, eps, draw)
                    job = {"model": s, "target": t, "fraction": fraction, "n_target": n,
                           "steps": ft_steps, "intervention": intervention,
                           "finetune_weight_decay": wds[s] if ft_decay == SAME_DECAY else ft_decay,
                           "n_reset": n_reset,
                           "reset_frac": n_reset / sum(p.numel() for p in new.parameters()),
                           "test_acc_before": train.evaluate(new, task["x_test"], task["y_test"])["acc"]}
                    if intervention == "reset_units":
                        _, units = resets.collapsed_units(net, eps)
                        job["n_units_reset"] = int(units.collapsed_units.sum())
                    jobs.append(job)
                    ft_nets.append(new)
                    ft_wds.append(job["finetune_weight_decay"])
                    ft_gens.append(samplers.generator(seed, "finetune", t, f_i))
            if not jobs:
                continue

            track = math.isclose(fraction, config["track_fraction"]) and "none" in interventions
            probe, schedule = None, ()
            tracked = [k for k, job in enumerate(jobs) if job["intervention"] == "none"] if track else []
            if tracked:
                groups = {k: weight_groups(ft_nets[k], eps) for k in tracked}
                xp, yp = x_t[: config["probe_batch"]], y_t[: config["probe_batch"]]
                last = {}

                def probe(step, stacked, tracked=tracked, groups=groups, xp=xp, yp=yp, last=last, jobs=jobs):
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

            tic = time.perf_counter()
            ft_nets, ft_losses, probe_out = train_stacked(
                ft_nets, ft_wds, x_t, y_t, steps=ft_steps, batch_size=bs, lr=config["lr"],
                momentum=config["momentum"], generators=ft_gens, probe=probe, probe_steps=schedule,
                precision=precision, stack=stack, lr_schedule=ft_schedule,
                val_data=(task["x_val"], task["y_val"]) if n_val_evals else None,
                val_steps=val_schedule(ft_steps, n_val_evals), readout=readout)
            timing.append({"phase": f"retrain {t} {fraction:g}", "models": len(ft_nets), "steps": ft_steps,
                           "image_steps": ft_steps * len(ft_nets) * min(bs, n), "seconds": time.perf_counter() - tic})
            best_step = {}
            if n_val_evals:
                evals = ft_losses.dropna(subset=["val_acc"])
                best = evals.loc[evals.groupby("model").val_acc.idxmax()]
                best_step = dict(zip(best.model, best.step))
            for k, (job, net) in enumerate(zip(jobs, ft_nets)):
                pooled = frozen_table(net, eps).set_index("layer").loc["all"]
                row = {**job,
                       "val_acc": train.evaluate(net, task["x_val"], task["y_val"])["acc"],
                       "test_acc": train.evaluate(net, task["x_test"], task["y_test"])["acc"],
                       "frozen_frac_after": pooled.frozen_frac,
                       "mutually_frozen_frac_after": pooled.mutually_frozen_frac}
                if n_val_evals:
                    row["best_step"] = int(best_step[k])
                finetune_rows.append(row)
            if probe_out:
                frame = pd.concat(probe_out, ignore_index=True)
                frame.insert(1, "target", t)
                frame.insert(2, "fraction", fraction)
                dynamics_frames.append(frame)

    finetune = index.merge(pd.DataFrame(finetune_rows), on="model") if finetune_rows else pd.DataFrame(
        columns=[*index.columns, "target", "fraction", "intervention", "test_acc"])
    finetune.insert(3, "source", config["source"])
    if not dynamics_frames:  # nothing probed: an empty table with the usual columns
        dynamics_frames = [pd.DataFrame(columns=["model", "target", "fraction", "step", "layer", "group",
                                                 "n", "abs_w", "still_frozen", "abs_grad", "abs_update"])]
    dynamics = index.merge(pd.concat(dynamics_frames, ignore_index=True), on="model")
    dynamics.insert(3, "source", config["source"])
    pretrain.insert(3, "source", config["source"])
    return {"pretrain": pretrain, "models": model_table, "finetune": finetune, "dynamics": dynamics,
            "timing": pd.DataFrame(timing, columns=["phase", "models", "steps", "image_steps", "seconds"]),
            **extra}


__all__ = [
    "INTERVENTIONS", "GROUPS", "LR_SCHEDULES", "READOUTS", "parse_task", "parse_transfer", "load_task",
    "model_config", "add_weight_decay", "SeparateModels", "lr_at", "val_schedule", "train_stacked",
    "finetune_steps", "probe_schedule", "frozen_table", "weight_groups", "intervene", "dynamics_probe",
    "correlation", "retrain_cells", "shift", "nuisance_transform", "weight_histogram", "unit_table",
    "benchmark_steps", "pretrain_and_retrain", "SAME_DECAY",
]
