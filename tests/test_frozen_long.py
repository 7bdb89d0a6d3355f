"""The `long` profile of "Mutually frozen weights" (issue 17): the regime gate and its rules, staged
planning, the declared retraining cells, the cost table, and the new training / unit / invariance
mechanisms. No training beyond a few steps of tiny nets."""
import copy

import numpy as np
import pandas as pd
import pytest
import torch

from zaplib import compute as zc
from zaplib import frozen, probes, resets, runner, store
from zaplib.experiments import frozen_weights as fw

LONG = runner.resolve_params("frozen_weights", profile="long")


def test_quick_configs_keep_the_keys_of_the_stored_runs():
    quick = runner.resolve_params("frozen_weights", profile="quick")
    keys = {store.run_key(c, fw.run.code_version) for d in quick["finetune_weight_decays"] for c in fw.configs(quick, d)}
    stored = {p.name for p in (store.project_root() / "results" / fw.EXPERIMENT).iterdir() if p.is_dir()}
    assert len(keys) == 6 and keys <= stored  # new keys enter a config only when non-default


def test_gate_seeds_are_apart_and_only_the_gate_is_planned_before_it_is_stored(tmp_path):
    gate = {s for c in fw.gate_configs(LONG) for s in c["seeds"]}
    assert gate == set(LONG["gate_seeds"]) | set(LONG["parity_seeds"]) and not gate & set(LONG["seeds"])
    empty = store.Store(tmp_path)
    planned = fw.planned_runs(LONG, empty)
    assert [c for _, c in planned] == fw.gate_configs(LONG)
    assert all(c["targets"] == [] for _, c in planned)
    settings = fw.run_settings(LONG, empty)
    assert settings == fw.Settings(precision="fp32", stack=False, reset_decay=None)  # nothing decided yet
    with pytest.raises(ValueError, match="regime gate"):
        fw.configs(LONG, 0.001, settings)


def _gate_store(tmp_path, cost=(0.0, 0.01, 0.03, 0.06), share=0.02, parity_shift=0.0, stacked_s=1.0):
    """Made-up gate runs: source validation accuracy 0.98 − cost[λ], ``share`` mutually frozen at
    λ > 0 (3 collapsed units), bf16 − fp32 = ``parity_shift`` (± a small per-seed wobble)."""
    st = store.Store(tmp_path)
    for c in fw.gate_configs(LONG):
        seed = c["seeds"][0]
        prec = c.get("precision", "fp32")
        rows, units = [], []
        for wd in c["weight_decays"]:
            acc = 0.98 - dict(zip(LONG["weight_decays"], cost))[wd] + 0.0005 * (seed % 3)
            acc += parity_shift if prec == "bf16" else 0.0
            acc += 0.0003 * (seed % 2) * (prec == "bf16")
            rows.append({"model": len(rows), "seed": seed, "weight_decay": wd, "source_val_acc": acc,
                         "mutually_frozen_frac": share * (wd > 0) + 0.0005 * (seed % 2) * (prec == "bf16")})
            units.append({"seed": seed, "weight_decay": wd, "layer": "body.0", "collapsed_units": 3 * (wd > 0)})
        timing = pd.DataFrame([{"phase": "pretrain", "models": len(rows), "steps": 100, "image_steps": 12800 * len(rows), "seconds": 10.0},
                               {"phase": "benchmark stacked", "models": len(rows), "steps": 20, "image_steps": 1, "seconds": stacked_s},
                               {"phase": "benchmark separate", "models": len(rows), "steps": 20, "image_steps": 1, "seconds": 1.0}])
        st.save(fw.EXPERIMENT, c, {"models": pd.DataFrame(rows), "units": pd.DataFrame(units), "timing": timing},
                version=fw.run.code_version)
    return st


