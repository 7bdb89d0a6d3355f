"""zaplib.runner: parameters and profiles, papermill execution of a throwaway notebook, notebook
fingerprints (which zaplib modules a notebook depends on) and the rule that no library module
imports the runner. The store and sweeps are tested in test_store.py."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from zaplib import runner
from zaplib.chapters import PROFILES, REGISTRY, REQUIRED_PROFILES, Chapter
from zaplib.runner import ParameterError, resolve_params
from zaplib.store import Store, experiment

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
        assert set(REQUIRED_PROFILES) <= set(chapter.profiles) <= set(PROFILES)
        for profile in chapter.profiles:
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


# ----------------------------------------------------------------------------- command line and papermill

def _zaplib(*args):
    # generous: on a loaded machine importing torch alone can take most of a minute
    return subprocess.run([sys.executable, "-m", "zaplib", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


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
        runner.build_book("published", registry=registry, root=tmp_path, build=False, **kw)  # in place
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


# ----------------------------------------------------------------------------- fingerprints: dependencies

def _package(root: Path, modules: dict[str, str]) -> Path:
    """A throwaway package named zaplib under ``root`` with the given module sources."""
    package = root / "zaplib"
    for name, source in {"__init__": "", **modules}.items():
        path = package.joinpath(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return package


def _code_notebook(*sources: str):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])


def test_dependencies_follow_every_import_form_transitively_and_stop_at_the_chapters_of_the_machinery(tmp_path):
    package = _package(tmp_path, {
        "a": "from . import b\n",                       # relative, from the package
        "b": "def f():\n    from .c import g\n",         # inside a function: still a dependency
        "c": "import zaplib.d as d\ng = 1\n",             # absolute
        "d": "",
        "experiments.__init__": "",
        "experiments.ch": "from .. import e\n",          # two levels up
        "e": "",
        "lonely": "",                                     # imported by nobody
        "runner": "from .experiments import ch\nfrom . import chapters\n",
        "chapters": "",
    })
    notebook = _code_notebook("%matplotlib inline\nfrom zaplib import a", "import zaplib\nzaplib.experiments")
    assert runner.notebook_dependencies(notebook, package) == [
        "zaplib", "zaplib.a", "zaplib.b", "zaplib.c", "zaplib.d", "zaplib.experiments"]
    chapter = _code_notebook("from zaplib.experiments import ch as chapter_module")
    assert runner.notebook_dependencies(chapter, package) == [
        "zaplib", "zaplib.e", "zaplib.experiments", "zaplib.experiments.ch"]
    # the runner reaches every chapter; a notebook using it depends on its source, not on theirs
    assert runner.notebook_dependencies(_code_notebook("from zaplib import runner"), package) == [
        "zaplib", "zaplib.chapters", "zaplib.runner"]


def test_editing_a_module_the_notebook_does_not_import_leaves_it_fresh_and_a_transitive_one_makes_it_stale(
        tmp_path, monkeypatch):
    package = _package(tmp_path, {"a": "from .b import f\n", "b": "def f():\n    return 1\n",
                                  "c": "x = 1\n"})
    monkeypatch.setattr(runner, "PACKAGE_DIR", package)
    chapter = Chapter("tiny", "tiny.ipynb", TINY.params, TINY.profiles)
    notebook = _code_notebook("from zaplib import a\nprint(a.f())")

    def fingerprint():
        return runner.chapter_fingerprint(chapter, {"n": 1}, notebook, tmp_path / "results")

    before = fingerprint()
    (package / "c.py").write_text("x = 2  # another chapter's module changes\n")
    assert fingerprint() == before
    (package / "b.py").write_text("def f():\n    return 2  # a fix in a module a imports\n")
    assert fingerprint() != before


def test_the_books_notebooks_depend_only_on_the_modules_they_reach():
    toolkit = runner.notebook_dependencies(nbformat.read(REPO / "book" / "toolkit.ipynb", as_version=4))
    assert {"zaplib.experiments.toolkit", "zaplib.train", "zaplib.store", "zaplib.runner"} <= set(toolkit)
    assert not {"zaplib.stream", "zaplib.learning_paths", "zaplib.frozen", "zaplib.pretraining"} & set(toolkit)
    lure = runner.notebook_dependencies(nbformat.read(REPO / "book" / "lure.ipynb", as_version=4))
    assert "zaplib.stream" in lure and "zaplib.experiments.toolkit" not in lure


def test_no_library_module_imports_the_runner():
    """The runner sits on top: only the command line and ``compute`` (which sits beside it, on top,
    and uses its parameter validation) may reach it."""
    package = REPO / "zaplib"
    importers = []
    for path in sorted(package.rglob("*.py")):
        module = ".".join(("zaplib", *path.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")
        imported = runner.module_dependencies([module], package)
        if "zaplib.runner" in imported and module not in ("zaplib.runner", "zaplib.__main__", "zaplib.compute"):
            importers.append(module)
    assert importers == []


# ----------------------------------------------------------------------------- value ranges

RANGED = Chapter(
    name="ranged", notebook="x.ipynb",
    params={"lr": (float, 0.1, "rate", None, "> 0"), "keep": (float, 0.8, "fraction", None, "[0, 1]"),
            "size": (int, 4, "a size", None, "> 0"), "count": (int, 2, "a count"),
            "shift": (float, -0.5, "may be negative"), "lrs": (list[float], [0.1], "grid", None, "> 0"),
            "milestones": (list[int], [], "may be empty")},
    profiles={p: {} for p in REQUIRED_PROFILES},
)


@pytest.mark.parametrize("name, value, message", [
    ("lr", "nan", "must be a finite number"), ("lr", "inf", "must be a finite number"),
    ("lr", "0", "must be > 0"), ("keep", "1.5", "must lie in [0, 1]"), ("keep", "-0.1", "must lie in [0, 1]"),
    ("size", "0", "must be > 0"), ("count", "-1", "must be >= 0"), ("lrs", "0.1,-1", "must be > 0, item by item"),
    ("lrs", "", "must not be empty"), ("shift", "nan", "must be a finite number"),
])
def test_out_of_range_values_fail_before_anything_runs_naming_the_constraint(name, value, message):
    with pytest.raises(ParameterError, match=re.escape(f"parameter {name!r} {message}")):
        resolve_params(RANGED, {name: value})


def test_in_range_values_pass_including_empty_lists_the_chapter_itself_uses():
    values = resolve_params(RANGED, {"keep": "1", "shift": "-3", "count": "0", "milestones": ""})
    assert values["keep"] == 1.0 and values["shift"] == -3.0 and values["count"] == 0
    assert values["milestones"] == []


def test_every_profile_of_every_chapter_is_within_its_declared_ranges():
    for chapter in REGISTRY.values():
        for profile in chapter.profiles:
            resolve_params(chapter, profile=profile)


def test_cli_rejects_out_of_range_values_with_exit_2_before_running():
    for args, message in ((("-p", "lr", "nan"), "'lr' must be a finite number"),
                          (("-p", "width", "-5"), "'width' must be")):
        done = _zaplib("run", "toolkit", *args)
        assert done.returncode == 2 and message in done.stderr


def test_the_book_publishes_long_where_a_chapter_has_it_and_quick_elsewhere():
    from zaplib.chapters import published_profile

    with_long = Chapter("a", "a.ipynb", TINY.params, {**TINY.profiles, "long": {"n": 7}})
    assert published_profile(with_long) == "long" and published_profile(TINY) == "quick"
    assert runner.chapter_profile(with_long, "published") == "long"
    assert runner.chapter_profile(TINY, "long") == "quick"       # no long yet: a long book shows quick
    assert runner.chapter_profile(TINY, "smoke") == "smoke"
    assert resolve_params(with_long)["profile"] == "long"       # `run` without --profile publishes
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        Chapter("b", "b.ipynb", TINY.params, {**TINY.profiles, "huge": {}})
    # a chapter whose long runs are still being computed publishes what it names
    computing = Chapter("c", "c.ipynb", TINY.params, {**TINY.profiles, "long": {"n": 7}}, published="quick")
    assert published_profile(computing) == "quick" and resolve_params(computing)["profile"] == "quick"
    with pytest.raises(ValueError, match="publishes profile 'long', which it lacks"):
        Chapter("d", "d.ipynb", TINY.params, TINY.profiles, published="long")


def test_the_injected_parameters_cell_is_hidden_like_the_parameters_cell():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("p = 1", metadata={"tags": ["parameters", "remove-cell"]}),
                      nbformat.v4.new_code_cell("p = 2", metadata={"tags": ["injected-parameters"]}),
                      nbformat.v4.new_code_cell("print(p)")]
    runner._hide_injected_parameters_like_the_parameters_cell(notebook)
    assert notebook.cells[1].metadata["tags"] == ["injected-parameters", "remove-cell"]
    assert "tags" not in notebook.cells[2].metadata
