"""Figures of `neurodiff impute benchmark` for report.html (PNG, ~1100 px wide, 100 dpi).

:func:`impute_figures` reads what the benchmark wrote into its output folder — the results document
(results.json), the per-seed training runs (runs.json) and the first seed's feature–feature
correlation matrices (correlations.npz) — and draws:

``correlations``     real vs generated correlation matrices, one panel per method (paper Figure 1);
``learning_curves``  epoch loss and validation Pearson of each diffusion model, skipped steps marked;
``metric_bars``      mean ± 95 % CI over seeds of the seven imputation metrics, per method;
``auroc_bars``       downstream AUROC per label, grouped by method, one bar per training set.

A figure whose inputs are missing or unusable is skipped (never an error): the function returns
only the figures it wrote, as ``{key: file name}`` relative to `out_dir`. :func:`figures_html`
turns that mapping into ``<figure>`` blocks for a report.html written beside the PNGs.

Matplotlib is used through its object API (:class:`matplotlib.figure.Figure` with the Agg canvas),
so no pyplot state or GUI backend is touched.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from neurodiff.atomic import atomic_path
from neurodiff.evaluation.imputation import HIGHER_IS_BETTER, METRIC_NAMES
from neurodiff.reporting.figure_guard import draw_or_warn
from neurodiff.reporting.tables import best_methods, metric_losses

METRIC_TITLES = {
    "pearson_feature": "Pearson r per feature",
    "pearson_subject": "Pearson r per subject",
    "euclidean": "Euclidean distance",
    "cosine_distance": "cosine distance",
    "frechet": "Fréchet distance",
    "mean_correlation": "r of feature means",
    "corr_matrix_diff": "mean |C_real − C_gen|",
}
# Downstream training sets (neurodiff.evaluation.imputation.TRAINING_SETS), in the paper's order.
TRAINING_SETS = ("all_first", "paired_first", "paired_real", "enriched", "all_generated")
TRAINING_SET_COLOURS = {
    "all_first": "#9e9e9e",
    "paired_first": "#616161",
    "paired_real": "#212121",
    "enriched": "#1f77b4",
    "all_generated": "#ff7f0e",
}
NOT_METHODS = ("seed",)  # keys of a runs.json entry that are not methods
UNRANKED = ("reference",)  # rows of results.json drawn for comparison, never outlined as the best method

WIDTH_IN = 11.0  # inches at DPI: ~1100 px, the width of the report page
DPI = 100
FILES = {
    "correlations": "correlations.png",
    "learning_curves": "learning_curves.png",
    "metric_bars": "metric_bars.png",
    "auroc_bars": "auroc_bars.png",
}
ALT_TEXTS = {
    "correlations": "Feature–feature correlation matrices, real vs generated follow-ups",
    "learning_curves": "Training loss and validation Pearson r per epoch of the diffusion models",
    "metric_bars": "Bar charts of the seven imputation metrics per method with 95 % intervals",
    "auroc_bars": "Bar charts of downstream AUROC per label, method and training set",
}
CAPTIONS = {
    "correlations": (
        "Feature–feature Pearson correlation matrices of the held-out follow-ups of the first seed: the real "
        "follow-ups (left) and each method's generated follow-ups, on the same colour scale (−1 blue to +1 red). "
        "A good generator reproduces the real block structure. Panel titles give the mean absolute difference "
        "to the real matrix over off-diagonal entries (corr_matrix_diff), mean over seeds; lower is better "
        "(paper Figure 1)."
    ),
    "learning_curves": (
        "Training of the diffusion models: mean training loss per epoch (the first seed bold, other seeds thin) on the "
        "left axis, and the validation per-feature Pearson r used for early stopping on the right axis (dashed). "
        "Red ticks on the x axis mark steps whose update was skipped by the gradient manipulation; titles count "
        "the skipped and clipped steps over all seeds."
    ),
    "metric_bars": (
        "Imputation quality on held-out subjects with a real follow-up, in the scaled feature space: bars are "
        "the mean over seeds, error bars the 95 % interval (1.96·sd/√n; none for a single seed), dots the "
        "per-seed values. ↑ higher is better, ↓ lower is better; the best mean has a black outline (every tied "
        "best one; none when all methods tie)."
    ),
    "auroc_bars": (
        "Downstream classification: AUROC on held-out subjects of a classifier of each label trained on each "
        "training set (paper Table 4). Groups are methods, bar colours training sets; 'reference' holds the "
        "method-independent sets (first visits only, or real pairs), also drawn as dotted horizontal lines; "
        "'secondgram_without_<label>' is SECONDGRAM refitted without the predicted label in its conditioning "
        "(label-leakage check). Error bars: 95 % interval over seeds; grey line: chance (0.5)."
    ),
}


# ============================================================================ entry points
def impute_figures(document: Mapping[str, Any] | None, runs: Sequence[Mapping[str, Any]] | None,
                   correlations: Mapping[str, np.ndarray] | None, out_dir: str | Path, *,
                   unranked: Collection[str] = UNRANKED) -> dict[str, str]:
    """Write the benchmark's PNG figures into `out_dir`; return ``{figure key: file name}``.

    Parameters
    ----------
    document:
        results.json as a dict (``"methods"`` → method → metric → ``{"mean", "ci95", "n", "values"}``).
    runs:
        runs.json: one dict per seed, ``{"seed": s, method: info}``; diffusion methods' info has
        ``epoch_loss``, ``skipped_steps``, ``steps_per_epoch``, ``validation``, ``skipped``, ``clipped``.
    correlations:
        correlations.npz as a dict: ``"real"`` and one (D, D) matrix per method.
    out_dir:
        Folder for the PNGs (created if absent); nothing is written anywhere else.
    unranked:
        Rows of `document` that are drawn but never outlined as the best (not methods: the benchmark's
        method-independent ``reference`` by default).

    Figures whose inputs are missing are skipped; an unexpected error in one figure is turned into a
    warning and that figure is skipped, so a report can always be written.
    """
    out_dir = Path(out_dir)
    methods = _methods(document)
    matrices = list(correlations) if isinstance(correlations, Mapping) else []
    colours = _colours([*methods, *_run_methods(runs), *map(str, matrices)])
    drawers: dict[str, Callable[[], Any]] = {
        "correlations": lambda: _correlations_figure(correlations, methods),
        "learning_curves": lambda: _learning_curves_figure(runs),
        "metric_bars": lambda: _metric_bars_figure(methods, colours, unranked),
        "auroc_bars": lambda: _auroc_figure(methods),
    }
    written: dict[str, str] = {}

    def draw_and_save(key: str, draw: Callable[[], Any]) -> None:
        fig = draw()
        if fig is not None:
            _save(fig, out_dir / FILES[key])
            written[key] = FILES[key]

    for key, draw in drawers.items():
        draw_or_warn(key, partial(draw_and_save, key, draw))
    return written


def figures_html(figures: Mapping[str, str]) -> str:
    """``<figure>`` blocks (image + caption) for the files of :func:`impute_figures`, in its order."""
    blocks = []
    for key, filename in figures.items():
        caption = CAPTIONS.get(key, key.replace("_", " "))
        title = ALT_TEXTS.get(key, key.replace("_", " "))
        blocks.append(
            f'<figure><img src="{html.escape(str(filename), quote=True)}" alt="{html.escape(title, quote=True)}" '
            f'style="max-width:100%;height:auto"><figcaption>{html.escape(caption)}</figcaption></figure>'
        )
    return "\n".join(blocks)


# ============================================================================ helpers
def _new_figure(height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        fig.clear()  # not registered with pyplot: clearing releases its artists


def _methods(document: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    methods = (document or {}).get("methods") if isinstance(document, Mapping) else None
    if not isinstance(methods, Mapping):
        return {}
    return {str(m): dict(v) for m, v in methods.items() if isinstance(v, Mapping)}


def _run_methods(runs: Any) -> list[str]:
    names: list[str] = []
    for run in _runs(runs):
        names += [m for m, info in run.items() if m not in NOT_METHODS and isinstance(info, Mapping)]
    return list(dict.fromkeys(names))


def _runs(runs: Any) -> list[Mapping[str, Any]]:
    if not isinstance(runs, Sequence) or isinstance(runs, (str, bytes)):
        return []
    return [r for r in runs if isinstance(r, Mapping)]


def _colours(names: Iterable[str]) -> dict[str, str]:
    """One colour per method, stable across the figures ("real"/"reference" in black)."""
    from matplotlib import colormaps

    palette = [colormaps["tab10"](i) for i in range(10)] + [colormaps["Dark2"](i) for i in range(8)]
    colours: dict[str, Any] = {"real": "black", "reference": "#444444"}
    i = 0
    for name in dict.fromkeys(names):
        if name not in colours:
            colours[name] = palette[i % len(palette)]
            i += 1
    return colours


def _number(value: Any) -> float | None:
    """A finite float, or None (None, NaN, inf, strings...)."""
    if isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _summary(methods: Mapping[str, Mapping[str, Any]], method: str, metric: str) -> tuple[float | None, float | None, list[float]]:
    """(mean, ci95, finite per-seed values) of one cell; Nones where missing."""
    cell = methods.get(method, {}).get(metric)
    if not isinstance(cell, Mapping):
        return None, None, []
    values = cell.get("values")
    seeds = [v for v in (_number(x) for x in values) if v is not None] if isinstance(values, Sequence) else []
    return _number(cell.get("mean")), _number(cell.get("ci95")), seeds


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return math.ceil(n / cols), cols


def _short(name: str, width: int = 22) -> str:
    """Break long method names at underscores so tick labels stay narrow."""
    if len(name) <= width:
        return name
    parts, lines, line = name.split("_"), [], ""
    for part in parts:
        candidate = f"{line}_{part}" if line else part
        if len(candidate) > width and line:
            lines.append(line + "_")
            line = part
        else:
            line = candidate
    lines.append(line)
    return "\n".join(lines)


# ============================================================================ 1. correlation matrices
def _correlations_figure(correlations: Mapping[str, np.ndarray] | None, methods: Mapping[str, Mapping[str, Any]]):
    if not isinstance(correlations, Mapping) or not correlations:
        return None
    panels: list[tuple[str, np.ndarray]] = []
    order = ["real", *[m for m in methods if m in correlations], *[k for k in correlations if k not in methods]]
    for name in dict.fromkeys(order):
        if name not in correlations:
            continue
        try:
            matrix = np.asarray(correlations[name], dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
            continue
        panels.append((name, np.where(np.isfinite(matrix), matrix, np.nan)))
    if not panels:
        return None
    from matplotlib import colormaps

    cmap = colormaps["RdBu_r"].with_extremes(bad="#d0d0d0")  # undefined correlations in grey
    rows, cols = _grid(len(panels), 5)
    panel_in = min((WIDTH_IN - 0.9) / cols, 3.2)
    fig = _new_figure(rows * (panel_in + 0.55) + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (name, matrix) in zip(axes.flat, panels):
        image = ax.imshow(matrix, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if name == "real":
            title = f"real (D = {matrix.shape[0]})"
        else:
            mean, ci, _ = _summary(methods, name, "corr_matrix_diff")
            title = name if mean is None else f"{name}\nΔ = {mean:.3f}" + (f" ± {ci:.3f}" if ci is not None else "")
        ax.set_title("\n".join(_short(line, 28) for line in title.split("\n")), fontsize=9)
        for spine in ax.spines.values():
            spine.set_linewidth(2.0 if name == "real" else 0.8)
    fig.subplots_adjust(left=0.01, right=0.92, bottom=0.02, top=1 - 0.75 / fig.get_figheight(), wspace=0.08, hspace=0.35)
    if image is not None:
        cax = fig.add_axes((0.93, 0.15, 0.012, 0.7))
        bar = fig.colorbar(image, cax=cax)
        bar.set_label("Pearson r", fontsize=9)
        bar.ax.tick_params(labelsize=8)
    fig.suptitle("Feature–feature correlations of the held-out follow-ups (first seed); "
                 "Δ: corr_matrix_diff, mean ± 95 % CI over seeds (lower is better)", fontsize=10,
                 y=1 - 0.12 / fig.get_figheight())
    return fig


# ============================================================================ 2. learning curves
def _curves(runs: Any) -> dict[str, list[dict[str, Any]]]:
    """method → one entry per seed with a usable epoch-loss history."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for index, run in enumerate(_runs(runs)):
        seed = run.get("seed", index)
        for method, info in run.items():
            if method in NOT_METHODS or not isinstance(info, Mapping):
                continue
            raw = info.get("epoch_loss")
            if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)) or not raw:
                continue
            loss = np.array([np.nan if _number(v) is None else float(v) for v in raw])
            if not np.isfinite(loss).any():
                continue
            per_epoch = _number(info.get("steps_per_epoch"))
            per_epoch = per_epoch if per_epoch is not None and per_epoch > 0 else None
            skipped_steps = [s for s in (_number(v) for v in info.get("skipped_steps") or []) if s is not None]
            validation = []
            for entry in info.get("validation") or []:
                if not isinstance(entry, Mapping) or _number(entry.get("score")) is None:
                    continue
                step, epoch = _number(entry.get("step")), _number(entry.get("epoch"))
                x = step / per_epoch if step is not None and per_epoch else epoch
                if x is not None:
                    validation.append((x, float(entry["score"])))
            skipped = _number(info.get("skipped"))
            clipped = _number(info.get("clipped"))
            curves.setdefault(method, []).append({
                "seed": seed, "loss": loss, "validation": sorted(validation),
                # a skipped step's index counts the steps before it: it ends at (index + 1) / steps per epoch
                "skipped_x": [(s + 1) / per_epoch for s in skipped_steps] if per_epoch else [],
                "skipped": int(skipped) if skipped is not None else len(skipped_steps),
                "clipped": int(clipped) if clipped is not None else None,
            })
    return curves


