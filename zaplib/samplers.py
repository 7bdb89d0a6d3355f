"""Samplers: which images, in what order.

Index tensors only (never images): the loops gather ``x[idx]`` from device-resident tensors, so
there is no per-item DataLoader on the hot path. Every random order comes from a seeded
``torch.Generator``, and every generator derives from a run's seed through :func:`generator` (one
seed derivation for the whole library, instead of hand-made formulas such as ``1000 * seed + k``).
Chapters extend this module with their own samplers (ASB episodes, sequential
trajectories, mega-batch streams, task paths).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import torch


def _key_entropy(key: int | str) -> int:
    """A non-negative int standing for one key of a seed path.

    Strings are hashed with SHA-256 (stable across processes and Python versions, unlike the salted
    built-in ``hash``); non-negative ints are used as they are. Booleans and negative ints are
    refused so that two different keys can never silently collide (``True == 1``)."""
    if isinstance(key, str):
        return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and int(key) >= 0:
        return int(key)
    raise TypeError(f"seed keys must be non-negative ints or strings, got {key!r}")


def seed_int(seed: int, *keys: int | str) -> int:
    """A 63-bit int seed for the stream named by ``keys`` under the root ``seed``.

    SeedSequence-style derivation (``numpy.random.SeedSequence(seed, spawn_key=keys)``, O'Neill's
    hash-based seeding): the same (seed, keys) always give the same int; different keys, or the
    same keys in another order, give unrelated ints. Use it where an API wants an int (e.g.
    ``torch.manual_seed`` before a model constructor that draws from the global RNG).
    """
    root = _key_entropy(seed)
    spawn_key = tuple(_key_entropy(k) for k in keys)
    state = np.random.SeedSequence(root, spawn_key=spawn_key).generate_state(2, np.uint32)
    return int((int(state[0]) | (int(state[1]) << 32)) & ((1 << 63) - 1))


def generator(seed: int, *keys: int | str, device=None) -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`seed_int` ``(seed, *keys)``.

    The one way the library turns a run's seed into independent random streams, e.g.
    ``generator(seed, "retrain", op)`` or ``generator(seed, "batches", model_index)``.
    ``device`` is the generator's device (CPU by default).
    """
    gen = torch.Generator(device=device) if device is not None else torch.Generator()
    return gen.manual_seed(seed_int(seed, *keys))


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


__all__ = ["seed_int", "generator", "permutation", "batches", "num_batches", "class_indices"]
