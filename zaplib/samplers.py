"""Samplers: which images, in what order.

Index tensors only (never images): the loops gather ``x[idx]`` from device-resident tensors, so
there is no per-item DataLoader on the hot path. Every random order comes from a seeded
``torch.Generator``. Chapters extend this module with their own samplers (ASB episodes, sequential
trajectories, mega-batch streams, task paths).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch


def permutation(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A random permutation of ``range(n)`` drawn from ``generator``, returned on ``device``.

    The draw happens on the generator's own device (a CPU generator can serve CUDA data), so one
    seed gives the same order whatever device the data live on.
    """
    draw_device = generator.device if generator is not None else None
    order = torch.randperm(n, generator=generator, device=draw_device)
    return order if device is None else order.to(device)


def batches(
    n: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    device=None,
    shuffle: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield index tensors that cover ``range(n)`` once, in a seeded random order (one epoch).

    ``drop_last`` drops a final batch smaller than ``batch_size``. ``shuffle=False`` gives the
    indices in order (evaluation). The whole permutation is drawn before the first batch, so the
    generator advances by exactly one ``randperm`` per epoch whatever happens inside the loop.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = permutation(n, generator, device) if shuffle else torch.arange(n, device=device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches :func:`batches` yields for ``n`` items."""
    return n // batch_size if drop_last else -(-n // batch_size)


def class_indices(y: torch.Tensor) -> dict[int, torch.Tensor]:
    """Map each class label present in ``y`` to the (ascending) indices of its examples.

    One stable sort instead of one boolean scan per class, which matters for 964 Omniglot classes.
    """
    y = torch.as_tensor(y)
    order = torch.argsort(y, stable=True)
    labels, counts = torch.unique_consecutive(y[order], return_counts=True)
    return {int(c): idx for c, idx in zip(labels.tolist(), torch.split(order, counts.tolist()))}


__all__ = ["permutation", "batches", "num_batches", "class_indices"]
