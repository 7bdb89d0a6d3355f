"""Datasets as device tensors, and batched, seeded image transforms.

Five ideas, in file order:

1. **Files.** Every dataset is one canonical ``.npz`` (keys, dtypes and orders documented in
   ``shared/data/README.md``) under the data root ``$ZAPLIB_DATA``, else ``~/.cache/zaplib``.
   ``resolve(name)`` finds it (``cifar10`` falls back to the JPEG-lossy ``cifar10_jpeg.npz`` with a
   one-time warning); a missing file raises ``MissingDatasetError``, an unusable one
   ``CorruptDatasetError`` - both say how to fix it.
2. **Verification.** A file is checked against ``KNOWN_SHA256`` (or against the ``<file>.sha256``
   that ``prepare`` writes next to what it built), once per file version: the hash is remembered in
   ``~/.cache/zaplib/.verified.json`` keyed by (path, size, mtime). Every file is also
   checked structurally (keys, dtypes, consistent shapes, labels in range), which is all a file
   without a known hash gets.
3. **Loading.** ``load(name, device)`` returns uint8 NCHW images and int64 labels, moved to the
   device once; the decoded arrays are cached in-process per (path, mtime, size).
   ``omniglot_split`` makes the background / evaluation split with a seeded 15 / 5 drawer split per
   class (zapping paper, Sec. 4; OML/ANML protocol).
4. **Transforms.** Batched tensor ops on the tensor's own device, seeded by a ``torch.Generator``:
   ``to_float``, ``normalize``, ``random_crop``, ``random_flip``, ``augment_cifar`` (LURE's crop +
   flip) and the task transforms of the negative pre-training paper (Sec. 5): ``blur``,
   ``contrast``, ``random_shift``. They accept uint8 or float input and return the input's dtype.
5. **Preparing.** ``python -m zaplib.data prepare NAME`` rebuilds a canonical file from torchvision's
   downloaders (needs internet); written atomically.

Generators: every random op takes ``generator`` (a ``torch.Generator`` on any device, or None for
torch's global RNG). Numbers are drawn on the generator's device and moved to the tensor's device.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import sys
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zaplib import get_device

# ---------------------------------------------------------------------------------------------
# 1. Files and errors
# ---------------------------------------------------------------------------------------------

FILES = {
    "omniglot": "omniglot.npz",
    "omniglot28": "omniglot28.npz",
    "mnist": "mnist.npz",
    "fashion_mnist": "fashion_mnist.npz",
    "cifar10": "cifar10.npz",
    "cifar10_jpeg": "cifar10_jpeg.npz",
    "svhn": "svhn.npz",
}
KNOWN_SHA256 = {  # from shared/data/README.md
    "omniglot.npz": "8953d426f09b6315840828a543317a48b94209dc620a67d1d597baf91bb49f79",
    "omniglot28.npz": "e3f636048368cbbe9aafbef9dc1b5ff99ccccf42c455811a58ac268b38c866f8",
    "mnist.npz": "293d473a8120abb0a3d8a8e48be850d685b3d9108fbe3ad2859f9ee607705609",
    "fashion_mnist.npz": "f2d55a155d2638f1d663269ea9656692f18d78df72ae93a5dbee3b2b71831f14",
    "cifar10_jpeg.npz": "b93ecaf99859869b3fa64698411136fd2ebb848ff0c44e200a29b31316eda162",
}
PREPARABLE = ("mnist", "fashion_mnist", "cifar10", "svhn", "omniglot", "omniglot28")
CLASSIFICATION_KEYS = ("x_train", "y_train", "x_test", "y_test", "classes")
OMNIGLOT_KEYS = ("x", "character", "alphabet", "drawer", "background",
                 "classes", "class_alphabet", "class_background")
DTYPES = {"x": np.uint8, "x_train": np.uint8, "x_test": np.uint8, "y_train": np.int64,
          "y_test": np.int64, "character": np.int64, "drawer": np.int64, "background": np.bool_,
          "class_background": np.bool_, "classes": str, "class_alphabet": str, "alphabet": str}


class DatasetError(Exception):
    """Base class of the loader's errors."""


