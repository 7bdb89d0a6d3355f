"""Chapter module of ``book/negative_pretraining.ipynb``: its parameters and profiles."""
from __future__ import annotations

from ..chapters import Chapter

CHAPTER = Chapter(
    experiments=("negative_pretraining",),
    name="negative_pretraining",
    title="The negative pre-training effect and three ways to fix it",
    notebook="book/negative_pretraining.ipynb",
    description=(
        "Learning paths over blur, contrast and shift: pre-train on corrupted images, then train on "
        "clean ones, against a clean-only baseline; interventions A (learning rates), B "
        "(discretising the path, 1-D and 2-D) and C (bias reset), appendix statistics and a "
        "sharpness probe (zaplib.learning_paths)."
    ),
    params={
        "datasets": (list[str], ["cifar10"], "datasets: cifar10 (offline: the JPEG-lossy copy), fashion_mnist, mnist, svhn (`python -m zaplib.data prepare svhn`)"),
        "seeds": (list[int], [0, 1, 2, 3, 4], "seeds of the baseline and of interventions A, C, B-blur"),
        "disc_seeds": (list[int], [0, 1, 2], "seeds of the contrast / shift / 2-D paths (paper: 3)"),
        "model": (str, "resnet10", "network (zaplib.models): a ResNet-10 is ResNet-18 with one block per stage",
                  ("resnet10", "resnet18", "small_cnn")),
        "width": (int, 4, "first-layer channels (ResNets: stage-1 width, 64 = standard; SmallCNN: first conv)"),
        "hidden": (int, 128, "hidden units of the SmallCNN's last layer (other models ignore it)"),
        "resolution": (int, 16, "image side after area down-sampling (0 = native)"),
        "n_train": (int, 3000, "training images, a seeded random subset (0 = all but n_val)"),
        "n_val": (int, 1000, "validation images (from the training set) for early stopping"),
        "n_test": (int, 0, "test images (0 = the whole test set)"),
        "batch_size": (int, 128, "mini-batch size"),
        "lr": (float, 0.01, "SGD learning rate of every task (paper: 1e-3)"),
        "lr_factors": (list[float], [2.0], "intervention A: other rates as multiples of lr (paper: 0.5, 2)"),
        "momentum": (float, 0.9, "SGD momentum"),
        "weight_decay": (float, 1e-3, "SGD weight decay"),
        "first_epochs": (int, 10, "fixed length of the first task, last weights kept (0 = early-stopped)"),
        "max_epochs": (int, 200, "max epochs per task (A, C, baseline)"),
        "patience": (int, 8, "early-stopping patience (A, C, baseline; paper: 50)"),
        "disc_max_epochs": (int, 200, "max epochs per task of the discretised paths (paper: 100)"),
        "disc_patience": (int, 4, "patience of the discretised paths (paper: 20)"),
        "blur_k": (float, 2.0, "blur factor k of the source task (paper: 4 on 32 px, i.e. 8 px)"),
        "contrast_start": (float, 0.0, "contrast level of the source task (0 = the 10% floor)"),
        "shift_start": (float, 4.0, "random-shift width (px) of the source task"),
        "n_steps": (list[int], [2, 3], "intervention B: numbers of tasks N on the 1-D paths"),
        "n_steps_2d": (list[int], [2, 3], "numbers of tasks N on the 2-D paths (N=2: the direct jump from the 2-D source)"),
        "paths_2d": (list[str], ["blur+contrast", "blur+shift"], "2-D paths, transform pairs a+b (each: 3 orders)"),
        "bias_shift": (float, 0.01, "intervention C: what the bias reset adds to every bias"),
        "control": (bool, True, "also run clean → clean with the first task's process (own control)"),
        "n_probe": (int, 256, "training images of the probe batch (activity, sharpness)"),
        "sharpness_sigma": (float, 0.1, "relative size of the random weight perturbation"),
        "hessian_iters": (int, 0, "power iterations for the top Hessian eigenvalue (0 = off)"),
        "workers": (int, 2, "local worker processes (one torch thread each)"),
    },
    profiles={
        "smoke": {"seeds": [0, 1], "disc_seeds": [0], "width": 4, "hidden": 16, "n_train": 300,
                  "n_val": 100, "n_test": 500, "first_epochs": 2, "max_epochs": 3, "patience": 1,
                  "disc_max_epochs": 2, "disc_patience": 1, "lr_factors": [0.5, 2.0],
                  "n_steps": [2, 3], "n_steps_2d": [3], "paths_2d": ["blur+contrast", "blur+shift"],
                  "n_probe": 64, "hessian_iters": 2},
        "quick": {},
        "paper": {"datasets": ["cifar10", "fashion_mnist", "mnist", "svhn"], "seeds": list(range(10)),
                  "model": "resnet18", "width": 64, "resolution": 0, "n_train": 0, "n_val": 5000,
                  "lr": 1e-3, "lr_factors": [0.5, 2.0], "first_epochs": 0, "patience": 50,
                  "disc_max_epochs": 100, "disc_patience": 20, "blur_k": 4.0, "shift_start": 8.0,
                  "n_steps": [2, 3, 5, 10], "n_steps_2d": [2, 3, 5],
                  "paths_2d": ["blur+contrast", "blur+shift"], "hessian_iters": 20},
    },
)
