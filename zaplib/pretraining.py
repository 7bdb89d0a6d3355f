"""Pre-training of *Reset It and Forget It* (Frati et al. 2023): ASB, meta-ASB, ANML and i.i.d.,
each with zapping on or off.

* :class:`ASBSampler` draws the episodes of Alg. 1 (lines 2–5): one class, ``K`` = 20 single-image
  inner steps drawn *with replacement* from that class's 15 training images, and ``R`` = 64
  "remember" images drawn uniformly from the whole pre-training set (reference notes).
* :func:`pretrain_asb` is Alg. 1: zap the row of the class about to be trained (line 7), ``K``
  single-image SGD steps (lines 10–13), then either

  - ASB (line 17): one ordinary Adam step on the ``K + R`` outer images *at the end weights*
    θ_K, kept for the next episode (no rewind, no meta-gradient), or
  - meta-ASB (line 15): the gradient of the outer loss at θ_K taken *with respect to the weights
    at the start of the inner loop*, θ_0, through all ``K`` inner updates (true second order,
    ``torch.autograd.grad(create_graph=True)`` on ``torch.func.functional_call``), applied to θ_0 by
    Adam; the inner-loop weights are thrown away.

  ``inner_params`` restricts which parameters adapt in the inner loop: ANML (Beaulieu et al.
  2020) adapts the representation net and the head but not the neuromodulatory net
  (:func:`anml_inner_params`); the outer step always updates everything.
* :func:`pretrain_iid` is standard mini-batch pre-training with zapping every ``zap_every`` epochs
  (§2.1.1; official code: at the start of an epoch, never before the first), through
  :func:`zaplib.train.train_iid`'s ``epoch_callback``.
* :func:`meta_gradient` is the one meta-gradient used by meta-ASB and ANML; it is public so the
  tests can check it against finite differences (a first-order bug cannot pass).
* :func:`pretrain` is the pure function of one config: config in, trained weights plus records
  out. The chapter stores it as ``zapping-pretrain`` (:func:`zaplib.experiments.zapping.pretrain_run`).

Why several seeds are *not* vmapped here: on the CPU, ``vmap`` over convolutions with per-model
weights ran ~10× slower per model than one model at a time (8 stacked 16-channel convnets, one
image each: 142 ms per step vs 1.7 ms for one model), so the chapter parallelises over processes
(:func:`zaplib.store.sweep`) instead.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import get_device, models, resets, samplers
from .train import as_float, evaluate, train_iid

__all__ = [
    "Episode",
    "ASBSampler",
    "zap_class",
    "meta_gradient",
    "anml_inner_params",
    "pretrain_asb",
    "pretrain_iid",
    "model_config",
    "omniglot_data",
    "pretrain",
    "build_pretrained",
]


# ---------------------------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Episode:
    """One ASB / meta-ASB episode (Alg. 1 lines 2–5), as indices into the training tensors.

    ``cls``: the class of the inner loop; ``inner``: ``K`` image indices of that class, in the
    order of the inner steps (with replacement); ``remember``: ``R`` indices drawn uniformly from
    all training images. The outer batch is ``inner ∪ remember`` (:attr:`outer`)."""

    cls: int
    inner: torch.Tensor
    remember: torch.Tensor

    @property
    def outer(self) -> torch.Tensor:
        return torch.cat([self.inner, self.remember])


class ASBSampler:
    """Episode sampler of Alg. 1 with the official settings (reference notes): one class drawn
    uniformly, ``K`` inner images drawn with replacement from its training images, ``R`` remember
    images drawn uniformly (with replacement) from the whole training set — every class has the
    same number of training images (15), so this is uniform over classes too."""

    def __init__(self, y_train: torch.Tensor, K: int = 20, R: int = 64,
                 generator: torch.Generator | None = None):
        if K < 1 or R < 0:
            raise ValueError(f"need K >= 1 and R >= 0, got K={K}, R={R}")
        self.K, self.R, self.generator = K, R, generator
        self.n = len(y_train)
        by_class = samplers.class_indices(y_train.cpu())
        self.classes = torch.tensor(sorted(by_class))
        self.by_class = [by_class[int(c)] for c in self.classes]
        self.device = y_train.device

    def sample(self) -> Episode:
        g = self.generator
        pick = int(torch.randint(len(self.classes), (1,), generator=g))
        members = self.by_class[pick]
        inner = members[torch.randint(len(members), (self.K,), generator=g)]
        remember = torch.randint(self.n, (self.R,), generator=g)
        return Episode(int(self.classes[pick]), inner.to(self.device), remember.to(self.device))

    def __iter__(self):
        while True:
            yield self.sample()


def zap_class(model: nn.Module, cls: int | Iterable[int] | None, bias: str = "zero",
              fan_in: str = "row", generator: torch.Generator | None = None) -> int:
    """Zap the head rows of ``cls`` (Alg. 1 line 7; ``None`` = every row) with
    :func:`zaplib.resets.zap`: Kaiming-normal with the row's own fan-in. ``bias="zero"`` follows
    the paper's footnote 4 ("biases are set to zero"), ``"keep"`` the official code."""
    return resets.zap(model.head, cls, bias=bias, fan_in=fan_in, generator=generator)


