"""Tests of zaplib.pretraining: the meta-gradient is truly second order, the ASB sampler draws what Alg. 1
says, zapping happens before the inner loop and touches only that class's row, and i.i.d. zapping
follows its cadence."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zaplib import pretraining
from zaplib.models import ANML, OmniglotConvNet


def _tiny_convnet(num_classes=5, channels=2):
    torch.manual_seed(0)
    return OmniglotConvNet(channels=channels, num_classes=num_classes).double()


def _outer_loss_after_inner(model, params, inner_x, inner_y, outer_x, outer_y, lr, inner_names):
    """The meta-objective L(θ_K(θ_0)) evaluated plainly (no graph), for finite differences."""
    from torch.func import functional_call

    p = dict(params)
    for i in range(len(inner_x)):
        with torch.enable_grad():
            q = {n: t.detach().requires_grad_(n in inner_names) for n, t in p.items()}
            loss = F.cross_entropy(functional_call(model, q, (inner_x[i : i + 1],)), inner_y[i : i + 1])
            grads = torch.autograd.grad(loss, [q[n] for n in inner_names])
        p = {n: t.detach() for n, t in p.items()}
        for n, g in zip(inner_names, grads):
            p[n] = p[n] - lr * g
    with torch.no_grad():
        return float(F.cross_entropy(functional_call(model, p, (outer_x,)), outer_y))


def _directional_check(model, inner_params=None, lr=0.5):
    g = torch.Generator().manual_seed(1)
    inner_x = torch.rand(3, 1, 28, 28, generator=g, dtype=torch.float64)
    inner_y = torch.full((3,), 2)
    outer_x = torch.rand(6, 1, 28, 28, generator=g, dtype=torch.float64)
    outer_y = torch.tensor([2, 0, 1, 3, 4, 2])
    grads, _ = pretraining.meta_gradient(model, inner_x, inner_y, outer_x, outer_y, lr,
                                  inner_params=inner_params)
    grads_fo, _ = pretraining.meta_gradient(model, inner_x, inner_y, outer_x, outer_y, lr, first_order=True,
                                     inner_params=inner_params)
    params = {n: p.detach() for n, p in model.named_parameters()}
    inner_names = [n for n in params if inner_params is None or inner_params(n)]
    direction = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}
    eps = 1e-5
    plus = _outer_loss_after_inner(model, {n: p + eps * direction[n] for n, p in params.items()},
                                   inner_x, inner_y, outer_x, outer_y, lr, inner_names)
    minus = _outer_loss_after_inner(model, {n: p - eps * direction[n] for n, p in params.items()},
                                    inner_x, inner_y, outer_x, outer_y, lr, inner_names)
    fd = (plus - minus) / (2 * eps)
    analytic = sum(float((grads[n] * direction[n]).sum()) for n in params)
    first_order = sum(float((grads_fo[n] * direction[n]).sum()) for n in params)
    return fd, analytic, first_order


def test_meta_gradient_matches_finite_differences_and_is_not_first_order():
    fd, analytic, first_order = _directional_check(_tiny_convnet())
    assert analytic == pytest.approx(fd, rel=1e-4, abs=1e-7)
    # the first-order answer must be measurably wrong here, or this test could not catch that bug
    assert abs(first_order - fd) > 100 * abs(analytic - fd) + 1e-4


def test_anml_meta_gradient_with_inner_subset_matches_finite_differences():
    torch.manual_seed(0)
    model = ANML(channels=2, nm_channels=2, num_classes=5).double()
    fd, analytic, first_order = _directional_check(model, inner_params=pretraining.anml_inner_params)
    assert analytic == pytest.approx(fd, rel=1e-4, abs=1e-7)
    assert abs(first_order - fd) > 100 * abs(analytic - fd) + 1e-4


def _toy_labels(n_classes=7, per_class=15):
    return torch.arange(n_classes).repeat_interleave(per_class)


def test_asb_sampler_shapes_and_composition(gen):
    y = _toy_labels()
    sampler = pretraining.ASBSampler(y, K=20, R=64, generator=gen)
    counts_remember = torch.zeros(7)
    inner_repeats = 0
    for _ in range(300):
        ep = sampler.sample()
        assert ep.inner.shape == (20,) and ep.remember.shape == (64,) and ep.outer.shape == (84,)
        assert torch.all(y[ep.inner] == ep.cls)  # one class in the inner loop
        assert torch.equal(ep.outer[:20], ep.inner)  # outer batch = inner images + remember images
        inner_repeats += int(len(torch.unique(ep.inner)) < 20)  # 20 draws from 15: with replacement
        counts_remember += torch.bincount(y[ep.remember], minlength=7)
    assert inner_repeats == 300
    share = counts_remember / counts_remember.sum()
    assert torch.all((share - 1 / 7).abs() < 0.02)  # remember images uniform over classes


def test_zap_happens_before_the_inner_loop_and_changes_only_that_row(gen, monkeypatch):
    torch.manual_seed(0)
    model = OmniglotConvNet(channels=4, num_classes=7)
    y = _toy_labels()
    x = torch.randint(0, 256, (len(y), 1, 28, 28), dtype=torch.uint8, generator=gen)
    events = []
    model.register_forward_hook(lambda *args: events.append("forward"))
    original_zap = pretraining.resets.zap
    monkeypatch.setattr(pretraining.resets, "zap", lambda *a, **k: (events.append("zap"), original_zap(*a, **k))[1])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # lr 0 inner and outer: the zap is the only change
    pretraining.pretrain_asb(model, x, y, episodes=1, inner_lr=0.0, outer_lr=0.0, K=5, R=3, zap=True,
                      generator=torch.Generator().manual_seed(3))
    assert events == ["zap"] + ["forward"] * 6  # zap, then 5 inner steps, then the outer batch
    cls = pretraining.ASBSampler(y, K=5, R=3, generator=torch.Generator().manual_seed(3)).sample().cls
    changed_rows = (model.head.weight != before["head.weight"]).any(1).nonzero().flatten().tolist()
    assert changed_rows == [cls]
    for name, p in model.named_parameters():
        if name not in ("head.weight", "head.bias"):
            assert torch.equal(p, before[name]), name
    assert model.head.bias[cls] == 0  # the paper's bias policy
    others = torch.arange(7) != cls
    assert torch.equal(model.head.bias[others], before["head.bias"][others])


def test_no_zap_and_zap_row_std(gen):
    torch.manual_seed(0)
    model = OmniglotConvNet(channels=4, num_classes=7)
    y = _toy_labels()
    x = torch.randint(0, 256, (len(y), 1, 28, 28), dtype=torch.uint8, generator=gen)
    before = model.head.weight.detach().clone()
    pretraining.pretrain_asb(model, x, y, episodes=2, inner_lr=0.0, outer_lr=0.0, K=2, R=2, zap=False,
                      generator=gen)
    assert torch.equal(model.head.weight, before)
    wide = nn.Linear(2304, 1000)
    wide_model = nn.Module()
    wide_model.head = wide
    pretraining.zap_class(wide_model, None, generator=gen)
    assert float(wide.weight.detach().std()) == pytest.approx(math.sqrt(2 / 2304), rel=0.02)  # ≈ 0.0295


@pytest.mark.parametrize("is_meta", [False, True])
def test_pretrain_asb_learns_a_tiny_task(gen, is_meta):
    """A few episodes on 3 easy classes lower the outer loss (ASB and meta-ASB)."""
    torch.manual_seed(0)
    model = OmniglotConvNet(channels=4, num_classes=3)
    y = _toy_labels(3, 15)
    x = torch.zeros(len(y), 1, 28, 28, dtype=torch.uint8)
    for c in range(3):  # each class a bright band at a different height
        x[y == c, :, 4 + 8 * c : 10 + 8 * c, :] = 255
    before = F.cross_entropy(model(x.float() / 255), y).item()
    _, records = pretraining.pretrain_asb(model, x, y, episodes=30, inner_lr=0.03, outer_lr=3e-3, K=4,
                                   R=8, zap=False, meta=is_meta, generator=gen, record_every=10)
    assert list(records["episode"]) == [10, 20, 30]
    after = F.cross_entropy(model(x.float() / 255), y).item()
    assert after < 0.5 * before


def test_pretrain_iid_zap_cadence_and_official_bug(gen):
    torch.manual_seed(0)
    model = OmniglotConvNet(channels=4, num_classes=50)
    y = torch.arange(50).repeat(2)
    x = torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8, generator=gen)
    _, records = pretraining.pretrain_iid(model, x, y, epochs=5, batch_size=50, lr=0.0, zap_every=2,
                                   generator=gen)
    assert records["zapped"].tolist() == [False, False, True, False, True]  # epochs 3 and 5
    D = model.feature_dim
    assert float(model.head.weight.detach().std()) == pytest.approx(math.sqrt(2 / D), rel=0.05)
    pretraining.pretrain_iid(model, x, y, epochs=2, batch_size=50, lr=0.0, zap_every=1,
                      zap_fan_in="official_bug", generator=gen)
    # the official i.i.d. path draws all rows with fan-in rows × D: ~√50 ≈ 7× too small here
    assert float(model.head.weight.detach().std()) == pytest.approx(math.sqrt(2 / (50 * D)), rel=0.05)



def test_iid_step_losses_cover_every_batch_and_checkpoints_precede_the_zap(gen):
    """pretrain_iid records one loss per mini-batch (not the validation passes), and its
    epoch_callback sees the model after e epochs and before that epoch's zap."""
    torch.manual_seed(0)
    model = OmniglotConvNet(channels=4, num_classes=10)
    y = torch.arange(10).repeat(6)
    x = torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8, generator=gen)
    seen = {}
    _, records = pretraining.pretrain_iid(
        model, x, y, x[:10], y[:10], epochs=3, batch_size=20, lr=1e-3, zap_every=1, generator=gen,
        epoch_callback=lambda e, net: seen.setdefault(e, net.head.weight.detach().clone()))
    assert len(records.attrs["step_losses"]) == 3 * 3  # 60 images / 20 per batch, 3 epochs
    assert set(seen) == {0, 1, 2}
    # the head at the start of epoch 1 (index 1) is the trained one, not a fresh zap draw
    assert not torch.equal(seen[1], seen[0])
    assert float(seen[1].std()) < 2 * float(seen[0].std())


def test_a_trunk_state_rebuilds_the_features_and_rejects_a_foreign_state():
    config = {"method": "iid", "zap": False, "seed": 3, "channels": 4, "head_outputs": 7}
    model = pretraining.models.build(pretraining.model_config(config))
    trunk = pretraining.trunk_state(model)
    assert not any(k.startswith("head.") for k in trunk)
    rebuilt = pretraining.build_pretrained(config, trunk)
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(rebuilt.features(x), model.features(x))
    with pytest.raises(ValueError, match="does not fit"):
        pretraining.build_pretrained({**config, "channels": 8}, {k: v for k, v in trunk.items()
                                                                 if not k.startswith("body.0")})


def test_anml_pools_its_gate_input_as_the_official_code():
    official = ANML(channels=4, nm_channels=3, num_classes=5)
    ours = ANML(channels=4, nm_channels=3, num_classes=5, nm_pool_last=False)
    assert official.nm[-1].in_features == 3  # 3×3 pooled to 1×1
    assert ours.nm[-1].in_features == 3 * 9
    assert official(torch.rand(2, 1, 28, 28)).shape == (2, 5)
