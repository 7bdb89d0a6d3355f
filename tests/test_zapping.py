"""The chapter module of "Reset it and forget it": its claims declaration, the frames that test the
claims (the unit is the pre-trained model, crossed with transfer seeds), the preconditions, and the
config builders and comparisons it holds."""
import itertools

import numpy as np
import pandas as pd
import pytest

from zaplib import report
from zaplib.experiments import zapping
from zaplib.runner import resolve_params
from zaplib.store import code_version


def _curves(conditions, pretrain_seeds=(0, 1, 2), seeds=(0, 1, 2, 3), effect=None):
    """Synthetic transfer curves: two records per run (the last one is the final accuracy).
    A condition is (method, zap, fan_in) or (method, zap, fan_in, at) for a checkpoint."""
    effect = effect or {}
    rows = []
    for cond, p, s in itertools.product(conditions, pretrain_seeds, seeds):
        method, zap, fan_in = cond[:3]
        at = cond[3] if len(cond) > 3 else 0
        final = 0.3 + effect.get(cond, 0.0) + 0.01 * p + 0.001 * s
        for classes, acc in ((5, 0.9), (10, final)):
            rows.append({"method": method, "zap": zap, "fan_in": fan_in, "pretrain_seed": p, "seed": s,
                         "at": at, "lr": 1e-3, "classes": classes, "train_acc": 1.0, "test_acc": acc})
    return pd.DataFrame(rows)


def _pretrained(conditions, pretrain_seeds=(0, 1, 2)):
    finals = sorted({c[:3] for c in conditions})
    return pd.DataFrame([{"method": m, "zap": z, "fan_in": f, "seed": p,
                          "condition": zapping.label(m, z, f), "pretrain_val_acc": 0.1 + 0.02 * p + 0.1 * z}
                         for (m, z, f), p in itertools.product(finals, pretrain_seeds)])


def _all_conditions(params):
    """(method, zap, fan_in, at) of every model the probe transfers (checkpoints included)."""
    specs = zapping.specs_of(zapping.pretrain_configs(params) + zapping.bug_configs(params))
    return sorted({(s["pretrain"]["method"], s["pretrain"]["zap"], s["pretrain"].get("zap_fan_in", "row"),
                    s.get("at", zapping.units_of(s["pretrain"]))) for s in specs})


def _lstsq(conditions, pretrain_seeds=(0, 1, 2), seeds=(0, 1)):
    return pd.DataFrame([{"method": m, "zap": z, "fan_in": f, "at": a, "pretrain_seed": p, "seed": s,
                          "classes": 10, "lstsq_train_acc": 1.0, "lstsq_test_acc": 0.2 + 0.1 * z}
                         for (m, z, f, a), p, s in itertools.product(conditions, pretrain_seeds, seeds)])


# ----------------------------------------------------------------------------- the declaration
def test_claims_are_a_valid_family():
    ids = [c.id for c in zapping.CLAIMS]
    assert len(ids) == len(set(ids))
    primary = [c.id for c in zapping.CLAIMS if c.primary]
    assert primary == ["zap_iid", "zap_iid_beats_one_epoch", "zap_asb", "zap_meta_asb", "iid_zap_vs_meta_asb"]
    assert len(primary) <= report.MAX_PRIMARY
    for claim in zapping.CLAIMS:
        for need in claim.requires:
            assert need in ids
    # judging a family of untested results must not raise (ids, primaries, requirements are consistent)
    report.table([report.evaluate(c, None) for c in zapping.CLAIMS])


def test_claims_follow_the_design():
    # the pre-trained model is the unit, crossed with the transfer seeds; methods are different models,
    # except a model and its own checkpoint (paired by seed) and the per-seed zap gain
    for claim in zapping.CLAIMS:
        if claim.id == "zap_asb_gain_grows":  # its frame holds one gain per seed already
            assert claim.paired and claim.shared is None
            continue
        assert claim.shared == "seed"
        assert claim.paired == (claim.id == "zap_iid_beats_one_epoch")
        assert claim.unit == ("model" if claim.kind == "correlation" else "pretrain_seed")
    no_effect = {c.id: c.margin for c in zapping.CLAIMS if c.no_effect}
    assert no_effect == {"meta_asb_matches_anml": 0.03, "pretrain_acc_does_not_predict_transfer": 0.5}


