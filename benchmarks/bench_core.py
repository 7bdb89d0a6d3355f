"""Core speed benchmark (issue 2, §7): train-step throughput, achieved GFLOP/s, and S models via
``torch.func`` (``zaplib.train.StackedModels``) against S separate loops.

    python benchmarks/bench_core.py            # full run (idle machine; several minutes)
    python benchmarks/bench_core.py --quick    # < 1 minute, fewer models and repeats
    python benchmarks/bench_core.py --threads 1

Prints tables and writes ``benchmarks/results/core.json`` (``--out``).

Method: synthetic float inputs and labels already on the device (the data pipeline is not timed),
one full train step = zero_grad + forward + cross-entropy + backward + optimiser step (Adam for the
Omniglot convnets as in the zapping paper, SGD+momentum for the ResNet as in LURE; both through
``zaplib.train.make_optimizer``, i.e. PyTorch's fused kernels on CPU/CUDA). Each timing is
the median over ``repeats`` after ``warmup`` un-timed steps (``time.perf_counter``; CUDA is
synchronised). FLOPs of one forward+backward come from ``torch.utils.flop_counter.FlopCounterMode``
(matmul/conv FLOPs only; the optimiser step and elementwise ops are not counted), so
GFLOP/s = counted FLOPs / measured step time.

Stacked vs separate: S models of the same architecture (different inits) take one step each on
their own batch, either as S ordinary ``train_step`` calls with S optimisers, or as one
``StackedModels.step`` on an ``(S, B, ...)`` batch (both ``grad_mode`` values, "autograd" and
"func"); speedup = separate time / stacked time, timed in alternation (medians).
An MNIST-scale MLP is included as the dispatch-bound case where stacking can pay off on a CPU.

Denormals: ``torch.set_flush_denormal(True)`` is timed on an Adam update of a 1000×2304 head whose
gradients are ~1e-20 (their squares, 1e-40, are denormal floats): the situation of a softmax head
whose rows belong to classes not seen for a long time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zaplib import get_device  # noqa: E402
from zaplib.models import MLP, OmniglotConvNet, cifar_resnet18  # noqa: E402
from zaplib.train import StackedModels, make_optimizer, train_step  # noqa: E402

MODELS = {
    # name: (builder, input shape, number of classes, optimiser, lr)
    "omniglot_convnet_256": (lambda: OmniglotConvNet(channels=256, num_classes=1000), (1, 28, 28), 1000, "adam", 1e-3),
    "omniglot_convnet_64": (lambda: OmniglotConvNet(channels=64, num_classes=1000), (1, 28, 28), 1000, "adam", 1e-3),
    "cifar_resnet18": (lambda: cifar_resnet18(width=64), (3, 32, 32), 10, "sgd", 0.1),
    "cifar_resnet18_w16": (lambda: cifar_resnet18(width=16), (3, 32, 32), 10, "sgd", 0.1),
    # MNIST-scale MLP: a step small enough to be dispatch-bound, where stacking can pay off on a CPU.
    "mlp_784_256_10": (lambda: MLP(784, (256,), 10), (1, 28, 28), 10, "adam", 1e-3),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, warmup: int, repeats: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        tic = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def count_flops(model, x, y) -> int:
    """Matmul/conv FLOPs of one forward + backward of ``model`` on ``(x, y)``, counted on the first
    example and multiplied by the batch size (conv/matmul FLOPs are linear in the batch)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x[:1]), y[:1]).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops()) * len(x)


def batch(shape, num_classes, batch_size, device, generator, stacked: int | None = None):
    lead = (batch_size,) if stacked is None else (stacked, batch_size)
    x = torch.rand(*lead, *shape, generator=generator).to(device)
    y = torch.randint(0, num_classes, lead, generator=generator).to(device)
    return x, y


def bench_steps(name, batch_size, warmup, repeats, device, gen) -> dict:
    build, shape, num_classes, opt_name, lr = MODELS[name]
    model = build().to(device).train()
    opt = make_optimizer(model.parameters(), opt_name, lr=lr)
    x, y = batch(shape, num_classes, batch_size, device, gen)
    flops = count_flops(model, x, y)
    seconds = median_seconds(lambda: train_step(model, opt, x, y), warmup, repeats, device)
    return {
        "model": name, "batch": batch_size, "optimizer": opt_name,
        "ms_per_step": 1e3 * seconds, "img_per_s": batch_size / seconds,
        "gflop_per_step": flops / 1e9, "gflop_per_s": flops / seconds / 1e9,
    }


