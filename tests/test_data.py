"""zaplib.data: loading, verification, errors, Omniglot split, batched transforms, prepare.

Real-data tests use the shared .npz files ($ZAPLIB_DATA; conftest points it at ../shared/data)
and are skipped with a reason when a file is absent. Everything else runs on tiny files written
into tmp_path (never committed).
"""
import os
import pickle
import struct
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from zaplib import data

REAL_ROOT = Path(os.environ.get("ZAPLIB_DATA", "~/.cache/zaplib")).expanduser()


def real(file_name):
    """Skip unless the shared file is available."""
    if "ZAPLIB_DATA" not in os.environ:
        pytest.skip("ZAPLIB_DATA is not set and ../shared/data does not exist")
    if not (REAL_ROOT / file_name).is_file():
        pytest.skip(f"{file_name} is not in {REAL_ROOT}")
    return REAL_ROOT / file_name


@pytest.fixture
def tmp_root(tmp_path, monkeypatch):
    """An empty data root; the hash memo goes to tmp too, so the user's cache is untouched."""
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("ZAPLIB_DATA", str(root))
    monkeypatch.setattr(data, "VERIFIED_STORE", tmp_path / "verified.json")
    monkeypatch.setattr(data, "_hashes_seen", {})
    return root


def tiny_classification(n_train=12, n_test=5, shape=(28, 28), seed=0):
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
            "y_train": rng.integers(0, 10, n_train).astype(np.int64),
            "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
            "y_test": rng.integers(0, 10, n_test).astype(np.int64),
            "classes": np.array([str(d) for d in range(10)])}


# --------------------------------------------------------------------------- real shared files

