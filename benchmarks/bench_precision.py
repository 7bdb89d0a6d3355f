"""fp32 vs bf16 autocast: train-step throughput of every chapter's models (issue 13 §3).

    python benchmarks/bench_precision.py               # every model, 1 thread (several minutes)
    python benchmarks/bench_precision.py --only lure   # the models of one chapter

Writes ``benchmarks/results/bench_precision.json`` (``--out``).

Method: synthetic inputs of the chapter's shape and labels already on the device; one train step =
zero_grad + forward + cross-entropy + backward + optimiser step (the chapter's optimiser through
``zaplib.train.make_optimizer``). bf16 wraps forward and loss in ``torch.autocast(device_type,
dtype=torch.bfloat16)`` — weights, gradients and the optimiser stay fp32, as the library's
``precision="bf16"`` does. The two precisions are timed in alternation (``rounds`` rounds of
``repeats`` steps each after ``warmup`` steps) so that a load change on a shared machine hits both
alike; the table gives the median step of each and their ratio. Speed only: whether bf16 leaves a
chapter's key metric unchanged is a separate, statistical question (an equivalence test on paired
seeds at the chapter's ``long`` model), answered on the benchmark page before a profile uses it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from zaplib import models, train

#: (chapter, label, model config, input shape (C, H, W), batch, optimiser) — the chapters' models at
#: their quick and long/paper sizes
CASES = [
    ("toolkit", "SmallCNN w8, MNIST", {"model": "small_cnn", "width": 8}, (1, 28, 28), 128, "adam"),
    ("zapping", "Omniglot convnet 64 ch", {"model": "omniglot_convnet", "channels": 64,
                                           "num_classes": 1000}, (1, 28, 28), 64, "adam"),
    ("zapping", "Omniglot convnet 256 ch", {"model": "omniglot_convnet", "channels": 256,
                                            "num_classes": 1000}, (1, 28, 28), 64, "adam"),
    ("lure", "ResNet-18 w8, 32 px", {"model": "resnet18", "width": 8}, (3, 32, 32), 64, "sgd"),
    ("lure", "ResNet-18 w64, 32 px", {"model": "resnet18", "width": 64}, (3, 32, 32), 64, "sgd"),
    ("negative_pretraining", "ResNet-10 w4, 16 px", {"model": "resnet10", "width": 4}, (3, 16, 16), 128, "sgd"),
    ("negative_pretraining", "ResNet-10 w16, 32 px", {"model": "resnet10", "width": 16}, (3, 32, 32), 128, "sgd"),
    ("frozen_weights", "MLP 2×128, MNIST", {"model": "mlp", "width": 128, "depth": 2}, (1, 28, 28), 128, "sgd"),
    ("frozen_weights", "SmallCNN w32, MNIST", {"model": "small_cnn", "width": 32}, (1, 28, 28), 128, "sgd"),
]


def step_time(model, optimizer, x, y, precision: str, device: torch.device, n: int) -> float:
    """Median seconds of ``n`` train steps at ``precision``."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(case, device, warmup: int, repeats: int, rounds: int) -> dict:
    chapter, label, config, shape, batch, optimizer_name = case
    torch.manual_seed(0)
    model = models.build({**config, **({"in_channels": shape[0]} if "resnet" in config["model"] else {})})
    model.to(device).train()
    optimizer = train.make_optimizer(model.parameters(), optimizer_name, lr=1e-3 if optimizer_name == "adam" else 0.01,
                                     momentum=0.9 if optimizer_name == "sgd" else 0.0)
    x = torch.rand(batch, *shape, device=device)
    y = torch.randint(0, model.head.out_features, (batch,), device=device)
    for precision in ("fp32", "bf16"):
        step_time(model, optimizer, x, y, precision, device, warmup)
    medians = {"fp32": [], "bf16": []}
    for _ in range(rounds):
        for precision in ("fp32", "bf16"):
            medians[precision].append(step_time(model, optimizer, x, y, precision, device, repeats))
    fp32, bf16 = statistics.median(medians["fp32"]), statistics.median(medians["bf16"])
    return {"chapter": chapter, "model": label, "batch": batch, "input": list(shape),
            "fp32_ms": 1e3 * fp32, "bf16_ms": 1e3 * bf16, "fp32_img_s": batch / fp32,
            "bf16_img_s": batch / bf16, "speedup": fp32 / bf16}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="one chapter's models")
    parser.add_argument("--note", default="", help="recorded with the results (e.g. 'machine loaded')")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_precision.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for case in CASES:
        if args.only and case[0] != args.only:
            continue
        row = bench(case, device, args.warmup, args.repeats, args.rounds)
        rows.append(row)
        print(f"{row['chapter']:21s} {row['model']:26s} fp32 {row['fp32_ms']:8.1f} ms  bf16 {row['bf16_ms']:8.1f} ms"
              f"  {row['fp32_img_s']:8.0f} → {row['bf16_img_s']:8.0f} img/s  ×{row['speedup']:.2f}", flush=True)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
              "device": str(device), "threads": args.threads, "machine": platform.machine(),
              "cpu_count": os.cpu_count(), "note": args.note, "warmup": args.warmup, "repeats": args.repeats,
              "rounds": args.rounds, "cases": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
