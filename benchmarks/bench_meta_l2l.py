"""One meta-ASB step, zaplib against learn2learn (issue 13 §5).

    python benchmarks/bench_meta_l2l.py                  # 64 and 256 channels, 1 thread
    python benchmarks/bench_meta_l2l.py --repeats 3 --channels 64

A meta-ASB step (Frati et al. 2023, Alg. 1 line 15) at the official settings: 20 single-image SGD
inner steps (lr 0.1) on all parameters of the Omniglot convnet (1000-way head), then the outer
cross-entropy on the 20 inner images + 64 remember images, differentiated through the whole inner
loop with respect to the starting weights (second order), then an Adam step on those weights.

- zaplib: :func:`zaplib.pretraining.meta_gradient` (``torch.func.functional_call`` on a dict of tensors,
  ``torch.autograd.grad(create_graph=True)``), gradients assigned to ``.grad``, Adam step.
- learn2learn 0.2.0: ``MAML(model, lr, first_order=False)``, ``clone()``, ``adapt()`` per inner
  image (it re-routes module attributes to the updated tensors), ``backward()`` of the outer loss,
  Adam step.

Both start from the same weights and see the same random images (float32, CPU). The two are timed
in alternation (so a load change on the machine hits both alike), ``--warmup`` untimed steps
first, then the median over ``--repeats``; ratio = zaplib / learn2learn (goal ≤ 1.0).
Writes ``benchmarks/results/bench_meta_l2l.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zaplib import pretraining  # noqa: E402
from zaplib.models import OmniglotConvNet  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # gym (imported by learn2learn) warns that it is unmaintained
    import learn2learn  # noqa: E402

K_INNER, N_REMEMBER, N_CLASSES = 20, 64, 1000
INNER_LR, OUTER_LR = 0.1, 1e-3


def episode(seed: int = 0):
    """Random images of Omniglot's shape: K inner images of one class, the outer batch = those
    plus 64 remember images of random classes."""
    g = torch.Generator().manual_seed(seed)
    inner_x = torch.rand(K_INNER, 1, 28, 28, generator=g)
    inner_y = torch.full((K_INNER,), 7)
    remember_x = torch.rand(N_REMEMBER, 1, 28, 28, generator=g)
    remember_y = torch.randint(N_CLASSES, (N_REMEMBER,), generator=g)
    return inner_x, inner_y, torch.cat([inner_x, remember_x]), torch.cat([inner_y, remember_y])


def make_zaplib_step(model, data):
    opt = torch.optim.Adam(model.parameters(), lr=OUTER_LR)

    def step():
        grads, _ = pretraining.meta_gradient(model, *data, INNER_LR)
        opt.zero_grad(set_to_none=True)
        for name, p in model.named_parameters():
            p.grad = grads[name]
        opt.step()
    return step


def make_l2l_step(model, data):
    maml = learn2learn.algorithms.MAML(model, lr=INNER_LR, first_order=False)
    opt = torch.optim.Adam(maml.parameters(), lr=OUTER_LR)
    inner_x, inner_y, outer_x, outer_y = data

    def step():
        learner = maml.clone()
        for i in range(len(inner_x)):
            learner.adapt(F.cross_entropy(learner(inner_x[i : i + 1]), inner_y[i : i + 1]))
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(learner(outer_x), outer_y).backward()
        opt.step()
    return step


def time_pair(steps: dict, warmup: int, repeats: int) -> dict:
    """Median milliseconds per call of each step, timed in alternation."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            tic = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - tic) * 1e3)
    return {name: {"median_ms": statistics.median(t), "min_ms": min(t), "all_ms": t}
            for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--note", default="", help="e.g. whether the machine was loaded")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_meta_l2l.json")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as zaplib.pretraining.pretrain_run does
    data = episode()
    rows = []
    for channels in args.channels:
        torch.manual_seed(0)
        zaplib_model = OmniglotConvNet(channels=channels, num_classes=N_CLASSES)
        l2l_model = OmniglotConvNet(channels=channels, num_classes=N_CLASSES)
        l2l_model.load_state_dict(zaplib_model.state_dict())
        result = time_pair({"zaplib": make_zaplib_step(zaplib_model, data),
                            "learn2learn": make_l2l_step(l2l_model, data)},
                           args.warmup, args.repeats)
        ratio = result["zaplib"]["median_ms"] / result["learn2learn"]["median_ms"]
        rows.append({"channels": channels, "zaplib": result["zaplib"],
                     "learn2learn": result["learn2learn"], "ratio_zaplib_over_l2l": ratio})
        print(f"{channels:4d} channels: zaplib {result['zaplib']['median_ms']:8.1f} ms, "
              f"learn2learn {result['learn2learn']['median_ms']:8.1f} ms, ratio {ratio:.2f}",
              flush=True)

    report = {
        "benchmark": "one meta-ASB step (20 single-image inner steps, outer batch 84, second order, Adam)",
        "settings": {"K_inner": K_INNER, "remember": N_REMEMBER, "classes": N_CLASSES,
                     "inner_lr": INNER_LR, "outer_lr": OUTER_LR, "dtype": "float32",
                     "warmup": args.warmup, "repeats": args.repeats},
        "results": rows,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "learn2learn": learn2learn.__version__,
        "python": platform.python_version(),
        "machine": {"processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "note": args.note,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
