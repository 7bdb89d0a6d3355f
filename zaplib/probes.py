"""Probes: measurements that run a model (LURE, Ramkumar et al. 2023, §6–§7; negative
pre-training paper, appendix 8.3 and §7; mutually frozen weights chapter).

* robustness: accuracy under the procedural corruptions of :mod:`zaplib.corruptions`
  (:func:`corruption_table`, §6.1), under L∞ PGD (:func:`pgd_attack`, Madry et al. 2018;
  :func:`pgd_table`, §6.2 "PGD-10") and under Gaussian weight noise (:func:`perturb_weights`,
  :func:`weight_noise_table`, §7.2 after Alabdulmohsin et al. 2021);
* statistics of a network: per-tensor weight and bias norms (:func:`layer_norms`), ReLU activity
  and dead units (:func:`relu_activity`), sharpness (:func:`perturbed_loss_sharpness`,
  :func:`hessian_top_eigenvalue`) and local input sensitivity E_x ‖∂f/∂x‖_F
  (:func:`input_sensitivity`).

:mod:`zaplib.metrics` computes numbers from predictions; this module produces them from a model.
Every random draw takes ``generator`` (or a ``seed`` turned into streams by
:func:`zaplib.samplers.generator`), so every model of a comparison sees the same perturbations.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import metrics, samplers
from .corruptions import corrupt
from .models import BasicBlock, ResNet
from .train import as_float, predict_logits


def _draw(shape, generator, device, uniform: bool = False) -> torch.Tensor:
    """Standard normal (or U[0, 1)) noise of ``shape`` drawn on the generator's device, then
    moved to ``device`` (so a CPU generator can serve CUDA tensors)."""
    draw_device = generator.device if generator is not None else device
    sample = torch.rand if uniform else torch.randn
    return sample(shape, generator=generator, device=draw_device).to(device)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------- robustness
def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
               step_size: float | None = None, random_start: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """L∞ projected gradient ascent on the cross-entropy (Madry et al. 2018), ``steps`` steps of
    size ``step_size`` (default 2.5·eps/steps, Madry's choice) from a uniform random start in the
    eps-ball; the model is put in eval mode (BN running statistics) and restored after.
    ``x`` are float images in [0, 1]; returns the adversarial images (detached)."""
    if eps <= 0:
        return x.detach().clone()
    step_size = 2.5 * eps / steps if step_size is None else step_size
    with _eval_mode(model):
        delta = torch.zeros_like(x)
        if random_start:
            delta = (_draw(x.shape, generator, x.device, uniform=True) * 2 - 1) * eps
        delta = ((x + delta).clamp(0, 1) - x).detach()
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model(x + delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + step_size * grad.sign()).clamp(-eps, eps)
            delta = ((x + delta).clamp(0, 1) - x).detach()
        return (x + delta).detach()


@contextlib.contextmanager
def perturb_weights(model: nn.Module, sigma: float, generator: torch.Generator | None = None,
                    relative: bool = False) -> Iterator[nn.Module]:
    """Inside the ``with`` block every parameter holds θ + σ·ε, ε ~ N(0, 1) i.i.d. (LURE §7.2,
    after Alabdulmohsin et al. 2021); ``relative`` scales σ by each tensor's RMS. The original
    parameters (and buffers, untouched) are restored on exit."""
    saved = [p.detach().clone() for p in model.parameters()]
    try:
        with torch.no_grad():
            for p in model.parameters():
                scale = sigma * (p.pow(2).mean().sqrt() if relative else 1.0)
                p.add_(_draw(p.shape, generator, p.device) * scale)
        yield model
    finally:
        with torch.no_grad():
            for p, old in zip(model.parameters(), saved):
                p.copy_(old)


def corruption_table(model, x, y, names, severities, batch_size=1000, seed=0) -> pd.DataFrame:
    """Accuracy of ``model`` on ``x`` (uint8) under each corruption and severity (plus
    ``corruption="clean"``). The corrupted images depend only on ``seed`` (one stream per
    corruption and severity), so every model of a comparison sees the same ones."""
    xf = as_float(x)
    rows = [{"corruption": "clean", "severity": 0, "acc": metrics.accuracy(predict_logits(model, xf, batch_size), y)}]
    for name in names:
        for s in severities:
            g = samplers.generator(seed, "corruption", name, s)
            xc = torch.cat([corrupt(xf[i:i + batch_size], name, s, g)
                            for i in range(0, len(xf), batch_size)])
            rows.append({"corruption": name, "severity": s, "acc": metrics.accuracy(predict_logits(model, xc, batch_size), y)})
    return pd.DataFrame(rows)


def pgd_table(model, x, y, eps_list, steps=10, batch_size=250, seed=0) -> pd.DataFrame:
    """Accuracy under L∞ PGD-``steps`` (:func:`pgd_attack`) for each radius."""
    xf = as_float(x)
    rows = []
    for eps in [0.0, *eps_list]:
        g = samplers.generator(seed, "pgd")
        adversarial = []
        for i in range(0, len(xf), batch_size):
            xb, yb = xf[i:i + batch_size], y[i:i + batch_size]
            adv = pgd_attack(model, xb, yb, eps, steps=steps, generator=g)
            adversarial.append(adv)
        acc = metrics.accuracy(predict_logits(model, torch.cat(adversarial), batch_size), y)
        rows.append({"eps": eps, "eps_255": eps * 255, "acc": acc})
    return pd.DataFrame(rows)


def weight_noise_table(model, sets: dict, sigmas, repeats=3, batch_size=1000, seed=0) -> pd.DataFrame:
    """Accuracy on each named ``(x, y)`` set with N(0, σ²) added to every parameter (LURE §7.2),
    ``repeats`` independent draws per σ (σ = 0 is the unperturbed model)."""
    rows = []
    for sigma in [0.0, *sigmas]:
        for r in range(repeats if sigma > 0 else 1):
            g = samplers.generator(seed, "weight_noise", r)
            with perturb_weights(model, sigma, generator=g):
                for name, (x, y) in sets.items():
                    acc = metrics.accuracy(predict_logits(model, x, batch_size), y)
                    rows.append({"sigma": sigma, "repeat": r, "split": name, "acc": acc})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- network statistics
def layer_norms(model: nn.Module) -> pd.DataFrame:
    """One row per parameter tensor: ``param, layer, kind`` (weight / bias), ``order`` (depth
    index), ``numel``, L2 ``norm`` and ``rms`` = norm/√numel (appendix 8.3: bias and weight norms)."""
    rows = []
    for order, (name, p) in enumerate(model.named_parameters()):
        layer, _, leaf = name.rpartition(".")
        rows.append({"param": name, "layer": layer or name, "kind": "bias" if leaf == "bias" else "weight",
                     "order": order, "numel": p.numel(), "norm": float(p.detach().norm()),
                     "rms": float(p.detach().norm() / math.sqrt(p.numel()))})
    return pd.DataFrame(rows)


def relu_sites(model: nn.Module) -> dict[str, nn.Module]:
    """Modules whose outputs are ReLU outputs or ReLU inputs, by name: every ``nn.ReLU``; for the
    CIFAR ResNet (functional ReLUs), the stem BN and each block's ``bn1`` (ReLU inputs) and each
    block's output (a ReLU output). A unit is active where this output is > 0."""
    sites = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.ReLU):
            sites[name] = module
        elif isinstance(module, BasicBlock):
            sites[f"{name}.bn1"] = module.bn1
            sites[name] = module
    if isinstance(model, ResNet):
        sites = {"bn1": model.bn1, **sites}
    return sites