def test_every_claim_names_conditions_and_metrics_the_chapter_produces():
    # paper runs every fine-tuning method; the ASB checkpoint gives the dose-response its two lengths
    params = resolve_params("zapping", {"asb_checkpoints": [3000]}, profile="paper")
    conditions = _all_conditions(params)
    assert ("iid", False, "row", 1) in conditions and ("asb", True, "row", 3000) in conditions
    finetuned = [c for c in conditions if c[0] in params["finetune_methods"] and c[2] == "row"
                 and c[3] == zapping.full_units(params, c[0])]
    frames = zapping.claim_frames(_pretrained(conditions), _curves(conditions), _curves(finetuned),
                                  _curves(finetuned), params=params, lstsq=_lstsq(conditions))
    assert set(frames) == {c.id for c in zapping.CLAIMS}
    for claim in zapping.CLAIMS:
        frame = frames[claim.id]
        if claim.kind == "correlation":
            assert {claim.unit, claim.shared, claim.x, claim.y} <= set(frame.columns)
            assert not frame.condition.str.contains("episodes|epoch\\)").any()  # no checkpoints
            continue
        assert {claim.a, claim.b} <= set(frame[claim.condition])
        assert {claim.unit, claim.metric} <= set(frame.columns)
        if claim.shared:
            assert claim.shared in frame.columns


def test_a_checkpoint_is_its_own_condition_and_pairs_with_its_run():
    params = resolve_params("zapping", profile="quick")
    conditions = [("iid", False, "row", 1), ("iid", False, "row", 4), ("iid", True, "row", 4)]
    curves = _curves(conditions, effect={("iid", True, "row", 4): 0.05, ("iid", False, "row", 1): 0.02})
    frames = zapping.claim_frames(_pretrained(conditions), curves, params=params)
    frame = frames["zap_iid_beats_one_epoch"]
    assert set(frame.condition) == {"i.i.d.", "i.i.d. (1 epoch)", "i.i.d.+zap"}
    result = report.evaluate(next(c for c in zapping.CLAIMS if c.id == "zap_iid_beats_one_epoch"), frame)
    assert result.test.startswith("paired")
    assert result.estimate == pytest.approx(0.03)
    # without params a checkpoint would be mistaken for the final model: zap_iid must not mix them
    assert frames["zap_iid"].query("condition == 'i.i.d.'").shape[0] == 3 * 4


def test_the_dose_response_frame_holds_one_gain_per_seed_and_length():
    params = resolve_params("zapping", {"asb_checkpoints": [150, 300]}, profile="quick")
    conditions = [("asb", z, "row", a) for z in (False, True) for a in (150, 300, 600)]
    effect = {("asb", True, "row", 150): 0.01, ("asb", True, "row", 600): 0.06}
    frame = zapping.claim_frames(_pretrained(conditions), _curves(conditions, effect=effect),
                                 params=params)["zap_asb_gain_grows"]
    assert sorted(frame.condition.unique()) == ["full run", "shortest checkpoint"]
    assert frame.groupby("condition").zap_gain.mean().to_dict() == pytest.approx(
        {"full run": 0.06, "shortest checkpoint": 0.01})


def test_a_claim_counts_models_not_trajectories():
    conditions = [("iid", False, "row"), ("iid", True, "row")]
    frames = zapping.claim_frames(_pretrained(conditions), _curves(conditions, effect={("iid", True, "row"): 0.1}))
    result = report.evaluate(zapping.CLAIMS[0], frames["zap_iid"])
    assert (result.n_a, result.n_b) == (3, 3)  # 3 pre-trained models per arm, not 12 runs
    assert result.estimate == pytest.approx(0.1)
    assert result.test.startswith("Welch t")


