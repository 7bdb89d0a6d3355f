"""The reset-vocabulary chapter's run: every op goes through resets.apply and changes what it says."""
import pytest
import torch

from zaplib import data, models
from zaplib.experiments import toolkit

TINY = {"seed": 0, "dataset": "mnist", "model": "small_cnn", "width": 4, "n_train": 256, "n_test": 100,
        "train_epochs": 1, "batch_size": 64, "lr": 1e-3, "retrain_steps": 2, "zap_class": 3,
        "snip_keep": 0.8, "shrink_perturb": [0.4, 0.1], "bias_shift": 0.01, "device": "cpu"}


@pytest.fixture(scope="module")
def tiny_run():
    try:
        data.resolve("mnist")
    except data.DatasetError:
        pytest.skip("MNIST is not prepared")
    return toolkit.run(TINY)


def test_each_op_changes_the_entries_it_names(tiny_run):
    changed = tiny_run["resets"].set_index("op")["entries_changed"]
    model = models.build(TINY)
    head = model.head.weight
    n_bias = sum(p.numel() for name, p in model.named_parameters() if name.endswith("bias"))
    assert changed["none"] == 0
    assert changed["zap_class"] == head.shape[1]
    assert changed["zap_all"] == head.numel()
    assert changed["shift_biases"] == n_bias
    assert changed["shrink_perturb"] == tiny_run["n_params"]
    snip = tiny_run["snip"]
    assert snip["reset"].sum() / snip["entries"].sum() == pytest.approx(0.2, abs=1e-3)
    # LURE re-draws only the weight tensors among the lowest-saliency 20 %
    assert 0 < changed["snip_reinit"] <= snip["reset"].sum()


def test_run_is_reproducible(tiny_run):
    again = toolkit.run(TINY)
    assert again["resets"].equals(tiny_run["resets"])
    assert torch.equal(again["heads"]["row"], tiny_run["heads"]["row"])