def _record_relu_sites(model: nn.Module, batches, record) -> None:
    """Run ``batches`` through ``model`` in eval mode with ``record(site, output)`` hooked on every
    site of :func:`relu_sites` (the hooks are removed afterwards, even on error)."""
    handles = [module.register_forward_hook(lambda _m, _i, output, name=name: record(name, output))
               for name, module in relu_sites(model).items()]
    try:
        with _eval_mode(model):
            for xb in batches:
                model(xb)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def relu_activity(model: nn.Module, x: torch.Tensor) -> pd.DataFrame:
    """Fraction of active ReLUs on the float batch ``x`` (eval mode), via forward hooks on
    :func:`relu_sites`: ``frac_active`` = share of (image, unit) entries > 0; ``frac_dead`` = share
    of channels (features, for flat layers) that are > 0 for no image and no position."""
    stats = {}

    def record(name, output):
        active = output > 0
        per_channel = active.transpose(0, 1).flatten(1).any(1) if active.dim() > 1 else active
        stats[name] = (float(active.float().mean()), float(1 - per_channel.float().mean()))

    _record_relu_sites(model, [x], record)
    return pd.DataFrame([{"site": k, "order": i, "frac_active": v[0], "frac_dead": v[1]}
                         for i, (k, v) in enumerate(stats.items())])


