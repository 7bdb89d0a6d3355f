"""Training loops: i.i.d. training with early stopping, evaluation, and S models at once via torch.func.

* :func:`train_iid` trains one model on device-resident tensors (no DataLoader): a seeded
  permutation per epoch, batches converted to float on the fly, optional batched augmentation, an
  ``epoch_callback`` hook at the start of every epoch (zapping i.i.d. pre-training, *Reset It and
  Forget It* §2.1.1: classes zapped "at a configurable cadence"; the official code zaps at the
  start of every k-th epoch except the first), an optional step-wise learning-rate schedule (LURE,
  appendix "Implementation Details": SGD 0.1, decayed at epochs 20 and 40) and early stopping on
  the validation split (negative pre-training paper §3.1: max 200 epochs, patience 50) that
  restores the best-validation checkpoint (LURE's code starts each mega-batch from the previous
  one's best-validation checkpoint, reference notes).
* :class:`StackedModels` holds S copies of one architecture as stacked tensors
  (``torch.func.stack_module_state``) and runs them as one model with ``vmap(functional_call)``.
  Each model sees its own batch (``x`` of shape ``(S, B, ...)``) or a shared one (``(B, ...)``).
  Gradients come from ordinary autograd on the *sum* of the S per-model losses (default; model s's
  parameters appear only in loss s, so the gradient of the sum w.r.t. slice s is exactly the
  gradient of loss s) or from ``vmap(torch.func.grad_and_value(loss))``. The optimiser is a plain
  ``torch.optim`` SGD/Adam over the stacked tensors; both are elementwise (and all S slices share
  one step count), so this is the same update as S separate optimisers — ``tests/test_train.py``
  checks it to 1e-5 (float32) and 1e-10 (float64). On a 2-core CPU this is *not* faster than S
  separate loops for convnets (see ``benchmarks/bench_core.py``); it pays off where steps are
  dispatch-bound (GPUs, tiny models).
* :func:`train_iid_stacked` is :func:`train_iid` for S seeds in lock-step. Each model keeps its own
  generator (batch order and augmentation), its own early-stopping state and its own best
  checkpoint, so its result matches a separate :func:`train_iid` run with that generator.

BatchNorm under vmap: running statistics are stacked buffers passed through ``functional_call``
with ``in_dims=0``, so the in-place running-stat updates land in each model's own slice (checked
against separate runs in the tests). We therefore do *not* use
``torch.func.replace_all_batch_norm_modules_`` (which would drop running stats). InstanceNorm
(affine, no running stats; the Omniglot convnet) needs nothing special. Dropout gets independent
masks per model (``randomness="different"``).

Epoch numbering: ``epoch_callback(epoch, model)`` receives the number of epochs completed so far
(0 before the first epoch); a record row's ``epoch`` is the number of epochs completed after it
(1 for the first). Both therefore count completed epochs.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import metrics, samplers
from .data import to_float

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Augment = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]

RECORD_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


# ----------------------------------------------------------------------------- helpers
def as_float(x: torch.Tensor) -> torch.Tensor:
    """A batch as floats: uint8 images and float tensors as :func:`zaplib.data.to_float` does
    (``x / 255`` in the default dtype; floats unchanged); other integer tensors are cast."""
    if x.dtype == torch.uint8 or x.is_floating_point():
        return to_float(x)
    return x.to(torch.get_default_dtype())


def make_optimizer(
    params,
    optimizer: str = "adam",
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` or ``SGD`` (with ``momentum``) over ``params``.

    ``weight_decay`` is the classic L2 term added to the gradient (PyTorch's ``weight_decay``),
    as in the LURE code (SGD, wd 1e-4) and the negative pre-training paper (SGD, wd 1e-3).
    ``fused=None`` uses PyTorch's fused kernel when every parameter is a floating-point tensor on
    the CPU or a CUDA device: one pass over memory per tensor instead of ~10 elementwise passes
    (on these CPUs 3–6× faster for a 1000-way head; same update rule).
    """
    params = list(params)
    tensors = [p for p in params if isinstance(p, torch.Tensor)] or [
        p for group in params if isinstance(group, dict) for p in group["params"]
    ]
    if fused is None:
        fused = bool(tensors) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors)
    name = optimizer.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused or None)
    raise ValueError(f"optimizer must be 'adam' or 'sgd' (or a torch.optim.Optimizer), got {optimizer!r}")


