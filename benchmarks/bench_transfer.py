"""Speed of the sequential linear-probe transfer (Frati et al. 2023, Alg. 2) on cached features.

Compares :func:`zaplib.transfer.sequential_probe` (S probes in lock-step: hand-derived softmax-CE
head gradients, fused Adam) with :func:`zaplib.transfer.sequential_probe_reference` (one run at a
time, per-image autograd + ``torch.optim.Adam``), in probe-steps per second (one probe-step = one
image through one probe's head, forward + update). Both are timed on a prefix of the run
where the full run would take too long, and the full run extrapolated (a step's cost does not
depend on its position); evaluations are excluded from both.

Memory-traffic floor. Exact Alg. 2 with Adam (the official optimiser) touches every element of every
head at every step: the softmax gradient (p − e_y) fᵀ is dense, and Adam moves even elements with a
zero gradient. A fused kernel must at least read W, m, v and write them back: 24 bytes per element
and probe-step in float32. ``memory_floor_s`` is that traffic for the whole run divided by the copy
bandwidth measured here (a large ``Tensor.copy_``), a bound no CPU implementation of exact Adam
can beat unless the probes' state (``probe_state_mb``) stays in cache — as it does at quick size,
where the measured run beats this "floor". It is what decides whether a goal such as "the
paper's grid in two minutes" is reachable.

Run under the heavy-compute lock:  flock /tmp/zaplib-heavy.lock .venv/bin/python benchmarks/bench_transfer.py
Writes ``benchmarks/results/bench_transfer.json`` and prints a table. ``--threads`` (default 1).
"""
from __future__ import annotations

import argparse
import json
import os
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


def copy_bandwidth_gb_s(mbytes: int = 512, repeats: int = 5) -> float:
    """Read + write bandwidth of one large float32 copy (GB/s counting both directions)."""
    src = torch.rand(mbytes * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - tic)
    return 2 * src.numel() * 4 / best / 1e9


def bench_case(name, D, N, T, L, lock_steps, ref_steps, bandwidth=None):
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
        # the floor assumes the state streams from memory: it does not bind when it fits in cache
        "probe_state_mb": round(12 * N * D * T * L / 2**20, 1),
        "memory_floor_s": None if bandwidth is None else round(24 * N * D * full_probe_steps / (bandwidth * 1e9), 1),
    }


#: Grouping (``zaplib.transfer.probe_groups``): the long profile's probe runs, all (seed, lr) probes in
#: one lock-step against groups whose state fits the cache budget. (name, D, N, T, L, steps timed)
GROUPING_CASES = [
    ("long report run (64 ch, 600 classes, 5 seeds x 1 lr)", 576, 600, 5, 1, 600),
    ("long choice run (64 ch, 600 classes, 3 seeds x 5 lrs)", 576, 600, 3, 5, 600),
]


def bench_grouping(name, D, N, T, L, steps):
    """ms per probe-step of all probes in one lock-step vs in cache-sized groups (same probes)."""
    train, test = _features(D, N, 15), _features(D, N, 5, seed=1)
    seeds, lrs = list(range(T)), [10 ** (-4 + 3 * i / max(L - 1, 1)) for i in range(L)]

    def timed(groups):
        tic = time.perf_counter()
        for g_seeds, g_lrs in groups:
            transfer.sequential_probe(train, test, n_classes=N, seeds=g_seeds, lrs=g_lrs,
                                      eval_every=10 ** 9, max_steps=steps)
        return 1e3 * (time.perf_counter() - tic) / (steps * T * L)

    timed([(seeds[:1], lrs[:1])])  # warm-up
    groups = transfer.probe_groups(seeds, lrs, N, D)
    lock, grouped = timed([(seeds, lrs)]), timed(groups)
    return {"case": name, "D": D, "classes": N, "probes": T * L, "groups": len(groups),
            "state_mb_per_probe": round(16 * N * D / 2**20, 2),
            "lockstep_ms_per_probe_step": round(lock, 4), "grouped_ms_per_probe_step": round(grouped, 4),
            "lockstep_probe_steps_per_s": round(1e3 / lock), "grouped_probe_steps_per_s": round(1e3 / grouped),
            "speedup": round(lock / grouped, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_transfer.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    bandwidth = copy_bandwidth_gb_s()
    print(f"copy bandwidth: {bandwidth:.1f} GB/s (read + write)")
    rows = [bench_case(*case, bandwidth=bandwidth) for case in CASES]
    print(f"{'case':48s} {'probes':>6s} {'lock ms/step':>12s} {'ref ms/step':>11s} {'speed-up':>8s} "
          f"{'lock full s':>11s} {'ref full s':>10s}")
    for r in rows:
        print(f"{r['case']:48s} {r['probes']:6d} {r['lockstep_ms_per_probe_step']:12.4f} "
              f"{r['reference_ms_per_probe_step']:11.4f} {r['speedup']:7.1f}x "
              f"{r['lockstep_full_run_s']:11.1f} {r['reference_full_run_s']:10.1f}")
    for r in rows:
        print(f"{r['case']}: W, m, v of all probes {r['probe_state_mb']:.0f} MB; if streamed from memory, "
              f"exact Adam needs ≥ {r['memory_floor_s']:.0f} s")
    grouping = [bench_grouping(*case) for case in GROUPING_CASES]
    for r in grouping:
        print(f"{r['case']}: lock-step {r['lockstep_probe_steps_per_s']} probe-steps/s, "
              f"{r['groups']} cache-sized groups {r['grouped_probe_steps_per_s']} probe-steps/s ({r['speedup']}x)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "torch": torch.__version__,
                               "copy_bandwidth_gb_s": round(bandwidth, 2), "load_average_1min": load,
                               "machine": platform.machine(), "cases": rows, "grouping": grouping},
                              indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