def test_the_gate_chooses_lambda_star_and_every_reported_config_uses_it(tmp_path):
    st = _gate_store(tmp_path)
    gate = fw.gate_summary(LONG, st)
    assert gate["reset_decay"] == 0.01                # 3 points at 0.01, 6 at 0.03
    assert gate["regime_holds"] and gate["trained"] and gate["parity_holds"]
    assert not gate["stack_faster"]                   # stacked 1.0 s = separate 1.0 s: not faster
    planned = fw.planned_runs(LONG, st)
    reported = [c for _, c in planned if c["targets"]]
    assert len(reported) == 2 * len(LONG["seeds"])   # one per source and seed
    assert {c["reset_decay"] for c in reported} == {0.01}
    assert {c["precision"] for c in reported} == {"bf16"} and {c["stack_models"] for c in reported} == {False}


def test_gate_rules_fail_on_a_small_share_a_parity_gap_and_an_untrained_network(tmp_path):
    gate = fw.gate_summary(LONG, _gate_store(tmp_path / "a", share=0.009))
    assert not gate["regime_holds"]                   # 0.9 % < 1 % on every seed
    gate = fw.gate_summary(LONG, _gate_store(tmp_path / "b", parity_shift=0.01))
    assert not gate["parity_holds"] and gate["parity_p"]["accuracy"] > 0.05   # 1 point > ±0.5
    assert fw.run_settings(LONG, _gate_store(tmp_path / "c", parity_shift=0.01)).precision == "fp32"
    st = _gate_store(tmp_path / "d", cost=(0.05, 0.05, 0.05, 0.05))  # λ = 0 at 93 %: not trained
    assert not fw.gate_summary(LONG, st)["trained"]
    assert [c for _, c in fw.planned_runs(LONG, st)] == fw.gate_configs(LONG)  # stops after the gate
    assert fw.gate_summary(LONG, _gate_store(tmp_path / "e", stacked_s=0.5))["stack_faster"]


def test_declared_cells_count_dedupe_and_keep_scratch_in_the_clean_run():
    settings = fw.Settings("bf16", False, 0.01)
    blurred, clean = (next(c for c in fw.configs(LONG, 0.001, settings) if c["source"] == s)
                      for s in ("mnist:blur4", "mnist"))
    for config, full, few in ((blurred, 15, 6), (clean, 8, 6)):
        cells = frozen.retrain_cells(config)
        assert len(cells) == len(set(cells))
        assert sum(c[1] == 1.0 for c in cells) == full and sum(c[1] == 0.01 for c in cells) == few
    assert not any(c[3] == "reinit" for c in frozen.retrain_cells(blurred))
    assert {c[2] for c in frozen.retrain_cells(clean) if c[3] == "reinit"} == {0.0}
    assert {c[3] for c in frozen.retrain_cells(blurred) if c[2] == 0.01 and c[1] == 1.0} == {
        "none", "reset_mutual", "reset_random", "reset_units"}
    # cut 3: the random and unit-level controls only at the full target set, where they are claimed
    assert {c[3] for c in frozen.retrain_cells(blurred) if c[2] == 0.01 and c[1] == 0.01} == {"none", "reset_mutual"}
    # cut 5: the clean source pre-trains only λ = 0, λ* and the largest λ; the blurred one all four
    assert blurred["weight_decays"] == LONG["weight_decays"] and clean["weight_decays"] == [0.0, 0.01, 0.03]
    quick = fw.configs(runner.resolve_params("frozen_weights", profile="quick"))[0]
    assert len(frozen.retrain_cells(quick)) == 2 * 3 * 5 * 5  # all: targets × fractions × λ × interventions


def test_the_whole_long_profile_fits_170_minutes_on_two_workers():
    whole = fw.full_plan(LONG)
    minutes = sum(fw.cost_seconds(c) for _, c in whole) / 60
    assert minutes / 2 <= 170
    assert sum(fw.cost_seconds(c) for _, c in whole if not c["targets"]) / 60 < 60  # the gate


