"""Chapter "Learn, unlearn, relearn" (``book/lure.ipynb``): its claims, parameters and profiles.

The chapter reproduces *Learn, Unlearn and Relearn* (LURE; Ramkumar et al. 2023) on an ALMA
mega-batch stream (:mod:`zaplib.stream` holds the stream and the methods).

**Design.** The unit of replication is the training seed (column ``seed``). Every method of a seed
trains on the same stream (one shuffle by ``order_seed``, the same for every run) from the same
initialisation (:func:`zaplib.models.build` seeded by ``seed``), so the arms of every claim are
*paired* by seed: paired t on the per-seed differences, Wilcoxon as robustness
(:mod:`zaplib.report`).
"""
from __future__ import annotations

import math

import pandas as pd

from .. import report
from ..chapters import Chapter

# ---------------------------------------------------------------------------------------------
# The claims, declared before the runs that test them (zaplib.report has the verdict rule)
# ---------------------------------------------------------------------------------------------
#: The regime every claim of the paper was measured in: networks trained to convergence on each
#: mega-batch (50 epochs per mega-batch, LURE App. A.2), the setting in which Ash & Adams (2020)
#: describe the warm-start penalty that LURE fixes. A ResNet-18 trained that way fits CIFAR-10's
#: training images to well above 95 %; 0.90 is a lenient floor below which the network is plainly
#: still learning, so a reset mainly throws progress away and no claim about fixing a warm start
#: can be tested. Measured as BL's training accuracy at the carried epoch of the last mega-batch
#: of the full-replay stream (the ``megabatches`` table), mean over seeds.
REGIME_MIN_TRAIN_ACC = 0.90
REGIME = "BL fits its last mega-batch (training accuracy at the carried epoch, full replay)"


def _versus(cid: str, text: str, paper: str, b: str, metric: str = "test_acc", a: str = "lure",
            direction: int = +1, primary: bool = False, condition: str = "variant",
            **display) -> report.Claim:
    """A paired-by-seed claim ``a`` vs ``b`` on ``metric`` (accuracies in points by default)."""
    display = {"scale": 100.0, "unit_label": " pts", "digits": 2, **display}
    return report.Claim(cid, text, paper, metric=metric, a=a, b=b, direction=direction,
                        unit="seed", condition=condition, paired=True, primary=primary, **display)


