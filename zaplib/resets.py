"""Every reset op of the four papers, as one vocabulary: *which* entries × *how* they are re-drawn.

*When* to call them is the training loop's business (``zaplib.train``), not this module's.

Conventions (docs/api-contract.md): every op works in place under ``torch.no_grad()``, takes
``generator=`` (a ``torch.Generator``; draws happen on the generator's device and are then moved to
the parameter's device, so a CPU generator can drive a CUDA model reproducibly; ``None`` uses the
global RNG) and returns the number of entries it wrote.

"The model's own init" means the model's init rule (``model.init_module`` /
``model.init_weight_std``, see :mod:`zaplib.models`; PyTorch's default for foreign models). Such
re-draws run ``init_module`` on a copy of the module under the global RNG, seeded from ``generator``
inside ``torch.random.fork_rng`` so the global RNG state is left as it was.

Which op implements what:

- :func:`zap` — zapping, Frati et al. 2023 "Reset It and Forget It", Alg. 1 line 7.
- :func:`shrink_perturb` — Ash & Adams 2020 and LURE's S&P baseline (Ramkumar et al. 2023, §4).
- :func:`reinit_layers` — later-layer forgetting (Zhou et al. 2022; LURE's LLF baseline, §4).
- :func:`importance`, :func:`reset_mask`, :func:`masked_reinit`, :func:`snip_mask`,
  :func:`lure_reset` — LURE's unlearning step (§3 eqs. 2–3, App. Alg. 1 lines 8–11; App. Table 8
  for the other importance criteria).
- :func:`shift_biases` — bias reset of the negative pre-training paper (§6).
- :func:`frozen_mask`, :func:`mutually_frozen_mask`, :func:`random_masks_like` — mutually frozen
  weights (NeurIPS 2021; definition of issue 7 §1), re-drawn by :func:`masked_reinit`.

One mask convention: every mask of this module is True where an entry is to be reset.
One dispatcher: :func:`apply` runs any op by name (:data:`RESETS`), so the chapters' method names
(LURE's bl / sp / llf / lure / scratch, the frozen-weights interventions, the toolkit's ops) are
translations into this vocabulary, not separate implementations.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Callable, Iterable, Mapping, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F

from .models import init_module, init_weight_std

__all__ = [
    "RESETS",
    "apply",
    "zap",
    "fresh_init",
    "shrink_perturb",
    "reinit_layers",
    "importance",
    "reset_mask",
    "masked_reinit",
    "snip_mask",
    "lure_reset",
    "shift_biases",
    "frozen_mask",
    "mutually_frozen_mask",
    "random_masks_like",
    "collapsed_units",
    "eps_sensitivity",
]

ParamSelector = Union[str, Iterable[str], Callable[[str, torch.Tensor], bool], None]

_WEIGHTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def _draw_normal(shape, generator, device, dtype) -> torch.Tensor:
    """N(0, 1) drawn on the generator's device (the target device when None), then moved."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)


def _draw_uniform(shape, low, high, generator, device, dtype) -> torch.Tensor:
    """U(low, high) drawn on the generator's device (the target device when None), then moved."""
    source = generator.device if generator is not None else device
    out = torch.empty(shape, device=source, dtype=dtype)
    return out.uniform_(low, high, generator=generator).to(device)


@contextlib.contextmanager
def _global_rng_seeded_from(generator: torch.Generator | None):
    """Seed the global RNG of ``generator``'s device from ``generator`` for the block (so PyTorch's
    ``reset_parameters``, which knows no generator, becomes reproducible) and restore the global
    state afterwards. Yields the device to initialise on (None: no generator, use global RNG)."""
    if generator is None:
        yield None
        return
    device = generator.device
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index]):
            torch.cuda.default_generators[index].manual_seed(seed)
            yield device
    else:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield device


def _module_device(module: nn.Module) -> torch.device | None:
    for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
        return tensor.device
    return None


def _fresh_copy(model: nn.Module, module: nn.Module, generator, recurse: bool = False) -> nn.Module:
    """A copy of ``module`` re-initialised by ``model``'s init rule (all its submodules when
    ``recurse``), drawn on the generator's device and returned on ``module``'s device."""
    target = _module_device(module)
    with _global_rng_seeded_from(generator) as draw_device:
        fresh = copy.deepcopy(module)
        if draw_device is not None:
            fresh.to(draw_device)
        for sub in fresh.modules() if recurse else (fresh,):
            init_module(model, sub)
    return fresh.to(target) if target is not None else fresh


