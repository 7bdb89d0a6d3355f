"""Training loops: early stopping, records, reproducibility, and S models via torch.func == S separate runs."""
import copy

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zaplib import samplers, train
from zaplib.train import StackedModels, make_optimizer, train_iid, train_iid_stacked

S = 3
NUM_CLASSES = 5


# Tiny stand-ins for the library's models (this file must not depend on zaplib.models).
def instnorm_convnet(bias: bool = False) -> nn.Module:
    """Omniglot-convnet-like: conv → InstanceNorm(affine) → ReLU → pool, twice, then a linear head.

    ``bias=False`` by default: a conv bias right before InstanceNorm has an exactly-zero gradient,
    so in float32 Adam turns the ~1e-9 rounding noise of that gradient into ±lr steps whose sign
    depends on summation order — the vmapped and separate runs then differ by ~lr in a parameter
    that has no effect on the output. The float64 test below keeps the bias.
    """
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, bias=bias), nn.InstanceNorm2d(8, affine=True), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, bias=bias), nn.InstanceNorm2d(8, affine=True), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, NUM_CLASSES),
    )


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(14 * 14, 32), nn.ReLU(), nn.Linear(32, NUM_CLASSES))


def bn_convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(6 * 6 * 6, NUM_CLASSES),
    )


OPTIMISERS = {
    "adam": dict(optimizer="adam", lr=1e-2, weight_decay=1e-3),
    "sgd": dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-3),
}


def max_state_diff(a: nn.Module, b: nn.Module) -> float:
    return max(
        (x.double() - y.double()).abs().max().item()
        for x, y in zip(a.state_dict().values(), b.state_dict().values())
    )


