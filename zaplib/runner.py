"""Runner: chapter parameters, papermill execution, fingerprints and the book build.

The runner sits on top of the library: it reads the chapter registry (:mod:`zaplib.chapters`) and
the results store (:mod:`zaplib.store`), and no library module imports it. Three rooms:

1. **Parameters.** Every chapter (:mod:`zaplib.chapters`) declares typed parameters and the profiles
   ``smoke`` / ``quick`` / ``paper``. :func:`resolve_params` starts from the defaults, applies the
   profile, then the explicit values (strings from the command line are parsed to the declared
   type), and raises :class:`ParameterError` listing every valid name and type on an unknown name
   or a bad value — *before* anything executes (papermill itself accepts both silently).
   Inside a notebook, :func:`notebook_params` re-checks the values in the notebook's globals, so a
   reader editing the ``parameters`` cell by hand is checked too.
2. **Chapters.** :func:`run_chapter` executes a chapter with papermill (kernel ``python3``) into a
   temporary file next to the target and ``os.replace``\\ s it into place, so a failed run keeps the
   previous notebook. The kernel's working directory is the notebook's own folder (``book/``), as
   when a reader opens the notebook in Jupyter; nothing in zaplib depends on the working directory
   (the store's root is absolute). :func:`build_book` runs every chapter and ``jupyter-book build``.
3. **Fingerprints.** An executed notebook is stamped with a hash of what it depends on
   (:func:`chapter_fingerprint`): its parameters, its cells, the sources of the zaplib modules it
   imports directly or transitively (:func:`notebook_dependencies`) and the stored runs it reads.
   :func:`build_book` skips a chapter whose stamp still holds, as make skips a fresh target.

The store, sweeps and executors (``Store``, ``sweep``, ``make_executor``, ``config_hash``) live in
:mod:`zaplib.store`, which the notebooks import directly.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
import math
import numbers
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import typing
from pathlib import Path
from typing import Iterable

from .chapters import DEFAULT_PROFILE, PUBLISHED, REGISTRY, Chapter, get_chapter, published_profile
from .report import CLAIMS_FOLDER
from .store import PACKAGE_DIR, Store, config_hash, progress_line, project_root

# =============================================================================================
# 1. Parameters
# =============================================================================================


class ParameterError(ValueError):
    """An unknown chapter parameter or a value of the wrong type (the message lists the valid ones)."""


def type_name(tp) -> str:
    """``list[int]``, ``tuple[float, ...]``, ``int`` ... as a reader would write it."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return repr(tp).replace("typing.", "")


def _parse_scalar(text: str, tp):
    text = text.strip()
    if tp is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {text!r}")
    if tp in (int, float):
        return tp(text)
    if tp is str:
        return text
    raise TypeError(f"unsupported parameter type {type_name(tp)}")


def _coerce_scalar(value, tp):
    if isinstance(value, str) and tp is not str:
        return _parse_scalar(value, tp)
    if tp is bool:
        ok = type(value).__name__ in ("bool", "bool_")  # numpy's bool too
    elif tp is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"unsupported parameter type {type_name(tp)}")
    if not ok:
        raise ValueError(f"{value!r} is not a {tp.__name__}")
    return tp(value)


