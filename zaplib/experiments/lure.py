"""Chapter "Learn, unlearn, relearn" (``book/lure.ipynb``): its experiment, configs, claims,
parameters and profiles.

The chapter reproduces *Learn, Unlearn and Relearn* (LURE; Ramkumar et al. 2023) on an ALMA
mega-batch stream. The stream, the methods (BL, S&P, LLF, LURE) and the loop are mechanisms of
:mod:`zaplib.stream`; this module holds what is the chapter's own: the stored experiment
:data:`EXPERIMENT` (:func:`run`), the named method variants, the plan of runs
(:func:`configs`), how the notebook reads them (:func:`section_reader`) and the claims
(:data:`CLAIMS`, :func:`claim_frames`, :func:`preconditions`).

**Design.** The unit of replication is the training seed (column ``seed``). Every method of a seed
trains on the same stream (one shuffle by ``order_seed``, the same for every run) from the same
initialisation (:func:`zaplib.models.build` seeded by ``seed``), so the arms of every claim are
*paired* by seed: paired t on the per-seed differences, Wilcoxon as robustness
(:mod:`zaplib.report`).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

from .. import gates, metrics, report, stream
from ..chapters import Chapter
from ..store import Store, config_hash, experiment

# ---------------------------------------------------------------------------------------------
# The stored experiment
# ---------------------------------------------------------------------------------------------
EXPERIMENT = "lure_stream"


# version 2: seeds from samplers.generator, inits via models.build, data via data.subset (issue 12)
@experiment(EXPERIMENT, version=2)
def run(config: dict) -> dict:
    """One stored run: :func:`zaplib.stream.run_stream` on ``config`` (a complete
    :func:`zaplib.stream.make_config` dict), returning its tables (``megabatches``, ``epochs``,
    ``reliability``, ``summary`` and the configured probes)."""
    return stream.run_stream(config)


#: Named methods of the chapter: config overrides on top of the shared stream settings.
VARIANTS: dict[str, dict] = {
    "bl": {"method": "bl"},
    "sp": {"method": "sp", "sp_form": "noise", "sp_shrink": 0.3, "sp_perturb": 0.001},  # LURE code
    "sp_paper": {"method": "sp", "sp_form": "noise", "sp_shrink": 0.4, "sp_perturb": 0.001},  # LURE text
    "sp_fresh": {"method": "sp", "sp_form": "fresh", "sp_shrink": 0.4, "sp_perturb": 0.1},  # Ash & Adams
    "llf": {"method": "llf"},
    "lure": {"method": "lure"},
    "lure_model_init": {"method": "lure", "reset_init": "model"},
    "scratch": {"method": "scratch"},
    # issue 15: the official baseline script's constant lr (its scheduler is rebuilt with gamma 1)
    "bl_code": {"method": "bl", "lr_gamma": 1.0},
}
VARIANT_LABELS = {
    "bl": "BL (warm start)", "sp": "S&P (LURE code: 0.3θ + 0.001ε)",
    "sp_paper": "S&P (LURE text: 0.4θ + 0.001ε)", "sp_fresh": "S&P (Ash & Adams: 0.4θ + 0.1θ_fresh)",
    "llf": "LLF (layer3, layer4, fc)", "lure": "LURE (SNIP, 20 %)",
    "lure_model_init": "LURE (model's own init)", "scratch": "from scratch",
    "bl_code": "BL, constant lr (official baseline script)",
}
#: The LLF label by the chapter's ``llf_form`` (the variant is ``llf`` in both forms).
LLF_LABELS = {"ours": "LLF (layer3, layer4, fc)", "official": "LLF (official: shortcuts and fc bias kept)"}


def variant_name(config: dict) -> str:
    """The :data:`VARIANTS` name whose overrides ``config`` matches, else its method."""
    # most specific first, so "lure_model_init" wins over "lure"
    for name, over in sorted(VARIANTS.items(), key=lambda item: -len(item[1])):
        if all(config.get(k) == v for k, v in over.items()):
            return name
    return config["method"]


# ---------------------------------------------------------------------------------------------
# The plan of runs
# ---------------------------------------------------------------------------------------------
SECTIONS = ("main", "replay", "fraction", "criterion", "long", "arch", "noise", "grid")


def configs(params: dict) -> dict[str, list[dict]]:
    """Every run of the chapter, by section, from its resolved parameters (``zaplib.chapters``).

    Sections (:data:`SECTIONS`): ``main`` (Table 1: full replay, ``methods`` × ``seeds``, with the
    robustness probes, and ``secondary_methods`` × ``secondary_seeds`` without them), ``replay`` (Tables 2–3: each of ``replays`` × ``replay_methods``),
    ``fraction`` (Table 7), ``criterion`` (Table 8), ``long`` (Table 4), ``arch`` (Table 6),
    ``noise`` (§6.3 / Table 9; ``ablation_seeds``), ``grid`` (§7.3). A run shared by two sections
    (e.g. LURE at 20 % in Tables 1 and 7) has one config, so it is computed once."""
    p = params

    def opt(v):
        return None if v in (0, None) else v

    shared = dict(dataset=p["dataset"], model=p["model"], width=p["width"], n_pool=opt(p["n_pool"]),
                  n_test=opt(p["n_test"]), n_megabatches=p["n_megabatches"], epochs=p["epochs"],
                  lr_milestones=list(p["lr_milestones"]), batch_size=p["batch_size"], lr=p["lr"],
                  weight_decay=p["weight_decay"], buffer_size=p["buffer_size"],
                  score_size=p["score_size"], init=p["init"], augment=p["augment"],
                  val_augment=p["augment"], precision=p["precision"])
    probe_settings = dict(corruptions=list(p["corruptions"]),
                          corruption_severities=list(p["corruption_severities"]),
                          n_corruption=p["n_corruption"], pgd_eps=[e / 255 for e in p["pgd_eps"]],
                          n_pgd=p["n_pgd"], weight_noise=list(p["weight_noise"]),
                          weight_noise_repeats=p["weight_noise_repeats"],
                          n_weight_noise=p["n_weight_noise"])

    def cfg(variant, seed, probe=False, **over):
        merged = {**shared, **(probe_settings if probe else {}), **VARIANTS[variant], **over, "seed": seed}
        if merged["model"] != "resnet18":  # the init option is the ResNet-18's (Table 6's networks keep theirs)
            merged.pop("init")
        if merged["method"] == "llf":  # the form of the chapter's LLF; other methods' keys stay unchanged
            merged["llf_form"] = p["llf_form"]
        if p["vary_order"]:  # each seed its own stream: intervals include data-order variance
            merged["order_seed"] = seed
        return stream.make_config(**merged)

    main = ([cfg(v, s, probe=True) for v in p["methods"] for s in p["seeds"]]
            + [cfg(v, s) for v in p["secondary_methods"] for s in p["secondary_seeds"]])
    main_by_key = {(variant_name(c), c["seed"]): c for c in main}

    def reuse(variant, seed, **over):
        """The main-table run when ``over`` changes nothing it has, else a new probe-free run."""
        plain = cfg(variant, seed, **over)
        hit = main_by_key.get((variant, seed))
        if hit is not None and all(hit[k] == v for k, v in plain.items() if k not in probe_settings):
            return hit
        return plain

    short = p["short_megabatches"]
    return {
        "main": main,
        "replay": [cfg(v, s, replay=r) for r in p["replays"] for v in p["replay_methods"]
                   for s in p["seeds"]],
        "fraction": [reuse("lure", s, reset_fraction=f) for f in p["reset_fractions"]
                     for s in p["ablation_seeds"]],
        "criterion": [reuse("lure", s, criterion=c, n_megabatches=short) for c in p["criteria"]
                      for s in p["ablation_seeds"]]
        + [reuse("bl", s, n_megabatches=short) for s in p["ablation_seeds"] if p["criteria"]],
        "long": [cfg(v, s, n_megabatches=t) for t in p["long_megabatches"] for v in p["replay_methods"]
                 for s in p["seeds"]],
        "arch": [reuse(v, s, model=a, n_megabatches=short) for a in p["architectures"]
                 for v in p["replay_methods"] for s in p["seeds"]],
        "noise": [reuse(v, s, label_noise=r, n_megabatches=short) for r in p["label_noise"]
                  for v in p["noise_methods"] for s in p["ablation_seeds"]],
        "grid": [reuse(v, s, lr=lr, weight_decay=wd, n_megabatches=short) for lr in p["lr_grid"]
                 for wd in p["wd_grid"] for v in p["grid_methods"] for s in p["grid_seeds"]],
    }


def estimated_cost(config: dict) -> float:
    """Relative cost of a run, for ordering a sweep longest first: its :func:`image_steps` times
    the cost of one image-step of its model."""
    scale = {"resnet18": (config["width"] / 64) ** 2}.get(config["model"], 2.0)
    return image_steps(config) * scale


def unique_configs(plan: dict[str, list[dict]]) -> list[dict]:
    """All configs of a plan once each, most expensive first (so a sweep's workers end together)."""
    seen = {}
    for section in plan.values():
        for c in section:
            seen.setdefault(config_hash(c), c)
    return sorted(seen.values(), key=estimated_cost, reverse=True)


def sgd_steps(params: dict, n_pool: int = 50000) -> dict[str, int]:
    """SGD steps per run under full replay, from the chapter's parameters: on the ``first`` and
    ``last`` mega-batch and in ``total`` (the prose's scale statements; ``n_pool`` when the
    parameter is 0 = all), and the ``images`` (image-steps) of one run."""
    pool = params["n_pool"] or n_pool
    t, epochs, batch = params["n_megabatches"], params["epochs"], params["batch_size"]
    n_train = round(0.9 * (pool // t))  # stream.cut_stream's 90/10 split of each mega-batch
    per_stage = [math.ceil(k * n_train / batch) * epochs for k in range(1, t + 1)]
    return {"first": per_stage[0], "last": per_stage[-1], "total": sum(per_stage),
            "images": sum(k * n_train * epochs for k in range(1, t + 1))}


#: Training throughput of a width-64 CIFAR ResNet-18 (batch 128, 2 threads) measured on this
#: project's 2-core CPU machines (reference notes, "Speed anchors"): the prose's estimate of what
#: one run of the ``paper`` profile would cost without a GPU.
CPU_IMAGES_PER_SECOND = 34.0

#: The settings a page names when it says how its profile is scaled down from ``paper``.
SCALE_SETTINGS = ("seeds", "width", "n_pool", "n_test", "n_megabatches", "epochs", "lr_milestones",
                  "buffer_size")


def _shown(name: str, value) -> str:
    if name in ("n_pool", "n_test") and value == 0:
        return "all"
    if isinstance(value, (list, tuple)) and not value:
        return "none"
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def scale_sentence(params: dict, paper: dict) -> str:
    """"This page shows the <profile> profile; scaled down from the paper profile (in brackets):
    ..." over :data:`SCALE_SETTINGS` — the sentence each page puts next to its first figure."""
    scaled = [f"{name.replace('_', ' ')} {_shown(name, params[name])} ({_shown(name, paper[name])})"
              for name in SCALE_SETTINGS if params[name] != paper[name]]
    head = f"This page shows the {params['profile']} profile"
    return head + (f"; scaled down from the paper profile (in brackets): {'; '.join(scaled)}." if scaled else ".")


# ---------------------------------------------------------------------------------------------
# Reading the stored runs
# ---------------------------------------------------------------------------------------------
def section_reader(store: Store, plan: dict[str, list[dict]]) -> Callable[[str, str], pd.DataFrame]:
    """``read(section, table="summary")``: the stored table of every run of a plan section, the
    config's keys as columns plus ``variant`` (:func:`variant_name`); an empty frame when the
    profile has no run in that section."""

    def read(section: str, table: str = "summary") -> pd.DataFrame:
        if not plan[section]:
            return pd.DataFrame()
        frame = store.table(EXPERIMENT, table, configs=plan[section])
        frame["variant"] = [variant_name(row) for row in frame.to_dict("records")]
        return frame

    return read


def compare(frame: pd.DataFrame, value: str, by: str = "variant", baseline: str = "bl",
            pair: str = "seed", level: float = 0.95) -> pd.DataFrame:
    """Per group of ``by``: n, mean and t-interval of ``value`` (:func:`zaplib.metrics.summarise`),
    plus the difference to ``baseline`` paired by ``pair`` (seed): mean, t-interval, paired t-test
    p-value (``scipy.stats.ttest_rel``) and the Mann–Whitney p-value of the unpaired samples.
    Descriptive (the chapter's tables); verdicts come from :data:`CLAIMS` via :mod:`zaplib.report`."""
    table = metrics.summarise(frame, by, value, level)
    base = frame[frame[by] == baseline].set_index(pair)[value]
    extra = []
    for group in table[by]:
        cur = frame[frame[by] == group].set_index(pair)[value]
        common = cur.index.intersection(base.index)
        if group == baseline or len(common) == 0:
            extra.append({"diff": np.nan, "diff_lo": np.nan, "diff_hi": np.nan, "p_paired": np.nan,
                          "p_mw": np.nan})
            continue
        d = cur.loc[common] - base.loc[common]
        ci = metrics.mean_ci(d.to_numpy(), level)
        p_paired = float(stats.ttest_rel(cur.loc[common], base.loc[common]).pvalue) if len(d) > 1 else np.nan
        extra.append({"diff": ci.mean, "diff_lo": ci.lo, "diff_hi": ci.hi, "p_paired": p_paired,
                      "p_mw": metrics.mann_whitney(cur.to_numpy(), base.to_numpy()).p})
    return pd.concat([table, pd.DataFrame(extra)], axis=1)


#: The columns of the chapter's results tables: (stored column, title, scale, decimals).
RESULT_COLUMNS = (("test_acc", "test accuracy (%)", 100, 1), ("cer", "CER (test errors)", 1, 0),
                  ("gen_gap", "generalisation gap (points)", 100, 1), ("ece", "ECE (%)", 100, 1))


def results_table(frame: pd.DataFrame, by: list[str], labels: dict | None = None,
                  level: float = 0.95) -> pd.DataFrame:
    """The chapter's results tables (Tables 1–3, 7–9 analogues): per group of ``by`` columns, each
    of :data:`RESULT_COLUMNS` after the last mega-batch as "mean ± half-width" of the Student-t
    ``level`` interval over seeds (:func:`zaplib.metrics.mean_ci`; no half-width for one seed), and
    the number of seeds. ``labels`` renames the ``variant`` column's values. Descriptive: the
    verdicts are the claims table's."""
    rows = []
    for key, group in frame.groupby(by, sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for column, title, scale, digits in RESULT_COLUMNS:
            ci = metrics.mean_ci(group.groupby("seed")[column].mean().to_numpy(float), level)
            half = "" if math.isnan(ci.half_width) else f" ± {scale * ci.half_width:.{digits}f}"
            row[title] = f"{scale * ci.mean:.{digits}f}{half}"
        row["seeds"] = group["seed"].nunique()
        rows.append(row)
    table = pd.DataFrame(rows)
    if labels and "variant" in table:
        table["variant"] = [labels.get(v, v) for v in table["variant"]]
    return table


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
    # what it measures: S&P at the LURE code's setting shrinks every weight to 30 % and adds almost
    # no noise, so on a network that has not converged it mostly measures that damage
    _versus("lure_vs_sp", "Full replay: LURE beats S&P at the LURE code's setting (θ ← 0.3θ + 0.001ε: every weight shrunk to 30 %)",
            "+1.56 (93.32 vs 91.76)", "sp", primary=True),
    _versus("lure_vs_llf", "Full replay: LURE beats LLF (layer3, layer4 and fc re-initialised)",
            "+1.89 (93.32 vs 91.43)", "llf", primary=True),
    _versus("lure_cer", "Full replay: LURE makes fewer cumulative test errors (CER) than BL",
            "−2138 (9622 vs 11760)", "bl", metric="cer", direction=-1, primary=True,
            scale=1.0, unit_label=" errors", digits=0),
    # Table 3: the paper's largest gain
    _versus("lure_no_replay", "No replay: LURE beats BL in test accuracy",
            "+8.10 (88.96 vs 80.86)", "bl", primary=True),
    # exploratory (issue 15): the premise, and the official baseline script's constant lr
    _versus("warm_start_penalty", "Full replay: training from scratch beats the warm start (the penalty a reset would fix)",
            "premise (Ash & Adams 2020); scratch not run in the paper", "bl", a="scratch"),
    _versus("bl_vs_bl_code", "Full replay: BL with the paper's lr decay beats BL with the official script's constant lr",
            "not reported (the official baseline script rebuilds its scheduler with gamma 1)", "bl_code", a="bl"),
    _versus("lure_vs_bl_code", "Full replay: LURE beats BL as the official baseline script trains it (constant lr)",
            "+3.85 (93.32 vs 89.47), if Table 1's BL is this one", "bl_code"),
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
    _versus("lure_corruptions_relative", "LURE keeps more of its clean accuracy under corruptions than BL (relative mCA: corruption / clean accuracy)",
            "+3.3 pts (74/93.3 vs 68/89.5, derived from CIFAR-10-C and Table 1)", "bl", metric="rel_acc",
            unit_label=" pts of clean acc"),
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

#: Claims tested on the full-replay Table 1 runs (section ``main``), one summary row per run.
MAIN_CLAIMS = ("lure_vs_bl", "lure_vs_sp", "lure_vs_llf", "lure_cer", "lure_gap", "lure_ece",
               "lure_vs_sp_paper", "lure_vs_sp_fresh", "warm_start_penalty", "bl_vs_bl_code", "lure_vs_bl_code")


def preconditions(megabatches: pd.DataFrame, gate: dict | None = None) -> list[report.Precondition]:
    """The regime checks every claim carries. Always: BL's training accuracy at the carried epoch of
    the last mega-batch, mean over seeds, from the ``megabatches`` table of the full-replay runs
    (columns ``method``, ``replay``, ``seed``, ``megabatch``, ``train_acc``) — at least
    :data:`REGIME_MIN_TRAIN_ACC` (a missing BL run measures NaN, which fails). With a ``gate``
    (:func:`gate_summary`): that it passed, measured as the chosen cell, or, when no cell passed,
    as the best cell's values."""
    bl = megabatches[(megabatches["method"] == "bl") & (megabatches["replay"] == "full")] if len(megabatches) else megabatches
    last = bl[bl["megabatch"] == bl["megabatch"].max()] if len(bl) else bl
    measured = float(last.groupby("seed")["train_acc"].mean().mean()) if len(last) else math.nan
    checks = [report.Precondition.at_least(REGIME, measured, REGIME_MIN_TRAIN_ACC)]
    if gate is not None:
        checks.insert(0, report.Precondition(GATE_PRECONDITION, gate_measured(gate), gate["status"] == "pass",
                                             "a passing cell"))
    return checks


def gate_measured(gate: dict) -> str:
    """What the gate measured, in words: the passing cell, or every stored cell's weakest values."""
    if gate["status"] == "pass":
        v = gate["verdicts"][gate["cell"]]
        return (f"cell {gate['cell']} passed (lowest training accuracy {v['min_train_acc']:.1%}, "
                f"scratch − BL ≥ {100 * v['penalty_min']:+.2f} pts)")
    if not gate["verdicts"]:
        return "not run"
    cells = "; ".join(f"{cell}: lowest training accuracy {v['min_train_acc']:.1%}, scratch − BL "
                      f"{100 * v['penalty_min']:+.2f} pts on the worst seed" for cell, v in gate["verdicts"].items())
    return ("no cell passed: " if gate["status"] == "fail" else "pending: ") + cells


def planned_claims(params: dict) -> set[str]:
    """The claims a profile's runs test (by their arms and sections), whether or not they ran."""
    methods = set(params["methods"]) | set(params["secondary_methods"])
    by_id = {c.id: c for c in CLAIMS}
    out = {c for c in MAIN_CLAIMS if {by_id[c].a, by_id[c].b} <= methods}
    sections = {"lure_no_replay": "none" in params["replays"], "lure_buffered": "buffered" in params["replays"],
                "lure_corruptions": bool(params["corruptions"]), "lure_corruptions_relative": bool(params["corruptions"]),
                "lure_pgd": bool(params["pgd_eps"]), "lure_flatness": bool(params["weight_noise"]),
                "lure_noise_20": 0.2 in params["label_noise"], "lure_noise_40": 0.4 in params["label_noise"]}
    out |= {c for c, ran in sections.items() if ran and ("lure" in methods)}
    arms = {"reset_fraction": set(params["reset_fractions"]), "criterion": set(params["criteria"])}
    out |= {c.id for c in CLAIMS if c.condition in arms and {c.a, c.b} <= arms[c.condition]}
    return out


def evaluate_claim(claim: report.Claim, frame: pd.DataFrame | None,
                   checks: list[report.Precondition], planned: set[str] | None = None) -> report.Result:
    """:func:`zaplib.report.evaluate`, except that a claim left unrun by a failed regime gate
    says so: its reason is the gate's measured values, not "not run at this profile" — for the
    claims the profile plans (``planned``, default all; :func:`planned_claims`)."""
    gate = [c for c in checks if c.name == GATE_PRECONDITION and not c.holds]
    unrun = gate[0].describe() if gate and (planned is None or claim.id in planned) else None
    return report.evaluate(claim, frame, checks, unrun_reason=unrun)


def _probed(main: pd.DataFrame, key: str) -> bool:
    """Whether the Table 1 runs carry the probe whose config list is ``key`` (e.g. ``pgd_eps``)."""
    return len(main) > 0 and key in main.columns and len(main[key].iloc[0]) > 0


def _rows(frame: pd.DataFrame | None, keep) -> pd.DataFrame | None:
    """The rows of ``frame`` where ``keep(frame)`` holds; None when nothing is left (not run)."""
    if frame is None or frame.empty:
        return None
    kept = frame[keep(frame)]
    return kept if len(kept) else None


def relative_corruption_accuracy(corrupted: pd.DataFrame) -> pd.DataFrame | None:
    """Per run, accuracy under each corruption × severity divided by the same run's clean accuracy
    (column ``rel_acc``; Hendrycks & Dietterich's relative robustness, without their AlexNet
    normalisation): separates robustness from a higher clean accuracy. None without clean rows."""
    clean = corrupted[corrupted["corruption"] == "clean"]
    if clean.empty:
        return None
    keys = [k for k in ("variant", "seed") if k in corrupted.columns]
    base = clean.groupby(keys)["acc"].mean().rename("clean_acc")
    out = corrupted[corrupted["corruption"] != "clean"].join(base, on=keys)
    return out.assign(rel_acc=out["acc"] / out["clean_acc"])


def claim_frames(read: Callable[[str, str], pd.DataFrame]) -> dict[str, pd.DataFrame | None]:
    """One tidy frame per claim of :data:`CLAIMS`, by id, from ``read(section, table)``
    (:func:`section_reader`): one row per run (or per run × probe cell, averaged within the seed
    by :func:`zaplib.report.evaluate`) with ``seed``, the claim's condition column and its metric;
    None where the profile does not run the claim."""
    main = read("main", "summary")
    replay = read("replay", "summary")
    noise = read("noise", "summary")
    criterion = read("criterion", "summary")
    frames: dict[str, pd.DataFrame | None] = {cid: (main if len(main) else None) for cid in MAIN_CLAIMS}
    frames["lure_no_replay"] = _rows(replay, lambda f: f["replay"] == "none")
    frames["lure_buffered"] = _rows(replay, lambda f: f["replay"] == "buffered")
    # mean corruption accuracy: every corruption × severity cell of a run, averaged within the seed
    corrupted = read("main", "corruptions") if _probed(main, "corruptions") else None
    frames["lure_corruptions"] = _rows(corrupted, lambda f: f["corruption"] != "clean")
    frames["lure_corruptions_relative"] = None if corrupted is None else relative_corruption_accuracy(corrupted)
    pgd = read("main", "pgd") if _probed(main, "pgd_eps") else None
    frames["lure_pgd"] = _rows(pgd, lambda f: np.isclose(f["eps_255"], f["eps_255"].max()))
    frames["lure_flatness"] = None
    if _probed(main, "weight_noise"):
        train = read("main", "weight_noise").query("split == 'train'")
        acc = train.groupby(["variant", "seed", "sigma"])["acc"].mean().unstack("sigma")
        # σ = 0 is the unperturbed model (probes.weight_noise_table): the drop at the largest σ
        frames["lure_flatness"] = (acc[0.0] - acc[acc.columns.max()]).rename("drop").reset_index()
    for rate, cid in ((0.2, "lure_noise_20"), (0.4, "lure_noise_40")):
        frames[cid] = _rows(noise, lambda f, r=rate: np.isclose(f["label_noise"], r))
    fraction = read("fraction", "summary")
    for cid in ("fraction_20_vs_5", "fraction_20_vs_10", "fraction_20_vs_30", "fraction_20_vs_40"):
        frames[cid] = fraction if len(fraction) else None
    for cid in ("snip_vs_fisher", "snip_vs_magnitude", "snip_vs_random"):
        # the criterion section's BL runs have the default criterion too: LURE runs only
        frames[cid] = _rows(criterion, lambda f: f["method"] == "lure")
    return frames


CHAPTER = Chapter(
    # published at long (issue 15): its regime gate found no cell, so the page shows the gate and
    # every claim is not testable with the gate's values
    bounds={  # checked before anything runs (zaplib.runner)
        "width": "> 0",
        "n_megabatches": "> 0",
        "short_megabatches": "> 0",
        "epochs": "> 0",
        "batch_size": "> 0",
        "lr": "> 0",
        "weight_decay": ">= 0",
        "score_size": "> 0",
        "reset_fractions": "(0, 1)",
        "label_noise": "[0, 1)",
        "lr_grid": "> 0",
        "wd_grid": ">= 0",
        "pgd_eps": ">= 0",
        "weight_noise": ">= 0",
        "n_corruption": "> 0",
        "n_pgd": "> 0",
        "n_weight_noise": "> 0",
        "weight_noise_repeats": "> 0",
        "corruption_severities": "[1, 5]",
        "workers": "> 0",
        "long_megabatches": "> 0",
    },
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
                    "methods of Table 1 (zaplib.experiments.lure.VARIANTS)"),
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
        "secondary_methods": (list[str], [], "methods of Table 1 run on secondary_seeds only, without the probes"),
        "secondary_seeds": (list[int], [], "seeds of the secondary methods"),
        "llf_form": (str, "ours", "LLF re-initialises layer3, layer4 and fc whole (ours), or as the official code: shortcut convs and the fc bias kept",
                     ("ours", "official")),
        "vary_order": (bool, False, "each seed its own stream order (order_seed = seed); else one order for every run"),
        "augment": (bool, True, "random crop and flip, on training and validation images alike (LURE code)"),
        "precision": (str, "fp32", "training precision: fp32, or bf16 autocast", ("fp32", "bf16")),
        "init": (str, "pytorch", "ResNet-18 initialisation: every module's default, or the official code's (conv Kaiming-normal fan-out, BN 1/0)",
                 ("pytorch", "official")),
        "gate_seeds": (list[int], [], "seeds of the regime gate (apart from every reported seed; empty: no gate)"),
        "gate_cells": (list[str], [], "the gate's grid, tried in order: WIDTH/IMAGES/EPOCHS/AUG[/PRECISION] cells "
                                      "(images per mega-batch before the 90/10 split; AUG on or off; fp32 unless bf16)"),
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
        # long (issue 15): the regime gate first (gate_configs, gate_verdict): full replay over 4
        # mega-batches, BL, scratch and the official constant-lr BL on gate seeds 900 and 901, cell by
        # cell in the declared order until one passes. The reported runs then take the chosen cell's
        # width, images, epochs, augmentation and precision (reported_params): the official code's
        # init and LLF form, each seed its own stream order, all 10,000 test images, Table 1's
        # methods on 5 seeds with the corruption probe (13 corruptions × 5 severities × 1,000
        # images), the official constant-lr BL and Ash & Adams' S&P on 3. No other table: the
        # budget holds Table 1 only (no replay would add ≈ 40 %).
        "long": {"seeds": [0, 1, 2, 3, 4], "n_megabatches": 4, "short_megabatches": 4, "n_test": 0,
                 "init": "official", "llf_form": "official", "vary_order": True,
                 "methods": ["bl", "scratch", "sp", "llf", "lure"],
                 "secondary_methods": ["bl_code", "sp_fresh"], "secondary_seeds": [0, 1, 2],
                 "replays": [], "reset_fractions": [], "criteria": [], "label_noise": [],
                 "lr_grid": [], "wd_grid": [], "corruptions": ["all"], "corruption_severities": [1, 2, 3, 4, 5],
                 "n_corruption": 1000, "pgd_eps": [], "weight_noise": [],
                 "gate_seeds": [900, 901], "gate_cells": ["8/1100/30/off", "8/550/60/on", "16/440/30/on/bf16"]},
        "paper": {"seeds": [0, 1, 2, 3, 4], "width": 64, "n_pool": 0, "n_test": 0, "n_megabatches": 8,
                  "init": "official", "llf_form": "official",
                  "short_megabatches": 4, "epochs": 50, "lr_milestones": [20, 40], "buffer_size": 186,
                  "methods": ["bl", "sp", "sp_paper", "sp_fresh", "llf", "lure", "lure_model_init", "scratch", "bl_code"],
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


# ---------------------------------------------------------------------------------------------
# What `python -m zaplib compute lure` and the profile dry run need
# ---------------------------------------------------------------------------------------------
def planned_runs(params: dict, store=None) -> list:
    """Every stored run the notebook reads, as ``(fn, config)`` pairs, longest first. A profile with
    ``gate_seeds`` plans its regime gate first, one cell at a time (:func:`gate_stage`); once a cell
    passes, the reported runs at that cell (:func:`reported_params`); when no cell passes, nothing
    more: the efficacy claims are then not testable, with the gate's values as the reason."""
    if params.get("gate_seeds"):
        todo, gate = gate_stage(params, store)
        if gate["status"] == "pending":
            return [(run, config) for config in todo]
        if gate["status"] == "fail":
            return []
        params = reported_params(params, gate)
    return [(run, config) for config in unique_configs(configs(params))]


def reported_params(params: dict, gate: dict | None) -> dict:
    """The parameters of the reported runs: ``params`` with the passing gate cell's width, pool
    (images per mega-batch × ``n_megabatches``), epochs, lr milestones, augmentation and precision
    (:func:`cell_overrides`; the select split stays the gate's). Unchanged without a gate or before
    one has passed (the page then shows only the gate)."""
    if not gate or gate["status"] != "pass":
        return params
    over = cell_overrides(params, gate["cell"])
    keep = ("width", "n_pool", "epochs", "lr_milestones", "augment", "precision")
    return type(params)({**params, **{k: over[k] for k in keep}})


def full_plan(params: dict, store=None) -> list:
    """Every run of the profile at once, for the dry run's cost table: with a gate, every cell of
    its grid (the worst case: no cell passes before the last) and the reported runs at the chosen
    cell (before the gate has passed: at the first cell, as a placeholder)."""
    if params.get("gate_seeds"):
        gate_runs = [(run, config) for cell in params["gate_cells"] for config in gate_configs(params, cell)]
        _, gate = gate_stage(params, store)
        placeholder = gate if gate["status"] == "pass" else {"status": "pass", "cell": params["gate_cells"][0]}
        reported = reported_params(params, placeholder)
        return gate_runs + [(run, config) for config in unique_configs(configs(reported))]
    return planned_runs(params, store)


# ---------------------------------------------------------------------------------------------
# The regime gate (issue 15): is there a warm-start penalty for a reset to fix?
# ---------------------------------------------------------------------------------------------
#: The gate's rules, declared before it ran. The regime of the paper: a network that fits each
#: mega-batch — training accuracy at the carried epoch of every mega-batch after the first, for BL
#: and for scratch, on every gate seed.
GATE_MIN_TRAIN_ACC = 0.95
#: The penalty a reset would have to fix: scratch − BL in final test accuracy, on every gate seed.
GATE_MIN_PENALTY = 0.01
#: What the chosen cell costs is reported beside the verdict, not part of it: the reported runs
#: (5 seeds × 5 methods and 3 seeds × 2, issue 15 §2) at the cell's recorded gate run time, +20 %
#: for the probes of the main table, on 2 workers; above 3 h the reported stage needs cuts.
LONG_REPORTED_RUNS = 5 * 5 + 3 * 2
LONG_BUDGET_MIN = 180.0
GATE_METHODS = ("bl", "scratch", "bl_code")
#: Images the gate evaluates on: training images outside the stream's pool, never the test set.
GATE_N_SELECT = 10000
#: The precondition every claim carries at a profile with a gate (:func:`preconditions`).
GATE_PRECONDITION = ("the regime gate passes: a cell where BL and scratch fit every mega-batch "
                     f"(≥ {GATE_MIN_TRAIN_ACC:.0%}) and scratch − BL ≥ {100 * GATE_MIN_PENALTY:g} pt on every gate seed")


def parse_cell(cell: str) -> dict:
    """``"8/1100/30/off"`` → width 8, 1,100 images per mega-batch (before the 90/10 split), 30
    epochs, augmentation off, fp32; an optional fifth field sets the precision (``.../bf16``) —
    with a clear error for anything else."""
    parts = cell.split("/")
    try:
        width, images, epochs = (int(v) for v in parts[:3])
        if len(parts) not in (4, 5) or parts[3] not in ("on", "off") or (len(parts) == 5 and parts[4] not in ("fp32", "bf16")):
            raise ValueError
    except ValueError:
        raise ValueError("a gate cell is WIDTH/IMAGES/EPOCHS/AUG[/PRECISION] with AUG on or off and PRECISION fp32 "
                         f"or bf16, e.g. '8/1100/30/off'; got {cell!r}") from None
    if min(width, images, epochs) <= 0:
        raise ValueError(f"a gate cell needs a positive width, image count and epoch count, got {cell!r}")
    return {"width": width, "images": images, "epochs": epochs, "augment": parts[3] == "on",
            "precision": parts[4] if len(parts) == 5 else "fp32"}


def cell_overrides(params: dict, cell: str) -> dict:
    """The stream settings of a gate cell: its width, a pool of ``images × n_megabatches``, its
    epochs with the lr dropping ×0.1 at 40 % and 80 % of them (the paper's 20 and 40 of 50),
    augmentation on or off (training and validation alike, as LURE's code) and its precision."""
    c = parse_cell(cell)
    e = c["epochs"]
    return {"width": c["width"], "n_pool": c["images"] * params["n_megabatches"], "epochs": e,
            "lr_milestones": sorted({round(0.4 * e), round(0.8 * e)}), "augment": c["augment"],
            "val_augment": c["augment"], "precision": c["precision"]}


def gate_configs(params: dict, cell: str) -> list[dict]:
    """The gate's runs at one cell: :data:`GATE_METHODS` × gate seeds, full replay over
    ``n_megabatches``, no probes, evaluated on :data:`GATE_N_SELECT` training images outside the
    pool (stream ``n_select``): the test set never chooses the cell."""
    if set(params["gate_seeds"]) & (set(params["seeds"]) | set(params["ablation_seeds"]) | set(params["grid_seeds"])):
        raise ValueError("gate_seeds must be apart from seeds, ablation_seeds and grid_seeds")
    over = cell_overrides(params, cell)
    shared = dict(dataset=params["dataset"], model=params["model"], n_select=GATE_N_SELECT,
                  n_megabatches=params["n_megabatches"], batch_size=params["batch_size"], lr=params["lr"],
                  weight_decay=params["weight_decay"], score_size=params["score_size"], init=params["init"], **over)
    return [stream.make_config(**{**shared, **VARIANTS[v], "seed": seed})
            for seed in params["gate_seeds"] for v in GATE_METHODS]


def gate_cell_table(params: dict, cell: str, store) -> pd.DataFrame | None:
    """One row per gate run of ``cell`` (None until all are stored): method, seed, final accuracy
    on the select images (column ``test_acc``: the stream's evaluation set), the lowest training accuracy at the carried epoch over the mega-batches after the
    first, and the recorded seconds."""
    configs_ = gate_configs(params, cell)
    if store is None or not all(store.complete(EXPERIMENT, c, version=run.code_version) for c in configs_):
        return None
    rows = []
    for config in configs_:
        stored = store.load(EXPERIMENT, config, version=run.code_version)
        mb = stored["megabatches"]
        rows.append({"cell": cell, "variant": variant_name(config), "seed": config["seed"],
                     "test_acc": float(stored["summary"].test_acc.iloc[0]),
                     "min_train_acc_after_first": float(mb[mb.megabatch > 1].train_acc.min()),
                     "train_acc_by_megabatch": ", ".join(f"{a:.2f}" for a in mb.train_acc),
                     "seconds": float(stored["summary"].seconds.iloc[0])})
    return pd.DataFrame(rows)


def gate_megabatches(params: dict, store, cells=None) -> pd.DataFrame:
    """The gate's stored runs mega-batch by mega-batch (for its figure): ``cell``, ``variant``,
    ``seed``, ``megabatch``, ``train_acc`` (at the carried epoch: the regime check) and
    ``test_acc`` (on the select images), for every run of ``cells`` (default: the grid) stored."""
    frames = []
    for cell in params["gate_cells"] if cells is None else cells:
        for config in gate_configs(params, cell):
            if store is not None and store.complete(EXPERIMENT, config, version=run.code_version):
                mb = store.load(EXPERIMENT, config, version=run.code_version)["megabatches"]
                frames.append(mb[["megabatch", "train_acc", "test_acc"]].assign(
                    cell=cell, variant=variant_name(config), seed=config["seed"]))
    columns = ["cell", "variant", "seed", "megabatch", "train_acc", "test_acc"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def gate_verdict(table: pd.DataFrame) -> dict:
    """The gate's rules on one cell's table (complete only with the official-code BL stored beside
    ours, so it is always measured): the networks fit (BL and scratch at least
    :data:`GATE_MIN_TRAIN_ACC` at every carried epoch after the first mega-batch, every seed) and
    the penalty exists (scratch − BL ≥ :data:`GATE_MIN_PENALTY` on every seed). Beside the verdict,
    not part of it: what the reported runs would cost at this cell (``long_cold_minutes``,
    ``affordable``)."""
    acc = table.pivot_table(index="seed", columns="variant", values="test_acc")
    fit = table[table.variant.isin(["bl", "scratch"])].min_train_acc_after_first
    penalty = acc["scratch"] - acc["bl"]
    run_min = float(table.seconds.mean()) / 60
    cold = (LONG_REPORTED_RUNS * run_min * 1.2 + table.seconds.sum() / 60) / 2
    out = {"min_train_acc": float(fit.min()), "penalty_mean": float(penalty.mean()),
           "penalty_min": float(penalty.min()), "bl_acc": float(acc["bl"].mean()),
           "scratch_acc": float(acc["scratch"].mean()), "bl_code_acc": float(acc["bl_code"].mean()),
           "run_minutes": run_min, "long_cold_minutes": cold, "affordable": bool(cold <= LONG_BUDGET_MIN)}
    # accuracies are error counts over the select images: compare with a tolerance, or an exact
    # one-point difference can fail on rounding
    out.update(fits=bool(fit.min() >= GATE_MIN_TRAIN_ACC - 1e-9),
               penalty=bool((penalty >= GATE_MIN_PENALTY - 1e-9).all()))
    out["passes"] = out["fits"] and out["penalty"]
    return out


def gate_summary(params: dict, store) -> dict:
    """The gate's outcome (:func:`gate_stage`) with every stored cell's rows in one ``table``."""
    return gates.summary_with_table(gate_stage(params, store)[1])


def gate_stage(params: dict, store) -> tuple[list[dict], dict]:
    """(configs still to compute, summary) of the gate (:func:`zaplib.gates.walk_cells` over
    ``gate_cells``): ``status`` is ``"pending"``, ``"pass"`` (``cell`` the chosen one) or ``"fail"``."""
    return gates.walk_cells(params["gate_cells"], lambda cell: gate_configs(params, cell),
                            lambda cell: gate_cell_table(params, cell, store), gate_verdict)


#: Image-steps per second on one thread of a width-8 ResNet-18, full replay (recorded by the quick
#: runs: ≈ 550 with validation, two workers); a wider network is priced at (width / 8)^1.5 more.
RATE_W8 = 550.0


def cost_seconds(config: dict) -> float | None:
    """Estimated seconds of one run on one thread: :func:`image_steps` at :data:`RATE_W8` scaled by
    width (ResNet-18 only; None for other networks), plus 20 % for the probes when configured."""
    if config["model"] != "resnet18":
        return None
    probes = 1.2 if config["corruptions"] or config["pgd_eps"] or config["weight_noise"] else 1.0
    return probes * image_steps(config) / (RATE_W8 / (config["width"] / 8) ** 1.5)


def image_steps(config: dict) -> float:
    """Training image-steps of one run (forward + backward of one image; probes not counted)."""
    t = config["n_megabatches"]
    per = (config["n_pool"] or 50000) // t * (1 - config["val_fraction"])
    units = {"full": t * (t + 1) / 2, "none": t, "buffered": t * 1.1}[config["replay"]]
    return per * units * config["epochs"]


def run_kind(config: dict) -> str:
    """The distinct kinds a dry run tries: the architectures (replay modes and resets change which
    data and weights a step sees, not whether it runs)."""
    return f"{config['model']} w{config['width']}"
