"""The results store: configs, code versions, stored runs, sweeps and executors.

An experiment is a pure function ``fn(config) -> results`` of a plain JSON config. This module keeps
its runs and fans them out; it knows nothing of chapters, notebooks or papermill (that is
:mod:`zaplib.runner`, which sits above it).

**Runs.** ``Store(root)`` keeps each run under ``<root>/<experiment>/<key>/``: ``config.json``,
``meta.json`` (code version, git commit and dirty flag, zaplib and torch versions, profile, device,
host, start/end time, wall time), one CSV per table, ``values.json`` for small JSON values and one
``.pt`` per tensor / state_dict. A run is written into a hidden temporary folder and renamed into
place, so a killed run leaves nothing half-written and a re-run loses only the run in flight.
Checkpoints over 5 MB are saved as ``<name>.pt.big`` (git-ignored) and recomputed when missing *if
the caller asks for them* (``store.run(..., checkpoints=True)``); otherwise a run whose big
checkpoint is gone still counts as complete and loads without that entry.

**Code versions.** A stored run is only as good as the code that computed it, so every experiment
declares a code version where its function is defined::

    @experiment("toolkit", version=1)
    def run(config: dict) -> dict: ...

Bump the version whenever the algorithm changes what a config computes (not for refactors that
leave the numbers alone). The decorator sets ``fn.experiment`` / ``fn.code_version`` and registers
the version under the experiment's name, so every call of the store — ``run``, ``sweep``, and also
``load``, ``complete``, ``configs`` and ``table``, which get no function — finds it
(:func:`code_version`); an explicit ``version=`` argument wins. The version is part of the run's
key (:func:`run_key`) and recorded in ``meta.json``: a bumped version recomputes, and
:meth:`Store.configs` / :meth:`Store.table` read only runs of the current version, so stale runs
never mix into a table. Version 1 is keyed by the config alone — the runs stored before code
versions existed are version 1 — and from version 2 on the version joins the hash. An experiment
that declares no version (a reader's quick script, a test) is treated as version 1.

**Clean trees.** ``meta.json`` records ``git_commit`` and ``git_dirty`` (whether zaplib's own
sources differ from that commit; notebooks and results do not count). A store for published
results — ``Store(profile="long")`` or ``"paper"`` (:data:`CLEAN_TREE_PROFILES`), or any store made
with ``require_clean=True`` — refuses to *compute* a run while zaplib's sources are dirty
(:class:`DirtyTreeError`): commit first, so the run names the code that made it. Reading stored
runs from a dirty tree is fine. ``ZAPLIB_ALLOW_DIRTY=1`` overrides the refusal for a throwaway run.

**Sweeps.** :func:`sweep` runs a list of configs (see :func:`grid`) through any
``concurrent.futures``-style executor, skipping configs already in the store. The default is
serial, in-process; :func:`local_executor` gives N processes with one torch thread each;
:class:`DaskExecutor` submits to a Dask scheduler. Workers only compute; **the submitting process
writes every result into the store** (so workers need no access to the results folder).

Environment variables (set by ``python -m zaplib run`` for the notebook's kernel):
``ZAPLIB_RESULTS`` (store root; default ``<project>/results``), ``ZAPLIB_FORCE=1`` (recompute
stored runs), ``ZAPLIB_WORKERS=N`` (local processes), ``ZAPLIB_SCHEDULER=ADDRESS`` (Dask),
``ZAPLIB_ALLOW_DIRTY=1`` (compute from a dirty tree even for ``long`` / ``paper``).

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
import multiprocessing
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from tqdm import tqdm

from . import __version__, get_device

BIG_CHECKPOINT_BYTES = 5 * 2**20
#: the profiles whose runs are published: a store at one of them computes only from a clean tree
CLEAN_TREE_PROFILES = ("long", "paper")
#: zaplib's own sources: their git state is recorded with every run
PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The repository holding this zaplib (``book/``, ``results/``); the working directory when
    zaplib is installed elsewhere."""
    candidate = PACKAGE_DIR.parent
    return candidate if (candidate / "book").is_dir() else Path.cwd()


# =============================================================================================
# Configs, keys and code versions
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