def coerce_value(value, tp):
    """``value`` converted to the declared type ``tp``; strings (command line) are parsed.

    Lists and tuples are written comma-separated on the command line (``"0,1,2"``, brackets
    optional). Raises ``ValueError`` when the value does not fit."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is None:
        return _coerce_scalar(value, tp)
    if origin not in (list, tuple):
        raise TypeError(f"unsupported parameter type {type_name(tp)}")
    if isinstance(value, str):
        text = value.strip().strip("[]()").strip()
        value = [] if not text else [item.strip() for item in text.split(",")]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{value!r} is not a sequence")
    if origin is list or (len(args) == 2 and args[1] is Ellipsis):
        items = [coerce_value(item, args[0]) for item in value]
    else:
        if len(value) != len(args):
            raise ValueError(f"expected {len(args)} items, got {len(value)}")
        items = [coerce_value(item, arg) for item, arg in zip(value, args)]
    return list(items) if origin is list else tuple(items)


_BOUNDS = re.compile(r"^\s*(?:(>=|>|<=|<)\s*(\S+)|([\[(])\s*([^,]+),\s*([^\])]+)([\])]))\s*$")


def _bounds(param) -> str | None:
    """The interval a parameter's numbers must lie in: its declared ``bounds``, else ``>= 0`` for
    integers (sizes, counts and seeds are never negative); floats only need to be finite."""
    if param.bounds is not None:
        return param.bounds
    base = typing.get_args(param.type)[0] if typing.get_origin(param.type) in (list, tuple) else param.type
    return ">= 0" if base is int else None


def _within(number, bounds: str) -> bool:
    match = _BOUNDS.match(bounds)
    if match is None:
        raise ValueError(f"unreadable bounds {bounds!r}; write e.g. '> 0', '>= 0', '[0, 1]' or '(0, 1]'")
    op, limit, opening, low, high, closing = match.groups()
    if op is not None:
        limit = float(limit)
        return {">": number > limit, ">=": number >= limit, "<": number < limit, "<=": number <= limit}[op]
    low, high = float(low), float(high)
    above = number >= low if opening == "[" else number > low
    below = number <= high if closing == "]" else number < high
    return above and below


def _out_of_range(param, value) -> str | None:
    """Why ``value`` (already of the declared type) is out of range, or None when it is fine."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and not items and not param.empty:
        return "must not be empty"
    bounds = _bounds(param)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Real):
            continue
        if isinstance(item, float) and not math.isfinite(item):
            return f"must be a finite number, got {item!r}"
        if bounds is not None and not _within(item, bounds):
            verb = "lie in" if bounds.lstrip()[:1] in "[(" else "be"
            each = ", item by item" if isinstance(value, (list, tuple)) else ""
            return f"must {verb} {bounds}{each}, got {item!r}"
    return None


def describe_params(chapter: Chapter) -> str:
    """One line per parameter: name, type, quick default, help — used in every error message."""
    shown = published_profile(chapter)
    lines = [f"  profile: str, one of {', '.join(chapter.profiles)} (default {shown!r})"]
    for name, param in chapter.params.items():
        choices = f", one of {', '.join(map(str, param.choices))}" if param.choices else ""
        bounds = _bounds(param)
        choices += f", {bounds}" if bounds else ""
        default = chapter.profiles.get(shown, {}).get(name, param.default)
        lines.append(f"  {name}: {type_name(param.type)}{choices} (default {default!r}) — {param.help}")
    return "\n".join(lines)


def _error(chapter: Chapter, problem: str) -> ParameterError:
    return ParameterError(
        f"{problem}\nValid parameters of chapter {chapter.name!r} (name: type):\n{describe_params(chapter)}"
    )


def _checked(chapter: Chapter, name: str, value):
    param = chapter.params[name]
    try:
        value = coerce_value(value, param.type)
    except (TypeError, ValueError) as exc:
        raise _error(chapter, f"parameter {name!r} expects {type_name(param.type)}, got {value!r} ({exc})")
    if param.choices is not None:
        # a list parameter's choices are those of its elements
        bad = [v for v in value if v not in param.choices] if isinstance(value, list) else \
            ([] if value in param.choices else [value])
        if bad:
            raise _error(chapter, f"parameter {name!r} must be one of {list(param.choices)}"
                         f"{' (each element)' if isinstance(value, list) else ''}, got {value!r}")
    problem = _out_of_range(param, value)
    if problem is not None:
        raise _error(chapter, f"parameter {name!r} {problem}")
    return value


def resolve_params(chapter: Chapter | str, values: dict | None = None, profile: str | None = None) -> dict:
    """The full, typed parameter set of ``chapter``: defaults, then ``profile``, then ``values``.

    ``values`` may hold strings (command line) or Python values; a ``profile`` entry in it wins over
    the ``profile`` argument. The result includes ``profile``. Raises :class:`ParameterError` on an
    unknown name or a bad value, listing the valid names and types."""
    chapter = get_chapter(chapter) if isinstance(chapter, str) else chapter
    values = dict(values or {})
    profile = values.pop("profile", None) or profile or published_profile(chapter)
    if profile not in chapter.profiles:
        raise _error(chapter, f"unknown profile {profile!r}; profiles: {', '.join(chapter.profiles)}")
    unknown = [name for name in values if name not in chapter.params]
    if unknown:
        raise _error(chapter, f"unknown parameter{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}")
    resolved = {name: param.default for name, param in chapter.params.items()}
    resolved.update(chapter.profiles[profile])
    resolved.update(values)
    return {"profile": profile, **{name: _checked(chapter, name, v) for name, v in resolved.items()}}


