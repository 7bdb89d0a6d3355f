"""Claims and verdicts: one rule for the whole book.

A chapter declares its claims (:class:`Claim`) in its module before the runs that test them are
computed: the metric, the two conditions and the paper's direction, the unit of replication, whether
the design is paired, the preconditions that make the claim meaningful, and whether it is primary.
:func:`evaluate` tests one claim on a tidy frame of runs; :func:`table` gives the family its verdicts.

**The test follows the design.** Rows are first averaged within each unit (pre-training seed,
training seed, ...) and arm, over the shared factor of a crossed design (e.g. trajectories shared by
every model) and over repeats, so the unit stays the unit of replication and never the trajectory.
Unpaired arms: Welch's t on unit means, Mann–Whitney U as the robustness column. Paired arms (same
units in both): paired t on the per-unit differences, Wilcoxon signed-rank as robustness; units seen
in one arm only are dropped. Correlations: Pearson r across unit means with a Fisher-z interval,
Spearman as robustness. The 95 % interval comes from the same test. A claim of *no* effect must
declare an equivalence margin and is tested by two one-sided tests (TOST; Schuirmann 1987): it holds
only when the effect is shown to lie inside ±margin. "Not significant" is never "no effect".

**Multiplicity.** At most five claims of a chapter are primary; they are one family, Holm-corrected
(Holm 1979) over every declared primary claim (one that cannot be tested counts with p = 1). Other claims are exploratory: unadjusted p, and
their verdicts are labelled "(exploratory)". Tables show raw and adjusted p.

**Verdicts**, applied in this order (threshold α = 0.05 on the Holm-adjusted p for primary claims,
on the raw p for exploratory ones):

1. *not testable*: a precondition fails (named, with its measured value), the claim was not run at
   this profile, or a claim it requires (e.g. the effect a fix is meant to restore) is not reproduced;
   its estimate and interval are still shown where they can be computed, its p-values are not;
2. *underpowered*: fewer units per arm (pairs, when paired) than the claim's ``min_units`` (at least
   4 units for a correlation); the reason states the n needed;
3. *reproduced*: the paper's direction at p < α (for a no-effect claim: TOST p < α);
4. *opposite*: the other direction at the same threshold (for a no-effect claim: the ordinary test
   finds an effect, at p < α, Bonferroni over the family when primary);
5. *inconclusive*: everything else, with its interval shown. This includes arms with no variation
   at all, where a t test is undefined: we report the numbers and claim nothing.

A verdict never goes beyond its numbers.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
MAX_PRIMARY = 5
VERDICTS = ("not testable", "underpowered", "reproduced", "opposite", "inconclusive")
KINDS = ("difference", "correlation", "equivalence")
# A correlation's Fisher-z interval needs n − 3 > 0, so fewer than 4 units can never be tested.
MIN_UNITS_CORRELATION = 4


@dataclass(frozen=True)
class Claim:
    """One claim a chapter tests, declared before its runs (see the module docstring for the rule).

    ``margin`` is in the metric's own units (before ``scale``) for differences and in units of r for
    correlations. ``kind="equivalence"`` is a difference claim with ``direction=0``.
    """

    id: str
    text: str
    paper: str
    metric: str = ""
    a: str | None = None
    b: str | None = None
    direction: int = +1
    kind: str = "difference"
    unit: str = "seed"
    condition: str = "condition"
    paired: bool = False
    shared: str | None = None
    x: str | None = None
    y: str | None = None
    margin: float | None = None
    primary: bool = False
    requires: tuple[str, ...] = ()
    min_units: int = 3
    scale: float = 1.0
    unit_label: str = ""
    digits: int = 2

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id!r}: kind must be one of {KINDS}, not {self.kind!r}")
        if self.kind == "equivalence":
            object.__setattr__(self, "direction", 0)
        if self.direction not in (-1, 0, 1):
            raise ValueError(f"claim {self.id!r}: direction must be -1, 0 or +1")
        if self.direction == 0 and not (self.margin and self.margin > 0):
            raise ValueError(f"claim {self.id!r}: a claim of no effect must declare a margin > 0 "
                             "(tested by TOST); 'not significant' is not 'no effect'")
        if self.kind == "correlation":
            if not (self.x and self.y):
                raise ValueError(f"claim {self.id!r}: a correlation claim names columns x and y")
            if self.margin is not None and not 0 < self.margin < 1:
                raise ValueError(f"claim {self.id!r}: a correlation margin lies in (0, 1)")
        elif not (self.metric and self.a is not None and self.b is not None):
            raise ValueError(f"claim {self.id!r}: a difference claim names metric, a and b")
        if self.min_units < 2:
            raise ValueError(f"claim {self.id!r}: min_units must be at least 2")
        object.__setattr__(self, "requires", tuple(self.requires))

    @property
    def no_effect(self) -> bool:
        return self.direction == 0


@dataclass(frozen=True)
class Precondition:
    """A regime check with its measured value, e.g. ``Precondition("BL trains above 50 %
    accuracy", measured=0.34, holds=False, threshold="≥ 0.50")``."""

    name: str
    measured: float | str
    holds: bool
    threshold: str = ""

    @classmethod
    def at_least(cls, name: str, measured: float, minimum: float) -> Precondition:
        """Holds when ``measured >= minimum`` (a NaN measurement fails)."""
        return cls(name, measured, bool(measured >= minimum), f"≥ {minimum:g}")

    @classmethod
    def at_most(cls, name: str, measured: float, maximum: float) -> Precondition:
        """Holds when ``measured <= maximum`` (a NaN measurement fails)."""
        return cls(name, measured, bool(measured <= maximum), f"≤ {maximum:g}")

    def describe(self) -> str:
        value = f"{self.measured:.4g}" if isinstance(self.measured, (int, float)) else self.measured
        needs = f" (needs {self.threshold})" if self.threshold else ""
        return f"{self.name}: measured {value}{needs}"


@dataclass(frozen=True)
class Result:
    """One claim's numbers. ``stage`` is "tested" or the verdict reached before any test
    ("not testable", "underpowered"); ``p_holm``, ``verdict`` and ``reason`` are final after
    :func:`table`. ``p`` is the primary two-sided p (for a no-effect claim, the TOST p) and
    ``p_effect`` the ordinary test's p of a no-effect claim."""

    claim: Claim
    n_a: int = 0
    n_b: int = 0
    estimate: float = math.nan
    ci_lo: float = math.nan
    ci_hi: float = math.nan
    p: float = math.nan
    p_robust: float = math.nan
    p_effect: float = math.nan
    test: str = ""
    preconditions: tuple[Precondition, ...] = ()
    stage: str = "tested"
    reason: str = ""
    p_holm: float = math.nan
    verdict: str = ""

    @property
    def label(self) -> str:
        """The verdict as shown: test-stage verdicts of exploratory claims say so."""
        tested = self.verdict in ("reproduced", "opposite", "inconclusive")
        return f"{self.verdict} (exploratory)" if tested and not self.claim.primary else self.verdict


# ----------------------------------------------------------------------------- tests on unit means
def _unit_means(claim: Claim, frame: pd.DataFrame, values: list[str]) -> pd.DataFrame:
    """Average ``values`` within (arm, unit): over the shared factor first, then over repeats."""
    keys = [claim.unit] if claim.kind == "correlation" else [claim.condition, claim.unit]
    needed = keys + values + ([claim.shared] if claim.shared else [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise KeyError(f"claim {claim.id!r}: the frame lacks columns {missing}")
    if claim.shared:
        frame = frame.groupby(keys + [claim.shared], sort=False)[values].mean().reset_index()
    return frame.groupby(keys, sort=True)[values].mean().dropna()


def _tost_t(diff: float, se: float, df: float, margin: float) -> float:
    """Two one-sided t tests of H0: diff ≤ −margin and H0: diff ≥ +margin; the larger p."""
    p_above_lower = stats.t.sf((diff + margin) / se, df)
    p_below_upper = stats.t.cdf((diff - margin) / se, df)
    return float(max(p_above_lower, p_below_upper))


def _robust(test, *args) -> float:
    """p of a rank test, NaN when it is undefined (e.g. Wilcoxon with every difference zero)."""
    try:
        return float(test(*args).pvalue)
    except ValueError:
        return math.nan


def _difference(claim: Claim, frame: pd.DataFrame, base: Result) -> Result:
    frame = frame[frame[claim.condition].isin([claim.a, claim.b])]
    if claim.paired and claim.shared and claim.shared in frame.columns:
        # a pair compares the same shared levels in both arms: keep the (unit, level) cells run in both
        cells = frame.groupby([claim.unit, claim.shared])[claim.condition].nunique()
        both = cells[cells == 2].index
        frame = frame.set_index([claim.unit, claim.shared]).loc[lambda f: f.index.isin(both)].reset_index()
    means = _unit_means(claim, frame, [claim.metric])
    by_arm = means[claim.metric].unstack(claim.condition)
    for arm in (claim.a, claim.b):
        if arm not in by_arm.columns or by_arm[arm].notna().sum() == 0:
            return replace(base, stage="not testable", reason=f"condition {arm!r} not run at this profile")
    if claim.paired:
        pairs = by_arm[[claim.a, claim.b]].dropna()
        xa, xb = pairs[claim.a].to_numpy(float), pairs[claim.b].to_numpy(float)
    else:
        xa, xb = by_arm[claim.a].dropna().to_numpy(float), by_arm[claim.b].dropna().to_numpy(float)
    result = replace(base, n_a=len(xa), n_b=len(xb),
                     estimate=float(np.mean(xa - xb) if claim.paired else xa.mean() - xb.mean()))
    if min(len(xa), len(xb)) < claim.min_units:
        have = f"{len(xa)} pairs" if claim.paired else f"{len(xa)} vs {len(xb)} units"
        per = "pairs" if claim.paired else "units per arm"
        return replace(result, stage="underpowered", reason=f"{have}; needs ≥ {claim.min_units} {per}")
    if claim.paired:
        diffs = xa - xb
        degenerate = np.ptp(diffs) == 0
        name, robust = "paired t", "Wilcoxon"
    else:
        degenerate = np.ptp(xa) == 0 and np.ptp(xb) == 0
        name, robust = "Welch t", "Mann–Whitney U"
    if degenerate:  # zero standard error: t is undefined; report the estimate, claim nothing
        what = "the paired differences are all equal" if claim.paired else "no variation within either arm"
        return replace(result, test=name, reason=f"{what}: the t test is undefined")
    if claim.paired:
        tested = stats.ttest_rel(xa, xb)
        se, df = diffs.std(ddof=1) / math.sqrt(len(diffs)), len(diffs) - 1
        p_robust = _robust(stats.wilcoxon, diffs)
    else:
        tested = stats.ttest_ind(xa, xb, equal_var=False)
        va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1))
        p_robust = _robust(stats.mannwhitneyu, xa, xb)
    # a no-effect claim shows the 1 − 2α interval, the one its TOST at α corresponds to
    ci = tested.confidence_interval(1 - 2 * ALPHA if claim.no_effect else 1 - ALPHA)
    result = replace(result, ci_lo=float(ci.low), ci_hi=float(ci.high), p_robust=p_robust,
                     test=f"{name} / {robust}", p=float(tested.pvalue))
    if claim.no_effect:
        p_tost = _tost_t(result.estimate, se, df, claim.margin)
        return replace(result, p=p_tost, p_effect=float(tested.pvalue),
                       test=f"TOST ({name}) / {robust}")
    return result


def _correlation(claim: Claim, frame: pd.DataFrame, base: Result) -> Result:
    means = _unit_means(claim, frame, [claim.x, claim.y])
    n = len(means)
    if n == 0:
        return replace(base, stage="not testable", reason="not run at this profile")
    needed = max(claim.min_units, MIN_UNITS_CORRELATION)
    if n < needed:
        return replace(base, n_a=n, n_b=n, stage="underpowered", reason=f"{n} units; needs ≥ {needed}")
    x, y = means[claim.x].to_numpy(float), means[claim.y].to_numpy(float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return replace(base, n_a=n, n_b=n, test="Pearson r",
                       reason="a variable is constant across units: r is undefined")
    pearson = stats.pearsonr(x, y)
    ci = pearson.confidence_interval(1 - 2 * ALPHA if claim.no_effect else 1 - ALPHA)  # Fisher z
    result = replace(base, n_a=n, n_b=n, estimate=float(pearson.statistic), ci_lo=float(ci.low),
                     ci_hi=float(ci.high), p=float(pearson.pvalue), test="Pearson r / Spearman",
                     p_robust=float(stats.spearmanr(x, y).pvalue))
    if claim.no_effect:  # TOST on Fisher z: H0 r ≤ −margin and H0 r ≥ +margin
        z = math.atanh(min(max(result.estimate, -1 + 1e-12), 1 - 1e-12))
        se = 1 / math.sqrt(n - 3)
        p_tost = max(stats.norm.sf((z + math.atanh(claim.margin)) / se),
                     stats.norm.cdf((z - math.atanh(claim.margin)) / se))
        return replace(result, p=float(p_tost), p_effect=result.p, test="TOST (Fisher z) / Spearman")
    return result


def evaluate(claim: Claim, frame: pd.DataFrame | None,
             preconditions: Sequence[Precondition] = (), unrun_reason: str | None = None) -> Result:
    """Test one claim on a tidy frame: columns ``unit, condition, metric[, shared]`` for a
    difference, ``unit, x, y`` for a correlation (one row per run; rows are averaged within unit
    and arm before testing). ``frame=None`` means the claim was not run at this profile; it is not
    testable, with ``unrun_reason`` as its reason when the chapter knows why (e.g. a failed regime
    gate's measured values), else "not run at this profile"."""
    base = Result(claim, preconditions=tuple(preconditions))
    if frame is None or frame.empty:
        return replace(base, stage="not testable", reason=unrun_reason or "not run at this profile")
    test = _correlation if claim.kind == "correlation" else _difference
    failing = [p.describe() for p in preconditions if not p.holds]
    if not failing:
        return test(claim, frame, base)
    # The numbers stay visible (when they can be computed); the p-values go, since no test is made.
    try:
        result = test(claim, frame, base)
    except (KeyError, ValueError):
        result = base
    return replace(result, stage="not testable", reason="; ".join(failing), p=math.nan,
                   p_effect=math.nan, p_robust=math.nan)


# ----------------------------------------------------------------------------- the family's verdicts
def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values: the k-th smallest p times (m − k + 1), made
    monotone and capped at 1; controls the family-wise error rate at α."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def _format(value: float, claim: Claim, sign: bool = True) -> str:
    spec = f"{'+' if sign else ''}.{claim.digits}f"
    return format(value * (1 if claim.kind == "correlation" else claim.scale), spec)


def ours(result: Result) -> str:
    """The estimate with its 95 % interval, e.g. ``+5.30 pts [+1.20, +9.40]`` or
    ``r = +0.42 [-0.10, +0.80]`` (a no-effect claim: its 90 % interval, marked, the one its TOST at
    α = 0.05 corresponds to); ``—`` when there is no estimate."""
    claim = result.claim
    if math.isnan(result.estimate):
        return "—"
    prefix, label = ("r = ", "") if claim.kind == "correlation" else ("", claim.unit_label)
    level = f" ({100 * (1 - 2 * ALPHA):.0f} %)" if claim.no_effect else ""
    interval = (f"[{_format(result.ci_lo, claim)}, {_format(result.ci_hi, claim)}]{level}"
                if not math.isnan(result.ci_lo) else "(no interval)")
    return f"{prefix}{_format(result.estimate, claim)}{label} {interval}"


def _verdict(result: Result, p_used: float, p_effect_used: float, level: str) -> tuple[str, str]:
    """The verdict at the test stage: (verdict, reason)."""
    claim = result.claim
    interval = ours(result)
    if math.isnan(p_used):
        return "inconclusive", f"{result.reason}; {interval}".lstrip("; ")
    if claim.no_effect:
        margin = _format(claim.margin, claim, False) + ("" if claim.kind == "correlation" else claim.unit_label)
        if p_used < ALPHA:
            return "reproduced", f"within ±{margin}: {level} = {p_used:.3g}"
        if p_effect_used < ALPHA:
            return "opposite", f"an effect exists: p = {p_effect_used:.3g}; {interval}"
        return "inconclusive", (f"neither within ±{margin} ({level} = "
                                f"{p_used:.3g}) nor different (p = {p_effect_used:.3g}); {interval}")
    if p_used < ALPHA:
        same = np.sign(result.estimate) == claim.direction
        side = "the paper's direction" if same else "the other direction"
        return ("reproduced" if same else "opposite"), f"{side}, {level} = {p_used:.3g} < {ALPHA}"
    return "inconclusive", f"{level} = {p_used:.3g} ≥ {ALPHA}; {interval}"


def _resolve_requires(results: dict[str, Result]) -> dict[str, Result]:
    """Make a claim "not testable" when a claim it requires is not reproduced (in dependency order)."""
    done: dict[str, Result] = {}

    def visit(cid: str, path: tuple[str, ...]) -> Result:
        if cid in path:
            raise ValueError(f"claims require each other in a cycle: {' -> '.join(path + (cid,))}")
        if cid not in done:
            result = results[cid]
            for need in result.claim.requires:
                if need not in results:
                    raise ValueError(f"claim {cid!r} requires unknown claim {need!r}")
                required = visit(need, path + (cid,))
                if result.verdict != "not testable" and required.verdict != "reproduced":
                    reason = f"requires {need!r}, which is {required.verdict} ({ours(required)})"
                    result = replace(result, verdict="not testable", reason=reason)
            done[cid] = result
        return done[cid]

    for cid in results:
        visit(cid, ())
    return done


def judge(results: Sequence[Result]) -> list[Result]:
    """Give a family of results their Holm-adjusted p and verdicts (see :func:`table`)."""
    ids = [r.claim.id for r in results]
    if len(set(ids)) != len(ids):
        raise ValueError(f"claim ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    n_primary = sum(r.claim.primary for r in results)
    if n_primary > MAX_PRIMARY:
        raise ValueError(f"{n_primary} primary claims; a chapter declares at most {MAX_PRIMARY}")
    # The family is every declared primary claim, whatever the data: one that cannot be tested
    # (a failed precondition, too few units, not run) counts with p = 1, so the adjustment never
    # shrinks because a regime check failed on the same runs.
    primaries = [i for i, r in enumerate(results) if r.claim.primary]
    family = [i for i in primaries if results[i].stage == "tested" and not math.isnan(results[i].p)]
    pvalues = [results[i].p if i in family else 1.0 for i in primaries]
    adjusted = {i: p for i, p in zip(primaries, holm(pvalues)) if i in family}
    judged = {}
    for i, r in enumerate(results):
        if r.stage != "tested":
            judged[r.claim.id] = replace(r, verdict=r.stage)
            continue
        if r.claim.primary:
            p_used, level = adjusted.get(i, math.nan), "p (Holm)"
            # The effect test of a no-effect claim is a second test of the same claim: Bonferroni.
            p_effect_used = min(1.0, r.p_effect * len(primaries))
        else:
            p_used, level, p_effect_used = r.p, "p", r.p_effect
        verdict, reason = _verdict(r, p_used, p_effect_used, level)
        judged[r.claim.id] = replace(r, p_holm=adjusted.get(i, math.nan), verdict=verdict, reason=reason)
    resolved = _resolve_requires(judged)
    return [resolved[i] for i in ids]


def _p(value: float) -> str:
    return "" if math.isnan(value) else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def table(results: Sequence[Result]) -> pd.DataFrame:
    """A chapter's claims table, one row per claim, verdicts by the module's rule.

    Columns: id, claim, role, paper, ours, n, test, p, p (Holm), robustness p, verdict, reason (p
    columns are display strings; blank where not applicable). The judged :class:`Result` objects,
    with every number, are in ``table.attrs["results"]`` (see :func:`results`)."""
    judged = judge(results)
    rows = []
    for r in judged:
        c = r.claim
        if r.n_a == 0 and r.n_b == 0:
            n = "—"
        elif c.kind == "correlation":
            n = f"{r.n_a} units"
        else:
            n = f"{r.n_a} pairs" if c.paired else f"{r.n_a} vs {r.n_b}"
        rows.append({"id": c.id, "claim": c.text, "role": "primary" if c.primary else "exploratory",
                     "paper": c.paper, "ours": ours(r), "n": n, "test": r.test, "p": _p(r.p),
                     "p (Holm)": _p(r.p_holm), "robustness p": _p(r.p_robust),
                     "verdict": r.label, "reason": r.reason})
    frame = pd.DataFrame(rows, columns=["id", "claim", "role", "paper", "ours", "n", "test", "p",
                                        "p (Holm)", "robustness p", "verdict", "reason"])
    frame.attrs["results"] = judged
    return frame


def results(claims_table: pd.DataFrame) -> dict[str, Result]:
    """The judged results behind a table made by :func:`table`, by claim id (for gluing numbers)."""
    return {r.claim.id: r for r in claims_table.attrs["results"]}


# ----------------------------------------------------------------------------- files and the scoreboard
def write_claims(claims_table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a claims table as CSV, atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False,
                                     encoding="utf-8", newline="") as handle:
        claims_table.to_csv(handle, index=False)
    os.replace(handle.name, path)
    return path


def read_claims(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> dict[str, pd.DataFrame]:
    """Read claims tables written by :func:`write_claims`, keyed by file stem (the chapter)."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    return {Path(p).stem: pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths}


#: Folder of the results store where each chapter publishes its claims table for the scoreboard.
CLAIMS_FOLDER = "claims"


def publish(claims_table: pd.DataFrame, chapter: str, store_root: str | os.PathLike,
            profile: str) -> Path:
    """Write a chapter's claims table (with the profile it was computed at) to
    ``<store_root>/claims/<chapter>.csv``, where the introduction's scoreboard reads it. The
    executed chapter notebook calls this once, after :func:`table`."""
    return write_claims(claims_table.drop(columns="profile", errors="ignore").assign(profile=profile),
                        Path(store_root) / CLAIMS_FOLDER / f"{chapter}.csv")


def published(store_root: str | os.PathLike, chapters: Sequence[str] | None = None) -> pd.DataFrame:
    """The scoreboard of every claims table published under ``store_root`` (in ``chapters`` order
    when given; chapters without a published table are left out)."""
    folder = Path(store_root) / CLAIMS_FOLDER
    paths = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    if chapters is not None:
        by_name = {p.stem: p for p in paths}
        paths = [by_name[c] for c in chapters if c in by_name]
    tables = read_claims(paths)
    profiles = {name: (t["profile"].iloc[0] if "profile" in t and len(t) else "") for name, t in tables.items()}
    return scoreboard(tables, profiles)


def note(name: str, value) -> None:
    """Glue a number or string for a chapter's prose (``{glue:text}`name:.1f```); numpy scalars
    become plain Python values first."""
    from myst_nb import glue  # imported here: only executed notebooks glue, the library never needs it

    glue(name, value.item() if hasattr(value, "item") else value, display=False)


def scoreboard(tables: Mapping[str, pd.DataFrame], profiles: Mapping[str, str]) -> pd.DataFrame:
    """Every chapter's claims on one board: chapter, claim, paper, ours, verdict, profile."""
    columns = ["chapter", "claim", "paper", "ours", "verdict", "profile"]
    boards = [t.assign(chapter=chapter, profile=profiles.get(chapter, ""))[columns]
              for chapter, t in tables.items()]
    return pd.concat(boards, ignore_index=True) if boards else pd.DataFrame(columns=columns)


def counts(board: pd.DataFrame) -> pd.DataFrame:
    """Verdict counts per chapter (exploratory labels folded into their verdict), all five columns."""
    verdict = board["verdict"].str.replace(" (exploratory)", "", regex=False)
    return (pd.crosstab(board["chapter"], verdict)
            .reindex(columns=list(VERDICTS), fill_value=0).rename_axis(columns=None))


__all__ = ["ALPHA", "MAX_PRIMARY", "VERDICTS", "Claim", "Precondition", "Result", "evaluate", "holm",
           "judge", "table", "results", "ours", "write_claims", "read_claims", "publish", "published",
           "scoreboard", "counts", "note", "CLAIMS_FOLDER"]
