"""Metrics and statistics used across the book.

* accuracy, per-class accuracy;
* LURE's (Ramkumar et al. 2023, §4 "Metrics", eq. 4) cumulative error CER = sum over mega-batches
  of the number of misclassified test images, and the generalisation gap = train acc − validation
  acc;
* expected calibration error with reliability-diagram data (LURE §7.1; Naeini et al. 2015,
  Guo et al. 2017 eq. 3; 15 equal-width bins; LURE's code has none, so this is ours);
* confidence intervals (t-interval, bootstrap) and the Mann–Whitney U test, from ``scipy.stats``.

Probes that run a model (input sensitivity, corruption / PGD / weight-noise accuracy, norms,
ReLU activity, sharpness) live in :mod:`zaplib.probes`; this module computes from predictions and
numbers only, and imports no training code.

Functions accept numpy arrays, lists or torch tensors and return Python floats / numpy / pandas.
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch


def _np(values) -> np.ndarray:
    """A numpy array from a list, array or (any-device) tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _predictions(logits_or_pred, y) -> np.ndarray:
    """Class predictions: argmax over the last dim when given scores (one more dim than ``y``)."""
    pred = _np(logits_or_pred)
    return pred.argmax(-1) if pred.ndim == _np(y).ndim + 1 else pred


# ----------------------------------------------------------------------------- accuracy & friends
def accuracy(logits_or_pred, y) -> float:
    """Fraction of correct predictions; ``logits_or_pred`` is (N, C) scores or (N,) labels.

    The one accuracy function of the library. Torch tensors are compared on their own device
    (only the final scalar crosses to the host); anything else goes through numpy.
    """
    if isinstance(logits_or_pred, torch.Tensor) and isinstance(y, torch.Tensor):
        if y.numel() == 0:
            return float("nan")
        pred = logits_or_pred.argmax(-1) if logits_or_pred.dim() == y.dim() + 1 else logits_or_pred
        return float((pred == y.to(pred.device)).float().mean())
    y = _np(y)
    if y.size == 0:
        return float("nan")
    return float((_predictions(logits_or_pred, y) == y).mean())


def per_class_accuracy(logits_or_pred, y, num_classes: int) -> pd.Series:
    """Accuracy within each true class ``0..num_classes-1`` (NaN for a class absent from ``y``).

    A Series indexed by ``class`` and named ``accuracy``.
    """
    y = _np(y).astype(int)
    correct = (_predictions(logits_or_pred, y) == y).astype(float)
    totals = np.bincount(y, minlength=num_classes)[:num_classes].astype(float)
    hits = np.bincount(y, weights=correct, minlength=num_classes)[:num_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(totals > 0, hits / np.where(totals > 0, totals, 1), np.nan)
    return pd.Series(acc, index=pd.RangeIndex(num_classes, name="class"), name="accuracy")


def cumulative_error(errors_per_stage: Sequence[int]) -> np.ndarray:
    """Running CER: after stage k, the sum of misclassified test images over stages 1..k."""
    return np.cumsum(_np(errors_per_stage))


def cer(errors_per_stage: Sequence[int]) -> int | float:
    """LURE's cumulative error: the sum over mega-batches of the number of misclassified test
    images (each entry = #test images wrong after training on that mega-batch). Lower is better."""
    total = _np(errors_per_stage).sum()
    return int(total) if np.issubdtype(np.asarray(total).dtype, np.integer) else float(total)


def errors_from_accuracy(acc_per_stage, n_test: int) -> np.ndarray:
    """Numbers of misclassified test images from accuracies in [0, 1] on ``n_test`` images
    (rounded to integers), for :func:`cer`."""
    return np.rint((1.0 - _np(acc_per_stage).astype(float)) * n_test).astype(int)


def generalisation_gap(train_acc, val_acc):
    """LURE's generalisation gap: train accuracy − validation accuracy (elementwise)."""
    gap = _np(train_acc).astype(float) - _np(val_acc).astype(float)
    return float(gap) if gap.ndim == 0 else gap


# ----------------------------------------------------------------------------- calibration
def ece(probs, labels, n_bins: int = 15) -> tuple[float, pd.DataFrame]:
    """Expected calibration error with equal-width confidence bins (Guo et al. 2017, eq. 3).

    ``probs`` are (N, C) class probabilities (softmax of the logits); confidence = max prob,
    prediction = argmax. Bin b covers (b/n, (b+1)/n] and the first bin also holds confidence 0,
    so an example with confidence exactly on an inner edge goes to the lower bin (as in Guo et
    al.'s reference code, which uses ``conf > lo`` and ``conf <= hi``).
    ECE = Σ_b (n_b / N) · |acc_b − conf_b|.

    Returns ``(value, reliability)``; ``reliability`` has one row per bin with columns
    ``bin_lower, bin_upper, count, confidence, accuracy`` (mean confidence and accuracy of the
    bin's examples; NaN for empty bins) — the data of a reliability diagram.
    """
    probs = _np(probs).astype(float)
    labels = _np(labels).astype(int)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be (N, C) and labels (N,), got {probs.shape} and {labels.shape}")
    confidence = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Number of inner edges strictly below c: (lo, hi] bins, and c = 0 falls in the first bin.
    bin_index = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(bin_index, minlength=n_bins).astype(float)
    conf_sum = np.bincount(bin_index, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(bin_index, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        mean_acc = np.where(count > 0, acc_sum / np.maximum(count, 1), np.nan)
    value = float(np.abs(acc_sum - conf_sum).sum() / max(len(labels), 1))
    reliability = pd.DataFrame({
        "bin_lower": edges[:-1],
        "bin_upper": edges[1:],
        "count": count.astype(int),
        "confidence": mean_conf,
        "accuracy": mean_acc,
    })
    return value, reliability


# ----------------------------------------------------------------------------- statistics
class Interval(NamedTuple):
    """A point estimate with a confidence interval; ``half_width = (hi − lo) / 2``."""

    mean: float
    lo: float
    hi: float
    half_width: float


class MannWhitney(NamedTuple):
    """Mann–Whitney U statistic (of the first sample) and its two-sided p-value."""

    U: float
    p: float


def mean_ci(values, level: float = 0.95) -> Interval:
    """Mean with a Student-t confidence interval: mean ± t_{(1+level)/2, n−1} · s / √n
    (``scipy.stats.t``; s is the sample standard deviation, ddof=1). NaN bounds for n < 2."""
    from scipy import stats  # lazy: scipy.stats costs ~0.5 s to import; train imports this module

    values = _np(values).astype(float).ravel()
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), float("nan"))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n))
    return Interval(mean, mean - half, mean + half, half)


