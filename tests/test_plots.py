"""zaplib.plots: every figure returns its ax, draws the t-intervals of metrics.mean_ci, one dot per
unit, the baseline where asked, one count per non-empty reliability bin and the heat map's values."""
import matplotlib

matplotlib.use("Agg")  # no display in tests; must precede pyplot's first import

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from scipy import stats

from zaplib import metrics, plots


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def t_interval(values):
    values = np.asarray(values, float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean() - half, values.mean() + half


@pytest.fixture
def runs():
    # Three seeds × two epochs × two methods; the values are arbitrary but distinct.
    rows = []
    for method, shift in [("bl", 0.0), ("lure", 0.1)]:
        for seed, noise in zip([0, 1, 2], [0.00, 0.03, -0.01]):
            for epoch, base in [(1, 0.5), (2, 0.7)]:
                rows.append({"method": method, "seed": seed, "epoch": epoch, "acc": base + shift + noise * epoch})
    return pd.DataFrame(rows)


def test_style_sets_the_book_rcparams():
    plt.rcParams["font.size"] = 12
    plots.style()
    assert plt.rcParams["font.size"] == 9 and plt.rcParams["figure.dpi"] == 100
    plots.style(**{"font.size": 10})
    assert plt.rcParams["font.size"] == 10


@pytest.mark.parametrize("draw", [
    lambda f, ax: plots.curves(f, "epoch", "acc", hue="method", ax=ax),
    lambda f, ax: plots.bars(f, "method", "acc", ax=ax),
    lambda f, ax: plots.swarm_violin(f, "method", "acc", ax=ax),
    lambda f, ax: plots.heatmap(f, "method", "epoch", "acc", ax=ax),
])
def test_returns_the_given_ax_or_a_new_one(runs, draw):
    fig, ax = plt.subplots()
    assert draw(runs, ax) is ax
    new = draw(runs, None)
    assert new is not ax and new.figure is not fig


def test_curve_band_is_the_t_interval_over_seeds(runs):
    ax = plots.curves(runs, "epoch", "acc", hue="method", order=["bl"], units=False)
    (band,) = ax.collections
    vertices = band.get_paths()[0].vertices
    for epoch in (1, 2):
        lo, hi = t_interval(runs[(runs.method == "bl") & (runs.epoch == epoch)].acc)
        ys = vertices[np.isclose(vertices[:, 0], epoch), 1]
        assert ys.min() == pytest.approx(lo) and ys.max() == pytest.approx(hi)
    mean_line = ax.lines[0]
    assert mean_line.get_ydata() == pytest.approx(runs[runs.method == "bl"].groupby("epoch").acc.mean().to_numpy())


def test_curves_average_repeats_within_a_unit_before_the_interval(runs):
    # The same seed measured twice must count once: duplicating every row leaves the band unchanged.
    once = plots.curves(runs, "epoch", "acc", order=["bl"], hue="method", units=False)
    twice = plots.curves(pd.concat([runs, runs]), "epoch", "acc", order=["bl"], hue="method", units=False)
    assert once.collections[0].get_paths()[0].vertices == pytest.approx(
        twice.collections[0].get_paths()[0].vertices)


def test_curves_draw_one_thin_line_per_unit_only_when_few(runs):
    ax = plots.curves(runs, "epoch", "acc", hue="method")
    assert len(ax.lines) == 2 * (1 + 3)  # per method: the mean and three seeds
    many = pd.concat([runs.assign(seed=runs.seed + 10 * k) for k in range(2)])  # six seeds
    ax = plots.curves(many, "epoch", "acc", hue="method")
    assert len(ax.lines) == 2


def test_curves_skip_the_band_below_band_min_units(runs):
    ax = plots.curves(runs[runs.seed < 2], "epoch", "acc", band_min_units=3)
    assert len(ax.collections) == 0


def test_bars_mean_error_bars_and_one_dot_per_unit(runs):
    final = runs[runs.epoch == 2]
    ax = plots.bars(final, "method", "acc", order=["bl", "lure"])
    heights = [p.get_height() for p in ax.containers[0]]
    assert heights == pytest.approx(final.groupby("method").acc.mean().loc[["bl", "lure"]].to_numpy())
    dots = [line for line in ax.lines if line.get_marker() == "."]
    assert sum(len(line.get_ydata()) for line in dots) == len(final)
    (errors,) = [c for c in ax.containers if c not in ax.containers[:1]]
    segment = errors.lines[2][0].get_segments()[0]  # the bl bar's vertical error line
    assert sorted(segment[:, 1]) == pytest.approx(t_interval(final[final.method == "bl"].acc))


def test_bars_with_hue_place_levels_side_by_side(runs):
    ax = plots.bars(runs, "method", "acc", hue="epoch", hue_order=[1, 2], dots=False, errors=False)
    first, second = ax.containers[:2]
    assert [p.get_x() for p in first] < [p.get_x() for p in second]
    assert [p.get_height() for p in second] == pytest.approx(
        runs[runs.epoch == 2].groupby("method").acc.mean().to_numpy())


def test_swarm_violin_one_dot_per_unit_and_the_baseline(runs):
    final = runs[runs.epoch == 2]
    ax = plots.swarm_violin(final, "method", "acc", order=["bl", "lure"], baseline=0.71)
    dots = sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
    assert dots == len(final)
    (baseline,) = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert set(baseline.get_ydata()) == {0.71}


def test_reliability_one_count_per_non_empty_bin():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3) * 0.5, size=200)
    labels = rng.integers(0, 3, size=200)
    _, table = metrics.ece(probs, labels, n_bins=10)
    non_empty = table[table["count"] > 0]
    ax = plots.reliability(table)
    texts = sorted(int(t.get_text()) for t in ax.texts)
    assert texts == sorted(non_empty["count"].tolist())
    assert [p.get_height() for p in ax.containers[0]] == pytest.approx(non_empty.accuracy.to_numpy())