def _learning_curves_figure(runs: Any):
    from matplotlib.lines import Line2D

    curves = _curves(runs)
    if not curves:
        return None
    rows, cols = _grid(len(curves), 3)
    fig = _new_figure(rows * 2.9 + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(curves):]:
        ax.set_visible(False)
    loss_colour, val_colour, skip_colour = "#1f4e9c", "#2a9d3a", "#d62728"
    for ax, (method, entries) in zip(axes.flat, curves.items()):
        first = min(entries, key=lambda e: e["seed"])  # seed 0 in a run of seeds 0..n; the lowest in any other
        ordered = [first, *[e for e in entries if e is not first]]
        twin = ax.twinx()
        positive = all(np.nanmin(e["loss"]) > 0 for e in entries)
        spread = max(np.nanmax(e["loss"]) for e in entries) / max(min(np.nanmin(e["loss"]) for e in entries), 1e-300)
        if positive and spread > 20:
            ax.set_yscale("log")
        any_validation = False
        for k, entry in enumerate(ordered):
            main = k == 0
            epochs = np.arange(1, len(entry["loss"]) + 1)
            ax.plot(epochs, entry["loss"], color=loss_colour, lw=1.6 if main else 0.8, alpha=1.0 if main else 0.35,
                    zorder=3 if main else 2)
            if entry["validation"]:
                any_validation = True
                vx, vy = zip(*entry["validation"])
                twin.plot(vx, vy, color=val_colour, ls="--", lw=1.4 if main else 0.8, alpha=1.0 if main else 0.35,
                          marker="." if main and len(vx) <= 60 else None, ms=3)
            if entry["skipped_x"]:
                ax.plot(entry["skipped_x"], np.zeros(len(entry["skipped_x"])), ls="none", marker="|",
                        ms=9 if main else 6, mew=1.2, color=skip_colour, alpha=1.0 if main else 0.4,
                        transform=ax.get_xaxis_transform(), clip_on=False, zorder=4)
        skipped = sum(e["skipped"] for e in entries)
        clipped = [e["clipped"] for e in entries if e["clipped"] is not None]
        seeds = len(entries)
        note = f"skipped {skipped}" + (f", clipped {sum(clipped)}" if clipped else "")
        ax.set_title(f"{method}\n{note} steps ({seeds} seed{'s' if seeds != 1 else ''})", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("training loss", fontsize=8, color=loss_colour)
        ax.tick_params(labelsize=7.5)
        ax.tick_params(axis="y", colors=loss_colour, which="both")
        ax.set_xlim(left=0)
        if any_validation:
            twin.set_ylabel("validation Pearson r", fontsize=8, color=val_colour)
            twin.tick_params(labelsize=7.5, colors=val_colour)
        else:
            twin.set_yticks([])
        ax.grid(alpha=0.25, lw=0.5)
    several = any(len(entries) > 1 for entries in curves.values())
    handles = [Line2D([], [], color=loss_colour, lw=1.6, label="epoch loss, first seed" if several else "epoch loss")]
    if several:
        handles.append(Line2D([], [], color=loss_colour, lw=0.8, alpha=0.35, label="other seeds"))
    handles += [Line2D([], [], color=val_colour, lw=1.4, ls="--", label="validation Pearson r (right axis)"),
                Line2D([], [], color=skip_colour, ls="none", marker="|", ms=9, mew=1.2, label="skipped update")]
    top = 1 - 0.55 / fig.get_figheight()
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8.5, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.05 / fig.get_figheight()))
    fig.subplots_adjust(left=0.07, right=0.93, bottom=0.55 / fig.get_figheight(), top=top - 0.35 / fig.get_figheight(),
                        wspace=0.55, hspace=0.75)
    return fig


