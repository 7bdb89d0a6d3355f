"""Runner: chapter parameters, papermill execution, the results store and sweeps.

Four rooms, each one screenful of concepts:

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
3. **Results store.** ``Store(root)`` keeps each run of an experiment — a pure function of a plain
   JSON config — under ``<root>/<experiment>/<config-hash>/``: ``config.json``, ``meta.json``
   (git commit and dirty flag, zaplib and torch versions, profile, device, host, start/end time,
   wall time), one CSV per table, ``values.json`` for small JSON values and one ``.pt`` per
   tensor / state_dict. A run is written into a hidden temporary folder and renamed into place, so
   a killed run leaves nothing half-written and a re-run loses only the run in flight.
   Checkpoints over 5 MB are saved as ``<name>.pt.big`` (git-ignored) and recomputed when missing
   *if the caller asks for them* (``store.run(..., checkpoints=True)``); otherwise a run whose big
   checkpoint is gone still counts as complete and loads without that entry.
4. **Sweeps.** :func:`sweep` runs a list of configs (see :func:`grid`) through any
   ``concurrent.futures``-style executor, skipping configs already in the store. The default is
   serial, in-process; :func:`local_executor` gives N processes with one torch thread each;
   :class:`DaskExecutor` submits to a Dask scheduler. Workers only compute; **the submitting process
   writes every result into the store** (so workers need no access to the results folder).

Environment variables (set by ``python -m zaplib run`` for the notebook's kernel):
``ZAPLIB_RESULTS`` (store root; default ``<project>/results``), ``ZAPLIB_FORCE=1`` (recompute
stored runs), ``ZAPLIB_WORKERS=N`` (local processes), ``ZAPLIB_SCHEDULER=ADDRESS`` (Dask).

SLURM through dask-jobqueue (``pip install dask-jobqueue``; every node needs this venv and the data)::

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(queue="gpu", cores=4, processes=1, memory="16GB",
                           walltime="02:00:00", job_extra_directives=["--gres=gpu:1"])
    cluster.scale(jobs=8)                      # eight SLURM jobs, one Dask worker each
    print(cluster.scheduler_address)           # e.g. tcp://10.0.0.5:8786

then, while that Python process keeps the cluster alive,
``python -m zaplib run lure --profile paper --scheduler tcp://10.0.0.5:8786``.
Each sweep of the chapter then runs on the SLURM workers and lands in the local store.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import hashlib
import itertools
import json
import numbers
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import typing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from . import __version__
from .chapters import DEFAULT_PROFILE, PROFILES, REGISTRY, Chapter, get_chapter

BIG_CHECKPOINT_BYTES = 5 * 2**20

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


def describe_params(chapter: Chapter) -> str:
    """One line per parameter: name, type, quick default, help — used in every error message."""
    lines = [f"  profile: str, one of {', '.join(chapter.profiles)} (default {DEFAULT_PROFILE!r})"]
    for name, param in chapter.params.items():
        choices = f", one of {', '.join(map(str, param.choices))}" if param.choices else ""
        default = chapter.profiles.get(DEFAULT_PROFILE, {}).get(name, param.default)
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
    if param.choices is not None and value not in param.choices:
        raise _error(chapter, f"parameter {name!r} must be one of {list(param.choices)}, got {value!r}")
    return value


def resolve_params(chapter: Chapter | str, values: dict | None = None, profile: str | None = None) -> dict:
    """The full, typed parameter set of ``chapter``: defaults, then ``profile``, then ``values``.

    ``values`` may hold strings (command line) or Python values; a ``profile`` entry in it wins over
    the ``profile`` argument. The result includes ``profile``. Raises :class:`ParameterError` on an
    unknown name or a bad value, listing the valid names and types."""
    chapter = get_chapter(chapter) if isinstance(chapter, str) else chapter
    values = dict(values or {})
    profile = values.pop("profile", None) or profile or DEFAULT_PROFILE
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


def project_root() -> Path:
    """The repository holding this zaplib (``book/``, ``results/``); the working directory when
    zaplib is installed elsewhere."""
    candidate = Path(__file__).resolve().parent.parent
    return candidate if (candidate / "book").is_dir() else Path.cwd()


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

    env = dict(
        ZAPLIB_RESULTS=str(Store().root),
        ZAPLIB_FORCE="1" if force else None,
        ZAPLIB_SCHEDULER=scheduler,
        ZAPLIB_WORKERS=workers,
    )
    try:
        with _environment(**env):
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
    _record_fingerprint(executed, chapter, parameters, profile or DEFAULT_PROFILE)
    nbformat.write(executed, partial)
    os.replace(partial, target)
    return target


def _relative_papermill_paths(executed, notebook: Path, target: Path, root: Path) -> None:
    """papermill records absolute input/output paths (here: the temporary file); record the
    paths relative to the project instead, so committed notebooks do not carry local paths."""
    record = executed.metadata.get("papermill", {})

    def shown(path: Path) -> str:
        return str(path.relative_to(root.resolve())) if path.is_relative_to(root.resolve()) else path.name

    record["input_path"], record["output_path"] = shown(notebook), shown(target)


# ---------------------------------------------------------------------------------------------
# Up-to-date check: `make book` skips a chapter whose executed notebook already shows this exact
# computation, like make skips a fresh target.
# ---------------------------------------------------------------------------------------------
FINGERPRINT_KEY = "zaplib"


def _zaplib_sources_digest() -> str:
    """sha256 over every ``.py`` of the installed zaplib (relative path and bytes)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
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
    the zaplib sources, and the stored runs of the experiments it reads (``chapter.experiments``).
    Two executions with equal fingerprints show the same numbers (every run is a pure function
    of its config), so :func:`build_book` need not repeat the second."""
    return config_hash({  # canonical JSON: tuple-valued parameters hash as the lists papermill passes
        "parameters": parameters,
        "notebook": _notebook_inputs(notebook),
        "zaplib": _zaplib_sources_digest(),
        "results": _stored_files(Path(results_root), chapter.experiments),
    })


def is_up_to_date(chapter: Chapter | str, profile: str | None = None, *, params: dict | None = None,
                  registry: dict[str, Chapter] | None = None, root=None) -> bool:
    """Whether the chapter's notebook was executed by :func:`run_chapter` with exactly these
    parameters, notebook cells, zaplib sources and stored runs (see :func:`chapter_fingerprint`)."""
    import nbformat

    chapter = get_chapter(chapter, registry) if isinstance(chapter, str) else chapter
    notebook_path = (Path(root) if root is not None else project_root()) / chapter.notebook
    if not notebook_path.exists():
        return False
    notebook = nbformat.read(notebook_path, as_version=4)
    recorded = notebook.metadata.get(FINGERPRINT_KEY, {}).get("fingerprint")
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


def build_book(profile: str = DEFAULT_PROFILE, *, force: bool = False, scheduler=None, workers=None,
               registry: dict[str, Chapter] | None = None, root=None, build: bool = True) -> Path:
    """Run every chapter at ``profile`` and build the HTML; return the HTML folder.

    ``quick`` executes the chapters in place (the committed notebooks) and builds ``_build/html``.
    Any other profile first copies the book (:data:`BOOK_FILES`) to ``_build/<profile>/`` and
    executes there, so the committed quick notebooks are never overwritten; its HTML lands in
    ``_build/<profile>/_build/html``. Stored results are reused unless ``force``; a chapter whose
    notebook is up to date (:func:`is_up_to_date`) is not re-executed unless ``force``. ``smoke`` runs
    go to a scratch store, ``_build/smoke/results`` (unless ``ZAPLIB_RESULTS`` is set), so they
    never mix with the committed ``results/``."""
    registry = REGISTRY if registry is None else registry
    root = Path(root) if root is not None else project_root()
    site = root
    if profile != DEFAULT_PROFILE:
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


def _run_chapters(registry, profile, site, **options):
    for chapter in registry.values():
        if not options["force"] and is_up_to_date(chapter, profile, root=site):
            print(f"zaplib: chapter {chapter.name!r} is up to date (profile {profile}); "
                  "not re-executed (--force re-executes it)", file=sys.stderr)
            continue
        print(f"zaplib: running chapter {chapter.name!r} (profile {profile})", file=sys.stderr)
        run_chapter(chapter, profile=profile, root=site, **options)


# =============================================================================================
# 3. Results store
# =============================================================================================


def canonical_json(config: dict) -> str:
    """The config as canonical JSON: sorted keys, no spaces, no NaN. Tuples read as lists."""
    if not isinstance(config, dict):
        raise TypeError(f"a config is a dict, got {type(config).__name__}")
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a config must be plain JSON (str, int, float, bool, None, lists, dicts): {exc}")


def config_hash(config: dict) -> str:
    """sha256 of :func:`canonical_json`, first 16 hex digits: stable across key order."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _git_state() -> tuple[str, bool | None]:
    def git(*args):
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown", None
        status = git("status", "--porcelain", "--untracked-files=no")
        return head.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def _call_timed(fn: Callable[[dict], dict], config: dict) -> tuple[dict, dict]:
    """Run ``fn(config)`` and describe where and how long (runs on the worker in a sweep)."""
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    result = fn(config)
    wall = time.perf_counter() - t0
    torch = sys.modules.get("torch")
    if "device" in config:
        device = str(config["device"])
    else:
        from . import get_device

        device = str(get_device()) if torch is not None else "cpu"
    return result, {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(wall, 3),
        "device": device,
        "torch_version": getattr(torch, "__version__", None),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "host": socket.gethostname(),
        "python_version": platform.python_version(),
    }


