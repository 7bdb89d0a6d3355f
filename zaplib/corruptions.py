"""Corruptions for the LURE chapter (Ramkumar et al. 2023, §6): image and label transforms.

* Procedural CIFAR-10-C-like corruptions at five severities (§6.1 evaluates on CIFAR-10-C,
  Hendrycks & Dietterich 2019). CIFAR-10-C itself is an external download; here every corruption
  is generated from the clean test images with batched tensor ops and a seeded generator, with the
  severity constants of Hendrycks & Dietterich's CIFAR recipe where the operation is the same.
  Implemented (13 of their 19): ``gaussian_noise``, ``shot_noise``, ``impulse_noise``,
  ``speckle_noise``, ``gaussian_blur``, ``defocus_blur``, ``zoom_blur``, ``contrast``,
  ``brightness``, ``saturate``, ``pixelate``, ``jpeg`` and ``elastic``. Not implemented (they need
  image assets or heavy procedural texture code): motion blur, glass blur, snow, frost, fog,
  spatter. ``elastic`` is a smooth random displacement field applied with ``grid_sample``
  (Simard-style), not their exact affine + elastic recipe; ``defocus_blur`` is a disk kernel
  followed by a small Gaussian (their recipe, without OpenCV).
* :func:`noisy_labels`: symmetric label noise (§6.3: every label is replaced, with probability
  ``rate``, by a class drawn uniformly from all classes — so it may stay correct).

The probes that evaluate a model under these corruptions, and the model perturbations (PGD,
weight noise), are in :mod:`zaplib.probes`.

Images are float NCHW in [0, 1] (``train.as_float`` of the uint8 tensors); every function keeps the
shape, stays in [0, 1] and takes ``generator`` (a CPU or same-device ``torch.Generator``).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

SEVERITIES = (1, 2, 3, 4, 5)

# Severity constants. Where the operation matches Hendrycks & Dietterich's CIFAR-10-C recipe the
# values are theirs; ``elastic`` (max displacement in pixels, smoothing sigma) is ours.
SEVERITY_PARAMS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),          # noise std
    "shot_noise": (500, 250, 100, 75, 50),                     # photons per unit intensity
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),           # salt-and-pepper fraction
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),           # multiplicative noise std
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),                # sigma in pixels
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),  # disk radius, alias sigma
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),               # largest zoom factor (step 0.01)
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),                   # contrast factor around the mean
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),                 # added to the HSV value
    "saturate": ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)),  # S -> S*a + b
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),                 # down-sampling factor
    "jpeg": (80, 65, 58, 50, 40),                              # JPEG quality
    "elastic": ((0.75, 3.0), (1.25, 3.0), (1.75, 2.5), (2.25, 2.5), (3.0, 2.0)),  # max shift px, sigma
}

# Saturate is deliberately not monotone in CIFAR-10-C: severities 1-2 desaturate, 3-5 saturate.
NON_MONOTONE = ("saturate",)


# ----------------------------------------------------------------------------- helpers
def _draw(shape, generator, device, kind="normal", **kw) -> torch.Tensor:
    """Random draws from ``generator`` on its own device, moved to ``device`` (one seed, any device)."""
    gen_device = generator.device if generator is not None else device
    if kind == "normal":
        out = torch.randn(shape, generator=generator, device=gen_device)
    elif kind == "uniform":
        out = torch.rand(shape, generator=generator, device=gen_device)
    else:
        raise ValueError(kind)
    return out.to(device)


def _depthwise(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel of ``x`` with the 2-D ``kernel`` (reflect padding, same size)."""
    k = kernel.to(x)
    pad_h, pad_w = k.shape[0] // 2, k.shape[1] // 2
    xp = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    weight = k.expand(x.shape[1], 1, *k.shape)
    return F.conv2d(xp, weight, groups=x.shape[1])


def _gaussian_kernel(sigma: float, radius: int | None = None) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma)) if radius is None else radius
    r = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(r**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).float()


def _disk_kernel(radius: float, alias_sigma: float) -> torch.Tensor:
    """A normalised disk of ``radius`` pixels smoothed by a small Gaussian (defocus, CIFAR-10-C)."""
    size = 3 if radius <= 1 else 2 * math.ceil(radius) + 1
    half = size // 2
    r = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    disk = ((xx**2 + yy**2) <= radius**2).double()
    disk = disk / disk.sum()
    smooth = _gaussian_kernel(alias_sigma, radius=1).double()
    out = F.conv2d(F.pad(disk[None, None], (1, 1, 1, 1)), smooth[None, None])[0, 0]
    return (out / out.sum()).float()


def _grey(x: torch.Tensor) -> torch.Tensor:
    return x if x.shape[1] == 1 else x.max(1, keepdim=True).values


# ----------------------------------------------------------------------------- corruptions
def gaussian_noise(x, c, generator=None):
    return (x + c * _draw(x.shape, generator, x.device)).clamp(0, 1)


def shot_noise(x, c, generator=None):
    gen_device = generator.device if generator is not None else x.device
    lam = (x * c).to(gen_device)
    return (torch.poisson(lam, generator=generator).to(x.device) / c).clamp(0, 1)


def impulse_noise(x, c, generator=None):
    """Salt and pepper on a fraction ``c`` of the entries (half 0, half 1), per channel."""
    u = _draw(x.shape, generator, x.device, "uniform")
    salt = _draw(x.shape, generator, x.device, "uniform") < 0.5
    hit = u < c
    out = x.clone()
    out[hit & salt] = 1.0
    out[hit & ~salt] = 0.0
    return out


def speckle_noise(x, c, generator=None):
    return (x + x * c * _draw(x.shape, generator, x.device)).clamp(0, 1)


