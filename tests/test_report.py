"""The book's one verdict rule (zaplib.report), on hand-built cases for every verdict and pitfall."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from zaplib import report
from zaplib.report import Claim, Precondition, Result, evaluate, holm, table


def claim(cid="zap", **kw) -> Claim:
    fields = dict(text=f"claim {cid}", paper="56.4 % vs 42.6 %", metric="acc", a="zap", b="bl")
    return Claim(cid, **{**fields, **kw})


def two_arms(a_values, b_values, metric="acc") -> pd.DataFrame:
    """One row per seed and arm; seeds numbered from 0 in each arm (so paired by seed)."""
    rows = [{"seed": i, "condition": "zap", metric: v} for i, v in enumerate(a_values)]
    rows += [{"seed": i, "condition": "bl", metric: v} for i, v in enumerate(b_values)]
    return pd.DataFrame(rows)


def result_with(c: Claim, p: float, estimate: float = 0.1, p_effect: float = math.nan) -> Result:
    """A result at the test stage with a chosen p, built by hand to exercise the verdict rule."""
    return Result(c, n_a=5, n_b=5, estimate=estimate, ci_lo=estimate - 0.05, ci_hi=estimate + 0.05,
                  p=p, p_effect=p_effect, test="Welch t")


def verdicts(frame: pd.DataFrame) -> dict[str, str]:
    return dict(zip(frame["id"], frame["verdict"]))


# ----------------------------------------------------------------------------- Holm
def test_holm_matches_hand_computation():
    # sorted 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> monotone 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    assert holm([]).shape == (0,)


# ----------------------------------------------------------------------------- every verdict from data
def test_reproduced_when_the_paper_direction_is_significant():
    frame = two_arms([0.56, 0.58, 0.55, 0.57, 0.59], [0.42, 0.44, 0.41, 0.43, 0.40])
    result = evaluate(claim(primary=True, scale=100, unit_label=" pts"), frame)
    welch = stats.ttest_ind(frame.acc[:5], frame.acc[5:], equal_var=False)
    assert result.p == pytest.approx(welch.pvalue)
    assert (result.ci_lo, result.ci_hi) == pytest.approx(tuple(welch.confidence_interval()))
    assert result.p_robust == pytest.approx(stats.mannwhitneyu(frame.acc[:5], frame.acc[5:]).pvalue)
    row = table([result]).iloc[0]
    assert row["verdict"] == "reproduced"
    assert row["ours"].startswith("+15.00 pts [")
    assert row["n"] == "5 vs 5" and row["role"] == "primary"


def test_opposite_when_the_other_direction_is_significant():
    frame = two_arms([0.42, 0.44, 0.41, 0.43, 0.40], [0.56, 0.58, 0.55, 0.57, 0.59])
    assert table([evaluate(claim(primary=True), frame)]).iloc[0]["verdict"] == "opposite"
    # a claim that zapping *hurts* reads the same numbers as reproduced
    assert table([evaluate(claim(direction=-1, primary=True), frame)]).iloc[0]["verdict"] == "reproduced"


def test_inconclusive_shows_its_interval():
    frame = two_arms([0.50, 0.60, 0.40, 0.55], [0.45, 0.62, 0.41, 0.50])
    row = table([evaluate(claim(primary=True), frame)]).iloc[0]
    assert row["verdict"] == "inconclusive"
    assert "[" in row["reason"] and "≥ 0.05" in row["reason"]


def test_two_units_per_arm_is_underpowered_and_says_the_n_needed():
    frame = two_arms([0.56, 0.58], [0.42, 0.44])
    result = evaluate(claim(primary=True), frame)
    row = table([result]).iloc[0]
    assert row["verdict"] == "underpowered"
    assert "2 vs 2" in row["reason"] and "needs ≥ 3" in row["reason"]
    assert row["p"] == ""  # no test is shown for an underpowered design
    five_each = two_arms([0.5] * 4 + [0.6], [0.4] * 4 + [0.3])
    assert evaluate(claim(min_units=5), five_each).stage == "tested"
    six = evaluate(claim(min_units=6), five_each)
    assert six.stage == "underpowered" and "needs ≥ 6" in six.reason


def test_failing_precondition_is_not_testable_and_names_its_measured_value():
    frame = two_arms([0.56, 0.58, 0.55], [0.42, 0.44, 0.41])
    checks = [Precondition("BL trains above 50 % accuracy", measured=0.34, holds=False, threshold="≥ 0.50"),
              Precondition.at_least("reset changes ≥ 1 % of weights", 0.2, 0.01)]
    row = table([evaluate(claim(primary=True), frame, checks)]).iloc[0]
    assert row["verdict"] == "not testable"
    assert row["reason"] == "BL trains above 50 % accuracy: measured 0.34 (needs ≥ 0.50)"


def test_precondition_helpers():
    assert Precondition.at_least("x", 0.6, 0.5).holds and not Precondition.at_least("x", 0.4, 0.5).holds
    assert not Precondition.at_least("x", math.nan, 0.5).holds
    assert Precondition.at_most("x", 0.4, 0.5).holds and not Precondition.at_most("x", 0.6, 0.5).holds


def test_not_run_is_not_testable():
    assert evaluate(claim(), None).stage == "not testable"
    only_zap = two_arms([0.5, 0.6, 0.7], [])
    result = evaluate(claim(), only_zap)
    assert result.stage == "not testable" and "'bl' not run" in result.reason


def test_zero_variance_does_not_crash_and_claims_nothing():
    result = evaluate(claim(primary=True), two_arms([0.5, 0.5, 0.5], [0.4, 0.4, 0.4]))
    row = table([result]).iloc[0]
    assert row["verdict"] == "inconclusive" and "undefined" in row["reason"]
    paired = evaluate(claim(paired=True), two_arms([0.5, 0.6, 0.7], [0.4, 0.5, 0.6]))
    assert table([paired]).iloc[0]["verdict"] == "inconclusive (exploratory)"


# ----------------------------------------------------------------------------- thresholds and Holm
@pytest.mark.parametrize("primary", [True, False])
def test_p_at_or_above_alpha_is_never_reproduced(primary):
    for p in [0.05, 0.0500001, 0.2, 0.9, 1.0]:
        for estimate in [-1.0, 0.01, 5.0]:
            results = [result_with(claim(f"c{d}", direction=d, primary=primary), p, estimate)
                       for d in (-1, +1)]
            assert all("reproduced" not in v and "opposite" not in v
                       for v in verdicts(table(results)).values())


def test_holm_turns_a_borderline_primary_into_inconclusive():
    family = [result_with(claim("first", primary=True), 0.04), result_with(claim("second", primary=True), 0.03),
              result_with(claim("twin"), 0.04)]
    frame = table(family)
    assert verdicts(frame) == {"first": "inconclusive", "second": "inconclusive",
                               "twin": "reproduced (exploratory)"}
    assert list(frame["p"]) == ["0.040", "0.030", "0.040"]
    assert list(frame["p (Holm)"]) == ["0.060", "0.060", ""]  # raw and adjusted both shown
    alone = table([result_with(claim("first", primary=True), 0.04)])
    assert alone.iloc[0]["verdict"] == "reproduced"


def test_the_family_is_every_declared_primary_and_an_untestable_one_counts_with_p_1():
    # the adjustment must not shrink because a regime check failed on the same runs
    underpowered = evaluate(claim("small", primary=True), two_arms([0.5, 0.6], [0.4, 0.3]))
    missing = evaluate(claim("missing", primary=True), None)
    frame = table([result_with(claim("main", primary=True), 0.015), underpowered, missing])
    assert verdicts(frame) == {"main": "reproduced", "small": "underpowered", "missing": "not testable"}
    assert frame.iloc[0]["p (Holm)"] == "0.045"                       # 3 × 0.015: m = 3, not 1
    frame = table([result_with(claim("main", primary=True), 0.03), underpowered, missing])
    assert verdicts(frame)["main"] == "inconclusive"                  # 3 × 0.03 = 0.09 ≥ 0.05


def test_a_paired_claim_with_a_shared_factor_compares_the_same_levels_in_both_arms():
    c = Claim(id="s", text="t", paper="p", metric="v", a="A", b="B", paired=True, shared="level")
    rows = []
    for seed in range(4):
        rows += [{"seed": seed, "condition": "A", "level": "x", "v": 1.0 + 0.01 * seed},
                 {"seed": seed, "condition": "B", "level": "x", "v": 0.0},
                 {"seed": seed, "condition": "A", "level": "y", "v": 101.0}]   # level y only in arm A
    r = evaluate(c, pd.DataFrame(rows))
    assert r.n_a == 4 and r.estimate == pytest.approx(1.015)  # y left out: it has no partner in B


def test_a_no_effect_claim_shows_the_interval_its_tost_corresponds_to():
    c = Claim(id="eq", text="t", paper="p", metric="v", a="A", b="B", direction=0, margin=1.0,
              paired=True, unit_label=" nats")
    rng = np.random.default_rng(0)
    diffs = rng.normal(0, 0.3, 8)
    rows = [{"seed": i, "condition": "A", "v": d} for i, d in enumerate(diffs)]
    rows += [{"seed": i, "condition": "B", "v": 0.0} for i in range(8)]
    r = evaluate(c, pd.DataFrame(rows))
    ci90 = stats.ttest_1samp(diffs, 0).confidence_interval(0.90)
    assert (r.ci_lo, r.ci_hi) == pytest.approx((ci90.low, ci90.high))
    row = table([r]).iloc[0]
    assert "(90 %)" in row["ours"] and "±1.00 nats" in row["reason"]


def test_opposite_needs_the_same_threshold():
    c = claim(primary=True)
    assert table([result_with(c, 0.06, estimate=-0.2)]).iloc[0]["verdict"] == "inconclusive"
    assert table([result_with(c, 0.01, estimate=-0.2)]).iloc[0]["verdict"] == "opposite"
    # Holm applies to the other direction too
    pair = [result_with(c, 0.03, estimate=-0.2), result_with(claim("other", primary=True), 0.04)]
    assert verdicts(table(pair))["zap"] == "inconclusive"


def test_family_limits():
    with pytest.raises(ValueError, match="at most 5"):
        table([result_with(claim(f"c{i}", primary=True), 0.01) for i in range(6)])
    with pytest.raises(ValueError, match="repeat"):
        table([result_with(claim("same"), 0.01), result_with(claim("same"), 0.02)])


# ----------------------------------------------------------------------------- no-effect claims
def test_a_no_effect_claim_must_declare_its_margin():
    with pytest.raises(ValueError, match="margin"):
        claim(direction=0)
    with pytest.raises(ValueError, match="margin"):
        Claim("r", "accuracy does not predict transfer", "r ≈ 0", kind="correlation", x="u", y="v",
              direction=0)
    assert claim(kind="equivalence", margin=0.01).direction == 0


def test_equivalence_by_tost():
    rng = np.random.default_rng(0)
    c = claim(kind="equivalence", margin=0.02, primary=True)
    same = two_arms(0.5 + rng.normal(0, 0.005, 20), 0.5 + rng.normal(0, 0.005, 20))
    result = evaluate(c, same)
    assert result.test.startswith("TOST (Welch t)")
    # TOST p = the larger of the two one-sided p-values, computed independently with scipy
    assert result.p == pytest.approx(max(_one_sided(same.acc[:20].to_numpy(), same.acc[20:].to_numpy(), 0.02)))
    assert table([result]).iloc[0]["verdict"] == "reproduced"
    # not significant, but far too noisy to show equivalence: never "reproduced"
    noisy = two_arms([0.3, 0.7, 0.5, 0.4], [0.6, 0.2, 0.5, 0.45])
    noisy_result = evaluate(c, noisy)
    assert noisy_result.p_effect > 0.05
    assert table([noisy_result]).iloc[0]["verdict"] == "inconclusive"
    # a clear difference contradicts a claim of no effect
    apart = two_arms([0.60, 0.61, 0.62, 0.60, 0.61], [0.50, 0.51, 0.52, 0.50, 0.51])
    assert table([evaluate(c, apart)]).iloc[0]["verdict"] == "opposite"


def _one_sided(a, b, margin):
    """TOST by shifting one arm: Welch t of a − b > −margin and of a − b < +margin (scipy)."""
    lower = stats.ttest_ind(a + margin, b, equal_var=False, alternative="greater").pvalue
    upper = stats.ttest_ind(a - margin, b, equal_var=False, alternative="less").pvalue
    return [lower, upper]


def test_paired_tost_uses_the_differences():
    base = np.linspace(0.3, 0.7, 8)
    frame = two_arms(base + np.array([0.0, 0.001, 0.002, 0.0, 0.001, 0.002, 0.0, 0.001]), base)
    result = evaluate(claim(kind="equivalence", margin=0.01, paired=True), frame)
    diffs = frame.acc[:8].to_numpy() - frame.acc[8:].to_numpy()
    expected = max(stats.ttest_1samp(diffs, -0.01, alternative="greater").pvalue,
                   stats.ttest_1samp(diffs, 0.01, alternative="less").pvalue)
    assert result.test.startswith("TOST (paired t)") and result.p == pytest.approx(expected)
    assert table([result]).iloc[0]["verdict"] == "reproduced (exploratory)"


# ----------------------------------------------------------------------------- correlations
def correlation_frame(x, y) -> pd.DataFrame:
    return pd.DataFrame({"seed": range(len(x)), "pretrain_acc": x, "transfer_acc": y})


def correlation_claim(**kw) -> Claim:
    return Claim("predicts", "pre-training accuracy predicts transfer", "r = 0.8", kind="correlation",
                 x="pretrain_acc", y="transfer_acc", **kw)


def test_correlation_uses_pearson_with_a_fisher_z_interval():
    rng = np.random.default_rng(1)
    x = rng.normal(size=12)
    frame = correlation_frame(x, x + rng.normal(0, 0.5, 12))
    result = evaluate(correlation_claim(primary=True), frame)
    r = stats.pearsonr(frame.pretrain_acc, frame.transfer_acc)[0]
    half = 1.959964 / math.sqrt(12 - 3)
    assert result.estimate == pytest.approx(r)
    assert (result.ci_lo, result.ci_hi) == pytest.approx(
        (math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)), rel=1e-4)
    frame_out = table([result])
    assert frame_out.iloc[0]["verdict"] == "reproduced" and frame_out.iloc[0]["n"] == "12 units"
    assert frame_out.iloc[0]["ours"].startswith("r = +")


def test_a_non_significant_correlation_is_never_no_effect_without_tost():
    rng = np.random.default_rng(2)
    frame = correlation_frame(rng.normal(size=6), rng.normal(size=6))
    claim_none = correlation_claim(direction=0, margin=0.3)
    result = evaluate(claim_none, frame)
    assert result.p_effect > 0.05  # not significant ...
    assert table([result]).iloc[0]["verdict"] == "inconclusive (exploratory)"  # ... yet not "no effect"
    # with many units the same kind of data shows |r| < 0.3 by TOST on Fisher z
    big = correlation_frame(rng.normal(size=400), rng.normal(size=400))
    assert table([evaluate(claim_none, big)]).iloc[0]["verdict"] == "reproduced (exploratory)"


def test_correlation_needs_four_units():
    frame = correlation_frame([0.1, 0.2, 0.3], [0.2, 0.4, 0.5])
    result = evaluate(correlation_claim(), frame)
    assert result.stage == "underpowered" and "needs ≥ 4" in result.reason


# ----------------------------------------------------------------------------- designs
def test_crossed_design_is_tested_on_model_means():
    rng = np.random.default_rng(3)
    rows = []
    for condition, shift in (("zap", 0.05), ("bl", 0.0)):
        for model in range(3):
            model_effect = rng.normal(0, 0.02)
            for trajectory in range(10):  # trajectories shared by every model
                rows.append({"model": model, "trajectory": trajectory, "condition": condition,
                             "acc": 0.5 + shift + model_effect + 0.03 * np.sin(trajectory)})
    frame = pd.DataFrame(rows)
    result = evaluate(claim(unit="model", shared="trajectory"), frame)
    model_means = frame.groupby(["condition", "model"]).acc.mean()
    assert (result.n_a, result.n_b) == (3, 3)
    assert result.estimate == pytest.approx(model_means["zap"].mean() - model_means["bl"].mean())
    assert result.p == pytest.approx(
        stats.ttest_ind(model_means["zap"], model_means["bl"], equal_var=False).pvalue)


def test_shared_factor_is_averaged_before_repeats():
    # unit 0 ran trajectory 0 three times and trajectory 1 once: mean of trajectory means is 0.5
    rows = [{"seed": 0, "trajectory": 0, "condition": "zap", "acc": 0.0}] * 3
    rows += [{"seed": 0, "trajectory": 1, "condition": "zap", "acc": 1.0}]
    rows += [{"seed": s, "trajectory": 0, "condition": c, "acc": 0.5}
             for s in (1, 2) for c in ("zap",)] + [{"seed": s, "trajectory": 0, "condition": "bl",
                                                   "acc": 0.5} for s in (0, 1, 2)]
    result = evaluate(claim(shared="trajectory"), pd.DataFrame(rows))
    assert result.estimate == pytest.approx(0.0)


def test_paired_design_drops_unpaired_units_and_counts_pairs():
    frame = two_arms([0.60, 0.55, 0.70, 0.65, 0.99], [0.50, 0.47, 0.58, 0.57])  # seed 4: zap only
    result = evaluate(claim(paired=True), frame)
    assert (result.n_a, result.n_b) == (4, 4)
    expected = stats.ttest_rel([0.60, 0.55, 0.70, 0.65], [0.50, 0.47, 0.58, 0.57])
    assert result.p == pytest.approx(expected.pvalue)
    assert result.estimate == pytest.approx(np.mean([0.10, 0.08, 0.12, 0.08]))
    assert result.test == "paired t / Wilcoxon"
    assert table([result]).iloc[0]["n"] == "4 pairs"


def test_repeat_rows_are_averaged_within_a_unit():
    frame = two_arms([0.6, 0.7, 0.8], [0.4, 0.5, 0.6])
    repeated = pd.concat([frame, frame.assign(acc=frame.acc + 0.02)], ignore_index=True)
    assert evaluate(claim(), repeated).n_a == 3


# ----------------------------------------------------------------------------- fixes of an effect
def test_a_missing_effect_makes_its_fixes_not_testable():
    effect = result_with(claim("deficit", primary=True), 0.4)
    fix = result_with(claim("fix", requires=("deficit",), primary=True), 0.001)
    frame = table([effect, fix])
    assert verdicts(frame) == {"deficit": "inconclusive", "fix": "not testable"}
    assert "requires 'deficit', which is inconclusive" in frame.iloc[1]["reason"]
    present = table([result_with(claim("deficit", primary=True), 0.001), fix])
    assert verdicts(present) == {"deficit": "reproduced", "fix": "reproduced"}


def test_requires_must_name_a_claim_without_cycles():
    with pytest.raises(ValueError, match="unknown"):
        table([result_with(claim("fix", requires=("nowhere",)), 0.01)])
    with pytest.raises(ValueError, match="cycle"):
        table([result_with(claim("a", requires=("b",)), 0.01), result_with(claim("b", requires=("a",)), 0.01)])


# ----------------------------------------------------------------------------- files and scoreboard
def test_claims_round_trip_and_scoreboard(tmp_path):
    zapping = table([result_with(claim("zap", primary=True), 0.01), result_with(claim("iid"), 0.3)])
    lure = table([evaluate(claim("lure"), None)])
    report.write_claims(zapping, tmp_path / "zapping.csv")
    report.write_claims(lure, tmp_path / "lure.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lure.csv", "zapping.csv"]  # no temp files
    tables = report.read_claims(sorted(tmp_path.glob("*.csv")))
    assert tables["zapping"]["p (Holm)"].tolist() == ["0.010", ""]
    board = report.scoreboard(tables, {"zapping": "long", "lure": "quick"})
    assert list(board.columns) == ["chapter", "claim", "paper", "ours", "verdict", "profile"]
    assert board.set_index("claim").loc["claim zap", "profile"] == "long"
    tally = report.counts(board)
    assert list(tally.columns) == list(report.VERDICTS)
    assert tally.loc["zapping"].tolist() == [0, 0, 1, 0, 1]
    assert tally.loc["lure"].tolist() == [1, 0, 0, 0, 0]


def test_table_keeps_the_numbers_for_gluing():
    frame = table([result_with(claim("zap", primary=True), 0.01, estimate=0.12)])
    assert report.results(frame)["zap"].estimate == 0.12
    assert report.results(frame)["zap"].verdict == "reproduced"


def test_publish_and_published_round_trip_in_chapter_order(tmp_path):
    rows = pd.DataFrame({"claim": ["a", "b"], "paper": ["x", "y"], "ours": ["1", "2"],
                         "verdict": ["reproduced", "inconclusive"]})
    report.publish(rows, "zapping", tmp_path, "quick")
    report.publish(rows.iloc[:1], "lure", tmp_path, "long")
    board = report.published(tmp_path, chapters=["zapping", "lure", "absent"])
    assert list(board.chapter) == ["zapping", "zapping", "lure"]
    assert list(board.profile) == ["quick", "quick", "long"]
    assert (tmp_path / "claims" / "lure.csv").exists()
    assert report.published(tmp_path / "nowhere").empty


def test_a_failed_precondition_keeps_the_numbers_but_no_p_value():
    c = claim("regime", primary=True)
    frame = two_arms([0.9, 1.0, 1.1, 1.2], [0.1, 0.2, 0.3, 0.2])
    r = evaluate(c, frame, [Precondition.at_least("BL fits its data", 0.3, 0.9)])
    assert r.stage == "not testable" and math.isnan(r.p) and not math.isnan(r.estimate)
    row = table([r]).iloc[0]
    assert row["verdict"] == "not testable" and row["p"] == "" and row["ours"] != "—"
    assert "measured 0.3" in row["reason"]
