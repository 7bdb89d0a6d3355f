"""Compute a chapter's runs without a kernel, in chunks that fit a time budget.

``python -m zaplib compute CHAPTER --profile long [--budget MINUTES] [--workers N | --scheduler
ADDRESS] [--dry-run]`` computes the stored runs a chapter's notebook reads, from the same configs the
notebook builds: each chapter module (``zaplib.experiments.<chapter>``) has a function
``planned_runs(params, store) -> list[(fn, config)]`` listing the runs it needs, where ``fn`` is a stored
experiment function (:func:`zaplib.store.experiment`). A chapter whose later runs depend on earlier
ones (e.g. a learning rate chosen on validation runs) lists only what it can know from the runs
already stored; :func:`compute` plans again after every stage until nothing is missing.

The budget is honoured run by run: a run is started only when its estimated time fits in what is
left of ``--budget``, so a long profile is computed over several sittings, each ending cleanly; the
store keeps every finished run, so the next sitting resumes where this one stopped. Estimates come
from the wall times the store recorded for runs of the same experiment that differ from the missing
one only in seed-like keys (any key with "seed" in its name), else from the chapter's own
``cost_seconds(config)`` when it has one; runs with no estimate are started while budget is left.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import importlib
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from .chapters import Chapter, get_chapter
from .runner import resolve_params
from .store import Store, call_timed, canonical_json, code_version, make_executor


@dataclass
class PlannedRun:
    """One run a chapter needs: its experiment function and config, and the estimated seconds."""

    fn: Callable[[dict], dict]
    config: dict
    experiment: str
    version: int
    estimate_s: float | None = None


def chapter_module(chapter: Chapter):
    """The chapter's module, ``zaplib.experiments.<name>``."""
    return importlib.import_module(f"{__package__}.experiments.{chapter.name}")


def _without_seeds(config: dict) -> str:
    return canonical_json({k: v for k, v in config.items() if "seed" not in k.lower()})


def estimate_seconds(store: Store, run: PlannedRun, module=None, _cache: dict | None = None) -> float | None:
    """Mean recorded wall time of stored runs of the same experiment whose configs differ from this
    one only in seed-like keys; else the chapter's ``cost_seconds(config)``; else None."""
    cache = {} if _cache is None else _cache
    key = (run.experiment, run.version)
    if key not in cache:
        groups: dict[str, list[float]] = {}
        for config, seconds in store.wall_times(run.experiment, run.version):
            groups.setdefault(_without_seeds(config), []).append(seconds)
        cache[key] = groups
    times = cache[key].get(_without_seeds(run.config))
    if times:
        return sum(times) / len(times)
    cost = getattr(module, "cost_seconds", None)
    value = cost(run.config) if cost is not None else None  # None: the chapter cannot price this run
    return float(value) if value is not None else None


def price_shared(module, runs: list[PlannedRun], store: Store, cache: dict) -> None:
    """Re-price, in place, the runs whose estimate is the chapter's model (no recorded run of the
    same kind) with its ``plan_seconds(configs, store)`` when it has one: work several runs share
    (e.g. a learning path's memoised prefix) is charged once, to the first run in ``runs``."""
    price = getattr(module, "plan_seconds", None)
    if price is None or not runs:
        return
    costs = price([r.config for r in runs], store)
    for run, cost in zip(runs, costs):
        recorded = cache.get((run.experiment, run.version), {}).get(_without_seeds(run.config))
        if not recorded and cost is not None:
            run.estimate_s = float(cost)


def _planned(chapter: Chapter, params: dict, store: Store):
    """``(fn, config, experiment, version)`` of every distinct run the chapter plans (stages that
    can be planned from ``store``), in plan order."""
    module = chapter_module(chapter)
    if not hasattr(module, "planned_runs"):
        raise NotImplementedError(f"chapter {chapter.name!r} has no planned_runs(params, store): "
                                  "its runs can only be computed by executing its notebook")
    seen = set()
    for fn, config in module.planned_runs(params, store):
        key = (fn.experiment, canonical_json(config))
        if key not in seen:
            seen.add(key)
            yield fn, config, fn.experiment, code_version(fn.experiment, fn)