# ---------------------------------------------------------------------------------------------
# Meta-gradient
# ---------------------------------------------------------------------------------------------
def anml_inner_params(name: str) -> bool:
    """ANML's inner loop adapts the representation net and the head, not the neuromodulatory net
    (Beaulieu et al. 2020, §2); the outer (meta) step updates all parameters."""
    return not name.startswith("nm.")


def _inner_loop(model, params, inner_x, inner_y, inner_lr, inner_names, create_graph):
    """K single-image SGD steps (Alg. 1 lines 10–13) on a dict of tensors, differentiably when
    ``create_graph``; returns the final weights and the per-step losses."""
    from torch.func import functional_call

    losses = []
    for i in range(len(inner_x)):
        logits = functional_call(model, params, (inner_x[i : i + 1],))
        loss = F.cross_entropy(logits, inner_y[i : i + 1])
        grads = torch.autograd.grad(loss, [params[n] for n in inner_names],
                                    create_graph=create_graph)
        params = dict(params)
        for n, g in zip(inner_names, grads):
            params[n] = params[n] - inner_lr * g
        losses.append(loss.detach())
    return params, losses


def meta_gradient(model: nn.Module, inner_x: torch.Tensor, inner_y: torch.Tensor,
                  outer_x: torch.Tensor, outer_y: torch.Tensor, inner_lr: float, *,
                  first_order: bool = False,
                  inner_params: Callable[[str], bool] | None = None) -> tuple[dict, dict]:
    """∇_{θ_0} L(f(X_outer; θ_K), Y) of Alg. 1 line 15, with θ_K the result of ``len(inner_x)``
    single-image SGD steps of size ``inner_lr`` from θ_0 = the model's current parameters.

    True second order by default: the inner gradients are built with ``create_graph=True``, so
    the outer gradient flows back through every inner update (MAML, Finn et al. 2017).
    ``first_order=True`` detaches the inner gradients (FOMAML): the result is then the outer
    gradient at θ_K, which the tests use as the wrong answer a silent first-order bug would give.
    ``inner_params(name)`` selects the parameters adapted in the inner loop (default: all).

    Returns ``(grads, info)``: ``grads`` maps every parameter name to its meta-gradient (zeros for
    parameters the loss does not reach); ``info`` holds the inner losses, the outer loss and the
    number of outer images classified correctly at θ_K.
    """
    from torch.func import functional_call

    params0 = {n: p for n, p in model.named_parameters() if p.requires_grad}
    inner_names = [n for n in params0 if inner_params is None or inner_params(n)]
    params_k, inner_losses = _inner_loop(model, params0, inner_x, inner_y, inner_lr, inner_names,
                                         create_graph=not first_order)
    logits = functional_call(model, params_k, (outer_x,))
    outer_loss = F.cross_entropy(logits, outer_y)
    names = list(params0)
    grads = torch.autograd.grad(outer_loss, [params0[n] for n in names], allow_unused=True)
    grads = {n: (g if g is not None else torch.zeros_like(params0[n])) for n, g in zip(names, grads)}
    info = {
        "inner_losses": torch.stack(inner_losses),
        "outer_loss": outer_loss.detach(),
        "outer_correct": (logits.detach().argmax(-1) == outer_y).sum(),
    }
    return grads, info