def test_cosine_schedule_and_validation_steps():
    assert frozen.lr_at(0, 100, 0.05, "cosine") == 0.05
    assert frozen.lr_at(100, 100, 0.05, "cosine") == pytest.approx(0.0)
    assert frozen.lr_at(50, 100, 0.05, "cosine") == pytest.approx(0.025)
    assert frozen.lr_at(70, 100, 0.05) == 0.05
    assert frozen.val_schedule(858, 6)[-1] == 858 and len(frozen.val_schedule(858, 6)) == 6


def test_best_val_readout_returns_each_model_at_its_validation_peak():
    torch.manual_seed(0)
    x, y = torch.randn(256, 6), torch.randint(0, 3, (256,))
    xv, yv = torch.randn(64, 6), torch.randint(0, 3, (64,))
    nets = [frozen.models.MLP(6, hidden=(8,), num_classes=3) for _ in range(2)]
    kwargs = dict(steps=30, batch_size=32, lr=0.5, momentum=0.9, val_data=(xv, yv), val_steps=[10, 20, 30])
    gens = lambda: [torch.Generator().manual_seed(s) for s in range(2)]  # noqa: E731
    for stack in (True, False):
        best, losses, _ = frozen.train_stacked([copy.deepcopy(n) for n in nets], [0.0, 0.01], x, y,
                                               generators=gens(), readout="best_val", stack=stack, **kwargs)
        peak = losses.dropna(subset=["val_acc"]).groupby("model").val_acc.max()
        for s, net in enumerate(best):
            assert frozen.train.evaluate(net, xv, yv)["acc"] == pytest.approx(peak[s])
    # stacked and separate training are the same update rule
    a, _, _ = frozen.train_stacked([copy.deepcopy(n) for n in nets], [0.0, 0.01], x, y, steps=5, batch_size=32,
                                   lr=0.1, momentum=0.9, generators=gens(), stack=True)
    b, _, _ = frozen.train_stacked([copy.deepcopy(n) for n in nets], [0.0, 0.01], x, y, steps=5, batch_size=32,
                                   lr=0.1, momentum=0.9, generators=gens(), stack=False)
    for na, nb in zip(a, b):
        for pa, pb in zip(na.parameters(), nb.parameters()):
            torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4)


def _dead_unit_mlp():
    torch.manual_seed(0)
    model = frozen.models.MLP(4, hidden=(3, 3), num_classes=2)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.sign(torch.randn_like(p)))
        model.body[1].weight[1, :] = 0.0
        model.body[1].bias[1] = 0.0
        model.body[3].weight[:, 1] = 0.0
    return model


def test_reset_units_changes_only_the_collapsed_units_rows_bias_and_outgoing_columns(gen):
    model = _dead_unit_mlp()
    net, n = frozen.intervene(model, "reset_units", 0.1, gen)
    changed = {k: p != dict(model.named_parameters())[k] for k, p in net.named_parameters()}
    assert n == 4 + 1 + 3
    assert changed["body.1.weight"][1].all() and changed["body.1.weight"].sum() == 4
    assert changed["body.1.bias"][1] and changed["body.1.bias"].sum() == 1
    assert changed["body.3.weight"][:, 1].all() and changed["body.3.weight"].sum() == 3
    assert not changed["head.weight"].any() and not changed["body.3.bias"].any()


def test_dormant_units_count_a_dead_unit_at_tau_zero_and_a_weak_one_by_its_score():
    model = _dead_unit_mlp()
    x = torch.randn(512, 4)
    table = probes.dormant_units(model, x, 0.0).set_index("site")
    assert table.loc["body.2", "dormant"] >= 1                 # unit 1: never active
    with torch.no_grad():
        model.body[1].weight[0] *= 0.01                       # unit 0 nearly silent, not dead
        model.body[1].bias[0] = 0.0
    weak = probes.dormant_units(model, x, 0.1).set_index("site")
    assert weak.loc["body.2", "dormant"] == table.loc["body.2", "dormant"] + 1
    assert probes.dormant_units(model, x, 0.0).set_index("site").loc["body.2", "dormant"] == table.loc["body.2", "dormant"]