@pytest.mark.parametrize("name, per_class_train, per_class_test, mean", [
    ("mnist", [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
     [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009], 0.1307),
    ("fashion_mnist", [6000] * 10, [1000] * 10, 0.2860),
])
def test_load_real_classification(name, per_class_train, per_class_test, mean):
    real(f"{name}.npz")
    ds = data.load(name, device="cpu")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert torch.bincount(ds.y_train).tolist() == per_class_train
    assert torch.bincount(ds.y_test).tolist() == per_class_test
    assert ds.num_classes == 10 and ds.name == name
    assert abs(ds.x_train.sum(dtype=torch.float64).item() / ds.x_train.numel() / 255 - mean) < 1e-4
    start = time.perf_counter()
    again = data.load(name, device="cpu")
    assert time.perf_counter() - start < 0.05  # cached arrays and cached verification
    assert again.x_train.data_ptr() == ds.x_train.data_ptr()


def test_load_real_omniglot28():
    real("omniglot28.npz")
    ds = data.load("omniglot28", device="cpu")
    assert ds.x.shape == (32460, 1, 28, 28) and ds.x.dtype == torch.uint8
    assert ds.character.dtype == torch.int64 and ds.drawer.dtype == torch.int64
    assert torch.equal(torch.bincount(ds.character), torch.full((1623,), 20))
    assert set(ds.drawer.tolist()) == set(range(1, 21))
    assert ds.background.sum() == 964 * 20 and ds.class_background.sum() == 964
    assert ds.classes[708] == "Alphabet_of_the_Magi/character01"
    assert ds.class_alphabet[0] == "Arcadian"
    # raw convention: white background. The border pixels are almost all background.
    assert ds.x[:, :, 0, :].float().mean() > 250


def test_load_real_cifar10_once():
    """The one test that reads the 160 MB file: layout HWC -> CHW, counts, means."""
    path = real("cifar10.npz") if (REAL_ROOT / "cifar10.npz").is_file() else real("cifar10_jpeg.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = data.load("cifar10", device="cpu")
    assert ds.x_train.shape == (50000, 3, 32, 32) and ds.x_test.shape == (10000, 3, 32, 32)
    assert torch.bincount(ds.y_train).tolist() == [5000] * 10
    with np.load(path) as raw:
        hwc = raw["x_test"][:50]
    assert np.array_equal(ds.x_test[:50].numpy(), hwc.transpose(0, 3, 1, 2))
    every_20th = ds.x_train[::20]  # a subset keeps this cheap; R, G, B in that order
    channel_means = every_20th.sum(dim=(0, 2, 3), dtype=torch.int64) / (every_20th[:, 0].numel() * 255)
    assert torch.allclose(channel_means.float(), torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.01)


# --------------------------------------------------------------------------- Omniglot split

def test_omniglot_split_counts_and_determinism():
    real("omniglot28.npz")
    ds = data.load("omniglot28", device="cpu")
    split = data.omniglot_split(ds, seed=0)
    for part, n_classes in ((split.background, 964), (split.evaluation, 659)):
        assert part.num_classes == n_classes
        assert part.x_train.shape == (15 * n_classes, 1, 28, 28) and part.x_train.dtype == torch.uint8
        assert part.x_test.shape == (5 * n_classes, 1, 28, 28)
        assert torch.equal(torch.bincount(part.y_train), torch.full((n_classes,), 15))
        assert torch.equal(torch.bincount(part.y_test), torch.full((n_classes,), 5))
    assert split.background.classes[0] == "Arcadian/character01"
    assert split.evaluation.classes[0] == ds.classes[964]  # evaluation ids start at 964 (Angelic)

    # the images really are those of the named class: train + test = all 20 drawers of a class
    evaluation = split.evaluation
    c = 10
    global_id = 964 + c
    drawn = torch.cat([evaluation.x_train[evaluation.y_train == c], evaluation.x_test[evaluation.y_test == c]])
    truth = ds.x[ds.character == global_id]
    as_rows = lambda t: sorted(map(bytes, t.reshape(len(t), -1).numpy()))
    assert as_rows(drawn) == as_rows(truth)

    again = data.omniglot_split(ds, seed=0)
    other = data.omniglot_split(ds, seed=1)
    assert torch.equal(again.background.x_train, split.background.x_train)
    assert not torch.equal(other.background.x_train, split.background.x_train)
    inverted = data.omniglot_split(ds, seed=0, invert=True)
    assert torch.equal(inverted.evaluation.x_test, 255 - split.evaluation.x_test)
    with pytest.raises(ValueError, match="n_train"):
        data.omniglot_split(ds, n_train=20)


def test_omniglot_split_84_resizes_the_105px_images():
    real("omniglot.npz")
    full = data.load("omniglot", device="cpu")
    keep = (full.character < 5) | ((full.character >= 964) & (full.character < 968))
    subset = replace(full, x=full.x[keep], character=full.character[keep], drawer=full.drawer[keep],
                     background=full.background[keep])
    at105 = data.omniglot_split(subset, seed=3, n_train=15, size=105)
    at84 = data.omniglot_split(subset, seed=3, n_train=15, size=84)
    assert at84.background.x_train.shape == (5 * 15, 1, 84, 84) and at84.background.x_train.dtype == torch.uint8
    assert at84.evaluation.x_test.shape == (4 * 5, 1, 84, 84)
    reference = torch.nn.functional.interpolate(at105.evaluation.x_test.float(), size=(84, 84),
                                                mode="bilinear", antialias=True)
    assert (at84.evaluation.x_test.float() - reference).abs().max() <= 1  # same images, same drawers


# --------------------------------------------------------------------------- errors and verification

def test_missing_file_error_names_file_root_and_fix(tmp_root):
    with pytest.raises(data.MissingDatasetError) as info:
        data.load("mnist")
    message = str(info.value)
    assert "mnist.npz" in message and str(tmp_root) in message
    assert "python -m zaplib.data prepare mnist" in message and "ZAPLIB_DATA" in message
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ValueError, match="unknown dataset"):
        data.resolve("cifar100")


def test_data_root_defaults_to_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("ZAPLIB_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.data_root() == tmp_path / ".cache" / "zaplib"


def test_cifar10_prefers_lossless_and_warns_once_about_jpeg(tmp_root, monkeypatch):
    monkeypatch.setattr(data, "_lossy_warned", False)
    (tmp_root / "cifar10_jpeg.npz").write_bytes(b"")
    with pytest.warns(UserWarning, match="JPEG-lossy"):
        assert data.resolve("cifar10") == tmp_root / "cifar10_jpeg.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data.resolve("cifar10").name == "cifar10_jpeg.npz"  # no second warning
        (tmp_root / "cifar10.npz").write_bytes(b"")
        assert data.resolve("cifar10") == tmp_root / "cifar10.npz"


@pytest.mark.parametrize("file_name, verify", [("cifar10.npz", True),   # no known sha: numpy path
                                               ("mnist.npz", False),    # known sha, hash skipped
                                               ("mnist.npz", True)])    # known sha: hash mismatch
def test_truncated_file_raises_corrupt(tmp_root, file_name, verify):
    path = tmp_root / file_name
    np.savez_compressed(path, **tiny_classification())
    path.write_bytes(path.read_bytes()[:1000])
    name = file_name.removesuffix(".npz")
    with pytest.raises(data.CorruptDatasetError) as info:
        data.load(name, device="cpu", verify=verify)
    assert str(path) in str(info.value) and f"prepare {name}" in str(info.value)


def test_damaged_bytes_inside_the_archive_raise_corrupt(tmp_root):
    path = tmp_root / "cifar10.npz"  # no known sha: the damage must be caught while decoding
    np.savez_compressed(path, **tiny_classification(shape=(32, 32, 3)))
    raw = bytearray(path.read_bytes())
    raw[200:260] = bytes(60)
    path.write_bytes(bytes(raw))
    with pytest.raises(data.CorruptDatasetError, match="cannot be read as .npz"):
        data.load("cifar10", device="cpu")


def test_wrong_sha_raises_corrupt_and_verify_false_skips_it(tmp_root):
    np.savez_compressed(tmp_root / "mnist.npz", **tiny_classification())
    with pytest.raises(data.CorruptDatasetError, match="sha256"):
        data.load("mnist", device="cpu")
    ds = data.load("mnist", device="cpu", verify=False)
    assert ds.x_train.shape == (12, 1, 28, 28)


@pytest.mark.parametrize("damage, message", [
    (lambda a: a.pop("y_test"), "missing key"),
    (lambda a: a.update(x_train=a["x_train"].astype(np.float32)), "x_train has dtype float32"),
    (lambda a: a.update(y_train=a["y_train"][:-1]), "y_train has shape"),
    (lambda a: a.update(y_test=a["y_test"] + 10), "y_test outside"),
])
def test_structural_check_for_files_without_known_sha(tmp_root, damage, message):
    arrays = tiny_classification(shape=(32, 32, 3))
    damage(arrays)
    np.savez_compressed(tmp_root / "cifar10.npz", **arrays)
    with pytest.raises(data.CorruptDatasetError, match=message):
        data.load("cifar10", device="cpu")


def test_not_an_npz_raises_corrupt(tmp_root):
    with open(tmp_root / "cifar10.npz", "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(data.CorruptDatasetError, match="not a readable .npz"):
        data.load("cifar10", device="cpu")


def test_valid_file_without_known_sha_loads_hwc_as_chw(tmp_root):
    arrays = tiny_classification(shape=(32, 32, 3))
    np.savez_compressed(tmp_root / "cifar10.npz", **arrays)
    ds = data.load("cifar10", device="cpu")
    assert ds.x_train.shape == (12, 3, 32, 32)
    assert np.array_equal(ds.x_train.numpy(), arrays["x_train"].transpose(0, 3, 1, 2))
    assert torch.equal(ds.y_test, torch.from_numpy(arrays["y_test"]))


def test_hash_is_remembered_across_processes(tmp_root, monkeypatch):
    path = tmp_root / "mnist.npz"
    np.savez_compressed(path, **tiny_classification())
    monkeypatch.setitem(data.KNOWN_SHA256, "mnist.npz", data._hash_file(path))
    data.load("mnist", device="cpu")
    assert data.VERIFIED_STORE.is_file()
    monkeypatch.setattr(data, "_hashes_seen", {})  # as in a new process

    def no_hashing(_):
        raise AssertionError("hashed again")

    monkeypatch.setattr(data, "_hash_file", no_hashing)
    data.load("mnist", device="cpu")
    os.utime(path, ns=(0, 0))  # a changed file version is hashed again
    with pytest.raises(AssertionError, match="hashed again"):
        data.load("mnist", device="cpu")


# --------------------------------------------------------------------------- transforms

def coded_images(n, c, h, w):
    """n copies of an image whose pixels are all distinct and nonzero (0 is the padding)."""
    assert c * h * w < 256
    return torch.arange(1, c * h * w + 1, dtype=torch.uint8).repeat(n, 1).reshape(n, c, h, w)


def test_to_float_and_normalize():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 3, 1, 1)
    xf = data.to_float(x)
    assert xf.dtype == torch.float32 and torch.allclose(xf.flatten(), torch.tensor([0.0, 0.2, 1.0]))
    assert data.to_float(xf) is xf
    z = data.normalize(xf, mean=[0.0, 0.2, 0.5], std=[1.0, 0.5, 0.25])
    assert torch.allclose(z.flatten(), torch.tensor([0.0, 0.0, 2.0]))


def test_random_crop_cuts_windows_of_the_padded_image(gen):
    x = coded_images(n=200, c=2, h=6, w=6)
    out = data.random_crop(x, padding=2, generator=gen)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(x)):
        matches = [(t, l) for t in range(5) for l in range(5)
                   if torch.equal(out[i], padded[i, :, t:t + 6, l:l + 6])]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert offsets == {(t, l) for t in range(5) for l in range(5)}  # every offset occurs
    smaller = data.random_crop(x.float(), size=4, padding=0, generator=gen)
    assert smaller.shape == (200, 2, 4, 4) and smaller.dtype == torch.float32
    assert torch.equal(data.random_crop(x, padding=0, generator=gen), x)


def test_random_crop_flip_augment_are_seeded():
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    seeded = lambda s: torch.Generator().manual_seed(s)
    for op in (lambda g: data.random_crop(x, padding=4, generator=g),
               lambda g: data.random_flip(x, g),
               lambda g: data.random_shift(x, 3, g),
               lambda g: data.augment_cifar(x, g)):
        assert torch.equal(op(seeded(0)), op(seeded(0)))
        assert not torch.equal(op(seeded(0)), op(seeded(1)))
    assert data.augment_cifar(x).shape == x.shape  # generator=None uses the global RNG


def test_random_flip_flips_about_half(gen):
    x = torch.randint(0, 256, (1000, 1, 5, 5), dtype=torch.uint8)
    out = data.random_flip(x, gen)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 400 < int((mirrored & ~same).sum()) < 600


def test_random_shift_never_exceeds_max_width(gen):
    n, size, a = 2000, 15, 3
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    x[:, :, 7, 7] = 255
    out = data.random_shift(x, a, gen)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal((out == 255).flatten(1).sum(1), torch.ones(n, dtype=torch.long))  # pixel kept
    where = (out[:, 0] == 255).nonzero()[:, 1:] - 7
    assert where.abs().max() <= a
    assert set(map(tuple, where.tolist())) == {(dy, dx) for dy in range(-a, a + 1) for dx in range(-a, a + 1)}
    ones = data.random_shift(torch.ones(50, 1, size, size), a, gen)  # zero fill, at most a rows/cols
    assert ((ones == 0).flatten(1).sum(1) <= 2 * a * size).all()
    assert torch.equal(data.random_shift(x, 0.9, gen), x)


def test_blur(gen):
    x = torch.rand(8, 3, 32, 32, generator=gen)
    assert torch.allclose(data.blur(x, 1), x, atol=1e-6)
    assert torch.equal(data.blur((x * 255).to(torch.uint8), 1), (x * 255).to(torch.uint8))
    blocks = data.blur(x, 4, up="nearest")  # down to 8x8 block means, back up as 4x4 blocks
    means = x.reshape(8, 3, 8, 4, 8, 4).mean(dim=(3, 5))
    assert torch.allclose(blocks, means.repeat_interleave(4, 2).repeat_interleave(4, 3), atol=1e-6)
    smooth = data.blur(x, 4)
    variation = lambda t: (t.diff(dim=-1).abs().mean() + t.diff(dim=-2).abs().mean()).item()
    assert smooth.shape == x.shape and variation(smooth) < 0.3 * variation(x)
    assert data.blur(x, 2.5).shape == x.shape
    as_uint8 = data.blur((x * 255).to(torch.uint8), 4)
    assert as_uint8.dtype == torch.uint8 and as_uint8.shape == x.shape
    with pytest.raises(ValueError):
        data.blur(x, 0.5)


def test_contrast_floor_and_formula(gen):
    x = torch.rand(16, 3, 8, 8, generator=gen)
    assert torch.allclose(data.contrast(x, 1.0), x, atol=1e-6)
    for level in (0.0, 0.5):
        out = data.contrast(x, level)
        factor = 0.1 + 0.9 * level
        spread = lambda t: t.flatten(1).max(1).values - t.flatten(1).min(1).values
        assert torch.allclose(spread(out), factor * spread(x), atol=1e-5)  # 10% floor at level 0
        assert out.min() >= 0 and out.max() <= 1
    import torchvision.transforms.functional as TF
    assert torch.allclose(data.contrast(x, 0.5), TF.adjust_contrast(x, 0.55), atol=1e-5)
    grey = torch.rand(4, 1, 8, 8, generator=gen)
    assert torch.allclose(data.contrast(grey, 0.0).mean(dim=(1, 2, 3)), grey.mean(dim=(1, 2, 3)), atol=1e-6)
    assert data.contrast((x * 255).to(torch.uint8), 0.3).dtype == torch.uint8
    with pytest.raises(ValueError):
        data.contrast(x, 1.5)


# --------------------------------------------------------------------------- prepare (offline)

def write_idx(path, array):
    """An IDX file (the MNIST format): magic 0x0000 08 <ndim>, big-endian dims, raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_prepare_mnist_style_round_trip(tmp_root, tmp_path, name, folder):
    arrays = tiny_classification()
    raw = tmp_path / "downloads" / folder / "raw"
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", arrays[f"x_{split}"])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", arrays[f"y_{split}"])
    data.main(["prepare", name, "--download-dir", str(tmp_path / "downloads"), "--no-download"])

    with np.load(tmp_root / f"{name}.npz", allow_pickle=False) as written:
        assert written.files == list(data.CLASSIFICATION_KEYS)
        for key in ("x_train", "y_train", "x_test", "y_test"):
            assert written[key].dtype == arrays[key].dtype and np.array_equal(written[key], arrays[key])
        classes = written["classes"]
    if name == "mnist":
        assert classes.tolist() == [str(d) for d in range(10)] and classes.dtype == np.dtype("<U1")
    else:
        assert classes[0] == "T-shirt/top" and classes[-1] == "Ankle boot"
    if (REAL_ROOT / f"{name}.npz").is_file():  # same keys, dtypes and key order as the shared file
        with np.load(REAL_ROOT / f"{name}.npz") as shared, np.load(tmp_root / f"{name}.npz") as written:
            assert shared.files == written.files
            assert all(shared[k].dtype == written[k].dtype for k in shared.files)
    ds = data.load(name, device="cpu")  # verified against the .sha256 that prepare wrote
    assert ds.x_train.shape == (12, 1, 28, 28)
    (tmp_root / f"{name}.npz").write_bytes((tmp_root / f"{name}.npz").read_bytes()[:-10])
    with pytest.raises(data.CorruptDatasetError):
        data.load(name, device="cpu")


def test_prepare_cifar10_round_trip(tmp_root, tmp_path, monkeypatch):
    import torchvision

    # torchvision checks the md5 of the real batches; these tiny ones cannot match
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / "downloads" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    chw = rng.integers(0, 256, (13, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, 13).tolist()
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, batch in enumerate(batches):
        rows = slice(2 * i, 2 * i + 2) if batch != "test_batch" else slice(10, 13)
        entry = {"data": chw[rows].reshape(-1, 3072), "labels": labels[rows]}
        (folder / batch).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))

    monkeypatch.setattr(data, "_lossy_warned", True)
    data.prepare("cifar10", download_dir=tmp_path / "downloads", download=False)
    with np.load(tmp_root / "cifar10.npz") as written:
        assert written.files == list(data.CLASSIFICATION_KEYS)
        assert written["x_train"].shape == (10, 32, 32, 3)  # HWC on disk, like the shared file
        assert written["classes"].tolist() == names
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = data.load("cifar10", device="cpu")
    assert torch.equal(ds.x_train, torch.from_numpy(chw[:10]))
    assert torch.equal(ds.y_test, torch.tensor(labels[10:]))


def test_prepare_svhn_round_trip(tmp_root, tmp_path, monkeypatch):
    import scipy.io
    import torchvision

    # torchvision checks the md5 of the real .mat files; these tiny ones cannot match
    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)
    folder = tmp_path / "downloads"
    folder.mkdir()
    rng = np.random.default_rng(0)
    nhwc = {"train": rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8),
            "test": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)}
    digits = {"train": np.array([0, 1, 2, 9, 0, 5, 3]), "test": np.array([4, 0, 8, 7])}
    for split in ("train", "test"):
        # the .mat layout: X is (H, W, C, N) and the digit 0 is stored as label 10
        scipy.io.savemat(folder / f"{split}_32x32.mat",
                         {"X": nhwc[split].transpose(1, 2, 3, 0),
                          "y": np.where(digits[split] == 0, 10, digits[split])[:, None]})
    data.main(["prepare", "svhn", "--download-dir", str(folder), "--no-download"])
    with np.load(tmp_root / "svhn.npz") as written:
        assert written.files == list(data.CLASSIFICATION_KEYS)
        assert written["x_train"].shape == (7, 32, 32, 3)  # HWC on disk, like CIFAR-10
        assert np.array_equal(written["x_test"], nhwc["test"])
        assert written["y_train"].tolist() == digits["train"].tolist()  # 10 -> 0
    ds = data.load("svhn", device="cpu")
    assert torch.equal(ds.x_train, torch.from_numpy(nhwc["train"]).permute(0, 3, 1, 2))
    assert ds.y_test.tolist() == digits["test"].tolist()


def test_prepare_omniglot_round_trip(tmp_root, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    layout = [("images_background", "Arcadian", "character01", 1),
              ("images_background", "Arcadian", "character02", 2),
              ("images_evaluation", "Angelic", "character01", 3)]
    strokes = {}
    for split, alphabet, character, number in layout:
        folder = tmp_path / "downloads" / "omniglot-py" / split / alphabet / character
        folder.mkdir(parents=True)
        for drawer in (3, 1, 2):
            image = rng.random((105, 105)) > 0.1  # True = white background, as Omniglot's mode-1 PNGs
            Image.fromarray(image).save(folder / f"{number:04d}_{drawer:02d}.png")
            strokes[(number - 1, drawer)] = np.where(image, 255, 0).astype(np.uint8)

    written = data.prepare("omniglot", download_dir=tmp_path / "downloads", download=False)
    assert [p.name for p in written] == ["omniglot.npz", "omniglot28.npz"]
    with np.load(tmp_root / "omniglot.npz") as big, np.load(tmp_root / "omniglot28.npz") as small:
        assert big.files == list(data.OMNIGLOT_KEYS) == small.files
        assert big["character"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        assert big["drawer"].tolist() == [1, 2, 3] * 3
        assert big["background"].tolist() == [True] * 6 + [False] * 3
        assert big["classes"].tolist() == ["Arcadian/character01", "Arcadian/character02", "Angelic/character01"]
        assert big["class_alphabet"].tolist() == ["Arcadian", "Arcadian", "Angelic"]
        assert big["class_background"].tolist() == [True, True, False]
        for i, key in enumerate(zip(big["character"], big["drawer"])):
            assert np.array_equal(big["x"][i], strokes[tuple(map(int, key))])
        lanczos = np.asarray(Image.fromarray(big["x"][4]).resize((28, 28), Image.Resampling.LANCZOS))
        assert small["x"].shape == (9, 28, 28) and np.array_equal(small["x"][4], lanczos)
        if (REAL_ROOT / "omniglot28.npz").is_file():
            with np.load(REAL_ROOT / "omniglot28.npz") as shared:
                assert all(shared[k].dtype.kind == small[k].dtype.kind for k in shared.files)

    split = data.omniglot_split(data.load("omniglot28", device="cpu"), seed=0, n_train=2)
    assert split.background.x_train.shape == (4, 1, 28, 28) and split.evaluation.x_test.shape == (1, 1, 28, 28)
    assert split.evaluation.classes.tolist() == ["Angelic/character01"]


def test_prepared_omniglot28_matches_shared_file():
    """prepare's 28-px step reproduces the shared omniglot28 bit-exactly from omniglot (105 px)."""
    real("omniglot.npz"), real("omniglot28.npz")
    big, small = data.load("omniglot", device="cpu"), data.load("omniglot28", device="cpu")
    picks = torch.arange(0, 32460, 1623)
    resized = data._lanczos(big.x[picks, 0].numpy(), 28)
    assert np.array_equal(resized, small.x[picks, 0].numpy())


def test_cli_rejects_unknown_dataset(capsys):
    with pytest.raises(SystemExit):
        data.main(["prepare", "cifar100"])
    assert "invalid choice" in capsys.readouterr().err


# ----------------------------------------------------------------------------- subsets
def _toy_dataset(n_train=50, n_test=20):
    x_train = torch.arange(n_train, dtype=torch.uint8).reshape(n_train, 1, 1, 1)
    x_test = torch.arange(n_test, dtype=torch.uint8).reshape(n_test, 1, 1, 1)
    return data.Dataset(x_train, torch.arange(n_train) % 3, x_test, torch.arange(n_test) % 3,
                        np.array(["a", "b", "c"]), name="toy")


def test_subset_without_generator_takes_the_first_images_and_the_last_for_validation():
    s = data.subset(_toy_dataset(), n_train=10, n_val=5, n_test=4)
    assert s.x_train.flatten().tolist() == list(range(10))
    assert s.x_val.flatten().tolist() == list(range(45, 50))
    assert s.x_test.flatten().tolist() == [0, 1, 2, 3]
    assert s.num_classes == 3 and s.name == "toy"
    assert torch.equal(s.y_train, s.x_train.flatten().long() % 3)  # labels travel with images


def test_subset_is_seeded_nested_and_disjoint():
    ds = _toy_dataset()
    small = data.subset(ds, n_train=10, n_val=8, n_test=5, generator=torch.Generator().manual_seed(1))
    large = data.subset(ds, n_train=30, n_val=8, n_test=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(large.x_train[:10], small.x_train)  # smaller training sets are prefixes
    assert torch.equal(large.x_val, small.x_val)
    train, val = set(large.x_train.flatten().tolist()), set(large.x_val.flatten().tolist())
    assert not train & val and len(train) == 30 and len(val) == 8
    test = small.x_test.flatten().tolist()
    assert test == sorted(test) and test != [0, 1, 2, 3, 4]  # a random choice, kept in stored order
    other = data.subset(ds, n_train=10, n_val=8, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(other.x_train, small.x_train)
    everything = data.subset(ds, n_val=8, generator=torch.Generator().manual_seed(1))
    assert len(everything.x_train) == 42 and len(everything.x_test) == 20


def test_subset_refuses_impossible_sizes():
    with pytest.raises(ValueError, match="n_train"):
        data.subset(_toy_dataset(), n_train=46, n_val=5)
    with pytest.raises(ValueError, match="n_val"):
        data.subset(_toy_dataset(), n_val=50)
