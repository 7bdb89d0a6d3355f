"""The `long` profile of "The negative pre-training effect" (issue 16), so far its regime gate: the
select split, the gate's rules and its staged plan. No training."""
import numpy as np
import pandas as pd
import pytest
import torch

from zaplib import data, learning_paths, runner, store
from zaplib.experiments import negative_pretraining as npt

LONG = runner.resolve_params("negative_pretraining", profile="long")


def test_the_select_split_is_held_out_and_leaves_the_training_set_unchanged(monkeypatch):
    n = 200
    ds = data.Dataset(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous(),
                      torch.arange(n) % 10, torch.full((50, 3, 4, 4), 255, dtype=torch.uint8),
                      torch.arange(50) % 10, np.array([str(i) for i in range(10)]), "toy")
    monkeypatch.setattr(data, "load", lambda name, device=None: ds)
    learning_paths._prepared.cache_clear()
    cfg = {"dataset": "toy", "n_train": 60, "n_val": 40, "n_test": 0, "resolution": None, "data_seed": 0}
    plain = learning_paths.prepare_data(cfg)
    gated = learning_paths.prepare_data({**cfg, "n_select": 50})
    learning_paths._prepared.cache_clear()
    ids = lambda x: set(x[:, 0, 0, 0].tolist())  # each training image is its own index
    assert torch.equal(plain.x_train, gated.x_train) and torch.equal(plain.x_val, gated.x_val)
    assert len(gated.y_test) == 50 and not ids(gated.x_test) & (ids(gated.x_train) | ids(gated.x_val))
    assert 255 not in ids(gated.x_test)           # not the test set
    with pytest.raises(ValueError, match="n_select"):
        learning_paths._prepared.__wrapped__(__import__("json").dumps({**cfg, "n_train": 0, "n_select": 5}), "cpu")
    with pytest.raises(ValueError, match="n_train \\+ n_select \\+ n_val"):
        learning_paths._prepared.__wrapped__(__import__("json").dumps({**cfg, "n_select": 150}), "cpu")


def test_gate_configs_pair_a_baseline_with_blur_then_clean_on_seeds_of_their_own():
    configs = npt.gate_configs(LONG, "32:4")
    assert [c["seed"] for c in configs] == [900, 900, 901, 901, 902, 902]
    assert all(c["data"]["n_select"] == npt.GATE_N_SELECT and c["data"]["resolution"] == 32 for c in configs)
    assert all(c["model"]["width"] == 4 for c in configs)
    base, blur = configs[0]["path"], configs[1]["path"]
    assert len(base) == 1 and base[0]["task"]["blur"] == 1.0 and base[0]["process"]["patience"] == 10
    assert blur[0]["task"]["blur"] == 4.0 and blur[0]["process"] == {**blur[0]["process"], "max_epochs": 20,
                                                                     "patience": None, "restore_best": False}
    assert blur[1]["task"]["blur"] == 1.0 and blur[1]["process"]["patience"] == 10
    with pytest.raises(ValueError, match="apart"):
        npt.gate_configs({**LONG, "gate_seeds": [0]}, "16:4")
    with pytest.raises(ValueError, match="RESOLUTION:WIDTH"):
        npt.gate_configs(LONG, "16x4")


def _gate_store(tmp_path, cells: dict):
    """Made-up gate runs: per cell, (baseline accuracies, deficits in nats) per gate seed."""
    st = store.Store(tmp_path)
    for cell, (accs, deficits) in cells.items():
        configs = npt.gate_configs(LONG, cell)
        for i, (base, blur) in enumerate(zip(configs[::2], configs[1::2])):
            for config, loss, steps in ((base, 1.2, [30]), (blur, 1.2 + deficits[i], [20, 25])):
                final = pd.DataFrame([{"seed": config["seed"], "n_steps": len(steps), "test_loss": loss,
                                       "test_acc": accs[i], "total_epochs": sum(steps)}])
                steps_t = pd.DataFrame({"step": range(len(steps)), "epochs_run": steps})
                records = pd.DataFrame({"epoch": [1, 2], "seconds": [4.0, 4.4]})
                st.save(npt.EXPERIMENT, config, {"final": final, "steps": steps_t, "records": records},
                        version=npt.run.code_version)
    return st


