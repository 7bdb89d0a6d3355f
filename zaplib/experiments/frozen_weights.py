"""Chapter "Mutually frozen weights" (``book/frozen_weights.ipynb``): parameters, profiles and claims.

Paper: Zilly, Achille, Censi & Frazzoli, *On Plasticity, Invariance, and Mutually Frozen Weights in
Sequential Task Learning*, NeurIPS 2021 (only the abstract and introduction are available; every
protocol is ours, see :mod:`zaplib.frozen`).

**Design.** The unit of replication is the **seed**: model (seed s, λ) starts from the same
initial weights and sees the same batches for every weight decay λ and every source task, and every
intervention retrains a copy of the same pre-trained network on the same batches. Comparisons
across λ, across source tasks, across interventions and across targets of one source are therefore
**paired by seed**. Correlations are across **networks** (one per seed × λ × source task); the
networks of one seed share their initial weights, so they are not fully independent and the
correlation intervals are somewhat optimistic (all correlation claims are exploratory for that
reason).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import frozen, metrics, report
from ..chapters import Chapter
from ..store import Store, experiment, sweep

EXPERIMENT = "frozen_weights"
SAME_DECAY = frozen.SAME_DECAY  # a retraining λ of −1: each network keeps its pre-training λ
#: The chapter parameters that make up a run's config (besides ``source`` and ``targets``).
RUN_KEYS = ("model", "width", "depth", "seeds", "weight_decays", "lr", "momentum", "batch_size",
            "n_pretrain", "pretrain_epochs", "n_target", "n_val", "n_test", "target_fractions",
            "finetune_epochs", "finetune_min_steps", "interventions", "eps", "n_sensitivity",
            "track_fraction", "n_probes", "probe_batch")


def configs(params: dict, finetune_weight_decay: float | None = None) -> list[dict]:
    """One config per pre-training task of ``params["transfers"]`` (``"SOURCE>TARGET"``), with the
    list of its targets; every other key is copied from the chapter's parameters (``profile`` is
    not part of a run's identity).

    ``finetune_weight_decay`` (default: the first of ``params["finetune_weight_decays"]``) is the
    λ of every retraining; :data:`SAME_DECAY` (−1) retrains each network with its own pre-training
    λ and is then left out of the config, so such runs keep the hash they had before the option
    existed."""
    by_source: dict[str, list[str]] = {}
    for transfer in params["transfers"]:
        source, target = frozen.parse_transfer(transfer)
        by_source.setdefault(source, [])
        if target not in by_source[source]:
            by_source[source].append(target)
    shared = {k: (list(params[k]) if isinstance(params[k], tuple) else params[k]) for k in RUN_KEYS}
    if finetune_weight_decay is None:
        finetune_weight_decay = list(params.get("finetune_weight_decays", [SAME_DECAY]))[0]
    if finetune_weight_decay != SAME_DECAY:
        if finetune_weight_decay < 0:
            raise ValueError(f"finetune_weight_decay must be >= 0 or {SAME_DECAY}, got {finetune_weight_decay}")
        shared["finetune_weight_decay"] = float(finetune_weight_decay)
    return [{"source": source, "targets": targets, **shared} for source, targets in by_source.items()]


# version 2: seeds from samplers.generator, inits via models.build, data via data.subset (issue 12)
# version 3: the models table records source validation accuracy (the reset λ is chosen on it)
@experiment(EXPERIMENT, version=3)
def run(config: dict) -> dict:
    """One stored run: pre-train on ``config["source"]`` (every seed × weight decay), then retrain
    on each target for every target-set fraction × intervention (:func:`zaplib.frozen.pretrain_and_retrain`,
    whose docstring describes the four tables ``pretrain``, ``models``, ``finetune``, ``dynamics``)."""
    return frozen.pretrain_and_retrain(config)

CHAPTER = Chapter(
    bounds={  # checked before anything runs (zaplib.runner)
        "width": "> 0",
        "depth": "> 0",
        "weight_decays": ">= 0",
        "lr": "> 0",
        "momentum": "[0, 1)",
        "batch_size": "> 0",
        "n_pretrain": "> 0",
        "pretrain_epochs": "> 0",
        "n_target": "> 0",
        "n_val": "> 0",
        "n_test": "> 0",
        "target_fractions": "(0, 1]",
        "finetune_epochs": "> 0",
        "eps": "> 0",
        "n_sensitivity": "> 0",
        "track_fraction": "(0, 1]",
        "n_probes": "> 0",
        "probe_batch": "> 0",
    },
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


# ---------------------------------------------------------------------------------------------
# Claims, declared before the runs that test them (zaplib.report gives the verdicts)
# ---------------------------------------------------------------------------------------------
#: The resets are tested at one pre-training λ: the largest one whose mean source test accuracy is at
#: most this far below λ = 0 (chosen on the *source* task, never on the tested target effect). Why
#: 5 points: the abstract's claim is about pre-trained networks one would transfer from; a network
#: that weight decay has cost more than 5 points of its own task is not such a network (at λ = 0.06
#: the quick runs lost 15 points, 78.9 % vs 93.8 %, and any reset that moves such a network back
#: towards a fresh one "helps"), while 5 points is several times the seed-to-seed spread of the
#: source accuracy (about 1 point), so the rule does not exclude a λ for noise alone.
RESET_MAX_SOURCE_COST = 0.05
#: A reset that re-draws fewer than 1 % of the weights is close to a no-op: a claim about what it
#: does is not testable there.
RESET_MIN_FRACTION = 0.01
#: The state-of-the-art claim is about the full Fashion-MNIST training set.
FASHION_MNIST_FULL = 60000

_PTS = {"scale": 100.0, "unit_label": " pts", "digits": 1}  # fractions shown as percentage points
_RESET_NOTE = ("at the reset λ (largest λ costing ≤ 5 points of source accuracy); needs the reset to "
               "change ≥ 1 % of the weights")

CLAIMS = [
    # ---- primary: one Holm family of five
    report.Claim(
        id="wd_freezes", primary=True,
        text="Weight decay makes weights mutually frozen (largest λ vs λ = 0, % of all weights, "
             "averaged over source tasks)",
        paper="qualitative (abstract, sentence 3)", metric="mutually_frozen_frac",
        a="largest λ", b="λ = 0", direction=+1, unit="seed", paired=True, shared="source", **_PTS),
    report.Claim(
        id="blur_freezes_more", primary=True,
        text="Blurred pre-training leaves more weights mutually frozen than clean pre-training "
             "(largest λ, same dataset)",
        paper="qualitative (Fig. 1 context)", metric="mutually_frozen_frac",
        a="blurred", b="clean", direction=+1, unit="seed", paired=True, shared="dataset", **_PTS),
    report.Claim(
        id="mutual_stays_frozen", primary=True,
        text="Mutually frozen weights stay frozen through retraining, plain sparse ones recover "
             "(share still frozen at the end, layers ≥ 2, largest λ, averaged over transfers)",
        paper="qualitative (introduction)", metric="still_frozen",
        a="mutually_frozen", b="plain_sparse", direction=+1, unit="seed", paired=True,
        shared="transfer", requires=("wd_freezes",), **_PTS),
    report.Claim(
        id="reset_helps_small_gap", primary=True,
        text="Resetting the mutually frozen weights improves transfer, small domain gap "
             f"(blurred → clean, 100 % of target; {_RESET_NOTE})",
        paper="qualitative (abstract, sentence 6)", metric="test_acc",
        a="reset_mutual", b="none", direction=+1, unit="seed", paired=True, **_PTS),
    report.Claim(
        id="reset_helps_large_gap", primary=True,
        text="Resetting the mutually frozen weights improves transfer, large domain gap "
             f"(another dataset, 100 % of target; {_RESET_NOTE})",
        paper="qualitative (abstract, sentence 6)", metric="test_acc",
        a="reset_mutual", b="none", direction=+1, unit="seed", paired=True, **_PTS),
    # ---- exploratory: unadjusted p, labelled
    report.Claim(
        id="frozen_hurts_retraining", kind="correlation",
        text="Retraining is worse the more weights are mutually frozen (Pearson r across networks, "
             "frozen fraction vs target accuracy, centred per transfer; networks of one seed share "
             "an init)",
        paper="qualitative (introduction)", x="mutually_frozen_frac", y="adaptability",
        direction=-1, unit="network"),
    report.Claim(
        id="sensitivity_adaptability", kind="correlation",
        text="Input sensitivity correlates with adaptability (Pearson r across networks, centred per "
             "transfer; networks of one seed share an init)",
        paper="qualitative (abstract, sentence 5)", x="sensitivity", y="adaptability",
        direction=+1, unit="network"),
    report.Claim(
        id="sensitivity_adaptability_within_decay", kind="correlation",
        text="… also among networks with the same weight decay (centred per transfer and λ)",
        paper="— (our confounder check)", x="sensitivity", y="adaptability",
        direction=+1, unit="network"),
    report.Claim(
        id="reset_beats_random_small_gap",
        text="Resetting the mutually frozen weights beats resetting as many random weights, small gap "
             f"(100 % of target; {_RESET_NOTE})",
        paper="— (our control)", metric="test_acc", a="reset_mutual", b="reset_random",
        direction=+1, unit="seed", paired=True, requires=("reset_helps_small_gap",), **_PTS),
    report.Claim(
        id="reset_beats_random_large_gap",
        text="Resetting the mutually frozen weights beats resetting as many random weights, large gap "
             f"(100 % of target; {_RESET_NOTE})",
        paper="— (our control)", metric="test_acc", a="reset_mutual", b="reset_random",
        direction=+1, unit="seed", paired=True, requires=("reset_helps_large_gap",), **_PTS),
    report.Claim(
        id="benefit_needs_data_small_gap",
        text="The reset's benefit needs enough target data, small gap (gain at 100 % − gain at the "
             "smallest target set)",
        paper="qualitative (introduction: 'as long as sufficiently many samples are available')",
        metric="reset_gain", a="full", b="few", direction=+1, unit="seed", paired=True,
        requires=("reset_helps_small_gap",), **_PTS),
    report.Claim(
        id="benefit_needs_data_large_gap",
        text="The reset's benefit needs enough target data, large gap (gain at 100 % − gain at the "
             "smallest target set)",
        paper="qualitative (introduction)", metric="reset_gain", a="full", b="few", direction=+1,
        unit="seed", paired=True, requires=("reset_helps_large_gap",), **_PTS),
    # The abstract says the benefit "depends on ... the difference of the pre-training and target
    # domains" without a direction. We test the direction its sentence 4 suggests (frozen weights
    # hinder tasks "that require significantly different features", so the reset should help more
    # when the gap is large) and say so in the claim; the opposite verdict means the other direction.
    report.Claim(
        id="benefit_larger_for_large_gap_few",
        text="The reset's benefit is larger for the large domain gap than for the small one "
             "(our direction; smallest target set, same pre-trained networks)",
        paper="depends on the gap; direction not stated", metric="reset_gain", a="large", b="small",
        direction=+1, unit="seed", paired=True, **_PTS),
    report.Claim(
        id="benefit_larger_for_large_gap_full",
        text="The reset's benefit is larger for the large domain gap than for the small one "
             "(our direction; 100 % of target, same pre-trained networks)",
        paper="depends on the gap; direction not stated", metric="reset_gain", a="large", b="small",
        direction=+1, unit="seed", paired=True, **_PTS),
    report.Claim(
        id="fashion_mnist_sota",
        text="Resetting the mutually frozen weights gives higher Fashion-MNIST test accuracy than no "
             "reset, each arm at the (transfer, λ) its own validation accuracy picks (the paper claims "
             "state of the art, which this does not test; needs the full training set and a reset "
             "that changes ≥ 1 % of the weights)",
        paper="SOTA (number not in the abstract; large nets ≈ 96 %)", metric="test_acc",
        a="reset_mutual", b="none", direction=+1, unit="seed", paired=True, **_PTS),
]


# ---------------------------------------------------------------------------------------------
# The chapter's tables: loading, transfers, selections
# ---------------------------------------------------------------------------------------------
def regime_name(decay: float) -> str:
    """How a retraining λ reads in tables: "common λ = 0.001" or "own pre-training λ"."""
    return "own pre-training λ" if decay == SAME_DECAY else f"common λ = {decay:g}"


def transfer_name(source: str, target: str) -> str:
    """``"mnist:blur4 → mnist"``: how a transfer reads in tables and figures."""
    return f"{source} → {target}"


@dataclass
class Runs:
    """The chapter's stored runs and their tables, every retraining regime concatenated.

    ``pretrain`` and ``models`` come from the main regime's runs (pre-training does not depend on the
    retraining λ); ``finetune`` and ``dynamics`` carry the columns ``transfer`` and ``regime``;
    ``main_regime`` names the regime of the main analysis (the first retraining λ)."""

    stored: dict[float, list]
    pretrain: pd.DataFrame
    models: pd.DataFrame
    finetune: pd.DataFrame
    dynamics: pd.DataFrame
    main_regime: str

    @property
    def main_finetune(self) -> pd.DataFrame:
        return self.finetune[self.finetune.regime == self.main_regime]

    @property
    def main_dynamics(self) -> pd.DataFrame:
        return self.dynamics[self.dynamics.regime == self.main_regime]

    @property
    def run_ids(self) -> str:
        return ", ".join(run.path.name[:8] for runs in self.stored.values() for run in runs)


def load(params: dict, store: Store) -> Runs:
    """Every run of the chapter from ``store`` (computed where missing), one sweep per retraining λ
    of ``params["finetune_weight_decays"]``."""
    decays = list(params["finetune_weight_decays"])
    stored = {decay: sweep(run, configs(params, decay), store=store) for decay in decays}

    def regime_table(name: str, decay: float) -> pd.DataFrame:
        frame = pd.concat([r[name] for r in stored[decay]], ignore_index=True)
        frame["transfer"] = [transfer_name(s, t) for s, t in zip(frame.source, frame.target)]
        frame["regime"] = regime_name(decay)
        return frame

    main = decays[0]
    return Runs(stored=stored,
                pretrain=pd.concat([r["pretrain"] for r in stored[main]], ignore_index=True),
                models=pd.concat([r["models"] for r in stored[main]], ignore_index=True),
                finetune=pd.concat([regime_table("finetune", d) for d in decays], ignore_index=True),
                dynamics=pd.concat([regime_table("dynamics", d) for d in decays], ignore_index=True),
                main_regime=regime_name(main))


def is_same_dataset(transfer: str) -> bool:
    """Whether a transfer ``"SOURCE → TARGET"`` stays on one dataset (e.g. blurred → clean MNIST)."""
    source, target = transfer.split(" → ")
    return source.split(":")[0] == target.split(":")[0]


def gap_transfers(transfers: Sequence[str]) -> tuple[str, str]:
    """(small gap, large gap) among ``transfers`` (``"SOURCE → TARGET"``): small = same dataset
    (blurred → clean), large = another dataset; preferably two transfers from the same source, so
    that they retrain the same pre-trained networks and are paired by seed. When one kind is
    missing, the other stands in (and the gap comparison is then not run)."""
    same = [t for t in transfers if is_same_dataset(t)]
    cross = [t for t in transfers if not is_same_dataset(t)]
    for small in same:
        for large in cross:
            if small.split(" → ")[0] == large.split(" → ")[0]:
                return small, large
    small = same[0] if same else transfers[0]
    return small, (cross[0] if cross else small)


def source_accuracy_cost(models: pd.DataFrame, source: str) -> pd.Series:
    """Per pre-training λ: how much source *validation* accuracy (mean over seeds) the networks
    pre-trained on ``source`` lose against the smallest λ (λ = 0 in every profile). Positive = a
    loss. Validation, never test: the λ it selects is where claims are then tested."""
    by_decay = models[models.source == source].groupby("weight_decay").source_val_acc.mean().sort_index()
    return by_decay.iloc[0] - by_decay


def reset_decay(models: pd.DataFrame, source: str, max_cost: float = RESET_MAX_SOURCE_COST) -> float:
    """The pre-training λ at which the resets are tested for networks pre-trained on ``source``: the
    largest λ whose mean source validation accuracy is at most ``max_cost`` below λ = 0 (chosen on
    the source task's validation split only, never on the target effect or a test split; see
    :data:`RESET_MAX_SOURCE_COST`)."""
    cost = source_accuracy_cost(models, source)
    return float(cost[cost <= max_cost].index.max())


def accuracies(finetune: pd.DataFrame) -> pd.DataFrame:
    """Target test accuracy after retraining, one row per network × transfer × target-set fraction
    (× regime when present), one column per intervention."""
    index = [c for c in ("regime", "source", "target", "transfer", "model", "seed", "weight_decay", "fraction")
             if c in finetune.columns]
    return finetune.pivot_table(index=index, columns="intervention", values="test_acc").reset_index()


def adaptability(finetune: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """:func:`accuracies` (main regime) joined with each network's properties before retraining:
    its fractions, source accuracy, and ``sensitivity`` = input sensitivity on the target's images."""
    acc = accuracies(finetune.drop(columns="regime", errors="ignore"))
    joined = acc.merge(models.drop(columns=["seed", "weight_decay"]), on=["source", "model"])
    joined["sensitivity"] = [row[f"sensitivity[{row.target}]"] for _, row in joined.iterrows()]
    return joined