# ---------------------------------------------------------------------------------------------
# Pre-training loops
# ---------------------------------------------------------------------------------------------
def pretrain_asb(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    episodes: int,
    inner_lr: float = 0.1,
    outer_lr: float = 1e-3,
    K: int = 20,
    R: int = 64,
    zap: bool = True,
    meta: bool = False,
    first_order: bool = False,
    inner_params: Callable[[str], bool] | None = None,
    zap_bias: str = "zero",
    generator: torch.Generator | None = None,
    record_every: int = 50,
    progress: bool = False,
    episode_callback: Callable[[int, nn.Module], object] | None = None,
) -> tuple[nn.Module, pd.DataFrame]:
    """Alg. 1 of Frati et al. 2023: ASB (``meta=False``) or meta-ASB (``meta=True``), zapping the
    class about to be trained before each inner loop when ``zap``.

    ``x_train`` uint8 (or float) images and ``y_train`` labels on the model's device. The inner
    loop is ``K`` single-image SGD steps of size ``inner_lr`` on all parameters (or those selected
    by ``inner_params``, meta only); the outer step is Adam (``outer_lr``; the optimiser state
    persists across episodes) on the ``K + R`` outer images. Official values at 256 channels:
    inner lr 0.1, outer Adam 1e-3, K 20, R 64; 9,000 (ASB) and 25,000 (meta-ASB) episodes; the
    pilot in the reference notes needed inner lr 0.03 at 64 channels.

    Returns ``(model, records)`` with one row per ``record_every`` episodes: running means of the
    outer loss and outer-batch accuracy at θ_K and of the first / last inner-step losses since
    the previous row (``seconds`` is wall time since the start). ``episode_callback(episode,
    model)`` runs after every episode (checkpoints of one long run: the chapter's dose–response).
    """
    if meta is False and (first_order or inner_params is not None):
        raise ValueError("first_order / inner_params only apply to meta-ASB (meta=True)")
    sampler = ASBSampler(y_train, K=K, R=R, generator=generator)
    outer_opt = torch.optim.Adam(model.parameters(), lr=outer_lr)
    inner_opt = None if meta else torch.optim.SGD(model.parameters(), lr=inner_lr)
    from .train import _progress

    model.train()
    rows, count, tic = [], 0, time.perf_counter()
    sums = torch.zeros(4)
    bar = _progress(episodes, progress, "meta-ASB" if meta else "ASB")
    for episode in range(1, episodes + 1):
        ep = sampler.sample()
        inner_x, inner_y = as_float(x_train[ep.inner]), y_train[ep.inner]
        outer_idx = ep.outer
        outer_x, outer_y = as_float(x_train[outer_idx]), y_train[outer_idx]
        if zap:
            zap_class(model, ep.cls, bias=zap_bias, generator=generator)
        if meta:
            grads, info = meta_gradient(model, inner_x, inner_y, outer_x, outer_y, inner_lr,
                                        first_order=first_order, inner_params=inner_params)
            outer_opt.zero_grad(set_to_none=True)
            for n, p in model.named_parameters():
                p.grad = grads[n]
            outer_opt.step()
            first, last = info["inner_losses"][0], info["inner_losses"][-1]
            outer_loss, correct = info["outer_loss"], info["outer_correct"]
        else:
            inner_losses = []
            for i in range(K):
                inner_opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(inner_x[i : i + 1]), inner_y[i : i + 1])
                loss.backward()
                inner_opt.step()
                inner_losses.append(loss.detach())
            first, last = inner_losses[0], inner_losses[-1]
            outer_opt.zero_grad(set_to_none=True)
            logits = model(outer_x)
            outer_loss = F.cross_entropy(logits, outer_y)
            outer_loss.backward()
            outer_opt.step()
            outer_loss = outer_loss.detach()
            correct = (logits.detach().argmax(-1) == outer_y).sum()
        sums += torch.stack([outer_loss.cpu(), correct.cpu().float() / len(outer_y), first.cpu(),
                             last.cpu()])
        count += 1
        if episode % record_every == 0 or episode == episodes:
            mean = (sums / count).tolist()
            rows.append({"episode": episode, "outer_loss": mean[0], "outer_acc": mean[1],
                         "inner_loss_first": mean[2], "inner_loss_last": mean[3],
                         "seconds": time.perf_counter() - tic})
            sums.zero_()
            count = 0
            bar.set_postfix(loss=f"{mean[0]:.3f}", acc=f"{mean[1]:.2f}")
        if episode_callback is not None:
            episode_callback(episode, model)
        bar.update(1)
    bar.close()
    return model, pd.DataFrame(rows)


