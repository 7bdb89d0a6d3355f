"""Models of the four papers, all with the same two-part interface.

Every model has ``head`` (an ``nn.Linear``) and ``features(x) -> (N, D)``, with
``forward(x) = head(features(x))``, so a reset op can address "the last layer" without knowing the
architecture. Models never hard-code a device.

Every model also carries its *own init rule* as two methods, which the reset ops in
:mod:`zaplib.resets` use whenever they re-draw "from the model's init":

- ``init_module(module)`` re-initialises the parameters owned directly by ``module`` (non-recursive)
  exactly as the model's constructor did;
- ``init_weight_std(module)`` is the standard deviation of that initial weight distribution
  (used to define *frozen* weights, issue 7 §1).

Models outside zaplib (a plain ``nn.Sequential``) get PyTorch's default rule, see
:func:`init_module` and :func:`init_weight_std`.

Contents: :class:`OmniglotConvNet` (zapping paper), :class:`ANML`, :class:`ResNet` /
:func:`cifar_resnet18` (LURE, negative pre-training), :func:`torchvision_cifar` (ResNet-50,
WRN-50-2, VGG-16-BN of LURE's architecture table), :class:`SmallCNN` and :class:`MLP` (MNIST-scale
smoke tests, mutually-frozen-weight detection), and :func:`build`, the one way to build any of
them from a config dict.

``torchvision`` is imported lazily (only by :func:`torchvision_cifar`): it costs ~6 s.
"""
from __future__ import annotations

import inspect
import math
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import samplers

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "init_module",
    "init_weight_std",
    "ResNetOfficialInit",
    "OmniglotConvNet",
    "ANML",
    "BasicBlock",
    "ResNet",
    "cifar_resnet18",
    "cifar_resnet10",
    "torchvision_cifar",
    "SmallCNN",
    "MLP",
    "MODEL_BUILDERS",
    "MODEL_KEYS",
    "build",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


# ---------------------------------------------------------------------------------------------
# Init rules
# ---------------------------------------------------------------------------------------------
def _fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a conv/linear weight, as torch.nn.init computes them."""
    if weight.dim() < 2:
        raise ValueError(f"fan-in needs a weight with >= 2 dims, got shape {tuple(weight.shape)}")
    receptive = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def pytorch_default_init(module: nn.Module) -> None:
    """PyTorch's own rule: ``module.reset_parameters()`` (conv/linear: kaiming_uniform(a=√5) weight,
    U(±1/√fan_in) bias; norm layers: scale 1, shift 0, running statistics reset)."""
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()


def pytorch_default_weight_std(module: nn.Module) -> float:
    """Std of PyTorch's default conv/linear weight init: U(±1/√fan_in) has std 1/√(3·fan_in)."""
    fan_in, _ = _fans(module.weight)
    return 1.0 / math.sqrt(3.0 * fan_in)


def init_module(model: nn.Module, module: nn.Module) -> None:
    """Re-initialise ``module``'s own parameters with ``model``'s init rule (PyTorch default if the
    model has none). Uses the global RNG: callers seed it (see ``zaplib.resets``)."""
    rule = getattr(model, "init_module", None)
    if callable(rule):
        rule(module)
    else:
        pytorch_default_init(module)


def init_weight_std(model: nn.Module, module: nn.Module) -> float:
    """Std of ``module.weight``'s initial distribution under ``model``'s init rule."""
    rule = getattr(model, "init_weight_std", None)
    if callable(rule):
        return float(rule(module))
    return pytorch_default_weight_std(module)


class _PyTorchDefaultInit:
    """Mixin: the model keeps PyTorch's default initialisation for every module."""

    def init_module(self, module: nn.Module) -> None:
        pytorch_default_init(module)

    def init_weight_std(self, module: nn.Module) -> float:
        return pytorch_default_weight_std(module)


class _KaimingNormalConvInit:
    """Mixin: conv weights Kaiming-normal (fan-in, ReLU gain), everything else PyTorch default —
    the Omniglot convnet / ANML init of the zapping code (reference notes)."""

    def init_module(self, module: nn.Module) -> None:
        # conv biases and norm/linear parameters keep PyTorch's rule, as in the constructor
        pytorch_default_init(module)
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    def init_weight_std(self, module: nn.Module) -> float:
        if isinstance(module, nn.Conv2d):
            fan_in, _ = _fans(module.weight)
            return math.sqrt(2.0 / fan_in)
        return pytorch_default_weight_std(module)