def recorded_seconds(chapter: Chapter | str, params: dict, store: Store) -> tuple[float, int]:
    """The recorded single-worker compute of the chapter's stored planned runs (every stage that
    can be planned from the store) and how many runs that is: a profile's *cold time* is this
    divided by the workers, plus the notebook's own execution."""
    chapter = get_chapter(chapter) if isinstance(chapter, str) else chapter
    walls: dict = {}
    seconds, counted = 0.0, 0
    for _, config, experiment, version in _planned(chapter, params, store):
        if (experiment, version) not in walls:
            walls[(experiment, version)] = {canonical_json(c): t for c, t in store.wall_times(experiment, version)}
        recorded = walls[(experiment, version)].get(canonical_json(config))
        if recorded is not None:
            seconds, counted = seconds + recorded, counted + 1
    return seconds, counted


def missing_runs(chapter: Chapter | str, params: dict, store: Store) -> tuple[list[PlannedRun], int]:
    """The planned runs that are not stored yet (with estimates), and how many runs are planned."""
    chapter = get_chapter(chapter) if isinstance(chapter, str) else chapter
    module = chapter_module(chapter)
    missing, planned, cache = [], 0, {}
    for fn, config, experiment, version in _planned(chapter, params, store):
        planned += 1
        if not store.complete(experiment, config, version=version):
            run = PlannedRun(fn, config, experiment, version)
            run.estimate_s = estimate_seconds(store, run, module, cache)
            missing.append(run)
    return missing, planned


def _minutes(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds / 60:.1f}"


def dry_run_table(runs: list[PlannedRun], workers: int = 1):
    """Missing runs per experiment with their estimated cost (a pandas DataFrame)."""
    import pandas as pd  # the report only; computing needs no pandas

    rows = {}
    for run in runs:
        row = rows.setdefault(run.experiment, {"experiment": run.experiment, "missing runs": 0,
                                               "estimated": 0, "estimated minutes": 0.0})
        row["missing runs"] += 1
        if run.estimate_s is not None:
            row["estimated"] += 1
            row["estimated minutes"] += run.estimate_s / 60
    frame = pd.DataFrame(list(rows.values()))
    if len(frame):
        frame[f"wall minutes on {workers} worker(s)"] = frame["estimated minutes"] / max(workers, 1)
    return frame