def pretrain_iid(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    *,
    epochs: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    zap_every: int = 0,
    zap_rows: int | None = None,
    zap_fan_in: str = "row",
    zap_bias: str = "zero",
    generator: torch.Generator | None = None,
    progress: bool = False,
    precision: str = "fp32",
    epoch_callback: Callable[[int, nn.Module], object] | None = None,
) -> tuple[nn.Module, pd.DataFrame]:
    """i.i.d. pre-training (Adam, batches) with zapping every ``zap_every`` epochs (§2.1.1), the
    steps at ``precision`` (:func:`zaplib.train.autocast`). ASB and meta-ASB stay fp32: their
    meta-gradients are checked against finite differences and learn2learn to 1e-5, which bf16's
    8-bit mantissa cannot hold, and the inner loop's single-image steps gain little from bf16.

    Zapping happens at the start of epochs ``zap_every, 2·zap_every, ...`` (never before the
    first, as the official ``lobo_rate``); ``zap_rows`` random rows are re-drawn (``None``: the
    whole layer, ``lobo_size`` = all). ``zap_fan_in="official_bug"`` reproduces the official i.i.d.
    path's too-small std (see :func:`zaplib.resets.zap`). ``zap_every=0`` never zaps.
    No early stopping: the paper evaluates at the end of training. ``epoch_callback(epoch, model)``
    runs at the start of every epoch ``epoch`` (0-based: after ``epoch`` epochs of training) *before*
    any zap, so a checkpoint taken there is the model of an ``epoch``-epoch run.

    Returns ``(model, records)``: :func:`zaplib.train.train_iid`'s per-epoch records plus a
    ``zapped`` column, and ``records.attrs["step_losses"]``, the training loss of every mini-batch
    in order (a list of floats: the zap diagnostics read the head's relearning from it).
    """
    zapped_epochs = []
    step_losses: list[torch.Tensor] = []

    def recorded_loss(logits, target):
        loss = F.cross_entropy(logits, target)
        if torch.is_grad_enabled():  # training steps only, not the validation passes
            step_losses.append(loss.detach().float())
        return loss

    def maybe_zap(epoch: int, net: nn.Module) -> None:
        if epoch_callback is not None:
            epoch_callback(epoch, net)
        if zap_every and epoch > 0 and epoch % zap_every == 0:
            n_out = net.head.out_features
            if zap_rows is None or zap_rows >= n_out:
                rows = None
            else:
                rows = torch.randperm(n_out, generator=generator)[:zap_rows]
            zap_class(net, rows, bias=zap_bias, fan_in=zap_fan_in, generator=generator)
            zapped_epochs.append(epoch + 1)

    model, records = train_iid(model, x_train, y_train, x_val, y_val, epochs=epochs,
                               batch_size=batch_size, optimizer="adam", lr=lr,
                               restore_best=False, generator=generator, epoch_callback=maybe_zap,
                               progress=progress, precision=precision, loss_fn=recorded_loss)
    records["zapped"] = records["epoch"].isin(zapped_epochs)
    records.attrs["step_losses"] = torch.stack(step_losses).tolist() if step_losses else []
    return model, records


