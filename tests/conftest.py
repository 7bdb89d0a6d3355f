"""Shared test setup: tests run on the CPU with one torch thread (they may run in parallel)."""
import os
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# The shared offline datasets sit next to the repo (../shared/data); use them unless told otherwise.
_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if _SHARED_DATA.is_dir():
    os.environ.setdefault("ZAPLIB_DATA", str(_SHARED_DATA))

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def gen():
    """A seeded CPU generator, so every test draw is reproducible."""
    return torch.Generator().manual_seed(0)
