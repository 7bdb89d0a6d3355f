"""Shared test setup: tests run on the CPU with one torch thread (they may run in parallel)."""
import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def gen():
    """A seeded CPU generator, so every test draw is reproducible."""
    return torch.Generator().manual_seed(0)
