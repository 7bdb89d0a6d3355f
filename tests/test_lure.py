"""The LURE chapter module (zaplib.experiments.lure): its plan of runs, its claims declaration and
the tidy frames its claims are tested on (synthetic tables shaped like the stored runs')."""
import math

import numpy as np
import pandas as pd
import pytest

from zaplib import metrics, report, runner, stream
from zaplib.experiments import lure
from zaplib import store
from zaplib.store import code_version


@pytest.fixture(scope="module")
def quick_plan():
    return lure.configs(runner.resolve_params("lure", profile="quick"))


def test_chapter_plan_shares_runs_and_orders_by_cost():
    params = runner.resolve_params("lure", profile="smoke")
    plan = lure.configs(params)
    assert set(plan) == set(lure.SECTIONS)
    assert len(plan["main"]) == len(params["methods"]) * len(params["seeds"])
    main_hashes = {store.config_hash(c) for c in plan["main"]}
    # LURE at the default fraction/criterion in the ablations is the Table 1 run itself
    assert store.config_hash(plan["fraction"][0]) in main_hashes
    assert sum(store.config_hash(c) in main_hashes for c in plan["criterion"]) == 2  # snip + bl
    unique = lure.unique_configs(plan)
    assert len(unique) == len({store.config_hash(c) for cs in plan.values() for c in cs})
    costs = [lure.estimated_cost(c) for c in unique]
    assert costs == sorted(costs, reverse=True)
    assert {lure.variant_name(c) for c in plan["main"]} == set(params["methods"])
    assert lure.variant_name(stream.make_config(method="sp", sp_form="fresh", sp_shrink=0.4,
                                                sp_perturb=0.1)) == "sp_fresh"
    assert lure.variant_name(stream.make_config(method="lure", reset_init="model")) == "lure_model_init"


def test_the_stored_experiment_is_declared_by_the_chapter_and_runs_the_stream():
    assert lure.run.experiment == lure.EXPERIMENT == "lure_stream"
    assert code_version(lure.EXPERIMENT) == lure.run.code_version == 2
    assert lure.CHAPTER.experiments == (lure.EXPERIMENT,)
    assert not hasattr(stream, "EXPERIMENT")  # the mechanism module no longer names the chapter's runs


def test_sgd_steps_match_the_papers_schedule():
    paper = lure.sgd_steps(runner.resolve_params("lure", profile="paper"))
    # 50,000 images in 8 mega-batches of 6,250, 5,625 trained on, batch 64, 50 epochs (LURE App. A.2)
    assert paper["first"] == math.ceil(5625 / 64) * 50 == 4400
    assert paper["last"] == math.ceil(8 * 5625 / 64) * 50 == 35200
    assert paper["images"] == 5625 * 50 * sum(range(1, 9))


def test_compare_pairs_by_seed():
    frame = pd.DataFrame({"variant": ["bl"] * 3 + ["lure"] * 3, "seed": [0, 1, 2] * 2,
                          "acc": [0.5, 0.6, 0.7, 0.55, 0.66, 0.74]})
    out = lure.compare(frame, "acc").set_index("variant")
    assert out.loc["lure", "diff"] == pytest.approx(0.05)
    assert np.isnan(out.loc["bl", "diff"])
    assert out.loc["lure", "diff_lo"] > 0  # paired differences 0.05, 0.06, 0.04: clearly positive
    assert out.loc["lure", "mean"] == pytest.approx(0.65)


def test_claims_declaration_is_valid():
    ids = [c.id for c in lure.CLAIMS]
    assert len(ids) == len(set(ids))
    assert 1 <= sum(c.primary for c in lure.CLAIMS) <= report.MAX_PRIMARY
    primary = {c.id for c in lure.CLAIMS if c.primary}
    assert primary == {"lure_vs_bl", "lure_vs_sp", "lure_vs_llf", "lure_cer", "lure_no_replay"}
    for c in lure.CLAIMS:
        # every method's runs of one seed share the stream and the initialisation: paired by seed
        assert c.unit == "seed" and c.paired and c.kind == "difference"
        assert c.direction in (-1, +1) and c.paper
    assert set(lure.MAIN_CLAIMS) <= set(ids)


def test_every_claims_conditions_are_runs_the_paper_profile_plans():
    """Each claim's two arms are a variant / fraction / criterion some config of the chapter makes."""
    plan = lure.configs(runner.resolve_params("lure", profile="paper"))
    made = {"variant": {lure.variant_name(c) for cs in plan.values() for c in cs},
            "reset_fraction": {c["reset_fraction"] for c in plan["fraction"]},
            "criterion": {c["criterion"] for c in plan["criterion"]}}
    for c in lure.CLAIMS:
        assert {c.a, c.b} <= made[c.condition], c.id
    assert {c["replay"] for c in plan["replay"]} >= {"none", "buffered"}
    assert {c["label_noise"] for c in plan["noise"]} == {0.2, 0.4}


