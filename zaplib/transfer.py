"""Transfer protocols of *Reset It and Forget It* (Frati et al. 2023, §2.1.2): sequential transfer
(Alg. 2) as a linear probe or unfrozen (App. H), and i.i.d. transfer (Alg. 3).

Common to all: the pre-trained head is replaced by a fresh ``Linear(D, N)`` for the ``N`` transfer
classes — weight Kaiming-normal (std √(2/D)), bias 0 (reference notes) — and the optimiser is
**Adam**, as in the official code (the paper's text says SGD). Trajectories come from
:func:`trajectory`: a transfer seed fixes which classes of a pool are learned, in what order, the
order of each class's 15 training images, and the new head's initial weights, so a linear probe
and an unfrozen run with the same seed see the same stream.

Speed (the point of :func:`sequential_probe`): the sequential linear probe runs on *cached* frozen
features and advances many (transfer seed, learning rate) probes in lock-step with batched
tensor ops — the softmax-cross-entropy gradient of a linear head is derived by hand
(∂L/∂W = (softmax(Wf + b) − e_y) fᵀ, ∂L/∂b = softmax − e_y) and Adam is PyTorch's fused kernel
(``torch._fused_adam_``, one call per learning rate). ``torch.set_flush_denormal(True)`` matters:
Adam's second moments of a softmax head decay into denormal floats, which slowed a CPU probe ~3×
(reference notes). :func:`sequential_probe_reference` is the plain one-run, per-image autograd +
``torch.optim.Adam`` loop the tests and the benchmark compare against.

Learning rates are chosen on classes apart from the reported ones: the 659 evaluation classes are
split once (:func:`evaluation_class_split`) into a *validation pool* and a *report pool*, and
:func:`select_lr` picks the best lr of a configuration from its validation curves. The protocol
that runs both phases through the results store is the chapter's
(:func:`zaplib.experiments.zapping.run_protocol`); :func:`transfer` is one run of it.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import get_device, metrics, samplers
from .pretraining import omniglot_data
from .train import as_float, autocast, predict_logits

__all__ = [
    "Trajectory",
    "trajectory",
    "new_head",
    "extract_features",
    "group_by_class",
    "evaluation_class_split",
    "sequential_probe",
    "least_squares_probe",
    "probe_groups",
    "sequential_probe_reference",
    "sequential_unfrozen",
    "iid_transfer",
    "transfer",
    "final_records",
    "select_lr",
    "eval_points",
    "final_by_pretrain_seed",
]


# ---------------------------------------------------------------------------------------------
# Trajectories and heads
# ---------------------------------------------------------------------------------------------
class Trajectory:
    """A transfer seed's stream: ``classes`` (N pool indices, in learning order), ``image_order``
    (N × n_train, the order of each class's training images) and the new head ``weight`` (N × D)."""

    def __init__(self, classes, image_order, weight):
        self.classes, self.image_order, self.weight = classes, image_order, weight


def trajectory(pool_size: int, n_train: int, n_classes: int, feature_dim: int, seed: int,
               shuffle_images: bool = True, head_outputs: int | None = None) -> Trajectory:
    """The stream of transfer seed ``seed``: ``n_classes`` classes drawn from a pool of
    ``pool_size`` in random order, each class's ``n_train`` images in random order (or in stored
    order), and a Kaiming-normal head weight (std √(2/D), the official re-drawn head) with
    ``head_outputs`` rows (default ``n_classes``; the official code keeps 1000 outputs, of which the
    first ``n_classes`` are learned and argmax runs over all)."""
    head_outputs = n_classes if head_outputs is None else int(head_outputs)
    if head_outputs < n_classes:
        raise ValueError(f"head_outputs ({head_outputs}) must be at least n_classes ({n_classes})")
    if n_classes > pool_size:
        raise ValueError(f"a trajectory of {n_classes} classes needs a pool of at least that many, "
                         f"got {pool_size}")
    g = samplers.generator(int(seed), "trajectory")
    classes = torch.randperm(pool_size, generator=g)[:n_classes]
    if shuffle_images:
        image_order = torch.argsort(torch.rand(n_classes, n_train, generator=g), dim=1)
    else:
        image_order = torch.arange(n_train).expand(n_classes, n_train).clone()
    weight = torch.randn(n_classes, feature_dim, generator=g) * math.sqrt(2.0 / feature_dim)
    if head_outputs > n_classes:  # extra rows from their own stream: the first N rows stay the same
        extra = torch.randn(head_outputs - n_classes, feature_dim,
                            generator=samplers.generator(int(seed), "trajectory", "extra_rows"))
        weight = torch.cat([weight, extra * math.sqrt(2.0 / feature_dim)])
    return Trajectory(classes, image_order, weight)


def new_head(weight: torch.Tensor) -> nn.Linear:
    """A ``Linear`` head with the given weight and bias 0 (the transfer head of the official code)."""
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.zero_()
    return head


def eval_points(n_classes: int, eval_every: int) -> list[int]:
    """Numbers of classes learned after which accuracy is recorded: every ``eval_every`` classes
    and always after the last one (the paper records every 50 of 600)."""
    points = list(range(eval_every, n_classes + 1, eval_every)) if eval_every > 0 else []
    if not points or points[-1] != n_classes:
        points.append(n_classes)
    return points


# ---------------------------------------------------------------------------------------------
# Data helpers
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def extract_features(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """``model.features`` of all images ``x`` (eval mode, no grad), as a float tensor (N, D)."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.features(as_float(x[i : i + batch_size]))
                          for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def group_by_class(x: torch.Tensor, y: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``x`` rearranged as (len(classes), n_per_class, ...) in the order of ``classes``; every class
    must have the same number of examples (Omniglot: 15 train / 5 held-out)."""
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y)
    n = int(counts[classes].min())
    if int(counts[classes].max()) != n:
        raise ValueError("group_by_class needs the same number of examples in every class")
    starts = torch.cumsum(counts, 0) - counts
    idx = starts[classes].unsqueeze(1) + torch.arange(n)
    return x[order[idx.reshape(-1)].to(x.device)].reshape(len(classes), n, *x.shape[1:])


def evaluation_class_split(n_classes: int, val_pool: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``n_classes`` evaluation-set classes once into a validation pool of ``val_pool``
    classes (for choosing learning rates) and a disjoint report pool (the rest)."""
    if not 0 <= val_pool < n_classes:
        raise ValueError(f"val_pool must be in [0, {n_classes}), got {val_pool}")
    perm = torch.randperm(n_classes, generator=samplers.generator(int(seed), "class_split"))
    return perm[:val_pool].sort().values, perm[val_pool:].sort().values


def _seen_eval_set(feats: torch.Tensor, classes: torch.Tensor, n_seen: int):
    """Images and trajectory labels (0..n_seen-1) of the first ``n_seen`` classes of a trajectory."""
    block = feats[classes[:n_seen]]  # (n_seen, n, ...)
    labels = torch.arange(n_seen, device=feats.device).repeat_interleave(block.shape[1])
    return block.reshape(-1, *feats.shape[2:]), labels


# ---------------------------------------------------------------------------------------------
# Sequential transfer, linear probe, many probes in lock-step (Alg. 2)
# ---------------------------------------------------------------------------------------------
def sequential_probe(
    train_feats: torch.Tensor,
    test_feats: torch.Tensor,
    *,
    n_classes: int,
    seeds: Sequence[int],
    lrs: Sequence[float],
    eval_every: int = 50,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    shuffle_images: bool = True,
    return_heads: bool = False,
    max_steps: int | None = None,
    head_outputs: int | None = None,
):
    """Alg. 2 with a frozen feature extractor: one Adam step per training image, classes in
    sequence, for every (seed, lr) in ``seeds × lrs`` at once.

    ``train_feats`` (P, n_train, D) / ``test_feats`` (P, n_test, D) are the cached features of a
    pool of P classes (training and held-out images). Each seed's :func:`trajectory` picks
    ``n_classes`` of them. After ``eval_points(n_classes, eval_every)`` classes, the accuracy on
    the training images seen so far (Alg. 2 line 8) and on the held-out images of the classes
    seen so far (line 10) is recorded — argmax over all N outputs.

    Returns a tidy frame: ``seed, lr, classes, train_acc, test_acc``; with ``return_heads`` also
    the final head weights (L, T, N, D) and biases (L, T, N), indexed [lr, seed].
    ``max_steps`` stops after that many images (benchmarks time a prefix of a long trajectory).
    ``head_outputs`` (default ``n_classes``) gives the head more rows than classes, as the official
    code's 1000-output transfer head: the extra rows are trained only as wrong answers and
    argmax runs over all of them.
    """
    torch.set_flush_denormal(True)
    device, dtype = train_feats.device, train_feats.dtype
    P, n_train, D = train_feats.shape
    T, L = len(seeds), len(lrs)
    trajs = [trajectory(P, n_train, n_classes, D, s, shuffle_images, head_outputs) for s in seeds]
    C = trajs[0].weight.shape[0]  # head rows (>= n_classes)
    # stream[t, j]: flat index (into P * n_train) of the j-th training image of seed t
    stream = torch.stack([
        (tr.classes.unsqueeze(1) * n_train + torch.gather(
            torch.arange(n_train).expand(n_classes, n_train), 1, tr.image_order)).reshape(-1)
        for tr in trajs]).to(device)
    flat = train_feats.reshape(P * n_train, D)
    steps = n_classes * n_train
    labels = torch.arange(n_classes, device=device).repeat_interleave(n_train)

    # Probe state laid out (L, T, ...): each learning rate's slice is one contiguous tensor for the
    # fused Adam call. Probes of one seed share its initial head (paired comparison across lrs).
    W = torch.stack([tr.weight for tr in trajs]).to(device, dtype).expand(L, T, C, D).contiguous()
    b = torch.zeros(L, T, C, device=device, dtype=dtype)
    mW, vW, mb, vb = (torch.zeros_like(W), torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(b))
    gW, gb = torch.empty_like(W), torch.empty_like(b)
    step_tensors = [[torch.zeros((), dtype=torch.float32, device=device) for _ in range(2)]
                    for _ in range(L)]
    S = L * T
    Wf, bf, gWf, gbf = W.view(S, C, D), b.view(S, C), gW.view(S, C, D), gb.view(S, C)
    rows_idx = torch.arange(S, device=device)
    points = set(eval_points(n_classes, eval_every))
    records = []
    for j in range(steps if max_steps is None else min(steps, max_steps)):
        f = flat[stream[:, j]]  # (T, D)
        fS = f.unsqueeze(0).expand(L, T, D).reshape(S, D)
        logits = torch.baddbmm(bf.unsqueeze(2), Wf, fS.unsqueeze(2)).squeeze(2)  # (S, C)
        torch.softmax(logits, dim=1, out=gbf)
        gbf[rows_idx, labels[j]] -= 1.0
        torch.mul(gbf.unsqueeze(2), fS.unsqueeze(1), out=gWf)
        for l in range(L):
            for s in step_tensors[l]:
                s += 1
            torch._fused_adam_([W[l], b[l]], [gW[l], gb[l]], [mW[l], mb[l]], [vW[l], vb[l]], [],
                               step_tensors[l], lr=float(lrs[l]), beta1=betas[0], beta2=betas[1],
                               weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)
        if (j + 1) % n_train == 0 and (j + 1) // n_train in points:
            n_seen = (j + 1) // n_train
            for t, tr in enumerate(trajs):
                acc = {}
                for part, feats in (("train_acc", train_feats), ("test_acc", test_feats)):
                    X, y = _seen_eval_set(feats, tr.classes.to(device), n_seen)
                    logits = torch.einsum("lcd,nd->lnc", W[:, t], X) + b[:, t].unsqueeze(1)
                    acc[part] = (logits.argmax(-1) == y).float().mean(1).tolist()
                records += [{"seed": int(seeds[t]), "lr": float(lrs[l]), "classes": n_seen,
                             "train_acc": acc["train_acc"][l], "test_acc": acc["test_acc"][l]}
                            for l in range(L)]
    frame = pd.DataFrame(records, columns=["seed", "lr", "classes", "train_acc", "test_acc"])
    return (frame, W, b) if return_heads else frame


def sequential_probe_reference(train_feats: torch.Tensor, test_feats: torch.Tensor, *, n_classes: int,
                               seed: int, lr: float, eval_every: int = 50,
                               shuffle_images: bool = True, return_head: bool = False):
    """The same protocol as :func:`sequential_probe` for one (seed, lr), written the plain way: an
    ``nn.Linear`` head, autograd, ``torch.optim.Adam``, one image per step. The tests check the
    lock-step probe against it; the benchmark measures the speed-up over it."""
    P, n_train, D = train_feats.shape
    tr = trajectory(P, n_train, n_classes, D, seed, shuffle_images)
    head = new_head(tr.weight).to(train_feats.device)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    points = set(eval_points(n_classes, eval_every))
    classes = tr.classes.to(train_feats.device)
    rows = []
    for n in range(n_classes):
        for i in range(n_train):
            f = train_feats[classes[n], tr.image_order[n, i]]
            loss = F.cross_entropy(head(f.unsqueeze(0)), torch.tensor([n], device=f.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        if n + 1 in points:
            row = {"seed": int(seed), "lr": float(lr), "classes": n + 1}
            with torch.no_grad():
                for part, feats in (("train_acc", train_feats), ("test_acc", test_feats)):
                    X, y = _seen_eval_set(feats, classes, n + 1)
                    row[part] = metrics.accuracy(head(X), y)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=["seed", "lr", "classes", "train_acc", "test_acc"])
    return (frame, head) if return_head else frame


# ---------------------------------------------------------------------------------------------
# Sequential transfer, unfrozen (App. H), and i.i.d. transfer (Alg. 3)
# ---------------------------------------------------------------------------------------------
def _with_new_head(model: nn.Module, weight: torch.Tensor) -> nn.Module:
    net = copy.deepcopy(model)
    net.head = new_head(weight).to(next(model.parameters()).device)
    return net


def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Test accuracy of ``net`` on uint8 ``(x, y)`` in eval mode (:func:`zaplib.metrics.accuracy`)."""
    return metrics.accuracy(predict_logits(net, x, batch_size), y)


def sequential_unfrozen(model: nn.Module, train_x: torch.Tensor, test_x: torch.Tensor, *,
                        n_classes: int, seed: int, lr: float, eval_every: int = 50,
                        shuffle_images: bool = True, precision: str = "fp32") -> pd.DataFrame:
    """Alg. 2 with *all* parameters trained (App. H, "unfrozen"): a copy of ``model`` with a new
    head, one Adam step per image. ``train_x`` (P, n_train, C, H, W) / ``test_x`` (P, n_test, ...)
    are the pool's images grouped by class; the stream is :func:`trajectory` of ``seed`` (the
    same as the linear probe's). Returns ``seed, lr, classes, train_acc, test_acc``."""
    P, n_train = train_x.shape[:2]
    D = model.head.in_features
    tr = trajectory(P, n_train, n_classes, D, seed, shuffle_images)
    net = _with_new_head(model, tr.weight)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    device = train_x.device
    classes = tr.classes.to(device)
    points = set(eval_points(n_classes, eval_every))
    rows = []
    for n in range(n_classes):
        xs = as_float(train_x[classes[n]][tr.image_order[n].to(device)])
        y = torch.tensor([n], device=device)
        for i in range(n_train):
            with autocast(precision, device):
                loss = F.cross_entropy(net(xs[i : i + 1]), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if n + 1 in points:
            row = {"seed": int(seed), "lr": float(lr), "classes": n + 1}
            for part, images in (("train_acc", train_x), ("test_acc", test_x)):
                X, yy = _seen_eval_set(images, classes, n + 1)
                row[part] = _accuracy(net, X, yy)
            rows.append(row)
    return pd.DataFrame(rows, columns=["seed", "lr", "classes", "train_acc", "test_acc"])


def iid_transfer(model: nn.Module, train_x: torch.Tensor, test_x: torch.Tensor, *, n_classes: int,
                 seed: int, lr: float, epochs: int = 5, batch_size: int = 32,
                 evals_per_epoch: int = 2, precision: str = "fp32") -> pd.DataFrame:
    """Alg. 3: unfrozen fine-tuning of a copy of ``model`` with a new head on shuffled batches of the
    ``n_classes`` classes of ``seed``'s trajectory (all their training images), Adam, ``epochs``
    epochs (the paper: 5). Accuracy on all training images (line 5) and all held-out images
    (line 6) is recorded ``evals_per_epoch`` times per epoch and before the first step.
    Returns ``seed, lr, epoch, step, train_acc, test_acc``."""
    P, n_train = train_x.shape[:2]
    D = model.head.in_features
    tr = trajectory(P, n_train, n_classes, D, seed)
    net = _with_new_head(model, tr.weight)
    device = train_x.device
    classes = tr.classes.to(device)
    Xtr, ytr = _seen_eval_set(train_x, classes, n_classes)
    Xte, yte = _seen_eval_set(test_x, classes, n_classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = samplers.generator(int(seed), "batches")
    n_batches = -(-len(Xtr) // batch_size)
    marks = {round(k * n_batches / evals_per_epoch) for k in range(1, evals_per_epoch + 1)}
    rows = [{"seed": int(seed), "lr": float(lr), "epoch": 0.0, "step": 0,
             "train_acc": _accuracy(net, Xtr, ytr), "test_acc": _accuracy(net, Xte, yte)}]
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(Xtr), generator=g).to(device)
        net.train()
        for k in range(n_batches):
            idx = order[k * batch_size : (k + 1) * batch_size]
            with autocast(precision, device):
                loss = F.cross_entropy(net(as_float(Xtr[idx])), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if k + 1 in marks:
                rows.append({"seed": int(seed), "lr": float(lr), "epoch": epoch + (k + 1) / n_batches,
                             "step": step, "train_acc": _accuracy(net, Xtr, ytr),
                             "test_acc": _accuracy(net, Xte, yte)})
    return pd.DataFrame(rows, columns=["seed", "lr", "epoch", "step", "train_acc", "test_acc"])


# ---------------------------------------------------------------------------------------------
# One transfer run and the choice of its learning rate
# ---------------------------------------------------------------------------------------------
#: ``split="select"``: of each report-pool class's 15 training images, the last this many are the
#: validation images and the others the training stream (the held-out test images are never used).
SELECT_VAL_IMAGES = 3
SPLITS = ("val", "report", "select")


def _pool(config: dict, device):
    """Images of the evaluation-set pool named by ``config['split']`` grouped by class.

    ``val``: the validation pool (classes apart from the reported ones; its held-out images);
    ``report``: the report pool (15 training / 5 held-out images per class); ``select``: the report
    pool's classes, but trained on 12 of their training images and evaluated on the other
    :data:`SELECT_VAL_IMAGES` — how learning rates are chosen at the reported trajectory length
    (600 of 659 evaluation classes leave no validation pool that long) without touching the
    held-out test images; the chapter runs it on a pre-trained model that is never reported."""
    split = config["split"]
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    ev = omniglot_data(config.get("split_seed", 0), device).evaluation
    val_classes, report_classes = evaluation_class_split(ev.num_classes, config["val_pool"],
                                                         config.get("class_split_seed", 0))
    classes = val_classes if split == "val" else report_classes
    train_x = group_by_class(ev.x_train, ev.y_train.cpu(), classes)
    if split == "select":
        return train_x[:, :-SELECT_VAL_IMAGES], train_x[:, -SELECT_VAL_IMAGES:]
    test_x = group_by_class(ev.x_test, ev.y_test.cpu(), classes)
    return train_x, test_x


#: Probes whose Adam state (head, gradient and two moments: 16 bytes per head element) fits in this
#: many bytes run in lock-step; more are split into groups that each stay in cache. On this CPU
#: (2 MB L2 per core, 32 MB L3 shared by two workers) one 600 × 576 probe at a time ran 2.2–2.7×
#: faster per probe-step than 5–15 in lock-step (``benchmarks/bench_transfer.py``, grouped case).
PROBE_CACHE_BYTES = 8 * 2**20


def probe_groups(seeds: Sequence[int], lrs: Sequence[float], head_rows: int, feature_dim: int,
                 cache_bytes: int = PROBE_CACHE_BYTES) -> list[tuple[list[int], list[float]]]:
    """Split the (seed, lr) probes of one run into lock-step groups whose state fits ``cache_bytes``:
    whole learning rates with all seeds when they fit, else chunks of seeds of one lr. Probes are
    independent (``tests/test_transfer.py``), so grouping changes speed, not results."""
    per_group = max(1, int(cache_bytes // (16 * head_rows * feature_dim)))
    seeds, lrs = list(seeds), list(lrs)
    if per_group >= len(seeds):
        k = max(1, per_group // len(seeds))
        return [(seeds, lrs[i : i + k]) for i in range(0, len(lrs), k)]
    return [(seeds[i : i + per_group], [lr]) for lr in lrs for i in range(0, len(seeds), per_group)]


def least_squares_probe(train_feats: torch.Tensor, test_feats: torch.Tensor, *, n_classes: int,
                        seeds: Sequence[int], ridge: float = 1e-3) -> pd.DataFrame:
    """The official "no-SGD" feature check: for each transfer seed's ``n_classes`` classes, a
    linear map from features (plus a constant) to one-hot labels fitted by least squares on all
    their training images at once, scored by argmax on their held-out images. No learning rate,
    no order: it measures the features alone, apart from the dynamics of the sequential probe.
    ``ridge`` × the mean squared feature (a scale-free ridge) keeps the solve well posed when
    features are collinear. Returns ``seed, classes, lstsq_train_acc, lstsq_test_acc``."""
    P, n_train, D = train_feats.shape
    rows = []
    for seed in seeds:
        tr = trajectory(P, n_train, n_classes, 1, seed)
        classes = tr.classes.to(train_feats.device)
        Xtr, ytr = _seen_eval_set(train_feats, classes, n_classes)
        Xte, yte = _seen_eval_set(test_feats, classes, n_classes)
        A = torch.cat([Xtr.double(), torch.ones(len(Xtr), 1, dtype=torch.float64, device=Xtr.device)], 1)
        Y = F.one_hot(ytr, n_classes).double()
        gram = A.T @ A
        gram += ridge * float(gram.diagonal()[:-1].mean()) * torch.eye(D + 1, dtype=torch.float64, device=A.device)
        W = torch.linalg.solve(gram, A.T @ Y)
        score = lambda X: torch.cat([X.double(), torch.ones(len(X), 1, dtype=torch.float64,  # noqa: E731
                                                            device=X.device)], 1) @ W
        rows.append({"seed": int(seed), "classes": n_classes,
                     "lstsq_train_acc": metrics.accuracy(score(Xtr), ytr),
                     "lstsq_test_acc": metrics.accuracy(score(Xte), yte)})
    return pd.DataFrame(rows, columns=["seed", "classes", "lstsq_train_acc", "lstsq_test_acc"])


def transfer(model: nn.Module, config: dict, device=None) -> dict:
    """One transfer experiment on the pre-trained ``model``: every (seed, lr) of the config.

    Config keys: ``kind`` (probe | unfrozen | iid), ``split`` (val | report), ``val_pool``,
    ``class_split_seed``, ``split_seed``, ``classes`` (trajectory length), ``seeds``, ``lrs``,
    ``eval_every`` (probe / unfrozen) or ``epochs``, ``batch_size``, ``evals_per_epoch`` (iid);
    ``head_outputs`` (probe; default the trajectory's classes, official 1000) and
    ``least_squares`` (probe: also :func:`least_squares_probe` on the same features, table ``lstsq``).
    Returns ``curves`` (a tidy frame, see the protocol functions) and ``seconds``; a probe also
    ``feature_density`` and ``feature_norm`` of the frozen features on its training images. The
    chapter stores it as ``zapping-transfer`` (:func:`zaplib.experiments.zapping.transfer_run`).
    """
    device = get_device(device)
    torch.set_flush_denormal(True)
    model = model.to(device)
    train_x, test_x = _pool(config, device)
    tic = time.perf_counter()
    kind = config["kind"]
    if kind == "probe":
        # features only of the pool classes some trajectory uses (a trajectory's classes do not
        # depend on the feature dimension, so a 1-wide draw finds them)
        P, n_tr, n_te = train_x.shape[0], train_x.shape[1], test_x.shape[1]
        used = torch.unique(torch.cat([trajectory(P, n_tr, config["classes"], 1, s).classes
                                       for s in config["seeds"]])).to(device)
        D = model.head.in_features
        feats_tr = torch.zeros(P, n_tr, D, device=device)
        feats_te = torch.zeros(P, n_te, D, device=device)
        feats_tr[used] = extract_features(model, train_x[used].flatten(0, 1)).reshape(len(used), n_tr, D)
        feats_te[used] = extract_features(model, test_x[used].flatten(0, 1)).reshape(len(used), n_te, D)
        rows = config.get("head_outputs") or config["classes"]
        curves = pd.concat([sequential_probe(feats_tr, feats_te, n_classes=config["classes"], seeds=seeds,
                                             lrs=lrs, eval_every=config["eval_every"],
                                             head_outputs=config.get("head_outputs"))
                            for seeds, lrs in probe_groups(config["seeds"], config["lrs"], rows, D)],
                           ignore_index=True)
        curves = curves.sort_values(["classes", "seed", "lr"], kind="stable").reset_index(drop=True)
        if config.get("least_squares"):
            lstsq = least_squares_probe(feats_tr, feats_te, n_classes=config["classes"],
                                        seeds=config["seeds"])
        density = float((feats_tr[used] > 0).float().mean())
        norm = float(feats_tr[used].norm(dim=-1).mean())
    elif kind in ("unfrozen", "iid"):
        frames = []
        for seed in config["seeds"]:
            for lr in config["lrs"]:
                if kind == "unfrozen":
                    frames.append(sequential_unfrozen(model, train_x, test_x, n_classes=config["classes"],
                                                      seed=seed, lr=lr, eval_every=config["eval_every"],
                                                      precision=config.get("precision", "fp32")))
                else:
                    frames.append(iid_transfer(model, train_x, test_x, n_classes=config["classes"],
                                               seed=seed, lr=lr, epochs=config["epochs"],
                                               batch_size=config["batch_size"],
                                               evals_per_epoch=config["evals_per_epoch"],
                                               precision=config.get("precision", "fp32")))
        curves = pd.concat(frames, ignore_index=True)
        density = norm = float("nan")
    else:
        raise ValueError(f"unknown transfer kind {kind!r}")
    out = {"curves": curves, "seconds": time.perf_counter() - tic}
    if kind == "probe":
        out.update(feature_density=density, feature_norm=norm)
        if config.get("least_squares"):
            out["lstsq"] = lstsq
    return out


def final_records(curves: pd.DataFrame) -> pd.DataFrame:
    """The last record of every (pre-trained model, seed, lr): final accuracy of a run."""
    x = "classes" if "classes" in curves.columns else "step"
    keys = [c for c in curves.columns if c not in (x, "epoch", "step", "classes", "train_acc", "test_acc")]
    return curves.sort_values(x).groupby(keys, as_index=False, dropna=False).last()


def select_lr(val_curves: pd.DataFrame, by: Sequence[str] = ("method", "zap", "fan_in")) -> pd.DataFrame:
    """Best learning rate per configuration: the lr with the highest mean *final* held-out
    accuracy on the validation pool, averaged over pre-training seeds and validation seeds.
    Returns ``by..., lr, val_acc``."""
    final = final_records(val_curves)
    by = [c for c in by if c in final.columns]
    means = final.groupby([*by, "lr"], as_index=False)["test_acc"].mean()
    best = means.loc[means.groupby(by)["test_acc"].idxmax()].rename(columns={"test_acc": "val_acc"})
    return best.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Analysis: final accuracies
# ---------------------------------------------------------------------------------------------
def final_by_pretrain_seed(curves: pd.DataFrame, value: str = "test_acc") -> pd.DataFrame:
    """Final ``value`` of every run, averaged over transfer seeds within each pre-trained model:
    one row per (method, zap, pretrain_seed) — the unit of replication of a pre-training claim
    (transfer seeds sharing one pre-trained model are not independent samples of a method)."""
    final = final_records(curves)
    keys = [k for k in ("method", "zap", "fan_in", "pretrain_seed") if k in final.columns]
    return final.groupby(keys, as_index=False)[value].mean()
