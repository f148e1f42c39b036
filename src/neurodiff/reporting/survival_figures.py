"""Figures of the NDA survival analysis (METHODS.md §3) for report.html.

- :func:`plot_kaplan_meier`  the two Kaplan–Meier curves of a
  :func:`neurodiff.evaluation.survival.kaplan_meier_split` result (also after a round trip through
  results.json): steps, 95 % bands, optional censor ticks, the log-rank p in the legend title;
- :func:`plot_score_distributions`  overlaid histograms (shared bins, densities) and Gaussian KDE
  curves of a score per group, e.g. the similarity of controls vs patients.

Lifelines' plotting style: each function takes a matplotlib ``ax`` (or makes a new figure with the Agg
canvas, never pyplot state) and returns the ``ax``; the caller saves ``ax.figure``
(``fig.savefig(path, format="png", dpi=DPI)``) and writes the caption of :data:`CAPTIONS` beside it.
Unusable inputs raise ValueError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from neurodiff.reporting.impute_figures import DPI, _colours

__all__ = ["CAPTIONS", "DPI", "plot_kaplan_meier", "plot_score_distributions"]

FIGSIZE = (7.0, 4.5)  # inches at DPI
GROUP_COLOURS = {"low": "#d62728", "high": "#1f77b4"}
CAPTIONS = {
    "kaplan_meier": (
        "Kaplan–Meier survival of the patients whose score is above (high) or at or below (low) the split "
        "(the median score unless stated), with 95 % confidence bands (exponential Greenwood) and ticks at "
        "censored times; the legend gives the log-rank p-value."
    ),
    "score_distributions": (
        "Distribution of the score per group: histograms on shared bins, normalised to unit area, with a "
        "Gaussian kernel density estimate (Scott's bandwidth) as a line."
    ),
}
_CURVE_KEYS = ("timeline", "survival")


def _new_axes():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig.add_subplot(1, 1, 1)


def _array(values: Any) -> np.ndarray:
    """float64 array; None (JSON null) becomes NaN."""
    return np.asarray([np.nan if v is None else v for v in (values or [])], dtype=np.float64)


def _format_p(p: Any) -> str:
    if p is None or not np.isfinite(float(p)):
        return "n/a"
    p = float(p)
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def plot_kaplan_meier(km: Mapping[str, Any], ax=None, title: str | None = None, time_unit: str = "days",
                      *, censor_ticks: bool = True, ci: bool = True):
    """Draw the ``low`` and ``high`` Kaplan–Meier curves of `km` into `ax` (a new figure if None).

    One step line per group (legend: group, split, n, events, median survival), its 95 % band as a
    shaded step area when `ci`, and, when `censor_ticks`, one marker line ("|") per group at the
    censored times on the curve. The log-rank p is the legend's title. Returns `ax`.
    """
    if not isinstance(km, Mapping) or not all(isinstance(km.get(g), Mapping) for g in ("low", "high")):
        raise ValueError("km must be a kaplan_meier_split result with 'low' and 'high' groups")
    if ax is None:
        ax = _new_axes()
    score = km.get("score", "score")
    threshold = km.get("threshold")
    cut = f"{threshold:.3g}" if isinstance(threshold, (int, float)) else "?"
    for group, sign in (("low", "≤"), ("high", ">")):
        data = km[group]
        missing = [k for k in _CURVE_KEYS if k not in data]
        if missing:
            raise ValueError(f"km[{group!r}] lacks {missing}")
        timeline, survival = _array(data["timeline"]), _array(data["survival"])
        if len(timeline) == 0 or len(timeline) != len(survival):
            raise ValueError(f"km[{group!r}] has {len(timeline)} times and {len(survival)} survival values")
        colour = GROUP_COLOURS[group]
        median = data.get("median_survival")
        median_text = f"{median:.3g} {time_unit}" if isinstance(median, (int, float)) else "not reached"
        label = (f"{group} {score} ({sign} {cut}): n={data.get('n', '?')}, events={data.get('events', '?')}, "
                 f"median {median_text}")
        ax.step(timeline, survival, where="post", color=colour, linewidth=1.8, label=label)
        if ci and "ci_lower" in data and "ci_upper" in data:
            lower, upper = _array(data["ci_lower"]), _array(data["ci_upper"])
            if len(lower) == len(timeline) == len(upper):
                ax.fill_between(timeline, lower, upper, step="post", color=colour, alpha=0.18, linewidth=0)
        if censor_ticks:
            censored = _array(data.get("censored_times"))
            censored = censored[np.isfinite(censored)]
            # the curve's value at each censored time (a step function, right-continuous)
            index = np.clip(np.searchsorted(timeline, censored, side="right") - 1, 0, len(timeline) - 1)
            ax.plot(censored, survival[index], linestyle="none", marker="|", markersize=7, color=colour)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlim(left=0.0)
    ax.set_xlabel(f"time ({time_unit})")
    ax.set_ylabel("survival probability")
    ax.grid(alpha=0.3)
    ax.legend(title=f"log-rank p = {_format_p(km.get('logrank_p'))}", loc="best", fontsize=8, title_fontsize=9)
    split = "median" if km.get("split", "median") == "median" else "threshold"
    ax.set_title(title if title is not None else f"Kaplan–Meier, split at the {split} {score}")
    return ax


def plot_score_distributions(scores_by_group: Mapping[str, Any], ax=None, title: str | None = None,
                             xlabel: str = "score", *, bins: int | None = None):
    """Overlaid density histograms (shared bins) and Gaussian KDE lines of a score per group.

    `scores_by_group` maps a group name (e.g. "control", "patient") to its scores. One KDE line per
    group with at least 2 distinct values (a group with one value is shown by its histogram only);
    legend entries give n and the mean. `bins` defaults to √(all values), between 10 and 40. Returns
    `ax`. An empty mapping, an empty group or non-finite scores raise ValueError.
    """
    if not isinstance(scores_by_group, Mapping) or not scores_by_group:
        raise ValueError("scores_by_group must be a non-empty mapping of group name to scores")
    groups: dict[str, np.ndarray] = {}
    for name, values in scores_by_group.items():
        array = np.asarray(values, dtype=np.float64).ravel()
        if array.size == 0:
            raise ValueError(f"group {name!r} has no scores")
        if not np.isfinite(array).all():
            raise ValueError(f"group {name!r} has {int((~np.isfinite(array)).sum())} NaN or infinite scores")
        groups[str(name)] = array
    if ax is None:
        ax = _new_axes()
    everything = np.concatenate(list(groups.values()))
    lo, hi = float(everything.min()), float(everything.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    n_bins = bins if bins is not None else int(np.clip(np.sqrt(everything.size), 10, 40))
    edges = np.linspace(lo, hi, n_bins + 1)
    pad = 0.1 * (hi - lo)
    grid = np.linspace(lo - pad, hi + pad, 400)
    colours = _colours(groups)
    for name, array in groups.items():
        colour = colours[name]
        label = f"{name} (n={array.size}, mean {array.mean():.3g})"
        ax.hist(array, bins=edges, density=True, color=colour, alpha=0.3, label=label)
        if np.unique(array).size >= 2:
            from scipy.stats import gaussian_kde

            ax.plot(grid, gaussian_kde(array)(grid), color=colour, linewidth=1.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title is not None:
        ax.set_title(title)
    return ax