# ============================================================================ 3. imputation metrics
def _metric_bars_figure(methods: Mapping[str, Mapping[str, Any]], colours: Mapping[str, Any],
                        unranked: Collection[str] = UNRANKED):
    metrics = [m for m in METRIC_NAMES if any(_summary(methods, name, m)[0] is not None for name in methods)]
    if not metrics:
        return None
    names = [name for name in methods if any(_summary(methods, name, m)[0] is not None for m in metrics)]
    fig, axes, rows, cols = bar_panels(len(metrics) + 1, len(metrics), 4)
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes.flat, metrics):
        higher = HIGHER_IS_BETTER[metric]
        summaries = {name: _summary(methods, name, metric) for name in names}
        best = best_methods(metric_losses(methods, names, metric, higher), unranked)
        draw_bars(ax, names, summaries, colours, best, rng)
        ax.axhline(0, color="black", lw=0.6)
        arrow = "↑ higher is better" if higher else "↓ lower is better"
        ax.set_title(f"{METRIC_TITLES.get(metric, metric)}\n{metric}   {arrow}", fontsize=8.5)
        style_bar_axes(ax, names)
    if len(metrics) < rows * cols:
        note = axes.flat[len(metrics)]
        note.set_visible(True)
        note.axis("off")
        seeds = max((len(_summary(methods, n, m)[2]) for n in names for m in metrics), default=0)
        lines = ["Bars: mean over seeds", "Error bars: 95 % CI", "  (1.96·sd/√n; none for one seed)",
                 f"Dots: per-seed values ({seeds} seeds)" if seeds > 1 else "One seed: no interval, no dots",
                 "Black outline: best mean (ties: all)", "↑ / ↓: better direction",
                 "Held-out subjects, scaled space"]
        note.text(0.02, 0.95, "\n".join(lines),
                  transform=note.transAxes, va="top", ha="left", fontsize=8.5, linespacing=1.5)
    fig.subplots_adjust(left=0.05, right=0.99, top=1 - 0.5 / fig.get_figheight(), bottom=1.25 / fig.get_figheight(),
                        wspace=0.3, hspace=0.8)
    return fig


