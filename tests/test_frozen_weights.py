"""The chapter module of "Mutually frozen weights": configs, claims declaration, claim frames."""
import itertools

import numpy as np
import pandas as pd
import pytest

from zaplib import report, runner, store
from zaplib.experiments import frozen_weights as fw

SEEDS = (0, 1, 2, 3)
DECAYS = (0.0, 0.03, 0.06)
SOURCES = {"mnist:blur4": ["mnist", "fashion_mnist"], "mnist": ["mnist", "fashion_mnist"]}
FRACTIONS = (0.1, 1.0)
INTERVENTIONS = ("none", "reset_mutual", "reset_random", "reset_frozen", "reset_units", "reinit")


# ----------------------------------------------------------------------------- configs
def test_configs_group_transfers_by_source_and_keep_their_keys():
    params = runner.resolve_params("frozen_weights", profile="quick")
    main, own = (fw.configs(params, d) for d in params["finetune_weight_decays"])
    assert [c["source"] for c in main] == ["mnist:blur4", "mnist", "fashion_mnist:blur4"]
    assert main[0]["targets"] == ["mnist", "fashion_mnist"]
    assert all(c["finetune_weight_decay"] == 0.001 for c in main)
    assert all("finetune_weight_decay" not in c for c in own)  # SAME_DECAY keeps the older hash
    assert fw.configs(params) == main                         # default: the first retraining λ
    with pytest.raises(ValueError):
        fw.configs(params, finetune_weight_decay=-0.5)
    # stored runs are keyed on the config: moving configs() into the chapter module kept the key
    smoke = runner.resolve_params("frozen_weights", profile="smoke")
    # (the key at code version 2, when configs() moved; later versions add the version to the key)
    assert [store.run_key(c, 2) for c in fw.configs(smoke)] == ["a3ddeada5ddb5b94"]


def test_run_is_the_stored_experiment_of_the_chapter():
    assert fw.run.experiment == fw.EXPERIMENT == "frozen_weights"
    assert fw.run.code_version == store.code_version(fw.EXPERIMENT) >= 3  # 3: source validation accuracy
    assert fw.CHAPTER.experiments == (fw.EXPERIMENT,)


# ----------------------------------------------------------------------------- claims declaration
def test_claims_declaration_is_valid():
    ids = [c.id for c in fw.CLAIMS]
    assert len(ids) == len(set(ids))
    assert 1 <= sum(c.primary for c in fw.CLAIMS) <= report.MAX_PRIMARY
    for claim in fw.CLAIMS:
        assert set(claim.requires) <= set(ids), claim.id
        if claim.kind in ("difference", "equivalence"):
            assert claim.unit == "seed" and claim.paired, claim.id  # every arm of a seed shares its init
        else:
            assert claim.unit == "network", claim.id
    report.judge([report.evaluate(c, None) for c in fw.CLAIMS])  # raises on a malformed family


# ----------------------------------------------------------------------------- a synthetic chapter
def _runs(reset_gain=0.05, n_target=1000, mutual_share=0.02, cost_06=0.15, blur_deficit=0.02) -> fw.Runs:
    """Tables with the columns zaplib.frozen.pretrain_and_retrain returns: four seeds, three λ, two
    sources, three transfers. Weight decay freezes weights, blur freezes more, reset_mutual gains
    ``reset_gain`` (more with more data), λ = 0.06 costs ``cost_06`` of source accuracy."""
    rng = np.random.default_rng(0)
    model_rows, pre_rows, ft_rows, dyn_rows, unit_rows, nuis_rows = [], [], [], [], [], []
    for source, targets in SOURCES.items():
        blur = 0.02 if ":blur" in source else 0.0
        for s_i, (seed, wd) in enumerate(itertools.product(SEEDS, DECAYS)):
            mutual = 2 * wd + blur * (wd > 0) + rng.normal(0, 0.003)
            acc = 0.95 - {0.0: 0.0, 0.03: 0.02, 0.06: cost_06}[wd] + rng.normal(0, 0.002)
            row = {"model": s_i, "seed": seed, "weight_decay": wd, "source": source, "source_test_acc": acc, "source_val_acc": acc,
                   "frozen_frac": mutual + 0.05, "mutually_frozen_frac": mutual, "plain_sparse_frac": 0.05}
            for t in targets:
                row[f"sensitivity[{t}]"] = 1.0 - wd + rng.normal(0, 0.05)
            model_rows.append(row)
            pre_rows.append({**row, "step": 10, "epoch": 1, "layer": "all", "test_acc": acc})
            unit_rows.append({"model": s_i, "seed": seed, "weight_decay": wd, "source": source, "layer": "body.1",
                              "units": 100, "collapsed_units": int(200 * wd) + seed % 2})
            for t, name in itertools.product(targets, ("blur4", "shift1", "noise")):
                ref = 1.0 if name == "noise" else 0.5 - 2 * wd
                nuis_rows.append({"model": s_i, "seed": seed, "weight_decay": wd, "source": source, "target": t,
                                  "nuisance": name, "sensitivity": ref + rng.normal(0, 0.01)})
            for t, fraction, v in itertools.product(targets, FRACTIONS, INTERVENTIONS):
                gain = {"reset_mutual": reset_gain * fraction, "reset_random": reset_gain * fraction / 2,
                        "reset_units": reset_gain * fraction}.get(v, 0.0)
                gain += (wd > 0) * 0.01 * (fraction < 1)                       # weight decay helps few samples
                gain -= blur_deficit * (":blur" in source and v == "none")      # blurred pre-training's deficit
                ft_rows.append({"model": s_i, "seed": seed, "weight_decay": wd, "source": source, "target": t,
                                "fraction": fraction, "n_target": int(n_target * fraction), "intervention": v,
                                "reset_frac": mutual_share * (wd > 0) if v.startswith("reset") else float(v == "reinit"),
                                "val_acc": 0.8 + gain + wd, "test_acc": 0.8 + gain + rng.normal(0, 0.005)})
            for t, layer, group, step in itertools.product(targets, ("body.1", "body.3"), fw.frozen.GROUPS, (0, 100)):
                still = {"mutually_frozen": 0.9, "plain_sparse": 0.3, "not_frozen": 0.0}[group]
                dyn_rows.append({"model": s_i, "seed": seed, "weight_decay": wd, "source": source, "target": t,
                                 "fraction": 1.0, "step": step, "layer": layer, "group": group, "n": 200,
                                 "still_frozen": still + rng.normal(0, 0.02),
                                 "abs_grad": (1.0 - still) * np.exp(rng.normal(0, 0.05)),
                                 "abs_w": 0.1, "abs_update": 0.0})

    def regime(frame):
        frame = pd.DataFrame(frame)
        return frame.assign(transfer=frame.source + " → " + frame.target, regime=fw.regime_name(0.001))

    models = pd.DataFrame(model_rows)
    return fw.Runs(stored={}, pretrain=pd.DataFrame(pre_rows), models=models, finetune=regime(ft_rows),
                   dynamics=regime(dyn_rows), main_regime=fw.regime_name(0.001),
                   tables={"units": pd.DataFrame(unit_rows), "nuisance": pd.DataFrame(nuis_rows)})


