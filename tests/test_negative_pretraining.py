"""The negative pre-training chapter module (zaplib.experiments.negative_pretraining): its claims
declaration, its plan of conditions, the frames and preconditions the claims are tested on, and the
sweep's early stop on a missing dataset."""

import numpy as np
import pandas as pd
import pytest

from zaplib import data, report
from zaplib import learning_paths as P
from zaplib.experiments import negative_pretraining as N
from zaplib.runner import config_hash, resolve_params


@pytest.fixture(scope="module")
def smoke():
    return resolve_params("negative_pretraining", profile="smoke")


@pytest.fixture(scope="module")
def quick():
    return resolve_params("negative_pretraining", profile="quick")


# ----------------------------------------------------------------------------- the declaration
def test_claims_are_a_valid_family():
    ids = [c.id for c in N.CLAIMS]
    assert len(ids) == len(set(ids))
    assert 1 <= sum(c.primary for c in N.CLAIMS) <= report.MAX_PRIMARY
    assert {c.id for c in N.CLAIMS if c.primary} == {"deficit", "control_needs_blur", "fix_A_higher_rate",
                                                      "fix_B_finer_blur", "fix_C_bias_both"}  # control: issue 16
    for claim in N.CLAIMS:
        assert claim.unit == "seed" and claim.paired  # every condition of a seed starts from one network
        assert set(claim.requires) <= set(ids)
    # every fix of the blur deficit is "not testable" without the deficit
    for cid in ("fix_A_higher_rate", "fix_B_finer_blur", "fix_C_bias_both", "C_bias_task1_only",
                "A_changing_beats_constant"):
        assert next(c for c in N.CLAIMS if c.id == cid).requires == ("deficit",)
    s7 = next(c for c in N.CLAIMS if c.id == "S7_train_loss_same")
    assert s7.no_effect and s7.margin == N.TRAIN_LOSS_MARGIN > 0
    report.judge([report.evaluate(c, None) for c in N.CLAIMS])  # no cycle, no unknown requirement


def test_every_claim_compares_arms_that_the_full_profile_runs(quick):
    full = dict(quick, lr_factors=[0.5, 2.0])  # the paper's grid: a lower and a higher rate
    arms = N.arms(full)
    plan = N.plan(full)
    # issue 16's curve, paper-protocol, equal-epoch and negative-control arms are long's (test_negative_long)
    for claim in [c for c in N.CLAIMS if c.a in arms and c.b in arms]:
        for arm in (claim.a, claim.b):
            group, label, x = arms[arm]
            rows = N.condition(plan, group, label, x)
            assert sorted(rows["seed"]) == sorted(full["seeds"] if group in ("baseline", "A", "C", "control", "B-blur")
                                                  else full["disc_seeds"]), (claim.id, arm)


def test_arms_a_profile_does_not_run_are_left_out(quick):
    arms = N.arms(quick)  # lr_factors [2.0]: no lower rate
    assert N.LOWER_RATE_TASK2 not in arms and N.HIGHER_RATE_TASK2 in arms
    assert arms[N.HIGHER_RATE_TASK2] == ("A", "0.01 → 0.02", None)
    assert arms[N.BLUR_CLEAN] == ("A", "0.01 → 0.01", None)
    no_path = N.arms(dict(quick, n_steps=[3], control=False))
    assert N.jump("blur") not in no_path and N.finest("blur") in no_path and N.CLEAN_CLEAN not in no_path


# ----------------------------------------------------------------------------- the plan (moved from learning_paths)
def test_plan_groups_and_dedup(smoke):
    plan = N.plan(smoke)
    assert {"baseline", "A", "C", "B-blur", "B-contrast", "B-shift", "control"} <= set(plan["group"])
    assert len(plan.query("group == 'C'")["condition"].unique()) == 4
    default = plan.query("group == 'A' and x == 0").iloc[0]
    no_no = plan.query("group == 'C' and condition == '[No, No]' and seed == @default.seed").iloc[0]
    assert config_hash(default.config) == config_hash(no_no.config)
    configs = N.configs(smoke)
    assert len(configs) == len({config_hash(c) for c in plan["config"]}) < len(plan)


def test_plan_paths_follow_the_interventions(smoke):
    plan = N.plan(smoke)
    first = lambda group, label: N.condition(plan, group, label).iloc[0].config["path"]
    yes_no = first("C", "[Yes, No]")
    assert [s["bias_shift"] for s in yes_no] == [smoke["bias_shift"], 0.0]
    assert yes_no[0]["task"]["blur"] == smoke["blur_k"] and yes_no[1]["task"]["blur"] == 1.0
    higher = first("A", "0.01 → 0.02")
    assert [s["process"]["lr"] for s in higher] == [0.01, 0.02]
    assert higher[0]["process"]["patience"] is None  # a fixed-length first task
    assert higher[0]["process"]["max_epochs"] == smoke["first_epochs"]
    control = first("control", "clean → clean")
    assert all(s["task"]["blur"] == 1.0 for s in control)
    assert len(first("baseline", "clean only")) == 1
    assert len(N.condition(plan, "B-blur", x=3).iloc[0].config["path"]) == 3


def test_order_label():
    assert N.order_label("blur+contrast", "first_then_second") == "blur then contrast"
    assert N.order_label("blur+contrast", "second_then_first") == "contrast then blur"
    assert N.order_label("blur+shift", "diagonal") == "diagonal"


def test_stored_run_is_declared_for_the_chapters_experiment():
    assert N.run.experiment == N.EXPERIMENT == N.CHAPTER.experiments[0]
    assert N.run.code_version == 2  # the version the stored runs are keyed on


