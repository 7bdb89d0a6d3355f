"""Models: shapes, feature sizes, the head/features interface, init rules, registry."""
import math

import pytest
import torch
from scipy import stats
from torch import nn

from zaplib import models


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def check_interface(model, x, num_classes):
    logits = model(x)
    assert isinstance(model.head, nn.Linear)
    feats = model.features(x)
    assert feats.shape == (x.shape[0], model.head.in_features)
    assert logits.shape == (x.shape[0], num_classes)
    torch.testing.assert_close(model.head(feats), logits)
    return feats


def test_omniglot_convnet_matches_reference_shapes():
    model = models.OmniglotConvNet()
    assert model.feature_dim == 2304  # 256 × 3 × 3
    assert model.head.in_features == 2304 and model.head.out_features == 1000
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert [c.out_channels for c in convs] == [256] * 3 and all(c.padding == (0, 0) for c in convs)
    assert len(norms) == 3 and all(n.affine for n in norms)
    assert len(pools) == 2
    check_interface(model, torch.rand(2, 1, 28, 28), 1000)


def test_omniglot_convnet_sizes_are_parameters():
    small = models.OmniglotConvNet(channels=64, num_classes=5)
    assert small.feature_dim == 64 * 9
    check_interface(small, torch.rand(2, 1, 28, 28), 5)
    big = models.OmniglotConvNet.omni_image(channels=32, num_classes=7)
    assert big.feature_dim == 32 * 5 * 5  # 84 → 84 → 42 → 42 → 21 → 21 → 10 → 10 → 5
    assert sum(isinstance(m, nn.Conv2d) for m in big.modules()) == 4
    check_interface(big, torch.rand(2, 3, 84, 84), 7)
    with pytest.raises(ValueError):
        models.OmniglotConvNet(n_blocks=4)  # pool tuple has 3 entries


def test_omniglot_conv_init_is_kaiming_normal_and_head_default():
    torch.manual_seed(0)
    model = models.OmniglotConvNet(channels=64)
    conv = model.body[4]  # second conv: 64 × 64 × 3 × 3
    w = conv.weight.detach().flatten()
    sigma = math.sqrt(2 / (64 * 9))
    assert model.init_weight_std(conv) == pytest.approx(sigma)
    assert w.std().item() == pytest.approx(sigma, rel=0.03)
    assert stats.kstest((w / sigma).numpy(), "norm").pvalue > 1e-3
    bound = 1 / math.sqrt(model.head.in_features)  # PyTorch default linear init
    assert model.head.weight.abs().max().item() <= bound
    assert model.head.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


def test_anml_gates_features_multiplicatively():
    torch.manual_seed(0)
    model = models.ANML(channels=16, nm_channels=8, num_classes=11)
    x = torch.rand(3, 1, 28, 28)
    feats = check_interface(model, x, 11)
    gate = model.gate(x)
    assert gate.shape == (3, 16 * 9) and model.feature_dim == 16 * 9
    assert gate.min() > 0 and gate.max() < 1
    torch.testing.assert_close(feats, model.rln(x).flatten(1) * gate)
    rln_params = {id(p) for p in model.rln.parameters()}
    assert rln_params.isdisjoint(id(p) for p in model.nm.parameters())
    default = models.ANML()
    assert default.feature_dim == 2304 and default.head.out_features == 1000


def test_cifar_resnet18_names_width_and_normalisation():
    torch.manual_seed(0)
    model = models.cifar_resnet18(width=8)
    assert [n for n, _ in model.named_children()] == \
        ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert model.head is model.fc
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    x = torch.rand(2, 3, 32, 32)
    feats = check_interface(model, x, 10)
    assert feats.shape == (2, 64)
    assert n_params(models.cifar_resnet18()) == 11_173_962  # the standard CIFAR ResNet-18
    assert n_params(models.cifar_resnet18(width=16)) < n_params(models.cifar_resnet18(width=32))
    torch.testing.assert_close(model.mean.flatten(), torch.tensor(models.CIFAR10_MEAN))
    torch.testing.assert_close(model.std.flatten(), torch.tensor(models.CIFAR10_STD))
    raw = models.cifar_resnet18(width=8, normalize=False)
    raw.load_state_dict(model.state_dict(), strict=False)
    model.eval(), raw.eval()
    torch.testing.assert_close(model(x), raw((x - model.mean) / model.std))
    assert raw.mean is None


