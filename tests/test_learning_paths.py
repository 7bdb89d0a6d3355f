"""Learning paths (zaplib.learning_paths): construction, discretisation, bias-reset placement, the early-stopping
budget, the prefix memo and the appendix statistics, on a tiny synthetic dataset."""

import numpy as np
import pandas as pd
import pytest
import torch

import zaplib.learning_paths as P
from zaplib import data, models

# ----------------------------------------------------------------------------- tiny data
N_CLASSES, SIDE = 4, 8


def _fake_dataset(n_train=240, n_test=80, seed=0):
    """Class-dependent bright squares plus noise, uint8 NCHW (a learnable 4-class task)."""
    g = torch.Generator().manual_seed(seed)

    def images(n):
        y = torch.arange(n) % N_CLASSES
        x = torch.randint(0, 60, (n, 3, SIDE, SIDE), generator=g)
        for c in range(N_CLASSES):
            r, q = divmod(c, 2)
            x[y == c, :, r * 4:(r + 1) * 4, q * 4:(q + 1) * 4] += 180
        return x.clamp(0, 255).to(torch.uint8), y

    xtr, ytr = images(n_train)
    xte, yte = images(n_test)
    return data.Dataset(xtr, ytr, xte, yte, np.array([str(c) for c in range(N_CLASSES)]), name="fake")


@pytest.fixture
def fake_data(monkeypatch, tmp_path):
    monkeypatch.setattr(P.data, "load", lambda name, device=None, verify=True: _fake_dataset())
    monkeypatch.setenv("ZAPLIB_PATHS_CACHE", str(tmp_path / "memo"))
    P._prepared.cache_clear()
    yield
    P._prepared.cache_clear()


DATA = {"dataset": "fake", "n_train": 200, "n_val": 40, "n_test": 0, "resolution": None}
MODEL = {"name": "small_cnn", "width": 4, "hidden": 16}
PROBES = {"n_probe": 32, "sharpness_draws": 1, "probe_dense": 1, "probe_every": 0}


def _config(path, seed=0, **probes):
    return P.path_config(path, seed, DATA, MODEL, {**PROBES, **probes})


# ----------------------------------------------------------------------------- construction
def test_1d_levels_blur_contrast_shift():
    blur = [s.task.blur for s in P.path_1d("blur", 4.0, 3)]
    assert blur == pytest.approx([4.0, 1.6, 1.0])  # linear in resolution 1/k: 0.25, 0.625, 1
    assert [1 / k for k in (s.task.blur for s in P.path_1d("blur", 4.0, 5))] == pytest.approx(
        np.linspace(0.25, 1, 5))
    assert [s.task.contrast for s in P.path_1d("contrast", 0.0, 5)] == pytest.approx([0, .25, .5, .75, 1])
    assert [s.task.shift for s in P.path_1d("shift", 8.0, 3)] == pytest.approx([8, 4, 0])
    jump = P.path_1d("blur", 4.0, 2)
    assert jump[0].task == P.Task(blur=4.0) and jump[-1].task.is_identity
    for kind in P.TRANSFORMS:  # every 1-D path ends at the clean target and only moves one transform
        path = P.path_1d(kind, {"blur": 4.0, "contrast": 0.0, "shift": 8.0}[kind], 4)
        assert path[-1].task.is_identity
        others = {"blur", "contrast", "shift"} - {kind}
        assert all(getattr(s.task, o) == P.Task().__getattribute__(o) for s in path for o in others)
    with pytest.raises(ValueError):
        P.path_1d("blur", 4.0, 1)
    with pytest.raises(ValueError):
        P.path_1d("rotate", 4.0, 3)


def test_process_assignment_first_vs_rest():
    first = P.LearningProcess(lr=0.1, max_epochs=7, patience=None, restore_best=False)
    rest = P.LearningProcess(lr=0.2, max_epochs=9, patience=3)
    path = P.path_1d("contrast", 0.0, 4, first=first, rest=rest)
    assert path[0].process == first and all(s.process == rest for s in path[1:])


