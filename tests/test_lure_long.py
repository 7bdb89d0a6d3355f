"""The `long` profile of "Learn, unlearn, relearn" (issue 15): the stream options it needs (official
init and LLF, bf16, a select split), the regime gate's rules and staged plan, and the reported stage
the gate unlocks (its runs, its preconditions, its new claims)."""
import math

import pandas as pd
import pytest
import torch

from zaplib import models, report, runner, store, stream
from zaplib.experiments import lure

LONG = runner.resolve_params("lure", profile="long")
TINY = dict(dataset="synthetic", width=2, n_pool=240, n_test=200, n_megabatches=2, epochs=1,
            lr_milestones=[], eval_batch_size=500)


def test_optional_stream_keys_enter_a_config_only_when_set_and_are_checked():
    plain = stream.make_config(**TINY)
    assert not set(stream.OPTIONAL_CONFIG) & set(plain)           # stored runs keep their keys
    assert stream.make_config(**TINY, init="pytorch") == plain
    assert stream.make_config(**TINY, init="official", precision="bf16")["init"] == "official"
    with pytest.raises(ValueError, match="llf_form"):
        stream.make_config(**TINY, llf_form="half")
    with pytest.raises(ValueError, match="ResNet-18 only"):
        stream.make_config(**{**TINY, "model": "vgg16_bn"}, init="official")
    with pytest.raises(KeyError, match="unknown stream config keys"):
        stream.make_config(**TINY, inti="official")
    assert stream.make_config(**TINY, n_select=0) == plain                 # 0 and None: one key
    with pytest.raises(ValueError, match="n_select"):
        stream.make_config(**TINY, n_select=-5)
    paper = runner.resolve_params("lure", profile="paper")
    tables = lure.configs({**paper, "init": "official"})["arch"]            # Table 6's networks keep their init
    assert {c.get("init") for c in tables if c["model"] != "resnet18"} == {None}


def test_the_select_split_leaves_the_stream_unchanged_and_replaces_the_test_set():
    plain = stream.run_stream(stream.make_config(**TINY))
    gated = stream.run_stream(stream.make_config(**TINY, n_select=300))
    pd.testing.assert_series_equal(plain["epochs"].train_loss, gated["epochs"].train_loss)  # same pool, same steps
    assert gated["summary"].n_test.iloc[0] == 300 and plain["summary"].n_test.iloc[0] == 200
    with pytest.raises(ValueError, match="n_pool \\+ n_select"):
        stream.run_stream(stream.make_config(**TINY, n_select=5000))


def test_official_init_and_official_llf():
    config = stream.make_config(**{**TINY, "width": 8}, init="official", method="llf")
    net = models.build(stream.model_config(config, num_classes=4))
    conv = net.layer1[0].conv1.weight
    assert conv.std().item() == pytest.approx(math.sqrt(2 / (conv.shape[0] * 9)), rel=0.15)  # fan-out
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stream.apply_method(net, {**config, "llf_form": "official"}, generator=torch.Generator().manual_seed(0))
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "layer3.0.conv1.weight" in changed and "fc.weight" in changed
    assert "fc.bias" not in changed and not any("shortcut" in k for k in changed)
    net.load_state_dict(before)
    stream.apply_method(net, config, generator=torch.Generator().manual_seed(0))  # ours: both re-drawn
    changed = {k for k in before if not torch.equal(before[k], net.state_dict()[k])}
    assert "fc.bias" in changed and "layer3.0.shortcut.0.weight" in changed


