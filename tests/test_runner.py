"""zaplib.runner: parameters and profiles, the results store, sweeps (serial, processes, Dask) and
papermill execution of a throwaway notebook. No training happens here: experiment functions are
tiny pure functions of their config."""
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch

from zaplib import runner
from zaplib.chapters import PROFILES, REGISTRY, Chapter
from zaplib.runner import ParameterError, Store, config_hash, grid, resolve_params, sweep

REPO = Path(__file__).resolve().parent.parent

TINY = Chapter(
    name="tiny",
    notebook="tiny.ipynb",
    params={"n": (int, 1, "a count"), "words": (list[str], ["a"], "some words"),
            "rate": (float, 0.5, "a rate"), "flag": (bool, False, "a switch"),
            "pair": (tuple[float, ...], (1.0, 2.0), "two numbers"),
            "kind": (str, "x", "a kind", ("x", "y"))},
    profiles={"smoke": {"n": 2}, "quick": {}, "paper": {"n": 100, "words": ["p", "q"]}},
)


# ----------------------------------------------------------------------------- parameters

@pytest.mark.parametrize("text, tp, expected", [
    ("3", int, 3), ("-2", int, -2), ("0.25", float, 0.25), ("1e-3", float, 1e-3), ("4", float, 4.0),
    ("true", bool, True), ("No", bool, False), ("hello", str, "hello"),
    ("0,1,2", list[int], [0, 1, 2]), ("[0, 1]", list[int], [0, 1]), ("", list[int], []),
    ("0.4,0.1", tuple[float, ...], (0.4, 0.1)), ("a,b", list[str], ["a", "b"]),
])
def test_strings_from_the_command_line_parse_to_the_declared_type(text, tp, expected):
    value = runner.coerce_value(text, tp)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("value, tp", [
    ("abc", int), ("1.5", int), ("maybe", bool), ("0,x", list[int]), (True, int), (1.5, int),
    ("a", float), (3, str), ([1.0, 2.0], list[int]), (7, list[int]),
])
def test_values_of_the_wrong_type_are_rejected(value, tp):
    with pytest.raises(ValueError):
        runner.coerce_value(value, tp)


def test_unknown_parameter_error_lists_every_valid_name_and_type():
    with pytest.raises(ParameterError) as info:
        resolve_params(TINY, {"nonexistent": "3"})
    message = str(info.value)
    assert "nonexistent" in message
    for line in ("profile: str", "n: int", "words: list[str]", "rate: float", "flag: bool",
                 "pair: tuple[float, ...]", "kind: str, one of x, y"):
        assert line in message


def test_wrong_type_error_names_the_parameter_its_type_and_lists_the_rest():
    with pytest.raises(ParameterError, match=r"'n' expects int, got 'abc'") as info:
        resolve_params(TINY, {"n": "abc"})
    assert "words: list[str]" in str(info.value)
    with pytest.raises(ParameterError, match="must be one of"):
        resolve_params(TINY, {"kind": "z"})
    with pytest.raises(ParameterError, match="unknown profile 'huge'"):
        resolve_params(TINY, profile="huge")


def test_profile_applies_and_explicit_values_override_it():
    assert resolve_params(TINY) == {"profile": "quick", "n": 1, "words": ["a"], "rate": 0.5,
                                    "flag": False, "pair": (1.0, 2.0), "kind": "x"}
    paper = resolve_params(TINY, profile="paper")
    assert (paper["profile"], paper["n"], paper["words"]) == ("paper", 100, ["p", "q"])
    mixed = resolve_params(TINY, {"n": "7", "flag": "true"}, profile="paper")
    assert (mixed["n"], mixed["flag"], mixed["words"]) == (7, True, ["p", "q"])
    # a 'profile' among the values wins over the argument (as papermill's -p profile would)
    assert resolve_params(TINY, {"profile": "smoke"}, profile="paper")["n"] == 2


def test_notebook_params_fills_none_from_the_profile_and_checks_the_rest():
    params = runner.notebook_params(TINY, {"profile": "smoke", "n": None, "words": None, "x": 1})
    assert params.n == 2 and params["words"] == ["a"] and params.profile == "smoke"
    assert runner.notebook_params(TINY, {"profile": "smoke", "n": 5}).n == 5
    assert runner.notebook_params(TINY, {"pair": [3, 4]}).pair == (3.0, 4.0)  # papermill injects lists
    with pytest.raises(ParameterError, match="'words' expects list"):
        runner.notebook_params(TINY, {"words": 3})
    assert params.provenance("words") == "profile smoke, words a"