def compute(chapter: Chapter | str, params: dict | None = None, profile: str | None = None, *,
            budget_minutes: float | None = None, workers: int | None = None, scheduler: str | None = None,
            dry_run: bool = False, store: Store | None = None, out: TextIO = sys.stderr,
            clock: Callable[[], float] = time.monotonic) -> dict:
    """Compute the chapter's missing runs at ``profile`` within ``budget_minutes``.

    Returns a summary: ``done`` (runs computed now), ``remaining`` (runs still missing at the end,
    counting only stages that could be planned), ``stopped`` (``"complete"``, ``"budget"`` or
    ``"dry-run"``). Values are validated before anything runs (:func:`zaplib.runner.resolve_params`)."""
    chapter = get_chapter(chapter) if isinstance(chapter, str) else chapter
    params = resolve_params(chapter, params, profile)
    store = store if store is not None else Store(profile=params["profile"])
    deadline = None if budget_minutes is None else clock() + 60 * budget_minutes
    n_workers = workers or 1
    missing, planned = missing_runs(chapter, params, store)
    if dry_run:
        module = chapter_module(chapter)
        cache: dict = {}
        for run in missing:  # fills the cache of recorded times that price_shared consults
            estimate_seconds(store, run, module, cache)
        price_shared(module, missing, store, cache)
        table = dry_run_table(missing, n_workers)
        known = sum(r.estimate_s for r in missing if r.estimate_s is not None)
        print(f"zaplib compute {chapter.name} --profile {params['profile']} (dry run): "
              f"{planned - len(missing)} of {planned} planned runs stored, {len(missing)} missing, "
              f"estimated {_minutes(known)} min of compute ({sum(r.estimate_s is None for r in missing)} "
              "without an estimate); later stages are planned once these are stored", file=out)
        if len(table):
            print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"), file=out)
        if hasattr(module, "full_plan"):  # every stage at once, later choices as placeholders
            # with the store: a chapter whose later choices are already stored (a gate) plans with them
            whole = [PlannedRun(fn, c, fn.experiment, code_version(fn.experiment, fn))
                     for fn, c in module.full_plan(params, store=store)]
            for run in whole:
                run.estimate_s = estimate_seconds(store, run, module, cache)
            price_shared(module, whole, store, cache)
            whole_table = dry_run_table(whole, n_workers)
            total = sum(r.estimate_s or 0 for r in whole)
            print("whole profile (later stages with placeholder choices): "
                  f"{len(whole)} runs, estimated {_minutes(total)} min of compute, "
                  f"≈ {_minutes(total / max(n_workers, 1))} min on {n_workers} worker(s)", file=out)
            kinds = {}
            run_kind = getattr(module, "run_kind", None)
            for run in whole:
                kind = run_kind(run.config) if run_kind else run.experiment
                row = kinds.setdefault(kind, [0, 0.0])
                row[0] += 1
                row[1] += (run.estimate_s or 0) / 60
            import pandas as pd

            by_kind = pd.DataFrame([{"kind": k, "runs": n, "estimated minutes": m} for k, (n, m) in kinds.items()])
            print(by_kind.to_string(index=False, float_format=lambda v: f"{v:.1f}"), file=out)
            table = {"missing": table, "whole": whole_table, "by_kind": by_kind}
        stored_s, stored_n = recorded_seconds(chapter, params, store)
        if stored_n:
            print(f"stored: {stored_n} runs with {stored_s / 60:.1f} min of recorded single-worker compute "
                  f"(≈ {stored_s / 60 / n_workers:.1f} min on {n_workers} worker(s), plus the notebook)", file=out)
        return {"done": 0, "remaining": len(missing), "planned": planned, "stopped": "dry-run",
                "table": table}
    store.ensure_clean_tree() if missing else None
    executor = make_executor(workers=workers, scheduler=scheduler)
    done, started = 0, clock()
    try:
        while missing:
            # longest first (unknown estimates first of all), so the pool stays busy at the end
            missing.sort(key=lambda r: -(r.estimate_s if r.estimate_s is not None else float("inf")))
            skipped = _compute_stage(missing, store, executor, n_workers, deadline, clock, out,
                                     done_before=done, planned=planned)
            done += len(missing) - len(skipped)
            if skipped:
                left = sum(r.estimate_s or 0 for r in skipped)
                print(f"zaplib compute: budget reached after {(clock() - started) / 60:.1f} min; "
                      f"{len(skipped)} runs remain (≈ {_minutes(left)} min of compute). Run the same "
                      "command again to resume.", file=out)
                return {"done": done, "remaining": len(skipped), "planned": planned, "stopped": "budget"}
            missing, planned = missing_runs(chapter, params, store)  # later stages, now plannable
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    print(f"zaplib compute: {chapter.name} complete at profile {params['profile']}: {done} runs computed "
          f"in {(clock() - started) / 60:.1f} min, {planned} planned runs stored", file=out)
    return {"done": done, "remaining": 0, "planned": planned, "stopped": "complete"}


def _fits(run: PlannedRun, deadline: float | None, now: float) -> bool:
    if deadline is None:
        return True
    if run.estimate_s is None:
        return now < deadline
    return now + run.estimate_s <= deadline