def bootstrap_ci(
    values,
    stat: Callable = np.mean,
    n_boot: int = 10000,
    level: float = 0.95,
    seed: int = 0,
    method: str = "BCa",
) -> Interval:
    """Bootstrap confidence interval of ``stat(values)`` via ``scipy.stats.bootstrap``
    (``n_resamples=n_boot``, seeded). BCa by default; falls back to the percentile method when BCa
    is undefined (e.g. all values equal). The ``mean`` field holds ``stat(values)``."""
    from scipy import stats  # lazy: scipy.stats costs ~0.5 s to import; train imports this module

    values = _np(values).astype(float).ravel()
    estimate = float(stat(values))
    if len(values) < 2:
        return Interval(estimate, float("nan"), float("nan"), float("nan"))
    if np.all(values == values[0]):
        return Interval(estimate, estimate, estimate, 0.0)

    # scipy >= 1.15 names the seed argument ``rng``; older versions ``random_state``.
    seed_kw = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"

    def run(how):
        return stats.bootstrap(
            (values,), stat, n_resamples=n_boot, confidence_level=level, method=how,
            **{seed_kw: np.random.default_rng(seed)},
        ).confidence_interval

    with warnings.catch_warnings():
        warnings.simplefilter("error", stats.DegenerateDataWarning)
        try:
            ci = run(method)
        except stats.DegenerateDataWarning:
            ci = run("percentile")
    if method != "percentile" and not (np.isfinite(ci.low) and np.isfinite(ci.high)):
        ci = run("percentile")
    lo, hi = float(ci.low), float(ci.high)
    return Interval(estimate, lo, hi, (hi - lo) / 2)


def mann_whitney(a, b) -> MannWhitney:
    """Two-sided Mann–Whitney U test (``scipy.stats.mannwhitneyu``, its default exact/asymptotic
    method choice); U is the statistic of sample ``a``."""
    from scipy import stats  # lazy: scipy.stats costs ~0.5 s to import; train imports this module

    result = stats.mannwhitneyu(_np(a).ravel(), _np(b).ravel(), alternative="two-sided")
    return MannWhitney(float(result.statistic), float(result.pvalue))


def summarise(df: pd.DataFrame, by, value: str, level: float = 0.95) -> pd.DataFrame:
    """Per-group ``n, mean, sd, lo, hi, half_width`` of column ``value`` (t-interval, :func:`mean_ci`),
    as a tidy frame with the ``by`` columns first."""
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, group in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        vals = group[value].to_numpy(dtype=float)
        ci = mean_ci(vals, level)
        sd = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        rows.append({**dict(zip(by, key)), "n": len(vals), "mean": ci.mean, "sd": sd,
                     "lo": ci.lo, "hi": ci.hi, "half_width": ci.half_width})
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "sd", "lo", "hi", "half_width"])


__all__ = [
    "accuracy",
    "per_class_accuracy",
    "cumulative_error",
    "cer",
    "errors_from_accuracy",
    "generalisation_gap",
    "ece",
    "Interval",
    "MannWhitney",
    "mean_ci",
    "bootstrap_ci",
    "mann_whitney",
    "summarise",
]