def test_2d_orders_visit_the_right_corner():
    kinds, starts = ("blur", "contrast"), (4.0, 0.0)
    btc = P.path_2d(kinds, starts, "first_then_second", 3)
    ctb = P.path_2d(kinds, starts, "second_then_first", 3)
    diag = P.path_2d(kinds, starts, "diagonal", 3)
    assert (btc[1].task.blur, btc[1].task.contrast) == pytest.approx((1.0, 0.0))  # unblurred, still low contrast
    assert (ctb[1].task.blur, ctb[1].task.contrast) == pytest.approx((4.0, 1.0))  # full contrast, still blurred
    assert (diag[1].task.blur, diag[1].task.contrast) == pytest.approx((1.6, 0.5))
    for path in (btc, ctb, diag):
        assert (path[0].task.blur, path[0].task.contrast) == starts and path[-1].task.is_identity
    # monotone: no step makes any transform stronger again
    five = P.path_2d(("blur", "shift"), (4.0, 8.0), "first_then_second", 5)
    assert np.all(np.diff([s.task.blur for s in five]) <= 0) and np.all(np.diff([s.task.shift for s in five]) <= 0)
    assert [(s.task.blur, s.task.shift) for s in P.path_2d(kinds, starts, "diagonal", 2)] == \
        [(s.task.blur, s.task.shift) for s in P.path_2d(kinds, starts, "first_then_second", 2)]
    with pytest.raises(ValueError):
        P.path_2d(("blur", "blur"), starts, "diagonal", 3)


@pytest.mark.parametrize("setup", [(False, False), (False, True), (True, False), (True, True)])
def test_bias_reset_placement(setup):
    path = P.two_task_path(P.Task(blur=4.0), P.LearningProcess(), P.LearningProcess(), setup, 0.01)
    assert [s.bias_shift for s in path] == [0.01 if b else 0.0 for b in setup]
    assert path[1].task.is_identity


def test_config_is_json_and_round_trips():
    import json

    path = P.path_2d(("blur", "shift"), (4.0, 8.0), "diagonal", 4)
    cfg = _config(path)
    assert json.loads(json.dumps(cfg)) == cfg
    assert tuple(P.step_from_dict(s) for s in cfg["path"]) == path


