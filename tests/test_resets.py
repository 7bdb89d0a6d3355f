"""Reset ops: each changes exactly the selected entries, draws from the stated distribution,
is reproducible from its generator and returns how many entries it wrote."""
import copy
import math

import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn
from torch.nn import functional as F

from zaplib import models, resets


def clone_gen(gen):
    return torch.Generator(device=gen.device).set_state(gen.get_state())


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed_fraction(a, b):
    return (a != b).float().mean().item()


# ---------------------------------------------------------------------------------------------
# zap
# ---------------------------------------------------------------------------------------------
def test_zap_changes_exactly_the_chosen_rows(gen):
    head = nn.Linear(64, 10)
    w0, b0 = head.weight.detach().clone(), head.bias.detach().clone()
    n = resets.zap(head, [2, 5, 5], generator=gen)
    assert n == 2 * 64
    chosen = torch.zeros(10, dtype=torch.bool)
    chosen[[2, 5]] = True
    assert torch.equal(head.weight[~chosen], w0[~chosen])
    assert (head.weight[chosen] != w0[chosen]).all()
    assert torch.equal(head.bias, b0)  # bias="keep" is the default (official code)


def test_zap_bias_policy_zero(gen):
    head = nn.Linear(64, 10)
    b0 = head.bias.detach().clone()
    n = resets.zap(head, 3, bias="zero", generator=gen)
    assert n == 64 + 1
    assert head.bias[3] == 0
    others = torch.arange(10) != 3
    assert torch.equal(head.bias[others], b0[others])


def test_zap_std_uses_row_fan_in(gen):
    head = nn.Linear(2304, 1000)
    assert resets.zap(head, generator=gen) == 1000 * 2304
    w = head.weight.detach()
    assert math.sqrt(2 / 2304) == pytest.approx(0.0295, abs=1e-4)
    assert w.std().item() == pytest.approx(math.sqrt(2 / 2304), rel=0.01)
    assert abs(w.mean().item()) < 1e-4
    sample = w.flatten()[:20000] / math.sqrt(2 / 2304)
    assert stats.kstest(sample.numpy(), "norm").pvalue > 1e-3


def test_zap_official_bug_draws_about_31x_too_small(gen):
    head = nn.Linear(2304, 1000)
    resets.zap(head, fan_in="official_bug", generator=gen)
    std = head.weight.std().item()
    assert std == pytest.approx(math.sqrt(2 / (1000 * 2304)), rel=0.01)
    assert std == pytest.approx(0.0009, abs=0.0001)
    # a single class (ASB) has fan-in in_features under both rules: same draw from the same seed
    a, b = nn.Linear(50, 4), nn.Linear(50, 4)
    resets.zap(a, [1], fan_in="row", generator=torch.Generator().manual_seed(3))
    resets.zap(b, [1], fan_in="official_bug", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.weight[1], b.weight[1])