def interleaved_medians(fns: dict, warmup: int, repeats: int, device: torch.device) -> dict:
    """Median seconds of each function, timed in alternation so that load changes on a shared
    machine hit all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            tic = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - tic)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_stacked(name, num_models, batch_size, warmup, repeats, device, gen, grad_modes=("autograd",)) -> list[dict]:
    build, shape, num_classes, opt_name, lr = MODELS[name]
    models = [build().to(device).train() for _ in range(num_models)]
    opts = [make_optimizer(m.parameters(), opt_name, lr=lr) for m in models]
    x, y = batch(shape, num_classes, batch_size, device, gen, stacked=num_models)

    def separate():
        for s in range(num_models):
            train_step(models[s], opts[s], x[s], y[s])

    fns = {"separate": separate}
    for mode in grad_modes:
        stacked = StackedModels(models, opt_name, lr=lr, grad_mode=mode).train()
        fns[mode] = lambda stacked=stacked: stacked.step(x, y)
    seconds = interleaved_medians(fns, warmup, repeats, device)
    images = num_models * batch_size
    return [{
        "model": name, "S": num_models, "batch": batch_size, "grad_mode": mode,
        "separate_ms": 1e3 * seconds["separate"], "stacked_ms": 1e3 * seconds[mode],
        "separate_img_per_s": images / seconds["separate"], "stacked_img_per_s": images / seconds[mode],
        "speedup": seconds["separate"] / seconds[mode],
    } for mode in grad_modes]


def bench_denormal(warmup, repeats, device) -> list[dict]:
    rows = []
    for fused in (False, True):
        head = torch.nn.Linear(2304, 1000).to(device)
        opt = make_optimizer(head.parameters(), "adam", lr=1e-3, fused=fused)
        tiny = [torch.full_like(p, 1e-20) for p in head.parameters()]

        def adam_step():
            for p, g in zip(head.parameters(), tiny):
                p.grad = g
            opt.step()

        row = {"case": "Adam step, 1000x2304 head, gradients 1e-20 (denormal squares)", "fused_adam": fused}
        try:
            for flush in (False, True):
                supported = torch.set_flush_denormal(flush)  # False on CPUs without the feature
                row[f"ms_flush_{str(flush).lower()}"] = 1e3 * median_seconds(adam_step, warmup, repeats, device)
                if flush:
                    row["flush_supported"] = bool(supported)
        finally:
            torch.set_flush_denormal(False)  # torch's default
        row["speedup"] = row["ms_flush_false"] / row["ms_flush_true"]
        rows.append(row)
    return rows


def print_table(title, rows, columns, formats):
    print(f"\n{title}")
    widths = [max(len(c), 10) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in rows:
        cells = [format(row[c], formats.get(c, "")) if c in row else "" for c in columns]
        print("  ".join(str(cell).rjust(w) for cell, w in zip(cells, widths)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer models and repeats (< 1 minute)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--stacked", type=int, default=8, help="S, the number of stacked models")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "core.json")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = get_device()
    gen = torch.Generator().manual_seed(0)
    S = args.stacked

    if args.quick:
        step_cases = [("omniglot_convnet_64", 64, 1, 5), ("omniglot_convnet_64", 1, 5, 20),
                      ("omniglot_convnet_256", 64, 1, 2), ("omniglot_convnet_256", 1, 2, 8),
                      ("cifar_resnet18", 64, 1, 1), ("cifar_resnet18", 1, 1, 3)]
        stacked_cases = [("omniglot_convnet_64", 1, 2, 5), ("omniglot_convnet_64", 64, 1, 1),
                         ("omniglot_convnet_256", 1, 1, 2), ("mlp_784_256_10", 1, 5, 20)]
        grad_modes = ("autograd", "func")
        denormal_repeats = (3, 10)
    else:
        step_cases = [(name, b, 3, r) for name in MODELS for b, r in ((64, 10), (1, 50))]
        stacked_cases = [(name, b, 2, r) for name in ("omniglot_convnet_64", "omniglot_convnet_256",
                                                      "cifar_resnet18_w16") for b, r in ((1, 20), (64, 5))]
        stacked_cases += [("cifar_resnet18", 1, 2, 5), ("mlp_784_256_10", 1, 10, 50), ("mlp_784_256_10", 64, 5, 20)]
        grad_modes = ("autograd", "func")
        denormal_repeats = (5, 50)

    started = time.perf_counter()
    steps = [bench_steps(name, b, w, r, device, gen) for name, b, w, r in step_cases]
    print_table("Train steps (one model)", steps,
                ["model", "batch", "optimizer", "ms_per_step", "img_per_s", "gflop_per_step", "gflop_per_s"],
                {"ms_per_step": ".1f", "img_per_s": ".1f", "gflop_per_step": ".3f", "gflop_per_s": ".1f"})
    stacked = [row for name, b, w, r in stacked_cases
               for row in bench_stacked(name, S, b, w, r, device, gen, grad_modes)]
    print_table(f"S = {S} models: separate loops vs StackedModels (vmap)", stacked,
                ["model", "S", "batch", "grad_mode", "separate_ms", "stacked_ms", "separate_img_per_s", "stacked_img_per_s", "speedup"],
                {"separate_ms": ".1f", "stacked_ms": ".1f", "separate_img_per_s": ".1f",
                 "stacked_img_per_s": ".1f", "speedup": ".2f"})
    denormal = bench_denormal(*denormal_repeats, device) if device.type == "cpu" else None
    for row in denormal or []:
        print(f"\nflush_denormal ({'fused' if row['fused_adam'] else 'unfused'} Adam): "
              f"{row['ms_flush_false']:.2f} ms → {row['ms_flush_true']:.2f} ms per step "
              f"({row['speedup']:.1f}×; {row['case']})")

    result = {
        "meta": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "quick": args.quick,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": str(device),
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "seconds_total": time.perf_counter() - started,
        },
        "steps": steps,
        "stacked": stacked,
        "flush_denormal": denormal,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"\nwrote {args.out} ({result['meta']['seconds_total']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
