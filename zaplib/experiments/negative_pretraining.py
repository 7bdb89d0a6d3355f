"""Chapter "The negative pre-training effect and three ways to fix it"
(``book/negative_pretraining.ipynb``; Zilly et al. 2021, ``shared/papers/negative-pretraining-effect.txt``).

This module holds the chapter's parameters and profiles (:data:`CHAPTER`) and its claims
(:data:`CLAIMS`), declared before the runs that test them (issue 12). The mechanisms — learning
paths as data, the loop that follows one — live in :mod:`zaplib.learning_paths`.

**Design of the claims.** The unit of replication is the seed. Within a seed every condition
starts from the same network (``models.build`` seeded by the run's seed), the same train /
validation / test split (``data_seed`` 0) and, step for step, the same batch order
(``samplers.generator(seed, "step", i, "train")``), so every comparison is *paired by seed*
(paired t; Wilcoxon signed-rank as robustness). The metric is the paper's y-axis, the final test
loss on clean images (nats), unless a claim says otherwise. Conditions are named by the *arms*
below, not by the profile's learning-rate labels, so the declarations do not depend on a profile.
"""
from __future__ import annotations

from .. import report
from ..chapters import Chapter

EXPERIMENT = "negative_pretraining"

# ---------------------------------------------------------------------------------------------
# Arms: the conditions the claims compare (each maps onto one (group, condition) of the plan)
# ---------------------------------------------------------------------------------------------
CLEAN_ONLY = "clean only"                          # baseline: the clean target task only
BLUR_CLEAN = "blur → clean"                        # A at η → η, identical to C's [No, No]
CLEAN_CLEAN = "clean → clean"                      # own control: the first phase on clean images
HIGHER_RATE_TASK2 = "η → higher η on task 2"       # A: default rate, then lr·max(lr_factors) > lr
HIGHER_RATE_BOTH = "higher η on both tasks"        # A: lr·max(lr_factors) throughout
LOWER_RATE_TASK2 = "η → lower η on task 2"         # A: default rate, then lr·min(lr_factors) < lr
BIAS_NO_NO, BIAS_YES_NO, BIAS_YES_YES = "[No, No]", "[Yes, No]", "[Yes, Yes]"  # C: before [task 1, task 2]


def finest(kind: str) -> str:
    """The arm of the finest 1-D path of ``kind`` (N = max(n_steps) tasks)."""
    return f"{kind} path, N = max"


def jump(kind: str) -> str:
    """The arm of the plain jump of ``kind`` (N = 2: source, then target)."""
    return f"{kind} path, N = 2"


LOSS = "test_loss"                    # final loss on the clean test set (nats), the paper's y-axis
BEST_EPOCH = "last_best_epoch"        # epochs of the clean task to its best validation loss
TRAIN_LOSS = "last_train_loss_at_best"  # training loss of the clean task at that epoch (nats)

# §7 "not an optimisation issue" is a claim of *no* effect, so it needs an equivalence margin,
# declared here before any run: ±0.05 nats of mean training cross-entropy. A change of 0.05 nats
# is a factor e^0.05 ≈ 1.05 in the geometric-mean probability given to the true label, i.e. the
# two networks fit their training set to within 5 % of each other — "the same level" in the
# paper's words — whatever the absolute level the short quick budget reaches.
TRAIN_LOSS_MARGIN = 0.05

_loss = dict(metric=LOSS, paired=True, unit="seed", unit_label=" nats", digits=3)