def intervention_effects(acc: pd.DataFrame, baseline: str = "none") -> pd.DataFrame:
    """Each intervention's paired effect on the target test accuracy: (intervention − ``baseline``)
    per seed, mean with its 95 % t-interval over seeds, per transfer × λ × fraction (× regime)."""
    keys = [c for c in ("regime", "transfer", "weight_decay", "fraction") if c in acc.columns]
    others = [v for v in frozen.INTERVENTIONS if v in acc.columns and v != baseline]
    rows = []
    for key, group in acc.groupby(keys, sort=False):
        group = group.sort_values("seed")
        for v in others:
            ci = metrics.mean_ci((group[v] - group[baseline]).to_numpy(float))
            rows.append({**dict(zip(keys, key)), "intervention": v, "n seeds": len(group),
                         "mean": ci.mean, "lo": ci.lo, "hi": ci.hi})
    return pd.DataFrame(rows, columns=[*keys, "intervention", "n seeds", "mean", "lo", "hi"])


def format_interval(mean: float, lo: float = np.nan, hi: float = np.nan) -> str:
    """``"+1.2 % [-0.3 %, +2.7 %]"`` (no interval from one seed)."""
    if np.isnan(mean):
        return "n/a"
    return f"{mean:+.1%}" + ("" if np.isnan(lo) else f" [{lo:+.1%}, {hi:+.1%}]")