class StoredRun(dict):
    """One stored run: a dict of its results (tables as DataFrames, tensors, small values), with
    ``.config``, ``.meta`` and ``.path``."""

    def __init__(self, results, config, meta, path):
        super().__init__(results)
        self.config, self.meta, self.path = config, meta, Path(path)


class Store:
    """Results of pure experiment functions, one folder per (experiment, config).

    ``root`` defaults to ``$ZAPLIB_RESULTS``, else ``<project>/results``; ``force`` defaults to
    ``$ZAPLIB_FORCE``. With ``force`` every config is recomputed once per Store object (a second
    ``run`` of the same config in the same notebook reuses the fresh result). ``profile`` is
    recorded in the ``meta.json`` of the runs this store computes (a config's own ``profile`` key
    wins); keep it out of configs so that equal settings reached from two profiles share runs."""

    def __init__(self, root: str | os.PathLike | None = None, force: bool | None = None,
                 profile: str | None = None):
        root = root if root is not None else os.environ.get("ZAPLIB_RESULTS") or project_root() / "results"
        self.root = Path(root).resolve()
        self.force = bool(int(os.environ.get("ZAPLIB_FORCE", "0") or 0)) if force is None else force
        self.profile = profile
        self._fresh: set[tuple[str, str]] = set()

    def __repr__(self):
        return f"Store({str(self.root)!r}, force={self.force}, profile={self.profile!r})"

    def path(self, experiment: str, config: dict) -> Path:
        return self.root / experiment / config_hash(config)

    def complete(self, experiment: str, config: dict, checkpoints: bool = False) -> bool:
        """Whether the run is stored (and, with ``checkpoints``, all its big checkpoints exist)."""
        meta_file = self.path(experiment, config) / "meta.json"
        if not meta_file.exists():
            return False
        if checkpoints:
            files = json.loads(meta_file.read_text())["files"]["tensors"].values()
            return all((meta_file.parent / name).exists() for name in files)
        return True

    def needs_run(self, experiment: str, config: dict, force: bool | None = None,
                  checkpoints: bool = False) -> bool:
        force = self.force if force is None else force
        if force and (experiment, config_hash(config)) not in self._fresh:
            return True
        return not self.complete(experiment, config, checkpoints)

    def run(self, experiment: str, config: dict, fn: Callable[[dict], dict], force: bool | None = None,
            checkpoints: bool = False) -> StoredRun:
        """``fn(config)`` from the store when stored, else computed, stored and returned.

        ``fn`` gets the config as it reads back from JSON and returns a dict of pandas DataFrames
        (saved as CSV), tensors / state_dicts (``.pt``) and small JSON values. What is returned is
        always the stored copy, so a reused run and a fresh one look the same."""
        config = json.loads(canonical_json(config))
        if self.needs_run(experiment, config, force, checkpoints):
            self.save(experiment, config, *_call_timed(fn, config))
        return self.load(experiment, config)

    def save(self, experiment: str, config: dict, results: dict, meta: dict | None = None) -> Path:
        """Write one run atomically: into ``.<hash>.tmp-<host>-<pid>``, then rename into place."""
        import pandas as pd

        final = self.path(experiment, config)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._clean_partials(final.parent)
        partial = final.with_name(f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        files: dict[str, dict] = {"tables": {}, "tensors": {}, "values": {}}
        values = {}
        for key, value in results.items():
            if not isinstance(key, str) or not key.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"result names must be simple words, got {key!r}")
            if isinstance(value, pd.DataFrame):
                value.to_csv(partial / f"{key}.csv", index=False)
                files["tables"][key] = f"{key}.csv"
            elif _is_json(value):
                values[key] = value
            else:
                files["tensors"][key] = self._save_tensor(value, partial / f"{key}.pt")
        (partial / "values.json").write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
        files["values"] = "values.json"
        git_commit, git_dirty = _git_state()
        meta = {
            "experiment": experiment, "config_hash": final.name, "profile": config.get("profile", self.profile),
            "git_commit": git_commit, "git_dirty": git_dirty, "zaplib_version": __version__,
            **(meta or {}), "files": files,
        }
        (partial / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
        (partial / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        if final.exists():  # force: swap the old run out only once the new one is complete
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(partial, final)
            shutil.rmtree(old)
        else:
            try:
                os.replace(partial, final)
            except OSError:  # another process stored this run meanwhile: keep theirs
                shutil.rmtree(partial)
        self._fresh.add((experiment, final.name))
        return final

    @staticmethod
    def _save_tensor(value, path: Path) -> str:
        import torch

        torch.save(value, path)
        if path.stat().st_size > BIG_CHECKPOINT_BYTES:  # git-ignored name; recomputed when missing
            path = path.rename(path.with_name(path.name + ".big"))
        return path.name

    @staticmethod
    def _clean_partials(folder: Path):
        """Remove temporary folders left by killed runs of this host (their pid is gone)."""
        host = socket.gethostname()
        for partial in folder.glob(f".*.tmp-{host}-*"):
            pid = int(partial.name.rsplit("-", 1)[1])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(partial, ignore_errors=True)
            except PermissionError:
                pass

    def load(self, experiment: str, config: dict) -> StoredRun:
        """The stored run of ``config``; ``FileNotFoundError`` when there is none. Big checkpoints
        that are missing are left out (``meta['missing']`` names them)."""
        import pandas as pd

        path = self.path(experiment, config)
        if not (path / "meta.json").exists():
            raise FileNotFoundError(f"no stored run of {experiment!r} for config {canonical_json(config)}")
        meta = json.loads((path / "meta.json").read_text())
        results: dict[str, Any] = json.loads((path / meta["files"]["values"]).read_text())
        for key, name in meta["files"]["tables"].items():
            results[key] = pd.read_csv(path / name)
        missing = []
        for key, name in meta["files"]["tensors"].items():
            if (path / name).exists():
                import torch

                results[key] = torch.load(path / name, map_location="cpu", weights_only=True)
            else:
                missing.append(key)
        meta["missing"] = missing
        config = json.loads((path / "config.json").read_text())
        return StoredRun({k: results[k] for k in sorted(results)}, config, meta, path)

    def configs(self, experiment: str) -> list[dict]:
        """Configs of every stored run of ``experiment``."""
        folder = self.root / experiment
        runs = sorted(folder.glob("[!.]*/meta.json")) if folder.exists() else []
        return [json.loads((meta.parent / "config.json").read_text()) for meta in runs]

    def table(self, experiment: str, name: str, configs: Iterable[dict] | None = None):
        """Table ``name`` of every stored run of ``experiment`` (or of the given ``configs``), stacked
        into one tidy DataFrame with the config's keys as extra columns (nested keys joined by
        ``.``; lists become tuples) and the run's hash as ``run``. A table column wins over a
        config key of the same name."""
        import pandas as pd

        wanted = self.configs(experiment) if configs is None else list(configs)
        frames = []
        for config in wanted:
            path = self.path(experiment, config)
            if not (path / f"{name}.csv").exists() or not (path / "meta.json").exists():
                if configs is not None:
                    raise FileNotFoundError(f"no table {name!r} in the stored run {path}")
                continue
            frame = pd.read_csv(path / f"{name}.csv")
            for key, value in _flatten(json.loads(canonical_json(config))).items():
                if key not in frame.columns:
                    frame[key] = [value] * len(frame)
            frame["run"] = path.name
            frames.append(frame)
        if not frames:
            raise FileNotFoundError(f"no stored runs of {experiment!r} with a table {name!r} in {self.root}")
        return pd.concat(frames, ignore_index=True)


def _is_json(value) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


# =============================================================================================
# 4. Executors and sweeps
# =============================================================================================


def grid(**axes: Iterable) -> list[dict]:
    """Every combination of the axes, e.g. ``grid(seed=[0, 1], lr=[0.1, 0.01])`` -> 4 configs
    (the last axis varies fastest). Combine with fixed keys: ``[{**base, **c} for c in grid(...)]``."""
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*(list(axes[n]) for n in names))]