def test_reliability_pools_tables_weighted_by_count():
    one = pd.DataFrame({"bin_lower": [0.0, 0.5], "bin_upper": [0.5, 1.0], "count": [2, 0],
                        "confidence": [0.4, np.nan], "accuracy": [0.5, np.nan]})
    two = one.assign(count=[6, 4], confidence=[0.3, 0.8], accuracy=[1.0, 0.75])
    ax = plots.reliability(pd.concat([one, two]))
    # bin 0: (2·0.5 + 6·1.0) / 8; bin 1 only from the second table
    assert [p.get_height() for p in ax.containers[0]] == pytest.approx([7 / 8, 0.75])
    assert sorted(t.get_text() for t in ax.texts) == ["4", "8"]


def test_heatmap_cells_show_the_mean_values(runs):
    ax = plots.heatmap(runs, "method", "epoch", "acc", scale=100, fmt=".2f", vmin=0, vmax=100)
    image = ax.images[0]
    expected = runs.groupby(["method", "epoch"]).acc.mean().unstack().to_numpy() * 100
    assert np.asarray(image.get_array()) == pytest.approx(expected)
    assert image.get_clim() == (0, 100)
    assert [t.get_text() for t in ax.texts] == [f"{v:.2f}" for v in expected.ravel()]


def test_stamp_writes_the_provenance_in_the_corner():
    fig = plt.figure()
    text = plots.stamp(fig, "profile quick; seeds 0, 1, 2")
    assert text.get_text() == "profile quick; seeds 0, 1, 2" and text.get_position() == (0.995, 0.005)


def test_pretraining_schematic_draws_on_the_given_axes_and_marks_the_meta_gradient():
    fig, ax = plt.subplots()
    out = plots.pretraining_schematic(ax=ax)
    assert out is ax
    texts = [t.get_text() for t in ax.texts]
    assert {"i.i.d.", "ASB", "meta-ASB"} <= set(texts)
    assert any("second order" in t for t in texts)  # only meta-ASB's gradient flows back to θ0
    assert sum("discarded" in t for t in texts) == 1
    plt.close(fig)


@pytest.mark.parametrize("replay, filled", [("full", 1 + 2 + 3 + 4), ("none", 4)])
def test_stream_schematic_shows_what_each_stage_trains_on_and_a_reset_before_all_but_the_first(replay, filled):
    fig, ax = plt.subplots()
    assert plots.stream_schematic(4, replay, ax=ax) is ax
    blocks = [p for p in ax.patches if type(p).__name__ == "Rectangle"]
    assert len(blocks) == 16 and sum(p.get_facecolor()[:3] != (1.0, 1.0, 1.0) for p in blocks) == filled
    assert sum(t.get_text() == "reset" for t in ax.texts) == 3
    with pytest.raises(ValueError, match="replay"):
        plots.stream_schematic(4, "partial")
    plt.close(fig)