def _compute_stage(runs: list[PlannedRun], store: Store, executor, n_workers: int, deadline, clock, out,
                   done_before: int, planned: int) -> list[PlannedRun]:
    """Compute ``runs`` (at most ``n_workers`` at a time); return the runs not started because their
    estimate did not fit in the budget left when a worker was free."""
    queue, skipped, in_flight, finished = list(runs), [], {}, 0
    total = done_before + len(runs)

    def report(run, seconds):
        left = [r.estimate_s for r in queue + [r for r in in_flight.values()] if r.estimate_s is not None]
        eta = sum(left) / max(n_workers, 1)
        print(f"zaplib compute: {done_before + finished}/{total} runs ({run.experiment}, "
              f"{seconds:.0f} s), ETA {_minutes(eta)} min for the estimated rest", file=out, flush=True)

    def save(run, outcome):
        store.save(run.experiment, run.config, *outcome, version=run.version)

    while queue or in_flight:
        while queue and len(in_flight) < (n_workers if executor is not None else 1):
            run = queue.pop(0)
            if not _fits(run, deadline, clock()):
                skipped.append(run)
                continue
            if executor is None:
                outcome = call_timed(run.fn, run.config)
                save(run, outcome)
                finished += 1
                report(run, outcome[1].get("wall_time_s", 0.0))
            else:
                in_flight[executor.submit(call_timed, run.fn, run.config)] = run
        if not in_flight:
            continue
        ready, _ = cf.wait(list(in_flight), return_when=cf.FIRST_COMPLETED)
        for future in ready:
            run = in_flight.pop(future)
            outcome = future.result()
            save(run, outcome)
            finished += 1
            report(run, outcome[1].get("wall_time_s", 0.0))
    return skipped


# ---------------------------------------------------------------------------------------------
# Dry run of a profile: every config resolved, every dataset found, every model built at full size,
# two optimiser steps of every distinct kind of run, and the total cost
# ---------------------------------------------------------------------------------------------

#: A stated GPU throughput for the cost table: images per second of one training step on one A100
#: relative to this CPU at one thread is not measured here; we state 50x as the planning assumption
#: (a width-64 CIFAR ResNet-18 trains at ~40 img/s on one thread of this CPU and at a few thousand
#: img/s on a current data-centre GPU). Change it with ``--gpu-speedup``.
GPU_SPEEDUP = 50.0


class DryRunStop(BaseException):
    """Raised inside a run once it has taken its dry-run steps (or used its time). A BaseException,
    so that no ``except Exception`` inside a run can swallow it and train on."""


@contextlib.contextmanager
def stop_after(steps: int = 2, seconds: float = 120.0):
    """Inside the block, stop any run (raise :class:`DryRunStop`) after ``steps`` optimiser steps of
    any ``torch.optim`` optimiser, or after ``seconds`` for loops that update weights by hand (the
    lock-step probes, functional inner loops). Yields a dict with the steps taken and their times."""
    import signal

    from torch.optim.optimizer import register_optimizer_step_post_hook

    record = {"steps": 0, "step_times": [], "start": time.perf_counter()}
    last = [time.perf_counter()]

    def hook(optimizer, args, kwargs):
        now = time.perf_counter()
        record["step_times"].append(now - last[0])
        last[0] = now
        record["steps"] += 1
        if record["steps"] >= steps:
            raise DryRunStop(f"{steps} optimiser steps taken")

    def alarm(signum, frame):
        raise DryRunStop(f"{seconds:.0f} s used")

    handle = register_optimizer_step_post_hook(hook)
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield record
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        handle.remove()


def dry_run_kinds(module, runs: list[PlannedRun]) -> list[PlannedRun]:
    """One run per distinct kind: the chapter's ``run_kind(config)`` when it has one, else the
    experiment and its config's model keys."""
    from .models import MODEL_KEYS

    kind = getattr(module, "run_kind", None)
    chosen = {}
    for run in runs:
        key = (run.experiment, kind(run.config) if kind is not None else
               canonical_json({k: v for k, v in run.config.items() if k in MODEL_KEYS and k != "seed"}))
        chosen.setdefault(key, run)
    return list(chosen.values())


def _batch_size(config):
    """The first ``batch_size`` in a (nested) config, or None."""
    if isinstance(config, dict):
        if isinstance(config.get("batch_size"), int):
            return config["batch_size"]
        values = config.values()
    elif isinstance(config, list):
        values = config
    else:
        return None
    for value in values:
        found = _batch_size(value)
        if found is not None:
            return found
    return None


