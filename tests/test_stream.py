"""The ALMA stream (zaplib.stream) and the robustness probes (zaplib.corruptions) on tiny setups."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zaplib import corruptions, data, metrics, models, samplers, stream, train
from zaplib.models import cifar_resnet18

TINY = dict(dataset="synthetic", width=2, n_pool=240, n_test=200, n_megabatches=2, epochs=2,
            lr_milestones=[1], eval_batch_size=500)


# ----------------------------------------------------------------------------- cutting and replay
def test_cut_stream_sizes_split_and_order(gen):
    parts = stream.cut_stream(1003, 4, 0.1, generator=gen)
    assert len(parts) == 4
    for tr, va in parts:
        assert len(tr) == 225 and len(va) == 25          # 250 per mega-batch, 90/10
    everything = torch.cat([torch.cat(p) for p in parts])
    assert len(set(everything.tolist())) == 1000        # disjoint; remainder 3 dropped
    assert not torch.equal(everything, torch.arange(1000))  # shuffled with a generator
    plain = stream.cut_stream(20, 2, 0.1)
    assert plain[0][0].tolist() == list(range(9)) and plain[0][1].tolist() == [9]
    assert plain[1][0].tolist() == list(range(10, 19)) and plain[1][1].tolist() == [19]


def test_shuffle_breaks_class_sorted_order(gen):
    """A class-sorted file (like the offline CIFAR-10) cut without a shuffle gives single-class
    mega-batches; with the shuffle every mega-batch holds every class."""
    y = torch.arange(10).repeat_interleave(100)
    sorted_cut = stream.cut_stream(1000, 10, 0.1)
    assert all(len(torch.unique(y[tr])) == 1 for tr, _ in sorted_cut)
    shuffled = stream.cut_stream(1000, 10, 0.1, generator=gen)
    assert all(len(torch.unique(y[tr])) == 10 for tr, _ in shuffled)


def test_replay_modes_sizes(gen):
    parts = stream.cut_stream(400, 4, 0.1, generator=gen)  # 90 train / 10 val per mega-batch
    full = list(stream.replay_schedule(parts, "full"))
    assert [len(t) for t, _ in full] == [90, 180, 270, 360]
    assert [len(v) for _, v in full] == [10, 20, 30, 40]
    assert torch.equal(full[2][0], torch.cat([p[0] for p in parts[:3]]))
    none = list(stream.replay_schedule(parts, "none"))
    assert all(torch.equal(t, p[0]) and torch.equal(v, p[1]) for (t, v), p in zip(none, parts))
    buffered = list(stream.replay_schedule(parts, "buffered", buffer_size=7, buffer_size_val=3,
                                           generator=gen))
    assert [len(t) for t, _ in buffered] == [90, 97, 104, 111]   # buffer grows by 7 per stage
    assert [len(v) for _, v in buffered] == [10, 13, 16, 19]
    for i, (t, v) in enumerate(buffered):
        assert torch.equal(t[:90], parts[i][0])               # the current mega-batch first
        earlier = set(torch.cat([p[0] for p in parts[:i]]).tolist()) if i else set()
        assert set(t[90:].tolist()) <= earlier                 # the rest are replayed old examples
    capped = list(stream.replay_schedule(parts, "buffered", buffer_size=1000, generator=gen))
    assert [len(t) for t, _ in capped] == [90, 180, 360, 720]  # k capped at the list length
    with pytest.raises(ValueError):
        list(stream.replay_schedule(parts, "partial"))


# ----------------------------------------------------------------------------- the experiment
@pytest.fixture(scope="module")
def bl_run():
    seen = {}

    def grab(i, model):
        seen[i] = {k: v.clone() for k, v in model.state_dict().items()}

    config = stream.make_config(**TINY, method="bl", val_augment=False)
    return config, stream.run_stream(config, stage_callback=grab), seen


def test_cer_and_metrics_are_consistent(bl_run):
    config, res, _ = bl_run
    mb = res["megabatches"]
    assert mb["cer"].tolist() == np.cumsum(mb["test_errors"]).tolist()
    assert int(res["summary"]["cer"].iloc[0]) == metrics.cer(mb["test_errors"]) == mb["cer"].iloc[-1]
    n_test = int(res["summary"]["n_test"].iloc[0])
    assert n_test == 200
    np.testing.assert_allclose(mb["test_acc"], 1 - mb["test_errors"] / n_test)
    np.testing.assert_allclose(mb["gen_gap"], mb["train_acc"] - mb["val_acc"])
    assert mb["n_train"].tolist() == [108, 216] and mb["n_val"].tolist() == [12, 24]
    assert res["reliability"]["count"].sum() == n_test and len(res["reliability"]) == 15


def test_cer_on_hand_values():
    assert metrics.cer([3, 2, 0, 5]) == 10
    assert metrics.cumulative_error([3, 2, 0, 5]).tolist() == [3, 5, 5, 10]


def test_lr_reset_at_each_megabatch(bl_run):
    _, res, _ = bl_run
    ep = res["epochs"]
    assert ep["lr"].round(6).tolist() == [0.1, 0.01, 0.1, 0.01]
    assert ep["megabatch"].tolist() == [1, 1, 2, 2]
    no_reset = stream.run_stream(stream.make_config(**{**TINY, "epochs": 1, "lr_milestones": []},
                                                    lr_reset=False))
    assert no_reset["epochs"]["lr"].tolist() == [0.1, 0.1]
    decayed = stream.run_stream(stream.make_config(**{**TINY, "n_megabatches": 3},
                                                   lr_reset=False))
    assert decayed["epochs"]["lr"].round(6).tolist() == [0.1, 0.01, 0.01, 0.001, 0.001, 0.0001]


def test_best_validation_checkpoint_is_carried_forward(bl_run):
    """The model entering mega-batch 2 is the best-validation epoch of mega-batch 1: re-evaluated
    on mega-batch 1's validation set it scores the maximum over that stage's epochs, and on the
    test set it scores what the table reports for mega-batch 1."""
    config, res, seen = bl_run
    ds = stream.load_data(config, "cpu")
    split = data.subset(ds, n_train=config["n_pool"], n_test=config["n_test"],
                        generator=samplers.generator(config["order_seed"], "stream"))
    (_, va), _ = stream.cut_stream(config["n_pool"], 2, 0.1)
    model = models.build(stream.model_config(config, ds.num_classes))
    model.load_state_dict(seen[1])
    val_acc = train.evaluate(model, split.x_train[va], split.y_train[va])["acc"]
    ep1 = res["epochs"][res["epochs"]["megabatch"] == 1]
    assert val_acc == pytest.approx(ep1["val_acc"].max())
    assert val_acc == pytest.approx(res["megabatches"]["val_acc"].iloc[0])
    test_acc = train.evaluate(model, split.x_test, split.y_test)["acc"]
    assert test_acc == pytest.approx(res["megabatches"]["test_acc"].iloc[0])
    assert int(res["megabatches"]["best_epoch"].iloc[0]) == int(ep1.loc[ep1["best"], "epoch"].iloc[0])


def test_run_stream_is_pure_and_methods_reset(bl_run):
    config, res, _ = bl_run
    again = stream.run_stream(config)
    for name in ("megabatches", "summary"):
        a, b = res[name].drop(columns=["seconds"]), again[name].drop(columns=["seconds"])
        assert a.equals(b)
    lure = stream.run_stream(stream.make_config(**{**TINY, "epochs": 1, "lr_milestones": []},
                                                method="lure"))
    assert lure["megabatches"]["n_reset"].tolist()[0] == 0 and lure["megabatches"]["n_reset"].iloc[1] > 0


def test_apply_method_counts(gen):
    torch.manual_seed(0)
    model = cifar_resnet18(num_classes=4, width=2)
    n_all = sum(p.numel() for p in model.parameters())
    n_weight = sum(p.numel() for n, p in model.named_parameters() if "weight" in n)
    n_llf = sum(p.numel() for n, m in model.named_modules()
                if n.split(".")[0] in ("layer3", "layer4", "fc")
                and isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for p in m.parameters())
    x, y = torch.rand(16, 3, 8, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)
    cfg = stream.make_config(method="bl")
    assert stream.apply_method(model, cfg) == 0
    assert stream.apply_method(model, {**cfg, "method": "sp"}, generator=gen) == n_all
    assert stream.apply_method(model, {**cfg, "method": "llf"}, generator=gen) == n_llf
    before = [p.clone() for p in model.parameters()]
    n = stream.apply_method(model, {**cfg, "method": "lure", "reset_tensors": "all"}, (x, y), gen)
    assert n == math.floor(0.2 * n_all + 0.5)
    changed = sum(int((p != b).sum()) for p, b in zip(model.parameters(), before))
    assert changed <= n and changed > 0.9 * n  # a re-drawn entry can rarely equal the old one
    n_w = stream.apply_method(model, {**cfg, "method": "lure"}, (x, y), gen)
    assert 0 < n_w <= n_weight
    with pytest.raises(KeyError):
        stream.make_config(methd="bl")


# ----------------------------------------------------------------------------- corruptions
@pytest.fixture(scope="module")
def smooth_images():
    g = torch.Generator().manual_seed(3)
    return F.interpolate(torch.rand(32, 3, 13, 13, generator=g), size=(32, 32), mode="bilinear",
                         align_corners=False)


@pytest.mark.parametrize("name", sorted(corruptions.CORRUPTIONS))
def test_corruption_shape_range_and_monotone_severity(name, smooth_images):
    x = smooth_images
    distances = []
    for s in corruptions.SEVERITIES:
        out = corruptions.corrupt(x, name, s, torch.Generator().manual_seed(1))
        assert out.shape == x.shape and out.dtype == x.dtype
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        distances.append(float((out - x).abs().mean()))
    assert distances[0] > 0
    if name not in corruptions.NON_MONOTONE:
        assert all(b >= a - 1e-6 for a, b in zip(distances, distances[1:])), distances
    again = corruptions.corrupt(x, name, 3, torch.Generator().manual_seed(1))
    assert torch.equal(again, corruptions.corrupt(x, name, 3, torch.Generator().manual_seed(1)))


def test_corrupt_rejects_bad_input(smooth_images):
    with pytest.raises(ValueError):
        corruptions.corrupt(smooth_images, "fog", 1)
    with pytest.raises(ValueError):
        corruptions.corrupt(smooth_images, "contrast", 6)
    with pytest.raises(TypeError):
        corruptions.corrupt((smooth_images * 255).to(torch.uint8), "contrast", 1)


def test_brightness_is_the_hsv_value_shift():
    x = torch.tensor([0.2, 0.4, 0.1]).reshape(1, 3, 1, 1)
    out = corruptions.brightness(x, 0.1)
    # V 0.4 -> 0.5 with hue and saturation unchanged: every channel scales by 0.5 / 0.4
    torch.testing.assert_close(out.flatten(), torch.tensor([0.25, 0.5, 0.125]))


def test_noisy_labels_rates(gen):
    y = torch.randint(0, 10, (20000,), generator=gen)
    assert torch.equal(corruptions.noisy_labels(y, 0.0, 10, gen), y)
    for rate in (0.2, 0.4):
        changed = float((corruptions.noisy_labels(y, rate, 10, gen) != y).float().mean())
        assert changed == pytest.approx(rate * 0.9, abs=0.015)  # uniform draw may keep the label
