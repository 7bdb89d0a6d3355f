"""zaplib.store: config hashing, stored runs (atomic, resumable, big checkpoints), code versions,
the clean-tree rule for published profiles, and sweeps (serial, processes, Dask). No training
happens here: experiment functions are tiny pure functions of their config."""
import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from zaplib import store as store_module
from zaplib.store import DirtyTreeError, Store, code_version, config_hash, experiment, grid, run_key, sweep

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- results store

CALLS = []


def square(config):
    """A pure experiment: a table, a tensor and a small value from the config."""
    CALLS.append(config)
    x = config["x"]
    return {"table": pd.DataFrame({"step": [0, 1], "value": [x * 0.1, x * x / 3]}),
            "weights": {"w": torch.full((3,), float(x))}, "summary": {"x2": x * x}}


def crash(config):
    raise RuntimeError("killed mid-run")


def test_config_hash_is_sha256_of_canonical_json_and_ignores_key_order():
    a, b = {"seed": 1, "lr": 0.1, "nested": {"p": 1, "q": [1, 2]}}, {"nested": {"q": [1, 2], "p": 1}, "lr": 0.1, "seed": 1}
    assert config_hash(a) == config_hash(b)
    expected = hashlib.sha256(b'{"lr":0.1,"nested":{"p":1,"q":[1,2]},"seed":1}').hexdigest()[:16]
    assert config_hash(a) == expected
    assert config_hash({**a, "seed": 2}) != config_hash(a)
    with pytest.raises(TypeError):
        config_hash({"x": object()})


def test_store_writes_config_meta_tables_and_tensors_and_reuses_finished_runs(tmp_path):
    store, config = Store(tmp_path, force=False), {"x": 3, "profile": "smoke"}
    CALLS.clear()
    first = store.run("demo", config, square)
    second = store.run("demo", {"profile": "smoke", "x": 3}, square)
    assert len(CALLS) == 1  # the second call came from the store
    path = tmp_path / "demo" / config_hash(config)
    assert first.path == path and sorted(p.name for p in path.iterdir()) == [
        "config.json", "meta.json", "table.csv", "values.json", "weights.pt"]
    pd.testing.assert_frame_equal(first["table"], second["table"])
    assert second["table"]["value"].tolist() == [0.30000000000000004, 3.0]  # exact round trip
    assert torch.equal(second["weights"]["w"], torch.full((3,), 3.0)) and second["summary"] == {"x2": 9}
    meta = json.loads((path / "meta.json").read_text())
    for key in ("git_commit", "git_dirty", "zaplib_version", "device", "torch_version", "wall_time_s",
                "started", "finished"):
        assert key in meta
    assert meta["profile"] == "smoke" and json.loads((path / "config.json").read_text()) == config


def test_a_crashed_run_leaves_nothing_and_the_rerun_computes(tmp_path):
    store = Store(tmp_path, force=False)
    with pytest.raises(RuntimeError, match="killed"):
        store.run("demo", {"x": 1}, crash)
    assert not (tmp_path / "demo").exists() or not any((tmp_path / "demo").iterdir())
    CALLS.clear()
    store.run("demo", {"x": 1}, square)
    assert len(CALLS) == 1 and store.complete("demo", {"x": 1})


def test_partial_folders_of_killed_processes_are_ignored_and_cleaned(tmp_path):
    store = Store(tmp_path, force=False)
    dead = tmp_path / "demo" / f".{config_hash({'x': 1})}.tmp-{socket.gethostname()}-999999999"
    dead.mkdir(parents=True)
    (dead / "table.csv").write_text("half a file")
    assert not store.complete("demo", {"x": 1}) and store.configs("demo") == []
    store.run("demo", {"x": 2}, square)
    assert not dead.exists() and store.configs("demo") == [{"x": 2}]


