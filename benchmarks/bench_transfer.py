"""Speed of the sequential linear-probe transfer (Frati et al. 2023, Alg. 2) on cached features.

Compares :func:`zaplib.transfer.sequential_probe` (S probes in lock-step: hand-derived softmax-CE
head gradients, fused Adam) with :func:`zaplib.transfer.sequential_probe_reference` (one run at a
time, per-image autograd + ``torch.optim.Adam``), in probe-steps per second (one probe-step = one
image through one probe's head, forward + update). Both are timed on a prefix of the run
where the full run would take too long, and the full run extrapolated (a step's cost does not
depend on its position); evaluations are excluded from both.

Run under the heavy-compute lock:  flock /tmp/zaplib-heavy.lock .venv/bin/python benchmarks/bench_transfer.py
Writes ``benchmarks/results/bench_transfer.json`` and prints a table. ``--threads`` (default 1).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from zaplib import transfer

# (name, feature dim D, classes N, seeds T, learning rates L, lock-step steps timed, reference steps timed)
CASES = [
    ("quick (32 ch, 100 classes, 3 seeds x 7 lrs)", 288, 100, 3, 7, None, 600),
    ("paper (256 ch, 600 classes, 10 seeds x 9 lrs)", 2304, 600, 10, 9, 30, 100),
]


def _features(D, P, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(P, 1, D, generator=g)
    return torch.relu(centres + 0.3 * torch.randn(P, n, D, generator=g))


def bench_case(name, D, N, T, L, lock_steps, ref_steps):
    train, test = _features(D, N, 15), _features(D, N, 5, seed=1)
    lrs = [10 ** (-4 + 3 * i / max(L - 1, 1)) for i in range(L)]
    # lock-step: the whole trajectory, or a prefix (the cost of a step is fixed by S * N * D)
    steps = N * 15 if lock_steps is None else lock_steps
    transfer.sequential_probe(train, test, n_classes=N, seeds=list(range(T)), lrs=lrs,
                              eval_every=10 ** 9, max_steps=2)  # warm-up
    tic = time.perf_counter()
    transfer.sequential_probe(train, test, n_classes=N, seeds=list(range(T)), lrs=lrs,
                              eval_every=10 ** 9, max_steps=steps)
    lock_s = time.perf_counter() - tic
    probe_steps = steps * T * L
    full_probe_steps = N * 15 * T * L
    # reference: one run, timed over its first ref_steps images (no evaluation in between)
    tr = transfer.trajectory(N, 15, N, D, 0)
    head = transfer.new_head(tr.weight)
    opt = torch.optim.Adam(head.parameters(), lr=lrs[0])
    for warm in range(20):  # first optimiser steps pay one-off import/dispatch costs
        loss = torch.nn.functional.cross_entropy(head(train[0, 0:1]), torch.tensor([0]))
        opt.zero_grad(); loss.backward(); opt.step()
    tic = time.perf_counter()
    for j in range(ref_steps):
        n, i = divmod(j, 15)
        f = train[tr.classes[n], tr.image_order[n, i]]
        loss = torch.nn.functional.cross_entropy(head(f.unsqueeze(0)), torch.tensor([n]))
        opt.zero_grad(); loss.backward(); opt.step()
    ref_per_step = (time.perf_counter() - tic) / ref_steps
    lock_per_step = lock_s / probe_steps
    return {
        "case": name, "D": D, "classes": N, "probes": T * L, "lockstep_steps_timed": steps,
        "lockstep_full_run_s": round(lock_per_step * full_probe_steps, 1),
        "lockstep_ms_per_probe_step": round(1e3 * lock_per_step, 4),
        "reference_ms_per_probe_step": round(1e3 * ref_per_step, 4),
        "reference_full_run_s": round(ref_per_step * full_probe_steps, 1),
        "speedup": round(ref_per_step / lock_per_step, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_transfer.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    rows = [bench_case(*case) for case in CASES]
    print(f"{'case':48s} {'probes':>6s} {'lock ms/step':>12s} {'ref ms/step':>11s} {'speed-up':>8s} "
          f"{'lock full s':>11s} {'ref full s':>10s}")
    for r in rows:
        print(f"{r['case']:48s} {r['probes']:6d} {r['lockstep_ms_per_probe_step']:12.4f} "
              f"{r['reference_ms_per_probe_step']:11.4f} {r['speedup']:7.1f}x "
              f"{r['lockstep_full_run_s']:11.1f} {r['reference_full_run_s']:10.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "torch": torch.__version__,
                               "machine": platform.machine(), "cases": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