def learnable_data(n, gen, dtype=torch.uint8):
    """Images whose label is decided by which fifth of the image is brightest: learnable in a few epochs."""
    x = torch.randint(0, 60, (n, 1, 14, 14), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    for c in range(NUM_CLASSES):
        x[y == c, :, :, 2 * c : 2 * c + 3] += 150
    return (x if dtype == torch.uint8 else x.to(dtype) / 255), y


# ----------------------------------------------------------------------------- samplers
def test_batches_cover_every_index_once_in_seeded_order():
    got = list(samplers.batches(10, 4, torch.Generator().manual_seed(3)))
    assert [len(b) for b in got] == [4, 4, 2]
    assert sorted(torch.cat(got).tolist()) == list(range(10))
    again = torch.cat(list(samplers.batches(10, 4, torch.Generator().manual_seed(3))))
    assert torch.equal(torch.cat(got), again)
    assert torch.cat(got).tolist() != list(range(10))
    assert [len(b) for b in samplers.batches(10, 4, torch.Generator(), drop_last=True)] == [4, 4]
    assert samplers.num_batches(10, 4) == 3 and samplers.num_batches(10, 4, drop_last=True) == 2


def test_class_indices():
    y = torch.tensor([2, 0, 2, 1, 0, 2])
    idx = samplers.class_indices(y)
    assert set(idx) == {0, 1, 2}
    assert idx[0].tolist() == [1, 4] and idx[1].tolist() == [3] and idx[2].tolist() == [0, 2, 5]


# ----------------------------------------------------------------------------- single model
def test_evaluate_and_predict_logits_restore_mode(gen):
    model = mlp()
    x, y = learnable_data(30, gen)
    model.train()
    logits = train.predict_logits(model, x, batch_size=7)
    assert model.training
    with torch.no_grad():
        expected = model.eval()(x.float() / 255)
    assert torch.allclose(logits, expected, atol=1e-6)
    model.train()
    res = train.evaluate(model, x, y, batch_size=7)
    assert res["n"] == 30
    assert res["loss"] == pytest.approx(F.cross_entropy(expected, y).item(), abs=1e-6)
    assert res["acc"] == pytest.approx((expected.argmax(1) == y).float().mean().item())


def test_train_iid_records_and_reproducibility(gen):
    x, y = learnable_data(120, gen)
    xv, yv = learnable_data(40, gen)
    init = mlp()
    calls = []

    def run(seed):
        model = copy.deepcopy(init)
        return train_iid(model, x, y, xv, yv, epochs=4, batch_size=16, optimizer="sgd", lr=0.2,
                         lr_milestones=(2, 3), lr_gamma=0.5, generator=torch.Generator().manual_seed(seed),
                         epoch_callback=lambda epoch, m: calls.append(epoch))

    m1, r1 = run(0)
    assert calls == [0, 1, 2, 3]
    assert list(r1.columns[:7]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    assert r1["epoch"].tolist() == [1, 2, 3, 4]
    assert r1["lr"].tolist() == pytest.approx([0.2, 0.2, 0.1, 0.05])
    assert r1["val_acc"].iloc[-1] > 0.6  # it learned something
    m2, r2 = run(0)
    assert max_state_diff(m1, m2) == 0.0
    pd.testing.assert_frame_equal(r1.drop(columns="seconds"), r2.drop(columns="seconds"))
    m3, _ = run(1)
    assert max_state_diff(m1, m3) > 1e-4


def test_early_stopping_restores_best_checkpoint(gen):
    # Validation = the training images with shifted labels: the better the fit, the worse the
    # validation loss, so the best epoch is early and training stops `patience` epochs later.
    x, y = learnable_data(100, gen)
    yv = (y + 1) % NUM_CLASSES
    model = mlp()
    snapshots = {}

    def snapshot(epoch, m):  # weights after `epoch` completed epochs
        snapshots[epoch] = copy.deepcopy(m.state_dict())

    model, rec = train_iid(model, x, y, x, yv, epochs=20, batch_size=20, optimizer="adam", lr=3e-3,
                           patience=2, generator=torch.Generator().manual_seed(0), epoch_callback=snapshot)
    best = int(rec.loc[rec["val_loss"].idxmin(), "epoch"])
    assert rec.attrs["best_epoch"] == best
    assert rec["best"].sum() == 1 and rec.loc[rec["best"], "epoch"].item() == best
    assert len(rec) == best + 2 < 20 and rec.attrs["stopped_early"]
    assert rec["val_loss"].iloc[-1] > rec["val_loss"].min()
    final_epoch_state = snapshots[len(rec) - 1]  # sanity: training moved on after the best epoch
    assert max(
        (a - b).abs().max().item() for a, b in zip(snapshots[best].values(), final_epoch_state.values())
    ) > 1e-4 or best == len(rec) - 1
    restored = model.state_dict()
    for k, v in snapshots[best].items():
        assert torch.equal(restored[k], v), k
    assert train.evaluate(model, x, yv)["loss"] == pytest.approx(rec["val_loss"].min(), abs=1e-6)


def test_existing_optimizer_keeps_state_and_resets_lr(gen):
    x, y = learnable_data(40, gen)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_iid(model, x, y, epochs=1, batch_size=20, optimizer=opt, lr=0.1, lr_milestones=(0,), generator=gen)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    assert all("momentum_buffer" in opt.state[p] for p in model.parameters())
    momentum_before = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    _, rec = train_iid(model, x, y, epochs=1, batch_size=20, optimizer=opt, lr=0.1, generator=gen)
    assert rec["lr"].tolist() == [0.1]  # lr reset, as LURE does at each new mega-batch
    assert any(not torch.equal(a, opt.state[p]["momentum_buffer"])
               for a, p in zip(momentum_before, model.parameters()))


def test_augment_receives_generator(gen):
    x, y = learnable_data(20, gen)
    seen = []

    def augment(xb, g):
        seen.append((xb.dtype, g))
        return xb.flip(-1)

    g = torch.Generator().manual_seed(0)
    train_iid(mlp(), x, y, epochs=1, batch_size=10, augment=augment, generator=g)
    assert seen == [(torch.float32, g)] * 2


# ----------------------------------------------------------------------------- S models at once
@pytest.mark.parametrize("make_model", [instnorm_convnet, mlp], ids=["instnorm_convnet", "mlp"])
@pytest.mark.parametrize("opt_name", ["adam", "sgd"])
@pytest.mark.parametrize("shared_batch", [False, True], ids=["per_model_batch", "shared_batch"])
@pytest.mark.parametrize("grad_mode", ["func", "autograd"])
def test_stacked_steps_equal_separate_runs(make_model, opt_name, shared_batch, grad_mode):
    torch.manual_seed(1)
    models = [make_model() for _ in range(S)]
    separate = [copy.deepcopy(m) for m in models]
    kw = dict(OPTIMISERS[opt_name])
    name = kw.pop("optimizer")
    optimisers = [make_optimizer(m.parameters(), name, **kw) for m in separate]
    stacked = StackedModels(models, name, grad_mode=grad_mode, **kw)
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        shape = (16,) if shared_batch else (S, 16)
        x = torch.rand(*shape, 1, 14, 14, generator=g)
        y = torch.randint(0, NUM_CLASSES, shape, generator=g)
        losses, correct = stacked.step(x, y)
        for s in range(S):
            xs, ys = (x, y) if shared_batch else (x[s], y[s])
            optimisers[s].zero_grad()
            out = separate[s](xs)
            loss = F.cross_entropy(out, ys)
            assert losses[s].item() == pytest.approx(loss.item(), abs=1e-5)
            assert correct[s].item() == (out.argmax(1) == ys).sum().item()
            loss.backward()
            optimisers[s].step()
    trained = stacked.unstack()
    for s in range(S):
        assert max_state_diff(trained[s], separate[s]) < 1e-5
    # The models really differ from each other (each slice is its own model).
    assert max_state_diff(trained[0], trained[1]) > 1e-2


def test_stacked_batchnorm_running_stats_match_separate_runs():
    torch.manual_seed(2)
    models = [bn_convnet() for _ in range(S)]
    separate = [copy.deepcopy(m) for m in models]
    optimisers = [make_optimizer(m.parameters(), "sgd", lr=0.05) for m in separate]
    stacked = StackedModels(models, "sgd", lr=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        x, y = torch.rand(S, 12, 1, 14, 14, generator=g), torch.randint(0, NUM_CLASSES, (S, 12), generator=g)
        stacked.step(x, y)
        for s in range(S):
            optimisers[s].zero_grad()
            F.cross_entropy(separate[s](x[s]), y[s]).backward()
            optimisers[s].step()
    trained = stacked.unstack()
    for s in range(S):
        assert trained[s][1].num_batches_tracked.item() == 4
        assert torch.allclose(trained[s][1].running_mean, separate[s][1].running_mean, atol=1e-6)
        assert torch.allclose(trained[s][1].running_var, separate[s][1].running_var, atol=1e-6)
        assert max_state_diff(trained[s], separate[s]) < 1e-5
    # Eval-mode logits use each model's own running statistics.
    x_eval = torch.rand(7, 1, 14, 14, generator=g)
    logits = stacked.predict_logits(x_eval)
    for s in range(S):
        with torch.no_grad():
            assert torch.allclose(logits[s], separate[s].eval()(x_eval), atol=1e-5)


@pytest.mark.parametrize("grad_mode", ["func", "autograd"])
def test_stacked_frozen_parameters_stay_frozen(grad_mode):
    torch.manual_seed(5)
    models = [mlp() for _ in range(S)]
    for m in models:
        m[1].requires_grad_(False)  # frozen body, trainable head (a linear probe)
    stacked = StackedModels(models, "adam", lr=1e-2, grad_mode=grad_mode)
    body, head = stacked.params["1.weight"].clone(), stacked.params["3.weight"].clone()
    stacked.step(torch.rand(S, 8, 1, 14, 14), torch.randint(0, NUM_CLASSES, (S, 8)))
    assert torch.equal(stacked.params["1.weight"], body)
    assert not torch.equal(stacked.params["3.weight"], head)
    assert all(p.requires_grad for group in stacked.optimizer.param_groups for p in group["params"])


def test_for_each_model_resets_keep_optimizer_state():
    torch.manual_seed(3)
    stacked = StackedModels([mlp() for _ in range(S)], "adam", lr=1e-3)
    x, y = torch.rand(S, 8, 1, 14, 14), torch.randint(0, NUM_CLASSES, (S, 8))
    stacked.step(x, y)
    head_weight = stacked.params["3.weight"]
    exp_avg = stacked.optimizer.state[head_weight]["exp_avg"].clone()

    def zero_head_of_model_1(s, module):
        if s == 1:
            with torch.no_grad():
                module[3].weight.zero_()
        return s

    assert stacked.for_each_model(zero_head_of_model_1) == [0, 1, 2]
    assert stacked.params["3.weight"] is head_weight  # same tensor: optimiser still tracks it
    assert torch.count_nonzero(head_weight[1]) == 0 and torch.count_nonzero(head_weight[0]) > 0
    assert torch.equal(stacked.optimizer.state[head_weight]["exp_avg"], exp_avg)


@pytest.mark.parametrize("opt_name, lr, restore_best", [("adam", 1e-3, True), ("sgd", 4e-3, False)])
def test_train_iid_stacked_equals_separate_train_iid(opt_name, lr, restore_best, gen):
    # float64 so that the comparison is exact (to 1e-10) even for Adam and the biased convs before
    # InstanceNorm; data are float (not uint8) so they keep the models' dtype.
    x, y = learnable_data(90, gen, dtype=torch.float64)
    xv, yv = learnable_data(30, gen, dtype=torch.float64)
    yv[:10] = (yv[:10] + 1) % NUM_CLASSES  # noisy validation, so that the models stop early ...
    torch.manual_seed(4)
    inits = [instnorm_convnet(bias=True).double() for _ in range(S)]
    seeds = [10, 11, 12]

    def flip(xb, g):
        flip_mask = torch.rand(len(xb), generator=g, dtype=xb.dtype) < 0.5
        return torch.where(flip_mask[:, None, None, None], xb.flip(-1), xb)

    kw = dict(OPTIMISERS[opt_name], lr=lr, epochs=8, batch_size=16, patience=1, augment=flip,
              restore_best=restore_best)
    models, rec = train_iid_stacked([copy.deepcopy(m) for m in inits], x, y, xv, yv, generators=seeds, **kw)
    assert set(rec.columns) >= {"model", "seed", "epoch", "train_loss", "val_loss", "val_acc", "lr", "seconds"}
    epochs_run = rec.groupby("model").size()
    assert epochs_run.min() < 8 and epochs_run.nunique() > 1  # ... and at different epochs
    for s in range(S):
        alone, rec_alone = train_iid(copy.deepcopy(inits[s]), x, y, xv, yv,
                                     generator=torch.Generator().manual_seed(seeds[s]), **kw)
        assert max_state_diff(models[s], alone) < 1e-10
        mine = rec[rec["model"] == s].reset_index(drop=True)
        assert (mine["seed"] == seeds[s]).all()
        cols = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "best"]
        pd.testing.assert_frame_equal(mine[cols], rec_alone[cols], atol=1e-10)


def test_bf16_precision_autocasts_the_step_and_keeps_fp32_weights_and_unknown_precision_fails():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 4, (8,))
    before = model[1].weight.detach().clone()
    train.train_step(model, opt, x, y, F.cross_entropy, "bf16")
    assert seen == [torch.bfloat16] and model[1].weight.dtype == torch.float32
    assert not torch.equal(before, model[1].weight)
    train.train_step(model, opt, x, y, F.cross_entropy, "fp32")
    assert seen[-1] == torch.float32
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        train.train_iid(model, x, y, epochs=1, batch_size=4, precision="fp16")


def test_stacked_models_step_in_bf16_matches_fp32_closely_on_a_tiny_problem():
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4)) for _ in range(2)]
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 4, (8,))
    losses = {}
    for precision in ("fp32", "bf16"):
        stacked = train.StackedModels([n for n in nets], optimizer="sgd", lr=0.1)
        losses[precision], _ = stacked.step(x, y, precision)
    assert torch.allclose(losses["fp32"], losses["bf16"].float(), atol=0.05)
