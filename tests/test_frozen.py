"""Behaviour of zaplib.frozen (chapter "Mutually frozen weights"): frozen weights under gradient
descent with weight decay, the interventions, the per-model weight decay, the statistics, and one
tiny end-to-end run."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zaplib import data, frozen, models, resets, train


def _mnist_or_skip():
    """These tests train on real MNIST: skip (not fail) where $ZAPLIB_DATA has no mnist.npz."""
    try:
        data.resolve("mnist")
    except data.MissingDatasetError as exc:
        pytest.skip(str(exc).split(". To fix")[0])


def dead_unit_mlp():
    """4 → 3 → 3 → 2 MLP with every weight ±0.5 and bias 0.3, then: unit 1 of the first hidden
    layer dead (incoming weights and bias 0) with all outgoing weights 0 → its incoming and outgoing
    weights are mutually frozen; weight (0, 2) of the first layer is 0 but unit 0 is alive and its
    outgoing weights large → plain sparse."""
    torch.manual_seed(0)
    model = models.MLP(4, hidden=(3, 3), num_classes=2)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.sign(torch.randn_like(p)))
        for p in (model.body[1].bias, model.body[3].bias, model.head.bias):
            p.fill_(0.3)
        l1, l2 = model.body[1], model.body[3]
        l1.weight[1, :] = 0.0
        l1.bias[1] = 0.0
        l2.weight[:, 1] = 0.0
        l1.weight[0, 2] = 0.0
    return model


def teacher_batch(n=256, seed=0):
    """Inputs where feature 2 decides the label, so the plain sparse weight (0, 2) is useful."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 2] > 0).long()
    return x, y


def test_mutually_frozen_weight_gets_exactly_zero_gradient_plain_sparse_does_not():
    model = dead_unit_mlp()
    groups = frozen.weight_groups(model, eps=0.1)
    g1, g2 = groups["body.1.weight"], groups["body.3.weight"]
    assert (g1[1] == 0).all() and (g2[:, 1] == 0).all()   # the dead unit's in- and outgoing weights
    assert g1[0, 2] == 1                                   # plain sparse
    assert (g1[0, [0, 1, 3]] == 2).all()
    x, y = teacher_batch()
    loss = F.cross_entropy(model(x), y)
    w1, w2 = model.body[1].weight, model.body[3].weight
    d1, d2 = torch.autograd.grad(loss, [w1, w2])
    # δ of unit 1 = ReLU'(z_1)·Σ_k W2[k,1]δ_k = 0 and its activation ReLU(0) = 0: both exactly zero
    assert torch.equal(d1[1], torch.zeros(4)) and torch.equal(d2[:, 1], torch.zeros(3))
    assert abs(float(d1[0, 2])) > 1e-3                     # the plain sparse weight is pulled


def test_under_weight_decay_mutual_stays_frozen_while_plain_sparse_regrows():
    model = dead_unit_mlp()
    sigma = models.init_weight_std(model, model.body[1])
    with torch.no_grad():   # small but non-zero: only the decay term should act on them
        model.body[1].weight[1, :] = 0.05 * sigma
        model.body[3].weight[:, 1] = 0.05 * sigma
    groups = frozen.weight_groups(model, eps=0.1)
    before = frozen.dynamics_probe(model, groups, 0.1, *teacher_batch())
    x, y = teacher_batch(1024)
    (trained,), _, _ = frozen.train_stacked(
        [model], [1e-2], x, y, steps=300, batch_size=64, lr=0.05, momentum=0.9,
        generators=[torch.Generator().manual_seed(0)])
    after = frozen.dynamics_probe(trained, groups, 0.1, *teacher_batch()).set_index(["layer", "group"])
    before = before.set_index(["layer", "group"])
    mutual = after.loc[("body.1", "mutually_frozen")]
    assert mutual.still_frozen == 1.0
    # its gradient is proportional to its (tiny) partners: negligible next to a live weight's
    assert mutual.abs_grad < 1e-2 * after.loc[("body.1", "not_frozen")].abs_grad
    # pure decay: w ← w·(1 − lr·λ) per step (with momentum), so they shrink, never grow
    assert mutual.abs_w < 0.5 * before.loc[("body.1", "mutually_frozen")].abs_w
    assert after.loc[("body.3", "mutually_frozen")].still_frozen == 1.0
    sparse = after.loc[("body.1", "plain_sparse")]
    assert sparse.still_frozen == 0.0 and sparse.abs_w > 2 * 0.1   # regrew well past ε·σ