def step_lr(base_lr: float, epoch: int, milestones: Sequence[int] = (), gamma: float = 0.1) -> float:
    """Learning rate in (0-based) epoch ``epoch``: ``base_lr * gamma ** #{m in milestones: m <= epoch}``.

    Same schedule as ``torch.optim.lr_scheduler.MultiStepLR`` stepped once per epoch, computed from
    the epoch index so that nothing carries over between calls (LURE resets the lr to 0.1 at each
    new mega-batch while keeping the optimiser state).
    """
    return base_lr * gamma ** sum(1 for m in milestones if m <= epoch)


def _resolve_optimizer(params, optimizer, lr, momentum, weight_decay):
    """Return (optimizer, base lr of each param group)."""
    if isinstance(optimizer, torch.optim.Optimizer):
        base = [group["lr"] if lr is None else lr for group in optimizer.param_groups]
        return optimizer, base
    opt = make_optimizer(params, optimizer, 1e-3 if lr is None else lr, momentum, weight_decay)
    return opt, [group["lr"] for group in opt.param_groups]


def _set_lr(optimizer, base_lrs, epoch, milestones, gamma) -> float:
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = step_lr(base, epoch, milestones, gamma)
    return optimizer.param_groups[0]["lr"]


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm  # plain tqdm: tqdm.auto warns in kernels without ipywidgets

    return tqdm(total=total, disable=not enabled, desc=desc, leave=False)


def _improved(value: float, best: float, monitor: str) -> bool:
    if np.isnan(value):
        return False
    return value < best if monitor == "val_loss" else value > best


def _initial_best(monitor: str) -> float:
    if monitor not in ("val_loss", "val_acc"):
        raise ValueError(f"monitor must be 'val_loss' or 'val_acc', got {monitor!r}")
    return float("inf") if monitor == "val_loss" else float("-inf")


# ----------------------------------------------------------------------------- single model
@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1000, transform=None, generator=None):
    """Logits of ``model`` on all of ``x`` (eval mode, no grad), in batches; restores the mode.

    ``transform(x_float, generator)`` is applied to each float batch (e.g. LURE validates with the
    training augmentation).
    """
    was_training = model.training
    model.eval()
    try:
        outs = []
        for start in range(0, len(x), batch_size):
            xb = as_float(x[start : start + batch_size])
            if transform is not None:
                xb = transform(xb, generator)
            outs.append(model(xb))
        return torch.cat(outs) if outs else torch.empty(0)
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1000,
    loss_fn: LossFn = F.cross_entropy,
    transform=None,
    generator=None,
) -> dict:
    """Mean loss and accuracy of ``model`` on ``(x, y)`` in eval mode: ``dict(loss, acc, n)``."""
    if len(x) == 0:
        return {"loss": float("nan"), "acc": float("nan"), "n": 0}
    logits = predict_logits(model, x, batch_size, transform, generator)
    with torch.no_grad():
        loss = float(loss_fn(logits, y))
    return {"loss": loss, "acc": metrics.accuracy(logits, y), "n": int(len(y))}


PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device | str):
    """The context a training step's forward pass and loss run in: ``"fp32"`` (nothing changes) or
    ``"bf16"`` (``torch.autocast`` to bfloat16 on the CPU or CUDA: matrix products and convolutions
    in bf16; weights, gradients and optimiser state stay fp32). Whether bf16 leaves a chapter's
    key metric equivalent to fp32 is tested per chapter before a profile uses it (issue 13 §3)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; precisions: {PRECISIONS}")
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               loss_fn: LossFn = F.cross_entropy, precision: str = "fp32"):
    """One optimiser step on the float batch ``(x, y)``; returns (loss, number correct) as 0-d
    tensors (no host sync, so a loop can accumulate them on the device). ``precision``: see
    :func:`autocast`."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(precision, x.device):
        logits = model(x)
        loss = loss_fn(logits, y)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(-1) == y).sum()