def test_gate_cells_parse_and_become_stream_settings():
    assert lure.parse_cell("8/1100/30/off") == {"width": 8, "images": 1100, "epochs": 30, "augment": False, "precision": "fp32"}
    assert lure.parse_cell("16/440/30/on/bf16")["precision"] == "bf16"
    for bad in ("8/1100/30", "8/1100/30/maybe", "0/1100/30/on", "w8/1100/30/on", "8/1100/30/on/fp16"):
        with pytest.raises(ValueError, match="gate cell"):
            lure.parse_cell(bad)
    configs = lure.gate_configs(LONG, "16/440/30/on/bf16")
    assert [(lure.variant_name(c), c["seed"]) for c in configs] == [
        (v, s) for s in (900, 901) for v in ("bl", "scratch", "bl_code")]
    c = configs[0]
    assert (c["width"], c["n_pool"], c["epochs"], c["lr_milestones"], c["augment"], c["precision"]) == (
        16, 1760, 30, [12, 24], True, "bf16")
    assert c["n_select"] == lure.GATE_N_SELECT and c["replay"] == "full" and c["lr_gamma"] == 0.1
    assert c["init"] == "official"                                        # the init of the reported runs
    assert configs[2]["lr_gamma"] == 1.0                                   # the official baseline script
    with pytest.raises(ValueError, match="apart"):
        lure.gate_configs({**LONG, "gate_seeds": [0]}, "8/1100/30/off")


def _gate_store(tmp_path, cells):
    """Made-up gate runs: per cell, (min training accuracy, {variant: accuracy}, seconds)."""
    st = store.Store(tmp_path)
    for cell, (train_acc, accs, seconds) in cells.items():
        for config in lure.gate_configs(LONG, cell):
            v = lure.variant_name(config)
            mb = pd.DataFrame({"megabatch": [1, 2, 3, 4], "train_acc": [0.5, train_acc, 0.99, 0.99], "test_acc": accs[v]})
            summary = pd.DataFrame([{"test_acc": accs[v] + 0.001 * (config["seed"] - 900), "seconds": seconds}])
            st.save(lure.EXPERIMENT, config, {"megabatches": mb, "summary": summary}, version=lure.run.code_version)
    return st


def test_the_gate_plans_one_cell_at_a_time_and_stops_at_the_first_that_passes(tmp_path):
    good = (0.97, {"bl": 0.60, "scratch": 0.63, "bl_code": 0.58}, 300.0)
    empty = store.Store(tmp_path / "e")
    assert [c for _, c in lure.planned_runs(LONG, empty)] == lure.gate_configs(LONG, "8/1100/30/off")
    st = _gate_store(tmp_path / "a", {"8/1100/30/off": (0.90, good[1], 300.0)})
    assert [c for _, c in lure.planned_runs(LONG, st)] == lure.gate_configs(LONG, "8/550/60/on")
    st = _gate_store(tmp_path / "b", {"8/1100/30/off": (0.90, good[1], 300.0), "8/550/60/on": good})
    todo, summary = lure.gate_stage(LONG, st)
    assert todo == [] and summary["status"] == "pass" and summary["cell"] == "8/550/60/on"
    assert not summary["verdicts"]["8/1100/30/off"]["passes"]
    assert len(lure.full_plan(LONG)) == 3 * 6 + lure.LONG_REPORTED_RUNS      # worst-case gate + reported runs


@pytest.mark.parametrize("train_acc, accs, failing", [
    (0.94, {"bl": 0.60, "scratch": 0.63, "bl_code": 0.58}, "fits"),        # does not fit
    (0.97, {"bl": 0.60, "scratch": 0.605, "bl_code": 0.58}, "penalty"),    # 0.5 point < 1
])
def test_the_gate_fails_on_each_of_its_rules(tmp_path, train_acc, accs, failing):
    table = lure.gate_cell_table(LONG, "8/1100/30/off", _gate_store(tmp_path, {"8/1100/30/off": (train_acc, accs, 300.0)}))
    verdict = lure.gate_verdict(table)
    assert not verdict["passes"] and not verdict[failing]
    assert verdict["bl_code_acc"] == pytest.approx(0.5805)


def test_the_penalty_must_hold_on_every_seed_and_an_exact_point_passes():
    table = pd.DataFrame({"variant": ["bl", "scratch", "bl_code"] * 2, "seed": [900] * 3 + [901] * 3,
                          "test_acc": [0.60, 0.63, 0.58, 0.60, 0.605, 0.58], "min_train_acc_after_first": 0.97,
                          "seconds": 300.0})
    assert lure.gate_verdict(table)["penalty_mean"] > lure.GATE_MIN_PENALTY and not lure.gate_verdict(table)["penalty"]
    exact = table.assign(test_acc=[1 - 4321 / 10000, 1 - 4221 / 10000, 0.5] * 2)  # exactly 100 errors fewer
    assert lure.gate_verdict(exact)["penalty"]
    slow = lure.gate_verdict(table.assign(seconds=1200.0))   # 31 runs × 24 min / 2 > 3 h: reported, not a rule
    assert not slow["affordable"] and slow["passes"] == lure.gate_verdict(table)["passes"]