def _select_params(model: nn.Module, params: ParamSelector) -> list[tuple[str, nn.Parameter]]:
    """``"all"``/None: every parameter; ``"weight"``: names containing "weight" (LURE's rule: conv,
    linear and norm scales); ``"bias"``: names ending in "bias"; a callable ``(name, param) -> bool``;
    or an iterable of exact parameter names."""
    named = list(model.named_parameters())
    if params is None or params == "all":
        return named
    if params == "weight":
        return [(n, p) for n, p in named if "weight" in n]
    if params == "bias":
        return [(n, p) for n, p in named if n.rsplit(".", 1)[-1] == "bias"]
    if callable(params):
        return [(n, p) for n, p in named if params(n, p)]
    if isinstance(params, str):
        raise ValueError(f"unknown parameter selector {params!r}: use 'all', 'weight', 'bias', "
                         "a callable or a list of names")
    wanted = list(params)
    lookup = dict(named)
    missing = [n for n in wanted if n not in lookup]
    if missing:
        raise KeyError(f"no parameters named {missing}")
    return [(n, lookup[n]) for n in wanted]


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _requiring_grad(tensors: Sequence[torch.Tensor]):
    flags = [t.requires_grad for t in tensors]
    for t in tensors:
        t.requires_grad_(True)
    try:
        yield
    finally:
        for t, flag in zip(tensors, flags):
            t.requires_grad_(flag)


def _n_keep(keep: float, n: int) -> int:
    # round half up, not Python's banker's rounding, so the count is the documented round(keep·n)
    return int(math.floor(keep * n + 0.5))


# ---------------------------------------------------------------------------------------------
# Zapping
# ---------------------------------------------------------------------------------------------
def zap(head: nn.Module, classes=None, bias: str = "keep", fan_in: str = "row",
        generator: torch.Generator | None = None) -> int:
    """Zap output neurons: re-draw the head's weight rows of ``classes`` from Kaiming-normal.

    Frati et al. 2023, Alg. 1 line 7 ("Reset connections in θ^fc corresponding to class C"), and
    §2.1.1 for i.i.d. zapping of a random sample of classes / the whole layer. ``classes=None``
    zaps every row: the whole-head reset used before transfer (with ``bias="zero"``).

    Args:
        head: the ``nn.Linear`` head (a model with a ``.head`` is accepted too).
        classes: int, sequence or tensor of row indices (duplicates ignored); None = all rows.
        bias: ``"keep"`` leaves the zapped rows' biases alone (official code); ``"zero"`` sets them to
            0 (the paper's text).
        fan_in: ``"row"`` → std = √(2 / in_features), each row's own fan-in (2304 → 0.0295).
            ``"official_bug"`` reproduces the official i.i.d. path, which initialises the selected
            rows as one 3-D tensor (1, k, in_features), so torch's fan-in becomes k·in_features:
            std = √(2 / (k·in_features)), ≈ 0.00093 for all 1000 rows of a 2304-wide head (≈ 31×
            too small, i.e. almost zeroing). For k = 1 (ASB's one class) both agree.
        generator: seeds the draw.

    Returns:
        entries written: k·in_features (+ k biases with ``bias="zero"``).
    """
    if not isinstance(head, nn.Linear) and isinstance(getattr(head, "head", None), nn.Linear):
        head = head.head
    if not isinstance(head, nn.Linear):
        raise TypeError(f"zap needs an nn.Linear head, got {type(head).__name__}")
    if bias not in ("keep", "zero"):
        raise ValueError(f"bias must be 'keep' or 'zero', got {bias!r}")
    if fan_in not in ("row", "official_bug"):
        raise ValueError(f"fan_in must be 'row' or 'official_bug', got {fan_in!r}")
    weight = head.weight
    n_out, n_in = weight.shape
    if classes is None:
        rows = torch.arange(n_out)
    else:
        rows = torch.as_tensor(classes, dtype=torch.long).reshape(-1).cpu().unique()
        if rows.numel() and (rows.min() < 0 or rows.max() >= n_out):
            raise IndexError(f"classes must lie in [0, {n_out}), got {rows.tolist()}")
    k = rows.numel()
    if k == 0:
        return 0
    fan = n_in if fan_in == "row" else k * n_in
    std = math.sqrt(2.0 / fan)  # Kaiming-normal with ReLU gain √2 (torch's default a=0)
    rows = rows.to(weight.device)
    with torch.no_grad():
        weight[rows] = _draw_normal((k, n_in), generator, weight.device, weight.dtype) * std
        changed = k * n_in
        if bias == "zero" and head.bias is not None:
            head.bias[rows] = 0.0
            changed += k
    return changed


