"""Chapter "A tour of the reset vocabulary" (``book/toolkit.ipynb``).

One run = one seed: train a small network i.i.d., then apply each reset op of :mod:`zaplib.resets`
to its own copy of the trained network and measure test accuracy right after the reset and after
a short retrain. The ops, as *which entries* × *how they are re-drawn*:

============== ============================================ =========================================
op             which entries                                how (paper)
============== ============================================ =========================================
none           —                                            control: the same retrain, no reset
zap_class      head row of ``zap_class``                    Kaiming-normal, row fan-in (Frati et al.
                                                            2023, Alg. 1 line 7)
zap_all        every head row                               the same, all rows (§2.1.1)
reinit_later   the last two weighted layers                 the model's own init (later-layer
                                                            forgetting, LURE §4 baselines)
shrink_perturb every parameter                              θ ← λθ + p·θ_fresh (Ash & Adams 2020)
snip_reinit    weights with the lowest SNIP saliency        kaiming_uniform(a=√5) (LURE §3, App.
               (global, ``1 − snip_keep`` of all entries)   Alg. 1 lines 8–11)
shift_biases   every bias                                   + ``bias_shift`` (negative pre-training
                                                            paper §6)
============== ============================================ =========================================

The retrain is one epoch of Adam (a fresh optimiser, learning rate ``lr``) over the first
``retrain_steps × batch_size`` training images, the same images for every op.
"""
from __future__ import annotations

import copy
import math

import pandas as pd
import torch
from torch import nn

from .. import data, get_device, metrics, models, resets, samplers, train
from ..chapters import Chapter
from ..store import experiment

EXPERIMENT = "toolkit"
OPS = ("none", "zap_class", "zap_all", "reinit_later", "shrink_perturb", "snip_reinit", "shift_biases")
SNIP_BATCH = 100  # LURE's code scores saliency on one batch of 100 images (reference notes)


def configs(params: dict) -> list[dict]:
    """One config per seed from the chapter's resolved parameters (``profile`` and ``seeds`` are
    not part of a run's identity: equal settings reached from two profiles share stored runs)."""
    shared = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()
              if k not in ("profile", "seeds")}
    return [{"seed": seed, **shared} for seed in params["seeds"]]


def later_layers(model: nn.Module, n: int = 2) -> list[str]:
    """Names of the last ``n`` conv/linear layers (for SmallCNN and MLP: the hidden layer + head)."""
    names = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return names[-n:]


def apply_op(op: str, model: nn.Module, config: dict, snip_batch, generator: torch.Generator) -> int:
    """Apply the chapter's reset ``op`` in place through :func:`zaplib.resets.apply`; the number
    of entries it changed."""
    if op == "none":
        return resets.apply("none", model)
    if op == "zap_class":
        return resets.apply("zap", model, generator, classes=[config["zap_class"]])
    if op == "zap_all":
        return resets.apply("zap", model, generator, classes=None)
    if op == "reinit_later":
        return resets.apply("reinit_layers", model, generator, names=later_layers(model))
    if op == "shrink_perturb":
        shrink, perturb = config["shrink_perturb"]
        return resets.apply("shrink_perturb", model, generator, shrink=shrink, perturb=perturb,
                            form="fresh")
    if op == "snip_reinit":
        return resets.apply("lure", model, generator, batch=snip_batch,
                            reset_fraction=1 - config["snip_keep"])
    if op == "shift_biases":
        return resets.apply("shift_biases", model, delta=config["bias_shift"])
    raise ValueError(f"unknown op {op!r}; ops: {OPS}")