#: Every claim the chapter checks. Primary (one Holm family): LURE's Table 1 comparisons under full
#: replay and its largest gain, without replay. The rest are exploratory. Every claim carries the
#: regime precondition (:data:`REGIME_MIN_TRAIN_ACC`, see :func:`preconditions`).
CLAIMS: list[report.Claim] = [
    # Table 1, full replay, after the last mega-batch
    _versus("lure_vs_bl", "Full replay: LURE beats BL (warm start) in test accuracy",
            "+3.85 (93.32 vs 89.47)", "bl", primary=True),
    _versus("lure_vs_sp", "Full replay: LURE beats S&P (LURE code: 0.3θ + 0.001ε)",
            "+1.56 (93.32 vs 91.76)", "sp", primary=True),
    _versus("lure_vs_llf", "Full replay: LURE beats LLF (layer3, layer4, fc)",
            "+1.89 (93.32 vs 91.43)", "llf", primary=True),
    _versus("lure_cer", "Full replay: LURE makes fewer cumulative test errors (CER) than BL",
            "−2138 (9622 vs 11760)", "bl", metric="cer", direction=-1, primary=True,
            scale=1.0, unit_label=" errors", digits=0),
    # Table 3: the paper's largest gain
    _versus("lure_no_replay", "No replay: LURE beats BL in test accuracy",
            "+8.10 (88.96 vs 80.86)", "bl", primary=True),
    # exploratory: the rest of Tables 1-3
    _versus("lure_gap", "Full replay: LURE narrows the generalisation gap (vs BL)",
            "−2.38 (6.60 vs 8.98)", "bl", metric="gen_gap", direction=-1),
    _versus("lure_ece", "Full replay: LURE is better calibrated than BL (lower ECE)",
            "lower ECE (Fig. 4)", "bl", metric="ece", direction=-1),
    _versus("lure_vs_sp_paper", "Full replay: LURE beats S&P (LURE text: 0.4θ + 0.001ε)",
            "+1.56 (93.32 vs 91.76)", "sp_paper"),
    _versus("lure_vs_sp_fresh", "Full replay: LURE beats S&P (Ash & Adams: 0.4θ + 0.1θ_fresh)",
            "S&P not in this form in the paper", "sp_fresh"),
    _versus("lure_buffered", "Buffered replay: LURE beats BL in test accuracy",
            "+1.79 (89.80 vs 88.01)", "bl"),
    # §6 robustness of the Table 1 models
    _versus("lure_corruptions", "LURE is more robust to corruptions than BL (mean corruption accuracy)",
            "+6 (74 vs 68 %, CIFAR-10-C)", "bl", metric="acc"),
    _versus("lure_pgd", "LURE is more robust to PGD-10 than BL (accuracy at the largest ε)",
            "higher (Fig. 3)", "bl", metric="acc"),
    _versus("lure_noise_20", "Label noise 20 %: LURE beats BL in clean test accuracy",
            "+5.91 (86.79 vs 80.88)", "bl"),
    _versus("lure_noise_40", "Label noise 40 %: LURE beats BL in clean test accuracy",
            "+4.67 (83.80 vs 79.13)", "bl"),
    # §7.2 flatness: accuracy lost on the training pool under Gaussian weight noise
    _versus("lure_flatness", "LURE sits in a flatter minimum (smaller accuracy drop under weight noise at the largest σ)",
            "smaller drop (Fig. 5)", "bl", metric="drop", direction=-1),
    # Table 7: how much to forget (the reset fraction, as a number, is the condition)
    _versus("fraction_20_vs_5", "Reset fraction 20 % beats 5 %", "+4.48 (94.32 vs 89.84)",
            0.05, a=0.2, condition="reset_fraction"),
    _versus("fraction_20_vs_10", "Reset fraction 20 % beats 10 %", "+2.51 (94.32 vs 91.81)",
            0.1, a=0.2, condition="reset_fraction"),
    _versus("fraction_20_vs_30", "Reset fraction 20 % beats 30 %", "+3.59 (94.32 vs 90.73)",
            0.3, a=0.2, condition="reset_fraction"),
    _versus("fraction_20_vs_40", "Reset fraction 20 % beats 40 %", "+3.53 (94.32 vs 90.79)",
            0.4, a=0.2, condition="reset_fraction"),
    # Table 8: by which score (random is our control: the paper only mentions it)
    _versus("snip_vs_fisher", "SNIP beats the Fisher criterion", "+1.00 (93.73 vs 92.73)",
            "fisher", a="snip", condition="criterion"),
    _versus("snip_vs_magnitude", "SNIP beats the magnitude criterion", "+1.55 (93.73 vs 92.18)",
            "magnitude", a="snip", condition="criterion"),
    _versus("snip_vs_random", "SNIP beats re-drawing randomly chosen weights", "not reported",
            "random", a="snip", condition="criterion"),
]


def preconditions(megabatches: pd.DataFrame) -> list[report.Precondition]:
    """The regime check every claim carries: BL's training accuracy at the carried epoch of the
    last mega-batch, mean over seeds, from the ``megabatches`` table of the full-replay runs
    (columns ``method``, ``replay``, ``seed``, ``megabatch``, ``train_acc``) — at least
    :data:`REGIME_MIN_TRAIN_ACC`. A missing BL run measures NaN, which fails."""
    bl = megabatches[(megabatches["method"] == "bl") & (megabatches["replay"] == "full")]
    last = bl[bl["megabatch"] == bl["megabatch"].max()] if len(bl) else bl
    measured = float(last.groupby("seed")["train_acc"].mean().mean()) if len(last) else math.nan
    return [report.Precondition.at_least(REGIME, measured, REGIME_MIN_TRAIN_ACC)]

CHAPTER = Chapter(
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