def gaussian_blur(x, c, generator=None):
    return _depthwise(x, _gaussian_kernel(c)).clamp(0, 1)


def defocus_blur(x, c, generator=None):
    radius, alias = c
    return _depthwise(x, _disk_kernel(radius, alias)).clamp(0, 1)


def zoom_blur(x, c, generator=None):
    """Average of the image and centre zooms by 1.01, 1.02, ..., ``c`` (CIFAR-10-C zoom blur)."""
    h, w = x.shape[-2:]
    out = x.clone()
    zooms = torch.arange(1.01, c + 1e-9, 0.01).tolist()
    for z in zooms:
        zh, zw = math.ceil(h * z), math.ceil(w * z)
        big = F.interpolate(x, size=(zh, zw), mode="bilinear", align_corners=False)
        top, left = (zh - h) // 2, (zw - w) // 2
        out += big[..., top : top + h, left : left + w]
    return (out / (len(zooms) + 1)).clamp(0, 1)


def contrast(x, c, generator=None):
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean).clamp(0, 1)


def brightness(x, c, generator=None):
    """HSV value + ``c`` with hue and saturation fixed. With H and S fixed every RGB channel is
    proportional to V, so scaling RGB by min(V + c, 1) / V is exactly the HSV round trip."""
    v = _grey(x)
    new_v = (v + c).clamp(max=1.0)
    scale = torch.where(v > 0, new_v / v.clamp_min(1e-12), torch.zeros_like(v))
    black = (v == 0).expand_as(x)
    out = x * scale
    return torch.where(black, new_v.expand_as(x), out).clamp(0, 1)


def saturate(x, c, generator=None):
    """HSV saturation S -> clip(S·a + b, 0, 1) with hue and value fixed: each channel moves
    along ``V − (V − rgb)·S'/S``. Grey pixels (S = 0, hue undefined) stay grey."""
    if x.shape[1] != 3:
        return x.clone()
    a, b = c
    v = x.max(1, keepdim=True).values
    mn = x.min(1, keepdim=True).values
    s = torch.where(v > 0, (v - mn) / v.clamp_min(1e-12), torch.zeros_like(v))
    new_s = (s * a + b).clamp(0, 1)
    ratio = torch.where(s > 0, new_s / s.clamp_min(1e-12), torch.zeros_like(s))
    return (v - (v - x) * ratio).clamp(0, 1)


def pixelate(x, c, generator=None):
    """Box down-sampling to ``c`` of the side, then box up-sampling back (CIFAR-10-C uses PIL's BOX
    filter both ways; torch's ``area`` mode is the same area-weighted average)."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, int(h * c)), max(1, int(w * c))), mode="area")
    return F.interpolate(small, size=(h, w), mode="area").clamp(0, 1)


def jpeg(x, c, generator=None):
    """JPEG round trip at quality ``c`` with ``torchvision.io`` (batched lists, on the CPU)."""
    from torchvision.io import decode_jpeg, encode_jpeg  # lazy: torchvision costs ~6 s

    images = list((x * 255).round().clamp(0, 255).to(torch.uint8).cpu())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 deprecates its codecs (TorchCodec)
        decoded = decode_jpeg(encode_jpeg(images, quality=int(c)))
    return torch.stack(decoded).to(device=x.device, dtype=x.dtype).div_(255.0)


def elastic(x, c, generator=None):
    """Smooth random displacement (Gaussian-filtered uniform noise, max |shift| = ``c[0]`` px,
    smoothing sigma ``c[1]`` px), resampled bilinearly with ``grid_sample`` (border padding)."""
    max_shift, sigma = c
    n, _, h, w = x.shape
    field = _draw((n, 2, h, w), generator, x.device, "uniform") * 2 - 1
    field = _depthwise(field, _gaussian_kernel(sigma))
    field = field / field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12) * max_shift
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype),
                            torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij")
    gx = (xs + field[:, 0]) / (w - 1) * 2 - 1
    gy = (ys + field[:, 1]) / (h - 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                         align_corners=True).clamp(0, 1)


CORRUPTIONS: dict[str, Callable] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "defocus_blur": defocus_blur,
    "zoom_blur": zoom_blur,
    "contrast": contrast,
    "brightness": brightness,
    "saturate": saturate,
    "pixelate": pixelate,
    "jpeg": jpeg,
    "elastic": elastic,
}
NOT_IMPLEMENTED = ("motion_blur", "glass_blur", "snow", "frost", "fog", "spatter")


def corrupt(x: torch.Tensor, name: str, severity: int,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` (float NCHW in [0, 1]) under corruption ``name`` at ``severity`` 1..5 (new tensor)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; implemented: {sorted(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    if not x.is_floating_point():
        raise TypeError("corrupt() takes float images in [0, 1]; use train.as_float first")
    return CORRUPTIONS[name](x, SEVERITY_PARAMS[name][severity - 1], generator)


# ----------------------------------------------------------------------------- label noise
def noisy_labels(y: torch.Tensor, rate: float, num_classes: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Symmetric label noise (LURE §6.3): each label is replaced with probability ``rate`` by a
    class drawn uniformly from all ``num_classes`` (so about ``rate/num_classes`` stay correct)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    gen_device = generator.device if generator is not None else y.device
    flip = torch.rand(y.shape, generator=generator, device=gen_device).to(y.device) < rate
    random = torch.randint(0, num_classes, y.shape, generator=generator,
                           device=gen_device).to(y.device, y.dtype)
    return torch.where(flip, random, y)


__all__ = [
    "SEVERITIES",
    "SEVERITY_PARAMS",
    "NON_MONOTONE",
    "CORRUPTIONS",
    "NOT_IMPLEMENTED",
    "corrupt",
    "noisy_labels",
    *CORRUPTIONS,
]
