"""Figures shared by the chapters of *The Reset Book*.

Every function takes a tidy ``pandas.DataFrame`` (one row per measurement, with a column naming the
replication unit, usually ``seed``), draws on ``ax`` (a new figure when ``ax`` is None) and returns
the ``ax``, so a chapter's figure is one short call plus its labels. Nothing here computes a result
the chapter reports: intervals are the same Student-t intervals as ``zaplib.metrics.mean_ci``
(never seaborn's bootstrap, so a band in a figure is the interval quoted in the text).

Where the number of units is small, the single units are drawn too (dots or thin lines): with three
seeds a reader should see the three values, not only their mean.

>>> from zaplib import plots
>>> plots.style()
>>> ax = plots.bars(frame, x="op", y="acc_after_reset")          # doctest: +SKIP
>>> plots.stamp(ax.figure, "profile quick, seeds 0-2; results/toolkit/")  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .metrics import mean_ci

#: Draw each unit (seed) as a dot or thin line when there are at most this many.
MAX_UNITS_DRAWN = 5

#: The book's figure settings (the notebooks' setup cells used to set them by hand).
BOOK_RC = {"figure.dpi": 100, "savefig.dpi": 100, "font.size": 9}


def style(**overrides) -> None:
    """Set the book's matplotlib rcParams (dpi 100, font size 9); call once in a chapter's setup cell.

    >>> style()                    # the book's defaults
    >>> style(**{"font.size": 10})  # one setting changed on top of them
    """
    plt.rcParams.update({**BOOK_RC, **overrides})


def stamp(fig, text: str, fontsize: float = 6.5):
    """Write ``text`` (profile, seeds, the store folder the numbers come from) in the figure's
    bottom-right corner, so a figure copied out of the page still says where it comes from. Leave
    room for it with ``fig.tight_layout(rect=(0, 0.04, 1, 1))``. Returns the ``Text``.

    >>> stamp(fig, "profile quick; seeds 0, 1, 2; results/toolkit/")  # doctest: +SKIP
    """
    return fig.text(0.995, 0.005, text, ha="right", va="bottom", fontsize=fontsize, color="0.35")


def _axes(ax, figsize):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _levels(frame: pd.DataFrame, column: str | None, order: Sequence | None) -> list:
    if column is None:
        return [None]
    return list(order) if order is not None else list(pd.unique(frame[column]))


def _colour(colors, level, k):
    if isinstance(colors, Mapping):
        return colors.get(level, f"C{k}")
    if colors is not None:
        return colors[k]
    return f"C{k}"


def unit_means(frame: pd.DataFrame, by: Sequence[str], y: str, unit: str) -> pd.DataFrame:
    """Mean of ``y`` within each (``by``…, ``unit``) cell: repeated rows of one unit (e.g. several
    transfer runs of one pre-trained model) count once, so the unit stays the replication unit."""
    keys = [c for c in by if c is not None] + [unit]
    return frame.groupby(keys, sort=False, as_index=False)[y].mean()


def interval_table(frame: pd.DataFrame, by: Sequence[str], y: str, unit: str = "seed",
                   level: float = 0.95) -> pd.DataFrame:
    """Per ``by`` group: ``n`` units, ``mean``, ``lo``, ``hi`` of the Student-t interval over unit means
    (``metrics.mean_ci``; NaN bounds for a single unit). The numbers every figure here draws."""
    by = [c for c in by if c is not None]
    per_unit = unit_means(frame, by, y, unit)
    rows = []
    for key, group in per_unit.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        ci = mean_ci(group[y].to_numpy(float), level)
        rows.append({**dict(zip(by, key)), "n": len(group), "mean": ci.mean, "lo": ci.lo, "hi": ci.hi})
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "lo", "hi"])


def curves(frame: pd.DataFrame, x: str, y: str, hue: str | None = None, unit: str = "seed", ax=None,
           level: float = 0.95, units: bool = True, order: Sequence | None = None,
           colors=None, labels: Mapping | None = None, styles: Mapping | None = None,
           band_min_units: int = 2, band_alpha: float = 0.15):
    """Mean curve of ``y`` against ``x`` per ``hue`` level with a Student-t ``level`` band over units.

    Rows are first averaged within each unit (a unit measured several times counts once); the band
    at each ``x`` is ``mean ± t · s/√n`` over the unit means (``metrics.mean_ci``), drawn only where
    at least ``band_min_units`` units exist (a t-interval from 2 units spans most plots, so chapters
    with 2-unit arms pass 3). With ``units=True`` and at most ``MAX_UNITS_DRAWN`` units, each unit's
    own curve is drawn as a thin line. ``styles[level]`` adds ``ax.plot`` keywords (``ls``, ``lw``…)
    and ``labels[level]`` names a level in the legend.

    >>> ax = curves(records, x="megabatch", y="test_acc", hue="variant")  # doctest: +SKIP
    >>> ax.legend()                                                        # doctest: +SKIP
    """
    ax = _axes(ax, (5.0, 3.2))
    for k, level_value in enumerate(_levels(frame, hue, order)):
        sub = frame if hue is None else frame[frame[hue] == level_value]
        if sub.empty:
            continue
        colour = _colour(colors, level_value, k)
        per_unit = unit_means(sub, [x], y, unit)
        band = interval_table(sub, [x], y, unit, level).sort_values(x)
        label = (labels or {}).get(level_value, level_value if hue is not None else y)
        ax.plot(band[x], band["mean"], color=colour, label=label, **{"lw": 1.5, **(styles or {}).get(level_value, {})})
        wide = band[band["n"] >= band_min_units]
        if len(wide):
            ax.fill_between(wide[x], wide["lo"], wide["hi"], color=colour, alpha=band_alpha, lw=0)
        n_units = per_unit[unit].nunique()
        if units and n_units <= MAX_UNITS_DRAWN:
            for _, one in per_unit.groupby(unit, sort=True):
                one = one.sort_values(x)
                ax.plot(one[x], one[y], color=colour, lw=0.5, alpha=0.45)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    return ax


def swarm_violin(frame: pd.DataFrame, x: str, y: str, order: Sequence | None = None,
                 baseline: float | None = None, hue: str = "seed", ax=None, size: float = 4):
    """Violins over units with one dot per row coloured by ``hue`` (the seed) and a dotted
    horizontal line at ``baseline`` (e.g. the baseline condition's mean): the figure style of the
    negative pre-training paper (Zilly et al.). Violins are cut at the data (``cut=0``).

    >>> ax = swarm_violin(final, x="condition", y="test_loss", order=["clean only", "blur → clean"],
    ...                   baseline=final[final.condition == "clean only"].test_loss.mean())  # doctest: +SKIP
    """
    ax = _axes(ax, (4.4, 3.0))
    order = _levels(frame, x, order)
    sns.violinplot(data=frame, x=x, y=y, order=order, inner=None, color="0.92", cut=0, linewidth=0.7, ax=ax)
    sns.swarmplot(data=frame, x=x, y=y, order=order, hue=hue, palette="tab10", size=size, ax=ax, legend=False)
    if baseline is not None:
        ax.axhline(baseline, ls=":", color="k", lw=1.3)
    return ax


def bars(frame: pd.DataFrame, x: str, y: str, unit: str = "seed", hue: str | None = None, ax=None,
         order: Sequence | None = None, hue_order: Sequence | None = None, level: float = 0.95,
         colors=None, labels: Mapping | None = None, dots: bool = True, errors: bool = True,
         width: float = 0.8, alpha: float = 0.6, dot_size: float = 3):
    """Bars at the mean over units of ``y`` per ``x`` (and ``hue``), Student-t ``level`` error bars
    (where there are ≥ 2 units) and one black dot per unit (when there are at most
    ``MAX_UNITS_DRAWN``, and ``dots``). Bars of the ``hue`` levels sit side by side within
    ``width``. The bars are drawn first, so ``ax.containers[k]`` is hue level k's ``BarContainer``
    (for ``ax.bar_label``).

    >>> ax = bars(ops, x="op", y="accuracy", hue="stage", order=list(toolkit.OPS))  # doctest: +SKIP
    """
    ax = _axes(ax, (6.4, 3.0))
    xs = _levels(frame, x, order)
    hues = _levels(frame, hue, hue_order)
    step = width / len(hues)
    table = interval_table(frame, [x, hue], y, unit, level)
    per_unit = unit_means(frame, [x, hue], y, unit)
    drawn = []
    for k, h in enumerate(hues):
        t = table if hue is None else table[table[hue] == h]
        t = t.set_index(x).reindex(xs)
        positions = np.arange(len(xs)) + (k - (len(hues) - 1) / 2) * step
        label = (labels or {}).get(h, h) if hue is not None else None
        ax.bar(positions, t["mean"], width=step, color=_colour(colors, h, k), alpha=alpha, label=label)
        drawn.append((h, t, positions))
    for h, t, positions in drawn:
        if errors and (t["n"] >= 2).any():
            half = np.vstack([t["mean"] - t["lo"], t["hi"] - t["mean"]])
            ax.errorbar(positions, t["mean"], yerr=half, fmt="none", ecolor="0.2", elinewidth=0.8, capsize=2)
        u = per_unit if hue is None else per_unit[per_unit[hue] == h]
        if dots and u[unit].nunique() <= MAX_UNITS_DRAWN:
            where = dict(zip(xs, positions))
            u = u[u[x].isin(where)]
            ax.plot(u[x].map(where), u[y], "k.", ms=dot_size, ls="none")
    ax.set_xticks(np.arange(len(xs)), [str(v) for v in xs])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    return ax


def reliability(bins: pd.DataFrame, ax=None, counts: bool = True, color: str = "C0"):
    """Reliability diagram (Guo et al. 2017, fig. 1) from the table ``zaplib.metrics.ece`` returns
    (columns ``bin_lower, bin_upper, count, confidence, accuracy``): per non-empty bin, a bar at the
    bin's accuracy, a marker at its mean confidence, the diagonal of perfect calibration, and the
    bin's number of examples written above the bar (``counts``).

    Several tables stacked (e.g. one per seed) are pooled per bin, weighting each by its count, so
    the bar is the accuracy of all the bin's examples.

    >>> value, table = metrics.ece(probs, labels)  # doctest: +SKIP
    >>> ax = reliability(table)                    # doctest: +SKIP
    """
    ax = _axes(ax, (3.0, 3.0))
    weighted = bins.assign(hits=bins["accuracy"].fillna(0) * bins["count"],
                           conf=bins["confidence"].fillna(0) * bins["count"])
    pooled = weighted.groupby(["bin_lower", "bin_upper"], as_index=False)[["hits", "conf", "count"]].sum()
    pooled = pooled[pooled["count"] > 0]
    accuracy = pooled["hits"] / pooled["count"]
    confidence = pooled["conf"] / pooled["count"]
    ax.bar(pooled["bin_lower"], accuracy, width=pooled["bin_upper"] - pooled["bin_lower"], align="edge",
           color=color, alpha=0.7, edgecolor="w", label="accuracy")
    ax.plot(confidence, accuracy, "k.", ms=3, ls="none", label="mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    if counts:
        for lo, hi, acc, n in zip(pooled["bin_lower"], pooled["bin_upper"], accuracy, pooled["count"]):
            ax.text((lo + hi) / 2, acc + 0.02, f"{int(n)}", ha="center", va="bottom", fontsize=5.5,
                    rotation=90, color="0.3")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.15 if counts else 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    return ax


def heatmap(frame: pd.DataFrame, index: str, columns: str, values: str, ax=None, fmt: str = ".1f",
            cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
            scale: float = 1.0, text_color: str = "w"):
    """Heat map of the mean of ``values`` per (``index``, ``columns``) cell, each cell's value
    (times ``scale``, formatted with ``fmt``) written in it. Pass the same ``vmin``/``vmax`` to the
    panels of one figure so they share one colour scale. Returns the ``ax``; the image is
    ``ax.images[0]`` (for ``fig.colorbar``).

    >>> ax = heatmap(grid, index="lr", columns="weight_decay", values="test_acc", scale=100)  # doctest: +SKIP
    """
    ax = _axes(ax, (3.4, 2.8))
    cells = frame.groupby([index, columns])[values].mean().unstack() * scale
    ax.imshow(cells.to_numpy(float), cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(cells.shape[1]), [f"{c:g}" if isinstance(c, float) else str(c) for c in cells.columns])
    ax.set_yticks(range(cells.shape[0]), [f"{r:g}" if isinstance(r, float) else str(r) for r in cells.index])
    for (i, j), value in np.ndenumerate(cells.to_numpy(float)):
        if np.isfinite(value):
            ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=7, color=text_color)
    ax.set_xlabel(columns)
    ax.set_ylabel(index)
    return ax


__all__ = ["BOOK_RC", "MAX_UNITS_DRAWN", "style", "stamp", "unit_means", "interval_table", "curves",
           "swarm_violin", "bars", "reliability", "heatmap"]


def pretraining_schematic(ax=None, K: int = 4):
    """The three pre-training schemes of Frati et al. (2023) side by side, as one diagram: what a
    step sees and where its gradient goes.

    * i.i.d. (Alg. 3 style pre-training): every step a shuffled batch of all classes; one Adam step.
    * ASB (Alg. 1, line 17): ``K`` single-image SGD steps on one class, θ_0 → θ_K, then one Adam step
      on the ``K`` + remember images *at θ_K*, kept.
    * meta-ASB (Alg. 1, line 15): the same episode, but the outer loss at θ_K is differentiated with
      respect to θ_0 through all ``K`` inner steps (dashed arrow), the step is applied to θ_0 and the
      inner weights are thrown away.

    A zap (red) re-draws the head row of the episode's class before the inner loop (ASB, meta-ASB),
    or the whole head at the start of an epoch (i.i.d.)."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    ax = _axes(ax, (10, 3.6))
    ax.set_xlim(0, 30)
    ax.set_ylim(0, 10)
    ax.axis("off")

    def box(x, y, w, h, text, color="0.92", edge="0.3", size=7.5):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.15", fc=color, ec=edge, lw=0.8))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)

    def arrow(x0, y0, x1, y1, color="0.2", style="-|>", ls="-", rad=0.0):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle=style, mutation_scale=9, color=color,
                                     lw=1.0, ls=ls, connectionstyle=f"arc3,rad={rad}"))

    titles = ("i.i.d.", "ASB", "meta-ASB")
    for k, title in enumerate(titles):
        ax.text(1 + 10 * k, 9.4, title, fontsize=10, fontweight="bold")
    # i.i.d.: batches of every class, one Adam step each; zap the whole head at epoch starts
    box(1, 6.2, 7.5, 1.6, "batch: 256 images\nof all 964 classes", "#dbe9f6")
    box(1, 3.4, 7.5, 1.6, "θ ← Adam(θ, ∇L_batch(θ))")
    arrow(4.75, 6.1, 4.75, 5.1)
    box(1, 0.6, 7.5, 1.6, "zap: whole head re-drawn\nat the start of each epoch", "#f6d5d5", "C3")
    # ASB and meta-ASB: K single-image steps on one class, then the outer step
    for k, meta in ((1, False), (2, True)):
        x0 = 10 * k + 0.5
        box(x0, 8.0, 3.0, 0.9, "zap row c", "#f6d5d5", "C3", 7)
        xs = [x0 + 0.1 + i * (7.9 / K) for i in range(K + 1)]
        for i, x in enumerate(xs):
            ax.add_patch(plt.Circle((x + 0.3, 6.0), 0.45, fc="white", ec="0.3", lw=0.8))
            ax.text(x + 0.3, 6.0, f"θ{i if i < K else 'K'}", ha="center", va="center", fontsize=7)
            if i < K:
                arrow(x + 0.8, 6.0, xs[i + 1] - 0.2, 6.0)
                ax.text(x + 1.3, 6.5, "SGD", fontsize=5.5, ha="center", color="0.35")
        ax.text(x0 + 5.9, 8.45, f"{K} single images of class c\n(official: 20)", ha="center", va="center",
                fontsize=6.5, color="0.3")
        box(x0, 2.6, 8.5, 1.3, "outer batch: the inner images\n+ 64 'remember' images of all classes",
            "#dbe9f6", size=6.5)
        if meta:
            arrow(xs[-1] + 0.3, 5.5, xs[0] + 0.3, 5.5, color="C3", ls="--", rad=-0.25)
            ax.text(x0 + 4.25, 4.25, "∇ w.r.t. θ0 through all inner steps (second order)", ha="center",
                    fontsize=6.5, color="C3")
            box(x0, 0.6, 8.5, 1.4, "θ0 ← Adam(θ0, ∇θ0 L_outer(θK))\nθ1 … θK discarded", size=7)
        else:
            box(x0, 0.6, 8.5, 1.4, "θK ← Adam(θK, ∇θK L_outer(θK))\nkept for the next episode", size=7)
        arrow(x0 + 4.25, 2.5, x0 + 4.25, 2.1)
    return ax