def still_frozen_at_end(dynamics: pd.DataFrame, weight_decay: float, deeper_only: bool = True) -> pd.DataFrame:
    """Share of each group (fixed when retraining starts) still frozen at the last probe, and its mean
    |∂L/∂w|, per seed × transfer × group, pooled over layers by weight count: the layers after the
    first when ``deeper_only`` (the first layer's plain sparse weights include always-black border
    pixels, which cannot regrow for another reason), else all layers."""
    sel = dynamics[(dynamics.weight_decay == weight_decay) & (dynamics.n > 0)]
    if sel.empty:
        return pd.DataFrame(columns=["seed", "transfer", "group", "still_frozen", "abs_grad", "n"])
    last = sel[sel.step == sel.groupby("transfer").step.transform("max")]
    if deeper_only:
        first_layer = list(dict.fromkeys(dynamics.layer))[0]
        last = last[last.layer != first_layer]
    per = (last.assign(w=last.n * last.still_frozen, g=last.n * last.abs_grad)
           .groupby(["seed", "transfer", "group"])[["w", "g", "n"]].sum().reset_index())
    per["still_frozen"], per["abs_grad"] = per.w / per.n, per.g / per.n
    return per[["seed", "transfer", "group", "still_frozen", "abs_grad", "n"]]