def _synthetic_reader(plan, lure_gain=0.02, train_acc=0.95):
    """``read(section, table)`` over fake stored tables of ``plan``: per-seed accuracies with LURE
    ``lure_gain`` above every other arm, and BL's training accuracy ``train_acc``."""
    def summary(config):
        gain = lure_gain * (config["method"] == "lure")
        acc = 0.6 + 0.01 * config["seed"] + gain + 0.001 * (config["seed"] % 2) * gain
        return {"test_acc": acc, "cer": int(1000 * (1 - acc)), "gen_gap": 0.1 - gain, "ece": 0.05 - gain / 2}

    def read(section, table="summary"):
        rows = []
        for c in plan[section]:
            base = {**c, "corruptions": tuple(c["corruptions"]), "pgd_eps": tuple(c["pgd_eps"]),
                    "weight_noise": tuple(c["weight_noise"]), "variant": lure.variant_name(c)}
            s = summary(c)
            if table == "summary":
                rows.append({**base, **s})
            elif table == "megabatches":
                rows += [{**base, "megabatch": m, "train_acc": train_acc if m == c["n_megabatches"] else 0.1}
                         for m in range(1, c["n_megabatches"] + 1)]
            elif table == "corruptions":
                rows += [{**base, "corruption": name, "severity": sev, "acc": s["test_acc"] - 0.1 * sev}
                         for name in ("clean", "jpeg") for sev in (1, 5)]
            elif table == "pgd":
                rows += [{**base, "eps_255": e, "acc": s["test_acc"] - 0.1 * e} for e in (1.0, 4.0)]
            elif table == "weight_noise":
                rows += [{**base, "sigma": sg, "repeat": 0, "split": split, "acc": s["test_acc"] - sg * (0.5 + 5 * s["ece"])}
                         for sg in (0.0, 0.04) for split in ("train", "test")]
        return pd.DataFrame(rows)

    return read


def test_claim_frames_give_every_claim_its_metric_and_arms(quick_plan):
    read = _synthetic_reader(quick_plan)
    frames = lure.claim_frames(read)
    assert set(frames) == {c.id for c in lure.CLAIMS}
    regime = lure.preconditions(read("main", "megabatches"))
    assert regime[0].holds and regime[0].measured == pytest.approx(0.95)
    results = {c.id: report.evaluate(c, frames[c.id], regime) for c in lure.CLAIMS}
    quick = runner.resolve_params("lure", profile="quick")
    not_run = ({"lure_vs_sp_paper", "warm_start_penalty", "bl_vs_bl_code", "lure_vs_bl_code"}
               | {f"fraction_20_vs_{p}" for p in (10, 30)})  # paper (and long) profile only
    assert set(quick["methods"]).isdisjoint({"sp_paper", "scratch", "bl_code"})
    for cid, result in results.items():
        claim = result.claim
        if cid in not_run:
            assert result.stage == "not testable" and "not run" in result.reason, cid
            continue
        frame = frames[cid]
        assert {claim.unit, claim.condition, claim.metric} <= set(frame.columns), cid
        assert result.stage == "tested", (cid, result.reason)
        assert result.n_a == result.n_b == 3, cid  # three seeds, paired
    # LURE is better by construction in the synthetic runs: every LURE-vs-X claim goes its way
    table = report.results(report.table(list(results.values())))
    for cid in ("lure_vs_bl", "lure_cer", "lure_no_replay", "lure_corruptions", "lure_pgd", "lure_flatness"):
        assert np.sign(table[cid].estimate) == table[cid].claim.direction, cid


def test_an_underfitted_baseline_makes_every_claim_not_testable(quick_plan):
    read = _synthetic_reader(quick_plan, train_acc=0.3)
    regime = lure.preconditions(read("main", "megabatches"))
    assert not regime[0].holds and regime[0].measured == pytest.approx(0.3)
    frames = lure.claim_frames(read)
    table = report.table([report.evaluate(c, frames[c.id], regime) for c in lure.CLAIMS])
    assert set(table["verdict"]) == {"not testable"}
    assert table["reason"].str.contains("measured 0.3").all()
    # no BL run at all: NaN measured, which fails
    assert not lure.preconditions(read("main", "megabatches").query("method != 'bl'"))[0].holds


def test_results_table_gives_mean_and_t_half_width_over_seeds():
    frame = pd.DataFrame({"variant": ["bl"] * 3 + ["lure"], "seed": [0, 1, 2, 0],
                          "test_acc": [0.5, 0.6, 0.7, 0.65], "cer": [10, 20, 30, 5],
                          "gen_gap": [0.1, 0.1, 0.1, 0.2], "ece": [0.01, 0.02, 0.03, 0.04]})
    table = lure.results_table(frame, ["variant"], labels=lure.VARIANT_LABELS).set_index("variant")
    half = 100 * metrics.mean_ci([0.5, 0.6, 0.7]).half_width
    assert table.loc["BL (warm start)", "test accuracy (%)"] == f"60.0 ± {half:.1f}"
    assert table.loc["LURE (SNIP, 20 %)", "test accuracy (%)"] == "65.0"  # one seed: no interval
    assert table.loc["BL (warm start)", "CER (test errors)"].startswith("20 ± ")
    assert list(table["seeds"]) == [3, 1]


def test_scale_sentence_names_what_the_profile_scales_down():
    quick = runner.resolve_params("lure", profile="quick")
    paper = runner.resolve_params("lure", profile="paper")
    text = lure.scale_sentence(quick, paper)
    assert text.startswith("This page shows the quick profile; scaled down")
    assert "n megabatches 3 (8)" in text and "n pool 900 (all)" in text and "epochs 8 (50)" in text
    assert lure.scale_sentence(paper, paper) == "This page shows the paper profile."