# ---------------------------------------------------------------------------------------------
# The stored experiment
# ---------------------------------------------------------------------------------------------
_DATA_CACHE: dict = {}


def omniglot_data(split_seed: int = 0, device=None):
    """The Omniglot background / evaluation split (15 train / 5 held-out images per class) of
    :func:`zaplib.data.omniglot_split`, cached per process (sweep workers reuse it)."""
    from . import data, get_device

    key = (split_seed, str(get_device(device)))
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = data.omniglot_split(seed=split_seed, n_train=15, device=device)
    return _DATA_CACHE[key]


def model_config(config: dict) -> dict:
    """The :func:`zaplib.models.build` config of a pre-training config: ``OmniglotConvNet``
    (methods iid / asb / meta_asb / untrained) or ``ANML`` (method anml) with ``channels`` (and
    ``nm_channels``, ``nm_pool_last``) and ``head_outputs`` classes, initialised from the run's
    ``seed``."""
    if config["method"] == "anml":
        return {"model": "anml", "channels": config["channels"], "nm_channels": config["nm_channels"],
                "nm_pool_last": bool(config.get("nm_pool_last", True)),
                "num_classes": config["head_outputs"], "seed": int(config["seed"])}
    return {"model": "omniglot_convnet", "channels": config["channels"],
            "num_classes": config["head_outputs"], "seed": int(config["seed"])}


