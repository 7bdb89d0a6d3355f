"""Command line: ``python -m zaplib list | run CHAPTER|all | compute CHAPTER | book | status``.

    python -m zaplib list                                   # chapters, parameters, types, profiles
    python -m zaplib run toolkit --profile smoke -p seeds 0,1 --force
    python -m zaplib run all --workers 2                    # every chapter, 2 local processes per sweep
    python -m zaplib run lure --scheduler tcp://host:8786   # sweeps on a Dask cluster
    python -m zaplib compute zapping --profile long --budget 120 --workers 2   # resumable chunks
    python -m zaplib compute zapping --profile long --dry-run                  # missing runs, cost
    python -m zaplib book                                   # bring the published book up to date, build it
    python -m zaplib book --profile quick                   # a staging copy in _build/quick
    python -m zaplib status                                 # which published notebooks are up to date

Exit codes: 0 success, 1 a chapter failed (``status``: a notebook is stale), 2 bad usage (unknown chapter, parameter or type) — in
which case nothing was executed.
"""
from __future__ import annotations

import argparse
import sys

from . import runner
from .chapters import PROFILES, PUBLISHED, REGISTRY
from .runner import ParameterError, describe_params, resolve_params, type_name
from .store import DirtyTreeError, Store


def _list(args) -> int:
    for chapter in REGISTRY.values():
        print(f"{chapter.name} — {chapter.title}  ({chapter.notebook})")
        profiles = [p for p in PROFILES if p in chapter.profiles]
        rows = [("parameter", "type", *profiles, "meaning")]
        for name, param in chapter.params.items():
            values = [resolve_params(chapter, profile=p)[name] for p in profiles]
            shown = [",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in values]
            choices = f" (one of {', '.join(param.choices)})" if param.choices else ""
            rows.append((name, type_name(param.type), *shown, param.help + choices))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        print()
    return 0


def _say_what_is_missing(name: str, params: dict, profile: str | None) -> None:
    """Before a notebook spends minutes computing runs, say which are missing and how to compute
    them in budgeted chunks instead."""
    from . import compute  # imported here: the check needs the chapter modules and the store

    chapter = REGISTRY[name]
    if not hasattr(compute.chapter_module(chapter), "planned_runs"):
        return
    resolved = resolve_params(chapter, params, profile)
    missing, planned = compute.missing_runs(chapter, resolved, Store(profile=resolved["profile"]))
    if not missing:
        return
    known = sum(r.estimate_s for r in missing if r.estimate_s is not None)
    unknown = sum(r.estimate_s is None for r in missing)
    print(f"zaplib: chapter {name!r} ({resolved['profile']}): {len(missing)} of {planned} planned runs are "
          f"not stored (≈ {known / 60:.0f} min of compute estimated, {unknown} without an estimate; "
          "later stages may add more); executing the notebook computes them. To compute them first, "
          f"in resumable chunks: python -m zaplib compute {name} --profile {resolved['profile']} "
          "--budget MINUTES --workers 2", file=sys.stderr)


def _run(args) -> int:
    names = list(REGISTRY) if args.chapter == "all" else [args.chapter]
    if args.chapter != "all" and args.chapter not in REGISTRY:
        print(f"error: unknown chapter {args.chapter!r}; chapters: {', '.join(REGISTRY)}, all",
              file=sys.stderr)
        return 2
    if args.output and len(names) > 1:
        print("error: --output needs a single chapter", file=sys.stderr)
        return 2
    params = dict(args.param or [])
    try:  # validate every chapter before executing any
        for name in names:
            resolve_params(REGISTRY[name], params, args.profile)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        from . import compute  # imported here: only the dry run needs it

        failed = [name for name in names
                  if compute.paper_dry_run(name, params, args.profile or "paper")["failures"]]
        return 1 if failed else 0
    for name in names:
        _say_what_is_missing(name, params, args.profile)
        try:
            path = runner.run_chapter(name, params, args.profile, force=args.force,
                                      scheduler=args.scheduler, workers=args.workers,
                                      output=args.output, progress=not args.quiet)
        except Exception as exc:  # papermill's error already names the failing cell
            print(f"error: chapter {name!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"zaplib: wrote {path}")
    return 0


def _compute(args) -> int:
    from . import compute  # imported here: pandas and the executors are not needed to list or run

    if args.chapter not in REGISTRY:
        print(f"error: unknown chapter {args.chapter!r}; chapters: {', '.join(REGISTRY)}", file=sys.stderr)
        return 2
    if args.budget is not None and not args.budget > 0:
        print(f"error: --budget must be a positive number of minutes, got {args.budget}", file=sys.stderr)
        return 2
    try:
        resolve_params(REGISTRY[args.chapter], dict(args.param or []), args.profile)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        compute.compute(args.chapter, dict(args.param or []), args.profile, budget_minutes=args.budget,
                        workers=args.workers, scheduler=args.scheduler, dry_run=args.dry_run)
    except (NotImplementedError, DirtyTreeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _book(args) -> int:
    try:
        html = runner.build_book(args.profile, force=args.force, scheduler=args.scheduler,
                                 workers=args.workers)
    except Exception as exc:
        print(f"error: book build failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"zaplib: book in {html}")
    return 0


def _status(args) -> int:
    stale = []
    for name in REGISTRY:
        fresh = runner.is_up_to_date(name, args.profile)
        print(f"{name:22s} {'up to date' if fresh else 'STALE: make book re-executes it'}")
        if not fresh:
            stale.append(name)
    if stale:
        print(f"{len(stale)} notebook(s) not executed with the current parameters, cells, zaplib and "
              f"stored runs: {', '.join(stale)}", file=sys.stderr)
    return 1 if stale else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zaplib", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="chapters, their parameters, types and profiles")

    def execution_options(sub, profiles=PROFILES):
        sub.add_argument("--profile", choices=profiles, default=None,
                         help="named parameter set (default: the profile the book publishes for the "
                              "chapter, long where it has one, else quick)")
        sub.add_argument("--force", action="store_true", help="recompute stored runs")
        sub.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler for sweeps (or $ZAPLIB_SCHEDULER)")
        sub.add_argument("--workers", type=int, metavar="N", help="local processes for sweeps (or $ZAPLIB_WORKERS)")

    run = commands.add_parser("run", help="execute a chapter (or all) into the book with papermill")
    run.add_argument("chapter", help=f"one of: {', '.join(REGISTRY)}, all")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="set a parameter (lists: comma-separated, e.g. -p seeds 0,1,2)")
    execution_options(run)
    run.add_argument("--output", metavar="PATH", help="write the executed notebook here instead of in place")
    run.add_argument("-q", "--quiet", action="store_true", help="no cell progress bar")
    run.add_argument("--dry-run", action="store_true",
                     help="check the profile (default paper) without running it: configs, datasets, "
                          "every model at full size, two steps of every kind of run, total cost")

    comp = commands.add_parser("compute", help="compute a chapter's stored runs without a kernel, "
                                                "within a time budget (resumable)")
    comp.add_argument("chapter", help=f"one of: {', '.join(REGISTRY)}")
    comp.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                      help="set a parameter (as for run)")
    comp.add_argument("--profile", choices=PROFILES, default=None,
                      help="named parameter set (default: the profile the book publishes for the chapter)")
    comp.add_argument("--budget", type=float, metavar="MINUTES",
                      help="start no run whose estimated time exceeds what is left of this budget")
    comp.add_argument("--workers", type=int, metavar="N", help="local processes (one torch thread each)")
    comp.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler (or $ZAPLIB_SCHEDULER)")
    comp.add_argument("--dry-run", action="store_true", help="list the missing runs and their estimated cost")

    book = commands.add_parser("book", help="run every chapter, then build the HTML with jupyter-book")
    execution_options(book, profiles=(PUBLISHED, *PROFILES))

    status = commands.add_parser("status", help="is each chapter's notebook up to date (exit 1 if not)?")
    status.add_argument("--profile", choices=(*PROFILES, PUBLISHED), default=PUBLISHED)

    args = parser.parse_args(argv)
    if getattr(args, "profile", None) is None and args.command == "book":
        args.profile = PUBLISHED
    return {"list": _list, "run": _run, "compute": _compute, "book": _book,
            "status": _status}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