def test_gate_cell_table_reads_real_stream_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(lure, "GATE_N_SELECT", 100)
    params = {**LONG, "dataset": "synthetic", "n_megabatches": 2, "eval_batch_size": 500}
    st = store.Store(tmp_path)
    for config in lure.gate_configs(params, "2/120/1/off"):
        st.save(lure.EXPERIMENT, config, stream.run_stream(config), version=lure.run.code_version)
    table = lure.gate_cell_table(params, "2/120/1/off", st)
    assert len(table) == 6 and table.test_acc.between(0, 1).all() and (table.seconds > 0).all()
    assert table.min_train_acc_after_first.between(0, 1).all()
    assert set(lure.gate_verdict(table)) >= {"passes", "fits", "penalty", "affordable"}


def test_a_passing_gate_plans_the_reported_runs_at_its_cell(tmp_path):
    good = (0.97, {"bl": 0.60, "scratch": 0.63, "bl_code": 0.58}, 300.0)
    st = _gate_store(tmp_path, {"8/1100/30/off": (0.90, good[1], 300.0), "8/550/60/on": good})
    planned = [c for _, c in lure.planned_runs(LONG, st)]
    assert len(planned) == lure.LONG_REPORTED_RUNS == 31
    arms = sorted((lure.variant_name(c), c["seed"]) for c in planned)
    assert arms == sorted([(v, s) for v in ("bl", "scratch", "sp", "llf", "lure") for s in range(5)]
                          + [(v, s) for v in ("bl_code", "sp_fresh") for s in range(3)])
    for c in planned:
        # the cell 8/550/60/on: its width, pool, epochs and augmentation, evaluated on the test set
        assert (c["width"], c["n_pool"], c["epochs"], c["augment"], c["val_augment"]) == (8, 2200, 60, True, True)
        assert c["lr_milestones"] == [24, 48] and c["n_test"] is None and "n_select" not in c
        assert c["order_seed"] == c["seed"] and c["init"] == "official" and c["replay"] == "full"
        assert ("llf_form" in c) == (c["method"] == "llf")            # only LLF carries its form
        probed = bool(c["corruptions"])
        assert probed == (lure.variant_name(c) in ("bl", "scratch", "sp", "llf", "lure"))
        assert not c["pgd_eps"] and not c["weight_noise"]
    assert all(c["llf_form"] == "official" for c in planned if c["method"] == "llf")
    assert {c["n_corruption"] for c in planned if c["corruptions"]} == {1000}


def test_a_failed_gate_plans_nothing_more_and_makes_every_claim_not_testable(tmp_path):
    bad = (0.90, {"bl": 0.60, "scratch": 0.63, "bl_code": 0.58}, 300.0)
    st = _gate_store(tmp_path, {cell: bad for cell in LONG["gate_cells"]})
    assert lure.planned_runs(LONG, st) == []
    gate = lure.gate_summary(LONG, st)
    assert gate["status"] == "fail" and len(gate["table"]) == 18
    assert lure.reported_params(LONG, gate) == LONG
    mb = pd.DataFrame({"method": "bl", "replay": "full", "seed": [0, 1], "megabatch": 4, "train_acc": 0.99})
    checks = lure.preconditions(mb, gate)
    assert [c.holds for c in checks] == [False, True]
    assert "no cell passed" in checks[0].measured and "90.0%" in checks[0].measured
    frame = pd.DataFrame({"seed": [0, 1, 2] * 2, "variant": ["lure"] * 3 + ["bl"] * 3, "test_acc": [0.9, 0.91, 0.92, 0.8, 0.8, 0.81]})
    claim = next(c for c in lure.CLAIMS if c.id == "lure_vs_bl")
    result = report.evaluate(claim, frame, checks)
    assert result.stage == "not testable" and "regime gate" in result.reason
    unrun = lure.evaluate_claim(claim, None, checks)          # nothing ran: the gate is the reason, with its values
    assert unrun.stage == "not testable" and "no cell passed" in unrun.reason and "not run" not in unrun.reason
    assert "not run" in lure.evaluate_claim(claim, None, checks[1:]).reason   # no gate: simply not run