def test_zap_is_reproducible_and_leaves_global_rng_alone():
    head_a, head_b = nn.Linear(30, 5), nn.Linear(30, 5)
    head_b.load_state_dict(head_a.state_dict())
    state = torch.get_rng_state()
    resets.zap(head_a, [0, 4], generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    resets.zap(head_b, [0, 4], generator=torch.Generator().manual_seed(7))
    assert torch.equal(head_a.weight, head_b.weight)
    resets.zap(head_b, [0, 4], generator=torch.Generator().manual_seed(8))
    assert not torch.equal(head_a.weight, head_b.weight)


def test_zap_accepts_a_model_and_rejects_bad_arguments(gen):
    model = models.MLP(10, hidden=(8,), num_classes=3)
    assert resets.zap(model, generator=gen) == 3 * 8
    with pytest.raises(IndexError):
        resets.zap(model.head, [3])
    with pytest.raises(ValueError):
        resets.zap(model.head, bias="random")
    with pytest.raises(TypeError):
        resets.zap(nn.Conv2d(1, 1, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_zap_cpu_generator_on_cuda_head_matches_cpu():
    cpu = nn.Linear(40, 6)
    gpu = copy.deepcopy(cpu).cuda()
    resets.zap(cpu, [1, 2], generator=torch.Generator().manual_seed(0))
    resets.zap(gpu, [1, 2], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gpu.weight.cpu(), cpu.weight)


# ---------------------------------------------------------------------------------------------
# shrink & perturb
# ---------------------------------------------------------------------------------------------
def bn_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    model[1].running_mean.normal_()
    return model


def test_shrink_perturb_noise_form_formula(gen):
    model = bn_mlp()
    before = snapshot(model)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    expected_gen = clone_gen(gen)
    n = resets.shrink_perturb(model, 0.3, 0.001, generator=gen)
    assert n == sum(p.numel() for p in model.parameters())
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=expected_gen)
        assert torch.equal(p, before[name] * 0.3 + 0.001 * noise), name
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name  # BN running statistics untouched


def test_shrink_perturb_fresh_form_formula(gen):
    model = bn_mlp()
    before = snapshot(model)
    fresh = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    resets.shrink_perturb(model, 0.4, 0.1, form="fresh", fresh=fresh)
    for (name, p), f in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(p, before[name] * 0.4 + 0.1 * f), name


def test_shrink_perturb_default_fresh_model_is_seeded_fresh_init(gen):
    model = bn_mlp()
    before = snapshot(model)
    fresh = resets.fresh_init(model, generator=clone_gen(gen))
    for name in ("0.weight", "0.bias", "3.weight", "3.bias"):
        assert not torch.equal(before[name], fresh.get_parameter(name)), name  # a new draw
    assert torch.equal(fresh[1].weight, torch.ones(5))  # BN scale back at its init
    assert fresh[0].weight.abs().max() <= 1 / math.sqrt(6)
    resets.shrink_perturb(model, 0.4, 0.1, form="fresh", generator=gen)
    for (name, p), f in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(p, before[name] * 0.4 + 0.1 * f), name


def test_shrink_perturb_param_selector(gen):
    model = bn_mlp()
    before = snapshot(model)
    n = resets.shrink_perturb(model, 0.5, 0.0, params="weight", generator=gen)
    assert n == sum(p.numel() for name, p in model.named_parameters() if "weight" in name)
    for name, p in model.named_parameters():
        if "weight" in name:
            assert torch.equal(p, before[name] * 0.5)
        else:
            assert torch.equal(p, before[name])


# ---------------------------------------------------------------------------------------------
# later-layer forgetting
# ---------------------------------------------------------------------------------------------
def test_reinit_layers_touches_only_named_conv_linear(gen):
    torch.manual_seed(0)
    model = models.cifar_resnet18(width=8)
    with torch.no_grad():  # move BN parameters off their init so a reset would show
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.add_(0.5), m.bias.add_(0.5), m.running_mean.add_(1.0)
    before = snapshot(model)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    state = torch.get_rng_state()
    n = resets.reinit_layers(model, ["layer3", "layer4", "fc"], generator=gen)
    assert torch.equal(torch.get_rng_state(), state)
    modules = dict(model.named_modules())
    expected = 0
    for name, p in model.named_parameters():
        owner = modules[name.rpartition(".")[0]]
        in_scope = name.split(".")[0] in ("layer3", "layer4", "fc")
        if in_scope and isinstance(owner, (nn.Conv2d, nn.Linear)):
            expected += p.numel()
            assert changed_fraction(p, before[name]) > 0.99, name
        else:
            assert torch.equal(p, before[name]), name
    assert n == expected
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    # re-drawn from the model's init: PyTorch default U(±1/√fan_in) for this ResNet
    w = model.layer4[0].conv1.weight.detach()
    bound = 1 / math.sqrt(w[0].numel())
    assert w.abs().max().item() <= bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)


def test_reinit_layers_uses_the_models_own_init(gen):
    model = models.OmniglotConvNet(channels=64, num_classes=5)
    with torch.no_grad():
        model.body[4].weight.mul_(0.01)
    n = resets.reinit_layers(model, "body.4", generator=gen)
    assert n == 64 * 64 * 9 + 64
    w = model.body[4].weight.detach().flatten()
    sigma = math.sqrt(2 / (64 * 9))  # Kaiming-normal, not PyTorch's uniform default
    assert w.std().item() == pytest.approx(sigma, rel=0.03)
    assert stats.kstest((w / sigma).numpy(), "norm").pvalue > 1e-3


def test_reinit_layers_include_norm_and_name_matching(gen):
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(12)])
    before = snapshot(model)
    assert resets.reinit_layers(model, ["1"], generator=gen) == 4 * 4 + 4
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) == (not name.startswith("1.")), name  # not "10", "11"
    bn_model = bn_mlp()
    with torch.no_grad():
        bn_model[1].weight.fill_(3.0)
    resets.reinit_layers(bn_model, ["1"], generator=gen)
    assert torch.equal(bn_model[1].weight, torch.full((5,), 3.0))  # BN skipped by default
    n = resets.reinit_layers(bn_model, ["1"], include_norm=True, generator=gen)
    assert n == 10
    assert torch.equal(bn_model[1].weight, torch.ones(5))
    assert torch.equal(bn_model[1].running_mean, torch.zeros(5))
    with pytest.raises(ValueError):
        resets.reinit_layers(bn_model, ["nope"])