def test_the_correlation_leaves_out_the_untrained_network_and_the_bug_variant():
    params = resolve_params("zapping", profile="smoke")
    conditions = _all_conditions(params)
    frame = zapping.claim_frames(_pretrained(conditions), _curves(conditions))["pretrain_acc_does_not_predict_transfer"]
    assert set(frame.condition) == {"i.i.d.", "i.i.d.+zap", "ASB", "ASB+zap", "meta-ASB", "meta-ASB+zap", "ANML"}
    # one pre-training accuracy per model, beside each of its transfer runs
    assert frame.groupby("model").pretrain_val_acc.nunique().eq(1).all()
    assert frame.model.nunique() == 7 * 3


def test_unrun_protocols_make_their_claims_not_testable():
    conditions = [("iid", False, "row"), ("iid", True, "row")]
    frames = zapping.claim_frames(_pretrained(conditions), _curves(conditions))
    assert frames["zap_unfrozen_iid"] is None
    claim = next(c for c in zapping.CLAIMS if c.id == "zap_unfrozen_iid")
    assert report.evaluate(claim, frames["zap_unfrozen_iid"]).stage == "not testable"


# ----------------------------------------------------------------------------- preconditions
def test_preconditions_gate_the_episodic_claims_below_one_visit_per_class():
    quick, paper = (resolve_params("zapping", profile=p) for p in ("quick", "paper"))
    checks = zapping.preconditions(quick)
    assert set(checks) == {c.id for c in zapping.CLAIMS}
    assert not any(p.holds for p in checks["zap_asb"])  # 600 episodes for 964 classes
    assert checks["zap_asb"][0].measured == pytest.approx(600 / 964)
    assert all(p.holds for p in checks["zap_iid"])
    assert checks["pretrain_acc_does_not_predict_transfer"] == []
    assert all(p.holds for ps in zapping.preconditions(paper).values() for p in ps)


def test_the_relearning_precondition_reads_the_end_of_each_zapped_epoch():
    # epoch 1 unzapped; epoch 2 zapped and relearned to 2.0; epoch 3 zapped, stuck at 6.9
    steps = pd.DataFrame({"epoch": np.repeat([1, 2, 3], 20), "step": np.arange(1, 61),
                          "loss": np.r_[np.full(20, 5.0), np.linspace(7, 2.0, 10), np.full(10, 2.0),
                                        np.full(20, 6.9)],
                          "zapped": np.repeat([False, True, True], 20)})
    per_epoch = zapping.relearn_losses(steps)
    assert per_epoch.to_dict() == pytest.approx({2: 2.0, 3: 6.9})

    class Run(dict):
        config = {"method": "iid", "zap": True}
    loss = zapping.relearn_loss([Run(step_losses=steps)])
    assert loss == pytest.approx(6.9)  # the worst zapped epoch
    checks = zapping.preconditions(resolve_params("zapping", profile="quick"), pretrained_runs=[Run(step_losses=steps)])
    relearn = [p for p in checks["zap_iid"] if "whole-head zap" in p.name]
    assert len(relearn) == 1 and not relearn[0].holds
    assert checks["zap_asb"] == [p for p in checks["zap_asb"] if "zap" not in p.name]


def test_the_asb_precondition_compares_least_squares_with_random_features():
    params = resolve_params("zapping", profile="quick")
    rows = _lstsq([("asb", False, "row", 600), ("asb", True, "row", 600), ("untrained", False, "row", 0)])
    rows.loc[rows.method == "untrained", "lstsq_test_acc"] = 0.19
    margin = zapping.asb_lstsq_margin(rows, params)
    assert margin == pytest.approx(0.25 - 0.19)
    checks = zapping.preconditions(params, lstsq=rows)
    assert [p.holds for p in checks["zap_asb"] if "least-squares" in p.name] == [True]
    rows.loc[rows.method == "untrained", "lstsq_test_acc"] = 0.24
    checks = zapping.preconditions(params, lstsq=rows)
    assert [p.holds for p in checks["zap_asb"] if "least-squares" in p.name] == [False]


def test_iid_zaps_count_epoch_starts_after_the_first():
    assert zapping.iid_zaps({"iid_epochs": 5, "zap_every": 2}) == 2  # epochs 3 and 5
    assert zapping.iid_zaps({"iid_epochs": 4, "zap_every": 1}) == 3
    assert zapping.iid_zaps({"iid_epochs": 1, "zap_every": 1}) == 0