def test_relative_corruption_accuracy_divides_by_the_runs_own_clean_accuracy():
    rows = pd.DataFrame({"variant": ["bl"] * 3 + ["lure"] * 3, "seed": 0,
                         "corruption": ["clean", "fog", "fog"] * 2, "severity": [0, 1, 5] * 2,
                         "acc": [0.8, 0.4, 0.2, 0.9, 0.9, 0.45]})
    out = lure.relative_corruption_accuracy(rows)
    assert list(out.rel_acc) == pytest.approx([0.5, 0.25, 1.0, 0.5])
    assert lure.relative_corruption_accuracy(rows[rows.corruption != "clean"]) is None


@pytest.mark.parametrize("method, extra", [("lure", {}), ("bl", {}), ("llf", {"llf_form": "official"})])
def test_the_stream_records_which_entries_each_method_changed(method, extra):
    config = stream.make_config(**TINY, method=method, seed=3, **extra)
    out = stream.run_stream(config)
    changed = out["changed"]
    assert set(changed.megabatch) == {2} and (changed.n_changed <= changed.n_total).all()
    n_reset = int(out["megabatches"].set_index("megabatch").n_reset[2])
    if method == "lure":   # exactly the re-drawn entries, only in tensors named "weight"
        assert changed.n_changed.sum() == n_reset > 0
        assert changed[~changed.tensor.str.contains("weight")].n_changed.sum() == 0
    elif method == "bl":
        assert changed.n_changed.sum() == 0
    else:                  # official LLF: layer3, layer4 and fc weights; shortcuts and the fc bias kept
        hit = changed.set_index("tensor").n_changed
        assert hit["fc.weight"] == changed.set_index("tensor").n_total["fc.weight"] and hit["fc.bias"] == 0
        assert hit[[t for t in hit.index if "shortcut" in t]].sum() == 0
        assert hit[[t for t in hit.index if t.startswith(("layer1", "layer2", "conv1", "bn1"))]].sum() == 0


def test_gate_megabatches_lists_every_stored_gate_run_by_mega_batch(tmp_path):
    st = _gate_store(tmp_path, {"8/1100/30/off": (0.90, {"bl": 0.60, "scratch": 0.63, "bl_code": 0.58}, 300.0)})
    frame = lure.gate_megabatches(LONG, st)
    assert len(frame) == 6 * 4 and set(frame.cell) == {"8/1100/30/off"}
    assert set(frame.variant) == {"bl", "scratch", "bl_code"} and set(frame.megabatch) == {1, 2, 3, 4}
    assert frame[frame.megabatch == 2].train_acc.eq(0.90).all()
    assert lure.gate_megabatches(LONG, store.Store(tmp_path / "empty")).empty


def test_a_failed_gate_is_the_reason_only_of_the_claims_long_plans():
    planned = lure.planned_claims(LONG)
    assert {"lure_vs_bl", "lure_cer", "warm_start_penalty", "bl_vs_bl_code", "lure_corruptions_relative"} <= planned
    assert not {"lure_no_replay", "lure_pgd", "snip_vs_fisher", "fraction_20_vs_5", "lure_vs_sp_paper"} & planned
    assert lure.planned_claims(runner.resolve_params("lure", profile="paper")) == {c.id for c in lure.CLAIMS}
    failed = [report.Precondition(lure.GATE_PRECONDITION, "no cell passed: …", False)]
    by_id = {c.id: c for c in lure.CLAIMS}
    assert "no cell passed" in lure.evaluate_claim(by_id["lure_vs_bl"], None, failed, planned).reason
    assert lure.evaluate_claim(by_id["lure_no_replay"], None, failed, planned).reason == "not run at this profile"