def test_nuisance_directions_and_the_eps_table():
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        lin[1].weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]]))
    x = torch.full((8, 1, 2, 2), 0.5)
    x[:, 0, 0, 0] = 0.2
    flat = probes.nuisance_sensitivity(lin, x, lambda xb: xb + 0.1, batch_size=8)  # d ⟂ every row
    noise = probes.nuisance_sensitivity(lin, x, frozen.nuisance_transform("noise", x, torch.Generator().manual_seed(0)), batch_size=8)
    assert flat == pytest.approx(0.0, abs=1e-6) and noise > 0
    assert torch.equal(frozen.shift(torch.arange(9.0).reshape(1, 1, 3, 3), 1)[0, 0, 1:, 1:], torch.tensor([[0.0, 1], [3, 4]]))
    table = resets.eps_sensitivity(_dead_unit_mlp(), [0.01, 0.1, 1.0, 3.0])
    pooled = table.groupby("eps").apply(lambda g: (g.frozen_frac * g.n).sum() / g.n.sum())
    assert pooled.is_monotonic_increasing


def test_the_claims_table_qualifies_each_verdict_with_its_setting_and_the_sota_precondition():
    from test_frozen_weights import PARAMS, _runs
    runs = _runs()
    table = fw.claims_table(runs, PARAMS).set_index("id")
    assert table.loc["reset_helps_small_gap", "at"].startswith("λ* = 0.03")
    assert "0.959" in table.loc["fashion_mnist_sota", "reason"]
    inputs = fw.claim_inputs(_runs(mutual_share=0.005), PARAMS)
    for cid in ("reset_helps_small_gap", "reset_helps_large_gap"):
        assert fw.report.evaluate(next(c for c in fw.CLAIMS if c.id == cid), *inputs[cid]).stage == "not testable"
    deficit = fw.report.evaluate(next(c for c in fw.CLAIMS if c.id == "blur_hurts_same_decay"),
                                 *fw.claim_inputs(_runs(blur_deficit=0.02), PARAMS)["blur_hurts_same_decay"])
    assert deficit.stage == "tested" and deficit.estimate == pytest.approx(0.02, abs=0.005)


def test_operating_points_do_not_look_at_test_accuracy():
    from test_frozen_weights import _runs
    runs = _runs()
    before = fw.operating_points(runs, "fashion_mnist")
    shuffled = copy.copy(runs)
    shuffled.finetune = runs.finetune.assign(test_acc=np.random.default_rng(1).permutation(runs.finetune.test_acc.to_numpy()))
    after = fw.operating_points(shuffled, "fashion_mnist")
    assert before.iloc[0][["transfer", "weight_decay", "intervention"]].tolist() == \
        after.iloc[0][["transfer", "weight_decay", "intervention"]].tolist()


def test_the_long_dry_run_prices_the_whole_profile(tmp_path):
    import io
    out = io.StringIO()
    zc.compute("frozen_weights", None, "long", dry_run=True, workers=2, store=store.Store(tmp_path), out=out)
    assert "whole profile" in out.getvalue() and "gate bf16, 4 λ" in out.getvalue()


def test_with_scratch_fills_reinit_from_the_same_target_size_and_seed_only():
    acc = pd.DataFrame({"target": ["mnist", "mnist", "mnist", "fashion_mnist"], "fraction": [0.01, 0.01, 0.01, 0.01],
                        "seed": [0, 0, 1, 0], "transfer": ["a", "b", "a", "c"], "none": [0.5, 0.6, 0.7, 0.8],
                        "reinit": [np.nan, 0.9, np.nan, np.nan]})
    filled = fw.with_scratch(acc)
    assert filled.reinit.tolist()[:2] == [0.9, 0.9] and np.isnan(filled.reinit.iloc[2]) and np.isnan(filled.reinit.iloc[3])
    assert filled["none"].tolist() == acc["none"].tolist()