def test_force_recomputes_once_per_store(tmp_path, monkeypatch):
    Store(tmp_path).run("demo", {"x": 2}, square)
    CALLS.clear()
    Store(tmp_path).run("demo", {"x": 2}, square, force=True)
    assert len(CALLS) == 1
    monkeypatch.setenv("ZAPLIB_FORCE", "1")  # what `python -m zaplib run --force` sets
    forced = Store(tmp_path)
    forced.run("demo", {"x": 2}, square)
    forced.run("demo", {"x": 2}, square)  # the same notebook asking again gets the fresh run
    assert len(CALLS) == 2 and sorted(os.listdir(tmp_path / "demo")) == [config_hash({"x": 2})]


def test_big_checkpoints_are_git_ignored_and_recomputed_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "BIG_CHECKPOINT_BYTES", 100)
    store, config = Store(tmp_path, force=False), {"x": 4}
    run = store.run("demo", config, square)
    big = run.path / "weights.pt.big"
    assert big.exists() and not (run.path / "weights.pt").exists()
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", f"results/demo/abc/{big.name}"],
                             cwd=REPO).returncode
    assert ignored == 0, ".gitignore must ignore big checkpoints"
    big.unlink()
    CALLS.clear()
    without = store.run("demo", config, square)
    assert "weights" not in without and without.meta["missing"] == ["weights"] and not CALLS
    again = store.run("demo", config, square, checkpoints=True)
    assert len(CALLS) == 1 and torch.equal(again["weights"]["w"], torch.full((3,), 4.0))


def test_table_stacks_runs_with_their_config_columns(tmp_path):
    store = Store(tmp_path, force=False)
    configs = [{"x": x, "opt": {"lr": 0.1}, "seeds": [0, 1]} for x in (1, 2, 3)]
    for config in configs:
        store.run("demo", config, square)
    table = store.table("demo", "table")
    assert len(table) == 6 and set(table["x"]) == {1, 2, 3}
    assert set(table["opt.lr"]) == {0.1} and set(table["seeds"]) == {(0, 1)}
    assert table["run"].nunique() == 3
    only = store.table("demo", "table", configs=configs[:1])
    assert only["x"].tolist() == [1, 1]
    with pytest.raises(FileNotFoundError):
        store.table("demo", "no_such_table")


# ----------------------------------------------------------------------------- sweeps

def threads_in_worker(config):
    """Reports the worker's pid and torch threads, so tests see where a config ran."""
    import torch as worker_torch

    return {"pid": os.getpid(), "threads": worker_torch.get_num_threads(), "seed": config["seed"],
            "table": pd.DataFrame({"seed": [config["seed"]], "loss": [1.0 / (1 + config["seed"])]})}


class CountingExecutor:
    """Wraps an executor and counts what is submitted to it."""

    def __init__(self, inner):
        self.inner, self.submitted = inner, 0

    def submit(self, fn, *args, **kwargs):
        self.submitted += 1
        return self.inner.submit(fn, *args, **kwargs)


def test_grid_is_the_cartesian_product():
    configs = grid(seed=[0, 1], lr=[0.1, 0.01, 0.001], method=["zap"])
    assert len(configs) == 6 and configs[0] == {"seed": 0, "lr": 0.1, "method": "zap"}
    assert configs[-1] == {"seed": 1, "lr": 0.001, "method": "zap"}


def test_serial_sweep_resumes_from_the_store(tmp_path):
    store, configs = Store(tmp_path, force=False), [{"x": x} for x in range(4)]
    store.run("demo", configs[1], square)
    store.run("demo", configs[3], square)
    CALLS.clear()
    results = sweep(square, configs + [configs[0]], store=store, experiment="demo", progress=False)
    assert sorted(c["x"] for c in CALLS) == [0, 2]  # stored ones skipped, duplicates computed once
    assert [r["summary"]["x2"] for r in results] == [0, 1, 4, 9, 0]
    assert [r.config for r in results] == configs + [configs[0]]
    assert sweep(square, [{"x": 5}], progress=False)[0]["summary"] == {"x2": 25}  # no store


