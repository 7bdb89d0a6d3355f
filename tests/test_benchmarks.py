"""The benchmark scripts import (they are not run here: speed is measured in benchmarks/, not in
timed tests). A renamed library module must not leave a benchmark broken until someone runs it."""
import importlib.util
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").glob("bench_*.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_script_imports(path):
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == "learn2learn":
            pytest.skip("learn2learn is optional (make l2l)")
        raise
    assert callable(getattr(module, "main", None))