def test_the_gate_plans_one_cell_at_a_time_and_stops_at_the_first_that_passes(tmp_path):
    empty = store.Store(tmp_path / "empty")
    assert [c for _, c in npt.planned_runs(LONG, empty)] == npt.gate_configs(LONG, "16:4")
    failed = _gate_store(tmp_path / "a", {"16:4": ([0.40, 0.41, 0.42], [0.1, 0.1, 0.1])})
    assert [c for _, c in npt.planned_runs(LONG, failed)] == npt.gate_configs(LONG, "16:8")
    passed = _gate_store(tmp_path / "b", {"16:4": ([0.40] * 3, [0.1] * 3), "16:8": ([0.5] * 3, [0.06, 0.07, 0.08])})
    summary = npt.gate_summary(LONG, passed)
    assert summary["status"] == "pass" and summary["cell"] == "16:8"
    reported = [c for _, c in npt.planned_runs(LONG, passed)]   # then the reported runs, at the chosen cell
    assert len(reported) == 133 and {c["model"]["width"] for c in reported} == {8}
    assert not any(c["data"].get("n_select") for c in reported)
    assert len(summary["table"]) == 6 and summary["table"].seconds_per_epoch.iloc[0] == pytest.approx(4.2)
    assert len(npt.full_plan(LONG)) == 3 * 6 + 133  # the dry run prices every cell and the reported runs


@pytest.mark.parametrize("accs, deficits, failing", [
    ([0.44] * 3, [0.1] * 3, "learns"),                    # the baseline does not learn
    ([0.5] * 3, [0.1, 0.1, -0.01], "deficit_every_seed"),  # a deficit on 2 of 3 seeds
    ([0.5] * 3, [0.04] * 3, "deficit_large"),             # too small on average
])
def test_the_gate_fails_on_each_of_its_rules(accs, deficits, failing):
    table = pd.DataFrame({"baseline_acc": accs, "deficit": deficits})
    verdict = npt.gate_verdict(table)
    assert not verdict["passes"] and not verdict[failing]
    assert npt.gate_verdict(table.assign(baseline_acc=0.5, deficit=0.05))["passes"]


def test_gate_cell_table_reads_real_learning_path_runs(tmp_path, monkeypatch):
    n = 400
    g = torch.Generator().manual_seed(0)
    toy = data.Dataset(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % 10,
                       torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(50) % 10,
                       np.array([str(i) for i in range(10)]), "toy")
    monkeypatch.setattr(data, "load", lambda name, device=None: toy)
    monkeypatch.setattr(npt, "GATE_N_SELECT", 60)
    monkeypatch.setenv("ZAPLIB_PATHS_CACHE", "off")
    learning_paths._prepared.cache_clear()
    params = {**LONG, "n_train": 120, "n_val": 40, "first_epochs": 1, "max_epochs": 2, "patience": 1, "n_probe": 16}
    st = store.Store(tmp_path)
    for config in npt.gate_configs(params, "8:1"):
        st.save(npt.EXPERIMENT, config, learning_paths.run_path(config), version=npt.run.code_version)
    learning_paths._prepared.cache_clear()
    table = npt.gate_cell_table(params, "8:1", st)
    assert len(table) == 3 and (table.blur_epochs == 1).all() and table.baseline_epochs.between(1, 2).all()
    assert np.allclose(table.deficit, table.blur_clean_loss - table.baseline_loss) and (table.seconds_per_epoch > 0).all()
    assert set(npt.gate_verdict(table)) >= {"passes", "learns", "deficit_every_seed", "deficit_large"}


REPORTED = npt.reported_params(LONG, {"status": "pass", "cell": "16:8"})


def test_quick_configs_keep_the_keys_of_the_stored_runs():
    quick = runner.resolve_params("negative_pretraining", profile="quick")
    keys = {store.run_key(c, npt.run.code_version) for c in npt.configs(quick)}
    stored = {p.name for p in (store.project_root() / "results" / npt.EXPERIMENT).iterdir() if p.is_dir()}
    assert len(keys) == 86 and keys <= stored


