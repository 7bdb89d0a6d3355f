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
    assert summary["status"] == "pass" and summary["cell"] == "16:8" and npt.planned_runs(LONG, passed) == []
    assert len(summary["table"]) == 6 and summary["table"].seconds_per_epoch.iloc[0] == pytest.approx(4.2)
    assert len(npt.full_plan(LONG)) == 3 * 6  # the dry run prices every cell


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