def test_process_pool_sweep_runs_in_single_thread_workers_and_resumes(tmp_path):
    store, configs = Store(tmp_path, force=False), grid(seed=[0, 1, 2])
    store.run("pool", configs[0], threads_in_worker)
    with store_module.local_executor(2) as pool:
        counting = CountingExecutor(pool)
        results = sweep(threads_in_worker, configs, executor=counting, store=store, experiment="pool",
                        progress=False)
    assert counting.submitted == 2
    assert {r["pid"] for r in results[1:]}.isdisjoint({os.getpid()})
    assert [r["threads"] for r in results[1:]] == [1, 1]
    table = store.table("pool", "table")
    assert sorted(table["seed"]) == [0, 1, 2]


def test_sweep_raises_the_first_failure_with_its_config_and_keeps_finished_runs(tmp_path):
    store = Store(tmp_path, force=False)
    with pytest.raises(RuntimeError, match=r'config \{"x":1\}'):
        sweep(crash_on_one, [{"x": 0}, {"x": 1}, {"x": 2}], store=store, experiment="d", progress=False)
    assert store.configs("d") == [{"x": 0}]  # finished before the failure: kept; nothing after it


def crash_on_one(config):
    if config["x"] == 1:
        raise ValueError("boom")
    return {"ok": True}


def test_sweep_on_a_real_dask_cluster_over_loopback(tmp_path, monkeypatch):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        store = Store(tmp_path, force=False)
        store.run("dask", {"seed": 0}, threads_in_worker)
        monkeypatch.setenv("ZAPLIB_SCHEDULER", cluster.scheduler_address)
        executor = store_module.make_executor()
        assert isinstance(executor, store_module.DaskExecutor)
        counting = CountingExecutor(executor)
        try:
            results = sweep(threads_in_worker, grid(seed=[0, 1, 2]), executor=counting, store=store,
                            experiment="dask", progress=False)
        finally:
            executor.shutdown()
    assert counting.submitted == 2 and [r["seed"] for r in results] == [0, 1, 2]
    assert sorted(store.table("dask", "table")["seed"]) == [0, 1, 2]
    assert results[2].meta["host"] == socket.gethostname() and results[2].meta["torch_threads"] == 1




# ----------------------------------------------------------------------------- code versions

def _versioned(version: int):
    """The experiment "algo" declared at ``version`` (a fresh function, as after an edit + reload)."""
    @experiment("algo", version=version)
    def algo(config):
        CALLS.append((version, config))
        return {"table": pd.DataFrame({"version": [version], "x": [config["x"]]})}

    return algo


def test_a_bumped_code_version_recomputes_and_tables_read_only_the_current_version(tmp_path):
    store, configs = Store(tmp_path, force=False), [{"x": 1}, {"x": 2}]
    CALLS.clear()
    v1 = _versioned(1)
    assert (v1.experiment, v1.code_version) == ("algo", 1)
    first = [store.run("algo", c, v1) for c in configs]
    assert first[0].path.name == config_hash(configs[0])  # version 1: the config alone (older runs)
    assert first[0].meta["code_version"] == 1
    store.run("algo", configs[0], v1)
    assert len(CALLS) == 2                                  # same version: reused

    v2 = _versioned(2)                                      # the algorithm changed
    again = store.run("algo", configs[0], v2)
    assert CALLS[-1] == (2, configs[0]) and len(CALLS) == 3  # recomputed, not the stale run
    assert again.path.name == run_key(configs[0], 2) != first[0].path.name
    assert again.meta["code_version"] == 2 and first[0].path.exists()  # the old run stays on disk
    table = store.table("algo", "table")                    # no configs given: every current run
    assert table["version"].tolist() == [2] and store.configs("algo") == [configs[0]]
    assert store.configs("algo", version=1) == configs      # the old version is still readable
    # load / complete / table get no function: they find the version registered by @experiment
    assert store.complete("algo", configs[0]) and not store.complete("algo", configs[1])
    assert store.load("algo", configs[0])["table"]["version"].tolist() == [2]
    with pytest.raises(FileNotFoundError, match="no table"):
        store.table("algo", "table", configs=configs)       # x=2 exists only at version 1
    sweep(v2, configs, store=store, progress=False)         # the experiment name comes from v2
    assert CALLS[-1] == (2, configs[1]) and len(CALLS) == 4
    assert sorted(store.table("algo", "table")["x"]) == [1, 2]


