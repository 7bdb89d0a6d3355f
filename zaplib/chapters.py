"""The chapter registry: every chapter of *The Reset Book* declared in one place.

A chapter is a notebook in ``book/`` with a cell tagged ``parameters``. Its entry here names the
notebook, every parameter with its type, default and meaning, and three named profiles:

- ``smoke``: seconds per chapter; proves the notebook runs end to end (CI, ``make book PROFILE=smoke``);
- ``quick``: minutes on 2 CPU cores; what the committed book shows;
- ``paper``: the scale of the paper the chapter reproduces (hours, a GPU or a cluster).

A profile lists only the parameters it changes from the defaults; explicit parameters
(``python -m zaplib run CHAPTER -p NAME VALUE``) override the profile. ``profile`` itself is a
parameter of every chapter and must not be declared again. Parsing and validation live in
:mod:`zaplib.runner`; this module is pure data and imports nothing heavy, so
``python -m zaplib list`` is instant.

Supported parameter types: ``int``, ``float``, ``bool``, ``str``, ``list[int]``, ``list[float]``,
``list[str]`` and ``tuple[float, ...]`` (or any ``tuple[T, ...]`` / fixed ``tuple[T1, T2]``).
On the command line lists and tuples are comma-separated: ``-p seeds 0,1,2``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

PROFILES = ("smoke", "quick", "paper")
DEFAULT_PROFILE = "quick"


class Param(NamedTuple):
    """One chapter parameter: its type, its default (used when no profile changes it), what it means,
    and optionally the values it may take."""

    type: Any
    default: Any
    help: str = ""
    choices: tuple | None = None


@dataclass(frozen=True)
class Chapter:
    """A chapter: ``name`` (used on the command line), ``notebook`` (path relative to the project
    root, or absolute), its ``params`` and its ``profiles`` (profile name -> parameter overrides)."""

    name: str
    notebook: str
    params: dict[str, Param]
    profiles: dict[str, dict[str, Any]]
    title: str = ""
    description: str = field(default="", compare=False)
    #: store experiments the notebook reads; their stored files are part of its up-to-date check
    experiments: tuple[str, ...] = ()

    def __post_init__(self):
        # Plain tuples are accepted for brevity: (type, default, help[, choices]).
        object.__setattr__(self, "params", {k: Param(*v) for k, v in self.params.items()})
        if "profile" in self.params:
            raise ValueError(f"chapter {self.name!r}: 'profile' is implicit, do not declare it")
        missing = [p for p in PROFILES if p not in self.profiles]
        if missing:
            raise ValueError(f"chapter {self.name!r} lacks the profiles {missing}")
        for profile, values in self.profiles.items():
            unknown = sorted(set(values) - set(self.params))
            if unknown:
                raise ValueError(
                    f"chapter {self.name!r}, profile {profile!r} sets undeclared parameters {unknown}"
                )


# ---------------------------------------------------------------------------------------------
# The chapters, in reading order.
# ---------------------------------------------------------------------------------------------

TOOLKIT = Chapter(
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
        "paper": {"seeds": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "n_train": 60000, "n_test": 10000,
                  "train_epochs": 10, "retrain_steps": 100, "width": 32},
    },
)

ZAPPING = Chapter(
    experiments=("zapping-pretrain", "zapping-transfer"),
    name="zapping",
    title="Reset it and forget it: zapping, ASB and meta-ASB",
    notebook="book/zapping.ipynb",
    description=(
        "Pre-trains the Omniglot convnet with i.i.d., ASB, meta-ASB (second order) and ANML, each "
        "with and without zapping, then transfers to unseen classes: sequential linear probe "
        "(Alg. 2), unfrozen sequential (App. H) and i.i.d. fine-tuning (Alg. 3), with learning "
        "rates chosen on held-apart classes (zaplib.meta, zaplib.transfer, "
        "zaplib.experiments.zapping)."
    ),
    params={
        "channels": (int, 16, "conv channels of the Omniglot convnet (paper: 256)"),
        "nm_channels": (int, 8, "channels of ANML's neuromodulatory net (paper: 112)"),
        "pretrain_seeds": (list[int], [0, 1, 2, 3], "pre-training seeds of i.i.d. and ASB (± zap)"),
        "meta_seeds": (list[int], [0, 1, 2, 3], "pre-training seeds of meta-ASB (± zap)"),
        "anml_seeds": (list[int], [0, 1], "pre-training seeds of ANML (always zaps)"),
        "iid_epochs": (int, 4, "epochs of i.i.d. pre-training"),
        "zap_every": (int, 1, "i.i.d.+zap: zap the whole head every k epochs (not before the first)"),
        "asb_episodes": (int, 600, "ASB episodes (paper: 9000)"),
        "meta_episodes": (int, 400, "meta-ASB episodes (paper: 25000)"),
        "anml_episodes": (int, 400, "ANML episodes (paper: 25000)"),
        "inner_lr": (float, 0.03, "inner-loop SGD lr of ASB / meta-ASB / ANML (paper code: 0.1 at 256 ch)"),
        "outer_lr": (float, 1e-3, "outer Adam lr"),
        "iid_lr": (float, 1e-3, "Adam lr of i.i.d. pre-training (batch 256)"),
        "transfer_classes": (int, 100, "classes in a reported sequential-transfer trajectory (paper: 600)"),
        "val_pool": (int, 150, "evaluation classes held apart for choosing learning rates"),
        "val_classes": (int, 100, "classes in a validation trajectory (<= val_pool)"),
        "eval_every": (int, 10, "record accuracy every this many classes"),
        "probe_lrs": (list[float], [1e-4 * 2 ** k for k in range(10)], "linear-probe Adam lr grid"),
        "val_seeds": (list[int], [100, 101, 102], "transfer seeds on the validation pool"),
        "report_seeds": (list[int], [0, 1, 2, 3, 4], "transfer seeds on the report pool"),
        "finetune_methods": (list[str], ["iid", "asb"], "methods also run unfrozen and i.i.d.-transferred"),
        "finetune_pretrain_seeds": (int, 2, "how many pre-training seeds those runs use"),
        "finetune_classes": (int, 50, "classes of the unfrozen and i.i.d. transfer runs"),
        "unfrozen_lrs": (list[float], [3e-4, 1e-3, 3e-3], "Adam lr grid, unfrozen sequential transfer"),
        "iid_transfer_lrs": (list[float], [1e-3, 3e-3, 1e-2], "Adam lr grid, i.i.d. transfer"),
        "iid_transfer_epochs": (int, 5, "epochs of i.i.d. transfer (paper: 5)"),
        "finetune_val_seeds": (list[int], [100], "transfer seeds on the validation pool (fine-tuning)"),
        "finetune_report_seeds": (list[int], [0, 1], "transfer seeds on the report pool (fine-tuning)"),
        "bug_seeds": (list[int], [0, 1], "seeds of the official i.i.d. zap-bug experiment"),
        "workers": (int, 2, "local worker processes (one torch thread each)"),
    },
    profiles={
        "smoke": {"channels": 4, "nm_channels": 2, "pretrain_seeds": [0], "meta_seeds": [0],
                  "anml_seeds": [0], "iid_epochs": 2, "asb_episodes": 10, "meta_episodes": 3,
                  "anml_episodes": 2, "transfer_classes": 10, "val_pool": 10, "val_classes": 10,
                  "eval_every": 5, "probe_lrs": [1e-3, 1e-2], "val_seeds": [100],
                  "report_seeds": [0, 1], "finetune_pretrain_seeds": 1, "finetune_classes": 5,
                  "unfrozen_lrs": [1e-3], "iid_transfer_lrs": [1e-3], "iid_transfer_epochs": 1,
                  "finetune_report_seeds": [0], "bug_seeds": [0]},
        "quick": {},
        "paper": {"channels": 256, "nm_channels": 112, "pretrain_seeds": [0, 1, 2],
                  "meta_seeds": [0, 1, 2], "anml_seeds": [0, 1, 2], "iid_epochs": 10,
                  "asb_episodes": 9000, "meta_episodes": 25000, "anml_episodes": 25000,
                  "inner_lr": 0.1, "transfer_classes": 600, "val_pool": 59, "val_classes": 59,
                  "eval_every": 50,
                  "probe_lrs": [0.055, 0.01, 0.0055, 0.001, 0.0007, 0.0004, 0.0001, 0.00007, 0.00004],
                  "report_seeds": list(range(10)), "finetune_methods": ["iid", "asb", "meta_asb"],
                  "finetune_pretrain_seeds": 3, "finetune_classes": 600,
                  "finetune_report_seeds": list(range(10)), "bug_seeds": [0, 1, 2]},
    },
)

NEGATIVE_PRETRAINING = Chapter(
    experiments=("negative_pretraining",),
    name="negative_pretraining",
    title="The negative pre-training effect and three ways to fix it",
    notebook="book/negative_pretraining.ipynb",
    description=(
        "Learning paths over blur, contrast and shift: pre-train on corrupted images, then train on "
        "clean ones, against a clean-only baseline; interventions A (learning rates), B "
        "(discretising the path, 1-D and 2-D) and C (bias reset), appendix statistics and a "
        "sharpness probe (zaplib.paths)."
    ),
    params={
        "datasets": (list[str], ["cifar10"], "datasets: cifar10 (offline: the JPEG-lossy copy), fashion_mnist, mnist, svhn (`python -m zaplib.data prepare svhn`)"),
        "seeds": (list[int], [0, 1, 2, 3, 4], "seeds of the baseline and of interventions A, C, B-blur"),
        "disc_seeds": (list[int], [0, 1, 2], "seeds of the contrast / shift / 2-D paths (paper: 3)"),
        "model": (str, "resnet10", "network (zaplib.models): a ResNet-10 is ResNet-18 with one block per stage",
                  ("resnet10", "resnet18", "small_cnn")),
        "width": (int, 4, "first-layer channels (ResNets: stage-1 width, 64 = standard; SmallCNN: first conv)"),
        "hidden": (int, 128, "hidden units of the SmallCNN's last layer (other models ignore it)"),
        "resolution": (int, 16, "image side after area down-sampling (0 = native)"),
        "n_train": (int, 3000, "training images, a seeded random subset (0 = all but n_val)"),
        "n_val": (int, 1000, "validation images (from the training set) for early stopping"),
        "n_test": (int, 0, "test images (0 = the whole test set)"),
        "batch_size": (int, 128, "mini-batch size"),
        "lr": (float, 0.01, "SGD learning rate of every task (paper: 1e-3)"),
        "lr_factors": (list[float], [2.0], "intervention A: other rates as multiples of lr (paper: 0.5, 2)"),
        "momentum": (float, 0.9, "SGD momentum"),
        "weight_decay": (float, 1e-3, "SGD weight decay"),
        "first_epochs": (int, 10, "fixed length of the first task, last weights kept (0 = early-stopped)"),
        "max_epochs": (int, 200, "max epochs per task (A, C, baseline)"),
        "patience": (int, 8, "early-stopping patience (A, C, baseline; paper: 50)"),
        "disc_max_epochs": (int, 200, "max epochs per task of the discretised paths (paper: 100)"),
        "disc_patience": (int, 4, "patience of the discretised paths (paper: 20)"),
        "blur_k": (float, 2.0, "blur factor k of the source task (paper: 4 on 32 px, i.e. 8 px)"),
        "contrast_start": (float, 0.0, "contrast level of the source task (0 = the 10% floor)"),
        "shift_start": (float, 4.0, "random-shift width (px) of the source task"),
        "n_steps": (list[int], [2, 3], "intervention B: numbers of tasks N on the 1-D paths"),
        "n_steps_2d": (list[int], [2, 3], "numbers of tasks N on the 2-D paths (N=2: the direct jump from the 2-D source)"),
        "paths_2d": (list[str], ["blur+contrast", "blur+shift"], "2-D paths, transform pairs a+b (each: 3 orders)"),
        "bias_shift": (float, 0.01, "intervention C: what the bias reset adds to every bias"),
        "control": (bool, True, "also run clean → clean with the first task's process (own control)"),
        "n_probe": (int, 256, "training images of the probe batch (activity, sharpness)"),
        "sharpness_sigma": (float, 0.1, "relative size of the random weight perturbation"),
        "hessian_iters": (int, 0, "power iterations for the top Hessian eigenvalue (0 = off)"),
        "workers": (int, 2, "local worker processes (one torch thread each)"),
    },
    profiles={
        "smoke": {"seeds": [0, 1], "disc_seeds": [0], "width": 4, "hidden": 16, "n_train": 300,
                  "n_val": 100, "n_test": 500, "first_epochs": 2, "max_epochs": 3, "patience": 1,
                  "disc_max_epochs": 2, "disc_patience": 1, "lr_factors": [0.5, 2.0],
                  "n_steps": [2, 3], "n_steps_2d": [3], "paths_2d": ["blur+contrast", "blur+shift"],
                  "n_probe": 64, "hessian_iters": 2},
        "quick": {},
        "paper": {"datasets": ["cifar10", "fashion_mnist", "mnist", "svhn"], "seeds": list(range(10)),
                  "model": "resnet18", "width": 64, "resolution": 0, "n_train": 0, "n_val": 5000,
                  "lr": 1e-3, "lr_factors": [0.5, 2.0], "first_epochs": 0, "patience": 50,
                  "disc_max_epochs": 100, "disc_patience": 20, "blur_k": 4.0, "shift_start": 8.0,
                  "n_steps": [2, 3, 5, 10], "n_steps_2d": [2, 3, 5],
                  "paths_2d": ["blur+contrast", "blur+shift"], "hessian_iters": 20},
    },
)

REGISTRY: dict[str, Chapter] = {chapter.name: chapter for chapter in (TOOLKIT, ZAPPING)}
REGISTRY[NEGATIVE_PRETRAINING.name] = NEGATIVE_PRETRAINING

LURE = Chapter(
    experiments=("lure_stream",),
    name="lure",
    title="Learn, unlearn, relearn: mega-batch streams",
    notebook="book/lure.ipynb",
    description=(
        "Trains ResNets through an ALMA mega-batch stream of CIFAR-10 (full, buffered and no "
        "replay) with warm start (BL), Shrink & Perturb (both forms), later-layer forgetting and "
        "LURE (SNIP / Fisher / magnitude / random), with the reset-fraction and criterion "
        "ablations, long streams, architectures, robustness (procedural corruptions, PGD-10, "
        "noisy labels), calibration, flatness and an lr × wd grid (zaplib.stream)."
    ),
    params={
        "seeds": (list[int], [0, 1, 2], "training seeds of every table"),
        "dataset": (str, "cifar10", "stream dataset (cifar10 is the JPEG-lossy copy offline)",
                    ("cifar10", "fashion_mnist")),
        "model": (str, "resnet18", "network of every table except the architecture one",
                  ("resnet18", "resnet50", "wide_resnet50_2", "vgg16_bn")),
        "width": (int, 8, "ResNet-18 width (64 = the standard ResNet-18)"),
        "n_pool": (int, 900, "training images fed to the stream, a fixed random subset (0 = all 50,000)"),
        "n_test": (int, 2000, "test images, a fixed random subset (0 = all 10,000)"),
        "n_megabatches": (int, 3, "mega-batches of the stream (paper: 8)"),
        "short_megabatches": (int, 3, "mega-batches of Tables 6, 8, noisy labels and the lr × wd grid (paper: 4)"),
        "epochs": (int, 8, "epochs per mega-batch (paper: 50)"),
        "lr_milestones": (list[int], [3, 6], "epochs where the lr drops ×0.1 (paper: 20, 40)"),
        "batch_size": (int, 64, "mini-batch size"),
        "lr": (float, 0.1, "SGD learning rate at the start of every mega-batch"),
        "weight_decay": (float, 1e-4, "SGD weight decay"),
        "buffer_size": (int, 9, "buffered replay: examples added to the buffer per mega-batch (paper: 186 of 5,625; code: 182)"),
        "score_size": (int, 100, "images LURE scores saliency on (code: one batch of 100)"),
        "methods": (list[str], ["bl", "sp", "sp_fresh", "llf", "lure"],
                    "methods of Table 1 (zaplib.stream.VARIANTS)"),
        "replays": (list[str], ["none", "buffered"], "replay modes besides full (Tables 2–3)"),
        "replay_methods": (list[str], ["bl", "lure"],
                           "methods of Tables 2–4 and 6"),
        "reset_fractions": (list[float], [0.05, 0.2, 0.4], "LURE reset fractions (Table 7)"),
        "criteria": (list[str], ["snip", "fisher", "magnitude", "random"],
                     "LURE importance criteria (Table 8: snip, fisher, magnitude; random is our control)"),
        "ablation_seeds": (list[int], [0, 1, 2], "seeds of Tables 7–8 and of the noisy-label runs"),
        "long_megabatches": (list[int], [], "stream lengths of Table 4 (paper: 25, 50, 100)"),
        "architectures": (list[str], [], "networks of Table 6 (paper: resnet18, resnet50, wide_resnet50_2, vgg16_bn)"),
        "label_noise": (list[float], [0.2, 0.4], "symmetric label-noise rates (§6.3)"),
        "noise_methods": (list[str], ["bl", "lure"], "methods trained under label noise"),
        "lr_grid": (list[float], [0.1, 0.03], "learning rates of the sensitivity grid (§7.3)"),
        "wd_grid": (list[float], [1e-4, 1e-3], "weight decays of the sensitivity grid (§7.3)"),
        "grid_methods": (list[str], ["bl", "lure"], "methods of the lr × wd grid"),
        "grid_seeds": (list[int], [0], "seeds of the lr × wd grid"),
        "corruptions": (list[str], ["all"], "procedural corruptions of the Table 1 models ('all' = 13)"),
        "corruption_severities": (list[int], [1, 2, 3, 4, 5], "corruption severities"),
        "n_corruption": (int, 100, "test images per corruption and severity"),
        "pgd_eps": (list[float], [1.0, 2.0, 4.0], "PGD-10 L∞ radii, in 1/255 units"),
        "n_pgd": (int, 100, "test images attacked"),
        "weight_noise": (list[float], [0.01, 0.02, 0.04], "σ of Gaussian noise on every parameter (§7.2)"),
        "weight_noise_repeats": (int, 2, "noise draws per σ"),
        "n_weight_noise": (int, 250, "training (and test) images evaluated per draw"),
        "workers": (int, 2, "local worker processes (one torch thread each)"),
    },
    profiles={
        "smoke": {"seeds": [0], "width": 4, "n_pool": 300, "n_test": 200, "n_megabatches": 2,
                  "short_megabatches": 2, "epochs": 1, "lr_milestones": [], "buffer_size": 10,
                  "methods": ["bl", "lure"], "replays": ["none"], "replay_methods": ["bl", "lure"],
                  "reset_fractions": [0.2], "criteria": ["snip", "random"],
                  "label_noise": [0.4], "noise_methods": ["lure"], "lr_grid": [0.1], "wd_grid": [1e-4],
                  "ablation_seeds": [0],
                  "grid_methods": ["lure"], "corruptions": ["gaussian_noise", "jpeg"],
                  "corruption_severities": [1, 5], "n_corruption": 50, "pgd_eps": [2.0], "n_pgd": 20,
                  "weight_noise": [0.01], "weight_noise_repeats": 1, "n_weight_noise": 100},
        "quick": {},
        "paper": {"seeds": [0, 1, 2, 3, 4], "width": 64, "n_pool": 0, "n_test": 0, "n_megabatches": 8,
                  "short_megabatches": 4, "epochs": 50, "lr_milestones": [20, 40], "buffer_size": 186,
                  "methods": ["bl", "sp", "sp_paper", "sp_fresh", "llf", "lure", "lure_model_init"],
                  "reset_fractions": [0.05, 0.1, 0.2, 0.3, 0.4],
                  "replay_methods": ["bl", "sp", "llf", "lure"],
                  "criteria": ["snip", "fisher", "magnitude", "random"], "ablation_seeds": [0, 1, 2],
                  "long_megabatches": [25, 50, 100],
                  "architectures": ["resnet18", "resnet50", "wide_resnet50_2", "vgg16_bn"],
                  "label_noise": [0.2, 0.4], "noise_methods": ["bl", "sp", "llf", "lure"],
                  "lr_grid": [0.1, 0.05, 0.01, 0.005], "wd_grid": [1e-3, 5e-4, 1e-4, 5e-5],
                  "grid_seeds": [0, 1, 2], "n_corruption": 10000, "n_pgd": 1000,
                  "weight_noise_repeats": 5, "n_weight_noise": 10000},
    },
)
REGISTRY[LURE.name] = LURE

FROZEN_WEIGHTS = Chapter(
    experiments=("frozen_weights",),
    name="frozen_weights",
    title="Mutually frozen weights: weight decay, plasticity vs invariance, and resets",
    notebook="book/frozen_weights.ipynb",
    description=(
        "Pre-trains plain ReLU nets (no normalisation) with SGD and weight decay on clean or blurred "
        "images, tracks frozen / mutually frozen / plain sparse weights, probes their update "
        "dynamics when retrained, relates input sensitivity to adaptability, and compares "
        "resetting the mutually frozen connections with no reset, full re-init and random or "
        "all-frozen resets across target-set sizes and domain gaps (zaplib.frozen)."
    ),
    params={
        "transfers": (list[str], ["mnist:blur4>mnist", "mnist:blur4>fashion_mnist", "mnist>fashion_mnist",
                                  "fashion_mnist:blur4>fashion_mnist"],
                      "SOURCE>TARGET pairs; a task is mnist | fashion_mnist | cifar10, ':blurK' blurs it"),
        "model": (str, "mlp", "plain ReLU net without normalisation", ("mlp", "small_cnn")),
        "width": (int, 128, "hidden units per layer (MLP) or first-conv channels (SmallCNN)"),
        "depth": (int, 2, "hidden layers of the MLP"),
        "seeds": (list[int], [0, 1, 2], "seeds; each seed is trained with every weight decay"),
        "weight_decays": (list[float], [0.0, 0.003, 0.01, 0.03, 0.06], "coupled L2 weight decays λ"),
        "lr": (float, 0.05, "SGD learning rate (pre-training and retraining)"),
        "momentum": (float, 0.9, "SGD momentum"),
        "batch_size": (int, 128, "mini-batch size"),
        "n_pretrain": (int, 8000, "pre-training images (a fixed random subset)"),
        "pretrain_epochs": (int, 15, "pre-training epochs (fixed: no early stopping)"),
        "n_target": (int, 10000, "target images at target-set fraction 1.0"),
        "n_val": (int, 1000, "validation images held out of each task's training set"),
        "n_test": (int, 2000, "test images per task"),
        "target_fractions": (list[float], [0.01, 0.1, 1.0], "target-set sizes as fractions of n_target"),
        "finetune_epochs": (float, 3.0, "retraining epochs over the target set ..."),
        "finetune_min_steps": (int, 150, "... but at least this many SGD steps"),
        "finetune_weight_decays": (list[float], [0.001, -1.0],
                                   "retraining λ: the first is the main analysis; -1 = each network's own pre-training λ"),
        "interventions": (list[str], ["none", "reset_mutual", "reset_random", "reset_frozen", "reinit"],
                          "what happens to the pre-trained net before retraining"),
        "eps": (float, 0.1, "frozen: |w| < eps · the layer's init std"),
        "n_sensitivity": (int, 200, "test images for the input sensitivity E‖∂f/∂x‖"),
        "track_fraction": (float, 1.0, "target-set fraction whose retraining is probed step by step"),
        "n_probes": (int, 12, "probes of the update dynamics (log-spaced steps)"),
        "probe_batch": (int, 512, "target images for the probed gradients"),
    },
    profiles={
        "smoke": {"transfers": ["mnist:blur4>mnist"], "width": 32, "seeds": [0],
                  "weight_decays": [0.0, 0.06], "n_pretrain": 1000, "pretrain_epochs": 2,
                  "n_target": 1000, "n_val": 200, "n_test": 500, "target_fractions": [0.1, 1.0],
                  "finetune_epochs": 1.0, "finetune_min_steps": 20, "n_sensitivity": 20,
                  "n_probes": 4, "probe_batch": 128, "finetune_weight_decays": [0.001]},
        "quick": {},
        "paper": {"transfers": ["mnist:blur4>mnist", "mnist:blur4>fashion_mnist", "mnist>fashion_mnist",
                                "fashion_mnist:blur4>fashion_mnist", "cifar10:blur4>cifar10"],
                  "model": "small_cnn", "width": 32, "seeds": [0, 1, 2, 3, 4],
                  "weight_decays": [0.0, 0.001, 0.003, 0.01, 0.03, 0.06], "n_pretrain": 60000,
                  "pretrain_epochs": 60, "n_target": 60000, "n_val": 5000, "n_test": 10000,
                  "finetune_epochs": 30.0, "finetune_min_steps": 1000, "n_sensitivity": 1000},
    },
)
REGISTRY[FROZEN_WEIGHTS.name] = FROZEN_WEIGHTS


def get_chapter(name: str, registry: dict[str, Chapter] | None = None) -> Chapter:
    """The chapter called ``name``; a ``KeyError`` listing the known chapters otherwise."""
    registry = REGISTRY if registry is None else registry
    try:
        return registry[name]
    except KeyError:
        raise KeyError(f"unknown chapter {name!r}; known chapters: {', '.join(registry)}") from None