def paper_dry_run(chapter: Chapter | str, params: dict | None = None, profile: str = "paper", *,
                  steps: int = 2, seconds: float = 120.0, gpu_speedup: float = GPU_SPEEDUP,
                  out: TextIO = sys.stderr) -> dict:
    """Check that a profile can run before anyone spends hours on it (issue 13 §4).

    Resolves every config the chapter plans (:func:`missing_runs` on an empty store, so every run
    counts), runs ``steps`` optimiser steps of one run of every distinct kind at full size on the
    available device (which loads its datasets and builds its model; a chapter's
    ``dry_run_config(config)`` may make the measurements around the training cheaper, never the
    model or the training data smaller), and prints the total cost:
    image-steps from the chapter's ``image_steps(config)`` and hours at the throughput measured in
    those steps, and at ``gpu_speedup`` times it (a stated assumption, :data:`GPU_SPEEDUP`).
    A dataset that cannot be found is reported with the command that prepares it and counted as
    ``skipped``; any other failure is an error (returned, and raised by the command line)."""
    import tempfile

    from .data import MissingDatasetError

    chapter = get_chapter(chapter) if isinstance(chapter, str) else chapter
    module = chapter_module(chapter)
    params = resolve_params(chapter, params, profile)
    with tempfile.TemporaryDirectory() as scratch:
        runs, planned = missing_runs(chapter, params, Store(scratch))
        kinds = dry_run_kinds(module, runs)
        rows, failures, skipped = [], [], []
        for run in kinds:
            row = {"experiment": run.experiment, "kind": getattr(module, "run_kind", lambda c: "")(run.config)}
            print(f"zaplib dry run: {chapter.name}: trying {row['experiment']} {row['kind']}", file=out, flush=True)
            tic, record = time.perf_counter(), {"step_times": []}
            config = run.config
            if hasattr(module, "dry_run_config"):  # e.g. fewer probe images: same model, same data
                config = module.dry_run_config(config)
            try:
                with stop_after(steps, seconds) as record:
                    run.fn(config)
                row["status"] = "finished within the dry run"
            except DryRunStop as stop:
                row["status"] = f"ok ({stop})"
            except MissingDatasetError as exc:
                row["status"] = "skipped: " + str(exc).splitlines()[0]
                skipped.append(row)
            except Exception as exc:  # noqa: BLE001 — every failure is reported, then raised below
                row["status"] = f"FAILED: {type(exc).__name__}: {exc}"
                failures.append(row)
            times = record["step_times"][1:] or record["step_times"]  # the first step warms up
            row["s_per_step"] = statistics.median(times) if times else None
            per_step = getattr(module, "images_per_step", _batch_size)  # stacked models: all of them
            row["batch"] = per_step(run.config)
            row["setup_s"] = time.perf_counter() - tic
            rows.append(row)
    image_steps = getattr(module, "image_steps", None)
    total = sum(image_steps(r.config) for r in runs) if image_steps is not None else None
    rates = [r["batch"] / r["s_per_step"] for r in rows if r.get("batch") and r.get("s_per_step")]
    rate = statistics.median(rates) if rates else None
    hours = total / rate / 3600 if total is not None and rate else None
    print(f"zaplib dry run: {chapter.name} --profile {params['profile']}: {planned} runs planned, "
          f"{len(kinds)} kinds tried ({len(skipped)} skipped, {len(failures)} failed)", file=out)
    for row in rows:
        step = "" if row["s_per_step"] is None else f", {row['s_per_step']:.2f} s/step"
        print(f"  {row['experiment']} {row['kind']}: {row['status']}{step}", file=out)
    if total is not None:
        cost = (f"  total ≈ {total:.3g} image-steps" +
                (f"; ≈ {hours:.1f} h at the {rate:.0f} img/s measured here, ≈ {hours / gpu_speedup:.1f} h "
                 f"on a GPU assumed {gpu_speedup:g}x faster" if hours is not None else ""))
        print(cost, file=out)
    return {"planned": planned, "kinds": rows, "failures": failures, "skipped": skipped,
            "image_steps": total, "hours_here": hours,
            "hours_gpu": None if hours is None else hours / gpu_speedup}