CLAIMS = [
    # --- primary: the effect and one fix of each intervention (one Holm family) --------------
    report.Claim("deficit", "Blur pre-training raises the final clean test loss (blur → clean vs clean only)",
                 "clearly above the baseline on CIFAR-10 (Figs. 3, 6)", a=BLUR_CLEAN, b=CLEAN_ONLY,
                 direction=+1, primary=True, **_loss),
    report.Claim("fix_A_higher_rate", "A: a higher rate on the clean task lowers it (η → higher η vs η → η)",
                 "lower; at 1e-3 → 2e-3 below the baseline (Fig. 3)", a=HIGHER_RATE_TASK2, b=BLUR_CLEAN,
                 direction=-1, primary=True, requires=("deficit",), **_loss),
    report.Claim("fix_B_finer_blur", "B: a finer blur path lowers it (N = max vs N = 2)",
                 "removes most of the effect (Fig. 4)", a=finest("blur"), b=jump("blur"),
                 direction=-1, primary=True, requires=("deficit",), **_loss),
    report.Claim("fix_C_bias_both", "C: a bias reset before both tasks lowers it ([Yes, Yes] vs [No, No])",
                 "clear decrease on CIFAR-10 (Fig. 6)", a=BIAS_YES_YES, b=BIAS_NO_NO,
                 direction=-1, primary=True, requires=("deficit",), **_loss),
    # --- exploratory -----------------------------------------------------------------------
    # Our own control, not a claim of the paper: exploratory so that the primary family is the
    # paper's effect and its three fixes.
    report.Claim("control_needs_blur", "Own control: the deficit needs the blur (blur → clean vs clean → clean)",
                 "— (not tested in the paper)", a=BLUR_CLEAN, b=CLEAN_CLEAN, direction=+1, **_loss),
    report.Claim("A_changing_beats_constant",
                 "A: changing the rate beats a constant high rate (η → higher η vs higher η on both)",
                 "better in expectation, consistently across datasets (§4)", a=HIGHER_RATE_TASK2,
                 b=HIGHER_RATE_BOTH, direction=-1, requires=("deficit",), **_loss),
    report.Claim("A_lower_rate_worse", "A: a lower rate on the clean task raises it (η → lower η vs η → η)",
                 "higher loss at lower rates (Fig. 3)", a=LOWER_RATE_TASK2, b=BLUR_CLEAN,
                 direction=+1, **_loss),
    report.Claim("B_finer_contrast", "B: a finer contrast path lowers it (N = max vs N = 2)",
                 "removes most of the effect (Fig. 4)", a=finest("contrast"), b=jump("contrast"),
                 direction=-1, **_loss),
    report.Claim("B_finer_shift", "B: a finer shift path lowers it (N = max vs N = 2)",
                 "improves further on an already good jump (Fig. 4)", a=finest("shift"), b=jump("shift"),
                 direction=-1, **_loss),
    report.Claim("C_bias_task1_only", "C: a bias reset before the blurred task only lowers it ([Yes, No] vs [No, No])",
                 "removes the effect on CIFAR-10 (Fig. 6)", a=BIAS_YES_NO, b=BIAS_NO_NO,
                 direction=-1, requires=("deficit",), **_loss),
    report.Claim("C_longer_training",
                 "C: a bias reset lengthens the clean task to its best validation epoch ([Yes, Yes] vs [No, No])",
                 "+44 % epochs on CIFAR-10 (§6)", metric=BEST_EPOCH, a=BIAS_YES_YES, b=BIAS_NO_NO,
                 direction=+1, paired=True, unit="seed", unit_label=" epochs", digits=1),
    report.Claim("S7_train_loss_same",
                 "§7: not an optimisation issue — the training loss at the best epoch is the same after blur "
                 f"(blur → clean vs clean only, within ±{TRAIN_LOSS_MARGIN} nats)",
                 "training loss reaches the same level (§7)", metric=TRAIN_LOSS, a=BLUR_CLEAN, b=CLEAN_ONLY,
                 kind="equivalence", margin=TRAIN_LOSS_MARGIN, paired=True, unit="seed",
                 unit_label=" nats", digits=3),
]
"""Every claim the chapter tests. Preconditions (measured at run time, see the notebook):
``deficit`` needs a baseline that learns (clean test accuracy at least twice chance); the C
claims need a bias reset that changes at least one entry; ``B_finer_contrast`` needs a contrast
jump that ends above the baseline (there must be a contrast deficit to remove)."""

CHAPTER = Chapter(
    experiments=(EXPERIMENT,),
    name="negative_pretraining",
    title="The negative pre-training effect and three ways to fix it",
    notebook="book/negative_pretraining.ipynb",
    description=(
        "Learning paths over blur, contrast and shift: pre-train on corrupted images, then train on "
        "clean ones, against a clean-only baseline; interventions A (learning rates), B "
        "(discretising the path, 1-D and 2-D) and C (bias reset), appendix statistics and a "
        "sharpness probe (zaplib.learning_paths)."
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
