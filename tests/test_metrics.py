"""Metrics equal hand-computed values."""
import numpy as np
import pandas as pd
import pytest
import torch

from zaplib import metrics


def test_accuracy_from_logits_and_labels():
    y = torch.tensor([0, 1, 2, 1])
    logits = torch.tensor([[2.0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 3, 1]])  # predictions 0, 1, 0, 1
    assert metrics.accuracy(logits, y) == 0.75
    assert metrics.accuracy(np.array([0, 1, 0, 1]), y.numpy()) == 0.75
    assert metrics.accuracy([1, 1, 1, 1], [1, 1, 1, 0]) == 0.75
    assert metrics.accuracy(torch.tensor([0, 1, 0, 1]), y) == 0.75  # predicted labels as a tensor
    assert metrics.accuracy(logits.double(), y.numpy()) == 0.75  # mixed tensor / numpy
    assert np.isnan(metrics.accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.long)))


def test_per_class_accuracy_by_hand():
    y = np.array([0, 0, 0, 1, 1, 3])
    pred = np.array([0, 1, 0, 1, 0, 3])
    # class 0: 2/3 right, class 1: 1/2, class 2: absent -> NaN, class 3: 1/1
    acc = metrics.per_class_accuracy(pred, y, num_classes=4)
    assert isinstance(acc, pd.Series) and acc.index.name == "class"
    np.testing.assert_allclose(acc.to_numpy(), [2 / 3, 0.5, np.nan, 1.0])
    logits = torch.nn.functional.one_hot(torch.as_tensor(pred), 4).float()
    pd.testing.assert_series_equal(metrics.per_class_accuracy(logits, torch.as_tensor(y), 4), acc)


def test_cer_and_generalisation_gap():
    # LURE's CER: misclassified test images summed over mega-batches.
    errors = [4000, 2500, 1800, 1200]
    assert metrics.cer(errors) == 9500
    np.testing.assert_array_equal(metrics.cumulative_error(errors), [4000, 6500, 8300, 9500])
    np.testing.assert_array_equal(metrics.errors_from_accuracy([0.6, 0.75, 0.82, 0.88], 10_000), errors)
    assert metrics.generalisation_gap(0.98, 0.90) == pytest.approx(0.08)
    np.testing.assert_allclose(metrics.generalisation_gap([1.0, 0.9], [0.7, 0.8]), [0.3, 0.1])


def test_ece_by_hand():
    # 5 bins: (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1].
    # example  probs        conf  pred  label  correct  bin
    #   a      [.9, .1]      .9    0     0      1        (.8, 1]
    #   b      [.6, .4]      .6    0     1      0        (.4,.6]   (.6 is an upper edge: lower bin)
    #   c      [.3, .7]      .7    1     1      1        (.6,.8]
    #   d      [.55,.45]     .55   0     0      1        (.4,.6]
    # bin (.4,.6]: n=2, conf=(.6+.55)/2=.575, acc=.5  -> 2/4*|.5-.575| = .0375
    # bin (.6,.8]: n=1, conf=.7,  acc=1               -> 1/4*.3        = .075
    # bin (.8,1]:  n=1, conf=.9,  acc=1               -> 1/4*.1        = .025
    # ECE = .1375
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    labels = np.array([0, 1, 1, 0])
    value, rel = metrics.ece(probs, labels, n_bins=5)
    assert value == pytest.approx(0.1375)
    assert list(rel.columns) == ["bin_lower", "bin_upper", "count", "confidence", "accuracy"]
    assert rel["count"].tolist() == [0, 0, 2, 1, 1]
    np.testing.assert_allclose(rel["confidence"], [np.nan, np.nan, 0.575, 0.7, 0.9])
    np.testing.assert_allclose(rel["accuracy"], [np.nan, np.nan, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(rel["bin_upper"], [0.2, 0.4, 0.6, 0.8, 1.0])
    # 15 bins by default; a perfectly calibrated tensor input gives 0.
    value, rel = metrics.ece(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    assert value == 0.0 and len(rel) == 15 and rel["count"].iloc[-1] == 2


def test_mean_ci_is_the_hand_t_interval():
    values = [1.0, 2.0, 3.0, 4.0]
    # mean 2.5, s = sqrt(5/3), t_{.975, 3} = 3.182446305284263, half = t * s / sqrt(4)
    half = 3.182446305284263 * np.sqrt(5 / 3) / 2
    ci = metrics.mean_ci(values)
    assert ci.mean == 2.5
    assert ci.half_width == pytest.approx(half, rel=1e-12)
    assert (ci.lo, ci.hi) == pytest.approx((2.5 - half, 2.5 + half), rel=1e-12)
    mean, lo, hi, hw = metrics.mean_ci([5.0])
    assert mean == 5.0 and np.isnan(lo) and np.isnan(hw)


def test_bootstrap_ci_is_seeded_and_sensible():
    rng = np.random.default_rng(0)
    values = rng.normal(10.0, 2.0, size=200)
    ci = metrics.bootstrap_ci(values, n_boot=2000, seed=1)
    assert ci == metrics.bootstrap_ci(values, n_boot=2000, seed=1)
    assert ci.mean == pytest.approx(values.mean())
    assert ci.lo < values.mean() < ci.hi
    # For the mean of 200 normal draws the bootstrap and t intervals nearly agree.
    assert ci.half_width == pytest.approx(metrics.mean_ci(values).half_width, rel=0.15)
    med = metrics.bootstrap_ci(values, stat=np.median, n_boot=500)
    assert med.mean == pytest.approx(np.median(values))
    assert metrics.bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0, 0.0)


def test_mann_whitney_known_small_examples():
    # Complete separation, n = m = 3: U = 0; exact two-sided p = 2 * 1 / C(6, 3) = 0.1.
    U, p = metrics.mann_whitney([1, 2, 3], [4, 5, 6])
    assert U == 0 and p == pytest.approx(0.1)
    # One inversion (4 > 3): U = 1; P(U <= 1) = 2/20, two-sided p = 0.2.
    U, p = metrics.mann_whitney([1, 2, 4], [3, 5, 6])
    assert U == 1 and p == pytest.approx(0.2)


def test_summarise_groups_with_t_intervals():
    df = pd.DataFrame({"method": ["a", "a", "b", "b", "b"], "lr": [1, 1, 1, 1, 2], "acc": [1, 2, 3, 4, 5.0]})
    out = metrics.summarise(df, "method", "acc")
    assert out["method"].tolist() == ["a", "b"] and out["n"].tolist() == [2, 3]
    assert out["mean"].tolist() == [1.5, 4.0]
    assert out.loc[1, "half_width"] == pytest.approx(metrics.mean_ci([3, 4, 5]).half_width)
    two = metrics.summarise(df, ["method", "lr"], "acc")
    assert list(two.columns[:3]) == ["method", "lr", "n"] and len(two) == 3