def selected_by_validation(finetune: pd.DataFrame, target: str, intervention: str) -> tuple[str, float] | None:
    """The (transfer, pre-training λ) with the best mean validation accuracy for ``intervention``
    retrained on the full ``target`` set (the test set is never looked at); None when not run."""
    full = finetune.fraction.max()
    sel = finetune[(finetune.target == target) & (finetune.fraction == full)
                   & (finetune.intervention == intervention)]
    if sel.empty:
        return None
    transfer, decay = sel.groupby(["transfer", "weight_decay"]).val_acc.mean().idxmax()
    return transfer, float(decay)


# ---------------------------------------------------------------------------------------------
# One tidy frame per claim, with the preconditions it is tested under
# ---------------------------------------------------------------------------------------------
def _reset_share(finetune: pd.DataFrame, transfer: str, decay: float) -> float:
    sel = finetune[(finetune.transfer == transfer) & (finetune.weight_decay == decay)
                   & (finetune.intervention == "reset_mutual")]
    return float(sel.reset_frac.mean()) if len(sel) else float("nan")


def _reset_preconditions(runs: Runs, transfer: str, with_cost: bool = True) -> tuple[float, list]:
    """The reset λ of ``transfer``'s source and the preconditions measured there."""
    source = transfer.split(" → ")[0]
    decay = reset_decay(runs.models, source)
    checks = [report.Precondition.at_least(f"share of parameters reset_mutual re-draws at λ = {decay:g} "
                                           f"({source})", _reset_share(runs.main_finetune, transfer, decay),
                                           RESET_MIN_FRACTION)]
    if with_cost:
        cost = float(source_accuracy_cost(runs.models, source)[decay])
        checks.append(report.Precondition.at_most(f"source accuracy lost to λ = {decay:g} vs λ = 0 ({source})",
                                                  cost, RESET_MAX_SOURCE_COST))
    return decay, checks


