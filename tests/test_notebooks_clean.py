"""No absolute path of the machine that executed a notebook appears in a committed notebook.

A committed notebook is published as it is (its outputs become the HTML), so a warning or a message
that names `/work/...` or a user's home folder leaks the executing machine's layout and is wrong on
every other machine. Paths in the book are relative to the project or to the data root
(`$ZAPLIB_DATA/cifar10_jpeg.npz`). The scan covers every cell's source and every output's text.
"""
import os
import re
import site
import sys
import warnings
from pathlib import Path

import nbformat
import pytest

from zaplib import data

PROJECT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((PROJECT / "book").glob("*.ipynb"))

# Top-level folders that only ever hold machine-specific absolute paths; a path must start at a
# word boundary (not inside a URL such as https://example.org/home/...).
MACHINE_PREFIXES = ("/work/", "/root/", "/home/", "/tmp/", "/usr/", "/opt/", "/var/", "/Users/",
                    "/private/", "/mnt/", "/scratch/")
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:" + "|".join(re.escape(p) for p in MACHINE_PREFIXES) + r")[^\s'\"`),\\]*")


def this_machine_roots() -> list[str]:
    """Folders of this machine whose absolute paths must not appear (project, data root, Python)."""
    roots = {str(PROJECT), str(data.data_root()), sys.prefix, sys.base_prefix, str(Path.home()),
             *site.getsitepackages()}
    if os.environ.get("ZAPLIB_DATA"):
        roots.add(str(Path(os.environ["ZAPLIB_DATA"]).resolve()))
    return sorted(r for r in roots if len(r) > 1)  # "/" itself would match everything


def output_texts(output) -> list[str]:
    texts = []
    if "text" in output:
        texts.append(output["text"])
    if "traceback" in output:
        texts.extend(output["traceback"])
    for mime, value in output.get("data", {}).items():
        if mime.startswith("text/") or mime.endswith("json"):
            texts.append(value if isinstance(value, str) else str(value))
    return texts


def absolute_paths(text: str, roots: list[str]) -> list[str]:
    found = ABSOLUTE_PATH.findall(text)
    found += [text[i:i + len(root) + 30].split()[0] for root in roots for i in
              (m.start() for m in re.finditer(re.escape(root), text))]
    return sorted(set(found))


def notebook_leaks(path: Path, roots: list[str]) -> list[str]:
    notebook = nbformat.read(path, as_version=4)
    leaks = []
    for index, cell in enumerate(notebook.cells):
        places = [("source", cell.source)]
        places += [(f"output {k}", text) for k, output in enumerate(cell.get("outputs", []))
                   for text in output_texts(output)]
        for place, text in places:
            for leaked in absolute_paths(text, roots):
                leaks.append(f"{path.name}: cell {index} ({cell.cell_type}) {place}: {leaked}")
    return leaks


def test_there_are_notebooks_to_scan():
    assert NOTEBOOKS, "no book/*.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_names_no_absolute_path_of_this_machine(path):
    leaks = notebook_leaks(path, this_machine_roots())
    assert not leaks, "absolute paths in a committed notebook:\n" + "\n".join(leaks)


def test_the_scan_finds_a_warning_location_and_a_data_root_path(tmp_path):
    # The scan itself must be able to fail: a notebook with a warning location, a /tmp path in a
    # markdown cell and a path inside this machine's data root is reported cell by cell.
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("Run `python -m zaplib run x --output /tmp/x.ipynb`."),
        nbformat.v4.new_code_cell("1", outputs=[nbformat.v4.new_output(
            "stream", name="stderr", text="/work/main/zaplib/data.py:319: UserWarning: lossy\n")]),
        nbformat.v4.new_code_cell("2", outputs=[nbformat.v4.new_output(
            "execute_result", data={"text/plain": "'/srv/data/cifar10.npz'"})]),
        nbformat.v4.new_markdown_cell("See https://example.org/home/page and `$ZAPLIB_DATA/mnist.npz`."),
    ])
    path = tmp_path / "leaky.ipynb"
    nbformat.write(notebook, path)
    leaks = notebook_leaks(path, ["/srv/data"])
    assert leaks == ["leaky.ipynb: cell 0 (markdown) source: /tmp/x.ipynb",
                     "leaky.ipynb: cell 1 (code) output 0: /work/main/zaplib/data.py:319:",
                     "leaky.ipynb: cell 2 (code) output 0: /srv/data/cifar10.npz'"]


def test_the_lossy_cifar10_warning_names_no_absolute_path(tmp_path, monkeypatch):
    # What a notebook shows is warnings.formatwarning's text: location and message.
    monkeypatch.setenv("ZAPLIB_DATA", str(tmp_path))
    monkeypatch.setattr(data, "_lossy_warned", False)
    (tmp_path / "cifar10_jpeg.npz").write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data.resolve("cifar10")
    (warning,) = caught
    shown = warnings.formatwarning(warning.message, warning.category, warning.filename, warning.lineno)
    assert shown.startswith("zaplib/data.py:")
    assert "$ZAPLIB_DATA/cifar10_jpeg.npz" in shown
    assert str(tmp_path) not in shown and str(PROJECT) not in shown
    assert not absolute_paths(shown, this_machine_roots())


def test_shown_path_is_relative_to_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ZAPLIB_DATA", str(tmp_path))
    assert data.shown_path(tmp_path / "mnist.npz") == "$ZAPLIB_DATA/mnist.npz"
    monkeypatch.delenv("ZAPLIB_DATA")
    assert data.shown_path(data.data_root() / "mnist.npz") == "~/.cache/zaplib/mnist.npz"
    assert data.shown_path(Path("elsewhere/mnist.npz")) == "elsewhere/mnist.npz"