# ============================================================================ 4. downstream AUROC
def bar_panels(n_panels: int, n_used: int, max_cols: int):
    """A figure with a grid of bar panels: (fig, axes, rows, cols); panels past `n_used` hidden."""
    rows, cols = _grid(n_panels, max_cols)
    fig = _new_figure(rows * 3.4 + 0.2)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n_used:]:
        ax.set_visible(False)
    return fig, axes, rows, cols


def style_bar_axes(ax, names) -> None:
    """Method names as slanted x tick labels, small tick labels, a light horizontal grid."""
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([_short(n, 16) for n in names], rotation=55, ha="right", rotation_mode="anchor",
                       fontsize=7.5, linespacing=0.95)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.tick_params(axis="y", labelsize=7.5)
    ax.grid(axis="y", alpha=0.25, lw=0.5)


def draw_bars(ax, names, summaries, colours, best: Collection[str], rng) -> None:
    """One bar per method (mean), its 95 % CI and the per-seed values; the methods in `best` outlined in black."""
    for i, name in enumerate(names):
        mean, ci, values = summaries[name]
        if mean is None:
            ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7, color="#777777")
            continue
        outlined = name in best
        ax.bar(i, mean, width=0.72, color=colours.get(name, "#888888"), alpha=0.85,
               edgecolor="black" if outlined else "none", linewidth=1.6 if outlined else 0)
        if ci is not None:
            ax.errorbar(i, mean, yerr=ci, color="black", capsize=3, lw=1.0, zorder=4)
        if len(values) > 1:
            jitter = rng.uniform(-0.15, 0.15, len(values))
            ax.scatter(i + jitter, values, s=7, color="#222222", alpha=0.6, zorder=5, linewidths=0)