def claim_inputs(runs: Runs, params: dict) -> dict[str, tuple[pd.DataFrame | None, list]]:
    """For every claim of :data:`CLAIMS`, by id: (tidy frame, preconditions) for
    :func:`zaplib.report.evaluate`. Difference frames have the columns ``seed, condition, <metric>``
    (plus the claim's shared factor); correlation frames ``network, <x>, <y>``. A frame is None when
    the profile did not run what the claim needs."""
    models, ft = runs.models, runs.main_finetune
    decays = sorted(models.weight_decay.unique())
    largest, full = decays[-1], ft.fraction.max()
    fractions = sorted(ft.fraction.unique())
    transfers = list(dict.fromkeys(ft.transfer))
    small_gap, large_gap = gap_transfers(transfers)
    acc = accuracies(ft)
    inputs: dict[str, tuple[pd.DataFrame | None, list]] = {}

    # ---- weight decay and blur freeze weights (final pre-trained networks)
    arm = models.weight_decay.map(lambda wd: "largest λ" if wd == largest else ("λ = 0" if wd == 0 else None))
    frame = models.assign(condition=arm).dropna(subset=["condition"])
    inputs["wd_freezes"] = (frame[["seed", "condition", "mutually_frozen_frac", "source"]]
                            if len(decays) > 1 else None, [])
    at_largest = models[models.weight_decay == largest]
    dataset = at_largest.source.str.split(":").str[0]
    blurred = at_largest.source.str.contains(":blur")
    has_both = dataset.isin(dataset[blurred]) & dataset.isin(dataset[~blurred])
    frame = (at_largest.assign(dataset=dataset, condition=np.where(blurred, "blurred", "clean"))[has_both]
             [["seed", "condition", "mutually_frozen_frac", "dataset"]])
    inputs["blur_freezes_more"] = (frame if len(frame) else None, [])

    # ---- update dynamics: mutually frozen vs plain sparse, still frozen after retraining
    stay = still_frozen_at_end(runs.main_dynamics, largest).rename(columns={"group": "condition"})
    n_mutual = int(stay[stay.condition == "mutually_frozen"].n.sum()) if len(stay) else 0
    exists = [report.Precondition.at_least(f"weights of layers ≥ 2 mutually frozen when retraining starts "
                                           f"(λ = {largest:g}, all seeds and transfers)", n_mutual, 1)]
    inputs["mutual_stays_frozen"] = (stay[["seed", "condition", "still_frozen", "transfer"]]
                                     if len(stay) else None, exists if len(stay) else [])

    # ---- resets, at each source's reset λ
    def at(transfer, decay, fraction):
        return acc[(acc.transfer == transfer) & (acc.weight_decay == decay) & (acc.fraction == fraction)]

    def reset_frame(transfer, other):
        decay, checks = _reset_preconditions(runs, transfer)
        sel = at(transfer, decay, full)
        if sel.empty or other not in sel or "reset_mutual" not in sel:
            return None, checks
        long = sel.melt(id_vars=["seed"], value_vars=["reset_mutual", other], var_name="condition",
                        value_name="test_acc")
        return long, checks

    # a gap's claims are not run when the profile has no transfer of that kind
    gaps = {gap: transfer for gap, transfer, run_ in (("small_gap", small_gap, is_same_dataset(small_gap)),
                                                      ("large_gap", large_gap, not is_same_dataset(large_gap)))
            if run_}
    for gap in ("small_gap", "large_gap"):
        for claim_id, other in ((f"reset_helps_{gap}", "none"), (f"reset_beats_random_{gap}", "reset_random")):
            inputs[claim_id] = reset_frame(gaps[gap], other) if gap in gaps else (None, [])

    def gains(transfer, fraction):
        decay, checks = _reset_preconditions(runs, transfer)
        sel = at(transfer, decay, fraction)
        if sel.empty or "reset_mutual" not in sel:
            return None, checks
        return sel.assign(reset_gain=sel.reset_mutual - sel["none"])[["seed", "reset_gain"]], checks

    for gap in ("small_gap", "large_gap"):
        if gap not in gaps:
            inputs[f"benefit_needs_data_{gap}"] = (None, [])
            continue
        (few, checks), (many, _) = gains(gaps[gap], fractions[0]), gains(gaps[gap], full)
        frame = (None if few is None or many is None or len(fractions) < 2 else
                 pd.concat([few.assign(condition="few"), many.assign(condition="full")], ignore_index=True))
        inputs[f"benefit_needs_data_{gap}"] = (frame, checks)
    same_source = len(gaps) == 2 and small_gap.split(" → ")[0] == large_gap.split(" → ")[0]
    for tag, fraction in (("few", fractions[0]), ("full", full)):
        if not same_source:  # the pairing by seed needs the same pre-trained networks in both
            inputs[f"benefit_larger_for_large_gap_{tag}"] = (None, [])
            continue
        (small, small_checks), (large, large_checks) = gains(small_gap, fraction), gains(large_gap, fraction)
        frame = (None if small is None or large is None else
                 pd.concat([small.assign(condition="small"), large.assign(condition="large")], ignore_index=True))
        inputs[f"benefit_larger_for_large_gap_{tag}"] = (frame, small_checks[:1] + large_checks[:1])

    # ---- Fashion-MNIST: each arm at the (transfer, λ) its own validation accuracy picks (picking
    # both at the reset arm's best cell would favour the reset: validation and test accuracy of the
    # same networks are correlated)
    chosen = {arm: selected_by_validation(ft, "fashion_mnist", arm) for arm in ("reset_mutual", "none")}
    if any(pick is None for pick in chosen.values()):
        inputs["fashion_mnist_sota"] = (None, [])
    else:
        transfer, decay = chosen["reset_mutual"]
        n_used = int(ft[(ft.transfer == transfer) & (ft.fraction == full)].n_target.max())
        checks = [report.Precondition.at_least(
                      "Fashion-MNIST training images used (the full set less the validation images)",
                      n_used, FASHION_MNIST_FULL - params["n_val"]),
                  report.Precondition.at_least(
                      f"share of parameters reset_mutual re-draws at the validation-selected λ = {decay:g}",
                      _reset_share(ft, transfer, decay), RESET_MIN_FRACTION)]
        frame = pd.concat([at(*chosen[arm], full)[["seed", arm]].rename(columns={arm: "test_acc"})
                           .assign(condition=arm) for arm in ("reset_mutual", "none")], ignore_index=True)
        inputs["fashion_mnist_sota"] = (frame, checks)

    # ---- correlations across networks (full target set, no intervention), centred per transfer
    adapt = adaptability(ft, models)
    adapt = adapt[adapt.fraction == full].assign(network=lambda f: f.source + "|" + f.seed.astype(str) + "|"
                                                 + f.weight_decay.astype(str))

    def centred(frame, by):
        out = frame[["network"]].copy()
        for column, name in (("mutually_frozen_frac", "mutually_frozen_frac"), ("sensitivity", "sensitivity"),
                             ("none", "adaptability")):
            out[name] = frame[column] - frame.groupby(by)[column].transform("mean")
        return out

    across = centred(adapt, ["transfer"]) if len(adapt) else None
    within = centred(adapt, ["transfer", "weight_decay"]) if len(adapt) else None
    inputs["frozen_hurts_retraining"] = (across, [])
    inputs["sensitivity_adaptability"] = (across, [])
    inputs["sensitivity_adaptability_within_decay"] = (within, [])
    return inputs