def test_reinit_layers_is_reproducible():
    a = models.MLP(20, hidden=(16,), num_classes=4)
    b = copy.deepcopy(a)
    resets.reinit_layers(a, ["head"], generator=torch.Generator().manual_seed(5))
    resets.reinit_layers(b, ["head"], generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.head.weight, b.head.weight) and torch.equal(a.head.bias, b.head.bias)


# ---------------------------------------------------------------------------------------------
# LURE: importance, keep masks, masked re-init
# ---------------------------------------------------------------------------------------------
def snip_setup():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.Tanh(), nn.Flatten(), nn.Linear(6 * 6 * 6, 4))
    model[1].running_mean.normal_()
    with torch.no_grad():  # BN off its constant init, so no saliency is tied at 0
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,))
    return model, (x, y)


def hand_snip(model, batch):
    model = copy.deepcopy(model).eval()
    x, y = batch
    F.cross_entropy(model(x), y).backward()
    return {n: (p.grad * p).abs().detach() for n, p in model.named_parameters()}


def test_snip_scores_match_autograd_and_restore_mode():
    model, batch = snip_setup()
    model.train()
    running = model[1].running_mean.clone()
    scores = resets.importance(model, batch, "snip")
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model[1].running_mean, running)  # scored in eval mode: no BN update
    assert all(p.grad is None for p in model.parameters())
    expected = hand_snip(model, batch)
    assert list(scores) == list(expected)
    for name in expected:
        torch.testing.assert_close(scores[name], expected[name])
    model.eval()
    resets.importance(model, batch, "snip")
    assert not any(m.training for m in model.modules())


def test_snip_mask_resets_exactly_the_entries_outside_the_topk_saliencies():
    model, batch = snip_setup()
    masks = resets.snip_mask(model, batch, fraction=0.2)
    scores = hand_snip(model, batch)
    flat = torch.cat([s.flatten() for s in scores.values()])
    assert flat.unique().numel() == flat.numel()  # no ties: the top-k set is unique
    k = math.floor(0.8 * flat.numel() + 0.5)
    topk = torch.zeros(flat.numel(), dtype=torch.bool)
    topk[torch.topk(flat, k).indices] = True
    got = torch.cat([m.flatten() for m in masks.values()])
    assert torch.equal(got, ~topk)  # True = reset


def test_lure_reset_redraws_exactly_the_unkept_weights(gen):
    model, batch = snip_setup()
    with torch.no_grad():  # two tiny BN scales have tiny saliency: they must be reset
        model[1].weight[:2] = 1e-6
    reset = resets.snip_mask(model, batch, fraction=0.2)
    before = snapshot(model)
    # not seed 0: snip_setup built the model from global seed 0, and the LURE rule equals torch's
    # default conv init, so seed 0 would redraw the first conv's original values
    n = resets.lure_reset(model, batch, reset_fraction=0.2,
                          generator=torch.Generator().manual_seed(123))
    expected = 0
    for name, p in model.named_parameters():
        keep = ~reset[name]
        if "weight" in name:
            expected += int((~keep).sum())
            assert torch.equal(p[keep], before[name][keep]), name
            assert (p[~keep] != before[name][~keep]).all(), name
            fan_in = p[0].numel() if p.dim() > 1 else 1  # BN scales: U(−1, 1)
            assert (p[~keep].abs() <= 1 / math.sqrt(fan_in)).all(), name
        else:
            assert torch.equal(p, before[name]), name  # biases and BN shifts never reset
    assert n == expected > 0
    assert reset["1.weight"][:2].all()
    assert any(reset[n].any() for n in reset if "weight" not in n)  # biases below, yet kept