def test_every_registered_chapter_resolves_all_profiles_and_has_a_parameters_cell():
    for chapter in REGISTRY.values():
        assert set(PROFILES) <= set(chapter.profiles)
        for profile in PROFILES:
            resolve_params(chapter, profile=profile)  # every profile value fits its type
        path = REPO / chapter.notebook
        assert path.exists(), f"chapter {chapter.name!r} is registered but {chapter.notebook} does not exist"
        notebook = nbformat.read(path, as_version=4)
        tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{chapter.notebook} needs exactly one cell tagged 'parameters'"
        for name in ("profile", *chapter.params):
            assert re.search(rf"^{name}\s*=", tagged[0].source, re.M), f"{chapter.notebook}: {name} missing"


def test_chapter_rejects_profiles_that_set_undeclared_parameters():
    with pytest.raises(ValueError, match="undeclared"):
        Chapter("bad", "bad.ipynb", {"n": (int, 1, "")},
                {"smoke": {"m": 1}, "quick": {}, "paper": {}})
    with pytest.raises(ValueError, match="lacks the profiles"):
        Chapter("bad", "bad.ipynb", {"n": (int, 1, "")}, {"quick": {}})


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
    monkeypatch.setattr(runner, "BIG_CHECKPOINT_BYTES", 100)
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
    with runner.local_executor(2) as pool:
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
        executor = runner.make_executor()
        assert isinstance(executor, runner.DaskExecutor)
        counting = CountingExecutor(executor)
        try:
            results = sweep(threads_in_worker, grid(seed=[0, 1, 2]), executor=counting, store=store,
                            experiment="dask", progress=False)
        finally:
            executor.shutdown()
    assert counting.submitted == 2 and [r["seed"] for r in results] == [0, 1, 2]
    assert sorted(store.table("dask", "table")["seed"]) == [0, 1, 2]
    assert results[2].meta["host"] == socket.gethostname() and results[2].meta["torch_threads"] == 1


# ----------------------------------------------------------------------------- command line and papermill