# ----------------------------------------------------------------------------- frames and verdicts
def _synthetic_final(p, deficit=0.3, seeds=None, accuracy=0.5):
    """A plan's ``final`` table with test loss 1 + deficit on every two-task blur path, 1 on the
    baseline and the fixes (−deficit), plus seed noise; 5 seeds."""
    plan = N.plan(p)
    rng = np.random.default_rng(0)
    noise = {s: rng.normal(0, 0.01) for s in plan["seed"].unique()}
    rows = []
    for row in plan.itertuples(index=False):
        blurred = row.config["path"][0]["task"]["blur"] != 1 and len(row.config["path"]) > 1
        fixed = (row.group == "C" and row.condition != "[No, No]") or (
            row.group == "A" and row.condition.endswith("→ 0.02")) or (row.group == "B-blur" and row.x > 2)
        loss = 1 + (deficit if blurred and not fixed else 0) + noise[row.seed] + rng.normal(0, 0.002)
        rows.append({"dataset": row.dataset, "group": row.group, "condition": row.condition, "x": row.x,
                     "seed": row.seed, "test_loss": loss, "test_acc": accuracy,
                     "last_best_epoch": 10 + rng.normal(0, 1), "last_train_loss_at_best": 0.5 + rng.normal(0, 0.005), "last_train_loss": 0.3 + rng.normal(0, 0.005)})
    final = pd.DataFrame(rows)
    steps = final[["dataset", "group", "condition", "x", "seed"]].assign(entries_shifted=100)
    return final, steps


def _table(final, steps, p):
    frames, checks = N.claim_frames(final, p), N.preconditions(final, steps, p)
    return report.table([report.evaluate(c, frames[c.id], checks.get(c.id, ())) for c in N.CLAIMS])


def test_claim_frames_are_tidy_and_tested_paired(quick):
    final, steps = _synthetic_final(quick)
    frames = N.claim_frames(final, quick)
    assert frames["A_lower_rate_worse"] is None  # quick runs no lower rate
    for claim in N.CLAIMS:
        frame = frames[claim.id]
        if frame is None:
            continue
        assert {"seed", "condition", claim.metric} <= set(frame.columns)
        assert set(frame["condition"]) == {claim.a, claim.b}
    deficit = frames["deficit"]
    assert sorted(deficit.query("condition == @N.BLUR_CLEAN")["seed"]) == quick["seeds"]
    verdicts = report.results(_table(final, steps, quick))
    assert verdicts["deficit"].test.startswith("paired t")
    assert verdicts["deficit"].verdict == "reproduced"
    assert verdicts["fix_A_higher_rate"].verdict == "reproduced"
    assert verdicts["fix_C_bias_both"].verdict == "reproduced"
    assert verdicts["S7_train_loss_same"].verdict == "reproduced"  # equal training losses within the margin
    assert verdicts["A_lower_rate_worse"].verdict == "not testable"


def test_without_a_deficit_the_fixes_are_not_testable(quick):
    final, steps = _synthetic_final(quick, deficit=0.0)
    verdicts = report.results(_table(final, steps, quick))
    assert verdicts["deficit"].verdict != "reproduced"
    for cid in ("fix_A_higher_rate", "fix_B_finer_blur", "fix_C_bias_both", "C_bias_task1_only"):
        assert verdicts[cid].verdict == "not testable"
        assert "requires 'deficit'" in verdicts[cid].reason


def test_a_baseline_that_does_not_learn_makes_the_deficit_not_testable(quick):
    final, steps = _synthetic_final(quick, accuracy=0.12)
    checks = N.preconditions(final, steps, quick)
    assert not checks["deficit"][0].holds and checks["deficit"][0].measured == pytest.approx(0.12)
    verdicts = report.results(_table(final, steps, quick))
    assert verdicts["deficit"].verdict == "not testable"
    assert verdicts["fix_C_bias_both"].verdict == "not testable"


def test_a_bias_reset_that_changes_nothing_fails_its_precondition(quick):
    final, steps = _synthetic_final(quick)
    steps["entries_shifted"] = 0
    checks = N.preconditions(final, steps, quick)
    assert not checks["fix_C_bias_both"][0].holds and not checks["C_longer_training"][0].holds
    assert checks["B_finer_contrast"][0].holds  # the contrast jump ends 0.3 above the baseline


# ----------------------------------------------------------------------------- the sweep (moved from learning_paths)
def test_sweep_stops_on_a_missing_dataset_before_any_training(monkeypatch, tmp_path):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("ZAPLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ZAPLIB_PATHS_CACHE", str(tmp_path / "memo"))
    trained = []
    monkeypatch.setattr(P, "_follow", lambda config, memoise_end: trained.append(config))
    proc = P.LearningProcess(lr=0.05, max_epochs=1, batch_size=50)
    data_cfg = {"n_train": 200, "n_val": 40, "n_test": 0, "resolution": None}
    configs = [P.path_config(P.baseline_path(name, proc), 0, {**data_cfg, "dataset": name},
                             {"name": "small_cnn", "width": 4, "hidden": 16}) for name in ("mnist", "svhn")]
    with pytest.raises(data.MissingDatasetError, match="prepare mnist"):
        N.sweep(configs, progress=False)
    assert trained == []


def test_paired_difference_pairs_by_seed_and_averages_repeats():
    a = pd.DataFrame({"seed": [0, 0, 1, 2, 3], "test_loss": [1.0, 3.0, 2.5, 3.0, 9.0]})  # seed 3 unpaired
    b = pd.DataFrame({"seed": [0, 1, 2], "test_loss": [1.5, 2.0, 2.0]})
    diff = N.paired_difference(a, b)
    assert diff.mean == pytest.approx(np.mean([0.5, 0.5, 1.0]))
    assert diff.lo < diff.mean < diff.hi