def test_global_and_layer_scope_differ_as_expected():
    scores = {"a": 10 + torch.rand(100), "b": torch.rand(100)}
    glob = resets.reset_mask(scores, fraction=0.5, scope="global")
    assert not glob["a"].any() and glob["b"].all()
    layer = resets.reset_mask(scores, fraction=0.5, scope="layer")
    assert layer["a"].sum() == 50 and layer["b"].sum() == 50
    assert torch.equal(layer["b"], scores["b"] <= scores["b"].kthvalue(50).values)  # bottom half


def test_reset_mask_counts_and_ties_are_deterministic():
    ties = {"t": torch.ones(10)}
    mask = resets.reset_mask(ties, fraction=0.75)["t"]
    assert (~mask).sum() == 3  # kept: round(2.5) half up
    assert not mask[:3].any() and mask[3:].all()  # earlier entries win ties (are kept)
    two = resets.reset_mask({"a": torch.ones(2, 3), "b": torch.ones(4)}, fraction=0.5)
    assert not two["a"].flatten()[:5].any() and two["a"].sum() == 1 and two["b"].all()
    assert resets.reset_mask({"a": torch.rand(7)}, fraction=1.0)["a"].all()
    assert not resets.reset_mask({"a": torch.rand(7)}, fraction=0.0)["a"].any()
    with pytest.raises(ValueError):
        resets.reset_mask(ties, fraction=1.5)
    many = {"a": torch.randint(0, 5, (300,)).float(), "b": torch.randint(0, 5, (7, 100)).float()}
    flat = torch.cat([many["a"], many["b"].flatten()])
    order = torch.sort(flat, descending=True, stable=True).indices  # reference: stable sort
    want = torch.ones(1000, dtype=torch.bool)
    want[order[:630]] = False  # the top 63 % are kept, the rest reset
    got = resets.reset_mask(many, fraction=0.37)
    assert torch.equal(torch.cat([got["a"], got["b"].flatten()]), want)


def test_kaiming_uniform_rule_gives_bn_scales_u_minus1_1(gen):
    model = nn.Sequential(nn.BatchNorm1d(20000), nn.Linear(500, 400))
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()
             if "weight" in n}
    n = resets.masked_reinit(model, masks, generator=gen)
    assert n == 20000 + 500 * 400
    scale = model[0].weight.detach()
    assert scale.min() >= -1 and scale.max() <= 1 and scale.min() < -0.99 and scale.max() > 0.99
    assert scale.std().item() == pytest.approx(1 / math.sqrt(3), rel=0.02)
    w = model[1].weight.detach()
    assert w.abs().max().item() <= 1 / math.sqrt(500)
    assert w.std().item() == pytest.approx(1 / math.sqrt(3 * 500), rel=0.02)


def test_kaiming_uniform_rule_equals_torch_init_for_matrices():
    w = torch.empty(7, 3, 5, 5)
    torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=torch.Generator().manual_seed(4))
    model = nn.Sequential(nn.Conv2d(3, 7, 5))
    resets.masked_reinit(model, {"0.weight": torch.ones(7, 3, 5, 5, dtype=torch.bool)},
                         generator=torch.Generator().manual_seed(4))
    assert torch.equal(model[0].weight, w)


def test_masked_reinit_model_init_and_reproducibility():
    model = models.OmniglotConvNet(channels=32, num_classes=3)
    with torch.no_grad():
        model.body[4].weight.fill_(5.0)
    twin = copy.deepcopy(model)
    keep = torch.rand(model.body[4].weight.shape, generator=torch.Generator().manual_seed(1)) < 0.3
    masks = {"body.4.weight": ~keep}  # True = reset
    n = resets.masked_reinit(model, masks, init="model", generator=torch.Generator().manual_seed(2))
    assert n == int((~keep).sum())
    w = model.body[4].weight.detach()
    assert (w[keep] == 5.0).all() and (w[~keep] != 5.0).all()
    assert w[~keep].std().item() == pytest.approx(math.sqrt(2 / (32 * 9)), rel=0.03)
    resets.masked_reinit(twin, masks, init="model", generator=torch.Generator().manual_seed(2))
    assert torch.equal(twin.body[4].weight, w)
    with pytest.raises(ValueError):
        resets.masked_reinit(model, {"body.4.weight": keep[:1]})