PARAMS = {"n_val": 1000}


def test_every_claim_gets_a_frame_with_its_columns_and_both_arms():
    inputs = fw.claim_inputs(_runs(), PARAMS)
    assert set(inputs) == {c.id for c in fw.CLAIMS}
    for claim in fw.CLAIMS:
        frame, _ = inputs[claim.id]
        assert frame is not None, claim.id
        if claim.kind == "correlation":
            assert {claim.unit, claim.x, claim.y} <= set(frame.columns), claim.id
            assert frame[claim.unit].nunique() == len(SEEDS) * len(DECAYS) * len(SOURCES)
        else:
            assert {claim.unit, claim.condition, claim.metric} <= set(frame.columns), claim.id
            if claim.shared:
                assert claim.shared in frame.columns, claim.id
            assert {claim.a, claim.b} <= set(frame[claim.condition]), claim.id


def test_verdicts_on_a_synthetic_chapter_follow_the_built_in_effects():
    verdicts = report.table([report.evaluate(c, *fw.claim_inputs(_runs(), PARAMS)[c.id]) for c in fw.CLAIMS])
    verdict = dict(zip(verdicts.id, verdicts.verdict))
    for claim_id in ("reset_helps_small_gap", "reset_helps_large_gap"):
        assert verdict[claim_id] == "reproduced", (claim_id, verdicts.set_index("id").reason[claim_id])
    for claim_id in ("wd_freezes", "blur_freezes_more", "mutual_stays_frozen"):
        assert verdict[claim_id] == "reproduced (exploratory)", (claim_id, verdicts.set_index("id").reason[claim_id])
    for claim_id in ("blur_hurts_same_decay", "invariance_low_data_gain", "blur_invariance"):
        assert verdict[claim_id] == "reproduced", (claim_id, verdicts.set_index("id").reason[claim_id])
    for claim_id in ("wd_collapses_units", "mutual_gets_less_gradient", "shift_invariance"):
        assert verdict[claim_id] == "reproduced (exploratory)", (claim_id, verdicts.set_index("id").reason[claim_id])
    assert sum(fw.report.results(verdicts)[c.id].claim.primary for c in fw.CLAIMS) == 5
    assert verdict["reset_beats_random_small_gap"] == "reproduced (exploratory)"
    assert verdict["benefit_needs_data_small_gap"] == "reproduced (exploratory)"
    assert verdict["fashion_mnist_sota"] == "not testable"  # 1000 target images, not the full set
    assert "measured 1000" in verdicts.set_index("id").reason["fashion_mnist_sota"]


def test_resets_are_tested_at_the_largest_decay_within_the_source_accuracy_budget():
    runs = _runs(cost_06=0.15)
    assert fw.reset_decay(runs.models, "mnist:blur4") == 0.03      # 0.06 costs 15 points
    assert fw.reset_decay(_runs(cost_06=0.03).models, "mnist:blur4") == 0.06
    cost = fw.source_accuracy_cost(runs.models, "mnist:blur4")
    assert cost[0.0] == 0 and cost[0.06] == pytest.approx(0.15, abs=0.01)