def stream_schematic(n_megabatches: int = 4, replay: str = "full", ax=None):
    """The ALMA mega-batch stream of LURE (Ramkumar et al. 2023, §3 and App. Alg. 1), one row per
    stage: the mega-batches that stage trains on (``replay`` full: all so far; none: the newest;
    buffered: the newest plus a thin slice of each older one), the carried best-validation checkpoint
    (grey arrow), and the reset point before every stage but the first (red: Alg. 1 lines 8–11,
    where BL does nothing and S&P, LLF or LURE act on the carried weights)."""
    from matplotlib.patches import FancyArrowPatch, Rectangle

    if replay not in ("full", "none", "buffered"):
        raise ValueError(f"replay must be full, none or buffered, got {replay!r}")
    t = int(n_megabatches)
    ax = _axes(ax, (6.4, 0.9 + 0.55 * t))
    ax.set_xlim(-2.6, t + 1.9)
    ax.set_ylim(-0.8, t + 0.2)
    ax.axis("off")
    for i in range(t):
        y = t - 1 - i
        ax.text(-2.5, y + 0.35, f"stage {i + 1}", fontsize=7.5, va="center")
        for j in range(t):
            seen = j == i or (j < i and replay == "full")
            if j < i and replay == "buffered":
                ax.add_patch(Rectangle((j, y), 0.9, 0.7, fc="white", ec="0.6", lw=0.6))
                ax.add_patch(Rectangle((j, y), 0.18, 0.7, fc="C0", alpha=0.6, lw=0))
                continue
            ax.add_patch(Rectangle((j, y), 0.9, 0.7, fc="C0" if seen else "white", alpha=0.6 if seen else 1.0,
                                   ec="0.6", lw=0.6))
            if seen and j == i:
                ax.text(j + 0.45, y + 0.35, f"M{j + 1}", ha="center", va="center", fontsize=6.5)
        ax.text(t + 0.1, y + 0.35, "train 90 % / val 10 %\ncarry best val. epoch", fontsize=5.5, va="center", color="0.35")
        if i > 0:
            ax.add_patch(FancyArrowPatch((-0.25, y + 1.02), (-0.25, y + 0.72), arrowstyle="-|>", mutation_scale=8,
                                         color="0.4", lw=0.9))  # the carried weights
            ax.plot([-1.15, -0.45], [y + 0.87, y + 0.87], color="C3", lw=2.2)
            ax.text(-1.2, y + 0.87, "reset", color="C3", fontsize=6.5, ha="right", va="center")
    ax.text(t / 2, -0.55, {"full": "full replay: every mega-batch so far",
                           "none": "no replay: the newest mega-batch only",
                           "buffered": "buffered replay: the newest + a small buffer of each older one"}[replay],
            ha="center", fontsize=7, color="0.25")
    return ax