@torch.no_grad()
def dormant_scores(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Per ReLU site of :func:`relu_sites` (forward order), every unit's dormancy score of Sokar,
    Agarwal, Castro & Evci 2023 (*The Dormant Neuron Phenomenon in Deep RL*, Def. 3.1): its mean
    absolute activation over ``x`` divided by the mean of that over the units of its layer,
    s_i = E|h_i| / ((1/H)·Σ_k E|h_k|) (0 for every unit of a layer that is silent throughout).
    Channels are the units of a conv layer (their mean runs over positions too). Float images in
    [0, 1] or uint8 (scaled first); eval mode; one pass in batches of ``batch_size``."""
    sums, counts = {}, {}

    def record(name, output):
        per_unit = output.abs().transpose(0, 1).flatten(1) if output.dim() > 1 else output.abs()[None]
        sums[name] = sums.get(name, 0) + per_unit.sum(1).double()
        counts[name] = counts.get(name, 0) + per_unit.shape[1]

    _record_relu_sites(model, (as_float(x[start : start + batch_size]) for start in range(0, len(x), batch_size)),
                       record)
    scores = {}
    for name in sums:
        mean = sums[name] / counts[name]
        layer_mean = float(mean.mean())
        scores[name] = mean / layer_mean if layer_mean > 0 else torch.zeros_like(mean)
    return scores


def dormant_table(scores: dict[str, torch.Tensor], tau: float = 0.0) -> pd.DataFrame:
    """τ-dormant units from :func:`dormant_scores`: a unit is dormant when its score is ≤ τ (τ = 0:
    never active on the images). One row per site: site, units, dormant, dormant_frac; a layer
    whose units are all silent counts every unit as dormant."""
    rows = []
    for name, score in scores.items():
        dormant = int((score <= tau).sum())
        rows.append({"site": name, "units": int(score.numel()), "dormant": dormant,
                     "dormant_frac": dormant / max(int(score.numel()), 1)})
    return pd.DataFrame(rows, columns=["site", "units", "dormant", "dormant_frac"])


def dormant_units(model: nn.Module, x: torch.Tensor, tau: float = 0.0, batch_size: int = 500) -> pd.DataFrame:
    """τ-dormant units of ``model`` on ``x`` (Sokar et al. 2023, Def. 3.1): :func:`dormant_table`
    of :func:`dormant_scores`. For several τ, compute the scores once and threshold each."""
    return dormant_table(dormant_scores(model, x, batch_size), tau)


@torch.no_grad()
def perturbed_loss_sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float = 0.1,
                             draws: int = 3, generator: torch.Generator | None = None) -> tuple[float, float]:
    """A sharpness proxy: the mean curvature-driven loss increase on ``(x, y)`` under random
    weight perturbations ε whose entries have standard deviation ``sigma``·rms(θ_l) for each
    parameter tensor θ_l (layer-relative, in the spirit of the perturbation sharpness measures of
    Jiang et al. 2019, cited in the paper's §7). Antithetic pairs, [L(θ+ε) + L(θ−ε)]/2 − L(θ), cancel
    the first-order (gradient) term, so the proxy ≈ ½ εᵀHε stays meaningful away from a minimum.
    Returns ``(loss, mean increase)``; eval mode, weights restored exactly."""
    with _eval_mode(model):
        base = float(F.cross_entropy(model(x), y))
        params = list(model.parameters())
        saved = [p.detach().clone() for p in params]
        increases = []
        try:
            for _ in range(draws):
                noise = [sigma * float(s.norm()) / math.sqrt(s.numel())
                         * torch.randn(s.shape, generator=generator, dtype=s.dtype).to(s.device) for s in saved]
                pair = []
                for sign in (1.0, -1.0):
                    for p, s, e in zip(params, saved, noise):
                        p.copy_(s + sign * e)
                    pair.append(float(F.cross_entropy(model(x), y)))
                increases.append(0.5 * (pair[0] + pair[1]) - base)
        finally:
            for p, s in zip(params, saved):
                p.copy_(s)
    return base, float(np.mean(increases))


def hessian_top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, iters: int = 10,
                           generator: torch.Generator | None = None) -> float:
    """Largest-magnitude eigenvalue of the Hessian of the loss on ``(x, y)`` w.r.t. all parameters,
    by power iteration on Hessian-vector products (``torch.func``: forward-over-reverse ``jvp`` of
    ``grad``); eval mode, so BN uses its running statistics and nothing is updated. Returns the
    Rayleigh quotient after ``iters`` products (the paper's §4/§7 link to "a Hessian with lower
    maximal eigenvalue")."""
    with _eval_mode(model):
        params = {k: v.detach() for k, v in model.named_parameters()}
        buffers = {k: v.detach() for k, v in model.named_buffers()}

        def loss(p):
            return F.cross_entropy(torch.func.functional_call(model, (p, buffers), (x,)), y)

        def normalised(v):
            norm = torch.sqrt(sum((t * t).sum() for t in v.values()))
            return {k: t / norm for k, t in v.items()}

        v = normalised({k: torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device)
                        for k, t in params.items()})
        eig = float("nan")
        for _ in range(max(1, iters)):
            hv = torch.func.jvp(torch.func.grad(loss), (params,), (v,))[1]
            eig = float(sum((hv[k] * v[k]).sum() for k in v))
            v = normalised(hv)
    return eig


def _reduced(per_example, reduction: str):
    """Per-example values as they are (``"none"``) or their mean (``"mean"``)."""
    if reduction == "none":
        return per_example
    if reduction == "mean":
        return float(per_example.mean())
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def input_sensitivity(model, x, batch_size: int = 100, reduction: str = "mean", chunk_size: int | None = None):
    """Local input sensitivity E_x ‖∂f/∂x‖_F: the Frobenius norm of the Jacobian of the logits
    w.r.t. the input image, averaged over the examples of ``x``.

    The Jacobian of each example is computed exactly (``torch.func.jacrev`` under ``vmap``, i.e.
    one batched vector–Jacobian product per output class; ``chunk_size`` bounds the number of
    classes handled at once) with the model in eval mode, so each example's Jacobian is that of
    the function the model computes on it alone (BatchNorm uses running statistics). uint8
    images are scaled to [0, 1] first, so the derivative is per unit of [0, 1] intensity. For a
    linear model f(x) = Wx + b the value is ‖W‖_F for every x.

    ``reduction="none"`` returns the per-example norms as a numpy array.
    """
    def single(image):
        return model(image.unsqueeze(0)).squeeze(0)

    jacobian = torch.func.vmap(torch.func.jacrev(single, chunk_size=chunk_size))
    norms = []
    with _eval_mode(model):
        for start in range(0, len(x), batch_size):
            xb = as_float(x[start : start + batch_size]).detach()
            jac = jacobian(xb)  # (B, C, *input_shape)
            norms.append(jac.flatten(1).norm(dim=1).detach())
    return _reduced(torch.cat(norms).cpu().numpy(), reduction)


def nuisance_sensitivity(model, x, transform, batch_size: int = 200, reduction: str = "mean"):
    """Sensitivity of the logits along a nuisance direction: ‖J_f(x) d‖ / ‖d‖ with d = T(x) − x, the
    directional derivative of f at x towards the transformed image T(x) (e.g. a blur or a one-pixel
    shift), per unit of input change. Zilly et al.'s invariance half asks for this rather than the
    generic ‖∂f/∂x‖ of :func:`input_sensitivity`: a network can be insensitive along blur and shift
    yet sensitive elsewhere.

    Exact, one forward-mode product per batch (``torch.func.jvp``), model in eval mode; uint8 images
    are scaled to [0, 1] first and ``transform`` gets the float batch. Examples with d = 0 (the
    transform leaves them unchanged) count as 0. ``reduction="none"`` returns per-example values."""
    values = []
    with _eval_mode(model):
        for start in range(0, len(x), batch_size):
            xb = as_float(x[start : start + batch_size]).detach()
            d = (transform(xb) - xb).detach()
            norm = d.flatten(1).norm(dim=1)
            _, jd = torch.func.jvp(model, (xb,), (d,))
            values.append((jd.flatten(1).norm(dim=1) / norm.clamp_min(1e-12) * (norm > 0)).detach())
    return _reduced(torch.cat(values).cpu().numpy(), reduction)


__all__ = [
    "dormant_scores",
    "dormant_table",
    "dormant_units",
    "nuisance_sensitivity",
    "pgd_attack",
    "perturb_weights",
    "corruption_table",
    "pgd_table",
    "weight_noise_table",
    "layer_norms",
    "relu_sites",
    "relu_activity",
    "perturbed_loss_sharpness",
    "hessian_top_eigenvalue",
    "input_sensitivity",
]