_CODE_VERSIONS: dict[str, int] = {}  # experiment name -> code version, filled by @experiment


def _checked_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"a code version is an int >= 1, got {version!r}")
    return version


def experiment(name: str, version: int) -> Callable[[Callable], Callable]:
    """Declare ``fn`` as the stored experiment ``name`` at code ``version`` (see the module
    docstring): sets ``fn.experiment`` and ``fn.code_version`` and registers the version, so the
    store keys, recomputes and filters runs by it. Bump ``version`` when the algorithm changes."""
    version = _checked_version(version)

    def declare(fn: Callable) -> Callable:
        fn.experiment, fn.code_version = name, version
        # a module re-imported after an edit re-registers: the newest declaration wins
        _CODE_VERSIONS[name] = version
        return fn

    return declare


def code_version(experiment: str, fn: Callable | None = None, version: int | None = None) -> int:
    """The code version a store call uses: ``version`` when given, else ``fn``'s declared one,
    else the one registered for ``experiment`` (its module must have been imported), else 1.
    Raises ``ValueError`` when ``fn`` was declared for another experiment."""
    declared_for = getattr(fn, "experiment", None)
    if declared_for is not None and declared_for != experiment:
        raise ValueError(f"{getattr(fn, '__name__', fn)} is declared as experiment {declared_for!r}, "
                         f"not {experiment!r}")
    if version is None:
        version = getattr(fn, "code_version", None)
    if version is None:
        version = _CODE_VERSIONS.get(experiment, 1)
    return _checked_version(version)


def run_key(config: dict, version: int = 1) -> str:
    """The folder name of a run: :func:`config_hash` of the config at version 1 (so runs stored
    before code versions existed stay valid), of ``{"code_version", "config"}`` from version 2 on."""
    if _checked_version(version) == 1:
        return config_hash(config)
    return config_hash({"code_version": version, "config": config})


# =============================================================================================
# Git state and timing of one run
# =============================================================================================


class DirtyTreeError(RuntimeError):
    """A store for published results was asked to compute while zaplib's sources are uncommitted."""


@functools.lru_cache(maxsize=None)
def git_state(source_dir: Path = PACKAGE_DIR) -> tuple[str, bool | None]:
    """``(commit, dirty)`` of the git work tree holding ``source_dir``: ``dirty`` says whether any
    file under ``source_dir`` (tracked or new) differs from the commit; ``("unknown", None)``
    outside git. Cached per process: one ``git status`` per session, not per run."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=source_dir, capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown", None
        status = git("status", "--porcelain", "--untracked-files=all", "--", ".")
        return head.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def _git_state() -> tuple[str, bool | None]:
    """The git state of zaplib's sources (one seam for tests to replace)."""
    return git_state(PACKAGE_DIR)


def call_timed(fn: Callable[[dict], dict], config: dict) -> tuple[dict, dict]:
    """Run ``fn(config)`` and describe where and how long (runs on the worker in a sweep)."""
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    result = fn(config)
    wall = time.perf_counter() - t0
    torch = sys.modules.get("torch")  # only if the experiment used it: this module never needs torch
    if "device" in config:
        device = str(config["device"])
    else:
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


# =============================================================================================
# The store
# =============================================================================================


class StoredRun(dict):
    """One stored run: a dict of its results (tables as DataFrames, tensors, small values), with
    ``.config``, ``.meta`` and ``.path``."""

    def __init__(self, results, config, meta, path):
        super().__init__(results)
        self.config, self.meta, self.path = config, meta, Path(path)


