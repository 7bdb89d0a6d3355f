"""Chapter module of ``book/frozen_weights.ipynb``: its parameters and profiles."""
from __future__ import annotations

from ..chapters import Chapter

CHAPTER = Chapter(
    experiments=("frozen_weights",),
    name="frozen_weights",
    title="Mutually frozen weights: weight decay, plasticity vs invariance, and resets",
    notebook="book/frozen_weights.ipynb",
    description=(
        "Pre-trains plain ReLU nets (no normalisation) with SGD and weight decay on clean or blurred "
        "images, tracks frozen / mutually frozen / plain sparse weights, probes their update "
        "dynamics when retrained, relates input sensitivity to adaptability, and compares "
        "resetting the mutually frozen connections with no reset, full re-init and random or "
        "all-frozen resets across target-set sizes and domain gaps (zaplib.frozen)."
    ),
    params={
        "transfers": (list[str], ["mnist:blur4>mnist", "mnist:blur4>fashion_mnist", "mnist>fashion_mnist",
                                  "fashion_mnist:blur4>fashion_mnist"],
                      "SOURCE>TARGET pairs; a task is mnist | fashion_mnist | cifar10, ':blurK' blurs it"),
        "model": (str, "mlp", "plain ReLU net without normalisation", ("mlp", "small_cnn")),
        "width": (int, 128, "hidden units per layer (MLP) or first-conv channels (SmallCNN)"),
        "depth": (int, 2, "hidden layers of the MLP"),
        "seeds": (list[int], [0, 1, 2], "seeds; each seed is trained with every weight decay"),
        "weight_decays": (list[float], [0.0, 0.003, 0.01, 0.03, 0.06], "coupled L2 weight decays λ"),
        "lr": (float, 0.05, "SGD learning rate (pre-training and retraining)"),
        "momentum": (float, 0.9, "SGD momentum"),
        "batch_size": (int, 128, "mini-batch size"),
        "n_pretrain": (int, 8000, "pre-training images (a fixed random subset)"),
        "pretrain_epochs": (int, 15, "pre-training epochs (fixed: no early stopping)"),
        "n_target": (int, 10000, "target images at target-set fraction 1.0"),
        "n_val": (int, 1000, "validation images held out of each task's training set"),
        "n_test": (int, 2000, "test images per task"),
        "target_fractions": (list[float], [0.01, 0.1, 1.0], "target-set sizes as fractions of n_target"),
        "finetune_epochs": (float, 3.0, "retraining epochs over the target set ..."),
        "finetune_min_steps": (int, 150, "... but at least this many SGD steps"),
        "finetune_weight_decays": (list[float], [0.001, -1.0],
                                   "retraining λ: the first is the main analysis; -1 = each network's own pre-training λ"),
        "interventions": (list[str], ["none", "reset_mutual", "reset_random", "reset_frozen", "reinit"],
                          "what happens to the pre-trained net before retraining"),
        "eps": (float, 0.1, "frozen: |w| < eps · the layer's init std"),
        "n_sensitivity": (int, 200, "test images for the input sensitivity E‖∂f/∂x‖"),
        "track_fraction": (float, 1.0, "target-set fraction whose retraining is probed step by step"),
        "n_probes": (int, 12, "probes of the update dynamics (log-spaced steps)"),
        "probe_batch": (int, 512, "target images for the probed gradients"),
    },
    profiles={
        "smoke": {"transfers": ["mnist:blur4>mnist"], "width": 32, "seeds": [0],
                  "weight_decays": [0.0, 0.06], "n_pretrain": 1000, "pretrain_epochs": 2,
                  "n_target": 1000, "n_val": 200, "n_test": 500, "target_fractions": [0.1, 1.0],
                  "finetune_epochs": 1.0, "finetune_min_steps": 20, "n_sensitivity": 20,
                  "n_probes": 4, "probe_batch": 128, "finetune_weight_decays": [0.001]},
        "quick": {},
        "paper": {"transfers": ["mnist:blur4>mnist", "mnist:blur4>fashion_mnist", "mnist>fashion_mnist",
                                "fashion_mnist:blur4>fashion_mnist", "cifar10:blur4>cifar10"],
                  "model": "small_cnn", "width": 32, "seeds": [0, 1, 2, 3, 4],
                  "weight_decays": [0.0, 0.001, 0.003, 0.01, 0.03, 0.06], "n_pretrain": 60000,
                  "pretrain_epochs": 60, "n_target": 60000, "n_val": 5000, "n_test": 10000,
                  "finetune_epochs": 30.0, "finetune_min_steps": 1000, "n_sensitivity": 1000},
    },
)
