"""zaplib: the small library behind *The Reset Book*.

Rooms (one module each): ``data`` (npz datasets as device tensors, batched transforms),
``models`` (Omniglot convnet, ANML, CIFAR ResNets/VGG, tiny nets), ``resets`` (every reset op of the
four papers), ``samplers`` (which images in what order), ``train`` (loops, multi-seed via torch.func),
``metrics`` (accuracy, CER, ECE, sensitivity, statistics), ``plots`` (shared figures), ``store``
(results store keyed by config and code version, sweeps, executors) and ``runner`` (parameter
validation, papermill execution, notebook fingerprints, the book build; no library module imports it).

Importing ``zaplib`` is cheap: submodules are imported on first attribute access.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("data", "models", "resets", "samplers", "train", "metrics", "probes", "report", "plots", "store",
               "runner")


def get_device(device=None):
    """Return ``device`` as a ``torch.device``; by default CUDA when present, else the CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'zaplib' has no attribute {name!r}")


__all__ = ["__version__", "get_device", *_SUBMODULES]