# ----------------------------------------------------------------------------- configs and helpers
def test_chapter_configs_state_zap_explicitly():
    params = resolve_params("zapping", profile="smoke")
    configs = zapping.pretrain_configs(params)
    kinds = {(c["method"], c["zap"]) for c in configs}
    assert kinds == {("untrained", False), ("iid", False), ("iid", True), ("asb", False), ("asb", True),
                     ("meta_asb", False), ("meta_asb", True), ("anml", True)}
    assert all(isinstance(c["zap"], bool) for c in configs)  # never left to a default
    assert all(c.get("zap_fan_in", "row") == "row" for c in configs)
    assert all(c["zap_fan_in"] == "official_bug" for c in zapping.bug_configs(params))


def test_stored_experiments_keep_their_names_and_code_versions():
    # stored runs are keyed on (experiment, code version, config): moving the functions changes none
    assert (zapping.pretrain_run.experiment, zapping.pretrain_run.code_version) == ("zapping-pretrain", 3)
    assert (zapping.transfer_run.experiment, zapping.transfer_run.code_version) == ("zapping-transfer", 3)
    assert code_version("zapping-pretrain") == code_version("zapping-transfer") == 3
    assert zapping.CHAPTER.experiments == (zapping.PRETRAIN_EXPERIMENT, zapping.TRANSFER_EXPERIMENT)


def test_final_runs_take_the_last_record_of_each_run():
    curves = _curves([("asb", True, "row")], pretrain_seeds=(0,), seeds=(0, 1))
    final = zapping.final_runs(curves, "probe_acc")
    assert len(final) == 2
    assert final.probe_acc.tolist() == pytest.approx([0.3, 0.301])
    assert set(final.model) == {"ASB+zap #0"}


def test_zap_comparison_tests_models_and_shows_the_pooled_test_beside():
    conditions = [("iid", False, "row"), ("iid", True, "row"), ("iid", True, "official_bug")]
    curves = _curves(conditions, seeds=range(10), effect={("iid", True, "row"): 0.1})
    row = zapping.zap_comparison(curves).set_index("method").loc["iid"]
    assert (row.zap_models, row.zap_runs) == (3, 30)  # the official-bug variant is left out
    assert row["diff"] == pytest.approx(0.1)
    assert row.p_pooled < row.p_seed  # 30 runs pooled look like far more evidence than 3 models


def test_labels():
    assert zapping.label("anml", True) == "ANML"
    assert zapping.label("meta_asb", True) == "meta-ASB+zap"
    assert zapping.label("iid", True, "official_bug") == "i.i.d.+zap (official zap bug)"
    frame = zapping.with_condition(pd.DataFrame({"method": ["asb", "iid"], "zap": [False, True]}))
    assert frame.condition.tolist() == ["ASB", "i.i.d.+zap"]
    assert np.array_equal(list(zapping.CONDITIONS.values())[:3], ["untrained", "i.i.d.", "i.i.d.+zap"])


# ----------------------------------------------------------------------------- long-profile plumbing
def test_long_chooses_lrs_on_a_selection_model_at_the_reported_length_never_on_test_images():
    params = resolve_params("zapping", profile="long")
    reported, chosen = zapping.protocol_models(params, "probe")
    assert {s["pretrain"]["seed"] for s in chosen} == {params["selection_seed"]}
    assert params["selection_seed"] not in {s["pretrain"]["seed"] for s in reported}
    settings = zapping.protocol_settings(params, "probe")
    settings.pop("report_seeds")
    cfgs = zapping.validation_configs("probe", chosen, **settings, split="select")
    assert {c["split"] for c in cfgs} == {"select"}
    assert {c["classes"] for c in cfgs} == {params["transfer_classes"]}  # the reported length
    assert not set(params["val_seeds"]) & set(params["report_seeds"])
    # every reported configuration (checkpoints included) has a selection model to take its lr from
    key = lambda s: (s["pretrain"]["method"], s["pretrain"]["zap"], s["pretrain"].get("zap_fan_in", "row"),  # noqa: E731
                     s.get("at", zapping.units_of(s["pretrain"])))
    assert {key(s) for s in reported} <= {key(s) for s in chosen}