class Store:
    """Results of pure experiment functions, one folder per (experiment, code version, config).

    ``root`` defaults to ``$ZAPLIB_RESULTS``, else ``<project>/results``; ``force`` defaults to
    ``$ZAPLIB_FORCE``. With ``force`` every config is recomputed once per Store object (a second
    ``run`` of the same config in the same notebook reuses the fresh result). ``profile`` is
    recorded in the ``meta.json`` of the runs this store computes (a config's own ``profile`` key
    wins); keep it out of configs so that equal settings reached from two profiles share runs.
    ``require_clean`` (default: ``profile`` in :data:`CLEAN_TREE_PROFILES`) refuses to compute from
    a dirty tree (:meth:`ensure_clean_tree`).

    Every method taking an ``experiment`` also takes ``version=`` (default :func:`code_version`)."""

    def __init__(self, root: str | os.PathLike | None = None, force: bool | None = None,
                 profile: str | None = None, require_clean: bool | None = None):
        root = root if root is not None else os.environ.get("ZAPLIB_RESULTS") or project_root() / "results"
        self.root = Path(root).resolve()
        self.force = bool(int(os.environ.get("ZAPLIB_FORCE", "0") or 0)) if force is None else force
        self.profile = profile
        self.require_clean = profile in CLEAN_TREE_PROFILES if require_clean is None else require_clean
        self._fresh: set[tuple[str, str]] = set()

    def __repr__(self):
        return (f"Store({str(self.root)!r}, force={self.force}, profile={self.profile!r}, "
                f"require_clean={self.require_clean})")

    def path(self, experiment: str, config: dict, version: int | None = None) -> Path:
        return self.root / experiment / run_key(config, code_version(experiment, version=version))

    def ensure_clean_tree(self) -> None:
        """Raise :class:`DirtyTreeError` if this store requires a clean tree and zaplib's sources
        are uncommitted (unless ``ZAPLIB_ALLOW_DIRTY=1``)."""
        if not self.require_clean or os.environ.get("ZAPLIB_ALLOW_DIRTY", "0") not in ("", "0"):
            return
        commit, dirty = _git_state()
        if dirty:
            raise DirtyTreeError(
                f"refusing to compute runs for profile {self.profile!r}: zaplib's sources differ from "
                f"commit {commit[:12]}, so the stored runs would not name the code that made them. "
                "Commit first (git commit), or set ZAPLIB_ALLOW_DIRTY=1 for a throwaway run.")

    def complete(self, experiment: str, config: dict, checkpoints: bool = False,
                 version: int | None = None) -> bool:
        """Whether the run is stored (and, with ``checkpoints``, all its big checkpoints exist)."""
        meta_file = self.path(experiment, config, version) / "meta.json"
        if not meta_file.exists():
            return False
        if checkpoints:
            files = json.loads(meta_file.read_text())["files"]["tensors"].values()
            return all((meta_file.parent / name).exists() for name in files)
        return True

    def needs_run(self, experiment: str, config: dict, force: bool | None = None,
                  checkpoints: bool = False, version: int | None = None) -> bool:
        force = self.force if force is None else force
        if force and (experiment, self.path(experiment, config, version).name) not in self._fresh:
            return True
        return not self.complete(experiment, config, checkpoints, version)

    def run(self, experiment: str, config: dict, fn: Callable[[dict], dict], force: bool | None = None,
            checkpoints: bool = False, version: int | None = None) -> StoredRun:
        """``fn(config)`` from the store when stored, else computed, stored and returned.

        ``fn`` gets the config as it reads back from JSON and returns a dict of pandas DataFrames
        (saved as CSV), tensors / state_dicts (``.pt``) and small JSON values. What is returned is
        always the stored copy, so a reused run and a fresh one look the same. The code version is
        ``version``, else ``fn.code_version`` (see :func:`experiment`)."""
        version = code_version(experiment, fn, version)
        config = json.loads(canonical_json(config))
        if self.needs_run(experiment, config, force, checkpoints, version):
            self.ensure_clean_tree()
            self.save(experiment, config, *call_timed(fn, config), version=version)
        return self.load(experiment, config, version)

    def save(self, experiment: str, config: dict, results: dict, meta: dict | None = None,
             version: int | None = None) -> Path:
        """Write one run atomically: into ``.<key>.tmp-<host>-<pid>``, then rename into place."""
        import pandas as pd  # imported on use: `python -m zaplib list` imports this module, not pandas

        version = code_version(experiment, version=version)
        final = self.path(experiment, config, version)
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
            "experiment": experiment, "config_hash": final.name, "code_version": version,
            "profile": config.get("profile", self.profile),
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
        import torch  # imported on use: the store itself must load without torch (CLI start-up)

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

    def load(self, experiment: str, config: dict, version: int | None = None) -> StoredRun:
        """The stored run of ``config``; ``FileNotFoundError`` when there is none. Big checkpoints
        that are missing are left out (``meta['missing']`` names them)."""
        import pandas as pd  # imported on use: see save()

        path = self.path(experiment, config, version)
        if not (path / "meta.json").exists():
            raise FileNotFoundError(f"no stored run of {experiment!r} (code version "
                                    f"{code_version(experiment, version=version)}) for config "
                                    f"{canonical_json(config)}")
        meta = json.loads((path / "meta.json").read_text())
        results: dict[str, Any] = json.loads((path / meta["files"]["values"]).read_text())
        for key, name in meta["files"]["tables"].items():
            results[key] = pd.read_csv(path / name)
        missing = []
        for key, name in meta["files"]["tensors"].items():
            if (path / name).exists():
                import torch  # imported on use: see _save_tensor()

                results[key] = torch.load(path / name, map_location="cpu", weights_only=True)
            else:
                missing.append(key)
        meta["missing"] = missing
        config = json.loads((path / "config.json").read_text())
        return StoredRun({k: results[k] for k in sorted(results)}, config, meta, path)

    def _stored(self, experiment: str, version: int | None = None):
        """``(config, meta)`` of every stored run of ``experiment`` at the current code version (runs
        of other versions stay on disk but are skipped; runs without a recorded version are version 1)."""
        version = code_version(experiment, version=version)
        folder = self.root / experiment
        for meta_file in sorted(folder.glob("[!.]*/meta.json")) if folder.exists() else []:
            meta = json.loads(meta_file.read_text())
            if (meta.get("code_version") or 1) == version:
                yield json.loads((meta_file.parent / "config.json").read_text()), meta

    def configs(self, experiment: str, version: int | None = None) -> list[dict]:
        """Configs of every stored run of ``experiment`` at the current code version (runs of other
        versions stay on disk but are not listed; runs without a recorded version are version 1)."""
        return [config for config, _ in self._stored(experiment, version)]

    def wall_times(self, experiment: str, version: int | None = None) -> list[tuple[dict, float]]:
        """``(config, wall_time_s)`` of every stored run of ``experiment`` at the current code
        version: what :mod:`zaplib.compute` estimates the cost of missing runs from."""
        return [(config, float(meta["wall_time_s"])) for config, meta in self._stored(experiment, version)
                if meta.get("wall_time_s") is not None]

    def table(self, experiment: str, name: str, configs: Iterable[dict] | None = None,
              version: int | None = None):
        """Table ``name`` of every stored run of ``experiment`` at the current code version (or of
        the given ``configs``), stacked into one tidy DataFrame with the config's keys as extra
        columns (nested keys joined by ``.``; lists become tuples) and the run's key as ``run``.
        A table column wins over a config key of the same name."""
        import pandas as pd  # imported on use: see save()

        version = code_version(experiment, version=version)
        wanted = self.configs(experiment, version) if configs is None else list(configs)
        frames = []
        for config in wanted:
            path = self.path(experiment, config, version)
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
            raise FileNotFoundError(f"no stored runs of {experiment!r} (code version {version}) "
                                    f"with a table {name!r} in {self.root}")
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
# Executors and sweeps
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
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_single_thread_worker)