def test_a_reset_that_changes_too_few_weights_makes_the_reset_claims_not_testable():
    runs = _runs(mutual_share=0.001)
    results = {c.id: report.evaluate(c, *fw.claim_inputs(runs, PARAMS)[c.id]) for c in fw.CLAIMS}
    for claim_id in ("reset_helps_small_gap", "reset_helps_large_gap", "benefit_needs_data_large_gap"):
        assert results[claim_id].stage == "not testable"
        assert "re-draws at λ = 0.03" in results[claim_id].reason
    assert results["wd_freezes"].stage == "tested"


def test_a_profile_without_a_large_gap_transfer_does_not_run_its_claims():
    runs = _runs()
    runs.finetune = runs.finetune[runs.finetune.target == "mnist"]
    runs.dynamics = runs.dynamics[runs.dynamics.target == "mnist"]
    inputs = fw.claim_inputs(runs, PARAMS)
    assert inputs["reset_helps_large_gap"][0] is None
    assert inputs["benefit_larger_for_large_gap_full"] == (None, [])
    assert inputs["fashion_mnist_sota"] == (None, [])
    assert inputs["reset_helps_small_gap"][0] is not None


# ----------------------------------------------------------------------------- chapter helpers
def test_gap_transfers_prefer_two_transfers_of_one_source():
    transfers = ["mnist → fashion_mnist", "mnist:blur4 → mnist", "mnist:blur4 → fashion_mnist"]
    assert fw.gap_transfers(transfers) == ("mnist:blur4 → mnist", "mnist:blur4 → fashion_mnist")
    assert fw.gap_transfers(["mnist:blur4 → mnist"]) == ("mnist:blur4 → mnist", "mnist:blur4 → mnist")
    # long's order: the clean → clean control first; it is no domain gap, and the clean source's
    # pair must not stand in for the blurred one
    long_order = ["mnist → mnist", "mnist → fashion_mnist", "mnist:blur4 → mnist", "mnist:blur4 → fashion_mnist"]
    assert fw.gap_transfers(long_order) == ("mnist:blur4 → mnist", "mnist:blur4 → fashion_mnist")
    assert fw.is_same_dataset("fashion_mnist:blur4 → fashion_mnist")
    assert not fw.is_same_dataset("mnist → fashion_mnist")


def test_intervention_effects_are_paired_differences_by_seed():
    acc = fw.accuracies(_runs(reset_gain=0.05, blur_deficit=0.0).main_finetune)
    effects = fw.intervention_effects(acc)
    row = effects[(effects.transfer == "mnist:blur4 → mnist") & (effects.weight_decay == 0.03)
                  & (effects.fraction == 1.0) & (effects.intervention == "reset_mutual")].iloc[0]
    assert row["n seeds"] == len(SEEDS)
    assert row["mean"] == pytest.approx(0.05, abs=0.01) and row.lo < row["mean"] < row.hi
    assert fw.format_interval(0.012, -0.003, 0.027) == "+1.2% [-0.3%, +2.7%]"
    assert fw.format_interval(0.012) == "+1.2%"


def test_still_frozen_at_end_leaves_out_the_first_layer_when_asked():
    dyn = _runs().main_dynamics
    dyn.loc[dyn.layer == "body.1", "still_frozen"] = 0.0
    deeper = fw.still_frozen_at_end(dyn, 0.06).groupby("group").still_frozen.mean()
    pooled = fw.still_frozen_at_end(dyn, 0.06, deeper_only=False).groupby("group").still_frozen.mean()
    assert deeper["mutually_frozen"] == pytest.approx(0.9, abs=0.02)
    assert pooled["mutually_frozen"] == pytest.approx(0.45, abs=0.02)


def test_validation_selects_the_transfer_and_decay():
    # val_acc grows with λ in the synthetic runs, so validation picks the largest λ
    assert fw.selected_by_validation(_runs().main_finetune, "fashion_mnist", "reset_mutual")[1] == 0.06
    assert fw.selected_by_validation(_runs().main_finetune, "cifar10", "none") is None


def test_verdict_listing_names_the_claims_of_the_given_verdicts():
    table = pd.DataFrame({"claim": ["Weight decay freezes", "Blur freezes more"],
                          "verdict": ["reproduced", "inconclusive (exploratory)"]})
    assert fw.verdict_listing(table, ["reproduced"]) == "weight decay freezes (reproduced)"
    assert fw.verdict_listing(table, ["inconclusive"]) == "blur freezes more (inconclusive (exploratory))"
    assert fw.verdict_listing(table, ["opposite"]) == "none"


def test_dynamics_claim_is_not_testable_when_nothing_is_mutually_frozen():
    runs = _runs()
    runs.dynamics = runs.dynamics[runs.dynamics.group != "mutually_frozen"]
    claim = next(c for c in fw.CLAIMS if c.id == "mutual_stays_frozen")
    result = report.evaluate(claim, *fw.claim_inputs(runs, PARAMS)[claim.id])
    assert result.stage == "not testable" and "measured 0" in result.reason