def test_long_gate_seeds_are_apart_and_auto_precision_waits_for_the_gate(tmp_path):
    from zaplib.store import Store

    params = resolve_params("zapping", profile="long")
    others = set(params["pretrain_seeds"]) | set(params["meta_seeds"]) | set(params["bug_seeds"]) | {params["selection_seed"]}
    assert not set(params["gate_seeds"]) & others
    empty = Store(tmp_path)
    assert zapping.iid_precision(params, empty) == "fp32"  # gate not computed: no bf16
    assert zapping.iid_precision({**params, "precision": "bf16"}, empty) == "bf16"
    # before the gate is stored only the gate is planned, so no reported run can precede it
    planned = zapping.planned_runs(params, empty)
    assert [c["seed"] for _, c in planned] == [s for s in params["gate_seeds"] for _ in range(3)]


def test_the_one_epoch_control_is_a_checkpoint_of_the_unzapped_run_only():
    params = resolve_params("zapping", profile="long")
    specs = zapping.specs_of(zapping.pretrain_configs(params) + zapping.bug_configs(params))
    ats = {(s["pretrain"]["method"], s["pretrain"]["zap"], s["pretrain"].get("zap_fan_in", "row"), s.get("at"))
           for s in specs}
    assert ("iid", False, "row", 1) in ats
    assert ("iid", True, "row", 1) not in ats and ("iid", True, "official_bug", 1) not in ats
    assert {a for m, _, _, a in ats if m == "asb"} == {None, 750, 1500}
    # the zap claims compare final models only: a checkpoint never carries the final label
    assert zapping.label("iid", False, at=1) == "i.i.d. (1 epoch)" != zapping.label("iid", False)


def _gate_store(tmp_path, zap_gain, bf16_shift):
    """A store holding made-up gate runs: transfer accuracy 0.20 (+ zap_gain for i.i.d.+zap, +
    bf16_shift for bf16 i.i.d.) at lr 1e-3 and 0.05 at every other lr, per gate seed."""
    from zaplib.store import Store

    store = Store(tmp_path)
    params = resolve_params("zapping", {"gate_seeds": [900, 901, 902], "probe_lrs": [1e-4, 1e-3, 1e-2]}, "smoke")
    for c in zapping.gate_configs(params):
        store.save(zapping.PRETRAIN_EXPERIMENT, c, {"pretrain_val_acc": 0.5})
    for k, c in enumerate(zapping.gate_probe_configs(params)):
        pre = c["pretrain"]
        acc = 0.20 + (zap_gain[pre["seed"] - 900] if pre["zap"] else 0.0) + (
            bf16_shift + 0.001 * (pre["seed"] - 900) if pre.get("precision") == "bf16" and not pre["zap"] else 0.0)
        rows = [{"seed": s, "lr": lr, "classes": c["classes"], "train_acc": 1.0,
                 "test_acc": acc if lr == 1e-3 else 0.05} for s in c["seeds"] for lr in c["lrs"]]
        store.save(zapping.TRANSFER_EXPERIMENT, c, {"curves": pd.DataFrame(rows)})
    return params, store


def test_the_gate_passes_only_when_zapping_helps_on_every_seed_and_bf16_matches_fp32(tmp_path):
    params, store = _gate_store(tmp_path / "a", zap_gain=[0.03, 0.05, 0.04], bf16_shift=0.0)
    assert zapping.gate_complete(params, store)
    gate = zapping.gate_summary(params, store)
    assert gate["regime_holds"] and gate["parity_holds"]
    assert gate["zap_gain"].to_numpy() == pytest.approx([0.03, 0.049, 0.038])  # against bf16 i.i.d.
    assert set(gate["best_lr"]) == {1e-3}
    assert zapping.iid_precision({**params, "precision": "auto"}, store) == "bf16"
    params, store = _gate_store(tmp_path / "b", zap_gain=[0.03, -0.01, 0.04], bf16_shift=0.05)
    gate = zapping.gate_summary(params, store)
    assert not gate["regime_holds"] and not gate["parity_holds"]  # bf16 5 points off: beyond ±2
    assert zapping.iid_precision({**params, "precision": "auto"}, store) == "fp32"