def test_cifar_resnet10_is_resnet18_with_one_block_per_stage():
    small, big = models.cifar_resnet10(width=4), models.cifar_resnet18(width=4)
    assert [len(getattr(small, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert [len(getattr(big, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    convs = [m for m in small.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 1 + 4 * 2  # stem + two 3x3 convs per block: the "10" with the fc
    # dropping the second block of each stage removes exactly those blocks' parameters
    second = sum(n_params(getattr(big, f"layer{i}")[1]) for i in range(1, 5))
    assert n_params(small) == n_params(big) - second
    feats = check_interface(small, torch.rand(2, 3, 16, 16), 10)
    assert feats.shape == (2, 32)
    assert isinstance(models.build({"model": "resnet10", "width": 4}), models.ResNet)


def test_torchvision_cifar_archs_on_32px():
    x = torch.rand(2, 3, 32, 32)
    for arch, dim in [("resnet50", 2048), ("vgg16_bn", 512), ("wide_resnet50_2", 2048)]:
        model = models.torchvision_cifar(arch, num_classes=10)
        feats = check_interface(model, x, 10)
        assert feats.shape == (2, dim)
        if arch != "vgg16_bn":
            assert model.conv1.stride == (1, 1) and model.conv1.kernel_size == (3, 3)
            assert model.head is model.fc and hasattr(model, "layer4")
    with pytest.raises(ValueError):
        models.torchvision_cifar("resnet18")


def test_small_nets_have_biases_and_right_shapes():
    cnn = models.SmallCNN(in_channels=1, num_classes=10, width=8)
    check_interface(cnn, torch.rand(2, 1, 28, 28), 10)
    assert all(m.bias is not None for m in cnn.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    cifar_cnn = models.SmallCNN(in_channels=3, num_classes=4, width=8, input_size=32)
    check_interface(cifar_cnn, torch.rand(2, 3, 32, 32), 4)
    mlp = models.MLP(784, hidden=(32, 16), num_classes=10)
    assert mlp.feature_dim == 16
    check_interface(mlp, torch.rand(2, 1, 28, 28), 10)


def test_build_from_config_covers_the_registry():
    assert isinstance(models.build({"model": "omniglot_convnet", "channels": 8}), models.OmniglotConvNet)
    anml = models.build({"model": "anml", "channels": 8, "nm_channels": 4, "num_classes": 7})
    assert isinstance(anml, models.ANML) and anml.head.out_features == 7
    assert isinstance(models.build({"model": "resnet18", "width": 4}), models.ResNet)
    assert isinstance(models.build({"model": "small_cnn"}), models.SmallCNN)
    assert models.build({"model": "mlp", "in_features": 10, "num_classes": 3})(torch.rand(2, 10)).shape == (2, 3)
    for name in ("resnet50", "wide_resnet50_2", "vgg16_bn"):
        assert name in models.MODEL_BUILDERS
    with pytest.raises(ValueError, match="unknown model"):
        models.build({"model": "resnet1000"})


def test_build_translates_width_and_input_shape_for_an_mlp():
    mlp = models.build({"model": "mlp", "width": 16, "depth": 3, "in_channels": 3, "input_size": 8,
                        "num_classes": 5})
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(192, 16), (16, 16), (16, 16), (16, 5)]
    assert len(models.build({"model": "mlp", "width": 16}).body) == 1 + 2  # depth 1 by default


def test_build_ignores_run_settings_but_refuses_model_keys_the_model_does_not_take():
    cnn = models.build({"model": "small_cnn", "width": 4, "lr": 0.1, "epochs": 3})
    assert isinstance(cnn, models.SmallCNN)
    with pytest.raises(ValueError, match="takes no \\['channels'\\]"):
        models.build({"model": "small_cnn", "channels": 4})
    with pytest.raises(ValueError, match="width"):
        models.build({"model": "mlp", "depth": 2})


def test_build_seeds_the_init_without_touching_the_global_rng():
    config = {"model": "small_cnn", "width": 4, "seed": 3}
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = models.build(config), models.build(config)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = models.build({**config, "seed": 4})
    assert not torch.equal(a.head.weight, c.head.weight)


def test_init_rule_helpers_fall_back_to_pytorch_default():
    plain = nn.Sequential(nn.Linear(300, 20))
    assert models.init_weight_std(plain, plain[0]) == pytest.approx(1 / math.sqrt(900))
    before = plain[0].weight.detach().clone()
    models.init_module(plain, plain[0])
    assert not torch.equal(before, plain[0].weight)


def test_lure_official_resnet_init_and_the_lure_redraw_is_narrower():
    """LURE's official ResNet-18: conv Kaiming-normal (fan-out), BN 1/0; its reset's
    kaiming_uniform(a=√5) re-draw is then √6 ≈ 2.4× narrower for 3×3 convs of equal width."""
    net = models.build({"model": "resnet18", "width": 16, "init": "official", "seed": 0})
    assert isinstance(net, models.ResNetOfficialInit)
    conv = net.layer2[1].conv1  # 32 → 32 channels, 3×3
    fan_out = conv.weight.shape[0] * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    assert models.init_weight_std(net, conv) == pytest.approx(math.sqrt(2 / fan_out))
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
               for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    default = models.build({"model": "resnet18", "width": 16, "seed": 0})
    ratio = conv.weight.std().item() / default.layer2[1].conv1.weight.std().item()
    assert ratio == pytest.approx(math.sqrt(6), rel=0.08)
    with pytest.raises(ValueError, match="init must be one of"):
        models.build({"model": "resnet18", "width": 4, "init": "xavier"})
    # the init rule is the model's: a fresh copy follows it too
    from zaplib import resets
    fresh = resets.fresh_init(net, torch.Generator().manual_seed(1))
    assert fresh.layer2[1].conv1.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
