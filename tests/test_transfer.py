"""Tests of zaplib.transfer: the lock-step linear probe equals the plain per-image autograd + Adam
loop, probes in lock-step do not interact, the unfrozen and i.i.d. protocols do what Alg. 2 / 3
say, and the validation / report class pools are disjoint."""
import pandas as pd
import pytest
import torch
from torch import nn

from zaplib import transfer


def _features(gen, P=12, n_train=15, n_test=5, D=24):
    """Class-clustered non-negative features (like ReLU features), so probes learn something."""
    centres = torch.rand(P, 1, D, generator=gen) * 2
    train = torch.relu(centres + 0.5 * torch.randn(P, n_train, D, generator=gen))
    test = torch.relu(centres + 0.5 * torch.randn(P, n_test, D, generator=gen))
    return train, test


def test_lockstep_probe_equals_per_image_autograd_adam(gen):
    train, test = _features(gen)
    frame, W, b = transfer.sequential_probe(train, test, n_classes=8, seeds=[3, 7], lrs=[1e-3, 1e-2],
                                            eval_every=2, return_heads=True)
    for (t, seed), (l, lr) in [((1, 7), (1, 1e-2)), ((0, 3), (0, 1e-3))]:
        ref, head = transfer.sequential_probe_reference(train, test, n_classes=8, seed=seed, lr=lr,
                                                        eval_every=2, return_head=True)
        ours = frame[(frame.seed == seed) & (frame.lr == lr)].reset_index(drop=True)
        pd.testing.assert_frame_equal(ours, ref, check_exact=False, atol=1e-6)
        torch.testing.assert_close(W[l, t], head.weight.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b[l, t], head.bias.detach(), atol=1e-5, rtol=1e-5)
    assert frame.test_acc.max() > 0.5  # the probe does learn (else equality would be vacuous)


def test_probes_in_lockstep_are_independent(gen):
    train, test = _features(gen)
    many = transfer.sequential_probe(train, test, n_classes=6, seeds=[0, 1, 2], lrs=[3e-3, 3e-2],
                                     eval_every=3)
    alone = transfer.sequential_probe(train, test, n_classes=6, seeds=[1], lrs=[3e-2], eval_every=3)
    sub = many[(many.seed == 1) & (many.lr == 3e-2)].reset_index(drop=True)
    pd.testing.assert_frame_equal(sub, alone, check_exact=False, atol=1e-6)
    assert list(alone["classes"]) == [3, 6]


def test_trajectory_is_seeded_and_uses_distinct_classes():
    a = transfer.trajectory(20, 15, 10, 8, seed=5)
    b = transfer.trajectory(20, 15, 10, 8, seed=5)
    c = transfer.trajectory(20, 15, 10, 8, seed=6)
    assert torch.equal(a.classes, b.classes) and torch.equal(a.weight, b.weight)
    assert not torch.equal(a.classes, c.classes)
    assert len(set(a.classes.tolist())) == 10
    assert all(sorted(row) == list(range(15)) for row in a.image_order.tolist())
    assert float(transfer.trajectory(600, 15, 600, 2304, 0).weight.std()) == pytest.approx((2 / 2304) ** 0.5, rel=0.01)
    with pytest.raises(ValueError):
        transfer.trajectory(5, 15, 6, 8, seed=0)


def test_class_split_is_disjoint_and_complete():
    val, rep = transfer.evaluation_class_split(659, 59, seed=0)
    assert len(val) == 59 and len(rep) == 600
    assert set(val.tolist()).isdisjoint(rep.tolist())
    assert sorted(val.tolist() + rep.tolist()) == list(range(659))
    assert transfer.eval_points(600, 50)[-1] == 600 and transfer.eval_points(7, 3) == [3, 6, 7]


def test_group_by_class():
    y = torch.tensor([2, 0, 1, 0, 2, 1])
    x = torch.arange(6) * 10
    grouped = transfer.group_by_class(x, y, torch.tensor([2, 0]))
    assert grouped.tolist() == [[0, 40], [10, 30]]


class _HeadOnly(nn.Module):
    """A model whose features are its (float) input: training it unfrozen = a linear probe."""

    def __init__(self, D, C=3):
        super().__init__()
        self.head = nn.Linear(D, C)

    def features(self, x):
        return x.flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


def test_unfrozen_transfer_with_no_body_equals_the_probe(gen):
    train, test = _features(gen)
    model = _HeadOnly(train.shape[-1])
    unfrozen = transfer.sequential_unfrozen(model, train, test, n_classes=6, seed=4, lr=1e-2,
                                            eval_every=3)
    probe = transfer.sequential_probe(train, test, n_classes=6, seeds=[4], lrs=[1e-2], eval_every=3)
    pd.testing.assert_frame_equal(unfrozen, probe, check_exact=False, atol=1e-6)