# ---------------------------------------------------------------------------------------------
# Shrink & perturb, later-layer forgetting
# ---------------------------------------------------------------------------------------------
def fresh_init(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """A deep copy of ``model`` with every module re-initialised by the model's own init rule
    (a "freshly initialised model"), seeded by ``generator``, on the model's device. Useful for
    Ash & Adams' θ_fresh and for full re-init baselines."""
    return _fresh_copy(model, model, generator, recurse=True)


def shrink_perturb(model: nn.Module, shrink: float, perturb: float, form: str = "noise",
                   fresh: nn.Module | None = None, params: ParamSelector = "all",
                   generator: torch.Generator | None = None) -> int:
    """Shrink & Perturb (Ash & Adams 2020; LURE's S&P baseline, §4 "Baselines" / App. implementation
    details), applied in place to the selected parameters.

    - ``form="noise"`` (LURE's code): θ ← shrink·θ + perturb·ε, ε ~ N(0, 1) per entry. LURE's code
      uses shrink 0.3, perturb 0.001; its paper text says 0.4 / 0.001.
    - ``form="fresh"`` (Ash & Adams' own): θ ← shrink·θ + perturb·θ_fresh, with θ_fresh the same
      parameter of a freshly initialised model (``fresh``; by default :func:`fresh_init` of
      ``model`` seeded by ``generator``), e.g. shrink 0.4, perturb 0.1.

    ``params="all"`` means every *parameter* — conv/linear weights and biases and norm-layer scales
    and shifts; buffers (BN running statistics) are never touched. Other selectors: ``"weight"``,
    ``"bias"``, a callable or a list of names. Returns the number of entries written.
    """
    if form not in ("noise", "fresh"):
        raise ValueError(f"form must be 'noise' or 'fresh', got {form!r}")
    selected = _select_params(model, params)
    fresh_params = None
    if form == "fresh":
        if fresh is None:
            fresh = fresh_init(model, generator)
        fresh_params = dict(fresh.named_parameters())
    count = 0
    with torch.no_grad():
        for name, p in selected:
            if form == "noise":
                other = _draw_normal(p.shape, generator, p.device, p.dtype)
            else:
                other = fresh_params[name].to(p.device, p.dtype)
            p.copy_(p * shrink + perturb * other)
            count += p.numel()
    return count


def _matches_prefix(qualified: str, prefixes: Sequence[str]) -> bool:
    return any(qualified == pre or qualified.startswith(pre + ".") for pre in prefixes)


def reinit_layers(model: nn.Module, names: str | Sequence[str],
                  generator: torch.Generator | None = None, include_norm: bool = False,
                  skip: Sequence[str] = (), weights_only: bool = False) -> int:
    """Later-layer forgetting: re-initialise, with the model's own init, the conv and linear layers
    (weights and biases) whose qualified module name is one of ``names`` or lies inside one
    (``"layer3"`` matches ``layer3.0.conv1`` but not ``layer30``).

    LURE's LLF baseline (§4 "Baselines"; App. implementation details: "reinitialize blocks 3 and 4")
    resets ``["layer3", "layer4", "fc"]`` of a ResNet, conv/linear only (reference notes); Zhou et
    al.'s own recipe starts at ``layer4``. Norm layers are left alone unless ``include_norm``, which
    resets their affine parameters *and* running statistics. Other module types are never touched.
    ``skip``: modules whose qualified name contains one of these words stay as they are;
    ``weights_only``: biases are kept. LURE's official LLF is ``skip=("shortcut",),
    weights_only=True``: it leaves the 1×1 shortcut ("downsample") convs alone and keeps the fc bias
    (reference notes). Returns the number of parameter entries written.
    """
    prefixes = [names] if isinstance(names, str) else list(names)
    matched = [(qn, m) for qn, m in model.named_modules() if _matches_prefix(qn, prefixes)
               and not any(word in qn for word in skip)]
    if not matched:
        raise ValueError(f"no module of the model matches {prefixes}")
    count = 0
    with torch.no_grad():
        for _, module in matched:
            is_norm = isinstance(module, _NORM_LAYERS)
            if not (isinstance(module, _WEIGHTED_LAYERS) or (include_norm and is_norm)):
                continue
            own = list(module.named_parameters(recurse=False))
            if not own:
                continue
            fresh = _fresh_copy(model, module, generator)
            for pname, p in own:
                if weights_only and pname != "weight":
                    continue
                p.copy_(getattr(fresh, pname))
                count += p.numel()
            if is_norm:
                for bname, buf in module.named_buffers(recurse=False):
                    fresh_buf = getattr(fresh, bname)
                    if buf is not None and fresh_buf is not None:
                        buf.copy_(fresh_buf)
    return count


# ---------------------------------------------------------------------------------------------
# LURE: importance, reset masks, masked re-init
# ---------------------------------------------------------------------------------------------
def importance(model: nn.Module, batch, criterion: str = "snip", loss_fn=None,
               generator: torch.Generator | None = None, params: ParamSelector = "all",
               fisher: str = "per_sample") -> dict[str, torch.Tensor]:
    """Per-entry importance scores, ``{param name: tensor of the param's shape}`` (higher = keep).

    - ``"snip"``: |∂L/∂θ ⊙ θ| on ``batch`` — LURE §3 eq. 2 (SNIP's connection sensitivity
      g_j = ∂L/∂M_j at M = 1 equals θ_j·∂L/∂θ_j). LURE normalises by Σ|g|, which does not change the
      ranking, so scores are returned unnormalised.
    - ``"fisher"``: diagonal empirical Fisher, mean over samples of (∂ℓ_n/∂θ)² with the observed
      labels (``fisher="per_sample"``, one backward pass per sample); ``fisher="batch"`` is the
      cheaper (∂L/∂θ)² of the batch-mean loss, a cruder proxy (LURE App. Table 8 "FIM").
    - ``"magnitude"``: |θ|; ``"random"``: U(0, 1) drawn with ``generator`` (App. Table 8).

    ``batch = (x, y)``; ``loss_fn(logits, y)`` defaults to cross-entropy. The model is scored in eval
    mode (as LURE's code does: BN uses running statistics, no dropout) and every module's mode is
    restored afterwards; ``.grad`` fields are not touched. ``params`` selects the tensors scored.
    """
    if criterion not in ("snip", "fisher", "magnitude", "random"):
        raise ValueError(f"unknown criterion {criterion!r}")
    if fisher not in ("per_sample", "batch"):
        raise ValueError(f"fisher must be 'per_sample' or 'batch', got {fisher!r}")
    selected = _select_params(model, params)
    if criterion == "magnitude":
        return {n: p.detach().abs().clone() for n, p in selected}
    if criterion == "random":
        return {n: _draw_uniform(p.shape, 0.0, 1.0, generator, p.device, p.dtype)
                for n, p in selected}
    x, y = batch
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    tensors = [p for _, p in selected]

    def grads_of(xs, ys):
        loss = loss_fn(model(xs), ys)
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g.detach() for g, p in zip(grads, tensors)]

    with _eval_mode(model), _requiring_grad(tensors), torch.enable_grad():
        if criterion == "snip":
            scores = [(g * p.detach()).abs() for g, p in zip(grads_of(x, y), tensors)]
        elif fisher == "batch":
            scores = [g.square() for g in grads_of(x, y)]
        else:
            scores = [torch.zeros_like(p, dtype=p.dtype) for p in tensors]
            for i in range(len(x)):
                for acc, g in zip(scores, grads_of(x[i:i + 1], y[i:i + 1])):
                    acc.add_(g.square())
            scores = [s / len(x) for s in scores]
    return {n: s for (n, _), s in zip(selected, scores)}


