"""Probes that run a model: PGD, weight noise, norms, ReLU activity, sharpness, input sensitivity."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from zaplib import metrics, models, probes


def test_relu_activity_known_answers():
    m = models.SmallCNN(in_channels=3, width=2, input_size=8, hidden=4)
    x = torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                mod.weight.zero_()
                mod.bias.fill_(1.0)
    act = probes.relu_activity(m, x)
    assert len(act) == 3 and (act["frac_active"] == 1).all() and (act["frac_dead"] == 0).all()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                mod.bias.fill_(-1.0)
    act = probes.relu_activity(m, x)
    assert (act["frac_active"] == 0).all() and (act["frac_dead"] == 1).all()
    assert m.training  # mode restored


def test_relu_sites_of_resnet_cover_functional_relus():
    m = models.cifar_resnet18(width=4)
    sites = probes.relu_sites(m)
    assert "bn1" in sites and "layer1.0" in sites and "layer4.1.bn1" in sites
    act = probes.relu_activity(m, torch.rand(2, 3, 32, 32))
    assert len(act) == 1 + 2 * 8
    block_out = act.set_index("site").loc["layer2.0", "frac_active"]
    assert 0 < block_out < 1


def test_layer_norms_match_hand_values():
    m = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        m[0].weight.fill_(2.0)
        m[0].bias.fill_(-3.0)
    tab = probes.layer_norms(m).set_index("param")
    assert tab.loc["0.weight", "norm"] == pytest.approx(2.0 * math.sqrt(6))
    assert tab.loc["0.bias", "norm"] == pytest.approx(3.0 * math.sqrt(2))
    assert tab.loc["0.bias", "rms"] == pytest.approx(3.0) and tab.loc["0.bias", "kind"] == "bias"
    assert list(tab["order"]) == [0, 1, 2, 3]


def test_hessian_power_iteration_matches_dense_eigenvalue(gen):
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(20, 3, generator=gen), torch.randint(0, 3, (20,), generator=gen)
    names = [n for n, _ in m.named_parameters()]
    shapes = [p.shape for p in m.parameters()]
    flat0 = torch.cat([p.detach().flatten() for p in m.parameters()])

    def loss_flat(flat):
        from torch.func import functional_call

        parts, i = {}, 0
        for n, s in zip(names, shapes):
            parts[n] = flat[i:i + math.prod(s)].view(s)
            i += math.prod(s)
        return torch.nn.functional.cross_entropy(functional_call(m, parts, (x,)), y)

    dense = torch.autograd.functional.hessian(loss_flat, flat0)
    eigs = torch.linalg.eigvalsh(dense)
    top = eigs[eigs.abs().argmax()]
    got = probes.hessian_top_eigenvalue(m, x, y, iters=300, generator=torch.Generator().manual_seed(1))
    assert got == pytest.approx(float(top), rel=1e-3)


def test_sharpness_proxy_is_second_order_and_restores_weights(gen):
    m = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(64, 5, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    before = [p.detach().clone() for p in m.parameters()]
    loss, small = probes.perturbed_loss_sharpness(m, x, y, sigma=0.05, draws=8, generator=torch.Generator().manual_seed(0))
    _, large = probes.perturbed_loss_sharpness(m, x, y, sigma=0.2, draws=8, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    with torch.no_grad():
        assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(m(x), y)))
    # antithetic pairs cancel the gradient term: the increase grows like sigma², not sigma
    assert small > 0 and large / small == pytest.approx(16, rel=0.25)


# ----------------------------------------------------------------------------- runs


def test_input_sensitivity_linear_is_frobenius_norm(gen):
    model = nn.Linear(12, 4)
    x = torch.randn(9, 12, generator=gen)
    expected = torch.linalg.matrix_norm(model.weight).item()
    assert probes.input_sensitivity(model, x, batch_size=4) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(probes.input_sensitivity(model, x, reduction="none"), expected, rtol=1e-6)


def test_input_sensitivity_matches_per_class_gradients(gen):
    # A nonlinear conv model with BatchNorm (eval mode) and InstanceNorm: compare with the
    # Jacobian assembled row by row from one autograd gradient per output class.
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.InstanceNorm2d(3, affine=True), nn.BatchNorm2d(3), nn.Tanh(),
                          nn.Flatten(), nn.Linear(3 * 6 * 6, 5))
    x = torch.randint(0, 256, (6, 1, 8, 8), generator=gen, dtype=torch.uint8)
    model.train()
    got = probes.input_sensitivity(model, x, batch_size=4, reduction="none")
    assert model.training  # mode restored
    model.eval()
    xf = (x.float() / 255).requires_grad_()
    out = model(xf)
    rows = [torch.autograd.grad(out[:, c].sum(), xf, retain_graph=True)[0].flatten(1) for c in range(5)]
    expected = torch.stack(rows, 1).flatten(1).norm(dim=1)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5)
    assert np.ptp(got) > 0  # the nonlinear model's sensitivity depends on x


def test_pgd_stays_in_ball_and_hurts(gen):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    x = torch.rand(64, 3, 8, 8, generator=gen)
    y = model(x).argmax(1)  # the clean predictions: accuracy 1
    adv = probes.pgd_attack(model, x, y, eps=8 / 255, generator=gen)
    assert float((adv - x).abs().max()) <= 8 / 255 + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float((model(adv).argmax(1) == y).float().mean()) < 1.0
    assert torch.equal(probes.pgd_attack(model, x, y, eps=0.0), x)


def test_perturb_weights_restores(gen):
    model = torch.nn.Linear(50, 50)
    before = [p.clone() for p in model.parameters()]
    with probes.perturb_weights(model, 0.1, generator=gen):
        moved = torch.cat([(p - b).flatten() for p, b in zip(model.parameters(), before)])
        assert float(moved.detach().std()) == pytest.approx(0.1, rel=0.1)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def _linear_classifier():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))


def test_corruption_table_is_seeded_and_starts_clean(gen):
    model = _linear_classifier()
    x = (torch.rand(40, 3, 8, 8, generator=gen) * 255).to(torch.uint8)
    y = torch.randint(0, 4, (40,), generator=gen)
    table = probes.corruption_table(model, x, y, ["gaussian_noise", "contrast"], [1, 5], batch_size=16)
    assert list(table["corruption"]) == ["clean", "gaussian_noise", "gaussian_noise", "contrast", "contrast"]
    assert table["acc"].iloc[0] == pytest.approx(metrics.accuracy(model(x.float() / 255), y))
    again = probes.corruption_table(model, x, y, ["gaussian_noise", "contrast"], [1, 5], batch_size=40)
    assert table.equals(again)  # the corrupted images depend on the seed only, not on batching


def test_pgd_table_accuracy_falls_with_the_radius(gen):
    model = _linear_classifier()
    x = (torch.rand(64, 3, 8, 8, generator=gen) * 255).to(torch.uint8)
    y = model(x.float() / 255).argmax(1)
    table = probes.pgd_table(model, x, y, [2 / 255, 16 / 255], steps=5, batch_size=20)
    assert list(table["eps"]) == pytest.approx([0.0, 2 / 255, 16 / 255])
    assert table["acc"].iloc[0] == 1.0 and table["acc"].is_monotonic_decreasing
    assert table["acc"].iloc[-1] < 1.0


def test_weight_noise_table_restores_and_repeats(gen):
    model = _linear_classifier()
    x = (torch.rand(30, 3, 8, 8, generator=gen) * 255).to(torch.uint8)
    y = torch.randint(0, 4, (30,), generator=gen)
    before = [p.clone() for p in model.parameters()]
    table = probes.weight_noise_table(model, {"test": (x, y)}, [0.5], repeats=2)
    assert list(zip(table["sigma"], table["repeat"])) == [(0.0, 0), (0.5, 0), (0.5, 1)]
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert table.equals(probes.weight_noise_table(model, {"test": (x, y)}, [0.5], repeats=2))


def test_nuisance_sensitivity_is_the_directional_derivative_along_the_transform():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(5, 1, 4, 4)
    shift = lambda b: torch.roll(b, 1, dims=-1)  # noqa: E731
    got = probes.nuisance_sensitivity(lin, x, shift, reduction="none")
    d = (shift(x) - x).flatten(1)
    want = (d @ lin[1].weight.T).norm(dim=1) / d.norm(dim=1)  # linear: J d = W d exactly
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-5)
    # a model that averages each row ignores horizontal position: blind to a horizontal roll
    invariant = nn.Sequential(nn.AdaptiveAvgPool2d((4, 1)), nn.Flatten(), nn.Linear(4, 3))
    assert probes.nuisance_sensitivity(invariant, x, shift) == pytest.approx(0.0, abs=1e-6)
    assert probes.nuisance_sensitivity(lin, x, lambda b: b) == 0.0  # no change, no sensitivity