def test_other_importance_criteria(gen):
    model, batch = snip_setup()
    x, y = batch
    mag = resets.importance(model, batch, "magnitude")
    assert all(torch.equal(mag[n], p.detach().abs()) for n, p in model.named_parameters())
    rnd = resets.importance(model, batch, "random", generator=clone_gen(gen))
    again = resets.importance(model, batch, "random", generator=clone_gen(gen))
    assert all(torch.equal(rnd[n], again[n]) and (rnd[n] >= 0).all() and (rnd[n] < 1).all()
               for n in rnd)
    fisher = resets.importance(model, batch, "fisher")
    ref = copy.deepcopy(model).eval()
    expected = {n: torch.zeros_like(p) for n, p in ref.named_parameters()}
    for i in range(len(x)):
        grads = torch.autograd.grad(F.cross_entropy(ref(x[i:i + 1]), y[i:i + 1]),
                                    list(ref.parameters()))
        for name, g in zip(expected, grads):
            expected[name] += g.square() / len(x)
    for name in expected:
        torch.testing.assert_close(fisher[name], expected[name])
    batch_fisher = resets.importance(model, batch, "fisher", fisher="batch")
    assert not torch.allclose(batch_fisher["4.weight"], fisher["4.weight"])
    only_weights = resets.importance(model, batch, "snip", params="weight")
    assert set(only_weights) == {"0.weight", "1.weight", "4.weight"}


# ---------------------------------------------------------------------------------------------
# bias reset
# ---------------------------------------------------------------------------------------------
def test_shift_biases_adds_delta_to_every_bias_only():
    model = nn.Sequential(models.SmallCNN(width=4), nn.BatchNorm1d(10))
    before = snapshot(model)
    n = resets.shift_biases(model, 0.01)
    biases = [name for name in before if name.endswith("bias")]
    assert len(biases) == 5  # 2 convs, hidden linear, head, BN shift
    assert n == sum(before[name].numel() for name in biases)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.equal(p, before[name] + 0.01), name
        else:
            assert torch.equal(p, before[name]), name


# ---------------------------------------------------------------------------------------------
# frozen and mutually frozen weights
# ---------------------------------------------------------------------------------------------
def test_frozen_fraction_at_init_follows_init_std():
    eps = 0.1
    mlp = models.MLP(1000, hidden=(500,), num_classes=10)
    frac = resets.frozen_mask(mlp, eps)["body.1.weight"].float().mean().item()
    assert frac == pytest.approx(eps / math.sqrt(3), rel=0.05)  # P(|U(±√3σ)| < εσ)
    conv = models.OmniglotConvNet(channels=64)  # Kaiming-normal convs
    frac = resets.frozen_mask(conv, eps)["body.4.weight"].float().mean().item()
    assert frac == pytest.approx(stats.norm.cdf(eps) - stats.norm.cdf(-eps), rel=0.05)


def hand_mlp():
    """6 → 5 → 4 → 3; every weight 0.5 and bias 0.5 (large) unless zeroed below."""
    model = models.MLP(6, hidden=(5, 4), num_classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    return model


def test_mutually_frozen_vs_plain_sparse_on_hand_built_mlp():
    model = hand_mlp()
    l1, l2, head = model.body[1], model.body[3], model.head
    with torch.no_grad():
        l1.weight[0, 1] = 0.0        # plain sparse: unit 0 still has large outgoing weights
        l1.weight[2, :3] = 0.0       # unit 2 of layer 1 ...
        l2.weight[:, 2] = 0.0        # ... has all outgoing weights frozen
        l2.weight[1, :] = 0.0        # unit 1 of layer 2: all incoming weights frozen, bias 0
        l2.bias[1] = 0.0
        head.weight[:, 1] = 0.001    # and all outgoing weights frozen
    masks, table = resets.mutually_frozen_mask(model, eps=0.1)
    want1 = torch.zeros(5, 6, dtype=torch.bool)
    want1[2, :3] = True              # frozen + outgoing partners (layer 2 column 2) frozen
    want2 = torch.zeros(4, 5, dtype=torch.bool)
    want2[1, :] = True               # frozen + outgoing partners (head column 1) frozen
    want3 = torch.zeros(3, 4, dtype=torch.bool)
    want3[:, 1] = True               # frozen + incoming partners (layer 2 row 1 and bias) frozen
    assert torch.equal(masks["body.1.weight"], want1)
    # layer-2 column 2 is frozen but unit 2's incoming weights in layer 1 are only half frozen and
    # its targets' outgoing weights are large: plain sparse, except the entry in row 1
    assert torch.equal(masks["body.3.weight"], want2)
    assert torch.equal(masks["head.weight"], want3)
    frozen = resets.frozen_mask(model, eps=0.1)
    assert frozen["body.1.weight"][0, 1] and not masks["body.1.weight"][0, 1]
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns[:4]) == ["layer", "n", "frozen_frac", "mutually_frozen_frac"]
    row = table.set_index("layer").loc["body.3"]
    assert row["n"] == 20
    assert row["frozen_frac"] == pytest.approx(8 / 20)  # column 2 (4) + row 1 (5) − overlap (1)
    assert row["mutually_frozen_frac"] == pytest.approx(5 / 20)
    assert row["plain_sparse_frac"] == pytest.approx(3 / 20)