def test_iid_transfer_curve_learns(gen):
    train, test = _features(gen)
    model = _HeadOnly(train.shape[-1])
    curve = transfer.iid_transfer(model, train, test, n_classes=8, seed=0, lr=3e-2, epochs=3,
                                  batch_size=16, evals_per_epoch=2)
    assert list(curve["epoch"]) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert curve["test_acc"].iloc[-1] > curve["test_acc"].iloc[0] + 0.3
    assert model.head.out_features == 3  # the caller's model is untouched (a copy is trained)


def test_select_lr_uses_final_accuracy():
    rows = []
    for lr, early, final in [(0.1, 0.9, 0.2), (0.01, 0.3, 0.6)]:
        for seed in (0, 1):
            rows += [{"method": "asb", "zap": True, "pretrain_seed": 0, "seed": seed, "lr": lr,
                      "classes": 5, "train_acc": 1, "test_acc": early},
                     {"method": "asb", "zap": True, "pretrain_seed": 0, "seed": seed, "lr": lr,
                      "classes": 10, "train_acc": 1, "test_acc": final}]
    best = transfer.select_lr(pd.DataFrame(rows))
    assert best.loc[0, "lr"] == 0.01 and best.loc[0, "val_acc"] == pytest.approx(0.6)


def test_extra_head_rows_keep_the_first_rows_and_compete_in_the_argmax(gen):
    train, test = _features(gen)
    small = transfer.trajectory(12, 15, 6, 24, seed=4)
    big = transfer.trajectory(12, 15, 6, 24, seed=4, head_outputs=40)
    assert big.weight.shape == (40, 24)
    torch.testing.assert_close(big.weight[:6], small.weight)
    assert torch.equal(big.classes, small.classes) and torch.equal(big.image_order, small.image_order)
    with pytest.raises(ValueError, match="at least n_classes"):
        transfer.trajectory(12, 15, 6, 24, seed=4, head_outputs=5)
    frame, W, b = transfer.sequential_probe(train, test, n_classes=6, seeds=[4], lrs=[1e-2],
                                            eval_every=6, return_heads=True, head_outputs=40)
    assert W.shape == (1, 1, 40, 24)
    # the untrained extra rows are pushed down by the softmax: their biases only ever fall
    assert (b[0, 0, 6:] < 0).all()


def test_least_squares_probe_separates_separable_features_and_not_noise(gen):
    centres = torch.eye(12, 24) * 10
    train = centres.unsqueeze(1) + 0.1 * torch.randn(12, 15, 24, generator=gen)
    test = centres.unsqueeze(1) + 0.1 * torch.randn(12, 5, 24, generator=gen)
    frame = transfer.least_squares_probe(train, test, n_classes=10, seeds=[0, 1])
    assert list(frame.columns) == ["seed", "classes", "lstsq_train_acc", "lstsq_test_acc"]
    assert (frame.lstsq_test_acc == 1.0).all()
    noise = torch.randn(12, 15, 24, generator=gen), torch.randn(12, 5, 24, generator=gen)
    chance = transfer.least_squares_probe(*noise, n_classes=10, seeds=[0, 1, 2, 3])
    assert chance.lstsq_test_acc.mean() < 0.35  # 10 classes: chance is 0.1


def test_the_select_split_never_touches_held_out_images(monkeypatch):
    """split="select" trains on 12 of each report class's 15 training images and scores the other 3."""
    class Part:
        num_classes = 10
        x_train = torch.arange(10 * 15).repeat_interleave(1).reshape(150, 1, 1, 1)
        y_train = torch.arange(10).repeat_interleave(15)
        x_test = -torch.ones(50, 1, 1, 1, dtype=torch.long)
        y_test = torch.arange(10).repeat_interleave(5)

    class Split:
        evaluation = Part()

    monkeypatch.setattr(transfer, "omniglot_data", lambda seed, device: Split())
    config = {"val_pool": 3, "split": "select"}
    fit, score = transfer._pool(config, None)
    assert fit.shape[:2] == (7, 12) and score.shape[:2] == (7, 3)
    assert (fit >= 0).all() and (score >= 0).all()  # held-out images are -1 here
    assert not set(fit.flatten().tolist()) & set(score.flatten().tolist())
    report_train, report_test = transfer._pool({**config, "split": "report"}, None)
    assert set(fit.flatten().tolist()) | set(score.flatten().tolist()) == set(report_train.flatten().tolist())
    with pytest.raises(ValueError, match="unknown split"):
        transfer._pool({**config, "split": "test"}, None)


def test_probe_groups_cover_every_probe_once_and_respect_the_cache_budget():
    seeds, lrs = [0, 1, 2], [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    for budget_probes in (1, 2, 3, 7, 100):
        groups = transfer.probe_groups(seeds, lrs, head_rows=10, feature_dim=10,
                                       cache_bytes=16 * 100 * budget_probes)
        probes = [(s, lr) for g_seeds, g_lrs in groups for s in g_seeds for lr in g_lrs]
        assert sorted(probes) == sorted((s, lr) for s in seeds for lr in lrs)
        assert all(len(g[0]) * len(g[1]) <= max(budget_probes, 1) for g in groups)
    assert len(transfer.probe_groups(seeds, lrs, 10, 10, cache_bytes=10**9)) == 1  # all in lock-step