def _single_thread_worker():
    """Process initializer: one torch thread per worker, so N workers share N cores without the
    oversubscription that made 2-thread runs collapse on a busy machine (reference notes)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def local_executor(workers: int) -> cf.ProcessPoolExecutor:
    """``workers`` fresh (spawned) processes with one torch thread each. Swept functions must be
    importable (defined in a module such as ``zaplib.experiments``, not in a notebook)."""
    import multiprocessing

    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_single_thread_worker)


class DaskExecutor(cf.Executor):
    """A ``concurrent.futures`` executor on a Dask scheduler at ``address`` (``tcp://host:port``),
    or on an existing ``dask.distributed.Client``. Tasks are impure (never deduplicated by Dask);
    with ``single_thread`` every worker runs torch on one thread."""

    def __init__(self, address, single_thread: bool = True):
        from dask.distributed import Client

        self._own_client = not isinstance(address, Client)
        self.client = Client(address) if self._own_client else address
        if single_thread:
            self.client.run(_single_thread_worker)
        self._executor = self.client.get_executor(pure=False)

    def submit(self, fn, /, *args, **kwargs):
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait=True, *, cancel_futures=False):
        self._executor.shutdown(wait=wait)
        if self._own_client:
            self.client.close()


def make_executor(workers: int | None = None, scheduler: str | None = None) -> cf.Executor | None:
    """The executor the environment asks for: Dask when ``scheduler`` / ``$ZAPLIB_SCHEDULER`` is
    set, else ``workers`` / ``$ZAPLIB_WORKERS`` local processes when more than one, else ``None``
    (serial, in this process)."""
    scheduler = scheduler or os.environ.get("ZAPLIB_SCHEDULER")
    if scheduler:
        return DaskExecutor(scheduler)
    workers = workers or int(os.environ.get("ZAPLIB_WORKERS", "1") or 1)
    return local_executor(workers) if workers > 1 else None


def sweep(fn: Callable[[dict], dict], configs: Iterable[dict], executor: cf.Executor | None = None,
          store: Store | None = None, experiment: str | None = None, progress: bool = True,
          force: bool | None = None, checkpoints: bool = False) -> list:
    """``[fn(c) for c in configs]``, through ``executor``, resuming from ``store``.

    With a ``store`` (and its ``experiment`` name) configs already stored are loaded, not submitted;
    the rest are submitted, and each result is written to the store as soon as it arrives, by this
    process. A killed sweep therefore resumes where it stopped. Returns the results in the order of
    ``configs`` (:class:`StoredRun` objects with a store, ``fn``'s own results without).
    ``executor=None`` takes :func:`make_executor` from the environment (serial by default) and
    shuts it down at the end; a given executor is left running. The first failure cancels the
    configs not yet started and is raised with its config."""
    from tqdm import tqdm

    if store is not None and experiment is None:
        raise ValueError("sweep(..., store=...) needs the experiment name")
    configs = [json.loads(canonical_json(c)) for c in configs]
    results: list[Any] = [None] * len(configs)
    todo: dict[str, list[int]] = {}  # config hash -> positions (duplicates computed once)
    for i, config in enumerate(configs):
        if store is not None and not store.needs_run(experiment, config, force, checkpoints):
            results[i] = store.load(experiment, config)
        else:
            todo.setdefault(config_hash(config), []).append(i)

    def finish(positions, outcome):
        config = configs[positions[0]]
        if store is not None:
            store.save(experiment, config, *outcome)
            outcome = store.load(experiment, config)
        else:
            outcome = outcome[0]
        for i in positions:
            results[i] = outcome
        bar.update(len(positions))

    bar = tqdm(total=len(configs), initial=len(configs) - sum(map(len, todo.values())),
               desc=experiment or getattr(fn, "__name__", "sweep"), disable=not progress,
               file=sys.stderr, mininterval=1.0)
    owned = executor is None
    executor = make_executor() if owned and todo else executor
    try:
        if executor is None:
            for positions in todo.values():
                with _naming_failures(fn, configs[positions[0]]):
                    outcome = _call_timed(fn, configs[positions[0]])
                finish(positions, outcome)
        else:
            futures = {executor.submit(_call_timed, fn, configs[p[0]]): p for p in todo.values()}
            try:
                for future in cf.as_completed(futures):
                    positions = futures[future]
                    with _naming_failures(fn, configs[positions[0]]):
                        outcome = future.result()
                    finish(positions, outcome)
            finally:
                for future in futures:
                    future.cancel()
    finally:
        bar.close()
        if owned and executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    return results


@contextlib.contextmanager
def _naming_failures(fn, config):
    try:
        yield
    except Exception as exc:
        raise RuntimeError(f"sweep: {getattr(fn, '__name__', fn)} failed on config "
                           f"{canonical_json(config)}: {type(exc).__name__}: {exc}") from exc