def _parse_auroc(metric: str) -> tuple[str, str] | None:
    """auroc_<label>_<set> → (label, set); labels and sets may contain underscores."""
    if not metric.startswith("auroc_"):
        return None
    rest = metric[len("auroc_"):]
    for name in sorted(TRAINING_SETS, key=len, reverse=True):
        if rest.endswith("_" + name) and len(rest) > len(name) + 1:
            return rest[: -len(name) - 1], name
    label, _, name = rest.rpartition("_")
    return (label, name) if label and name else None


def _auroc_figure(methods: Mapping[str, Mapping[str, Any]]):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    table: dict[str, dict[str, dict[str, tuple[float, float | None, list[float]]]]] = {}
    named: list[str] = []  # every label with an auroc_* metric, defined or not
    for method, metrics in methods.items():
        for metric in metrics:
            parsed = _parse_auroc(metric)
            if parsed is None:
                continue
            label, name = parsed
            named.append(label)
            mean, ci, values = _summary(methods, method, metric)
            if mean is not None:
                table.setdefault(label, {}).setdefault(method, {})[name] = (mean, ci, values)
    if not table:
        return None
    undefined = [label for label in dict.fromkeys(named) if label not in table]
    from matplotlib import colormaps

    found = {s for by_method in table.values() for sets in by_method.values() for s in sets}
    sets_present = [s for s in TRAINING_SETS if s in found] + sorted(found - set(TRAINING_SETS))
    set_colours = dict(TRAINING_SET_COLOURS)
    extra = [s for s in sets_present if s not in set_colours]
    for i, s in enumerate(extra):
        set_colours[s] = colormaps["Set2"](i % 8)
    rows, cols = _grid(len(table), 2)
    fig = _new_figure(rows * 3.6 + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(table):]:
        ax.set_visible(False)
    for ax, (label, by_method) in zip(axes.flat, table.items()):
        order = [m for m in ("reference",) if m in by_method] + [m for m in by_method if m != "reference"]
        widest = max(len(v) for v in by_method.values())
        width = 0.8 / widest
        lows, highs = [], []
        for g, method in enumerate(order):
            sets = [s for s in sets_present if s in by_method[method]]
            for k, name in enumerate(sets):
                mean, ci, values = by_method[method][name]
                pos = g + (k - (len(sets) - 1) / 2) * width
                ax.bar(pos, mean, width=width * 0.92, color=set_colours[name], alpha=0.9)
                if ci is not None:
                    ax.errorbar(pos, mean, yerr=ci, color="black", capsize=2.5, lw=0.9, zorder=4)
                lows.append(mean - (ci or 0.0))
                highs.append(mean + (ci or 0.0))
        if "reference" in by_method:
            for name, (mean, _, _) in by_method["reference"].items():
                ax.axhline(mean, color=set_colours[name], ls=":", lw=1.1, zorder=1)
        ax.axhline(0.5, color="#999999", lw=0.9, zorder=1)
        low = max(0.0, min(0.4, min(lows) - 0.05)) if lows else 0.0
        ax.set_ylim(low, max(1.0, max(highs, default=1.0) + 0.02))
        ax.set_xticks(np.arange(len(order)))
        ax.set_xticklabels([m.replace(f"_without_{label}", "\nwithout label") if m.endswith(f"_without_{label}")
                            else _short(m, 16) for m in order], rotation=35, ha="right", rotation_mode="anchor",
                           fontsize=7.5, linespacing=0.95)
        ax.set_xlim(-0.6, len(order) - 0.4)
        ax.set_ylabel("AUROC", fontsize=8)
        ax.tick_params(axis="y", labelsize=7.5)
        ax.set_title(f"predicting {label!s}", fontsize=9.5)
        ax.grid(axis="y", alpha=0.25, lw=0.5)
    handles = [Patch(color=set_colours[s], label=s) for s in sets_present]
    handles.append(Line2D([], [], color="#999999", lw=0.9, label="chance"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8.5, frameon=False,
               title="training set of the classifier (dotted: reference sets' means)", title_fontsize=8.5,
               bbox_to_anchor=(0.5, 1 - 0.02 / fig.get_figheight()))
    if undefined:
        fig.text(0.01, 0.02, f"No defined AUROC for {', '.join(undefined)}: the held-out subjects had one class "
                 "only in every seed.", fontsize=8.5, color="#555555", ha="left", va="bottom")
    fig.subplots_adjust(left=0.07, right=0.99, top=1 - 0.95 / fig.get_figheight(), bottom=1.15 / fig.get_figheight(),
                        wspace=0.2, hspace=0.9)
    return fig