def reset_mask(scores: Mapping[str, torch.Tensor], fraction: float = 0.2,
               scope: str = "global") -> dict[str, torch.Tensor]:
    """Boolean masks, True = reset: the lowest-scoring ``fraction`` of ``scores``.

    LURE §3: M_j = 1[s_j ≥ s̃_k] keeps the entries whose saliency reaches the k-th largest one; the
    rest are reset, so this returns ¬M. ``scope="global"`` ranks all entries of all tensors together
    (one threshold, as LURE's code); ``"layer"`` resets the lowest fraction of each tensor
    separately. Exactly N − round((1 − fraction)·N) entries are reset (N = all entries, or per
    tensor; the kept count is rounded half up); ties at the threshold are broken deterministically —
    the earlier entry (in dict order, then flattened order) is kept.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    keep = 1.0 - fraction

    def lowest(flat: torch.Tensor) -> torch.Tensor:
        n = flat.numel()
        k = _n_keep(keep, n)
        if k in (0, n):
            return torch.full((n,), k == 0, dtype=torch.bool, device=flat.device)
        # a selection (kthvalue) instead of a full sort: ~30x faster on a ResNet-18's 11 M entries
        threshold = torch.kthvalue(flat, n - k + 1).values  # the k-th largest score
        kept = flat > threshold
        tied = (flat == threshold).nonzero().flatten()
        kept[tied[: k - int(kept.sum())]] = True
        return ~kept

    names = list(scores)
    if scope == "layer":
        return {n: lowest(scores[n].detach().reshape(-1)).reshape(scores[n].shape) for n in names}
    flat = torch.cat([scores[n].detach().reshape(-1) for n in names]) if names else torch.zeros(0)
    pieces = lowest(flat).split([scores[n].numel() for n in names])
    return {n: piece.reshape(scores[n].shape) for n, piece in zip(names, pieces)}


def _kaiming_uniform_lure(shape, generator, device, dtype) -> torch.Tensor:
    """LURE's re-draw rule, ``kaiming_uniform_(a=√5)`` on the full tensor shape: U(±1/√fan_in) with
    fan_in = shape[1]·∏shape[2:]. torch refuses 1-D tensors; the official code's BN scales come out
    U(−1, 1) (reference notes), i.e. fan_in = 1 — we implement that explicitly for 1-D tensors."""
    fan_in = shape[1] * math.prod(shape[2:]) if len(shape) >= 2 else 1
    gain = math.sqrt(2.0 / (1.0 + 5.0))  # leaky_relu gain with a = √5
    bound = gain * math.sqrt(3.0 / fan_in)
    return _draw_uniform(shape, -bound, bound, generator, device, dtype)


def masked_reinit(model: nn.Module, masks: Mapping[str, torch.Tensor], init: str = "kaiming_uniform",
                  generator: torch.Generator | None = None) -> int:
    """Re-draw the entries where ``masks[name]`` is True (True = reset, the one mask convention of
    this module), in place. LURE §3 eq. 3 (θ_new = θ where M = 1, θ_Reinit otherwise, i.e. the
    mask here is ¬M) / App. Alg. 1 line 11; the mutually frozen weights chapter (issue 7 §4) with
    ``init="model"``.

    ``init="kaiming_uniform"``: LURE's official rule, a full-shape ``kaiming_uniform_(a=√5)`` draw
    (U(±1/√fan_in); 1-D tensors such as BN scales get U(−1, 1)) — *not* the model's own init
    distribution (BN scales start at 1, ResNet convs may be Kaiming-normal). ``init="model"``: the
    model's own init for the owning module (a fresh copy of the module is initialised, seeded by
    ``generator``). Keys are parameter names; tensors without a key are untouched. Returns the
    number of entries re-drawn.
    """
    if init not in ("kaiming_uniform", "model"):
        raise ValueError(f"init must be 'kaiming_uniform' or 'model', got {init!r}")
    params = dict(model.named_parameters())
    count = 0
    with torch.no_grad():
        for name, mask in masks.items():
            if name not in params:
                raise KeyError(f"the model has no parameter named {name!r}")
            p = params[name]
            if tuple(mask.shape) != tuple(p.shape):
                raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, "
                                 f"parameter has {tuple(p.shape)}")
            reset = mask.to(device=p.device, dtype=torch.bool)
            n_reset = int(reset.sum())
            if n_reset == 0:
                continue
            if init == "kaiming_uniform":
                new = _kaiming_uniform_lure(tuple(p.shape), generator, p.device, p.dtype)
            else:
                owner, _, attr = name.rpartition(".")
                fresh = _fresh_copy(model, model.get_submodule(owner), generator)
                new = getattr(fresh, attr).to(p.device, p.dtype)
            p.copy_(torch.where(reset, new, p))
            count += n_reset
    return count


def snip_mask(model: nn.Module, batch, fraction: float = 0.2, scope: str = "global", loss_fn=None,
              params: ParamSelector = "all") -> dict[str, torch.Tensor]:
    """SNIP reset masks, True = reset (LURE §3 eq. 2 and the top-k rule): :func:`importance` with
    ``criterion="snip"`` followed by :func:`reset_mask` of the lowest ``fraction``."""
    scores = importance(model, batch, "snip", loss_fn=loss_fn, params=params)
    return reset_mask(scores, fraction, scope)


def lure_reset(model: nn.Module, batch, reset_fraction: float = 0.2, criterion: str = "snip",
               tensors: ParamSelector = "weight", init: str = "kaiming_uniform",
               scope: str = "global", score_params: ParamSelector = "all", loss_fn=None,
               fisher: str = "per_sample", generator: torch.Generator | None = None) -> int:
    """LURE's unlearning step (App. Alg. 1 lines 8–11): score, keep the top ``1 − reset_fraction``,
    re-draw the rest.

    Defaults follow LURE's code (reference notes): SNIP scores over *all* parameters
    (``score_params="all"``) with one global threshold (``scope="global"``), lowest 20 % reset;
    only tensors whose name contains "weight" are re-drawn (``tensors="weight"``: conv, linear, BN
    scales and shortcut convs), so biases and BN shifts below the threshold are kept; re-draw with
    ``kaiming_uniform_(a=√5)``. Options: ``score_params=tensors`` (the same selector) ranks only the
    reset tensors, ``init="model"`` re-draws from the model's own init, ``criterion`` in
    snip | fisher | magnitude | random (App. Table 8). ``batch`` is the scoring set π (the paper:
    20 % of the mega-batch; the code: one batch of 100 images). Returns the number re-drawn.
    """
    if not 0.0 <= reset_fraction <= 1.0:
        raise ValueError(f"reset_fraction must lie in [0, 1], got {reset_fraction}")
    scores = importance(model, batch, criterion, loss_fn=loss_fn, generator=generator,
                        params=score_params, fisher=fisher)
    masks = reset_mask(scores, reset_fraction, scope)
    reset_names = {n for n, _ in _select_params(model, tensors)}
    return masked_reinit(model, {n: m for n, m in masks.items() if n in reset_names}, init,
                         generator)


# ---------------------------------------------------------------------------------------------
# Bias reset (negative pre-training)
# ---------------------------------------------------------------------------------------------
def changed_entries(before: Mapping[str, torch.Tensor], model: nn.Module) -> list[dict]:
    """What a reset did, tensor by tensor: for every parameter of ``model``, the entries that differ
    from ``before`` (a ``{name: tensor}`` copy taken before the reset) — rows with ``tensor``,
    ``n_changed`` and ``n_total``. Measures any method alike (LURE's masks, LLF's layers, S&P's
    shrink), e.g. the per-layer share of weights LURE re-draws (LURE §3, Alg. 1 lines 8–11)."""
    rows = []
    for name, param in model.named_parameters():
        old = before[name]
        rows.append({"tensor": name, "n_changed": int((param.detach() != old.to(param.device)).sum()),
                     "n_total": param.numel()})
    return rows


def shift_biases(model: nn.Module, delta: float = 0.01) -> int:
    """Bias reset of the negative pre-training paper (§6): add ``delta`` (0.01) to every bias —
    every parameter whose name ends in "bias", norm-layer shifts included (a ResNet-18's convs have
    no bias, so its BN shifts and the head bias are its biases). Returns the entries changed."""
    count = 0
    with torch.no_grad():
        for _, p in _select_params(model, "bias"):
            p.add_(delta)
            count += p.numel()
    return count


# ---------------------------------------------------------------------------------------------
# Mutually frozen weights (issue 7 §1)
# ---------------------------------------------------------------------------------------------
def _weighted_layers(model: nn.Module, layers: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    if layers is None:
        return [(qn, m) for qn, m in model.named_modules() if isinstance(m, _WEIGHTED_LAYERS)]
    modules = dict(model.named_modules())
    return [(qn, modules[qn]) for qn in layers]


def frozen_mask(model: nn.Module, eps: float = 0.1,
                layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Frozen weights (issue 7 §1): |w| < eps·σ_init, per conv/linear layer.

    σ_init is the std of that layer's initial weight distribution under the model's init rule
    (``model.init_weight_std``; PyTorch default U(±1/√fan_in) → σ = 1/√(3·fan_in); Kaiming-normal →
    √(2/fan_in)), so "frozen" means small *relative to where the layer started*. Returns
    ``{"<layer>.weight": bool mask}`` for every conv/linear layer (or the named ``layers``).
    """
    out = {}
    for qn, module in _weighted_layers(model, layers):
        sigma = init_weight_std(model, module)
        out[f"{qn}.weight" if qn else "weight"] = module.weight.detach().abs() < eps * sigma
    return out