def test_mutually_frozen_bias_rule_and_partner_options():
    model = hand_mlp()
    with torch.no_grad():
        model.body[3].weight[1, :] = 0.0
        model.head.weight[:, 1] = 0.0     # bias of unit 1 stays 0.5: h_1 = 0.5, not ≈ 0
    masks, _ = resets.mutually_frozen_mask(model, eps=0.1)
    assert not masks["head.weight"].any()  # outgoing weights still get gradient δ·0.5
    assert masks["body.3.weight"][1].all()  # incoming weights: δ_1 ≈ 0 through frozen head column
    no_bias, _ = resets.mutually_frozen_mask(model, eps=0.1, bias_rule=False)
    assert no_bias["head.weight"][:, 1].all()
    outgoing, _ = resets.mutually_frozen_mask(model, eps=0.1, bias_rule=False, partners="outgoing")
    incoming, _ = resets.mutually_frozen_mask(model, eps=0.1, bias_rule=False, partners="incoming")
    assert not outgoing["head.weight"].any() and incoming["head.weight"][:, 1].all()
    assert outgoing["body.3.weight"][1].all() and not incoming["body.3.weight"].any()


def test_mutually_frozen_conv_channels_are_units():
    torch.manual_seed(0)
    model = models.SmallCNN(in_channels=1, num_classes=3, width=4, input_size=8, hidden=6)
    conv2, fc = model.body[3], model.body[7]  # conv 4 → 8 channels; linear 8·2·2 → 6
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.sign() + (p == 0).float())  # every weight ±1: nothing frozen
        fc.weight[:, 12:16] = 0.0             # channel 3 of conv2, flattened (2×2 positions)
        conv2.weight[3, 0] = 0.0              # a 3×3 kernel into channel 3
        conv2.weight[5, 1] = 0.0              # a kernel into channel 5 (outgoing large)
    masks, table = resets.mutually_frozen_mask(model, eps=0.1)
    want = torch.zeros_like(conv2.weight, dtype=torch.bool)
    want[3, 0] = True
    assert torch.equal(masks["body.3.weight"], want)
    assert not masks["body.7.weight"].any()  # channel 3 still has 3 large incoming kernels
    assert table.set_index("layer").loc["body.3", "frozen_frac"] == pytest.approx(18 / 288)
    with torch.no_grad():
        conv2.weight[3] = 0.0
        conv2.bias[3] = -1.0                  # dead unit: ReLU(b) = 0
    masks, _ = resets.mutually_frozen_mask(model, eps=0.1)
    assert masks["body.7.weight"][:, 12:16].all() and masks["body.7.weight"].sum() == 24


def test_mutually_frozen_refuses_residual_nets():
    with pytest.raises(ValueError, match="feed-forward"):
        resets.mutually_frozen_mask(models.cifar_resnet18(width=4), eps=0.1)


def test_masked_reinit_of_mutually_frozen_weights_and_random_control(gen):
    model = hand_mlp()
    with torch.no_grad():
        model.body[3].weight[:, 2] = 0.0
        model.body[1].weight[2, :] = 0.0
        model.body[1].bias[2] = 0.0
    masks, _ = resets.mutually_frozen_mask(model, eps=0.1)
    before = snapshot(model)
    n = resets.masked_reinit(model, masks, init="model", generator=gen)
    assert n == sum(int(m.sum()) for m in masks.values()) == 6 + 4
    for name, p in model.named_parameters():
        m = masks.get(name, torch.zeros_like(p, dtype=torch.bool))
        assert torch.equal(p[~m], before[name][~m]), name
        assert (p[m] != 0).all(), name
        if m.any():
            assert p[m].abs().max() <= 1 / math.sqrt(p.shape[1])  # the layer's own init bound
    control = resets.random_masks_like(masks, generator=gen)
    assert all(control[n].sum() == masks[n].sum() for n in masks)
    assert not all(torch.equal(control[n], masks[n]) for n in masks)