class MissingDatasetError(DatasetError, FileNotFoundError):
    """The dataset file is not in the data root."""


class CorruptDatasetError(DatasetError, ValueError):
    """The dataset file is truncated, not an npz, has a wrong hash or a wrong structure."""


def data_root() -> Path:
    """The folder holding the ``.npz`` files: ``$ZAPLIB_DATA``, else ``~/.cache/zaplib``."""
    return Path(os.environ.get("ZAPLIB_DATA") or "~/.cache/zaplib").expanduser()


def _fix_hint(file_name: str) -> str:
    if file_name == "cifar10_jpeg.npz":
        return ("copy it from the shared data folder (`prepare` cannot rebuild it: it was decoded from "
                "a JPEG copy, see the data README; `python -m zaplib.data prepare cifar10` writes the "
                "lossless cifar10.npz instead)")
    name = file_name.removesuffix(".npz")
    return (f"build it with `python -m zaplib.data prepare {name}` (needs internet), or copy it from "
            f"the shared data folder")


def shown_path(path: Path) -> str:
    """``path`` as a message shows it: inside the data root as ``$ZAPLIB_DATA/<name>`` (or
    ``~/.cache/zaplib/<name>`` when ZAPLIB_DATA is unset), so that a warning rendered into a committed
    notebook does not carry the absolute paths of the machine that executed it."""
    path = Path(path)
    try:
        inside = path.relative_to(data_root())
    except ValueError:
        return str(path)
    return f"{'$ZAPLIB_DATA' if os.environ.get('ZAPLIB_DATA') else '~/.cache/zaplib'}/{inside.as_posix()}"


def _warn(message: str) -> None:
    # Python prints a warning's location as the absolute file name of the code that warns (and a
    # notebook cell's "file" is an absolute temporary path), which a rendered notebook would keep.
    # Name the location relative to the project instead: zaplib/data.py:<line of the call>.
    caller = sys._getframe(1)
    warnings.warn_explicit(message, UserWarning, filename=f"zaplib/{Path(__file__).name}",
                           lineno=caller.f_lineno, module=__name__)


_lossy_warned = False


def resolve(name: str) -> Path:
    """Path of dataset ``name`` in ``data_root()``; raises ``MissingDatasetError`` if absent.

    ``cifar10`` is ``cifar10.npz`` (lossless, from ``prepare``) when present, else
    ``cifar10_jpeg.npz`` with a one-time warning: that copy is JPEG-lossy (quality 75, PSNR about
    30.5 dB against the originals; accuracies are not comparable with the papers').
    """
    global _lossy_warned
    if name not in FILES:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(FILES)}")
    root = data_root()
    path = root / FILES[name]
    if name == "cifar10" and not path.is_file() and (root / FILES["cifar10_jpeg"]).is_file():
        if not _lossy_warned:
            _warn(f"cifar10: using {shown_path(root / FILES['cifar10_jpeg'])}, a JPEG-lossy copy (quality 75, "
                  "PSNR ~30.5 dB, a 2-3% accuracy drop is reported); absolute accuracies are not "
                  "comparable with the papers. `python -m zaplib.data prepare cifar10` "
                  "writes the lossless cifar10.npz.")
            _lossy_warned = True
        return root / FILES["cifar10_jpeg"]
    if not path.is_file():
        also = " (nor cifar10_jpeg.npz)" if name == "cifar10" else ""
        env = os.environ.get("ZAPLIB_DATA")
        raise MissingDatasetError(
            f"{path.name}{also} not found in the data root {root} (ZAPLIB_DATA is "
            f"{'unset, so ~/.cache/zaplib is used' if not env else repr(env)}). To fix: "
            f"{_fix_hint(path.name)}; or set ZAPLIB_DATA to a folder that holds it.")
    return path


