"""Configs of the chapter "Reset it and forget it" (Frati et al. 2023), built from its parameters.

The experiment functions themselves live in :mod:`zaplib.pretraining` (:func:`~zaplib.pretraining.pretrain_run`,
stored as ``zapping-pretrain``) and :mod:`zaplib.transfer` (:func:`~zaplib.transfer.transfer_run`,
stored as ``zapping-transfer``); this module only turns the chapter's parameters into their plain
JSON configs, so that the notebook, the tests and a reader's script build exactly the same runs.
"""
from __future__ import annotations

from ..chapters import Chapter
from ..pretraining import PRETRAIN_EXPERIMENT, pretrain_run  # noqa: F401  (re-exported for the notebook)
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
    """The plain config of one pre-training run (keys documented in :func:`zaplib.pretraining.pretrain_run`)."""
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


# ---------------------------------------------------------------------------------------------
# The chapter: parameters and profiles (collected by zaplib.chapters.REGISTRY)
# ---------------------------------------------------------------------------------------------

CHAPTER = Chapter(
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
        "zap_every": (int, 1, "i.i.d.+zap: zap the whole head every k epochs (not before the first)"),
        "asb_episodes": (int, 600, "ASB episodes (paper: 9000)"),
        "meta_episodes": (int, 400, "meta-ASB episodes (paper: 25000)"),
        "anml_episodes": (int, 400, "ANML episodes (paper: 25000)"),
        "inner_lr": (float, 0.03, "inner-loop SGD lr of ASB / meta-ASB / ANML (paper code: 0.1 at 256 ch)"),
        "outer_lr": (float, 1e-3, "outer Adam lr"),
        "iid_lr": (float, 1e-3, "Adam lr of i.i.d. pre-training (batch 256)"),
        "transfer_classes": (int, 100, "classes in a reported sequential-transfer trajectory (paper: 600)"),
        "val_pool": (int, 150, "evaluation classes held apart for choosing learning rates"),
        "val_classes": (int, 100, "classes in a validation trajectory (<= val_pool)"),
        "eval_every": (int, 10, "record accuracy every this many classes"),
        "probe_lrs": (list[float], [1e-4 * 2 ** k for k in range(10)], "linear-probe Adam lr grid"),
        "val_seeds": (list[int], [100, 101, 102], "transfer seeds on the validation pool"),
        "report_seeds": (list[int], [0, 1, 2, 3, 4], "transfer seeds on the report pool"),
        "finetune_methods": (list[str], ["iid", "asb"], "methods also run unfrozen and i.i.d.-transferred"),
        "finetune_pretrain_seeds": (int, 2, "how many pre-training seeds those runs use"),
        "finetune_classes": (int, 50, "classes of the unfrozen and i.i.d. transfer runs"),
        "unfrozen_lrs": (list[float], [3e-4, 1e-3, 3e-3], "Adam lr grid, unfrozen sequential transfer"),
        "iid_transfer_lrs": (list[float], [1e-3, 3e-3, 1e-2], "Adam lr grid, i.i.d. transfer"),
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
        "paper": {"channels": 256, "nm_channels": 112, "pretrain_seeds": [0, 1, 2],
                  "meta_seeds": [0, 1, 2], "anml_seeds": [0, 1, 2], "iid_epochs": 10,
                  "asb_episodes": 9000, "meta_episodes": 25000, "anml_episodes": 25000,
                  "inner_lr": 0.1, "transfer_classes": 600, "val_pool": 59, "val_classes": 59,
                  "eval_every": 50,
                  "probe_lrs": [0.055, 0.01, 0.0055, 0.001, 0.0007, 0.0004, 0.0001, 0.00007, 0.00004],
                  "report_seeds": list(range(10)), "finetune_methods": ["iid", "asb", "meta_asb"],
                  "finetune_pretrain_seeds": 3, "finetune_classes": 600,
                  "finetune_report_seeds": list(range(10)), "bug_seeds": [0, 1, 2]},
    },
)