@pytest.mark.parametrize("grad_mode", ["autograd", "func"])
def test_add_weight_decay_matches_torch_sgd_weight_decay(grad_mode):
    torch.manual_seed(1)
    nets = [models.MLP(6, hidden=(5,), num_classes=3) for _ in range(2)]
    copies = [copy.deepcopy(m) for m in nets]
    wds = [0.0, 0.1]
    x, y = torch.randn(2, 8, 6), torch.randint(0, 3, (2, 8))
    stacked = train.StackedModels(nets, optimizer="sgd", lr=0.1, momentum=0.9, grad_mode=grad_mode)
    frozen.add_weight_decay(stacked, wds)
    for _ in range(3):
        stacked.step(x, y)
    got = stacked.unstack()
    for s, (net, wd) in enumerate(zip(copies, wds)):
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=wd)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(net(x[s]), y[s]).backward()
            opt.step()
        for (name, p), q in zip(net.named_parameters(), got[s].parameters()):
            torch.testing.assert_close(q, p, atol=1e-6, rtol=1e-5, msg=name)
    with pytest.raises(ValueError, match="one weight decay per model"):
        frozen.add_weight_decay(stacked, [0.1])


def _changed(a, b):
    return {n: (p != dict(b.named_parameters())[n]) for n, p in a.named_parameters()}


def test_interventions_reset_exactly_what_they_say(gen):
    model = dead_unit_mlp()
    mutual, _ = resets.mutually_frozen_mask(model, 0.1)
    frozen_masks = resets.frozen_mask(model, 0.1)
    n_mutual = sum(int(m.sum()) for m in mutual.values())
    assert n_mutual == 4 + 3

    net, n = frozen.intervene(model, "none", 0.1, gen)
    assert n == 0 and net is not model and not any(c.any() for c in _changed(net, model).values())

    net, n = frozen.intervene(model, "reset_mutual", 0.1, gen)
    changed = _changed(net, model)
    assert n == n_mutual
    for name, mask in mutual.items():
        assert torch.equal(changed[name], mask), name          # exactly the masked entries
    assert not any(changed[name].any() for name in changed if name.endswith("bias"))

    net, n = frozen.intervene(model, "reset_random", 0.1, torch.Generator().manual_seed(3))
    changed = _changed(net, model)
    assert n == n_mutual
    for name, mask in mutual.items():                           # same count, per tensor
        assert int(changed[name].sum()) == int(mask.sum()), name
    assert not all(torch.equal(changed[k], mutual[k]) for k in mutual)

    net, n = frozen.intervene(model, "reset_frozen", 0.1, gen)
    assert n == sum(int(m.sum()) for m in frozen_masks.values()) == n_mutual + 1
    changed = _changed(net, model)
    assert changed["body.1.weight"][0, 2]                       # the plain sparse weight too

    net, n = frozen.intervene(model, "reinit", 0.1, gen)
    assert n == sum(p.numel() for p in model.parameters())
    assert all(c.float().mean() > 0.9 for c in _changed(net, model).values())
    with pytest.raises(ValueError, match="unknown intervention"):
        frozen.intervene(model, "zap", 0.1, gen)


def test_correlation_interval_and_within_group_centering():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = 0.6 * x + 0.8 * rng.normal(size=200)          # true r = 0.6
    c = frozen.correlation(x, y)
    assert c["pearson_lo"] < 0.6 < c["pearson_hi"] and c["pearson_hi"] - c["pearson_lo"] < 0.3
    assert c["spearman_lo"] < c["spearman_rho"] < c["spearman_hi"]
    # a confounder: group g shifts x and y together; within groups they are independent
    g = np.repeat(np.arange(4), 50)
    xc, yc = rng.normal(size=200) + 3 * g, rng.normal(size=200) + 3 * g
    assert frozen.correlation(xc, yc)["pearson_r"] > 0.8
    within = frozen.correlation(xc, yc, groups=g)
    assert within["pearson_lo"] < 0 < within["pearson_hi"]
    assert math.isnan(frozen.correlation([1, 2, 3], [1, 2, 3])["pearson_r"])  # too few points


def test_tasks_subsets_schedules():
    assert frozen.parse_task("mnist") == ("mnist", 1.0)
    assert frozen.parse_task("fashion_mnist:blur4") == ("fashion_mnist", 4.0)
    assert frozen.parse_transfer("mnist:blur4>mnist") == ("mnist:blur4", "mnist")
    with pytest.raises(ValueError):
        frozen.parse_task("mnist:noise2")
    with pytest.raises(ValueError):
        frozen.parse_transfer("mnist")
    _mnist_or_skip()
    clean = frozen.load_task("mnist", 300, 50, 20, "cpu")
    blurred = frozen.load_task("mnist:blur4", 300, 50, 20, "cpu")
    assert len(clean["x_train"]) == 300 and len(clean["x_val"]) == 50
    assert torch.equal(blurred["x_test"], data.blur(clean["x_test"], 4))
    assert torch.equal(blurred["y_train"], clean["y_train"])
    small = frozen.load_task("mnist", 100, 50, 20, "cpu")
    assert torch.equal(small["x_train"], clean["x_train"][:100])          # nested prefixes
    flat = lambda t: {bytes(img.numpy()) for img in t}
    assert not flat(clean["x_train"]) & flat(clean["x_val"])               # disjoint from validation
    assert frozen.finetune_steps(100, 128, 3, 150) == 150
    assert frozen.finetune_steps(10000, 128, 3, 150) == 3 * 78
    assert frozen.probe_schedule(100, 5)[:2] == [0, 1] and frozen.probe_schedule(100, 5)[-1] == 100