def trunk_state(model: nn.Module) -> dict:
    """The state of everything but the head (``head.*``): what transfer needs, since every transfer
    protocol replaces the head (a 64-channel trunk is ≈ 0.3 MB, small enough to commit)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("head.")}


def _pretraining_images(config: dict, split):
    """Training images of pre-training: the 15 training images of every background class, or all
    20 with ``train_images=20`` (the official ANML code pre-trains on every image, so it has no
    held-out images; its pre-training accuracy is then measured on training images)."""
    bg = split.background
    if config.get("train_images", 15) == 20:
        return torch.cat([bg.x_train, bg.x_test]), torch.cat([bg.y_train, bg.y_test])
    if config.get("train_images", 15) != 15:
        raise ValueError(f"train_images must be 15 or 20, got {config['train_images']}")
    return bg.x_train, bg.y_train


def pretrain(config: dict) -> dict:
    """Pre-train one model as ``config`` says and return what the chapter stores.

    Config keys: ``method`` (iid | asb | meta_asb | anml | untrained: the initial weights, a
    baseline), ``zap`` (bool), ``seed``,
    ``channels``, ``nm_channels`` / ``nm_pool_last`` (ANML), ``head_outputs`` (1000 in the official
    code), ``split_seed``, ``train_images`` (15, or 20 as the official ANML code); i.i.d.:
    ``epochs``, ``batch_size``, ``lr``, ``zap_every``, ``zap_rows`` (None = all), ``zap_fan_in``,
    ``precision``; episodic: ``episodes``, ``inner_lr``, ``outer_lr``, ``K``, ``R``; both:
    ``zap_bias`` and ``checkpoints`` (epochs or episodes after which the trunk is also kept: one
    long run gives the shorter runs of a dose–response, e.g. the 1-epoch i.i.d. control). ANML always
    meta-trains (second order) with its inner loop on the representation net and head.

    Returns ``state`` (the whole state_dict; git-ignored), ``trunk`` (the state without the head:
    committed, all that transfer needs), ``records`` (training curve), ``pretrain_val_acc`` /
    ``pretrain_val_loss`` (the pre-training head on the 5 held-out images of every background
    class: Fig. 3's "Pre-Train" bars), ``feature_dim``; i.i.d.: ``step_losses`` (one row per
    mini-batch: epoch, step, loss, zapped — the head's relearning after each zap); with
    ``checkpoints``: ``checkpoint_trunks`` ({units: trunk}) and ``checkpoints`` (units,
    pretrain_val_acc, pretrain_val_loss).
    """
    device = get_device(config.get("device"))
    torch.set_flush_denormal(True)
    split = omniglot_data(config.get("split_seed", 0), device)
    bg = split.background
    x_train, y_train = _pretraining_images(config, split)
    model = models.build(model_config(config)).to(device)
    generator = samplers.generator(int(config["seed"]), "pretrain")
    method = config["method"]
    wanted = sorted({int(u) for u in config.get("checkpoints", [])})
    kept: dict[int, dict] = {}
    checkpoint_rows = []

    def keep(units: int, net: nn.Module) -> None:
        if units in wanted and units not in kept:
            kept[units] = trunk_state(net)
            val = evaluate(net, bg.x_test, bg.y_test)
            checkpoint_rows.append({"units": units, "pretrain_val_acc": val["acc"],
                                    "pretrain_val_loss": val["loss"]})
            net.train()

    extra = {}
    if method == "iid":
        model, records = pretrain_iid(
            model, x_train, y_train, bg.x_test, bg.y_test, epochs=config["epochs"],
            batch_size=config["batch_size"], lr=config["lr"],
            zap_every=config["zap_every"] if config["zap"] else 0, zap_rows=config.get("zap_rows"),
            zap_fan_in=config.get("zap_fan_in", "row"), zap_bias=config.get("zap_bias", "zero"),
            generator=generator, precision=config.get("precision", "fp32"), epoch_callback=keep)
        losses = records.attrs.get("step_losses", [])
        per_epoch = len(losses) // max(config["epochs"], 1)
        zapped = set(records.loc[records["zapped"], "epoch"])
        steps = pd.DataFrame({"step": range(1, len(losses) + 1), "loss": losses})
        steps["epoch"] = (steps["step"] - 1) // max(per_epoch, 1) + 1
        steps["zapped"] = steps["epoch"].isin(zapped)
        extra["step_losses"] = steps[["epoch", "step", "loss", "zapped"]]
    elif method in ("asb", "meta_asb", "anml"):
        model, records = pretrain_asb(
            model, x_train, y_train, episodes=config["episodes"],
            inner_lr=config["inner_lr"], outer_lr=config["outer_lr"], K=config.get("K", 20),
            R=config.get("R", 64), zap=config["zap"], meta=method != "asb",
            inner_params=anml_inner_params if method == "anml" else None,
            zap_bias=config.get("zap_bias", "zero"), generator=generator,
            record_every=max(1, config["episodes"] // 20), episode_callback=keep)
    elif method == "untrained":  # the baseline: features of the initialisation
        records = pd.DataFrame({"epoch": [0]})
    else:
        raise ValueError(f"unknown pre-training method {method!r}")
    if wanted and method == "iid":  # a checkpoint at the last epoch is the final model
        keep(int(config["epochs"]), model)
    missing = [u for u in wanted if u not in kept]
    if missing:
        raise ValueError(f"checkpoints {missing} lie outside the run (method {method!r})")
    val = evaluate(model, bg.x_test, bg.y_test)
    out = {
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "trunk": trunk_state(model),
        "records": records,
        "pretrain_val_acc": val["acc"],
        "pretrain_val_loss": val["loss"],
        "feature_dim": int(model.feature_dim),
        **extra,
    }
    if wanted:
        out["checkpoint_trunks"] = {str(u): kept[u] for u in wanted}
        out["checkpoints"] = pd.DataFrame(checkpoint_rows).sort_values("units").reset_index(drop=True)
    return out


def build_pretrained(config: dict, state: dict, device=None) -> nn.Module:
    """The model of pre-training ``config`` with the weights ``state`` (from :func:`pretrain`), on
    ``device``. A trunk state (no ``head.*`` keys, :func:`trunk_state`) leaves the head at its
    initialisation: every transfer protocol replaces it anyway."""
    model = models.build(model_config(config))
    strict = any(k.startswith("head.") for k in state)
    try:
        missing, unexpected = model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:  # shapes differ: a state of another model
        raise ValueError(f"state does not fit the model of {config!r}: {exc}") from None
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise ValueError(f"state does not fit the model of {config!r}: missing {missing}, "
                         f"unexpected {unexpected}")
    return model.to(get_device(device))