def _clone_state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_iid(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    *,
    epochs: int,
    batch_size: int,
    optimizer: str | torch.optim.Optimizer = "adam",
    lr: float | None = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    lr_milestones: Sequence[int] = (),
    lr_gamma: float = 0.1,
    patience: int | None = None,
    monitor: str = "val_loss",
    restore_best: bool = True,
    augment: Augment | None = None,
    val_transform: Augment | None = None,
    generator: torch.Generator | None = None,
    epoch_callback: Callable[[int, nn.Module], object] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    drop_last: bool = False,
    eval_batch_size: int = 1000,
    progress: bool = False,
    precision: str = "fp32",
) -> tuple[nn.Module, pd.DataFrame]:
    """Train ``model`` i.i.d. on ``(x_train, y_train)`` for at most ``epochs`` epochs, the training
    steps at ``precision`` (:func:`autocast`; evaluation stays fp32).

    Data are tensors on the model's device: uint8 NCHW images (converted per batch by
    :func:`as_float`) or floats, with int64 labels. Each epoch draws one permutation from
    ``generator`` (:func:`zaplib.samplers.batches`); ``augment(x_float, generator)`` then transforms
    each batch. ``optimizer`` is ``"adam"``/``"sgd"`` or an existing optimiser whose state is kept
    (its learning rate is set to ``lr`` unless ``lr`` is None). The lr in epoch e is
    :func:`step_lr` (``lr_milestones``, ``lr_gamma``).

    With a validation split, after every epoch the model is evaluated (eval mode, optional
    ``val_transform``); ``monitor`` (``"val_loss"`` or ``"val_acc"``) picks the best epoch, training
    stops after ``patience`` epochs without improvement (None: never early), and with
    ``restore_best`` the model ends with the best-validation weights (and buffers). The optimiser
    state is not rewound.

    Returns ``(model, records)``: one row per epoch with columns ``epoch, train_loss, train_acc,
    val_loss, val_acc, lr, seconds, best`` (train metrics are the running means over the epoch's
    training batches in train mode, i.e. with augmentation; ``best`` marks the epoch whose
    checkpoint was kept). ``records.attrs["best_epoch"]`` and ``["stopped_early"]`` summarise.
    """
    autocast(precision, x_train.device)  # an unknown precision fails before the first epoch
    has_val = x_val is not None and y_val is not None and len(x_val) > 0
    best_value = _initial_best(monitor)
    opt, base_lrs = _resolve_optimizer(model.parameters(), optimizer, lr, momentum, weight_decay)
    n = len(x_train)
    device = x_train.device
    rows, best_state, best_epoch, bad_epochs, stopped_early = [], None, None, 0, False
    bar = _progress(epochs, progress, "train_iid")
    for epoch in range(epochs):
        if epoch_callback is not None:
            epoch_callback(epoch, model)
        tic = time.perf_counter()
        current_lr = _set_lr(opt, base_lrs, epoch, lr_milestones, lr_gamma)
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for idx in samplers.batches(n, batch_size, generator, drop_last, device=device):
            xb = as_float(x_train[idx])
            if augment is not None:
                xb = augment(xb, generator)
            loss, n_correct = train_step(model, opt, xb, y_train[idx], loss_fn, precision)
            loss_sum += loss * len(idx)
            correct += n_correct
            seen += len(idx)
        row = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / max(seen, 1),
            "train_acc": float(correct) / max(seen, 1),
            "val_loss": float("nan"),
            "val_acc": float("nan"),
            "lr": current_lr,
        }
        if has_val:
            val = evaluate(model, x_val, y_val, eval_batch_size, loss_fn, val_transform, generator)
            row["val_loss"], row["val_acc"] = val["loss"], val["acc"]
            if _improved(row[monitor], best_value, monitor):
                best_value, best_epoch, bad_epochs = row[monitor], epoch + 1, 0
                if restore_best:
                    best_state = _clone_state(model)
            else:
                bad_epochs += 1
        row["seconds"] = time.perf_counter() - tic
        rows.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_acc=f"{row['val_acc']:.3f}")
        if has_val and patience is not None and bad_epochs >= patience:
            stopped_early = epoch + 1 < epochs
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    records = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    records["best"] = records["epoch"] == best_epoch
    records.attrs.update(best_epoch=best_epoch, stopped_early=stopped_early)
    return model, records