class DaskExecutor(cf.Executor):
    """A ``concurrent.futures`` executor on a Dask scheduler at ``address`` (``tcp://host:port``),
    or on an existing ``dask.distributed.Client``. Tasks are impure (never deduplicated by Dask);
    with ``single_thread`` every worker runs torch on one thread."""

    def __init__(self, address, single_thread: bool = True):
        from dask.distributed import Client  # optional dependency, needed only for a cluster

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
          force: bool | None = None, checkpoints: bool = False, version: int | None = None) -> list:
    """``[fn(c) for c in configs]``, through ``executor``, resuming from ``store``.

    With a ``store``, configs already stored (at the code version, see :func:`code_version`) are
    loaded, not submitted; the rest are submitted, and each result is written to the store as soon
    as it arrives, by this process. A killed sweep therefore resumes where it stopped. The
    experiment's name is ``experiment``, else ``fn.experiment`` (see :func:`experiment`). Returns
    the results in the order of ``configs`` (:class:`StoredRun` objects with a store, ``fn``'s own
    results without). ``executor=None`` takes :func:`make_executor` from the environment (serial by
    default) and shuts it down at the end; a given executor is left running. The first failure
    cancels the configs not yet started and is raised with its config."""
    experiment = experiment if experiment is not None else getattr(fn, "experiment", None)
    if store is not None and experiment is None:
        raise ValueError("sweep(..., store=...) needs the experiment name (or an @experiment function)")
    if store is not None:
        version = code_version(experiment, fn, version)
    configs = [json.loads(canonical_json(c)) for c in configs]
    results: list[Any] = [None] * len(configs)
    todo: dict[str, list[int]] = {}  # config hash -> positions (duplicates computed once)
    for i, config in enumerate(configs):
        if store is not None and not store.needs_run(experiment, config, force, checkpoints, version):
            results[i] = store.load(experiment, config, version)
        else:
            todo.setdefault(config_hash(config), []).append(i)
    if store is not None and todo:
        store.ensure_clean_tree()

    def finish(positions, outcome):
        config = configs[positions[0]]
        if store is not None:
            store.save(experiment, config, *outcome, version=version)
            outcome = store.load(experiment, config, version)
        else:
            outcome = outcome[0]
        for i in positions:
            results[i] = outcome
        bar.update(len(positions))

    name = experiment or getattr(fn, "__name__", "sweep")
    initial = len(configs) - sum(map(len, todo.values()))
    channel = os.environ.get(PROGRESS_ENV)
    # Inside a notebook executed by the runner, progress goes to the runner's terminal through a
    # side channel (a file it tails); a bar printed here would land in the committed notebook.
    bar = (_ChannelProgress(channel, name, len(configs), initial) if channel else
           tqdm(total=len(configs), initial=initial, desc=name, disable=not progress, file=sys.stderr,
                mininterval=1.0))
    owned = executor is None
    executor = make_executor() if owned and todo else executor
    try:
        if executor is None:
            for positions in todo.values():
                with _naming_failures(fn, configs[positions[0]]):
                    outcome = call_timed(fn, configs[positions[0]])
                finish(positions, outcome)
        else:
            futures = {executor.submit(call_timed, fn, configs[p[0]]): p for p in todo.values()}
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