# version 2: seeds from samplers.generator, inits via models.build, data via data.subset (issue 12)
@experiment(EXPERIMENT, version=2)
def run(config: dict) -> dict:
    """Train one seed, then every op of :data:`OPS` on a copy. Returns the tables ``training``
    (per epoch), ``resets`` (per op), ``per_class`` (per op × stage × class), ``zap_std`` and
    ``snip`` (per tensor), and the tensor ``heads`` (trained head and two zapped versions)."""
    device = get_device(config.get("device"))
    ds = data.subset(data.load(config["dataset"], device), n_train=config["n_train"],
                     n_test=config["n_test"])  # no generator: the first n images, as documented
    x_train, y_train, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    n_retrain = config["retrain_steps"] * config["batch_size"]
    x_retrain, y_retrain = x_train[:n_retrain], y_train[:n_retrain]
    snip_batch = (train.as_float(x_train[:SNIP_BATCH]), y_train[:SNIP_BATCH])
    seed = config["seed"]

    model = models.build(config).to(device)  # model, width and seed are the run's own keys
    model, training = train.train_iid(model, x_train, y_train, epochs=config["train_epochs"],
                                      batch_size=config["batch_size"], optimizer="adam",
                                      lr=config["lr"], generator=samplers.generator(seed, "train"),
                                      precision=config.get("precision", "fp32"))

    def measure(net):
        logits = train.predict_logits(net, x_test)
        per_class = metrics.per_class_accuracy(logits, y_test, ds.num_classes)
        return metrics.accuracy(logits, y_test), per_class

    rows, per_class_rows = [], []
    n_params = sum(p.numel() for p in model.parameters())
    for op in OPS:
        net = copy.deepcopy(model)
        changed = apply_op(op, net, config, snip_batch, samplers.generator(seed, "reset", op))
        acc_reset, pc_reset = measure(net)
        train.train_iid(net, x_retrain, y_retrain, epochs=1, batch_size=config["batch_size"],
                        optimizer="adam", lr=config["lr"], generator=samplers.generator(seed, "retrain", op),
                        precision=config.get("precision", "fp32"))
        acc_retrained, pc_retrained = measure(net)
        rows.append({"op": op, "entries_changed": changed, "fraction_changed": changed / n_params,
                     "acc_after_reset": acc_reset, "acc_after_retrain": acc_retrained})
        for stage, pc in (("after_reset", pc_reset), ("after_retrain", pc_retrained)):
            per_class_rows += [{"op": op, "stage": stage, "class": c, "accuracy": a}
                               for c, a in pc.items()]

    # The zap's draw, and the official i.i.d. path's bug (fan-in of all k rows together).
    heads = {"trained": model.head.weight.detach().cpu().clone()}
    zap_rows = []
    n_rows, fan_in = model.head.weight.shape
    for mode in ("row", "official_bug"):
        net = copy.deepcopy(model)
        resets.zap(net.head, None, fan_in=mode, generator=samplers.generator(seed, "zap_draw", mode))
        drawn = net.head.weight.detach().cpu().clone()
        heads[mode] = drawn
        fan = fan_in if mode == "row" else n_rows * fan_in
        zap_rows.append({"fan_in_mode": mode, "rows": n_rows, "fan_in": fan,
                         "std_expected": math.sqrt(2 / fan), "std_drawn": float(drawn.std()),
                         "mean_drawn": float(drawn.mean()), "std_trained": float(heads["trained"].std())})

    masks = resets.snip_mask(copy.deepcopy(model), snip_batch, fraction=1 - config["snip_keep"])
    snip = pd.DataFrame([{"tensor": name, "entries": int(reset.numel()),
                          "reset": int(reset.sum()), "fraction_reset": float(reset.float().mean())}
                         for name, reset in masks.items()])

    training.attrs = {}  # tidy frame only: attrs do not survive CSV
    return {
        "training": training,
        "resets": pd.DataFrame(rows),
        "per_class": pd.DataFrame(per_class_rows),
        "zap_std": pd.DataFrame(zap_rows),
        "snip": snip,
        "heads": heads,
        "n_params": n_params,
    }


# ---------------------------------------------------------------------------------------------
# The chapter: parameters and profiles (collected by zaplib.chapters.REGISTRY)
# ---------------------------------------------------------------------------------------------

CHAPTER = Chapter(
    bounds={  # checked before anything runs (zaplib.runner)
        "width": "> 0",
        "n_train": "> 0",
        "n_test": "> 0",
        "train_epochs": "> 0",
        "batch_size": "> 0",
        "lr": "> 0",
        "retrain_steps": "> 0",
        "snip_keep": "[0, 1]",
        "shrink_perturb": "[0, 1]",
    },
    experiments=("toolkit",),
    name="toolkit",
    title="A tour of the reset vocabulary",
    notebook="book/toolkit.ipynb",
    description=(
        "Trains a small network on MNIST for several seeds, then applies each reset op of zaplib "
        "(zap, shrink & perturb, SNIP masked re-init, later-layer re-init, bias shift) to a copy, "
        "measuring accuracy right after the reset and after a short retrain "
        "(zaplib.experiments.toolkit)."
    ),
    params={
        "seeds": (list[int], [0, 1, 2], "training seeds; one network per seed"),
        "dataset": (str, "mnist", "dataset for zaplib.data.load", ("mnist", "fashion_mnist")),
        "model": (str, "small_cnn", "network (zaplib.models)", ("small_cnn", "mlp")),
        "width": (int, 8, "channels of the SmallCNN's first conv (hidden units of the MLP)"),
        "n_train": (int, 10000, "training images (the first n of the training set)"),
        "n_test": (int, 2000, "test images (the first n of the test set)"),
        "train_epochs": (int, 2, "epochs of the initial training"),
        "batch_size": (int, 128, "mini-batch size"),
        "lr": (float, 1e-3, "Adam learning rate, for the training and the retrain"),
        "retrain_steps": (int, 20, "Adam steps of the short retrain after each reset"),
        "zap_class": (int, 3, "the class whose head row the one-class zap re-draws"),
        "snip_keep": (float, 0.8, "fraction of all weights SNIP keeps (LURE re-draws the rest)"),
        "shrink_perturb": (tuple[float, float], (0.4, 0.1), "shrink λ and perturb p (Ash & Adams)"),
        "bias_shift": (float, 0.01, "what the bias reset adds to every bias"),
    },
    profiles={
        "smoke": {"seeds": [0], "n_train": 2000, "n_test": 500, "train_epochs": 1,
                  "retrain_steps": 5, "width": 4},
        "quick": {},
        "long": {},  # the tour needs no more than quick: its long is its quick (issue 13 §1)
        "paper": {"seeds": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "n_train": 60000, "n_test": 10000,
                  "train_epochs": 10, "retrain_steps": 100, "width": 32},
    },
)


def planned_runs(params: dict, store=None) -> list:
    """Every stored run the chapter's notebook reads, as ``(fn, config)`` pairs
    (``python -m zaplib compute toolkit``)."""
    return [(run, config) for config in configs(params)]


def image_steps(config: dict) -> float:
    """Images through a training step in one run: the initial training and every op's retrain."""
    return config["n_train"] * config["train_epochs"] + len(OPS) * config["retrain_steps"] * config["batch_size"]