def test_task_transform_limits():
    x = torch.rand(6, 3, 16, 16)
    assert P.task_transform(P.Task()) is None
    blurred = P.task_transform(P.Task(blur=4.0))(x)
    assert torch.allclose(blurred, data.blur(x, 4.0))
    low = P.task_transform(P.Task(contrast=0.0))(x)
    assert (low.std(dim=(1, 2, 3)) < x.std(dim=(1, 2, 3)) * 0.2).all()  # 10% contrast floor
    shifted = P.task_transform(P.Task(shift=3.0))(x, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape and not torch.equal(shifted, x)


# ----------------------------------------------------------------------------- statistics
def test_early_stopping_budget_and_fixed_phase(fake_data):
    fixed = P.LearningProcess(lr=0.05, max_epochs=3, patience=None, restore_best=False, batch_size=50)
    es = P.LearningProcess(lr=0.05, max_epochs=6, patience=1, batch_size=50)
    out = P.run_path(_config(P.two_task_path(P.Task("fake", blur=2.0), fixed, es)))
    steps = out["steps"].set_index("step")
    assert steps.loc[0, "epochs_run"] == 3  # fixed length: exactly max_epochs
    ran, best = steps.loc[1, "epochs_run"], steps.loc[1, "best_epoch"]
    assert 1 <= ran <= 6 and best <= ran
    assert ran == 6 or ran - best == 1  # stopped exactly when patience ran out
    records = out["records"]
    assert records.groupby("step")["epoch"].max().tolist() == [3, ran]
    # the step ends with the best-validation checkpoint: its clean test loss is the final one
    assert out["final"]["test_loss"].iloc[0] == pytest.approx(steps.loc[1, "test_loss_clean"])
    assert out["final"]["total_epochs"].iloc[0] == 3 + ran
    assert set(out["probes"]["step"]) == {0, 1} and out["probes"]["final"].sum() == 2


def test_bias_reset_changes_every_bias_in_run(fake_data):
    proc = P.LearningProcess(lr=0.05, max_epochs=1, patience=None, batch_size=50)
    out = P.run_path(_config(P.two_task_path(P.Task("fake", blur=2.0), proc, proc, (False, True), 0.01)))
    steps = out["steps"].set_index("step")
    m = models.SmallCNN(in_channels=3, width=4, input_size=SIDE, hidden=16, num_classes=N_CLASSES)
    n_bias = sum(p.numel() for n, p in m.named_parameters() if n.endswith("bias"))
    assert steps.loc[0, "entries_shifted"] == 0 and steps.loc[1, "entries_shifted"] == n_bias
    moments = out["activity"].groupby("step")["moment"].apply(set)
    assert moments[0] == {"start", "end"} and moments[1] == {"start", "after_bias_reset", "end"}
    norms = out["norms"].query("step == 1 and kind == 'bias'").pivot(index="param", columns="moment", values="norm")
    assert (norms["after_bias_reset"] != norms["start"]).all()


def test_shared_prefix_memo_reproduces_fresh_run(fake_data, monkeypatch, tmp_path):
    fixed = P.LearningProcess(lr=0.05, max_epochs=2, patience=None, restore_best=False, batch_size=50)
    a = _config(P.two_task_path(P.Task("fake", blur=2.0), fixed, P.LearningProcess(lr=0.05, max_epochs=2, batch_size=50)))
    b = _config(P.two_task_path(P.Task("fake", blur=2.0), fixed, P.LearningProcess(lr=0.1, max_epochs=2, batch_size=50)))
    assert [len(c["path"]) for c in P.shared_prefixes([a, b])] == [1]
    P.run_path(a)  # memoises the shared blur phase
    assert len(list((tmp_path / "memo").glob("*.pt"))) == 1
    reused = P.run_path(b)
    monkeypatch.setenv("ZAPLIB_PATHS_CACHE", "off")
    fresh = P.run_path(b)
    assert reused["final"]["test_loss"].iloc[0] == pytest.approx(fresh["final"]["test_loss"].iloc[0], abs=1e-6)
    pd.testing.assert_frame_equal(reused["steps"], fresh["steps"], check_dtype=False)
    # same seed, same initial model: the baseline and the blurred path start from identical weights
    norms = fresh["norms"].query("step == 0 and moment == 'start'")["norm"].to_numpy()
    base = P.run_path(_config(P.baseline_path("fake", fixed)))
    assert np.allclose(base["norms"].query("step == 0 and moment == 'start'")["norm"].to_numpy(), norms)


def test_warm_prefixes_memoises_each_shared_prefix_once(fake_data, tmp_path):
    fixed = P.LearningProcess(lr=0.05, max_epochs=1, patience=None, restore_best=False, batch_size=50)
    a = _config(P.two_task_path(P.Task("fake", blur=2.0), fixed, P.LearningProcess(lr=0.05, max_epochs=1, batch_size=50)))
    b = _config(P.two_task_path(P.Task("fake", blur=2.0), fixed, P.LearningProcess(lr=0.1, max_epochs=1, batch_size=50)))
    keys_a, keys_b = P.step_keys(a), P.step_keys(b)
    assert keys_a[0] == keys_b[0] and keys_a[1] != keys_b[1]  # the blur phase is shared, the clean step not
    assert P.warm_prefixes([a, b], progress=False) == 1
    assert [f.stem for f in (tmp_path / "memo").glob("*.pt")] == [keys_a[0]]
    assert P.warm_prefixes([a, b], progress=False) == 0  # already memoised
    assert P.warm_prefixes([a], progress=False) == 0      # nothing shared


def test_a_bf16_path_never_reuses_an_fp32_prefix():
    import zaplib.learning_paths as LP

    config = {"seed": 0, "data": {"dataset": "mnist"}, "model": {"name": "mlp"}, "probes": {},
              "path": [{"step": 1}, {"step": 2}]}
    assert LP.step_keys(config) != LP.step_keys({**config, "precision": "bf16"})
    assert LP.step_keys(config) == LP.step_keys({**config, "precision": "fp32"})