def test_a_function_declared_for_another_experiment_is_refused(tmp_path):
    with pytest.raises(ValueError, match="declared as experiment 'algo'"):
        Store(tmp_path).run("other", {"x": 1}, _versioned(1))
    with pytest.raises(ValueError, match="int >= 1"):
        experiment("algo", version=0)


def test_every_stored_experiment_of_the_library_declares_its_code_version():
    from zaplib import learning_paths, pretraining, stream, transfer
    from zaplib.experiments import frozen_weights, toolkit

    declared = {fn.experiment: fn.code_version for fn in (
        toolkit.run, pretraining.pretrain_run, transfer.transfer_run, stream.run_stream, learning_paths.run_path, frozen_weights.run)}
    assert set(declared) == {toolkit.EXPERIMENT, pretraining.PRETRAIN_EXPERIMENT, transfer.TRANSFER_EXPERIMENT,
                             stream.EXPERIMENT, learning_paths.EXPERIMENT, frozen_weights.EXPERIMENT}
    for name, version in declared.items():  # each is what the store keys that experiment's runs on
        assert isinstance(version, int) and version >= 1
        assert code_version(name) == version


# ----------------------------------------------------------------------------- clean trees

def _git(repo: Path, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_published_profiles_compute_only_from_a_committed_tree(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "zaplib").mkdir(parents=True)
    (repo / "zaplib" / "algo.py").write_text("x = 1\n")
    (repo / "notes.md").write_text("notes\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "start")
    sources = repo / "zaplib"
    state = lambda: store_module.git_state.__wrapped__(sources)  # uncached: the tree changes below
    monkeypatch.setattr(store_module, "_git_state", state)
    monkeypatch.delenv("ZAPLIB_ALLOW_DIRTY", raising=False)
    assert state()[1] is False
    (repo / "notes.md").write_text("edited notes\n")          # outside the sources: still clean
    assert state()[1] is False
    Store(tmp_path / "results", profile="long").run("demo", {"x": 1}, square)

    (sources / "algo.py").write_text("x = 2\n")               # an uncommitted change to the code
    commit, dirty = state()
    assert dirty is True and len(commit) == 40
    long = Store(tmp_path / "results", profile="long")
    CALLS.clear()
    with pytest.raises(DirtyTreeError, match="Commit first.*ZAPLIB_ALLOW_DIRTY=1"):
        long.run("demo", {"x": 2}, square)
    with pytest.raises(DirtyTreeError):
        sweep(square, [{"x": 1}, {"x": 3}], store=long, experiment="demo", progress=False)
    assert CALLS == [] and not long.complete("demo", {"x": 2})
    assert long.run("demo", {"x": 1}, square)["summary"] == {"x2": 1}  # stored runs: read as usual
    assert sweep(square, [{"x": 1}], store=long, experiment="demo", progress=False)[0].config == {"x": 1}
    assert Store(tmp_path / "results", profile="paper").require_clean
    Store(tmp_path / "results", profile="quick").run("demo", {"x": 2}, square)  # quick: allowed
    Store(tmp_path / "results", require_clean=True, profile="quick").run("demo", {"x": 2}, square)  # stored
    assert Store(tmp_path / "results", force=True).run("demo", {"x": 2}, square).meta["git_dirty"] is True
    monkeypatch.setenv("ZAPLIB_ALLOW_DIRTY", "1")             # a throwaway run, explicitly
    assert long.run("demo", {"x": 3}, square).meta["git_dirty"] is True

    _git(repo, "commit", "-qam", "the fix")
    monkeypatch.delenv("ZAPLIB_ALLOW_DIRTY")
    run = Store(tmp_path / "results", profile="long").run("demo", {"x": 4}, square)
    assert run.meta["git_dirty"] is False and run.meta["git_commit"] == state()[0]