def _corrupt(path: Path, problem: str) -> CorruptDatasetError:
    return CorruptDatasetError(
        f"{path} is unusable: {problem}. To fix: delete it, then {_fix_hint(path.name)} "
        f"(published sha256 values: zaplib.data.KNOWN_SHA256).")


# ---------------------------------------------------------------------------------------------
# 2. Verification: hash (remembered per file version) and structure
# ---------------------------------------------------------------------------------------------

_hashes_seen: dict[str, str] = {}  # "path|size|mtime_ns" -> sha256, for this process


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


# Per-user, never inside the data folder (it may be shared or read-only); keys are absolute paths.
VERIFIED_STORE = Path("~/.cache/zaplib/.verified.json").expanduser()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_atomically(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    """sha256 of ``path``, hashed at most once per (path, size, mtime) across processes."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if key in _hashes_seen:
        return _hashes_seen[key]
    remembered = _read_json(VERIFIED_STORE)
    sha = remembered.get(key) or _hash_file(path)
    _hashes_seen[key] = sha
    if remembered.get(key) != sha:
        live = {k: v for k, v in remembered.items() if Path(k.rsplit("|", 2)[0]).exists()}
        live[key] = sha
        try:
            _write_atomically(VERIFIED_STORE, lambda f: f.write(json.dumps(live, indent=1).encode()))
        except OSError:
            pass  # read-only everywhere: the in-process memo still saves repeated hashing
    return sha


def expected_sha256(path: Path) -> set[str]:
    """Hashes ``path`` may have: the published one and/or the one ``prepare`` wrote beside it."""
    expected = {KNOWN_SHA256[path.name]} if path.name in KNOWN_SHA256 else set()
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        expected.add(sidecar.read_text().split()[0])
    return expected


def _verify_hash(path: Path) -> None:
    expected = expected_sha256(path)
    if expected and (sha := _sha256(path)) not in expected:
        raise _corrupt(path, f"sha256 {sha[:16]}... does not match the expected "
                             f"{' or '.join(e[:16] + '...' for e in sorted(expected))} (truncated or modified)")


def _structure_problems(a: dict[str, np.ndarray]) -> list[str]:
    """What is wrong with the arrays of a canonical file (empty list if nothing)."""
    omniglot = "x" in a
    missing = [k for k in (OMNIGLOT_KEYS if omniglot else CLASSIFICATION_KEYS) if k not in a]
    if missing:
        return [f"missing key(s) {', '.join(missing)}"]
    problems = [f"{k} has dtype {a[k].dtype}, expected {'str' if want is str else np.dtype(want)}"
                for k, want in DTYPES.items()
                if k in a and not (a[k].dtype.kind == "U" if want is str else a[k].dtype == want)]
    if problems:
        return problems
    image_sets = [("x", ("character", "alphabet", "drawer", "background"), "character")] if omniglot \
        else [("x_train", ("y_train",), "y_train"), ("x_test", ("y_test",), "y_test")]
    n_classes = len(a["classes"])
    for x_key, per_image, label_key in image_sets:
        x = a[x_key]
        if not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 3)):
            problems.append(f"{x_key} has shape {x.shape}, expected (N,H,W) or (N,H,W,3)")
        problems += [f"{k} has shape {a[k].shape}, expected ({len(x)},)" for k in per_image
                     if a[k].shape != (len(x),)]
        labels = a[label_key]
        if labels.size and not (0 <= labels.min() and labels.max() < n_classes):
            problems.append(f"{label_key} outside 0..{n_classes - 1}")
    if omniglot:
        problems += [f"{k} has shape {a[k].shape}, expected ({n_classes},)"
                     for k in ("class_alphabet", "class_background") if a[k].shape != (n_classes,)]
    elif a["x_train"].shape[1:] != a["x_test"].shape[1:]:
        problems.append(f"x_train images {a['x_train'].shape[1:]} differ from x_test's {a['x_test'].shape[1:]}")
    return problems


# ---------------------------------------------------------------------------------------------
# 3. Loading
# ---------------------------------------------------------------------------------------------

@dataclass(eq=False)
class Dataset:
    """A classification dataset: uint8 images (N, C, H, W) and int64 labels on one device.

    ``classes`` is a numpy str array (index = label). On the CPU the tensors are shared with the
    in-process cache: treat them as read-only (transforms return new tensors).
    """
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: np.ndarray
    name: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(eq=False)
class OmniglotDataset:
    """All 32,460 Omniglot images, ordered by character id then drawer.

    ``x`` uint8 (N, 1, H, W) with **255 = white background, 0 = stroke** (as the PNGs);
    ``character`` global class id 0..1622 (Omniglot's numbering: background ids first);
    ``drawer`` 1..20; ``background`` True for the 964 background-set characters. Per-class
    metadata (``classes`` 'Alphabet/characterNN', ``class_alphabet``, ``class_background``) are numpy
    arrays indexed by ``character``.
    """
    x: torch.Tensor
    character: torch.Tensor
    drawer: torch.Tensor
    background: torch.Tensor
    classes: np.ndarray
    class_alphabet: np.ndarray
    class_background: np.ndarray
    name: str = ""


@functools.lru_cache(maxsize=4)
def _read_arrays(path: str, mtime_ns: int, size: int) -> dict[str, np.ndarray]:
    """Decoded, checked arrays of one file version, images already NCHW (cached per process)."""
    if not zipfile.is_zipfile(path):  # np.load would otherwise report it as a pickle
        raise _corrupt(Path(path), "not a readable .npz (zip) archive: truncated, or another format")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError) as error:
        raise _corrupt(Path(path), f"cannot be read as .npz ({type(error).__name__}: {error})") from error
    if problems := _structure_problems(arrays):
        raise _corrupt(Path(path), "; ".join(problems))
    for key in ("x", "x_train", "x_test"):
        if key in arrays:
            x = arrays[key]
            arrays[key] = np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x[:, None]
    return arrays


def load(name: str, device=None, verify: bool = True) -> Dataset | OmniglotDataset:
    """Load dataset ``name`` (see ``FILES``) as uint8 NCHW images + int64 labels on ``device``.

    ``device`` defaults to ``zaplib.get_device()``. ``verify`` checks the file's sha256 (remembered
    per file version, so only the first load of a file hashes it); structure is always checked.
    A second call for the same file version reuses the decoded arrays (cheap in a notebook).
    """
    path = resolve(name)
    if verify:
        _verify_hash(path)
    st = path.stat()
    arrays = _read_arrays(str(path), st.st_mtime_ns, st.st_size)
    device = get_device(device)

    def tensor(key):
        return torch.from_numpy(arrays[key]).to(device)

    if "x" in arrays:
        return OmniglotDataset(tensor("x"), tensor("character"), tensor("drawer"), tensor("background"),
                               arrays["classes"], arrays["class_alphabet"], arrays["class_background"],
                               name=path.stem)
    return Dataset(tensor("x_train"), tensor("y_train"), tensor("x_test"), tensor("y_test"),
                   arrays["classes"], name=path.stem)


@dataclass(eq=False)
class Subset:
    """Train / validation / test tensors of one dataset, as a chapter uses them (see :func:`subset`)."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    name: str = ""


def subset(ds: Dataset, n_train: int | None = None, n_val: int = 0, n_test: int | None = None,
           generator: torch.Generator | None = None) -> Subset:
    """The one way a chapter cuts a dataset into train / validation / test tensors.

    The training set is taken in the order of a permutation drawn from ``generator`` (stored order
    when None — mind that some files, e.g. the offline CIFAR-10, are sorted by class): the
    validation set is its *last* ``n_val`` images and the training set its *first* ``n_train``
    (None: every image not in the validation set), so smaller training sets are nested prefixes
    and never meet the validation images. The test set is ``n_test`` images (None: all) — the first
    ones when ``generator`` is None, else a random choice from the same generator, kept in stored
    order.
    """
    n = len(ds.y_train)
    if not 0 <= n_val < n:
        raise ValueError(f"n_val must lie in [0, {n}), got {n_val}")
    n_train = n - n_val if n_train is None else n_train
    if not 0 < n_train <= n - n_val:
        raise ValueError(f"n_train must lie in [1, {n - n_val}] (N = {n}, n_val = {n_val}), got {n_train}")
    draw_device = generator.device if generator is not None else None

    def order(size: int, device) -> torch.Tensor:
        if generator is None:
            return torch.arange(size, device=device)
        return torch.randperm(size, generator=generator, device=draw_device).to(device)

    train_order = order(n, ds.y_train.device)
    train_idx, val_idx = train_order[:n_train], train_order[n - n_val:]
    n_test_all = len(ds.y_test)
    n_test = n_test_all if n_test is None else min(int(n_test), n_test_all)
    test_idx = order(n_test_all, ds.y_test.device)[:n_test].sort().values
    return Subset(ds.x_train[train_idx], ds.y_train[train_idx], ds.x_train[val_idx], ds.y_train[val_idx],
                  ds.x_test[test_idx], ds.y_test[test_idx], int(ds.num_classes), getattr(ds, "name", ""))


@dataclass(eq=False)
class OmniglotSplit:
    """Omniglot background (964 classes, pre-training) and evaluation (659, transfer) sets.

    Each is a ``Dataset`` whose labels are re-indexed 0..C-1 in global-id order and whose
    ``classes`` names the characters; train = ``n_train`` drawers per class, test = the rest.
    """
    background: Dataset
    evaluation: Dataset
    seed: int
    n_train: int
    size: int
    invert: bool


def _resize(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 NCHW images, in chunks to bound float memory."""
    if x.device.type == "cpu":  # CPU has a native uint8 antialiased kernel, ~3x faster than float
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    parts = [F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True)
             for part in x.split(chunk)]
    return torch.cat(parts).round_().clamp_(0, 255).to(torch.uint8)


def omniglot_split(ds: OmniglotDataset | None = None, seed: int = 0, n_train: int = 15,
                   size: int = 28, invert: bool = False, device=None) -> OmniglotSplit:
    """Background / evaluation split with a seeded per-class train / held-out drawer split.

    The protocol of OML and ANML used by the zapping paper (Sec. 4, "15 training images / 5
    testing images per class"): for every class, ``n_train`` of its 20 drawers, chosen at random
    from ``seed``, are training images and the rest held out. The choice depends only on the seed
    (and the file), not on ``size``. Within a class the images come in that random order.
    (The official code redraws this split per transfer run from its sampler's seed; pass a
    different ``seed`` per run to do the same.)

    ``ds`` defaults to ``load("omniglot28")`` for ``size=28`` (PIL LANCZOS, like the official
    code) and to ``load("omniglot")`` (105 px) otherwise; images whose size differs from ``size``
    are resized with torch's antialiased bilinear interpolation (e.g. 84 px for the
    Mini-ImageNet-style 4-block net).

    ``invert=False`` keeps the raw convention, 255 = white background, because the official
    zapping/ANML code feeds ``ToTensor()`` of the PNG (background 1.0) without inverting;
    ``invert=True`` gives bright strokes on black, as much other Omniglot code does.
    """
    if ds is None:
        ds = load("omniglot28" if size == 28 else "omniglot", device)
    x = ds.x if ds.x.shape[-1] == size else _resize(ds.x, size)
    if invert:
        x = 255 - x
    character, background = ds.character.cpu(), ds.background.cpu()
    per_class = torch.bincount(character)
    if not 0 < n_train < per_class[per_class > 0].min():
        raise ValueError(f"n_train={n_train} must leave at least one held-out image in every class "
                         f"(smallest class has {int(per_class[per_class > 0].min())})")

    keys = torch.rand(len(character), generator=torch.Generator().manual_seed(seed))
    order = torch.argsort(keys)
    order = order[torch.argsort(character[order], stable=True)]  # class-major, random within class
    first_of_class = torch.cumsum(per_class, 0) - per_class
    rank_in_class = torch.arange(len(order)) - first_of_class[character[order]]
    is_train = rank_in_class < n_train

    def part(is_background: bool) -> Dataset:
        in_part = (background == is_background)[order]
        ids = torch.unique(character[order[in_part]])
        train, test = order[in_part & is_train], order[in_part & ~is_train]
        labels = [torch.searchsorted(ids, character[idx]).to(x.device) for idx in (train, test)]
        return Dataset(x[train.to(x.device)], labels[0], x[test.to(x.device)], labels[1],
                       ds.classes[ids.numpy()],
                       name=f"{ds.name}:{'background' if is_background else 'evaluation'}")

    return OmniglotSplit(part(True), part(False), seed, n_train, size, invert)


# ---------------------------------------------------------------------------------------------
# 4. Batched transforms (uint8 or float in, same dtype out)
# ---------------------------------------------------------------------------------------------

def _draw(fn, *args, generator: torch.Generator | None, device: torch.device, **kwargs) -> torch.Tensor:
    """Draw with ``generator`` on its own device, then move to ``device``."""
    where = generator.device if generator is not None else device
    return fn(*args, generator=generator, device=where, **kwargs).to(device)


def _as_input_dtype(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.dtype == torch.uint8:
        return y.round().clamp_(0, 255).to(torch.uint8)
    return y.to(like.dtype)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> floats in [0, 1] (torch's default dtype, float32 unless changed);
    floating input is returned unchanged."""
    if x.dtype == torch.uint8:
        return x.to(torch.get_default_dtype()).div_(255)
    if x.is_floating_point():
        return x
    raise TypeError(f"to_float expects uint8 or floating images, got {x.dtype}")


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """``(x - mean) / std`` per channel (``mean``/``std`` scalars or one value per channel)."""
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    return (x - mean) / std


def _windows(padded: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Image i of the result is ``padded[i, :, top[i]:top[i]+h, left[i]:left[i]+w]`` (one gather)."""
    n = padded.shape[0]
    rows = (top[:, None] + torch.arange(h, device=padded.device))[:, :, None]
    cols = (left[:, None] + torch.arange(w, device=padded.device))[:, None, :]
    batch = torch.arange(n, device=padded.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()  # (N,h,w,C) -> NCHW


def random_crop(x: torch.Tensor, size: int | None = None, padding: int = 0,
                generator: torch.Generator | None = None, fill: float = 0) -> torch.Tensor:
    """Pad every side by ``padding`` with ``fill``, then cut a ``size`` x ``size`` window at a
    random offset per image (``torchvision.transforms.RandomCrop(size, padding)``, batched).
    ``size`` defaults to the input size."""
    n, _, h, w = x.shape
    out_h, out_w = (h, w) if size is None else (size, size)
    padded = F.pad(x, (padding,) * 4, value=fill)
    top = _draw(torch.randint, 0, h + 2 * padding - out_h + 1, (n,), generator=generator, device=x.device)
    left = _draw(torch.randint, 0, w + 2 * padding - out_w + 1, (n,), generator=generator, device=x.device)
    return _windows(padded, top, left, out_h, out_w)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = _draw(torch.rand, x.shape[0], generator=generator, device=x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def augment_cifar(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """LURE's training augmentation (reference notes): random crop 32 with padding 4, then flip."""
    return random_flip(random_crop(x, padding=4, generator=generator), generator)


def blur(x: torch.Tensor, k: float, down: str = "area", up: str = "bilinear") -> torch.Tensor:
    """Negative pre-training paper, Sec. 5 (after Achille et al.): down-sample to 1/k, then back up.

    Down-sampling to ``round(H/k)`` x ``round(W/k)`` (at least 1) uses ``down`` ('area' = box
    average, i.e. antialiased); up-sampling back uses ``up`` ('bilinear', align_corners=False;
    'nearest' gives piecewise-constant k x k blocks). ``k=1`` is the identity; ``k`` may be
    fractional, for finely discretised learning paths.
    """
    if k < 1:
        raise ValueError(f"blur factor k must be >= 1, got {k}")
    h, w = x.shape[-2:]
    small = (max(1, round(h / k)), max(1, round(w / k)))
    corners = lambda mode: {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    y = F.interpolate(x.float(), size=small, mode=down, **corners(down))
    y = F.interpolate(y, size=(h, w), mode=up, **corners(up))
    return _as_input_dtype(y, x)


def contrast(x: torch.Tensor, level: float, floor: float = 0.1) -> torch.Tensor:
    """Negative pre-training paper, Sec. 5: contrast 0% = uniform grey, 100% = the image, with a
    10% minimum ("to ensure meaningful gradients", footnote 1).

    ``level`` in [0, 1] maps to the contrast factor ``c = floor + (1 - floor) * level`` and
    ``out = c * x + (1 - c) * m`` with ``m`` the **per-image** mean grey level (luma
    0.2989 R + 0.587 G + 0.114 B for RGB): torchvision's ``adjust_contrast(x, c)``. As a convex
    combination it stays inside the input's range, so no clipping is needed.
    """
    if not 0 <= level <= 1:
        raise ValueError(f"contrast level must be in [0, 1], got {level}")
    c = floor + (1 - floor) * level
    xf = x.float()
    grey = xf if xf.shape[1] != 3 else (xf * xf.new_tensor([0.2989, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    return _as_input_dtype(c * xf + (1 - c) * mean, x)


def random_shift(x: torch.Tensor, max_width: float, generator: torch.Generator | None = None,
                 fill: float = 0) -> torch.Tensor:
    """Negative pre-training paper, Sec. 5: translate each image by (dx, dy), each component drawn
    uniformly from the integers in [-a, a] with a = floor(``max_width``) pixels; uncovered pixels
    are set to ``fill`` (0 = black; for raw Omniglot, white background, pass 255 or 1.0)."""
    a = math.floor(max_width)
    if a <= 0:
        return x.clone()
    n, _, h, w = x.shape
    shift = _draw(torch.randint, -a, a + 1, (n, 2), generator=generator, device=x.device)
    padded = F.pad(x, (a,) * 4, value=fill)
    return _windows(padded, a - shift[:, 1], a - shift[:, 0], h, w)  # output[y, x] = input[y-dy, x-dx]


# ---------------------------------------------------------------------------------------------
# 5. Preparing the canonical files from torchvision's downloads
# ---------------------------------------------------------------------------------------------

def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Check, then write atomically ``path`` and its ``.sha256`` (which ``load`` then trusts)."""
    if problems := _structure_problems(arrays):
        raise ValueError(f"refusing to write {path}: {'; '.join(problems)}")
    _write_atomically(path, lambda f: np.savez_compressed(f, **arrays))
    sha_line = f"{_hash_file(path)}  {path.name}\n".encode()
    _write_atomically(path.with_name(path.name + ".sha256"), lambda f: f.write(sha_line))
    return path


def _lanczos(images: np.ndarray, size: int) -> np.ndarray:
    """PIL LANCZOS resize of uint8 greyscale images, as the shared omniglot28 file was made."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.LANCZOS))
                     for im in images])


def _omniglot_arrays(folder: Path) -> dict[str, np.ndarray]:
    """Canonical Omniglot arrays from torchvision's layout
    ``omniglot-py/images_{background,evaluation}/<Alphabet>/<characterNN>/<XXXX_YY>.png``,
    where XXXX - 1 is the global class id and YY the drawer."""
    from PIL import Image

    records = []
    for background, split in ((True, "images_background"), (False, "images_evaluation")):
        for png in (folder / split).glob("*/*/*.png"):
            number, drawer = png.stem.split("_")
            records.append((int(number) - 1, int(drawer), png.parent.parent.name,
                            f"{png.parent.parent.name}/{png.parent.name}", background, png))
    if not records:
        raise FileNotFoundError(f"no Omniglot PNGs under {folder}/images_background or images_evaluation")
    records.sort(key=lambda r: r[:2])
    ids = np.array([r[0] for r in records], dtype=np.int64)
    per_class = {r[0]: r[2:5] for r in records}
    if sorted(per_class) != list(range(len(per_class))):
        raise ValueError(f"Omniglot class ids under {folder} are not 1..{len(per_class)}")
    class_info = [per_class[i] for i in range(len(per_class))]
    return {
        "x": np.stack([np.asarray(Image.open(r[5]).convert("L")) for r in records]),
        "character": ids,
        "alphabet": np.array([r[2] for r in records]),
        "drawer": np.array([r[1] for r in records], dtype=np.int64),
        "background": np.array([r[4] for r in records]),
        "classes": np.array([c[1] for c in class_info]),
        "class_alphabet": np.array([c[0] for c in class_info]),
        "class_background": np.array([c[2] for c in class_info]),
    }


def prepare(name: str, root=None, download_dir=None, download: bool = True) -> list[Path]:
    """Build the canonical ``.npz`` of ``name`` from torchvision's downloaders; returns the paths.

    Files go to ``root`` (default ``data_root()``), raw downloads to ``download_dir`` (default
    ``<root>/downloads``). ``download=False`` uses raw files already there (torchvision's layout).
    ``omniglot`` and ``omniglot28`` both write both files (omniglot28 = PIL LANCZOS to 28 x 28).
    ``cifar10`` writes the lossless ``cifar10.npz``, which then takes precedence over the JPEG copy.
    ``svhn`` writes the SVHN train/test splits (73,257 / 26,032 images, no "extra"), HWC like CIFAR-10.
    """
    if name not in PREPARABLE:
        raise ValueError(f"cannot prepare {name!r}; preparable: {', '.join(PREPARABLE)}")
    root = Path(root) if root is not None else data_root()
    download_dir = Path(download_dir) if download_dir is not None else root / "downloads"
    import torchvision.datasets as tvd  # lazy: importing torchvision costs ~6 s

    if name.startswith("omniglot"):
        if download:
            for background in (True, False):
                tvd.Omniglot(str(download_dir), background=background, download=True)
        arrays = _omniglot_arrays(download_dir / "omniglot-py")
        return [_write_npz(root / "omniglot.npz", arrays),
                _write_npz(root / "omniglot28.npz", {**arrays, "x": _lanczos(arrays["x"], 28)})]

    if name == "svhn":  # torchvision keeps SVHN as CHW, with the digit 0 already mapped to label 0
        train, test = (tvd.SVHN(str(download_dir), split=split, download=download) for split in ("train", "test"))
        images, labels = (lambda ds: ds.data.transpose(0, 2, 3, 1)), (lambda ds: ds.labels)  # HWC, like CIFAR-10
        classes = [str(d) for d in range(10)]
    else:
        source = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
        train, test = (source(str(download_dir), train=split, download=download) for split in (True, False))
        images, labels = (lambda ds: ds.data), (lambda ds: ds.targets)
        classes = [str(d) for d in range(10)] if name == "mnist" else list(train.classes)  # not "0 - zero"
    arrays = {"x_train": np.ascontiguousarray(images(train), dtype=np.uint8),
              "y_train": np.asarray(labels(train), dtype=np.int64),
              "x_test": np.ascontiguousarray(images(test), dtype=np.uint8),
              "y_test": np.asarray(labels(test), dtype=np.int64),
              "classes": np.array(classes)}
    return [_write_npz(root / FILES[name], arrays)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zaplib.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="build a canonical .npz from torchvision's downloads")
    p.add_argument("name", choices=PREPARABLE)
    p.add_argument("--root", help="where to write the .npz (default: $ZAPLIB_DATA, else ~/.cache/zaplib)")
    p.add_argument("--download-dir", help="where torchvision keeps raw downloads (default: ROOT/downloads)")
    p.add_argument("--no-download", action="store_true", help="use raw files already in --download-dir")
    args = parser.parse_args(argv)
    for path in prepare(args.name, args.root, args.download_dir, download=not args.no_download):
        print(path)


if __name__ == "__main__":
    main()
