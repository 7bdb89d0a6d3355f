"""Seed derivation: one root seed and a path of keys name one independent, reproducible stream."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zaplib import samplers


def _draw(gen: torch.Generator, n: int = 8) -> torch.Tensor:
    return torch.randint(0, 2**31 - 1, (n,), generator=gen)


def test_same_seed_and_keys_give_the_same_stream():
    assert torch.equal(_draw(samplers.generator(3, "retrain", 2)), _draw(samplers.generator(3, "retrain", 2)))
    assert samplers.seed_int(3, "retrain", 2) == samplers.seed_int(3, "retrain", 2)


def test_different_keys_seeds_or_key_order_give_different_streams():
    base = samplers.seed_int(3, "retrain", 2)
    others = [samplers.seed_int(3, "retrain", 3), samplers.seed_int(3, "train", 2),
              samplers.seed_int(4, "retrain", 2), samplers.seed_int(3, 2, "retrain"),
              samplers.seed_int(3, "retrain"), samplers.seed_int(3)]
    assert base not in others and len(set(others)) == len(others)
    assert not torch.equal(_draw(samplers.generator(3, "a", "b")), _draw(samplers.generator(3, "b", "a")))


def test_seed_int_fits_torch_manual_seed():
    value = samplers.seed_int(2**40, "x" * 100, 10**12)
    assert 0 <= value < 2**63
    torch.Generator().manual_seed(value)


def test_bad_keys_are_refused():
    with pytest.raises(TypeError):
        samplers.seed_int(0, -1)
    with pytest.raises(TypeError):
        samplers.seed_int(0, True)  # would collide with the key 1
    with pytest.raises(TypeError):
        samplers.seed_int(0, 1.5)


def test_string_keys_are_stable_across_processes():
    # A hard-coded value is deliberate here: what is tested is that the derivation never changes
    # between processes or versions (no salted hash()); it was computed once with this code.
    assert samplers.seed_int(3, "retrain", "zap_all") == 2930420121527925546
    code = "from zaplib import samplers; print(samplers.seed_int(3, 'retrain', 'zap_all'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=Path(__file__).parents[1])
    assert int(out.stdout) == 2930420121527925546
