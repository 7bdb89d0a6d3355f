"""Chapter "Reset it and forget it" (Frati et al. 2023, ``book/zapping.ipynb``).

Two stored experiments, each a pure function of a plain JSON config:

* ``zapping-pretrain`` (:func:`pretrain_run`): one pre-trained model — i.i.d., ASB, meta-ASB or
  ANML, zapping on or off (:func:`zaplib.pretraining.pretrain`, Alg. 1 and §2.1.1);
* ``zapping-transfer`` (:func:`transfer_run`): every (transfer seed, lr) of one transfer protocol
  on one pre-trained model (:func:`zaplib.transfer.transfer`: Alg. 2 linear probe, App. H
  unfrozen, Alg. 3 i.i.d.).

This module turns the chapter's parameters into those configs (:func:`pretrain_configs`,
:func:`bug_configs`, :func:`finetune_configs`), runs the learning-rate protocol through the store
(:func:`run_protocol` and its three uses :func:`run_probe`, :func:`run_unfrozen`,
:func:`run_iid_transfer`), and declares the chapter's claims (:data:`CLAIMS`) with the frames and
preconditions that test them (:func:`claim_frames`, :func:`preconditions`), so that the notebook,
the tests and a reader's script build exactly the same runs.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import get_device, metrics, pretraining, report, transfer
from ..chapters import Chapter
from ..store import Store, experiment, sweep

PRETRAIN_EXPERIMENT = "zapping-pretrain"
TRANSFER_EXPERIMENT = "zapping-transfer"


# ---------------------------------------------------------------------------------------------
# The stored experiments
# ---------------------------------------------------------------------------------------------
# version 2: seeds from samplers.generator, inits via models.build, data via data.subset (issue 12)
# version 3: trunks (committed) and checkpoints, per-batch losses, ANML pooling as the official code
@experiment(PRETRAIN_EXPERIMENT, version=3)
def pretrain_run(config: dict) -> dict:
    """One pre-training run, stored (config keys and results: :func:`zaplib.pretraining.pretrain`)."""
    return pretraining.pretrain(config)


def load_pretrained(config: dict, store: Store | None = None, device=None, at: int | None = None,
                    with_head: bool = False) -> nn.Module:
    """The pre-trained model of ``config`` from the results store (computed and stored first if
    missing), on ``device``; ``at`` names one of the run's ``checkpoints`` (epochs or episodes).
    Transfer needs only the trunk (committed; the head is left at its initialisation, since every
    protocol replaces it); ``with_head`` needs the whole state (git-ignored, recomputed if missing)."""
    store = store if store is not None else Store()
    run = store.run(PRETRAIN_EXPERIMENT, config, pretrain_run)
    if with_head:
        if "state" not in run:
            run = store.run(PRETRAIN_EXPERIMENT, config, pretrain_run, force=True)
        return pretraining.build_pretrained(run.config, run["state"], device)
    if at is not None:
        if "checkpoint_trunks" not in run or str(int(at)) not in run["checkpoint_trunks"]:
            raise ValueError(f"pre-training run {run.path.name[:8]} has no checkpoint at {at}")
        state = run["checkpoint_trunks"][str(int(at))]
    elif "trunk" in run:
        state = run["trunk"]
    else:
        if "state" not in run:  # a checkpoint that was not committed: recompute it
            run = store.run(PRETRAIN_EXPERIMENT, config, pretrain_run, force=True)
        state = run["state"]
    return pretraining.build_pretrained(run.config, state, device)


# version 2: seeds from samplers.generator, inits via models.build, data via data.subset (issue 12)
# version 3: checkpoints (``at``), the ``select`` split, least-squares probe, head_outputs (issue 14)
@experiment(TRANSFER_EXPERIMENT, version=3)
def transfer_run(config: dict) -> dict:
    """One transfer run, stored: the pre-trained model of ``config["pretrain"]`` (at checkpoint
    ``config["at"]`` when given; loaded through :func:`load_pretrained`) transferred as
    :func:`zaplib.transfer.transfer` describes the other keys."""
    device = get_device(config.get("device"))
    torch.set_flush_denormal(True)  # Adam on a softmax head makes denormals, ~3x slower on a CPU
    model = load_pretrained(config["pretrain"], device=device, at=config.get("at"))
    return transfer.transfer(model, config, device)


# ---------------------------------------------------------------------------------------------
# Models to transfer: a pre-training config, optionally at one of its checkpoints
# ---------------------------------------------------------------------------------------------
def units_of(pretrain: dict) -> int:
    """Length of a pre-training run: epochs (i.i.d.), episodes (ASB / meta-ASB / ANML), 0 (untrained)."""
    return int(pretrain.get("epochs") or pretrain.get("episodes") or 0)


def model_spec(pretrain: dict, at: int | None = None) -> dict:
    """A model to transfer: ``{"pretrain": config}`` (the final model) or with ``"at"``, a
    checkpoint of that run (``at`` equal to the run's length is the final model)."""
    if at is None or int(at) == units_of(pretrain):
        return {"pretrain": pretrain}
    return {"pretrain": pretrain, "at": int(at)}


def _tag(runs, configs) -> pd.DataFrame:
    """The curves of ``runs``, each tagged with its pre-trained model: method, zap, fan_in,
    pretrain_seed and ``at`` (epochs or episodes of pre-training the transferred model had)."""
    frames = []
    for run, config in zip(runs, configs):
        frame = run["curves"].copy()
        pre = config["pretrain"]
        frame.insert(0, "at", int(config.get("at", units_of(pre))))
        frame.insert(0, "pretrain_seed", pre["seed"])
        frame.insert(0, "fan_in", pre.get("zap_fan_in", "row"))
        frame.insert(0, "zap", pre["zap"])
        frame.insert(0, "method", pre["method"])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _lstsq(runs, configs) -> pd.DataFrame:
    """The least-squares probe rows of ``runs`` (where run), tagged as :func:`_tag` tags curves."""
    frames = [run["lstsq"].assign(method=c["pretrain"]["method"], zap=c["pretrain"]["zap"],
                                  fan_in=c["pretrain"].get("zap_fan_in", "row"),
                                  pretrain_seed=c["pretrain"]["seed"],
                                  at=int(c.get("at", units_of(c["pretrain"]))))
              for run, c in zip(runs, configs) if "lstsq" in run]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------------------------------------
# The learning-rate protocol (choose on apart runs, then report) through the store
# ---------------------------------------------------------------------------------------------
SELECT_BY = ("method", "zap", "fan_in", "at")


def validation_configs(kind: str, specs: Sequence[dict], *, lrs: Sequence[float],
                       val_seeds: Sequence[int], classes: int, common: dict,
                       val_classes: int | None = None, split: str = "val") -> list[dict]:
    """Phase 1 of :func:`run_protocol`: one run of every ``lrs`` per model of ``specs``
    (:func:`model_spec`): on the validation pool (``split="val"``, ``val_classes`` classes) or on
    the ``select`` split at the reported length (``classes``; see :func:`zaplib.transfer._pool`)."""
    length = classes if split == "select" else (val_classes or classes)
    return [{"kind": kind, **common, "classes": length, **spec, "split": split,
             "seeds": list(val_seeds), "lrs": list(lrs)} for spec in specs]


def _key(pre: dict, at: int) -> tuple:
    return (pre["method"], bool(pre["zap"]), pre.get("zap_fan_in", "row"), int(at))


def report_configs(kind: str, specs: Sequence[dict], best_lr: pd.DataFrame, *,
                   report_seeds: Sequence[int], classes: int, common: dict) -> list[dict]:
    """Phase 2 of :func:`run_protocol`: one report-pool run per model of ``specs`` at the learning
    rate ``best_lr`` (:func:`zaplib.transfer.select_lr`) chose for its (method, zap, fan-in, at)."""
    lr_of = {(r.method, bool(r.zap), r.fan_in, int(r.at)): float(r.lr) for r in best_lr.itertuples()}
    return [{"kind": kind, **common, "classes": classes, **spec, "split": "report",
             "seeds": list(report_seeds),
             "lrs": [lr_of[_key(spec["pretrain"], spec.get("at", units_of(spec["pretrain"])))]]}
            for spec in specs]


def run_protocol(kind: str, specs: Sequence[dict], *, lrs: Sequence[float],
                 val_seeds: Sequence[int], report_seeds: Sequence[int], classes: int,
                 common: dict, val_classes: int | None = None, selection: Sequence[dict] | None = None,
                 executor=None, store=None, progress: bool = True) -> dict:
    """The learning rate chosen on runs apart from the reported ones, then the report runs.

    Phase 1 (choice): with ``selection`` (models of a pre-training seed that is never reported, one
    per configuration), runs on the ``select`` split at the reported length ``classes``: the
    report pool's classes, trained on 12 of each class's training images and scored on the other
    3, never on held-out test images. Without it, runs on the validation pool (``val_classes``
    classes of ``val_pool``) on the reported models themselves — the ``quick`` protocol, whose
    100-class trajectories fit in the pool. :func:`zaplib.transfer.select_lr` picks one lr per
    (method, zap, fan-in, at); phase 2 runs ``report_seeds`` trajectories of ``classes`` classes of
    the report pool at that lr on every model of ``specs``. ``common`` holds the other config keys.
    Both phases go through :func:`zaplib.store.sweep` (stored, resumable, any executor).

    Returns ``val`` and ``report`` (curves tagged by :func:`_tag`), ``best_lr``, ``lstsq`` (least-
    squares probe rows of the report runs, if run), ``runs`` (one row per report run: feature
    density and norm for probes, wall time) and ``val_wall_s`` / ``report_wall_s``.
    """
    store = store if store is not None else Store()
    choose_on = list(selection) if selection is not None else list(specs)
    val_cfgs = validation_configs(kind, choose_on, lrs=lrs, val_seeds=val_seeds, classes=classes,
                                  common=common, val_classes=val_classes,
                                  split="select" if selection is not None else "val")
    val_runs = sweep(transfer_run, val_cfgs, executor, store=store, experiment=TRANSFER_EXPERIMENT,
                     progress=progress)
    val = _tag(val_runs, val_cfgs)
    best = transfer.select_lr(val, by=SELECT_BY)
    rep_cfgs = report_configs(kind, specs, best, report_seeds=report_seeds, classes=classes,
                              common=common)
    rep_runs = sweep(transfer_run, rep_cfgs, executor, store=store, experiment=TRANSFER_EXPERIMENT,
                     progress=progress)
    reported = _tag(rep_runs, rep_cfgs)
    wall = lambda run: getattr(run, "meta", {}).get("wall_time_s", np.nan)  # noqa: E731
    runs = pd.DataFrame([{"method": c["pretrain"]["method"], "zap": c["pretrain"]["zap"],
                          "fan_in": c["pretrain"].get("zap_fan_in", "row"),
                          "pretrain_seed": c["pretrain"]["seed"],
                          "at": int(c.get("at", units_of(c["pretrain"]))),
                          "feature_density": r.get("feature_density", np.nan),
                          "feature_norm": r.get("feature_norm", np.nan), "wall_time_s": wall(r)}
                         for r, c in zip(rep_runs, rep_cfgs)])
    return {"val": val, "report": reported, "best_lr": best, "runs": runs,
            "lstsq": _lstsq(rep_runs, rep_cfgs),
            "val_wall_s": float(np.nansum([wall(r) for r in val_runs])),
            "report_wall_s": float(runs["wall_time_s"].sum())}


# ---------------------------------------------------------------------------------------------
# Configs of the chapter
# ---------------------------------------------------------------------------------------------
METHOD_LABELS = {"untrained": "untrained", "iid": "i.i.d.", "asb": "ASB", "meta_asb": "meta-ASB",
                 "anml": "ANML"}
#: One colour per pre-training method in every figure (zapping is drawn dashed).
METHOD_COLORS = {"untrained": "0.45", "iid": "C0", "asb": "C2", "meta_asb": "C3", "anml": "C1"}
# relative cost of one unit of work, used only to submit the longest runs first (load balance)
_COST = {"iid": 6.0, "asb": 0.07, "meta_asb": 0.2, "anml": 0.4, "untrained": 0.0}
_UNIT_NAMES = {"iid": "epoch", "asb": "episode", "meta_asb": "episode", "anml": "episode"}


def label(method: str, zap: bool, fan_in: str = "row", at: int | None = None) -> str:
    """Display name, e.g. ``ASB+zap``; ANML always zaps and is called just ANML. A checkpoint
    shorter than the run gets its length, e.g. ``i.i.d. (1 epoch)`` or ``ASB+zap (750 episodes)``."""
    if method == "anml":
        name = "ANML"
    else:
        name = METHOD_LABELS[method] + ("+zap" if zap else "")
        if fan_in == "official_bug":
            name += " (official zap bug)"
    if at is not None:
        unit = _UNIT_NAMES.get(method, "step")
        name += f" ({int(at):,} {unit}{'s' if int(at) != 1 else ''})"
    return name


#: The main conditions in display order, (method, zap) -> label (the official-bug variant apart).
CONDITIONS = {(m, z): label(m, z) for m, z in (("untrained", False), ("iid", False), ("iid", True),
                                              ("asb", False), ("asb", True), ("meta_asb", False),
                                              ("meta_asb", True), ("anml", True))}


def with_condition(frame: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
    """``frame`` (columns method, zap[, fan_in, at]) with a ``condition`` column: its :func:`label`.
    With ``params``, a model transferred at one of its run's checkpoints (``at`` shorter than the
    run's length) is labelled with its length; without, ``at`` is ignored."""
    n = len(frame)
    fan_in = frame["fan_in"] if "fan_in" in frame.columns else ["row"] * n
    ats = frame["at"] if ("at" in frame.columns and params is not None) else [None] * n
    full = {m: full_units(params, m) for m in METHOD_LABELS} if params is not None else {}
    names = [label(m, z, f, None if a is None or int(a) == full.get(m) else a)
             for m, z, f, a in zip(frame["method"], frame["zap"], fan_in, ats)]
    return frame.assign(condition=names)


def full_units(params: dict, method: str) -> int:
    """The length of a method's pre-training runs under ``params`` (0 for the untrained network)."""
    key = {"iid": "iid_epochs", "asb": "asb_episodes", "meta_asb": "meta_episodes",
           "anml": "anml_episodes"}.get(method)
    return int(params[key]) if key else 0


def iid_precision(params, store: Store | None = None) -> str:
    """The precision of i.i.d. pre-training: ``params["precision"]``, where ``"auto"`` means bf16
    once the regime gate's parity test has shown bf16 equivalent to fp32 (:func:`gate_summary`),
    else fp32 (also while the gate is not yet computed)."""
    precision = params.get("precision", "fp32")
    if precision != "auto":
        return precision
    if store is None or not gate_complete(params, store):
        return "fp32"
    return "bf16" if gate_summary(params, store)["parity_holds"] else "fp32"


def pretrain_config(params, method: str, zap: bool, seed: int, fan_in: str = "row",
                    precision: str | None = None) -> dict:
    """The plain config of one pre-training run (keys documented in :func:`zaplib.pretraining.pretrain`)."""
    config = {"method": method, "zap": bool(zap), "seed": int(seed), "channels": params["channels"],
              "head_outputs": 1000, "split_seed": 0, "zap_bias": "zero"}
    if method == "untrained":
        return config
    if method == "iid":
        config.update(epochs=params["iid_epochs"], batch_size=256, lr=params["iid_lr"])
        checkpoints = [e for e in params.get("iid_checkpoints", []) if e < params["iid_epochs"]]
        if checkpoints:
            config["checkpoints"] = sorted(checkpoints)
        if precision and precision != "fp32":
            config["precision"] = precision
        if zap:
            config.update(zap_every=params["zap_every"], zap_rows=None, zap_fan_in=fan_in)
    else:
        episodes = {"asb": "asb_episodes", "meta_asb": "meta_episodes", "anml": "anml_episodes"}[method]
        config.update(episodes=params[episodes], inner_lr=params["inner_lr"],
                      outer_lr=params["outer_lr"], K=20, R=64)
        if method == "asb":
            checkpoints = [e for e in params.get("asb_checkpoints", []) if e < params["asb_episodes"]]
            if checkpoints:
                config["checkpoints"] = sorted(checkpoints)
        if method == "anml":
            config["nm_channels"] = params["nm_channels"]
            config["nm_pool_last"] = bool(params.get("nm_pool_last", True))
            if params.get("anml_train_images", 15) != 15:
                config["train_images"] = int(params["anml_train_images"])
    return config


def _cost(config: dict) -> float:
    return _COST[config["method"]] * units_of(config)


def _arms(params) -> list[tuple[str, bool, list[int]]]:
    """(method, zap, reported seeds) of every arm of the main comparison."""
    arms = [("untrained", False, params["pretrain_seeds"])]
    for method, seeds in (("iid", params["pretrain_seeds"]), ("asb", params["pretrain_seeds"]),
                          ("meta_asb", params["meta_seeds"])):
        arms += [(method, zap, seeds) for zap in (False, True)]
    if params["anml_seeds"]:
        arms.append(("anml", True, params["anml_seeds"]))
    return arms


def pretrain_configs(params, store: Store | None = None) -> list[dict]:
    """Every reported pre-training run of the chapter, longest first: i.i.d. and ASB ± zap on
    ``pretrain_seeds``, meta-ASB ± zap on ``meta_seeds``, ANML (zap) on ``anml_seeds``, and the
    untrained network on ``pretrain_seeds`` (what the features give before any pre-training)."""
    precision = iid_precision(params, store)
    configs = [pretrain_config(params, m, z, s, precision=precision)
               for m, z, seeds in _arms(params) for s in seeds]
    return sorted(configs, key=_cost, reverse=True)


def selection_configs(params, store: Store | None = None) -> list[dict]:
    """One pre-training run per arm (and the official-bug arm) with ``selection_seed``: used only to
    choose transfer learning rates, never reported (empty when ``selection_seed`` < 0)."""
    seed = params.get("selection_seed", -1)
    if seed is None or seed < 0:
        return []
    precision = iid_precision(params, store)
    configs = [pretrain_config(params, m, z, seed, precision=precision) for m, z, _ in _arms(params)]
    if params["bug_seeds"]:
        configs.append(pretrain_config(params, "iid", True, seed, fan_in="official_bug", precision=precision))
    return sorted(configs, key=_cost, reverse=True)


def bug_configs(params, store: Store | None = None) -> list[dict]:
    """i.i.d.+zap with the official i.i.d. path's zap (std ≈ √(1/k) too small; reference notes)."""
    precision = iid_precision(params, store)
    return [pretrain_config(params, "iid", True, s, fan_in="official_bug", precision=precision)
            for s in params["bug_seeds"]]


def specs_of(configs: Sequence[dict]) -> list[dict]:
    """Every model to transfer from these pre-training runs: each final model, and each checkpoint
    of the i.i.d. runs *without* zapping (the 1-epoch control: an i.i.d.+zap run is the same model
    until its first zap, so its early checkpoints would repeat them) and of the ASB runs."""
    specs = []
    for c in configs:
        specs.append(model_spec(c))
        if c["method"] == "iid" and (c["zap"] or c.get("zap_fan_in", "row") != "row"):
            continue
        specs += [model_spec(c, at) for at in c.get("checkpoints", [])]
    return specs


def probe_common(params) -> dict:
    """Shared keys of the sequential linear-probe transfer runs (Alg. 2)."""
    common = {"val_pool": params["val_pool"], "class_split_seed": 0, "split_seed": 0,
              "eval_every": params["eval_every"]}
    if params.get("transfer_head_outputs", 0):
        common["head_outputs"] = int(params["transfer_head_outputs"])
    if params.get("least_squares", False):
        common["least_squares"] = True
    return common


def finetune_configs(params, configs: list[dict]) -> list[dict]:
    """The pre-trained models that are also fine-tuned (unfrozen and i.i.d. transfer)."""
    keep = set(params["pretrain_seeds"][: params["finetune_pretrain_seeds"]])
    return [c for c in configs if c["method"] in params["finetune_methods"]
            and (c["seed"] in keep or c["seed"] == params.get("selection_seed", -1))]


def protocol_settings(params, kind: str) -> dict:
    """The settings of transfer protocol ``kind`` ("probe", "unfrozen" or "iid") from the chapter's
    parameters: the keyword arguments of :func:`run_protocol` besides the models."""
    finetune = {"val_seeds": params["finetune_val_seeds"], "report_seeds": params["finetune_report_seeds"],
                "classes": params["finetune_classes"],
                "val_classes": min(params["finetune_classes"], params["val_classes"])}
    if kind == "probe":  # sequential linear probe (Alg. 2)
        return {"lrs": params["probe_lrs"], "val_seeds": params["val_seeds"],
                "report_seeds": params["report_seeds"], "classes": params["transfer_classes"],
                "val_classes": params["val_classes"], "common": probe_common(params)}
    common = {"val_pool": params["val_pool"], "class_split_seed": 0, "split_seed": 0}
    if kind == "unfrozen":  # sequential transfer with every parameter trained (App. H)
        return {"lrs": params["unfrozen_lrs"], "common": {**common, "eval_every": params["eval_every"]},
                **finetune}
    if kind == "iid":  # i.i.d. fine-tuning (Alg. 3): Adam, batch 32, curves twice an epoch
        common.update(epochs=params["iid_transfer_epochs"], batch_size=32, evals_per_epoch=2)
        return {"lrs": params["iid_transfer_lrs"], "common": common, **finetune}
    raise ValueError(f"unknown transfer protocol {kind!r}; protocols: probe, unfrozen, iid")


def protocol_models(params, kind: str, store: Store | None = None) -> tuple[list[dict], list[dict] | None]:
    """The models protocol ``kind`` reports (:func:`model_spec` dicts) and the models it chooses
    learning rates on (``None``: the reported ones, on the validation pool)."""
    main, bug, select = pretrain_configs(params, store), bug_configs(params, store), selection_configs(params, store)
    if kind == "probe":  # every model and checkpoint, the official-bug ones too
        reported, chosen = specs_of(main + bug), specs_of(select)
    else:  # fine-tuning: the final models of finetune_methods only
        reported = [model_spec(c) for c in finetune_configs(params, main) if c["seed"] in params["pretrain_seeds"]]
        chosen = [model_spec(c) for c in select if c["method"] in params["finetune_methods"]
                  and c.get("zap_fan_in", "row") == "row"]
    return reported, (chosen if select else None)


def _run(kind: str, params, executor=None, store=None, progress=True) -> dict:
    reported, chosen = protocol_models(params, kind, store)
    return run_protocol(kind, reported, **protocol_settings(params, kind), selection=chosen,
                        executor=executor, store=store, progress=progress)


def run_probe(params, executor=None, store=None, progress=True) -> dict:
    """Sequential linear-probe transfer (Alg. 2) of every reported model and checkpoint."""
    return _run("probe", params, executor, store, progress)


def run_unfrozen(params, executor=None, store=None, progress=True) -> dict:
    """Sequential transfer with every parameter trained (App. H)."""
    return _run("unfrozen", params, executor, store, progress)


def run_iid_transfer(params, executor=None, store=None, progress=True) -> dict:
    """i.i.d. fine-tuning on the transfer classes (Alg. 3): Adam, batch 32, curves twice an epoch."""
    return _run("iid", params, executor, store, progress)


# ---------------------------------------------------------------------------------------------
# The regime gate (its own seeds; computed, and reported, before the long sweep)
# ---------------------------------------------------------------------------------------------
#: bf16 i.i.d. pre-training is used (``precision="auto"``) only if, on the gate seeds, bf16 and fp32
#: agree within this many accuracy points in pre-training accuracy and in transfer accuracy (paired
#: TOST at α = 0.05). Two points is a fifth of the effect the reference pilot saw (22.3 % → 28.6 %).
PARITY_MARGIN = 0.02


def gate_configs(params) -> list[dict]:
    """The gate's pre-training runs: i.i.d. and i.i.d.+zap in bf16, and i.i.d. in fp32 (the parity
    check), on ``gate_seeds`` — seeds that no reported or selection run uses."""
    out = []
    for s in params.get("gate_seeds", []):
        out += [pretrain_config(params, "iid", False, s, precision="bf16"),
                pretrain_config(params, "iid", True, s, precision="bf16"),
                pretrain_config(params, "iid", False, s, precision="fp32")]
    return out


def gate_probe_configs(params) -> list[dict]:
    """The gate's transfer runs: every probe lr × validation seed on the ``select`` split (never the
    held-out test images) at the reported length, one run per gate model."""
    return validation_configs("probe", [model_spec(c) for c in gate_configs(params)], lrs=params["probe_lrs"],
                              val_seeds=params["val_seeds"], classes=params["transfer_classes"],
                              common=probe_common(params), split="select")


def gate_complete(params, store: Store) -> bool:
    cfgs = gate_configs(params)
    return bool(cfgs) and all(store.complete(PRETRAIN_EXPERIMENT, c) for c in cfgs) and all(
        store.complete(TRANSFER_EXPERIMENT, c) for c in gate_probe_configs(params))


def gate_summary(params, store: Store) -> dict:
    """The gate's numbers: ``table`` (one row per gate seed: pre-training accuracy and best-lr
    ``select``-split transfer accuracy of i.i.d., i.i.d.+zap (bf16) and i.i.d. fp32; the lr is
    chosen per arm on the mean over gate seeds), ``zap_gain`` (i.i.d.+zap − i.i.d. per seed),
    ``regime_holds`` (zapping helps on every gate seed), the paired bf16 − fp32 differences with
    their TOST p-values (margin :data:`PARITY_MARGIN`) and ``parity_holds``."""
    from scipy import stats

    pre = gate_configs(params)
    probe_cfgs = gate_probe_configs(params)
    runs = [store.load(TRANSFER_EXPERIMENT, c) for c in probe_cfgs]
    curves = _tag(runs, probe_cfgs)
    curves["precision"] = [c["pretrain"].get("precision", "fp32") for c, r in
                           zip(probe_cfgs, runs) for _ in range(len(r["curves"]))]
    final = transfer.final_records(curves)
    arm = lambda f: f.method + f.zap.map({True: "+zap", False: ""}) + " " + f.precision  # noqa: E731
    final["arm"] = arm(final)
    by_lr = final.groupby(["arm", "lr"])["test_acc"].mean()
    best_lr = by_lr.groupby(level=0).idxmax().map(lambda t: t[1])
    final = final[final.lr == final.arm.map(best_lr)]
    transfer_acc = final.groupby(["pretrain_seed", "arm"])["test_acc"].mean().unstack()
    pre_acc = pd.DataFrame([{"pretrain_seed": c["seed"], "arm": f"{c['method']}{'+zap' if c['zap'] else ''} "
                             f"{c.get('precision', 'fp32')}", "acc": store.load(PRETRAIN_EXPERIMENT, c)["pretrain_val_acc"]}
                            for c in pre]).pivot(index="pretrain_seed", columns="arm", values="acc")
    table = transfer_acc.add_prefix("transfer ").join(pre_acc.add_prefix("pretrain "))
    gain = transfer_acc["iid+zap bf16"] - transfer_acc["iid bf16"]

    def tost(d: pd.Series) -> float:
        d = d.to_numpy(float)
        if len(d) < 2:  # one seed cannot show equivalence
            return 1.0
        if np.std(d, ddof=1) == 0:
            return float(0.0 if np.all(np.abs(d) < PARITY_MARGIN) else 1.0)
        se = np.std(d, ddof=1) / np.sqrt(len(d))
        lo = stats.t.sf((d.mean() + PARITY_MARGIN) / se, len(d) - 1)
        hi = stats.t.cdf((d.mean() - PARITY_MARGIN) / se, len(d) - 1)
        return float(max(lo, hi))

    parity = {name: table[f"{name} iid bf16"] - table[f"{name} iid fp32"] for name in ("transfer", "pretrain")}
    p = {name: tost(d) for name, d in parity.items()}
    return {"table": table, "best_lr": best_lr, "zap_gain": gain, "regime_holds": bool((gain > 0).all()),
            "parity": parity, "parity_p": p, "parity_holds": bool(all(v < 0.05 for v in p.values()))}


def _protocol_runs(params, store, best_lr) -> list:
    """Every protocol's lr-choice runs, and its report runs where ``best_lr(kind, settings,
    choice_configs)`` gives the chosen rates (None: not known yet) — the one stage loop that
    :func:`planned_runs` and :func:`full_plan` share."""
    runs = []
    for kind in ("probe", *params.get("finetune_protocols", ["unfrozen", "iid"])):
        settings = protocol_settings(params, kind)
        report_seeds = settings.pop("report_seeds")
        reported, chosen = protocol_models(params, kind, store)
        val_cfgs = validation_configs(kind, chosen if chosen is not None else reported, **settings,
                                      split="select" if chosen is not None else "val")
        runs += [(transfer_run, c) for c in val_cfgs]
        best = best_lr(kind, settings, val_cfgs)
        if best is not None:
            runs += [(transfer_run, c) for c in report_configs(
                kind, reported, best, report_seeds=report_seeds, classes=settings["classes"],
                common=settings["common"])]
    return runs


def full_plan(params, store=None) -> list:
    """Every run of the profile, later stages with the middle learning rate of each grid as a
    placeholder and i.i.d. pre-training at bf16 when ``precision`` is auto (``store`` is not read:
    the placeholders keep the plan independent of what is stored).

    For ``compute --dry-run``'s cost table only: what is computed is :func:`planned_runs`, stage by
    stage (the gate decides the precision and the choice runs decide the learning rates)."""
    assumed = {**params, "precision": "bf16" if params.get("precision") == "auto" else params.get("precision", "fp32")}
    runs = [(pretrain_run, c) for c in gate_configs(params)] + [(transfer_run, c) for c in gate_probe_configs(params)]
    pre = pretrain_configs(assumed) + bug_configs(assumed) + selection_configs(assumed)
    runs += [(pretrain_run, c) for c in pre]

    def middle_lr(kind, settings, val_cfgs):
        middle = float(settings["lrs"][len(settings["lrs"]) // 2])
        placeholder = _tag([{"curves": pd.DataFrame({"lr": [middle], "test_acc": [0.0], "classes": [1]})}
                            for _ in val_cfgs], val_cfgs)
        return transfer.select_lr(placeholder, by=SELECT_BY)

    return runs + _protocol_runs(assumed, None, middle_lr)


def planned_runs(params, store=None) -> list:
    """The stored runs the notebook reads, as ``(fn, config)`` pairs, as far as they can be known
    from the runs already in ``store``: first the regime gate (pre-training, then its probes); once
    the gate is stored, the pre-training runs (reported, selection, official bug — their precision
    follows the gate's parity test); once they are stored, every protocol's learning-rate runs;
    once those are stored, its report runs at the chosen learning rate (``python -m zaplib compute
    zapping`` plans again after each stage)."""
    gate = gate_configs(params)
    runs = [(pretrain_run, c) for c in gate]
    if gate:
        if store is None or not all(store.complete(PRETRAIN_EXPERIMENT, c) for c in gate):
            return runs
        runs += [(transfer_run, c) for c in gate_probe_configs(params)]
        if not gate_complete(params, store):
            return runs
    pre = pretrain_configs(params, store) + bug_configs(params, store) + selection_configs(params, store)
    runs += [(pretrain_run, c) for c in pre]
    if store is None or not all(store.complete(PRETRAIN_EXPERIMENT, c) for c in pre):
        return runs

    def stored_choice(kind, settings, val_cfgs):
        if not all(store.complete(TRANSFER_EXPERIMENT, c) for c in val_cfgs):
            return None
        return transfer.select_lr(_tag([store.load(TRANSFER_EXPERIMENT, c) for c in val_cfgs], val_cfgs),
                                  by=SELECT_BY)

    return runs + _protocol_runs(params, store, stored_choice)


def image_steps(config: dict) -> float:
    """Image-steps of one run. Pre-training: i.i.d. epochs over 15 images of each of the 964
    background classes, or episodes of K inner single-image steps plus an outer batch of R + K.
    Transfer: 15 training images per class, per transfer seed and learning rate (× epochs)."""
    if "pretrain" in config:
        return float(config["classes"] * 15 * len(config["seeds"]) * len(config["lrs"]) * config.get("epochs", 1))
    if config["method"] == "untrained":
        return 0.0
    if config["method"] == "iid":
        return 964 * 15 * config["epochs"]
    return config["episodes"] * (2 * config["K"] + config["R"])


#: Seconds per unit of work on one thread of this machine at 64 channels (measured on a quiet
#: machine when ``long`` was planned, 2026-12-03): an i.i.d. epoch (fp32 / bf16,
#: its validation pass included), an ASB / meta-ASB / ANML episode; a lock-step probe's fixed cost
#: and cost per (seed × lr) probe over a 600-class trajectory; an i.i.d.-transfer epoch per class;
#: an unfrozen sequential step. Used by ``compute --dry-run`` only until runs of the same settings
#: are stored (then their recorded wall times are used).
STEP_SECONDS = {"iid_fp32": 31.0, "iid_bf16": 17.0, "asb": 0.111, "meta_asb": 0.242, "anml": 0.35,
                "probe_fixed": 6.5, "probe_each": 7.5, "iid_transfer_class_epoch": 0.065,
                "unfrozen_image": 0.013}


def cost_seconds(config: dict) -> float:
    """Estimated seconds of one run on one thread (:data:`STEP_SECONDS`; convolution cost taken as
    ∝ channels², feature dimension ∝ channels)."""
    if "pretrain" in config:
        scale = max(config["pretrain"]["channels"] / 64, 0.25)
        n = len(config["seeds"]) * len(config["lrs"])
        if config["kind"] == "probe":
            rows = config.get("head_outputs") or config["classes"]
            return STEP_SECONDS["probe_fixed"] + STEP_SECONDS["probe_each"] * n * scale * (
                config["classes"] / 600) * (rows / 600)
        if config["kind"] == "iid":
            return STEP_SECONDS["iid_transfer_class_epoch"] * config["classes"] * config["epochs"] * n * scale ** 2
        return STEP_SECONDS["unfrozen_image"] * config["classes"] * 15 * n * scale ** 2
    scale = max(config["channels"] / 64, 0.25) ** 2
    method = config["method"]
    if method == "untrained":
        return 1.0
    if method == "iid":
        return STEP_SECONDS[f"iid_{config.get('precision', 'fp32')}"] * config["epochs"] * scale
    return STEP_SECONDS[method] * config["episodes"] * scale


def run_kind(config: dict) -> str:
    if "pretrain" in config:
        return f"{config['kind']} transfer ({config['split']})"
    return f"{config['method']} ({config['channels']} ch, {config.get('precision', 'fp32')})"


def zap_comparison(curves: pd.DataFrame, value: str = "test_acc") -> pd.DataFrame:
    """Zap vs no-zap per pre-training method on the final ``value``.

    Per method and zap setting: mean and 95% t-interval over pre-training seeds
    (:func:`zaplib.metrics.mean_ci` of the per-model means), the number of pre-trained models and
    of runs; then a two-sided Mann–Whitney U test between the zap and no-zap pre-training seeds
    (``p_seed``, the test the chapter relies on) and, for comparison with the paper's Fig. 3,
    the same test on all runs pooled over transfer seeds (``p_pooled``: treats the T transfer
    runs of one pre-trained model as independent, which they are not)."""
    if "fan_in" in curves.columns:  # the official-bug variant is compared separately
        curves = curves[curves.fan_in == "row"]
    final = transfer.final_records(curves)
    per_model = transfer.final_by_pretrain_seed(curves, value)
    rows = []
    for method, group in per_model.groupby("method", sort=False):
        row = {"method": method}
        for zap in (False, True):
            vals = group.loc[group.zap == zap, value].to_numpy()
            runs = final.loc[(final.method == method) & (final.zap == zap), value].to_numpy()
            ci = metrics.mean_ci(vals)
            tag = "zap" if zap else "nozap"
            row.update({f"{tag}_mean": ci.mean, f"{tag}_lo": ci.lo, f"{tag}_hi": ci.hi,
                        f"{tag}_models": len(vals), f"{tag}_runs": len(runs)})
            row[f"_{tag}_vals"], row[f"_{tag}_runs"] = vals, runs
        both = len(row["_zap_vals"]) and len(row["_nozap_vals"])
        row["diff"] = row["zap_mean"] - row["nozap_mean"] if both else np.nan
        row["p_seed"] = metrics.mann_whitney(row["_zap_vals"], row["_nozap_vals"]).p if both else np.nan
        row["p_pooled"] = metrics.mann_whitney(row["_zap_runs"], row["_nozap_runs"]).p if both else np.nan
        rows.append({k: v for k, v in row.items() if not k.startswith("_")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The claims (declared before the runs that test them; verdicts by zaplib.report's one rule)
# ---------------------------------------------------------------------------------------------
# Design. The unit of replication of a claim about a pre-training method is the pre-trained model,
# i.e. the pre-training seed (column ``pretrain_seed``). Every model is transferred along the same
# trajectories (transfer seed, column ``seed``): the design is crossed, so each model's runs are first
# averaged over the transfer seeds (``shared="seed"``) and the trajectory is never the unit. Two
# methods are different models, so their arms are unpaired (Welch t on model means), except where
# one model is a checkpoint of the other: i.i.d.+zap with seed s *is* the 1-epoch i.i.d. model of
# seed s until its first zap (same initial weights, same batches), so that comparison is paired.
#
# Frames (built by :func:`claim_frames`): one row per transfer run, columns ``pretrain_seed``,
# ``seed``, ``condition`` (a display label of :func:`label`, e.g. "ASB+zap", "i.i.d. (1 epoch)"),
# ``model`` (a model id unique across conditions) and the metric: ``probe_acc`` (sequential linear
# probe, Alg. 2), ``lstsq_acc`` (the official least-squares probe on the same features),
# ``unfrozen_acc`` (App. H), ``iid_transfer_acc`` (Alg. 3), each the final held-out accuracy of the
# run; ``pretrain_val_acc`` for the correlation; ``zap_gain`` for the dose–response.

#: The least number of times, on average, each of the 964 background classes must come up as an
#: episode for an episodic (ASB / meta-ASB / ANML) zap claim to be testable: a zap re-draws the row of
#: the class about to be learned, which only differs from leaving it alone once rows are revisited
#: (below one visit per class most zapped rows were never trained: one random row replaces another).
MIN_VISITS_PER_CLASS = 1.0
BACKGROUND_CLASSES = 964
#: i.i.d.+zap must zap the head at least once (at the start of an epoch, never before the first).
MIN_IID_ZAPS = 1
#: "The zapped head relearns": after a whole-head zap the training loss must fall below half of
#: ln(1000) (the loss of a uniform guess over the 1000 outputs) within that epoch — measured as the
#: mean loss of the epoch's last :data:`RELEARN_LAST_BATCHES` batches, the worst zapped epoch of each
#: model, averaged over models. Above it, "i.i.d.+zap" is one epoch of training followed by training
#: through heads that never learn, not the paper's zap-and-relearn cycle.
RELEARN_MAX_LOSS = 0.5 * float(np.log(1000))
RELEARN_LAST_BATCHES = 10
#: "ASB is trained": its features must beat the untrained network's in the least-squares probe by at
#: least this much accuracy (2 points at 600 classes, about the spread of model means the review
#: measured), else an ASB claim compares two sets of near-random features.
ASB_TRAINED_MARGIN = 0.02


def _zap_claim(cid: str, method: str, metric: str, protocol: str, paper: str, primary: bool) -> report.Claim:
    return report.Claim(
        id=cid, text=f"Zapping improves {protocol} after {METHOD_LABELS[method]} pre-training",
        paper=paper, metric=metric, a=label(method, True), b=label(method, False), direction=+1,
        unit="pretrain_seed", shared="seed", paired=False, primary=primary, scale=100,
        unit_label=" pts", digits=1)


ONE_EPOCH = label("iid", False, at=1)

CLAIMS = [
    # -- primary (one Holm family of five) --
    _zap_claim("zap_iid", "iid", "probe_acc", "sequential transfer (linear probe)",
               "56.4 % vs ≤ 42.6 % at 600 classes (§3.1)", primary=True),
    # The control the review asked for: is i.i.d.+zap better than the model it was after one epoch,
    # before any zap? If not, its gain over i.i.d. is "one epoch, then training through random heads"
    # (later epochs without zaps hurting i.i.d.), not zap-and-relearn adding to the features.
    report.Claim(
        id="zap_iid_beats_one_epoch",
        text="i.i.d.+zap transfers better than its own 1-epoch checkpoint (before the first zap)",
        paper="— (control: the paper trains i.i.d.+zap for 10 epochs)", metric="probe_acc",
        a=label("iid", True), b=ONE_EPOCH, direction=+1, unit="pretrain_seed", shared="seed",
        paired=True, primary=True, scale=100, unit_label=" pts", digits=1),
    _zap_claim("zap_asb", "asb", "probe_acc", "sequential transfer (linear probe)",
               "zap > no zap, p < 1e-8 over 30 runs (Fig. 3)", primary=True),
    _zap_claim("zap_meta_asb", "meta_asb", "probe_acc", "sequential transfer (linear probe)",
               "67 % vs 41.5–42.2 % at 600 classes (Fig. 2)", primary=True),
    # Declared against meta-ASB without zapping, the comparison the paper names ("better than the
    # models which are meta-learned but without zapping"); comparing i.i.d.+zap with whichever method
    # without zapping turns out best would choose the comparison after seeing the data.
    report.Claim(
        id="iid_zap_vs_meta_asb",
        text="i.i.d.+zap transfers better than meta-ASB without zapping (linear probe)",
        paper="56.4 % vs ~42 % (§3.1)", metric="probe_acc", a=label("iid", True),
        b=label("meta_asb", False), direction=+1, unit="pretrain_seed", shared="seed",
        paired=False, primary=True, scale=100, unit_label=" pts", digits=1),
    # -- exploratory (unadjusted p, labelled) --
    # The chapter's own hypothesis: zapping matters once rows are revisited, so its gain should grow
    # with the number of ASB episodes. Per pre-training seed, the gain (ASB+zap − ASB, transfer
    # seeds averaged) at the full run minus the gain at the shortest checkpoint; paired by seed.
    report.Claim(
        id="zap_asb_gain_grows",
        text="Zapping's gain in ASB grows with pre-training length (full run vs shortest checkpoint)",
        paper="— (the chapter's hypothesis: zapping needs rows to be revisited)", metric="zap_gain",
        a="full run", b="shortest checkpoint", direction=+1, unit="pretrain_seed", paired=True,
        primary=False, scale=100, unit_label=" pts", digits=1),
    *[_zap_claim(f"zap_lstsq_{m}", m, "lstsq_acc", "least-squares (no-SGD) probe accuracy",
                 "— (official code's no-SGD check)", primary=False) for m in ("iid", "asb", "meta_asb")],
    # A claim of no effect: TOST with a margin of 3 accuracy points (the prior ANML replication's gap,
    # 63.8 % vs 67 %, about an eighth of the zap effect). Exploratory since ANML moved to ``paper``.
    report.Claim(
        id="meta_asb_matches_anml",
        text="meta-ASB+zap matches ANML without neuromodulation (linear probe)",
        paper="67 % vs 67 % at 600 classes (Fig. 2)", metric="probe_acc",
        a=label("meta_asb", True), b=label("anml", True), kind="equivalence", margin=0.03,
        unit="pretrain_seed", shared="seed", paired=False, primary=False, scale=100,
        unit_label=" pts", digits=1),
    *[_zap_claim(f"zap_unfrozen_{m}", m, "unfrozen_acc", "unfrozen sequential transfer",
                 "zap > no zap (App. H)", primary=False) for m in ("iid", "asb", "meta_asb")],
    *[_zap_claim(f"zap_iid_transfer_{m}", m, "iid_transfer_acc", "i.i.d. transfer",
                 "zap > no zap (Fig. 5)", primary=False) for m in ("iid", "asb", "meta_asb")],
    # A claim of no correlation: TOST on Fisher z with a margin of 0.5 in r, i.e. pre-training
    # accuracy explains under a quarter of the variance of transfer accuracy across models (a
    # "predictor" that weak could not rank methods). Unit: the pre-trained model (every method
    # ± zap; not the untrained network, checkpoints or the official-bug variant), transfer accuracy
    # averaged over its trajectories first.
    report.Claim(
        id="pretrain_acc_does_not_predict_transfer",
        text="Pre-training accuracy does not predict transfer accuracy (linear probe, across models)",
        paper="ranking by validation accuracy \"not well correlated\" with transfer (§3.1, Fig. 3)",
        kind="correlation", x="pretrain_val_acc", y="probe_acc", direction=0, margin=0.5,
        unit="model", shared="seed", primary=False),
    # The official code's i.i.d. zap draws rows √k too narrow (reference notes); if zapping is what
    # helps i.i.d. pre-training, the near-zero "zap" should help less. Needs ≥ 4 models per arm (the
    # smallest that can reach p < 0.05 in both the t test and its rank robustness check), and is only
    # meaningful when zapping i.i.d. pre-training helps at all, hence ``requires``.
    report.Claim(
        id="official_bug_lowers_transfer",
        text="The official i.i.d. zap bug lowers transfer (i.i.d.+zap with the bug < i.i.d.+zap)",
        paper="— (official code; reference notes)", metric="probe_acc",
        a=label("iid", True, "official_bug"), b=label("iid", True), direction=-1,
        unit="pretrain_seed", shared="seed", paired=False, primary=False, min_units=4,
        requires=("zap_iid",), scale=100, unit_label=" pts", digits=1),
]

#: Which pre-training methods' episode counts gate a claim (see :data:`MIN_VISITS_PER_CLASS`).
EPISODIC_METHODS_OF = {
    "zap_asb": ("asb",), "zap_meta_asb": ("meta_asb",), "iid_zap_vs_meta_asb": ("meta_asb",),
    "meta_asb_matches_anml": ("meta_asb", "anml"), "zap_unfrozen_asb": ("asb",),
    "zap_unfrozen_meta_asb": ("meta_asb",), "zap_iid_transfer_asb": ("asb",),
    "zap_iid_transfer_meta_asb": ("meta_asb",), "zap_lstsq_asb": ("asb",), "zap_lstsq_meta_asb": ("meta_asb",),
}
#: Claims about zapping i.i.d. pre-training, gated by :data:`MIN_IID_ZAPS`.
IID_ZAP_CLAIMS = ("zap_iid", "zap_iid_beats_one_epoch", "iid_zap_vs_meta_asb", "zap_unfrozen_iid",
                  "zap_iid_transfer_iid", "zap_lstsq_iid", "official_bug_lowers_transfer")
#: Claims that read "the zapped head relearns" (:data:`RELEARN_MAX_LOSS`) as their precondition: the
#: claims that attribute a difference to zapping i.i.d. pre-training (zap against no zap, in each
#: transfer protocol). Not gated: the 1-epoch control and i.i.d.+zap against meta-ASB, which compare
#: whole pre-training recipes — the control asks precisely whether epochs that start from a random
#: head add to the features. The control was taken out of this set after the regime gate (before any
#: reported run) found the 64-channel head ending its zapped epochs at loss 4.4-5.3, above the
#: threshold; the chapter says so beside its claims table.
RELEARN_CLAIMS = ("zap_iid", "zap_unfrozen_iid", "zap_iid_transfer_iid", "zap_lstsq_iid")
#: Claims about ASB's transfer, which need ASB's features to be trained (:data:`ASB_TRAINED_MARGIN`).
ASB_CLAIMS = ("zap_asb", "zap_asb_gain_grows", "zap_unfrozen_asb", "zap_iid_transfer_asb", "zap_lstsq_asb")


def iid_zaps(params) -> int:
    """How many times i.i.d.+zap re-draws the head: at the start of every ``zap_every``-th epoch,
    never before the first (official code)."""
    return (params["iid_epochs"] - 1) // params["zap_every"] if params["zap_every"] > 0 else 0


def relearn_losses(step_losses: pd.DataFrame, last: int = RELEARN_LAST_BATCHES) -> pd.Series:
    """Per zapped epoch of one i.i.d.+zap run (its ``step_losses`` table), the mean training loss
    of the epoch's last ``last`` mini-batches: how far the head relearned before the next zap."""
    zapped = step_losses[step_losses["zapped"].astype(bool)]
    return zapped.groupby("epoch")["loss"].apply(lambda x: float(x.iloc[-last:].mean()))


def relearn_loss(pretrained_runs: Sequence) -> float:
    """The precondition's measured value: the worst zapped epoch's end-of-epoch loss
    (:func:`relearn_losses`) of each reported i.i.d.+zap run, averaged over runs (NaN if none)."""
    worst = [relearn_losses(r["step_losses"]).max() for r in pretrained_runs
             if r.config["method"] == "iid" and r.config["zap"] and r.config.get("zap_fan_in", "row") == "row"
             and "step_losses" in r]
    return float(np.mean(worst)) if worst else float("nan")


def asb_lstsq_margin(lstsq: pd.DataFrame, params) -> float:
    """Mean least-squares probe accuracy of the final ASB models (± zap) minus the untrained
    network's (NaN when the probe was not run)."""
    if lstsq is None or not len(lstsq):
        return float("nan")
    final = lstsq[lstsq["at"] == lstsq["method"].map(lambda m: full_units(params, m))]
    final = final[final.fan_in == "row"]
    asb = final.loc[final.method == "asb", "lstsq_test_acc"].mean()
    untrained = final.loc[final.method == "untrained", "lstsq_test_acc"].mean()
    return float(asb - untrained)


def preconditions(params, pretrained_runs: Sequence | None = None,
                  lstsq: pd.DataFrame | None = None) -> dict[str, list[report.Precondition]]:
    """The regime checks of every claim, by claim id: episodes per background class of the episodic
    methods a claim involves (≥ :data:`MIN_VISITS_PER_CLASS`), the number of i.i.d. zaps (≥
    :data:`MIN_IID_ZAPS`); with the stored pre-training runs, whether the zapped head relearns
    (:func:`relearn_loss` ≤ :data:`RELEARN_MAX_LOSS`); with the least-squares probe rows, whether ASB
    is trained (:func:`asb_lstsq_margin` ≥ :data:`ASB_TRAINED_MARGIN`)."""
    episodes = {"asb": "asb_episodes", "meta_asb": "meta_episodes", "anml": "anml_episodes"}
    checks: dict[str, list[report.Precondition]] = {c.id: [] for c in CLAIMS}
    seeds_of = {"asb": "pretrain_seeds", "meta_asb": "meta_seeds", "anml": "anml_seeds"}
    for cid, methods in EPISODIC_METHODS_OF.items():
        for method in methods:
            if not params[seeds_of[method]]:  # not run at this profile: the claim says so itself
                continue
            visits = params[episodes[method]] / BACKGROUND_CLASSES
            checks[cid].append(report.Precondition.at_least(
                f"{METHOD_LABELS[method]} episodes per background class", visits, MIN_VISITS_PER_CLASS))
    for cid in IID_ZAP_CLAIMS:
        checks[cid].append(report.Precondition.at_least("i.i.d.+zap head zaps", iid_zaps(params), MIN_IID_ZAPS))
    if pretrained_runs is not None and iid_zaps(params) >= MIN_IID_ZAPS:
        loss = relearn_loss(pretrained_runs)
        for cid in RELEARN_CLAIMS:
            checks[cid].append(report.Precondition.at_most(
                "training loss at the end of the worst epoch after a whole-head zap", loss, RELEARN_MAX_LOSS))
    if lstsq is not None and len(lstsq):
        margin = asb_lstsq_margin(lstsq, params)
        for cid in ASB_CLAIMS:
            checks[cid].append(report.Precondition.at_least(
                "ASB − untrained, least-squares probe accuracy", margin, ASB_TRAINED_MARGIN))
    return checks


# ---------------------------------------------------------------------------------------------
# Tidy frames of the stored runs
# ---------------------------------------------------------------------------------------------
def pretraining_table(runs) -> pd.DataFrame:
    """One row per stored pre-training run: method, zap, fan_in, seed, condition, units (epochs or
    episodes), pretrain_val_acc, wall_time_s and run (the first 8 characters of its store key)."""
    rows = []
    for run in runs:
        config = run.config
        fan_in = config.get("zap_fan_in", "row")
        rows.append({"method": config["method"], "zap": config["zap"], "fan_in": fan_in,
                     "seed": config["seed"], "condition": label(config["method"], config["zap"], fan_in),
                     "units": units_of(config), "precision": config.get("precision", "fp32"),
                     "pretrain_val_acc": run["pretrain_val_acc"],
                     "wall_time_s": run.meta["wall_time_s"], "run": run.path.name[:8]})
    return pd.DataFrame(rows)


def final_runs(curves: pd.DataFrame, metric: str, params: dict | None = None) -> pd.DataFrame:
    """The final held-out accuracy of every transfer run, as a claim's tidy frame: columns
    ``method``, ``zap``, ``at``, ``pretrain_seed`` (the unit), ``seed`` (the transfer seed, shared
    by every model), ``condition`` (:func:`label`; checkpoints named by their length when
    ``params`` is given), ``model`` (unique across conditions) and ``metric``."""
    final = with_condition(transfer.final_records(curves), params)
    cols = [c for c in ("method", "zap", "at", "pretrain_seed", "seed", "condition") if c in final.columns]
    frame = final[cols].assign(**{metric: final.test_acc}).reset_index(drop=True)
    return frame.assign(model=frame.condition + " #" + frame.pretrain_seed.astype(str))


def lstsq_runs(lstsq: pd.DataFrame | None, params: dict) -> pd.DataFrame | None:
    """The least-squares probe rows (:func:`run_protocol`'s ``lstsq``) as a claim frame (metric
    ``lstsq_acc``)."""
    if lstsq is None or not len(lstsq):
        return None
    frame = with_condition(lstsq, params)
    frame = frame[["method", "zap", "at", "pretrain_seed", "seed", "condition"]].assign(
        lstsq_acc=lstsq["lstsq_test_acc"].to_numpy())
    return frame.assign(model=frame.condition + " #" + frame.pretrain_seed.astype(str))


def zap_gain_frame(probe: pd.DataFrame, params: dict, method: str = "asb") -> pd.DataFrame | None:
    """Per pre-training seed, zapping's gain (``method``+zap − ``method``, each averaged over transfer
    seeds) at the full run and at the shortest checkpoint: the dose–response claim's frame (columns
    pretrain_seed, condition ∈ {full run, shortest checkpoint}, zap_gain)."""
    rows = probe[(probe.method == method)]
    if "at" not in rows.columns or rows["at"].nunique() < 2:
        return None
    means = rows.groupby(["at", "zap", "pretrain_seed"])["probe_acc"].mean().unstack("zap")
    if True not in means.columns or False not in means.columns:
        return None
    gain = (means[True] - means[False]).rename("zap_gain").reset_index()
    first, full = gain["at"].min(), full_units(params, method)
    gain = gain[gain["at"].isin([first, full])]
    gain["condition"] = np.where(gain["at"] == full, "full run", "shortest checkpoint")
    return gain


def claim_frames(pretrained: pd.DataFrame, probe_curves: pd.DataFrame,
                 unfrozen_curves: pd.DataFrame | None = None,
                 iid_curves: pd.DataFrame | None = None, params: dict | None = None,
                 lstsq: pd.DataFrame | None = None) -> dict[str, pd.DataFrame | None]:
    """The tidy frame that tests each claim of :data:`CLAIMS`, by claim id (``None`` where the
    protocol was not run). ``pretrained`` is :func:`pretraining_table`; the curves are the
    ``report`` curves of :func:`run_probe`, :func:`run_unfrozen` and :func:`run_iid_transfer`;
    ``lstsq`` the probe's least-squares rows; ``params`` names checkpoints by their length.

    The correlation's frame holds the final pre-trained models of the paper's methods (every method
    ± zap; not the untrained network, checkpoints or the official-bug variant): one row per probe
    run with the model's pre-training accuracy beside it."""
    probe = final_runs(probe_curves, "probe_acc", params)
    by_metric = {"probe_acc": probe,
                 "unfrozen_acc": None if unfrozen_curves is None else final_runs(unfrozen_curves, "unfrozen_acc", params),
                 "iid_transfer_acc": None if iid_curves is None else final_runs(iid_curves, "iid_transfer_acc", params),
                 "lstsq_acc": lstsq_runs(lstsq, params) if params is not None else None,
                 "zap_gain": zap_gain_frame(probe, params) if params is not None else None}
    models = pretrained[(pretrained.method != "untrained") & (pretrained.fan_in == "row")]
    accuracy = models.rename(columns={"seed": "pretrain_seed"})
    correlation = probe.merge(accuracy[["condition", "pretrain_seed", "pretrain_val_acc"]],
                              on=["condition", "pretrain_seed"])
    return {c.id: correlation if c.kind == "correlation" else by_metric[c.metric] for c in CLAIMS}


# ---------------------------------------------------------------------------------------------
# The chapter: parameters and profiles (collected by zaplib.chapters.REGISTRY)
# ---------------------------------------------------------------------------------------------

CHAPTER = Chapter(
    bounds={  # checked before anything runs (zaplib.runner)
        "channels": "> 0",
        "nm_channels": "> 0",
        "iid_epochs": "> 0",
        "zap_every": "> 0",
        "asb_episodes": "> 0",
        "meta_episodes": "> 0",
        "anml_episodes": "> 0",
        "inner_lr": "> 0",
        "outer_lr": "> 0",
        "iid_lr": "> 0",
        "transfer_classes": "> 0",
        "val_pool": "> 0",
        "val_classes": "> 0",
        "eval_every": "> 0",
        "probe_lrs": "> 0",
        "finetune_classes": "> 0",
        "unfrozen_lrs": "> 0",
        "iid_transfer_lrs": "> 0",
        "iid_transfer_epochs": "> 0",
        "workers": "> 0",
        "iid_checkpoints": "> 0",
        "selection_seed": ">= -1",
        "asb_checkpoints": "> 0",
        "transfer_head_outputs": ">= 0",
        "anml_train_images": "> 0",
    },
    experiments=("zapping-pretrain", "zapping-transfer"),
    name="zapping",
    title="Reset it and forget it: zapping, ASB and meta-ASB",
    notebook="book/zapping.ipynb",
    description=(
        "Pre-trains the Omniglot convnet with i.i.d., ASB, meta-ASB (second order) and ANML, each "
        "with and without zapping, then transfers to unseen classes: sequential linear probe "
        "(Alg. 2), unfrozen sequential (App. H) and i.i.d. fine-tuning (Alg. 3), with learning "
        "rates chosen on held-apart classes (zaplib.pretraining, zaplib.transfer, "
        "zaplib.experiments.zapping)."
    ),
    params={
        "channels": (int, 16, "conv channels of the Omniglot convnet (paper: 256)"),
        "nm_channels": (int, 8, "channels of ANML's neuromodulatory net (paper: 112)"),
        "pretrain_seeds": (list[int], [0, 1, 2, 3], "pre-training seeds of i.i.d. and ASB (± zap)"),
        "meta_seeds": (list[int], [0, 1, 2, 3], "pre-training seeds of meta-ASB (± zap)"),
        "anml_seeds": (list[int], [0, 1], "pre-training seeds of ANML (always zaps)"),
        "iid_epochs": (int, 4, "epochs of i.i.d. pre-training"),
        "iid_checkpoints": (list[int], [1], "i.i.d. epochs after which the trunk is also transferred (1: the 1-epoch control)"),
        "precision": (str, "fp32", "i.i.d. pre-training precision; auto: bf16 once the gate's parity test holds",
                      ("fp32", "bf16", "auto")),
        "zap_every": (int, 1, "i.i.d.+zap: zap the whole head every k epochs (not before the first)"),
        "asb_episodes": (int, 600, "ASB episodes (paper: 9000)"),
        "asb_checkpoints": (list[int], [150, 300], "ASB episodes after which the trunk is also transferred (dose–response)"),
        "meta_episodes": (int, 400, "meta-ASB episodes (paper: 25000)"),
        "anml_episodes": (int, 400, "ANML episodes (paper: 25000)"),
        "nm_pool_last": (bool, True, "ANML: pool after the neuromodulatory net's last block (official code)"),
        "anml_train_images": (int, 15, "ANML pre-training images per class: 15 (as every other method) or 20 (official ANML code)"),
        "inner_lr": (float, 0.03, "inner-loop SGD lr of ASB / meta-ASB / ANML (paper code: 0.1 at 256 ch)"),
        "outer_lr": (float, 1e-3, "outer Adam lr"),
        "iid_lr": (float, 1e-3, "Adam lr of i.i.d. pre-training (batch 256)"),
        "transfer_classes": (int, 100, "classes in a reported sequential-transfer trajectory (paper: 600)"),
        "val_pool": (int, 150, "evaluation classes held apart for choosing learning rates"),
        "val_classes": (int, 100, "classes in a validation trajectory (at most val_pool)"),
        "eval_every": (int, 10, "record accuracy every this many classes"),
        "probe_lrs": (list[float], [1e-4 * 2 ** k for k in range(10)], "linear-probe Adam lr grid"),
        "val_seeds": (list[int], [100, 101, 102], "transfer seeds of learning-rate choice (validation pool or select split)"),
        "selection_seed": (int, -1, "pre-training seed of each arm used only to choose transfer lrs at the reported length (-1: choose on the validation pool)"),
        "gate_seeds": (list[int], [], "pre-training seeds of the regime gate (i.i.d. ± zap, bf16 vs fp32), apart from every other seed"),
        "transfer_head_outputs": (int, 0, "transfer head rows: 0 for one per transfer class (ours), 1000 as the official code (argmax over all)"),
        "least_squares": (bool, True, "also fit the official least-squares (no-SGD) probe on the cached features"),
        "finetune_protocols": (list[str], ["unfrozen", "iid"], "fine-tuning protocols run besides the linear probe"),
        "report_seeds": (list[int], [0, 1, 2, 3, 4], "transfer seeds on the report pool"),
        "finetune_methods": (list[str], ["iid", "asb"], "methods also run unfrozen and i.i.d.-transferred"),
        "finetune_pretrain_seeds": (int, 2, "how many pre-training seeds those runs use"),
        "finetune_classes": (int, 50, "classes of the unfrozen and i.i.d. transfer runs"),
        "unfrozen_lrs": (list[float], [3e-4, 1e-3, 3e-3], "Adam lr grid, unfrozen sequential transfer"),
        "iid_transfer_lrs": (list[float], [1e-3, 3e-3, 1e-2, 3e-2], "Adam lr grid, i.i.d. transfer (wide enough that the chosen lr is interior)"),
        "iid_transfer_epochs": (int, 5, "epochs of i.i.d. transfer (paper: 5)"),
        "finetune_val_seeds": (list[int], [100], "transfer seeds on the validation pool (fine-tuning)"),
        "finetune_report_seeds": (list[int], [0, 1], "transfer seeds on the report pool (fine-tuning)"),
        "bug_seeds": (list[int], [0, 1], "seeds of the official i.i.d. zap-bug experiment"),
        "workers": (int, 2, "local worker processes (one torch thread each)"),
    },
    profiles={
        "smoke": {"channels": 4, "nm_channels": 2, "pretrain_seeds": [0], "meta_seeds": [0],
                  "anml_seeds": [0], "iid_epochs": 2, "asb_episodes": 10, "meta_episodes": 3,
                  "anml_episodes": 2, "transfer_classes": 10, "val_pool": 10, "val_classes": 10,
                  "eval_every": 5, "probe_lrs": [1e-3, 1e-2], "val_seeds": [100],
                  "report_seeds": [0, 1], "finetune_pretrain_seeds": 1, "finetune_classes": 5,
                  "unfrozen_lrs": [1e-3], "iid_transfer_lrs": [1e-3], "iid_transfer_epochs": 1,
                  "finetune_report_seeds": [0], "bug_seeds": [0]},
        "quick": {},
        # long: the paper's protocol at CPU scale (issue 14). Cut, in the order: ANML (to
        # paper), unfrozen transfer (to paper), the longest ASB checkpoint (3,000 episodes, not 6,000),
        # and one lr grid point: the i.i.d. transfer grid, widened down to 3e-4 when its selection
        # chose 1e-3 at the old bottom edge, drops 3e-2 (chosen by neither arm), which brought the
        # recorded cold time from 180.5 to 179.2 min.
        "long": {"channels": 64, "nm_channels": 32, "pretrain_seeds": [0, 1, 2, 3, 4],
                 "meta_seeds": [0, 1, 2, 3, 4], "anml_seeds": [], "selection_seed": 5,
                 "gate_seeds": [900, 901, 902], "precision": "auto", "iid_epochs": 8,
                 "iid_checkpoints": [1], "asb_episodes": 3000, "asb_checkpoints": [750, 1500],
                 "meta_episodes": 1000, "transfer_classes": 600, "val_pool": 59, "val_classes": 59,
                 "eval_every": 50, "probe_lrs": [1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3],
                 "report_seeds": [0, 1, 2, 3, 4], "val_seeds": [103, 104, 105],
                 "finetune_methods": ["iid"], "finetune_protocols": ["iid"],
                 "finetune_pretrain_seeds": 5, "finetune_classes": 200,
                 "iid_transfer_lrs": [3e-4, 1e-3, 3e-3, 1e-2], "finetune_val_seeds": [103],
                 "finetune_report_seeds": [0, 1, 2], "bug_seeds": [0, 1, 2, 3, 4]},
        "paper": {"channels": 256, "nm_channels": 112, "pretrain_seeds": [0, 1, 2],
                  "meta_seeds": [0, 1, 2], "anml_seeds": [0, 1, 2], "iid_epochs": 10,
                  "asb_episodes": 9000, "meta_episodes": 25000, "anml_episodes": 25000,
                  "inner_lr": 0.1, "transfer_classes": 600, "val_pool": 59, "val_classes": 59,
                  "eval_every": 50,
                  "probe_lrs": [0.055, 0.01, 0.0055, 0.001, 0.0007, 0.0004, 0.0001, 0.00007, 0.00004],
                  "report_seeds": list(range(10)), "finetune_methods": ["iid", "asb", "meta_asb"],
                  "finetune_pretrain_seeds": 3, "finetune_classes": 600, "selection_seed": 3,
                  "val_seeds": [100, 101, 102], "transfer_head_outputs": 1000, "anml_train_images": 20,
                  "finetune_report_seeds": list(range(10)), "bug_seeds": [0, 1, 2, 3]},
    },
)