# ---------------------------------------------------------------------------------------------
# one dispatcher
# ---------------------------------------------------------------------------------------------
def test_apply_unknown_name_lists_the_ops():
    with pytest.raises(ValueError, match="unknown reset 'zapp'") as info:
        resets.apply("zapp", nn.Linear(3, 2))
    assert all(name in str(info.value) for name in resets.RESETS)


def test_apply_dispatches_to_the_named_op():
    torch.manual_seed(0)
    model = models.SmallCNN(in_channels=1, num_classes=4, width=4, input_size=8, hidden=6)
    same = copy.deepcopy(model)
    n = resets.apply("zap", model, torch.Generator().manual_seed(5), classes=[1])
    assert n == resets.zap(same.head, [1], generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters()))
    assert resets.apply("none", model) == 0
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters()))
    assert resets.apply("shift_biases", model, delta=0.5) == resets.shift_biases(same, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters()))


def test_apply_masked_changes_exactly_the_masked_entries_with_the_rule_std():
    """True = reset: only masked entries move, and they follow the stated distribution."""
    model = nn.Sequential(nn.Linear(400, 300), nn.ReLU(), nn.Linear(300, 10))
    with torch.no_grad():
        model[0].weight.fill_(7.0)
    mask = torch.rand(300, 400, generator=torch.Generator().manual_seed(0)) < 0.5
    before = snapshot(model)
    n = resets.apply("masked", model, torch.Generator().manual_seed(1), masks={"0.weight": mask})
    w = model[0].weight.detach()
    assert n == int(mask.sum())
    assert (w[~mask] == 7.0).all() and (w[mask] != 7.0).all()
    # LURE's kaiming_uniform(a=√5): U(±1/√fan_in), std 1/√(3·fan_in)
    assert w[mask].std().item() == pytest.approx(1 / math.sqrt(3 * 400), rel=0.03)
    for name in ("0.bias", "2.weight", "2.bias"):
        assert torch.equal(dict(model.named_parameters())[name], before[name])


def test_apply_mutually_frozen_equals_masked_reinit_of_its_mask():
    model = hand_mlp()
    with torch.no_grad():
        model.body[3].weight[:, 2] = 0.0
        model.body[1].weight[2, :] = 0.0
        model.body[1].bias[2] = 0.0
    twin = copy.deepcopy(model)
    n = resets.apply("mutually_frozen", model, torch.Generator().manual_seed(3), eps=0.1)
    masks, _ = resets.mutually_frozen_mask(twin, eps=0.1)
    assert n == resets.masked_reinit(twin, masks, init="model", generator=torch.Generator().manual_seed(3)) == 10
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_apply_reinit_all_gives_the_fresh_network():
    torch.manual_seed(0)
    model = models.MLP(12, hidden=(8,), num_classes=3)
    fresh = resets.fresh_init(model, torch.Generator().manual_seed(9))
    n = resets.apply("reinit_all", model, torch.Generator().manual_seed(9))
    assert n == sum(p.numel() for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))


# ---------------------------------------------------------------------------------------------
# collapsed (dead) units: the unit-level view of mutually frozen weights
# ---------------------------------------------------------------------------------------------
def test_collapsed_units_are_units_with_every_incoming_weight_and_the_bias_frozen():
    model = hand_mlp()  # 6 → 5 → 4 → 3, everything 0.5
    with torch.no_grad():
        model.body[1].weight[2, :] = 0.0   # unit 2 of layer 1: incoming all frozen ...
        model.body[1].bias[2] = 0.0        # ... and its bias too: collapsed
        model.body[1].weight[4, :] = 0.0   # unit 4: incoming frozen but bias 0.5 (outputs 0.5): alive
        model.body[3].weight[0, :] = 0.0   # unit 0 of layer 2: collapsed (bias set below)
        model.body[3].bias[0] = -1.0
    masks, table = resets.collapsed_units(model, eps=0.1)
    t = table.set_index("layer")
    assert list(t.index) == ["body.1", "body.3"]  # hidden layers only: the head's units are outputs
    assert t.loc["body.1", "collapsed_units"] == 1 and t.loc["body.1", "units"] == 5
    assert t.loc["body.3", "collapsed_units"] == 1
    assert t.loc["body.1", "weights"] == 6 + 1 + 4  # incoming row, bias, outgoing column
    assert torch.equal(masks["body.1.weight"].all(dim=1), torch.tensor([False, False, True, False, False]))
    assert torch.equal(masks["body.1.bias"], torch.tensor([False, False, True, False, False]))
    want3 = torch.zeros(4, 5, dtype=torch.bool)
    want3[:, 2] = True      # unit 2's outgoing column ...
    want3[0, :] = True      # ... and unit 0 of layer 2's incoming row
    assert torch.equal(masks["body.3.weight"], want3)
    assert torch.equal(masks["head.weight"][:, 0], torch.ones(3, dtype=torch.bool))
    assert int(masks["head.weight"].sum()) == 3
    _, no_bias = resets.collapsed_units(model, eps=0.1, bias_rule=False)
    assert no_bias.set_index("layer").loc["body.1", "collapsed_units"] == 2  # unit 4 counts too


