"""zaplib.compute: a chapter's runs without a kernel, within a budget, resumable."""
import io

import pytest

from zaplib import compute as zc
from zaplib.experiments import toolkit
from zaplib.chapters import REGISTRY
from zaplib.runner import resolve_params
from zaplib.store import Store

pytestmark = pytest.mark.usefixtures("mnist_available")


@pytest.fixture
def mnist_available():
    from zaplib import data

    try:
        data.resolve("mnist")
    except data.MissingDatasetError as exc:
        pytest.skip(f"needs MNIST: {exc}")


SMOKE = {"seeds": "0,1", "n_train": "300", "n_test": "100", "retrain_steps": "2"}


def test_dry_run_lists_missing_runs_and_computes_nothing(tmp_path):
    out = io.StringIO()
    summary = zc.compute("toolkit", SMOKE, "smoke", dry_run=True, store=Store(tmp_path), out=out)
    assert summary["stopped"] == "dry-run" and summary["remaining"] == 2 and summary["planned"] == 2
    assert "2 missing" in out.getvalue() and "toolkit" in out.getvalue()
    assert Store(tmp_path).configs(toolkit.EXPERIMENT) == []


def test_compute_stores_every_planned_run_and_a_second_call_has_nothing_left(tmp_path):
    store, out = Store(tmp_path), io.StringIO()
    summary = zc.compute("toolkit", SMOKE, "smoke", store=store, out=out)
    assert summary == {"done": 2, "remaining": 0, "planned": 2, "stopped": "complete"}
    params = resolve_params("toolkit", SMOKE, "smoke")
    assert all(store.complete(toolkit.EXPERIMENT, c) for c in toolkit.configs(params))
    assert "2/2 runs" in out.getvalue()
    assert zc.compute("toolkit", SMOKE, "smoke", store=store, out=io.StringIO())["done"] == 0


def test_a_run_whose_estimate_exceeds_the_budget_left_is_not_started_and_resumes_later(tmp_path):
    store = Store(tmp_path)
    params = resolve_params("toolkit", SMOKE, "smoke")
    first, second = toolkit.configs(params)
    # a stored run of the same settings (other seed) that took an hour: the estimate of the other
    store.save(toolkit.EXPERIMENT, first, {"summary": {"x": 1}}, meta={"wall_time_s": 3600.0})
    missing, planned = zc.missing_runs("toolkit", params, store)
    assert planned == 2 and [r.config for r in missing] == [second] and missing[0].estimate_s == 3600.0
    summary = zc.compute("toolkit", SMOKE, "smoke", budget_minutes=1, store=store, out=io.StringIO())
    assert summary["stopped"] == "budget" and summary["done"] == 0 and summary["remaining"] == 1
    assert not store.complete(toolkit.EXPERIMENT, second)
    summary = zc.compute("toolkit", SMOKE, "smoke", budget_minutes=120, store=store, out=io.StringIO())
    assert summary["stopped"] == "complete" and store.complete(toolkit.EXPERIMENT, second)


def test_the_clock_decides_when_a_run_without_estimate_may_start(tmp_path):
    ticks = iter([0.0, 0.0, 61.0, 61.0, 61.0, 61.0, 61.0])  # the budget is spent before the 1st run
    summary = zc.compute("toolkit", SMOKE, "smoke", budget_minutes=1, store=Store(tmp_path),
                         out=io.StringIO(), clock=lambda: next(ticks, 61.0))
    assert summary["stopped"] == "budget" and summary["done"] == 0 and summary["remaining"] == 2


def test_paper_dry_run_takes_two_steps_of_each_kind_at_full_size_and_prices_the_profile():
    out = io.StringIO()
    report = zc.paper_dry_run("toolkit", None, "paper", out=out)
    params = resolve_params("toolkit", profile="paper")
    assert report["failures"] == [] and report["planned"] == len(params["seeds"])
    assert len(report["kinds"]) == 1 and report["kinds"][0]["status"].startswith("ok (2 optimiser steps")
    assert report["image_steps"] == len(params["seeds"]) * toolkit.image_steps(toolkit.configs(params)[0])
    assert report["hours_here"] > 0 and report["hours_gpu"] == pytest.approx(report["hours_here"] / zc.GPU_SPEEDUP)
    assert "image-steps" in out.getvalue()


def test_stop_after_stops_by_time_when_no_optimiser_steps():
    import time as _time

    with pytest.raises(zc.DryRunStop, match="s used"):
        with zc.stop_after(steps=2, seconds=0.2):
            _time.sleep(5)


@pytest.mark.parametrize("name", ["zapping", "negative_pretraining", "lure", "frozen_weights"])
def test_every_paper_chapter_plans_its_runs_and_prices_them(tmp_path, name):
    for profile in ("quick", "paper"):
        params = resolve_params(name, profile=profile)
        missing, planned = zc.missing_runs(name, params, Store(tmp_path))
        assert planned > 0 and len(missing) == planned           # an empty store misses every run
        module = zc.chapter_module(REGISTRY[name])
        costs = [module.image_steps(run.config) for run in missing]
        assert all(c >= 0 for c in costs) and sum(costs) > 0
        assert len(zc.dry_run_kinds(module, missing)) >= 1


def test_a_staged_chapter_prices_its_whole_profile_before_the_first_stage_is_stored(tmp_path):
    """zapping plans stage by stage (gate, pre-training, lr choice, report); its dry run also prices
    every stage at once from full_plan, with placeholder learning rates."""
    out = io.StringIO()
    params = {"gate_seeds": "900", "selection_seed": "5", "precision": "auto"}
    zc.compute("zapping", params, "smoke", dry_run=True, store=Store(tmp_path), out=out)
    text = out.getvalue()
    assert "whole profile" in text and "probe transfer (report)" in text
    from zaplib.experiments import zapping
    whole = zapping.full_plan(resolve_params("zapping", params, "smoke"))
    staged = zapping.planned_runs(resolve_params("zapping", params, "smoke"), Store(tmp_path))
    assert len(staged) == 3 < len(whole)  # only the gate's pre-training is plannable yet