class Params(dict):
    """A resolved parameter set: a dict that also reads as attributes (``params.seeds``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def provenance(self, *names: str) -> str:
        """A caption fragment naming the profile and the given parameters, e.g.
        ``"profile quick, seeds 0, 1, 2"`` — every figure and table of the book carries one."""
        parts = [f"profile {self['profile']}"]
        for name in names:
            value = self[name]
            shown = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            parts.append(f"{name.replace('_', ' ')} {shown}")
        return ", ".join(parts)


def notebook_params(chapter: Chapter | str, namespace: dict) -> Params:
    """Check the parameters a notebook holds in ``namespace`` (pass ``globals()``) and resolve them.

    A parameter whose value is ``None`` (or absent) takes its value from the profile, so a
    ``parameters`` cell that says ``seeds = None`` follows ``profile``; anything else is an explicit
    value and must fit the declared type. papermill injects the full resolved set, so an executed
    notebook shows exactly what ran."""
    chapter = get_chapter(chapter) if isinstance(chapter, str) else chapter
    explicit = {name: namespace[name] for name in chapter.params if namespace.get(name) is not None}
    return Params(resolve_params(chapter, explicit, profile=namespace.get("profile")))


# =============================================================================================
# 2. Chapters: papermill execution and the book build
# =============================================================================================


@contextlib.contextmanager
def _environment(**values):
    """Set environment variables (``None`` leaves one unchanged) for the kernels started inside."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update({name: str(v) for name, v in values.items() if v is not None})
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def run_chapter(
    chapter: Chapter | str,
    params: dict | None = None,
    profile: str | None = None,
    *,
    force: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    output: str | os.PathLike | None = None,
    registry: dict[str, Chapter] | None = None,
    root: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Execute ``chapter`` with papermill and return the path of the executed notebook.

    Parameters are resolved and validated first (:func:`resolve_params`); on a
    :class:`ParameterError` nothing runs. By default the executed notebook replaces the chapter's
    own notebook; ``output`` writes it elsewhere. ``root`` is the folder the chapter's notebook path
    is relative to (default :func:`project_root`); ``registry`` replaces the book's chapters (tests).
    ``force``, ``scheduler`` and ``workers`` reach the notebook through ``ZAPLIB_FORCE``,
    ``ZAPLIB_SCHEDULER`` and ``ZAPLIB_WORKERS`` (read by :class:`Store` and :func:`sweep`)."""
    chapter = get_chapter(chapter, registry) if isinstance(chapter, str) else chapter
    parameters = resolve_params(chapter, params, profile)
    # papermill writes tuples as quoted strings; lists it writes as lists (notebook_params re-types)
    parameters = {k: list(v) if isinstance(v, tuple) else v for k, v in parameters.items()}
    root = Path(root) if root is not None else project_root()
    notebook = (root / chapter.notebook).resolve()
    target = Path(output).resolve() if output is not None else notebook
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.stem}.tmp-{os.getpid()}.ipynb")
    import papermill  # imported here: ~1 s, and `python -m zaplib list` should not pay it

    channel = Path(tempfile.mkstemp(prefix=f"zaplib-progress-{chapter.name}-", suffix=".jsonl")[1])
    env = dict(
        ZAPLIB_RESULTS=str(Store().root),
        ZAPLIB_FORCE="1" if force else None,
        ZAPLIB_SCHEDULER=scheduler,
        ZAPLIB_WORKERS=workers,
        ZAPLIB_PROGRESS=str(channel) if progress else None,
    )
    started = time.perf_counter()
    try:
        with _environment(**env), _showing_sweeps(channel, enabled=progress):
            papermill.execute_notebook(
                str(notebook), str(partial), parameters=parameters, kernel_name="python3",
                cwd=str(notebook.parent), progress_bar=progress,
            )
    except BaseException:
        if partial.exists():  # keep the failed notebook for the post-mortem, out of the book
            failed = Path(tempfile.gettempdir()) / f"zaplib-failed-{chapter.name}.ipynb"
            shutil.move(str(partial), failed)
            print(f"zaplib: chapter {chapter.name!r} failed; executed part in {failed}", file=sys.stderr)
        raise
    import nbformat

    executed = nbformat.read(partial, as_version=4)
    _relative_papermill_paths(executed, notebook, target, root)
    _hide_injected_parameters_like_the_parameters_cell(executed)
    _record_fingerprint(executed, chapter, parameters, parameters["profile"])
    # the execution's wall time (runs it computed included): part of a profile's cold time
    executed.metadata[FINGERPRINT_KEY]["execution_s"] = round(time.perf_counter() - started, 1)
    nbformat.write(executed, partial)
    os.replace(partial, target)
    return target


@contextlib.contextmanager
def _showing_sweeps(channel: Path, enabled: bool = True, interval: float = 1.0):
    """While the notebook runs, print its sweeps' progress (runs done / total and an ETA, written by
    :func:`zaplib.store.sweep` to ``channel``) on this terminal, one line per change."""
    stop = threading.Event()

    def tail():
        seen = 0
        while True:
            finished = stop.wait(interval)
            try:
                lines = channel.read_text(encoding="utf-8").splitlines()
            except OSError:
                lines = []
            for line in lines[seen:]:
                try:
                    text = progress_line(json.loads(line))
                    # papermill's cell bar leaves the cursor at the end of its line: start a new one
                    lead = "\n" if sys.stderr.isatty() else ""
                    print(f"{lead}zaplib: {text}", file=sys.stderr, flush=True)
                except (ValueError, KeyError):
                    break  # a line being written right now: read it again next time
                seen += 1
            if finished:
                return

    thread = threading.Thread(target=tail, daemon=True) if enabled else None
    if thread is not None:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        channel.unlink(missing_ok=True)


def _relative_papermill_paths(executed, notebook: Path, target: Path, root: Path) -> None:
    """papermill records absolute input/output paths (here: the temporary file); record the
    paths relative to the project instead, so committed notebooks do not carry local paths."""
    record = executed.metadata.get("papermill", {})

    def shown(path: Path) -> str:
        return str(path.relative_to(root.resolve())) if path.is_relative_to(root.resolve()) else path.name

    record["input_path"], record["output_path"] = shown(notebook), shown(target)


def _hide_injected_parameters_like_the_parameters_cell(executed) -> None:
    """papermill's injected-parameters cell gets the removal tags of the notebook's own
    ``parameters`` cell (e.g. the introduction hides both), so a page shows them alike."""
    hide = {"remove-cell", "remove-input", "hide-cell", "hide-input"}
    tags = next((set(c.metadata.get("tags", [])) & hide for c in executed.cells
                 if "parameters" in c.metadata.get("tags", [])), set())
    for cell in executed.cells:
        if "injected-parameters" in cell.metadata.get("tags", []) and tags:
            cell.metadata["tags"] = sorted(set(cell.metadata["tags"]) | tags)


# ---------------------------------------------------------------------------------------------
# Up-to-date check: `make book` skips a chapter whose executed notebook already shows this exact
# computation, like make skips a fresh target.
# ---------------------------------------------------------------------------------------------
FINGERPRINT_KEY = "zaplib"


#: modules that reach every chapter (the registry, the command line, the runner): a notebook
#: importing them depends on their own source, not on every chapter module they import
MACHINERY = ("runner", "chapters", "__main__")
#: the package of chapter modules (``zaplib.experiments.<chapter>``)
CHAPTER_PACKAGE = "experiments"


def _module_file(name: str, package_dir: Path) -> Path | None:
    """The source file of module ``name`` (``zaplib``, ``zaplib.x``, ``zaplib.x.y``) in the package
    at ``package_dir``; ``None`` when it is not a module there (e.g. a function's name)."""
    base = package_dir.joinpath(*name.split(".")[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base != package_dir and base.with_suffix(".py").is_file() else None


def _imported_names(tree: ast.AST, module: str | None, is_package: bool) -> set[str]:
    """Every absolute name the code imports or could import: ``import a.b`` gives ``a.b``;
    ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a submodule); relative imports are
    resolved against ``module``; ``zaplib.x`` attribute access (lazy submodules) gives ``zaplib.x``.
    Imports inside functions count: they run when the function does."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    continue
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            names.add(f"{node.value.id}.{node.attr}")
    return names


def _with_parents(names: Iterable[str], package: str) -> set[str]:
    """The names inside ``package`` and their parent packages (importing ``a.b.c`` runs ``a`` and
    ``a.b`` too)."""
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == package:
            found.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
    return found


@functools.lru_cache(maxsize=None)
def _module_imports(path: str, stamp: tuple[int, int], module: str) -> frozenset[str]:
    """The names module ``module`` (source at ``path``) imports; cached by (mtime, size) so that a
    warm ``make book`` parses each module once."""
    tree = ast.parse(Path(path).read_bytes(), filename=path)
    return frozenset(_imported_names(tree, module, path.endswith("__init__.py")))


def module_dependencies(direct: Iterable[str], package_dir: str | os.PathLike = PACKAGE_DIR) -> list[str]:
    """The modules of the package at ``package_dir`` (``zaplib``) that importing ``direct`` runs:
    those modules, their parent packages and everything they import, transitively, read
    statically with :mod:`ast`. The :data:`MACHINERY` modules count with their own source, but their
    imports of chapter modules are not followed (they reach every chapter)."""
    package_dir = Path(package_dir)
    package = package_dir.name
    machinery = {f"{package}.{name}" for name in MACHINERY}
    chapters = f"{package}.{CHAPTER_PACKAGE}"
    found: set[str] = set()
    todo = sorted(_with_parents(direct, package))
    while todo:
        name = todo.pop()
        path = _module_file(name, package_dir)
        if name in found or path is None:
            continue
        found.add(name)
        stat = path.stat()
        imported = _with_parents(_module_imports(str(path), (stat.st_mtime_ns, stat.st_size), name), package)
        if name in machinery:
            imported = {n for n in imported if n != chapters and not n.startswith(chapters + ".")}
        todo.extend(sorted(imported - found))
    return sorted(found)


def notebook_dependencies(notebook, package_dir: str | os.PathLike = PACKAGE_DIR) -> list[str]:
    """The zaplib modules a notebook runs: what its code cells import (``import zaplib.x``,
    ``from zaplib import x, y``, ``from zaplib.x import ...``), transitively
    (:func:`module_dependencies`). IPython magics are skipped; a cell that does not parse as Python
    makes the notebook depend on every module (the safe side)."""
    package_dir = Path(package_dir)
    direct: set[str] = set()
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        # magics (%, !) are not Python; blank them and keep the line numbers
        source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                           for line in cell.source.splitlines())
        try:
            direct |= _imported_names(ast.parse(source), None, False)
        except SyntaxError:
            direct |= {".".join((package_dir.name, *path.relative_to(package_dir).with_suffix("").parts))
                       for path in package_dir.rglob("*.py")}
    return module_dependencies(direct, package_dir)


def sources_digest(modules: Iterable[str], package_dir: str | os.PathLike = PACKAGE_DIR) -> str:
    """sha256 over the source files of ``modules`` (relative path and bytes) in the package at
    ``package_dir``."""
    package_dir = Path(package_dir)
    digest = hashlib.sha256()
    for path in sorted({_module_file(name, package_dir) for name in modules} - {None}):
        digest.update(str(path.relative_to(package_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _stored_files(results_root: Path, experiments: Iterable[str]) -> list[list]:
    """(path, size) of every finished run's file of ``experiments``; checkpoints (``.pt``, which may be
    git-ignored and recomputed) and temporary folders of runs in flight are left out."""
    listing = []
    for experiment in sorted(experiments):
        folder = results_root / experiment
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(results_root)
            if (path.is_file() and not any(part.startswith(".") for part in relative.parts)
                    and ".pt" not in path.suffixes):
                listing.append([relative.as_posix(), path.stat().st_size])
    return listing


def _notebook_inputs(notebook) -> list[list[str]]:
    """The cells a reader wrote (type and source), without outputs and without papermill's
    injected-parameters cell (its values are fingerprinted as parameters)."""
    return [[cell.cell_type, cell.source] for cell in notebook.cells
            if "injected-parameters" not in cell.metadata.get("tags", [])]


def chapter_fingerprint(chapter: Chapter, parameters: dict, notebook, results_root: Path) -> str:
    """What an executed chapter depends on, hashed: its resolved parameters, its notebook's cells,
    the sources of the zaplib modules it imports, directly or transitively
    (:func:`notebook_dependencies`; editing any other module leaves it fresh), and the stored runs of
    the experiments it reads (``chapter.experiments``).
    Two executions with equal fingerprints show the same numbers (every run is a pure function
    of its config), so :func:`build_book` need not repeat the second."""
    return config_hash({  # canonical JSON: tuple-valued parameters hash as the lists papermill passes
        "parameters": parameters,
        "notebook": _notebook_inputs(notebook),
        "zaplib": sources_digest(notebook_dependencies(notebook, PACKAGE_DIR), PACKAGE_DIR),
        "results": _stored_files(Path(results_root), chapter.experiments),
    })


def is_up_to_date(chapter: Chapter | str, profile: str | None = None, *, params: dict | None = None,
                  registry: dict[str, Chapter] | None = None, root=None) -> bool:
    """Whether the chapter's notebook was executed by :func:`run_chapter` with exactly these
    parameters, notebook cells, sources of the zaplib modules it imports and stored runs (see :func:`chapter_fingerprint`)."""
    import nbformat

    chapter = get_chapter(chapter, registry) if isinstance(chapter, str) else chapter
    notebook_path = (Path(root) if root is not None else project_root()) / chapter.notebook
    if not notebook_path.exists():
        return False
    notebook = nbformat.read(notebook_path, as_version=4)
    recorded = notebook.metadata.get(FINGERPRINT_KEY, {}).get("fingerprint")
    profile = chapter_profile(chapter, profile or PUBLISHED)
    current = chapter_fingerprint(chapter, resolve_params(chapter, params, profile), notebook, Store().root)
    return recorded == current


def _record_fingerprint(executed, chapter: Chapter, parameters: dict, profile: str) -> None:
    """Stamp the executed notebook with its fingerprint, computed *after* execution so that the runs
    it just stored count as its inputs."""
    executed.metadata[FINGERPRINT_KEY] = {
        "fingerprint": chapter_fingerprint(chapter, parameters, executed, Store().root),
        "profile": profile,
    }


BOOK_FILES = ("_config.yml", "_toc.yml", "book", "_static")


def build_book(profile: str = PUBLISHED, *, force: bool = False, scheduler=None, workers=None,
               registry: dict[str, Chapter] | None = None, root=None, build: bool = True) -> Path:
    """Run every chapter and build the HTML; return the HTML folder.

    ``published`` (the default, ``make book``) executes each chapter at the profile the book
    publishes (:func:`~zaplib.chapters.published_profile`: ``long`` where the chapter has one, else
    ``quick``) in place — the committed notebooks — and builds ``_build/html``. Any named profile
    first copies the book (:data:`BOOK_FILES`) to ``_build/<profile>/`` and executes there, so the
    published notebooks are never overwritten; its HTML lands in ``_build/<profile>/_build/html``
    (at ``long``, chapters without a long profile run at ``quick``). Stored results are reused unless
    ``force``; a chapter whose notebook is up to date (:func:`is_up_to_date`) is not re-executed
    unless ``force``. ``smoke`` runs go to a scratch store, ``_build/smoke/results`` (unless
    ``ZAPLIB_RESULTS`` is set), so they never mix with the committed ``results/``."""
    registry = REGISTRY if registry is None else registry
    root = Path(root) if root is not None else project_root()
    site = root
    if profile != PUBLISHED:
        site = root / "_build" / profile
        for name in BOOK_FILES:
            if (root / name).is_dir():
                shutil.rmtree(site / name, ignore_errors=True)  # no stale pages from older copies
                shutil.copytree(root / name, site / name)
            elif (root / name).exists():
                site.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, site / name)
    # smoke runs only prove the notebooks execute: their runs stay out of the committed store
    scratch_store = str(site / "results") if profile == "smoke" and "ZAPLIB_RESULTS" not in os.environ else None
    with _environment(ZAPLIB_RESULTS=scratch_store):
        _run_chapters(registry, profile, site, force=force, scheduler=scheduler, workers=workers)
    if build:
        jupyter_book = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or "jupyter-book"
        subprocess.run([jupyter_book, "build", str(site)], check=True)
    return site / "_build" / "html"


def chapter_profile(chapter: Chapter, profile: str) -> str:
    """The profile ``chapter`` runs at in a book built at ``profile``: its published profile for
    ``published``, ``quick`` for ``long`` when the chapter has no long profile yet, else ``profile``."""
    if profile == PUBLISHED:
        return published_profile(chapter)
    if profile not in chapter.profiles:
        return DEFAULT_PROFILE
    return profile


def _run_chapters(registry, profile, site, **options):
    # Chapters that read the published claims tables (the introduction's scoreboard) run last, after
    # every chapter has published its own.
    ordered = sorted(registry.values(), key=lambda chapter: CLAIMS_FOLDER in chapter.experiments)
    for chapter in ordered:
        own = chapter_profile(chapter, profile)
        if not options["force"] and is_up_to_date(chapter, own, root=site):
            print(f"zaplib: chapter {chapter.name!r} is up to date (profile {own}); "
                  "not re-executed (--force re-executes it)", file=sys.stderr)
            continue
        print(f"zaplib: running chapter {chapter.name!r} (profile {own})", file=sys.stderr)
        run_chapter(chapter, profile=own, root=site, **options)