def _kaiming_normal_convs(model: nn.Module) -> None:
    """Constructor half of ``_KaimingNormalConvInit``: the other modules already hold PyTorch's
    default init from their own constructors."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")


# ---------------------------------------------------------------------------------------------
# Omniglot convnet and ANML (zapping paper)
# ---------------------------------------------------------------------------------------------
def _conv_blocks(in_channels, channels, pool, padding) -> nn.Sequential:
    layers: list[nn.Module] = []
    for block, do_pool in enumerate(pool):
        layers += [
            nn.Conv2d(in_channels if block == 0 else channels, channels, 3, padding=padding),
            nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(),
        ]
        if do_pool:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def _conv_blocks_side(input_size, pool, padding) -> int:
    side = input_size
    for do_pool in pool:
        side = side + 2 * padding - 2  # 3x3 conv, stride 1
        if do_pool:
            side //= 2
        if side < 1:
            raise ValueError(f"input_size={input_size} is too small for {len(pool)} blocks")
    return side


class OmniglotConvNet(_KaimingNormalConvInit, nn.Module):
    """The convnet of the zapping paper's official code (Frati et al. 2023, §2 and App. B; facts in
    reference notes): ``n_blocks`` × [Conv3×3(``channels``) → InstanceNorm2d(affine) → ReLU →
    MaxPool2d(2) if ``pool[b]``] → flatten → ``head = Linear(feature_dim, num_classes)``.

    Defaults give the Omniglot model: 1×28×28 → 256×3×3 = 2304 features → 1000 classes.
    :meth:`omni_image` gives the Mini-ImageNet / Omni-image variant (4 blocks, padding 1, 84 px).

    Init: conv weights Kaiming-normal (fan-in, gain √2); conv biases, norm affine parameters and
    the head keep PyTorch's defaults (the official code leaves linear layers at their default).
    Conv biases are kept (PyTorch default ``bias=True``) although InstanceNorm cancels them.
    """

    def __init__(self, in_channels: int = 1, channels: int = 256, n_blocks: int = 3,
                 pool: Sequence[bool] = (True, True, False), padding: int = 0,
                 input_size: int = 28, num_classes: int = 1000):
        super().__init__()
        pool = tuple(bool(p) for p in pool)
        if len(pool) != n_blocks:
            raise ValueError(f"pool has {len(pool)} entries, expected n_blocks={n_blocks}")
        side = _conv_blocks_side(input_size, pool, padding)
        self.input_size = input_size
        self.feature_dim = channels * side * side
        self.body = _conv_blocks(in_channels, channels, pool, padding)
        self.head = nn.Linear(self.feature_dim, num_classes)
        _kaiming_normal_convs(self)

    @classmethod
    def omni_image(cls, in_channels: int = 3, channels: int = 256, num_classes: int = 1000,
                   input_size: int = 84) -> "OmniglotConvNet":
        """The 84-pixel variant (reference notes: 4 blocks, 256 filters, padding 1). The notes do not
        state the pooling; we pool after every block (84 → 5, so 256×5×5 = 6400 features)."""
        return cls(in_channels=in_channels, channels=channels, n_blocks=4, pool=(True,) * 4,
                   padding=1, input_size=input_size, num_classes=num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ANML(_KaimingNormalConvInit, nn.Module):
    """ANML (Beaulieu et al. 2020), the zapping paper's meta-learning baseline (reference notes).

    ``rln``: representation net, 3 conv blocks of ``channels`` (as :class:`OmniglotConvNet`) →
    flattened features of size D (2304 at 28 px). ``nm``: neuromodulatory net, 3 conv blocks of
    ``nm_channels`` → flatten → Linear → sigmoid, a gate in (0, 1)^D. ``features(x) =
    rln(x) ⊙ gate(x)``; ``head = Linear(D, num_classes)``. Meta-training chooses which part adapts
    in the inner loop (ANML: ``rln`` + ``head`` inner, everything outer) through these attributes.

    ``nm_pool_last=True`` pools after the neuromodulatory net's last block as the official ANML code
    does (3×3 → 1×1 at 28 px, so the gate's ``Linear`` sees ``nm_channels`` inputs); ``False`` keeps
    the representation net's shape (no pooling after block 3: 9× the inputs at 28 px).
    """

    def __init__(self, channels: int = 256, nm_channels: int = 112, input_size: int = 28,
                 num_classes: int = 1000, in_channels: int = 1, nm_pool_last: bool = True):
        super().__init__()
        pool = (True, True, False)
        side = _conv_blocks_side(input_size, pool, 0)
        nm_pool = (True, True, bool(nm_pool_last))
        nm_side = _conv_blocks_side(input_size, nm_pool, 0)
        self.input_size = input_size
        self.feature_dim = channels * side * side
        self.rln = _conv_blocks(in_channels, channels, pool, 0)
        self.nm = nn.Sequential(
            _conv_blocks(in_channels, nm_channels, nm_pool, 0),
            nn.Flatten(),
            nn.Linear(nm_channels * nm_side * nm_side, self.feature_dim),
        )
        self.head = nn.Linear(self.feature_dim, num_classes)
        _kaiming_normal_convs(self)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The neuromodulatory gate, shape (N, D), values in (0, 1)."""
        return torch.sigmoid(self.nm(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.rln(x).flatten(1) * self.gate(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------------------------------------
# CIFAR ResNets (LURE, negative pre-training)
# ---------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3×3 conv-BN with a projection shortcut
    (1×1 conv + BN, attribute ``shortcut``) when the shape changes, identity otherwise."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _InputNormalization:
    """Mixin: optional per-channel input normalisation inside the model (buffers ``mean``/``std``,
    None when off), as in LURE's code, so training code feeds floats in [0, 1]."""

    def _register_normalization(self, in_channels, normalize, mean, std):
        if normalize:
            mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
            std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
            if mean.shape[1] != in_channels or std.shape[1] != in_channels:
                raise ValueError(f"mean/std need {in_channels} channels")
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
        else:
            self.register_buffer("mean", None)
            self.register_buffer("std", None)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return x
        return (x - self.mean) / self.std


class _ResNetTrunk(_InputNormalization):
    """The forward pass shared by our CIFAR ResNet and the adapted torchvision ResNets: a stem
    (``conv1``, ``bn1``), ``layer1..4``, global average pooling, and ``fc`` as the head."""

    @property
    def head(self) -> nn.Linear:
        return self.fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(self._normalize(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class ResNet(_ResNetTrunk, _PyTorchDefaultInit, nn.Module):
    """ResNet with the CIFAR stem (3×3 conv, stride 1, no max-pool), as in LURE's code (reference
    notes) and the negative pre-training paper.

    Attribute names follow torchvision (``conv1``, ``bn1``, ``layer1``..``layer4``, ``fc``) so LLF can
    reset ``layer3``, ``layer4``, ``fc`` by name; ``head`` is ``fc``. Stage widths are
    ``width·(1, 2, 4, 8)`` (64 → the standard 64/128/256/512). Init: PyTorch defaults for every
    module (the negative pre-training paper says so). LURE's official ResNet-18 does set its own
    init — conv weights Kaiming-normal (fan-out, ReLU gain), BN weight 1 / bias 0 (reference notes);
    that is :class:`ResNetOfficialInit` (``cifar_resnet18(init="official")``).
    """

    def __init__(self, block=BasicBlock, num_blocks: Sequence[int] = (2, 2, 2, 2),
                 num_classes: int = 10, width: int = 64, in_channels: int = 3,
                 normalize: bool = True, mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        self._register_normalization(in_channels, normalize, mean, std)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes = width
        for stage, (mult, blocks) in enumerate(zip((1, 2, 4, 8), num_blocks), start=1):
            stride = 1 if stage == 1 else 2
            layers = []
            for b in range(blocks):
                layers.append(block(in_planes, width * mult, stride if b == 0 else 1))
                in_planes = width * mult * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.feature_dim = in_planes
        self.fc = nn.Linear(in_planes, num_classes)


RESNET_INITS = ("pytorch", "official")


def cifar_resnet18(num_classes: int = 10, width: int = 64, in_channels: int = 3,
                   normalize: bool = True, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                   init: str = "pytorch") -> ResNet:
    """ResNet-18 with CIFAR stem (LURE §4 / reference notes); ``normalize`` uses CIFAR-10
    mean/std by default. Width 64 has 11.2 M parameters; width 16 is ~16× smaller. ``init``:
    ``"pytorch"`` (every module's default) or ``"official"`` (LURE's code: :class:`ResNetOfficialInit`)."""
    if init not in RESNET_INITS:
        raise ValueError(f"init must be one of {RESNET_INITS}, got {init!r}")
    cls = ResNetOfficialInit if init == "official" else ResNet
    return cls(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, width=width,
               in_channels=in_channels, normalize=normalize, mean=mean, std=std)


def cifar_resnet10(num_classes: int = 10, width: int = 64, in_channels: int = 3,
                   normalize: bool = True, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> ResNet:
    """The same CIFAR ResNet with one basic block per stage instead of two ("ResNet-10": 1 stem
    conv + 4·2 block convs + fc): the *small ResNet* of the negative pre-training chapter's
    ``quick`` profile, where ResNet-18 at any width is too slow for two CPU cores."""
    return ResNet(BasicBlock, (1, 1, 1, 1), num_classes=num_classes, width=width,
                  in_channels=in_channels, normalize=normalize, mean=mean, std=std)


# ---------------------------------------------------------------------------------------------
# torchvision architectures adapted to 32×32 (LURE's architecture table)
# ---------------------------------------------------------------------------------------------
class _TorchvisionInit:
    """Mixin: torchvision's init (conv Kaiming-normal fan-out ReLU, BN 1/0); linear layers
    PyTorch default (ResNets) or N(0, 0.01) with bias 0 (VGG, ``_linear_normal = True``)."""

    _linear_normal = False

    def init_module(self, module: nn.Module) -> None:
        pytorch_default_init(module)
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and self._linear_normal:
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)

    def init_weight_std(self, module: nn.Module) -> float:
        if isinstance(module, nn.Conv2d):
            _, fan_out = _fans(module.weight)
            return math.sqrt(2.0 / fan_out)
        if isinstance(module, nn.Linear) and self._linear_normal:
            return 0.01
        return pytorch_default_weight_std(module)


class ResNetOfficialInit(_TorchvisionInit, ResNet):
    """:class:`ResNet` with the init of LURE's official ResNet-18 (reference notes): conv weights
    Kaiming-normal with fan-out and ReLU gain, BatchNorm weight 1 and bias 0, the linear head
    PyTorch's default. LURE's ``kaiming_uniform_(a=√5)`` re-draw (U(±1/√fan_in)) is then ≈ 2.4×
    narrower than these conv weights at 3×3 kernels, where with PyTorch's default init it coincides
    with them. ``init_module`` / ``init_weight_std`` follow the same rule, so resets "with the
    model's own init" draw from it too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for module in self.modules():
            self.init_module(module)


class TorchvisionResNetCifar(_ResNetTrunk, _TorchvisionInit, nn.Module):
    """A torchvision ResNet with the CIFAR stem: its 7×7/2 conv replaced by 3×3/1 and no max-pool.
    The torchvision modules become this model's own attributes (``conv1``, ``bn1``,
    ``layer1``..``layer4``, ``fc``), so parameter names match :class:`ResNet`."""

    def __init__(self, net: nn.Module, in_channels: int = 3, normalize: bool = True,
                 mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        self._register_normalization(in_channels, normalize, mean, std)
        self.conv1 = nn.Conv2d(in_channels, net.conv1.out_channels, 3, stride=1, padding=1,
                               bias=False)
        self.bn1 = net.bn1
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4)
        self.fc = net.fc
        self.feature_dim = net.fc.in_features
        self.init_module(self.conv1)


class VGGCifar(_InputNormalization, _TorchvisionInit, nn.Module):
    """torchvision's VGG conv stack (``body``; its five max-pools take 32 px to 1 px) → adaptive
    average pool to 1×1 → ``head = Linear(512, num_classes)``: the usual single-layer CIFAR VGG
    classifier instead of ImageNet's 3-layer 4096-wide one. Init follows torchvision's VGG."""

    _linear_normal = True

    def __init__(self, net: nn.Module, num_classes: int = 10, normalize: bool = True,
                 mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        in_channels = net.features[0].in_channels
        self._register_normalization(in_channels, normalize, mean, std)
        self.body = net.features
        self.feature_dim = [m for m in self.body if isinstance(m, nn.Conv2d)][-1].out_channels
        self.head = nn.Linear(self.feature_dim, num_classes)
        self.init_module(self.head)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.body(self._normalize(x)), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_TORCHVISION_ARCHS = ("resnet50", "wide_resnet50_2", "vgg16_bn")


def torchvision_cifar(arch: str, num_classes: int = 10, normalize: bool = True,
                      mean=CIFAR10_MEAN, std=CIFAR10_STD) -> nn.Module:
    """ResNet-50, WRN-50-2 or VGG-16-BN from torchvision (random init, no download), adapted to
    32×32 inputs for LURE's architecture comparison: ResNets get the CIFAR stem (3×3/1 conv, no
    max-pool), VGG an adaptive 1×1 pool and a single linear head. Each exposes ``features()`` and
    ``head`` and normalises its input when ``normalize``."""
    if arch not in _TORCHVISION_ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {_TORCHVISION_ARCHS}")
    import torchvision.models as tvm  # lazy: importing torchvision costs ~6 s

    if arch == "vgg16_bn":
        return VGGCifar(tvm.vgg16_bn(weights=None), num_classes=num_classes, normalize=normalize,
                        mean=mean, std=std)
    net = getattr(tvm, arch)(weights=None, num_classes=num_classes)
    return TorchvisionResNetCifar(net, normalize=normalize, mean=mean, std=std)


# ---------------------------------------------------------------------------------------------
# Small nets for MNIST-scale experiments and smoke tests
# ---------------------------------------------------------------------------------------------
class SmallCNN(_PyTorchDefaultInit, nn.Module):
    """A plain feed-forward CNN with biases and no normalisation layers (so the mutually-frozen
    analysis of ``zaplib.resets`` applies and bias resets act on every layer):
    Conv3×3(width) → ReLU → MaxPool2 → Conv3×3(2·width) → ReLU → MaxPool2 → flatten →
    Linear(hidden) → ReLU = features; ``head = Linear(hidden, num_classes)``. PyTorch default init."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32,
                 input_size: int = 28, hidden: int = 128):
        super().__init__()
        side = input_size // 4
        if side < 1:
            raise ValueError(f"input_size={input_size} is too small")
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * side * side, hidden), nn.ReLU(),
        )
        self.feature_dim = hidden
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(_PyTorchDefaultInit, nn.Module):
    """Flatten → [Linear → ReLU] per entry of ``hidden`` = features → ``head``. PyTorch default init."""

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (256,),
                 num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.feature_dim = width
        self.head = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------
MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "omniglot_convnet": OmniglotConvNet,
    "omni_image_convnet": OmniglotConvNet.omni_image,
    "anml": ANML,
    "resnet18": cifar_resnet18,
    "resnet10": cifar_resnet10,
    "resnet50": lambda **kw: torchvision_cifar("resnet50", **kw),
    "wide_resnet50_2": lambda **kw: torchvision_cifar("wide_resnet50_2", **kw),
    "vgg16_bn": lambda **kw: torchvision_cifar("vgg16_bn", **kw),
    "small_cnn": SmallCNN,
    "mlp": MLP,
}


MODEL_KEYS = ("model", "seed", "num_classes", "in_channels", "input_size", "in_features", "width",
              "depth", "hidden", "channels", "nm_channels", "nm_pool_last", "n_blocks", "normalize", "mean", "std", "init")
"""The keys of a config that :func:`build` reads; any other key (a run's training settings) is
ignored, so a chapter can hand over its whole run config."""


def _constructor_kwargs(name: str, config: dict) -> dict:
    """The constructor arguments of model ``name`` from the model keys of ``config``.

    Two translations make one vocabulary fit every architecture: an MLP's ``width`` (× ``depth``
    hidden layers, 1 by default) becomes ``hidden``, and its ``in_features`` defaults to
    ``in_channels · input_size²``. Every other key must be a constructor argument of the model,
    so a misspelt or misplaced setting fails loudly instead of being dropped.
    """
    kw = {k: config[k] for k in MODEL_KEYS if k in config and k not in ("model", "seed")}
    if name == "mlp":
        if "width" in kw:
            if "hidden" in kw:
                raise ValueError("an MLP takes 'width' (with 'depth') or 'hidden', not both")
            kw["hidden"] = (int(kw.pop("width")),) * int(kw.pop("depth", 1))
        elif "depth" in kw:
            raise ValueError("an MLP's 'depth' needs a 'width'")
        channels, side = kw.pop("in_channels", None), kw.pop("input_size", None)
        if "in_features" not in kw and (channels is not None or side is not None):
            kw["in_features"] = (channels or 1) * (side or 28) ** 2
    builder = MODEL_BUILDERS[name]
    params = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kw) - set(params))
        if unknown:
            raise ValueError(f"model {name!r} takes no {unknown}; its arguments: {sorted(params)}")
    return kw


def build(config: dict) -> nn.Module:
    """The one way to build a network from a config dict.

    ``config["model"]`` names the architecture (:data:`MODEL_BUILDERS`); the keys of
    :data:`MODEL_KEYS` (``num_classes``, ``in_channels``, ``input_size``, ``width``, ``depth``,
    ``channels``, ``nm_channels``, ``normalize``, ``mean``, ``std``, ...) go to its constructor
    (see :func:`_constructor_kwargs`); other keys are ignored. With ``config["seed"]`` the
    initial weights come from the stream ``samplers.seed_int(seed, "init")`` — the constructors
    draw from the global RNG, so they run inside ``torch.random.fork_rng`` and the caller's global
    RNG state is left as it was. Without a seed the global RNG is used (and advanced).
    """
    name = config.get("model")
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODEL_BUILDERS)}")
    kw = _constructor_kwargs(name, config)
    if config.get("seed") is None:
        return MODEL_BUILDERS[name](**kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(samplers.seed_int(int(config["seed"]), "init"))
        return MODEL_BUILDERS[name](**kw)