def test_the_reported_plan_at_long():
    # as declared (148 runs), before cuts 3 and 4 (the last-weights paper arm, B contrast)
    plan = npt.plan({**REPORTED, "paper_last_weights": True, "paths_1d": ["blur", "contrast", "shift"]})
    assert plan.config.map(store.config_hash).nunique() == 148
    assert {c["model"]["width"] for c in plan.config} == {8} and {c["data"]["resolution"] for c in plan.config} == {16}
    seeds = plan.groupby(["dataset", "group", "condition"]).seed.nunique()
    primary = [("baseline", "clean only"), ("A", "0.001 → 0.001"), ("A", "0.001 → 0.002"), ("control", "clean → clean"),
               ("C", "[No, No]"), ("C", "[Yes, Yes]"), ("B-blur", "N=4")]
    assert all(seeds["cifar10", g, c] == 8 for g, c in primary)
    assert (seeds.drop([("cifar10", g, c) for g, c in primary]) == 5).all()
    # blur(L*) → clean on the curve is the same run as intervention A's default (one config)
    curve = plan[(plan.group == "curve-blur") & (plan.x == 20)].config.map(store.config_hash)
    default = plan[(plan.group == "A") & (plan.condition == "0.001 → 0.001")].config.map(store.config_hash)
    assert set(curve) <= set(default)
    equal_path = plan[plan.group == "B-blur-equal"].config.iloc[0]["path"]
    assert [s["process"]["max_epochs"] for s in equal_path[:-1]] == [7, 7, 6] and equal_path[-1]["process"]["patience"] == 10
    assert all(s["process"]["patience"] is None and not s["process"]["restore_best"] for s in equal_path[:-1])
    paper = plan[plan.group == "paper"].drop_duplicates("condition").set_index("condition").config
    assert paper["blur(ES) → clean"]["path"][0]["process"]["restore_best"]
    assert not paper["blur(ES, last) → clean"]["path"][0]["process"]["restore_best"]
    assert set(plan.dataset) == {"cifar10", "fashion_mnist", "mnist"}


def test_a_failed_gate_runs_the_deficit_but_not_the_fixes_whose_claims_are_then_not_testable():
    failed = npt.reported_params(LONG, {"status": "fail", "cell": None})
    plan = npt.plan(failed)
    assert {c["model"]["width"] for c in plan.config} == {4}               # the first cell
    assert not ((plan.group == "C") & (plan.condition != "[No, No]")).any()
    assert set(plan[plan.group == "A"].condition) == {"0.001 → 0.001"} and not plan.group.str.endswith("-equal").any()
    assert set(plan[plan.group == "B-blur"].x) == {2} and {"curve-blur", "paper", "control"} <= set(plan.group)
    final = plan.assign(test_loss=1.0, test_acc=0.5, last_train_loss_at_best=0.1, last_train_loss=0.05, last_best_epoch=5)
    frames = npt.claim_frames(final, failed)
    for cid in ("fix_A_higher_rate", "fix_C_bias_both", "fix_B_finer_blur", "B_blur_equal_epochs"):
        assert frames[cid] is None
    for cid in ("deficit", "control_needs_blur", "deficit_longest", "deficit_paper", "no_deficit_mnist"):
        assert frames[cid] is not None and len(frames[cid])


def test_every_claim_has_its_arms_at_long_and_at_most_five_are_primary():
    assert sum(c.primary for c in npt.CLAIMS) <= 5
    arms = npt.arms(REPORTED)
    for claim in npt.CLAIMS:
        assert claim.a in arms and claim.b in arms, claim.id
    final = npt.plan(REPORTED).assign(test_loss=1.0, test_acc=0.5, last_train_loss_at_best=0.1, last_train_loss=0.05, last_best_epoch=5)
    frames = npt.claim_frames(final, REPORTED)
    assert set(frames["no_deficit_fashion_mnist"].seed) == set(range(5))
    assert frames["deficit"].seed.nunique() == 8


def test_plan_seconds_charges_a_shared_prefix_once():
    plan = npt.plan(REPORTED)
    a = plan[(plan.group == "A") & (plan.condition == "0.001 → 0.001") & (plan.seed == 0)].config.iloc[0]
    c = plan[(plan.group == "C") & (plan.condition == "[No, Yes]") & (plan.seed == 0)].config.iloc[0]
    alone, after = npt.plan_seconds([c]), npt.plan_seconds([a, c])
    assert after[1] < alone[0] and after[0] == pytest.approx(npt.plan_seconds([a])[0])


def test_cuts_3_and_4_remove_exactly_their_arms_and_leave_their_claims_not_run():
    full = npt.plan({**REPORTED, "paper_last_weights": True, "paths_1d": ["blur", "contrast", "shift"]})
    cut = npt.plan(REPORTED)
    hashes = lambda plan: set(plan.config.map(store.config_hash))
    removed = full[~full.config.map(store.config_hash).isin(hashes(cut))]
    assert set(zip(removed.group, removed.condition)) == {("paper", "blur(ES, last) → clean"), ("B-contrast", "N=2"),
                                                          ("B-contrast", "N=4")}
    assert hashes(cut) <= hashes(full) and len(hashes(full)) - len(hashes(cut)) == 15
    frames = npt.claim_frames(cut.assign(test_loss=1.0, test_acc=0.5, last_train_loss_at_best=0.1, last_train_loss=0.05, last_best_epoch=5), REPORTED)
    for cid in ("deficit_paper_last", "deficit_contrast", "B_finer_contrast"):
        assert frames[cid] is None, cid
    failed = npt.plan(npt.reported_params(LONG, {"status": "fail", "cell": None}))
    assert failed.config.map(store.config_hash).nunique() == 79