def claims_table(runs: Runs, params: dict) -> pd.DataFrame:
    """The chapter's claims table by :mod:`zaplib.report`'s rule (what the notebook shows)."""
    inputs = claim_inputs(runs, params)
    return report.table([report.evaluate(claim, *inputs[claim.id]) for claim in CLAIMS])


def verdict_listing(claims_table: pd.DataFrame, verdicts: Sequence[str]) -> str:
    """The claims of ``claims_table`` whose verdict (exploratory label folded) is one of
    ``verdicts``, as one sentence fragment for the prose ("none" when there is none)."""
    verdict = claims_table.verdict.str.replace(" (exploratory)", "", regex=False)
    rows = claims_table[verdict.isin(list(verdicts))]
    return "; ".join(f"{row.claim[0].lower()}{row.claim[1:]} ({row.verdict})" for row in rows.itertuples()) or "none"


# ---------------------------------------------------------------------------------------------
# What `python -m zaplib compute frozen_weights` and the profile dry run need
# ---------------------------------------------------------------------------------------------
def planned_runs(params: dict, store=None) -> list:
    """Every stored run the notebook reads (one per source task and retraining λ), as ``(fn, config)``."""
    runs = []
    for decay in params["finetune_weight_decays"]:
        runs += [(run, config) for config in configs(params, decay)]
    return runs