def test_run_tiny_end_to_end():
    _mnist_or_skip()
    params = {"transfers": ["mnist:blur4>mnist"], "model": "mlp", "width": 16, "depth": 2,
              "seeds": [0], "weight_decays": [0.0, 0.05], "lr": 0.05, "momentum": 0.9,
              "batch_size": 64, "n_pretrain": 512, "pretrain_epochs": 2, "n_target": 256,
              "n_val": 64, "n_test": 128, "target_fractions": [0.25, 1.0], "finetune_epochs": 1,
              "finetune_min_steps": 5, "interventions": list(frozen.INTERVENTIONS), "eps": 0.1,
              "n_sensitivity": 8, "track_fraction": 1.0, "n_probes": 3, "probe_batch": 64}
    # the config zaplib.experiments.frozen_weights.configs makes of these parameters
    config = {"source": "mnist:blur4", "targets": ["mnist"], "finetune_weight_decay": 0.001,
              **{k: v for k, v in params.items() if k != "transfers"}}
    out = frozen.pretrain_and_retrain(config)
    assert set(out) == {"pretrain", "models", "finetune", "dynamics", "timing"}  # timing: issue 17
    pre = out["pretrain"]
    assert sorted(pre.epoch.unique()) == [0, 1, 2] and set(pre.layer) >= {"body.1", "head", "all"}
    sens = out["models"]["sensitivity[mnist]"]
    assert len(sens) == 2 and (sens > 0).all()
    assert sens[1] < sens[0]       # same init and batches; only the weight decay differs
    ft = out["finetune"]
    assert len(ft) == 2 * 2 * len(frozen.INTERVENTIONS)
    assert (ft.finetune_weight_decay == 0.001).all()
    by = ft.set_index(["weight_decay", "fraction", "intervention"])
    for wd in (0.0, 0.05):
        for f in (0.25, 1.0):
            assert by.loc[(wd, f, "reset_random"), "n_reset"] == by.loc[(wd, f, "reset_mutual"), "n_reset"]
            assert by.loc[(wd, f, "reinit"), "reset_frac"] == 1.0
            if by.loc[(wd, f, "reset_mutual"), "n_reset"] == 0:   # a no-op reset: same batches, same result
                assert by.loc[(wd, f, "reset_mutual"), "test_acc"] == by.loc[(wd, f, "none"), "test_acc"]
    assert (ft.n_target.unique() == [64, 256]).all()
    dyn = out["dynamics"]
    assert set(dyn.group) == set(frozen.GROUPS) and dyn.fraction.unique().tolist() == [1.0]
    assert dyn.step.min() == 0 and dyn.step.max() == ft.steps.max()


def test_run_tiny_end_to_end_with_the_long_options():
    """The issue-17 keys on a tiny run: declared cells at λ*, paired draws (reinit = the seed's own
    init), the unit-level reset, best-validation readout with a cosine schedule, side-by-side
    training, and the ε / unit / nuisance tables."""
    _mnist_or_skip()
    config = {"source": "mnist", "targets": ["mnist"], "model": "small_cnn", "width": 4, "seeds": [0],
              "weight_decays": [0.0, 0.05], "lr": 0.05, "momentum": 0.9, "batch_size": 64, "n_pretrain": 256,
              "pretrain_epochs": 1, "n_target": 256, "n_val": 64, "n_test": 64, "target_fractions": [0.25, 1.0],
              "finetune_epochs": 1, "finetune_min_steps": 4, "finetune_weight_decay": 0.001,
              "interventions": ["none", "reset_mutual", "reset_units", "reinit"], "eps": 0.1,
              "n_sensitivity": 8, "track_fraction": 1.0, "n_probes": 2, "probe_batch": 32,
              "retrain_cells": "declared", "reset_decay": 0.05, "grid_targets": ["mnist"],
              "grid_interventions": ["none", "reset_mutual"], "paired_draws": True, "val_evals": 2,
              "lr_schedule": "cosine", "readout": "best_val", "stack_models": False,
              "eps_grid": [0.01, 0.1], "dormant_taus": [0.0], "nuisances": ["blur4", "shift1", "noise"],
              "benchmark_steps": 1}
    out = frozen.pretrain_and_retrain(config)
    assert {"eps", "weight_hist", "units", "nuisance", "timing"} <= set(out)
    ft = out["finetune"]
    cells = {(r.target, r.fraction, r.weight_decay, r.intervention) for r in ft.itertuples()}
    assert cells == set(frozen.retrain_cells(config))
    assert set(ft[ft.intervention == "reinit"].weight_decay) == {0.0}          # scratch: once
    assert ft.best_step.between(1, ft.steps.max()).all()
    assert (out["nuisance"].sensitivity >= 0).all() and len(out["nuisance"]) == 2 * 3
    assert set(out["eps"].eps) == {0.01, 0.1} and "dormant[0]" in out["units"]
    assert set(out["timing"].phase) >= {"pretrain", "benchmark stacked", "benchmark separate"}
