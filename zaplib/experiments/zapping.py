"""Configs of the chapter "Reset it and forget it" (Frati et al. 2023), built from its parameters.

The experiment functions themselves live in :mod:`zaplib.meta` (:func:`~zaplib.meta.pretrain_run`,
stored as ``zapping-pretrain``) and :mod:`zaplib.transfer` (:func:`~zaplib.transfer.transfer_run`,
stored as ``zapping-transfer``); this module only turns the chapter's parameters into their plain
JSON configs, so that the notebook, the tests and a reader's script build exactly the same runs.
"""
from __future__ import annotations

from ..meta import PRETRAIN_EXPERIMENT, pretrain_run  # noqa: F401  (re-exported for the notebook)
from ..transfer import TRANSFER_EXPERIMENT, run_protocol  # noqa: F401

METHOD_LABELS = {"untrained": "untrained", "iid": "i.i.d.", "asb": "ASB", "meta_asb": "meta-ASB",
                 "anml": "ANML"}
# relative cost of one unit of work, used only to submit the longest runs first (load balance)
_COST = {"iid": 6.0, "asb": 0.07, "meta_asb": 0.2, "anml": 0.4, "untrained": 0.0}


def label(method: str, zap: bool, fan_in: str = "row") -> str:
    """Display name, e.g. ``ASB+zap``; ANML always zaps and is called just ANML."""
    if method == "anml":
        return "ANML"
    name = METHOD_LABELS[method] + ("+zap" if zap else "")
    return name + " (official zap bug)" if fan_in == "official_bug" else name


def pretrain_config(params, method: str, zap: bool, seed: int, fan_in: str = "row") -> dict:
    """The plain config of one pre-training run (keys documented in :func:`zaplib.meta.pretrain_run`)."""
    config = {"method": method, "zap": bool(zap), "seed": int(seed), "channels": params["channels"],
              "head_outputs": 1000, "split_seed": 0, "zap_bias": "zero"}
    if method == "untrained":
        return config
    if method == "iid":
        config.update(epochs=params["iid_epochs"], batch_size=256, lr=params["iid_lr"])
        if zap:
            config.update(zap_every=params["zap_every"], zap_rows=None, zap_fan_in=fan_in)
    else:
        episodes = {"asb": "asb_episodes", "meta_asb": "meta_episodes", "anml": "anml_episodes"}[method]
        config.update(episodes=params[episodes], inner_lr=params["inner_lr"],
                      outer_lr=params["outer_lr"], K=20, R=64)
        if method == "anml":
            config["nm_channels"] = params["nm_channels"]
    return config


def _cost(config: dict) -> float:
    units = config.get("epochs") or config.get("episodes") or 0
    return _COST[config["method"]] * units


def pretrain_configs(params) -> list[dict]:
    """Every pre-training run of the chapter, longest first: i.i.d. and ASB ± zap on
    ``pretrain_seeds``, meta-ASB ± zap on ``meta_seeds``, ANML (zap) on ``anml_seeds``, and the
    untrained network on ``pretrain_seeds`` (what the features give before any pre-training)."""
    configs = [pretrain_config(params, "untrained", False, s) for s in params["pretrain_seeds"]]
    for method, seeds in (("iid", params["pretrain_seeds"]), ("asb", params["pretrain_seeds"]),
                          ("meta_asb", params["meta_seeds"])):
        for zap in (False, True):
            configs += [pretrain_config(params, method, zap, s) for s in seeds]
    configs += [pretrain_config(params, "anml", True, s) for s in params["anml_seeds"]]
    return sorted(configs, key=_cost, reverse=True)


def bug_configs(params) -> list[dict]:
    """i.i.d.+zap with the official i.i.d. path's zap (std ≈ √(1/k) too small; reference notes)."""
    return [pretrain_config(params, "iid", True, s, fan_in="official_bug") for s in params["bug_seeds"]]


def probe_common(params) -> dict:
    """Shared keys of the sequential linear-probe transfer runs (Alg. 2)."""
    return {"val_pool": params["val_pool"], "class_split_seed": 0, "split_seed": 0,
            "eval_every": params["eval_every"]}


def finetune_configs(params, configs: list[dict]) -> list[dict]:
    """The pre-trained models that are also fine-tuned (unfrozen and i.i.d. transfer)."""
    keep = set(params["pretrain_seeds"][: params["finetune_pretrain_seeds"]])
    return [c for c in configs if c["method"] in params["finetune_methods"] and c["seed"] in keep]


def run_probe(params, configs, executor=None, store=None, progress=True) -> dict:
    """Sequential linear-probe transfer with LR selection on the validation pool (Alg. 2)."""
    return run_protocol("probe", configs, lrs=params["probe_lrs"], val_seeds=params["val_seeds"],
                        report_seeds=params["report_seeds"], classes=params["transfer_classes"],
                        val_classes=params["val_classes"], common=probe_common(params),
                        executor=executor, store=store, progress=progress)


def run_unfrozen(params, configs, executor=None, store=None, progress=True) -> dict:
    """Sequential transfer with every parameter trained (App. H)."""
    return run_protocol("unfrozen", configs, lrs=params["unfrozen_lrs"],
                        val_seeds=params["finetune_val_seeds"],
                        report_seeds=params["finetune_report_seeds"],
                        classes=params["finetune_classes"],
                        val_classes=min(params["finetune_classes"], params["val_classes"]),
                        common=probe_common(params), executor=executor, store=store,
                        progress=progress)


def run_iid_transfer(params, configs, executor=None, store=None, progress=True) -> dict:
    """i.i.d. fine-tuning on the transfer classes (Alg. 3): Adam, batch 32, curves twice an epoch."""
    common = {"val_pool": params["val_pool"], "class_split_seed": 0, "split_seed": 0,
              "epochs": params["iid_transfer_epochs"], "batch_size": 32, "evals_per_epoch": 2}
    return run_protocol("iid", configs, lrs=params["iid_transfer_lrs"],
                        val_seeds=params["finetune_val_seeds"],
                        report_seeds=params["finetune_report_seeds"],
                        classes=params["finetune_classes"],
                        val_classes=min(params["finetune_classes"], params["val_classes"]),
                        common=common, executor=executor, store=store, progress=progress)