def image_steps(config: dict) -> float:
    """Training image-steps of one run: every seed × λ pre-trained on the source, then every target ×
    fraction × intervention retrained (steps from :func:`zaplib.frozen.finetune_steps`)."""
    models = len(config["seeds"]) * len(config["weight_decays"])
    pre = config["n_pretrain"] * config["pretrain_epochs"]
    retrain = 0.0
    for fraction in config["target_fractions"]:
        n = max(1, int(round(fraction * config["n_target"])))
        steps = frozen.finetune_steps(n, config["batch_size"], config["finetune_epochs"], config["finetune_min_steps"])
        retrain += steps * min(config["batch_size"], n)
    return models * (pre + len(config["targets"]) * len(config["interventions"]) * retrain)


def run_kind(config: dict) -> str:
    return f"{config['model']} on {config['source']}"


def dry_run_config(config: dict) -> dict:
    """A run for the profile dry run: the same models and training data, but 1,000 test images for
    the accuracy probe every network takes before its first step (the paper profile's 10,000 take
    minutes on a CPU)."""
    return {**config, "n_test": min(config["n_test"], 1000), "n_sensitivity": min(config["n_sensitivity"], 100)}


def images_per_step(config: dict) -> int:
    """Images one optimiser step trains on: a batch for each of the stacked seed × λ networks."""
    return config["batch_size"] * len(config["seeds"]) * len(config["weight_decays"])