def test_the_unit_level_reset_redraws_exactly_the_collapsed_units_from_the_layer_init(gen):
    model = hand_mlp()
    with torch.no_grad():
        model.body[1].weight[2, :] = 0.0
        model.body[1].bias[2] = 0.0
    masks, _ = resets.collapsed_units(model, eps=0.1)
    before = snapshot(model)
    n = resets.apply("collapsed_units", model, gen, eps=0.1)
    assert n == sum(int(m.sum()) for m in masks.values()) == 6 + 1 + 4
    for name, p in model.named_parameters():
        m = masks.get(name, torch.zeros_like(p, dtype=torch.bool))
        assert torch.equal(p[~m], before[name][~m]), name
        if m.any():
            fan_in = dict(model.named_parameters())[name.replace("bias", "weight")].shape[1]
            assert (p[m] != before[name][m]).all() and p[m].abs().max() <= 1 / math.sqrt(fan_in)
    assert resets.collapsed_units(model, eps=0.1)[1].collapsed_units.sum() == 0  # alive again


def test_eps_sensitivity_counts_grow_with_the_threshold():
    torch.manual_seed(0)
    model = models.MLP(20, hidden=(16, 12), num_classes=4)
    with torch.no_grad():
        model.body[1].weight.mul_(torch.linspace(0.0, 1.0, 16).unsqueeze(1))  # graded row scales
        model.body[1].bias.fill_(-1.0)
    table = resets.eps_sensitivity(model, [0.01, 0.1, 0.5, 2.0])
    assert set(table.eps) == {0.01, 0.1, 0.5, 2.0}
    frozen = table[table.layer == "body.1"].set_index("eps").frozen_frac
    assert frozen.is_monotonic_increasing and frozen.iloc[0] < frozen.iloc[-1]
    units = table[table.layer == "body.1"].set_index("eps").collapsed_units
    assert units.is_monotonic_increasing and units.loc[0.01] >= 1  # the zero row is always dead
    assert (table.mutually_frozen_frac <= table.frozen_frac + 1e-12).all()


def test_official_llf_keeps_the_shortcut_convs_and_the_fc_bias(gen):
    """LURE's official LLF (reference notes): layer3, layer4 and fc weights re-drawn, the 1×1
    shortcut convs and the fc bias kept; ours re-draws both."""
    torch.manual_seed(0)
    model = models.cifar_resnet18(width=4)
    before = snapshot(model)
    n = resets.reinit_layers(model, ["layer3", "layer4", "fc"], gen, skip=("shortcut",), weights_only=True)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert "fc.weight" in changed and "fc.bias" not in changed
    assert not any("shortcut" in name for name in changed)
    assert {"layer3.0.conv1.weight", "layer4.1.conv2.weight"} <= changed
    assert not any(name.startswith(("layer1", "layer2", "conv1", "bn1")) for name in changed)
    assert not any(".bn" in name for name in changed)  # norm layers untouched
    params = dict(model.named_parameters())
    assert n == sum(params[name].numel() for name in changed)
    ours = models.cifar_resnet18(width=4)
    before = snapshot(ours)
    resets.reinit_layers(ours, ["layer3", "layer4", "fc"], gen)
    changed = {name for name, p in ours.named_parameters() if not torch.equal(p, before[name])}
    assert "fc.bias" in changed and any("shortcut" in name for name in changed)