def test_unrun_claims_give_the_failed_gate_or_the_cut_as_their_measured_reason():
    gate = {"status": "fail", "cell": None,
            "tables": {"16:4": pd.DataFrame({"deficit": [-0.02, 0.01, 0.01]}), "32:4": pd.DataFrame({"deficit": [0.01, 0.02, 0.06]})},
            "verdicts": {"16:4": {"deficit_mean": 0.0, "seeds_positive": 2}, "32:4": {"deficit_mean": 0.03, "seeds_positive": 3}}}
    failed = npt.reported_params(LONG, gate)
    final = npt.plan(failed).assign(test_loss=1.0, test_acc=0.5, last_train_loss_at_best=0.1, last_train_loss=0.05,
                                    last_best_epoch=5)
    final.loc[final.group == "baseline", "test_loss"] = 0.9  # a difference to test, so the run claims get a p
    by_id = {r.claim.id: r for r in npt.evaluate_claims(npt.claim_frames(final, failed), {}, failed, gate)}
    for cid in ("fix_A_higher_rate", "fix_B_finer_blur", "fix_C_bias_both", "B_blur_equal_epochs", "B_finer_contrast"):
        assert by_id[cid].stage == "not testable" and "32:4: +0.030 nats, 3/3 seeds" in by_id[cid].reason, cid
    for cid in ("deficit_contrast", "deficit_paper_last"):
        assert by_id[cid].stage == "not testable" and "cut to fit" in by_id[cid].reason, cid
    assert by_id["deficit"].stage != "not testable" and "gate" not in by_id["deficit"].reason
    # without a gate (quick), a claim this profile does not run says only that
    quick = {**failed, "fix_arms": True, "paths_1d": list(npt.TRANSFORMS), "paper_last_weights": True}
    plain = {r.claim.id: r for r in npt.evaluate_claims(npt.claim_frames(final, failed), {}, quick, None)}
    assert plain["fix_A_higher_rate"].reason == "not run at this profile"


def test_a_list_parameter_checks_each_element_against_its_choices():
    assert runner.resolve_params("negative_pretraining", {"paths_1d": ["shift"]}, profile="quick")["paths_1d"] == ["shift"]
    with pytest.raises(runner.ParameterError, match="sharpen"):
        runner.resolve_params("negative_pretraining", {"paths_1d": ["blur", "sharpen"]}, profile="quick")


def test_length_curve_pairs_every_first_phase_with_the_baseline_of_its_seed():
    plan = npt.plan(REPORTED)
    cifar = plan[plan.dataset == "cifar10"].copy()
    # made-up results: a deficit of 0.01 nats per blurred epoch, none after clean phases
    loss = {("curve-blur", x): 1.0 + 0.01 * x for x in (10, 20, 40)}
    cifar["test_loss"] = [loss.get((g, x), 1.0) + 0.001 * s for g, x, s in zip(cifar.group, cifar.x, cifar.seed)]
    cifar["test_acc"] = 0.5
    steps = cifar[cifar.group == "paper"].assign(step=0, epochs_run=[30 + s for s in cifar[cifar.group == "paper"].seed])
    curve = npt.length_curve(cifar, steps, REPORTED)
    fixed = curve[curve.protocol == "fixed"]
    assert set(fixed.epochs) == {10.0, 20.0, 40.0} and fixed.seed.nunique() == 5
    blur = fixed[fixed["first"] == "blur"].groupby("epochs").d_loss.mean()
    assert blur.to_dict() == pytest.approx({10.0: 0.1, 20.0: 0.2, 40.0: 0.4})
    assert fixed[fixed["first"] == "clean"].d_loss.abs().max() < 1e-12 and (curve.d_acc == 0).all()
    es = curve[curve.protocol == "ES"]
    assert set(es["first"]) == {"blur", "clean"} and sorted(es[es["first"] == "blur"].epochs) == [30.0, 31, 32, 33, 34]