def _zaplib(*args):
    return subprocess.run([sys.executable, "-m", "zaplib", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_cli_rejects_an_unknown_parameter_with_exit_2_and_the_list_of_valid_ones():
    done = _zaplib("run", "toolkit", "-p", "nonexistent", "3")
    assert done.returncode == 2
    assert "unknown parameter 'nonexistent'" in done.stderr and "seeds: list[int]" in done.stderr
    done = _zaplib("run", "toolkit", "-p", "seeds", "abc")
    assert done.returncode == 2 and "'seeds' expects list[int], got 'abc'" in done.stderr
    assert _zaplib("run", "no_such_chapter").returncode == 2


def test_cli_list_shows_chapters_and_profiles_without_importing_papermill():
    # The chapter modules (and so torch) are imported to collect the registry; papermill and the
    # notebook machinery are not needed to list parameters.
    code = ("import sys; from zaplib.__main__ import main; main(['list']); "
            "assert 'papermill' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "toolkit" in done.stdout and "list[int]" in done.stdout and "smoke" in done.stdout


def _tiny_notebook(path: Path, body: str):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell('profile = "quick"\nn = None\nwords = None\npair = None',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


def test_run_chapter_executes_in_place_with_resolved_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("ZAPLIB_RESULTS", str(tmp_path / "results"))
    book = tmp_path / "book"
    book.mkdir()
    record = tmp_path / "seen.json"
    _tiny_notebook(book / "tiny.ipynb", (
        "import json, os\n"
        f"json.dump(dict(profile=profile, n=n, words=words, pair=pair, cwd=os.getcwd(),\n"
        f"               force=os.environ.get('ZAPLIB_FORCE'), results=os.environ['ZAPLIB_RESULTS']),\n"
        f"          open({str(record)!r}, 'w'))"))
    chapter = Chapter("tiny", "book/tiny.ipynb", TINY.params, TINY.profiles)
    path = runner.run_chapter(chapter, {"words": "u,v"}, profile="paper", force=True, root=tmp_path,
                              progress=False)
    assert path == book / "tiny.ipynb"
    seen = json.loads(record.read_text())
    assert seen == {"profile": "paper", "n": 100, "words": ["u", "v"], "pair": [1.0, 2.0],
                    "cwd": str(book), "force": "1", "results": str(tmp_path / "results")}
    executed = nbformat.read(path, as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert executed.metadata.papermill.output_path == "book/tiny.ipynb"  # no local or temporary path
    assert sorted(p.name for p in book.iterdir()) == ["tiny.ipynb"]  # no temporary left behind
    assert "ZAPLIB_FORCE" not in os.environ


def test_a_failing_chapter_keeps_the_original_notebook(tmp_path):
    _tiny_notebook(tmp_path / "tiny.ipynb", "raise RuntimeError('chapter broke')")
    original = (tmp_path / "tiny.ipynb").read_bytes()
    chapter = Chapter("tiny", "tiny.ipynb", TINY.params, TINY.profiles)
    with pytest.raises(Exception, match="chapter broke"):
        runner.run_chapter(chapter, root=tmp_path, progress=False)
    assert (tmp_path / "tiny.ipynb").read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.ipynb"]


def test_bad_parameters_execute_nothing(tmp_path, monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("executed"))
    _tiny_notebook(tmp_path / "tiny.ipynb", "pass")
    chapter = Chapter("tiny", "tiny.ipynb", TINY.params, TINY.profiles)
    for bad in ({"nonexistent": "3"}, {"n": "abc"}):
        with pytest.raises(ParameterError):
            runner.run_chapter(chapter, bad, root=tmp_path, progress=False)
    registry = {"tiny": chapter}
    with pytest.raises(ParameterError):
        runner.run_chapter("tiny", {"n": "1.5"}, registry=registry, root=tmp_path)


def test_book_at_another_profile_executes_a_staged_copy_and_keeps_the_committed_notebooks(tmp_path, monkeypatch):
    (tmp_path / "book").mkdir()
    (tmp_path / "_toc.yml").write_text("root: book/tiny\n")
    _tiny_notebook(tmp_path / "book" / "tiny.ipynb", "import os\nprint('n is', n)\nprint(os.environ['ZAPLIB_RESULTS'])")
    committed = (tmp_path / "book" / "tiny.ipynb").read_bytes()
    chapter = Chapter("tiny", "book/tiny.ipynb", TINY.params, TINY.profiles)
    monkeypatch.delenv("ZAPLIB_RESULTS", raising=False)
    html = runner.build_book("smoke", registry={"tiny": chapter}, root=tmp_path, build=False)
    staged = tmp_path / "_build" / "smoke"
    assert html == staged / "_build" / "html" and (staged / "_toc.yml").exists()
    assert (tmp_path / "book" / "tiny.ipynb").read_bytes() == committed
    outputs = nbformat.read(staged / "book" / "tiny.ipynb", as_version=4).cells[-1].outputs
    assert outputs[0].text == f"n is 2\n{staged / 'results'}\n"  # smoke's n; smoke's own scratch store



def test_book_skips_a_chapter_only_while_its_fingerprint_holds(tmp_path, monkeypatch):
    """An executed notebook is re-used exactly while its parameters, cells, zaplib sources and the
    stored runs of its experiments are unchanged; any change (or ``force``) re-executes it."""
    import papermill

    monkeypatch.setenv("ZAPLIB_RESULTS", str(tmp_path / "results"))
    (tmp_path / "book").mkdir()
    _tiny_notebook(tmp_path / "book" / "tiny.ipynb", "print('n is', n)")
    chapter = Chapter("tiny", "book/tiny.ipynb", TINY.params, TINY.profiles, experiments=("exp",))
    registry = {"tiny": chapter}
    executions = []
    real_execute = papermill.execute_notebook
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda *a, **k: executions.append(1) or real_execute(*a, **k))

    def book(**kw):
        runner.build_book("quick", registry=registry, root=tmp_path, build=False, **kw)
        return len(executions)

    assert book() == 1                                   # never executed: runs
    assert runner.is_up_to_date(chapter, "quick", root=tmp_path)
    assert book() == 1                                   # unchanged: skipped
    assert not runner.is_up_to_date(chapter, "quick", params={"n": 5}, root=tmp_path)
    assert not runner.is_up_to_date(chapter, "smoke", root=tmp_path)
    assert book(force=True) == 2                         # forced: runs
    Store().save("exp", {"x": 1}, {"summary": {"y": 1}})  # a new stored run of its experiment
    assert book() == 3
    Store().save("other", {"x": 1}, {"summary": {"y": 1}})  # another chapter's experiment: no effect
    assert book() == 3
    executed = nbformat.read(tmp_path / "book" / "tiny.ipynb", as_version=4)
    executed.cells[-1].source = "print('n is now', n)"     # a reader edits a cell
    nbformat.write(executed, tmp_path / "book" / "tiny.ipynb")
    assert book() == 4
    assert nbformat.read(tmp_path / "book" / "tiny.ipynb", as_version=4).cells[-1].outputs[0].text == "n is now 1\n"