def _unit_grouping(prev: nn.Module, nxt: nn.Module, prev_name: str, next_name: str) -> int:
    """How many consecutive input columns of ``nxt`` belong to one output unit of ``prev``
    (1, or H·W when a conv's channels are flattened into a linear layer). Raises when the two
    layers do not chain as a plain feed-forward pair."""
    units = prev.weight.shape[0]
    if getattr(nxt, "groups", 1) != 1:
        raise ValueError(f"{next_name}: grouped convs are not supported")
    fan_units = nxt.weight.shape[1]
    if fan_units == units:
        return 1
    if isinstance(prev, nn.Conv2d) and isinstance(nxt, nn.Linear) and fan_units % units == 0:
        return fan_units // units
    raise ValueError(
        f"{prev_name} ({units} output units) does not feed {next_name} ({fan_units} inputs): "
        "mutually frozen detection needs a plain feed-forward chain of conv/linear layers "
        "(residual or branching nets are not supported; pass `layers=` to pick a chain)")


def mutually_frozen_mask(model: nn.Module, eps: float = 0.1, layers: Sequence[str] | None = None,
                         partners: str = "both", bias_rule: bool = True):
    """Mutually frozen weights (issue 7 §1), for a plain feed-forward ReLU net.

    Setting: layers l = 1..L in sequence (conv/linear, in registration order or ``layers``), units
    are output features (linear) or channels (conv). Pre-activation a^l_i = Σ_j W^l_ij h^{l−1}_j
    + b^l_i (a sum over positions/kernel taps for convs), h^l_i = ReLU(a^l_i) (max-pooling in
    between keeps channels as units). Backprop gives

        ∂L/∂W^l_ij = δ^l_i · h^{l−1}_j,      δ^l_i = ReLU'(a^l_i) · Σ_k W^{l+1}_ki δ^{l+1}_k.

    (1) *Outgoing partners.* If all of unit i's outgoing weights W^{l+1}_{·i} are ≈ 0, then δ^l_i ≈ 0,
        so every incoming weight W^l_{i·} gets ≈ 0 gradient and weight decay alone acts on it.
    (2) *Incoming partners.* If all of unit j's incoming weights W^{l−1}_{j·} are ≈ 0 and its bias
        is small (b_j < eps·σ, so h_j = ReLU(b_j) ≈ 0), then ∂L/∂W^l_{·j} = δ^l · h_j ≈ 0 for every
        outgoing weight of j. (``bias_rule=False`` ignores the bias.)

    Both partner groups being small is self-sustaining: each group's gradient is proportional to the
    other group, so weight decay holds both at zero. A weight W^l_ij is **mutually frozen** when it
    is frozen (|W| < eps·σ^l_init, :func:`frozen_mask`) and (1) unit i's outgoing weights in layer
    l+1 are all frozen, or (2) unit j's incoming weights in layer l−1 are all frozen (with the bias
    rule). ``partners="outgoing"`` / ``"incoming"`` uses only (1) / (2); the first layer has no (2)
    (its inputs are data), the last none of (1). A frozen weight that is not mutually frozen is
    *plain sparse*: its partners are not small, so it gets gradient and can regrow.

    Limitations: assumes nothing between layers rescales activations — a norm layer (BN/IN)
    re-amplifies a unit whose incoming weights are small, and residual connections give units extra
    paths; the chain check raises on shape mismatches, but a residual net whose widths happen to
    chain would not be caught — use :class:`~zaplib.models.SmallCNN` / :class:`~zaplib.models.MLP`
    (or nets like them).

    Returns:
        ``(masks, table)``: ``{"<layer>.weight": bool mask}`` (True = mutually frozen) and a pandas
        DataFrame with one row per layer: layer, n, frozen_frac, mutually_frozen_frac,
        plain_sparse_frac.
    """
    import pandas as pd  # lazy: only this function needs it

    if partners not in ("both", "outgoing", "incoming"):
        raise ValueError(f"partners must be 'both', 'outgoing' or 'incoming', got {partners!r}")
    chain = _weighted_layers(model, layers)
    if not chain:
        raise ValueError("the model has no conv/linear layers")
    frozen = frozen_mask(model, eps, [qn for qn, _ in chain])
    keys = list(frozen)
    groupings = [_unit_grouping(chain[l][1], chain[l + 1][1], chain[l][0], chain[l + 1][0])
                 for l in range(len(chain) - 1)]

    def incoming_all_frozen(l: int) -> torch.Tensor:
        """(units of layer l,) True where unit i's incoming weights (and bias) are all frozen."""
        module = chain[l][1]
        f = frozen[keys[l]]
        dead = f.reshape(f.shape[0], -1).all(dim=1)
        if bias_rule and module.bias is not None:
            dead = dead & (module.bias.detach() < eps * init_weight_std(model, module))
        return dead

    def outgoing_all_frozen(l: int) -> torch.Tensor:
        """(units of layer l,) True where unit i's outgoing weights in layer l+1 are all frozen."""
        f_next = frozen[keys[l + 1]]
        units = chain[l][1].weight.shape[0]
        per_input = f_next.reshape(f_next.shape[0], units, groupings[l], -1)
        return per_input.all(dim=3).all(dim=2).all(dim=0)

    def broadcast_rows(units: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return units.reshape(-1, *([1] * (like.dim() - 1))).expand_as(like)

    def broadcast_cols(units: torch.Tensor, like: torch.Tensor, group: int) -> torch.Tensor:
        cols = units.repeat_interleave(group)
        return cols.reshape(1, -1, *([1] * (like.dim() - 2))).expand_as(like)

    masks, rows = {}, []
    for l, (qn, _) in enumerate(chain):
        f = frozen[keys[l]]
        partner = torch.zeros_like(f)
        if partners in ("both", "outgoing") and l + 1 < len(chain):
            partner |= broadcast_rows(outgoing_all_frozen(l), f)
        if partners in ("both", "incoming") and l > 0:
            partner |= broadcast_cols(incoming_all_frozen(l - 1), f, groupings[l - 1])
        mutual = f & partner
        masks[keys[l]] = mutual
        n = f.numel()
        frozen_frac = float(f.sum()) / n
        mutual_frac = float(mutual.sum()) / n
        rows.append({"layer": qn, "n": n, "frozen_frac": frozen_frac,
                     "mutually_frozen_frac": mutual_frac,
                     "plain_sparse_frac": frozen_frac - mutual_frac})
    return masks, pd.DataFrame(rows)


def collapsed_units(model: nn.Module, eps: float = 0.1, layers: Sequence[str] | None = None,
                    bias_rule: bool = True):
    """Collapsed ("dead") hidden units of a plain feed-forward ReLU net: units whose incoming weights
    are all frozen (|w| < eps·σ_init, :func:`frozen_mask`) and, with ``bias_rule``, whose bias is
    below eps·σ_init too, so that the unit outputs ReLU(≈ 0) ≈ 0 on every input — the unit-level
    picture behind most mutually frozen weights (case (2) of :func:`mutually_frozen_mask`), and the
    same units the dead / dormant-neuron literature counts by their activations.

    Returns ``(masks, table)``. ``masks`` covers everything that belongs to a collapsed unit of layer
    l: its incoming weight rows and bias (``"<layer l>.weight"``, ``"<layer l>.bias"``) and its
    outgoing columns in layer l + 1 (``"<layer l+1>.weight"``); True = reset (the unit-level control
    of the chapter: re-initialise whole dead units rather than single weights). ``table`` has one row
    per hidden layer: layer, units, collapsed_units, collapsed_frac, weights (entries the masks
    cover for that layer's units). The last layer's units are the outputs and never counted."""
    import pandas as pd  # lazy: only this function needs it

    chain = _weighted_layers(model, layers)
    frozen = frozen_mask(model, eps, [qn for qn, _ in chain])
    keys = list(frozen)
    masks: dict[str, torch.Tensor] = {k: torch.zeros_like(v) for k, v in frozen.items()}
    rows = []
    for l in range(len(chain) - 1):
        (qn, module), (next_qn, nxt) = chain[l], chain[l + 1]
        group = _unit_grouping(module, nxt, qn, next_qn)
        f = frozen[keys[l]]
        dead = f.reshape(f.shape[0], -1).all(dim=1)
        sigma = init_weight_std(model, module)
        if bias_rule and module.bias is not None:
            dead = dead & (module.bias.detach() < eps * sigma)
        masks[keys[l]] |= dead.reshape(-1, *([1] * (f.dim() - 1))).expand_as(f)
        if module.bias is not None:
            masks[f"{qn}.bias" if qn else "bias"] = dead.clone()
        nxt_mask = masks[keys[l + 1]]
        cols = dead.repeat_interleave(group).reshape(1, -1, *([1] * (nxt_mask.dim() - 2)))
        masks[keys[l + 1]] = nxt_mask | cols.expand_as(nxt_mask)
        n_dead = int(dead.sum())
        per_unit_in = f[0].numel() + (1 if module.bias is not None else 0)
        per_unit_out = nxt.weight[:, :group].numel()  # the unit's outgoing column(s) in layer l + 1
        rows.append({"layer": qn, "units": int(dead.numel()), "collapsed_units": n_dead,
                     "collapsed_frac": n_dead / max(int(dead.numel()), 1),
                     "weights": n_dead * (per_unit_in + per_unit_out)})
    return masks, pd.DataFrame(rows, columns=["layer", "units", "collapsed_units", "collapsed_frac", "weights"])


def eps_sensitivity(model: nn.Module, eps_values: Sequence[float], layers: Sequence[str] | None = None):
    """How the frozen / mutually frozen / plain sparse fractions and the collapsed-unit counts move
    with the threshold ε (|w| < ε·σ_init): one row per ε × layer (:func:`mutually_frozen_mask` and
    :func:`collapsed_units` at each ε). A definition whose counts swing with ε picks out a range of
    small weights, not a separate population."""
    import pandas as pd  # lazy: only this function needs it

    frames = []
    for eps in eps_values:
        _, weights = mutually_frozen_mask(model, eps, layers)
        _, units = collapsed_units(model, eps, layers)
        frames.append(weights.merge(units[["layer", "units", "collapsed_units", "collapsed_frac"]],
                                    on="layer", how="left").assign(eps=float(eps)))
    return pd.concat(frames, ignore_index=True)


def random_masks_like(masks: Mapping[str, torch.Tensor],
                      generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Masks with the same number of True entries per tensor as ``masks``, at uniformly random
    positions — the "reset as many random weights" control of issue 7 §4."""
    out = {}
    for name, mask in masks.items():
        n, k = mask.numel(), int(mask.sum())
        source = generator.device if generator is not None else mask.device
        chosen = torch.randperm(n, generator=generator, device=source)[:k].to(mask.device)
        flat = torch.zeros(n, dtype=torch.bool, device=mask.device)
        flat[chosen] = True
        out[name] = flat.reshape(mask.shape)
    return out


# ---------------------------------------------------------------------------------------------
# One dispatcher: a reset op by name
# ---------------------------------------------------------------------------------------------
def _none(model: nn.Module, generator=None) -> int:
    return 0


def _zap_head(model: nn.Module, classes=None, bias: str = "keep", fan_in: str = "row",
              generator=None) -> int:
    return zap(model.head, classes, bias=bias, fan_in=fan_in, generator=generator)


def _reinit_all(model: nn.Module, generator=None) -> int:
    """Every module re-initialised in place by the model's own init (training from scratch)."""
    model.load_state_dict(fresh_init(model, generator).state_dict())
    return sum(p.numel() for p in model.parameters())


def _shift_biases(model: nn.Module, delta: float = 0.01, generator=None) -> int:
    return shift_biases(model, delta)  # deterministic: the generator is not needed


def _masked(model: nn.Module, masks: Mapping[str, torch.Tensor], init: str = "kaiming_uniform",
            generator=None) -> int:
    return masked_reinit(model, masks, init, generator)


def _frozen(model: nn.Module, eps: float = 0.1, init: str = "model", generator=None) -> int:
    return masked_reinit(model, frozen_mask(model, eps), init, generator)


def _mutually_frozen(model: nn.Module, eps: float = 0.1, init: str = "model", generator=None) -> int:
    masks, _ = mutually_frozen_mask(model, eps)
    return masked_reinit(model, masks, init, generator)


def _random_like_mutually_frozen(model: nn.Module, eps: float = 0.1, init: str = "model",
                                 generator=None) -> int:
    masks, _ = mutually_frozen_mask(model, eps)
    return masked_reinit(model, random_masks_like(masks, generator), init, generator)


def _collapsed_units(model: nn.Module, eps: float = 0.1, init: str = "model", generator=None) -> int:
    masks, _ = collapsed_units(model, eps)
    return masked_reinit(model, masks, init, generator)


def _lure(model: nn.Module, batch=None, generator=None, **settings) -> int:
    return lure_reset(model, batch, generator=generator, **settings)


RESETS: dict[str, Callable[..., int]] = {
    "none": _none,                                  # control: nothing changes
    "zap": _zap_head,                               # head rows (Frati et al. 2023, Alg. 1 line 7)
    "shrink_perturb": shrink_perturb,               # Ash & Adams 2020; LURE's S&P
    "reinit_layers": reinit_layers,                 # later-layer forgetting (LURE's LLF)
    "reinit_all": _reinit_all,                      # a fresh network (scratch / reinit baselines)
    "lure": _lure,                                  # LURE App. Alg. 1 lines 8–11
    "masked": _masked,                              # any reset masks (True = reset)
    "shift_biases": _shift_biases,                  # negative pre-training §6
    "frozen": _frozen,                              # every frozen weight (issue 7 §4)
    "mutually_frozen": _mutually_frozen,            # the mutually frozen weights (issue 7 §4)
    "random_like_mutually_frozen": _random_like_mutually_frozen,  # as many, at random positions
    "collapsed_units": _collapsed_units,            # whole dead units: rows, biases, outgoing columns
}
"""Every reset op by name: ``fn(model, **settings, generator=None) -> entries changed``."""


def apply(name: str, model: nn.Module, generator: torch.Generator | None = None, **settings) -> int:
    """Apply the reset op ``name`` of :data:`RESETS` to ``model`` in place with ``settings`` (the
    op's keyword arguments, e.g. ``apply("zap", model, classes=[3])``,
    ``apply("lure", model, batch=(x, y), reset_fraction=0.2)``,
    ``apply("mutually_frozen", model, eps=0.1)``); returns the number of entries changed."""
    if name not in RESETS:
        raise ValueError(f"unknown reset {name!r}; choose from {sorted(RESETS)}")
    return RESETS[name](model, generator=generator, **settings)