# ----------------------------------------------------------------------------- S models at once
class StackedModels:
    """S models of one architecture trained in lock-step through ``torch.func``.

    ``params``/``buffers`` are dicts of stacked tensors (leading dim S) from
    ``torch.func.stack_module_state``; the parameters are leaf tensors with ``requires_grad``.
    The forward is ``vmap(functional_call(template, ...))`` over the leading dim. ``optimizer`` is
    ``torch.optim`` Adam/SGD over the stacked tensors: exactly S independent optimisers, because both
    are elementwise and every slice takes the same number of steps (see the module docstring).

    Batches: ``x`` of shape ``(S, B, ...)`` with ``y`` of shape ``(S, B)`` gives every model its own
    batch; ``x`` of shape ``(B, ...)`` with ``y`` of shape ``(B,)`` is shared by all models.

    Gradients (``grad_mode``): ``"autograd"`` (default) runs ordinary autograd on the sum of the S
    losses (model s's parameters appear only in loss s, so each slice gets exactly its own
    gradient); tensor hooks registered on the stacked parameters (``p.register_hook``, e.g. a
    per-model weight decay) fire in this mode only. ``"func"`` vmaps ``torch.func.grad_and_value``
    of each model's loss, so the backward pass is vmapped too, and assigns ``p.grad`` directly.
    Both give the same gradients; their speeds are compared in ``benchmarks/bench_core.py``.
    Parameters with ``requires_grad=False`` (frozen in every model)
    are neither differentiated nor updated; ``loss_fn(logits, y)`` must return the batch mean
    (``"autograd"`` mode and :meth:`losses` also call it with ``reduction="none"``).

    To apply per-model ops (resets) use :meth:`for_each_model`, or :meth:`unstack` /
    :meth:`restack`: they copy in place, so the optimiser keeps its state.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        optimizer: str = "adam",
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        loss_fn: LossFn = F.cross_entropy,
        grad_mode: str = "autograd",
    ):
        if len(models) == 0:
            raise ValueError("StackedModels needs at least one model")
        if grad_mode not in ("func", "autograd"):
            raise ValueError(f"grad_mode must be 'func' or 'autograd', got {grad_mode!r}")
        from torch.func import stack_module_state

        self.num_models = len(models)
        # A real (not meta) copy as the template: models may keep plain tensor attributes.
        self.template = copy.deepcopy(models[0])
        self.params, self.buffers = stack_module_state(list(models))
        self.loss_fn = loss_fn
        self.grad_mode = grad_mode
        trainable = [p for p in self.params.values() if p.requires_grad]
        self.optimizer = make_optimizer(trainable, optimizer, lr, momentum, weight_decay)
        self._vmapped = {}
        self._grad_fns = {}

    def __len__(self) -> int:
        return self.num_models

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def train(self, mode: bool = True) -> "StackedModels":
        self.template.train(mode)
        return self

    def eval(self) -> "StackedModels":
        return self.train(False)

    @property
    def training(self) -> bool:
        return self.template.training

    def _call(self, params, buffers, x):
        from torch.func import functional_call

        return functional_call(self.template, (params, buffers), (x,))

    def forward(self, x: torch.Tensor, per_model: bool) -> torch.Tensor:
        """Logits of shape ``(S, B, C)``; ``per_model`` says whether ``x`` has the leading S dim."""
        from torch.func import vmap

        if per_model and x.shape[0] != self.num_models:
            raise ValueError(f"per-model batch must have leading dim {self.num_models}, got {tuple(x.shape)}")
        key = bool(per_model)
        if key not in self._vmapped:
            self._vmapped[key] = vmap(self._call, in_dims=(0, 0, 0 if per_model else None), randomness="different")
        return self._vmapped[key](self.params, self.buffers, x)

    __call__ = forward

    def losses(self, x: torch.Tensor, y: torch.Tensor):
        """Per-model mean losses ``(S,)`` and logits ``(S, B, C)`` (per-model iff ``y.dim() == 2``)."""
        per_model = y.dim() == 2
        logits = self.forward(x, per_model)
        targets = y if per_model else y.expand(self.num_models, -1)
        per_example = self.loss_fn(logits.flatten(0, 1), targets.flatten(), reduction="none")
        return per_example.view(self.num_models, -1).mean(1), logits

    def _loss_single(self, trainable, frozen, buffers, x, y):
        from torch.func import functional_call

        logits = functional_call(self.template, ({**trainable, **frozen}, buffers), (x,))
        return self.loss_fn(logits, y), logits

    def gradients(self, x: torch.Tensor, y: torch.Tensor):
        """Per-model gradients of the trainable stacked parameters (dict of ``(S, ...)`` tensors),
        losses ``(S,)`` and logits ``(S, B, C)``, without touching ``.grad`` or the optimiser."""
        from torch.func import grad_and_value, vmap

        per_model = y.dim() == 2
        if per_model not in self._grad_fns:
            data_dim = 0 if per_model else None
            self._grad_fns[per_model] = vmap(
                grad_and_value(self._loss_single, has_aux=True),
                in_dims=(0, 0, 0, data_dim, data_dim), randomness="different",
            )
        trainable = {k: p for k, p in self.params.items() if p.requires_grad}
        frozen = {k: p for k, p in self.params.items() if not p.requires_grad}
        grads, (losses, logits) = self._grad_fns[per_model](trainable, frozen, self.buffers, x, y)
        return grads, losses, logits

    def step(self, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32"):
        """One optimiser step for all S models; returns (losses ``(S,)``, numbers correct ``(S,)``).
        ``precision``: see :func:`autocast`."""
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(precision, x.device):
            if self.grad_mode == "func":
                grads, losses, logits = self.gradients(x, y)
            else:
                losses, logits = self.losses(x, y)
        if self.grad_mode == "func":
            for name, grad in grads.items():
                self.params[name].grad = grad.float()
        else:
            losses.float().sum().backward()
        self.optimizer.step()
        targets = y if y.dim() == 2 else y.expand(self.num_models, -1)
        return losses.detach(), (logits.detach().argmax(-1) == targets).sum(1)

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor, batch_size: int = 1000, per_model: bool = False,
                       transform=None, generators=None) -> torch.Tensor:
        """Logits ``(S, N, C)`` in eval mode. With ``transform``, each model's copy of a batch is
        transformed with its own generator (``generators[s]``)."""
        was_training = self.training
        self.eval()
        try:
            outs = []
            for start in range(0, x.shape[1 if per_model else 0], batch_size):
                xb = as_float(x[:, start : start + batch_size] if per_model else x[start : start + batch_size])
                if transform is not None:
                    gens = generators if generators is not None else [None] * self.num_models
                    xb = torch.stack([transform(xb[s] if per_model else xb, gens[s]) for s in range(self.num_models)])
                    outs.append(self.forward(xb, per_model=True))
                else:
                    outs.append(self.forward(xb, per_model))
            return torch.cat(outs, dim=1)
        finally:
            self.train(was_training)

    def evaluate(self, x, y, batch_size: int = 1000, transform=None, generators=None) -> dict:
        """Per-model mean loss and accuracy on a shared ``(x, y)``: ``dict(loss=(S,), acc=(S,))`` arrays."""
        logits = self.predict_logits(x, batch_size, transform=transform, generators=generators)
        with torch.no_grad():
            targets = y.expand(self.num_models, -1)
            loss = self.loss_fn(logits.flatten(0, 1), targets.flatten(), reduction="none").view(self.num_models, -1)
            acc = (logits.argmax(-1) == targets).float().mean(1)
        return {"loss": loss.mean(1).cpu().numpy(), "acc": acc.cpu().numpy()}

    @torch.no_grad()
    def unstack(self, models: Sequence[nn.Module] | None = None) -> list[nn.Module]:
        """Write each model's slice into an ``nn.Module`` (into ``models`` if given, else fresh copies
        of the template) and return the S modules."""
        if models is None:
            models = [copy.deepcopy(self.template) for _ in range(self.num_models)]
        if len(models) != self.num_models:
            raise ValueError(f"expected {self.num_models} models, got {len(models)}")
        for s, module in enumerate(models):
            for name, tensor in module.named_parameters():
                tensor.copy_(self.params[name][s])
            for name, tensor in module.named_buffers():
                tensor.copy_(self.buffers[name][s])
        return list(models)

    @torch.no_grad()
    def restack(self, models: Sequence[nn.Module]) -> None:
        """Copy the modules' parameters and buffers into the stacked tensors, in place (the
        optimiser state, e.g. Adam moments, is kept)."""
        if len(models) != self.num_models:
            raise ValueError(f"expected {self.num_models} models, got {len(models)}")
        for s, module in enumerate(models):
            for name, tensor in module.named_parameters():
                self.params[name][s].copy_(tensor)
            for name, tensor in module.named_buffers():
                self.buffers[name][s].copy_(tensor)

    def for_each_model(self, fn: Callable[[int, nn.Module], object]) -> list:
        """Call ``fn(s, module_s)`` on an unstacked copy of each model, then write the (possibly
        modified) weights back; returns the S return values. For reset ops inside stacked training."""
        models = self.unstack()
        results = [fn(s, m) for s, m in enumerate(models)]
        self.restack(models)
        return results

    def state(self) -> dict:
        """A detached clone of all stacked parameters and buffers."""
        return {k: v.detach().clone() for k, v in {**self.params, **self.buffers}.items()}

    @torch.no_grad()
    def load_state(self, state: dict, which: torch.Tensor | None = None) -> None:
        """Copy ``state`` (from :meth:`state`) back in place, for all models or the boolean mask ``which``."""
        for k, v in {**self.params, **self.buffers}.items():
            if which is None:
                v.copy_(state[k])
            else:
                v[which] = state[k][which]


def _copy_slices(dest: dict, src: dict, which: np.ndarray) -> None:
    """``dest[k][s] = src[k][s]`` for every stacked tensor k and every model s with ``which[s]``."""
    if not np.any(which):
        return
    which = torch.as_tensor(np.asarray(which, dtype=bool))
    for k in dest:
        mask = which.to(dest[k].device)
        dest[k][mask] = src[k][mask]


def stack(models: Sequence[nn.Module], **kwargs) -> StackedModels:
    """``StackedModels(models, **kwargs)``."""
    return StackedModels(models, **kwargs)


def unstack(stacked: StackedModels, models: Sequence[nn.Module] | None = None) -> list[nn.Module]:
    """``stacked.unstack(models)``."""
    return stacked.unstack(models)


def train_iid_stacked(
    models: Sequence[nn.Module],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    *,
    epochs: int,
    batch_size: int,
    generators: Sequence[torch.Generator | int] | None = None,
    optimizer: str = "adam",
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    lr_milestones: Sequence[int] = (),
    lr_gamma: float = 0.1,
    patience: int | None = None,
    monitor: str = "val_loss",
    restore_best: bool = True,
    augment: Augment | None = None,
    val_transform: Augment | None = None,
    epoch_callback: Callable[[int, StackedModels], object] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    drop_last: bool = False,
    eval_batch_size: int = 1000,
    grad_mode: str = "autograd",
    progress: bool = False,
) -> tuple[list[nn.Module], pd.DataFrame]:
    """:func:`train_iid` for S models (seeds) at once via :class:`StackedModels`.

    ``generators[s]`` (a ``torch.Generator`` or an int seed for a CPU generator) draws model s's
    batch order and augmentation exactly as a separate ``train_iid(..., generator=generators[s])``
    would, and each model has its own early-stopping counter and best checkpoint; a model that has
    stopped keeps computing in lock-step but its final weights are frozen at its stopping point
    (or best epoch), and it gets no more record rows. So the S returned models equal S separate
    runs up to floating-point reassociation in the vmapped kernels. ``epoch_callback(epoch, stacked)``
    receives the :class:`StackedModels` (use its ``for_each_model`` for per-model resets).

    Returns ``(models, records)``; the models passed in are updated in place and returned; records
    have a ``model`` column (0..S-1), a ``seed`` column when int seeds were given, then the columns of
    :func:`train_iid`. ``seconds`` is the wall time of the shared epoch (all S models).
    """
    num = len(models)
    if generators is None:
        generators = [None] * num
    if len(generators) != num:
        raise ValueError(f"need one generator per model: {num} models, {len(generators)} generators")
    seeds = [g if isinstance(g, int) else None for g in generators]
    gens = [torch.Generator().manual_seed(g) if isinstance(g, int) else g for g in generators]
    stacked = StackedModels(models, optimizer, lr, momentum, weight_decay, loss_fn, grad_mode)
    has_val = x_val is not None and y_val is not None and len(x_val) > 0
    best_value = np.full(num, _initial_best(monitor))
    best_epoch = [None] * num
    bad_epochs = np.zeros(num, dtype=int)
    active = np.ones(num, dtype=bool)
    keep_best = has_val and restore_best
    best_state = stacked.state() if keep_best else None
    stop_state = stacked.state()  # weights of each model at the epoch it stopped early
    n, device = len(x_train), x_train.device
    base_lrs = [lr]
    rows = []
    bar = _progress(epochs, progress, f"train_iid_stacked[{num}]")
    for epoch in range(epochs):
        if not active.any():
            break
        if epoch_callback is not None:
            epoch_callback(epoch, stacked)
        tic = time.perf_counter()
        current_lr = _set_lr(stacked.optimizer, base_lrs, epoch, lr_milestones, lr_gamma)
        stacked.train()
        loss_sum = torch.zeros(num, device=device)
        correct = torch.zeros(num, device=device, dtype=torch.long)
        seen = 0
        per_model_batches = [samplers.batches(n, batch_size, g, drop_last, device=device) for g in gens]
        for idx_list in zip(*per_model_batches):
            idx = torch.stack(idx_list)
            xb = as_float(x_train[idx])
            if augment is not None:
                xb = torch.stack([augment(xb[s], gens[s]) for s in range(num)])
            losses, n_correct = stacked.step(xb, y_train[idx])
            loss_sum += losses * idx.shape[1]
            correct += n_correct
            seen += idx.shape[1]
        train_loss = (loss_sum / max(seen, 1)).cpu().numpy()
        train_acc = (correct.double() / max(seen, 1)).cpu().numpy()
        val_loss = val_acc = np.full(num, np.nan)
        improved = np.zeros(num, dtype=bool)
        if has_val:
            val = stacked.evaluate(x_val, y_val, eval_batch_size, val_transform, gens)
            val_loss, val_acc = val["loss"], val["acc"]
            monitored = val_loss if monitor == "val_loss" else val_acc
            for s in np.flatnonzero(active):
                if _improved(float(monitored[s]), best_value[s], monitor):
                    best_value[s], best_epoch[s], bad_epochs[s], improved[s] = monitored[s], epoch + 1, 0, True
                else:
                    bad_epochs[s] += 1
        seconds = time.perf_counter() - tic
        for s in np.flatnonzero(active):
            rows.append({
                "model": int(s), "seed": seeds[s], "epoch": epoch + 1,
                "train_loss": float(train_loss[s]), "train_acc": float(train_acc[s]),
                "val_loss": float(val_loss[s]), "val_acc": float(val_acc[s]),
                "lr": current_lr, "seconds": seconds,
            })
        if keep_best and improved.any():
            _copy_slices(best_state, stacked.state(), improved)
        if has_val and patience is not None:
            stopping = active & (bad_epochs >= patience)
            if stopping.any():
                _copy_slices(stop_state, stacked.state(), stopping)
            active &= ~stopping
        bar.update(1)
        bar.set_postfix(active=int(active.sum()), loss=f"{float(train_loss.mean()):.3f}")
    bar.close()
    final = stacked.state()
    _copy_slices(final, stop_state, ~active)
    if keep_best:
        _copy_slices(final, best_state, np.array([e is not None for e in best_epoch]))
    stacked.load_state(final)
    stacked.unstack(models)
    records = pd.DataFrame(rows, columns=["model", "seed", *RECORD_COLUMNS])
    if all(seed is None for seed in seeds):
        records = records.drop(columns="seed")
    records["best"] = [best_epoch[m] == e for m, e in zip(records["model"], records["epoch"])]
    records.attrs.update(best_epoch=best_epoch)
    return list(models), records


__all__ = [
    "PRECISIONS",
    "autocast",
    "as_float",
    "make_optimizer",
    "step_lr",
    "predict_logits",
    "evaluate",
    "train_step",
    "train_iid",
    "StackedModels",
    "stack",
    "unstack",
    "train_iid_stacked",
]