#: Environment variable naming a file where sweeps report their progress (set by the runner).
PROGRESS_ENV = "ZAPLIB_PROGRESS"


class _ChannelProgress:
    """The part of a tqdm bar a sweep uses (``update``, ``close``), written as one JSON line per
    change to the file ``path``: experiment, runs done / total, and an ETA from this sweep's rate."""

    def __init__(self, path: str, name: str, total: int, initial: int):
        self.path, self.name, self.total, self.done, self.start = path, name, total, initial, initial
        self.tic = time.perf_counter()
        self._write()

    def _write(self):
        computed, elapsed = self.done - self.start, time.perf_counter() - self.tic
        remaining = self.total - self.done
        eta = elapsed / computed * remaining if computed else None
        line = json.dumps({"experiment": self.name, "done": self.done, "total": self.total,
                           "eta_s": eta, "elapsed_s": elapsed})
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def update(self, n: int = 1):
        self.done += n
        self._write()

    def close(self):
        pass


def progress_line(record: dict) -> str:
    """``zapping-pretrain: 12/40 runs, ETA 3.2 min`` from a line of the progress channel."""
    eta = record.get("eta_s")
    if record["done"] >= record["total"]:
        tail = "done"
    elif eta is None:
        tail = "ETA after the first run"
    else:
        tail = f"ETA {eta / 60:.1f} min" if eta >= 60 else f"ETA {eta:.0f} s"
    return f"{record['experiment']}: {record['done']}/{record['total']} runs, {tail}"


@contextlib.contextmanager
def _naming_failures(fn, config):
    try:
        yield
    except Exception as exc:
        raise RuntimeError(f"sweep: {getattr(fn, '__name__', fn)} failed on config "
                           f"{canonical_json(config)}: {type(exc).__name__}: {exc}") from exc
