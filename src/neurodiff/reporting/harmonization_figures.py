"""Figures of the harmonisation benchmark (METHODS.md §2) for report.html.

- :func:`latent_umap`  2-D UMAP embedding of latents (e.g. DDAE's joint [z_κ, z_υ]) coloured by site;
  PCA instead when there are fewer than 10 points (or umap-learn is missing), said in the title;
- :func:`image_grid`   example subjects (one row per site): the original, then each method's
  harmonised image of the same subject;
- :func:`metric_bars`  per-method bars with 95 % CI error bars of chosen metrics from results.json.

Same style as :mod:`neurodiff.reporting.impute_figures` (whose helpers are reused): matplotlib's object
API with the Agg canvas (no pyplot state), ~1100 px wide at 100 dpi;
non-finite values (e.g. PSNR = inf for identical images) count as missing, as in results.json. Every
function returns a :class:`matplotlib.figure.Figure`; the caller saves it
(``fig.savefig(path, format="png", dpi=DPI)``)
and writes the captions of :data:`CAPTIONS` beside it. Unusable inputs raise ValueError.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from neurodiff.evaluation.harmonization import (
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    REFERENCE_VALUES,
)
from neurodiff.reporting.impute_figures import (
    DPI,
    WIDTH_IN,
    _colours,
    _new_figure,
    _short,
    _summary,
    bar_panels,
    draw_bars,
    style_bar_axes,
)
from neurodiff.reporting.tables import best_methods, metric_losses

__all__ = ["CAPTIONS", "DPI", "METRIC_TITLES", "UMAP_MIN_POINTS", "image_grid", "latent_umap", "metric_bars"]

UMAP_MIN_POINTS = 10
METRIC_TITLES = {
    "site_accuracy": "site classifier balanced accuracy",
    "site_chance": "chance (1 / sites)",
    "age_mae_transfer": "age MAE (years), probe fitted on raw",
    "sex_auroc_transfer": "sex AUROC, probe fitted on raw",
    "age_mae": "age MAE (years), probe fitted on harmonised",
    "sex_auroc": "sex AUROC, probe fitted on harmonised",
    "frechet": "Fréchet distance to target (PCA)",
    "within_site_variability": "within-site variability after / before",
    "ssim": "travellers: SSIM",
    "psnr": "travellers: PSNR (dB)",
    "mae": "travellers: MAE",
    "age_injection": "given age written into the output",
    "sex_injection": "given sex written into the output",
}
CAPTIONS = {
    "latent_umap": (
        "UMAP embedding of the joint latents, one dot per image, coloured by acquisition site. Site-free "
        "latents mix the colours; separate clusters per site mean the latents still carry the site."
    ),
    "image_grid": (
        "One example subject per site (rows): the original image, then each method's harmonised image of the "
        "same subject mapped to the target site. Grey scale fixed to [0, 1] in every panel."
    ),
    "metric_bars": (
        "Harmonisation metrics per method: bars are the mean over seeds, error bars the 95 % interval "
        "(1.96·sd/√n; none for a single seed), dots the per-seed values. Dashed lines mark the ideal value "
        "(chance for the site classifier, 1 for the variability ratio); the best mean has a black outline (every "
        "tied best one; none when all methods tie; never the unharmonised raw images). Probes fitted on the "
        "harmonised images (age_mae, sex_auroc) are not ranked: a method given the age and sex can write them "
        "into its output; the *_transfer probes, fitted on raw images, are. A method whose images collapsed "
        "towards a template (within-site variability below 0.5) is never outlined for site accuracy, Fréchet "
        "or the transfer probes, nor is one that writes the age / sex it is given into its output (label-swap "
        "control above 0.25) for the transfer probes. The injection panels are best near 0."
    ),
}


# ============================================================================ 1. latent embedding
def _embed(latents: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """(n, 2) coordinates and the name of the method used."""
    n = len(latents)
    if n >= UMAP_MIN_POINTS:
        try:
            import umap
        except ImportError:
            pass
        else:
            k = min(15, n - 1)
            reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=0.1, random_state=seed,
                                precomputed_knn=_exact_neighbours(latents, k) if n < 4096 else (None, None, None))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # n_jobs overridden by random_state, spectral init notes
                return np.asarray(reducer.fit_transform(latents), dtype=np.float64), "UMAP"
        reason = "umap-learn not installed"
    else:
        reason = f"only {n} points, UMAP needs ≥ {UMAP_MIN_POINTS}"
    centred = latents - latents.mean(axis=0)
    coords = np.zeros((n, 2))
    if n > 1:
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        k = min(2, len(s))
        coords[:, :k] = u[:, :k] * s[:k]
    return coords, f"PCA ({reason})"


def _exact_neighbours(latents: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, None]:
    """The `k` nearest neighbours of every point (the point itself among them, at distance 0) and their
    Euclidean distances, in umap-learn's `precomputed_knn` form. Exact, as umap-learn's own search is
    below 4096 points, but without compiling that search (about 10 s of numba JIT in every new process)."""
    from scipy.spatial.distance import cdist

    points = np.asarray(latents, dtype=np.float64)
    distances = cdist(points, points)
    neighbours = np.argsort(distances, axis=1, kind="stable")[:, :k].copy()
    return neighbours, np.take_along_axis(distances, neighbours, axis=1), None


def latent_umap(latents: Any, sites: Sequence[Hashable], ax=None, seed: int = 0, *, title: str | None = None):
    """Scatter of a 2-D UMAP embedding of `latents` (n, d), coloured by site, with a legend.

    UMAP (``random_state=seed``, so deterministic) when there are at least 10 points; with fewer,
    the first two principal components instead, and the title says so. Draws into `ax` when given
    (and returns its figure), else into a new figure. Returns the Figure.
    """
    array = np.asarray(latents.detach().cpu().numpy() if hasattr(latents, "detach") else latents,
                       dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or len(array) == 0:
        raise ValueError(f"latents must be a non-empty 2-D array (n, d), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("latents contain NaN or infinite values")
    labels = np.asarray([str(s) for s in np.asarray(sites, dtype=object).ravel()])
    if len(labels) != len(array):
        raise ValueError(f"sites has {len(labels)} entries for {len(array)} latents")
    coords, method = _embed(array.reshape(len(array), -1), seed)
    if ax is None:
        fig = _new_figure(6.0)
        ax = fig.add_subplot(1, 1, 1)
        fig.subplots_adjust(left=0.25, right=0.75, top=0.9, bottom=0.1)
    order = list(dict.fromkeys(sorted(labels)))
    colours = _colours(order)
    for site in order:
        rows = labels == site
        ax.scatter(coords[rows, 0], coords[rows, 1], s=12, alpha=0.75, color=colours[site], linewidths=0,
                   label=f"{site} (n = {int(rows.sum())})")
    axis = "UMAP" if method == "UMAP" else "PC"
    ax.set_xlabel(f"{axis} 1", fontsize=8)
    ax.set_ylabel(f"{axis} 2", fontsize=8)
    ax.tick_params(labelsize=7.5)
    ax.set_title(title or f"Latents coloured by site — {method}", fontsize=9.5)
    ax.legend(title="site", fontsize=7.5, title_fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5),
              frameon=False, markerscale=1.5)
    return ax.figure


# ============================================================================ 2. image grid
def _image(value: Any, where: str) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, dtype=np.float64)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise ValueError(f"{where} must be one 2-D image ((H, W), (1, H, W) or (1, 1, H, W)), got shape "
                         f"{np.shape(value)}")
    return array


def image_grid(originals_by_site: Mapping[Hashable, Any], harmonised_by_method: Mapping[str, Mapping[Hashable, Any]],
               *, target_site: Hashable | None = None, vmin: float = 0.0, vmax: float = 1.0,
               title: str | None = None):
    """Grid of example images: rows = sites (one subject each), columns = original, then each method.

    `originals_by_site` maps site → that subject's original image; `harmonised_by_method` maps method →
    site → the same subject's harmonised image (a missing entry leaves an "n/a" panel). Images are
    (H, W), (1, H, W) or (1, 1, H, W), shown in grey on [vmin, vmax]. The target site's row is labelled
    as such. Returns the Figure.
    """
    if not isinstance(originals_by_site, Mapping) or not originals_by_site:
        raise ValueError("originals_by_site must be a non-empty mapping site → image")
    if not isinstance(harmonised_by_method, Mapping):
        raise ValueError("harmonised_by_method must be a mapping method → (site → image)")
    sites = list(originals_by_site)
    methods = [str(m) for m in harmonised_by_method]
    for method, by_site in harmonised_by_method.items():
        if not isinstance(by_site, Mapping):
            raise ValueError(f"harmonised_by_method[{method!r}] must be a mapping site → image")
    columns = ["original", *methods]
    rows, cols = len(sites), len(columns)
    panel = min((WIDTH_IN - 0.6) / cols, 2.2)
    fig = _new_figure(rows * (panel + 0.25) + 0.7)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, site in enumerate(sites):
        images = [_image(originals_by_site[site], f"originals_by_site[{site!r}]")]
        for method, by_site in harmonised_by_method.items():
            images.append(_image(by_site.get(site), f"harmonised_by_method[{method!r}][{site!r}]"))
        for c, (ax, image) in enumerate(zip(axes[r], images)):
            ax.set_xticks([])
            ax.set_yticks([])
            if image is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=9, color="#777777",
                        transform=ax.transAxes)
                ax.set_box_aspect(images[0].shape[0] / images[0].shape[1])  # same panel size as the images
            else:
                ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            if r == 0:
                ax.set_title(_short(columns[c], 18), fontsize=9)
            if c == 0:
                label = f"site {site}" + ("\n(target)" if target_site is not None and str(site) == str(target_site)
                                          else "")
                ax.set_ylabel(label, fontsize=9)
    target = f" → target site {target_site}" if target_site is not None else ""
    fig.suptitle(title or f"Original and harmonised images, one subject per site{target}", fontsize=10,
                 y=1 - 0.1 / fig.get_figheight())
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.02, top=1 - 0.65 / fig.get_figheight(),
                        wspace=0.05, hspace=0.12)
    return fig


# ============================================================================ 3. metric bars
def _methods_of(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The ``methods`` of a results.json document, or the mapping itself when it already is that."""
    if not isinstance(summary, Mapping):
        raise ValueError("summary must be a results.json document or its 'methods' mapping")
    methods = summary["methods"] if isinstance(summary.get("methods"), Mapping) else summary
    return {str(m): v for m, v in methods.items() if isinstance(v, Mapping)}


def _reference(methods: Mapping[str, Mapping[str, Any]], metric: str) -> float | None:
    """The ideal value drawn as a dashed line: a number, or the mean over methods of another metric."""
    reference = REFERENCE_VALUES.get(metric)
    if reference is None or isinstance(reference, (int, float)):
        return None if reference is None else float(reference)
    values = [mean for name in methods if (mean := _summary(methods, name, reference)[0]) is not None]
    return float(np.mean(values)) if values else None


def metric_bars(summary: Mapping[str, Any], metrics: Sequence[str] | None = None, *,
                higher_is_better: Mapping[str, bool | None] | None = None, max_cols: int = 4,
                unranked: Collection[str] = (), unranked_per_metric: Mapping[str, Collection[str]] | None = None):
    """Per-method bars (mean over seeds) with 95 % CI error bars and per-seed dots, one panel per metric.

    `summary` is a results.json document (or its ``methods`` mapping: method → metric → ``{"mean",
    "ci95", "values"}``, as :func:`neurodiff.reporting.results.summarize` writes). `metrics` defaults
    to the harmonisation metrics present (:data:`METRIC_NAMES` without ``site_chance``).
    `higher_is_better` overrides the direction per metric (True, False, or None for "closest to the
    dashed reference line"); unknown metrics have no direction and no best outline. The best means are
    outlined as in the report tables (:func:`neurodiff.reporting.tables.best_methods`: ties all outlined,
    none when every ranked method ties); methods in `unranked` (e.g. ``raw``, the unchanged images) are
    drawn but never outlined; `unranked_per_metric` adds, per metric, methods never outlined in that panel
    only (e.g. a method collapsed to a template, for site accuracy and Fréchet). A ValueError when no
    chosen metric has a value.
    """
    methods = _methods_of(summary)
    direction = {**HIGHER_IS_BETTER, **(higher_is_better or {})}
    chosen = list(metrics) if metrics is not None else [m for m in METRIC_NAMES if m != "site_chance"]
    chosen = [m for m in chosen if any(_summary(methods, name, m)[0] is not None for name in methods)]
    if not chosen:
        raise ValueError("no method has a value for any of the chosen metrics")
    names = [name for name in methods if any(_summary(methods, name, m)[0] is not None for m in chosen)]
    colours = _colours(names)
    fig, axes, rows, cols = bar_panels(len(chosen), len(chosen), max_cols)
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes.flat, chosen):
        summaries = {name: _summary(methods, name, metric) for name in names}
        reference = _reference(methods, metric)
        higher = direction.get(metric)
        left_out = {*unranked, *(unranked_per_metric or {}).get(metric, ())}
        best = best_methods(metric_losses(methods, names, metric, higher, REFERENCE_VALUES.get(metric)), left_out)
        if higher is None:
            arrow = f"best near {reference:.3g}" if reference is not None else ""
        else:
            arrow = "↑ higher is better" if higher else "↓ lower is better"
        draw_bars(ax, names, summaries, colours, best, rng)
        if reference is not None:
            ax.axhline(reference, color="#555555", lw=1.0, ls="--", zorder=1)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"{METRIC_TITLES.get(metric, metric)}\n{metric}   {arrow}".rstrip(), fontsize=8.5)
        style_bar_axes(ax, names)
    fig.subplots_adjust(left=0.05, right=0.99, top=1 - 0.5 / fig.get_figheight(), bottom=1.25 / fig.get_figheight(),
                        wspace=0.3, hspace=0.8)
    return fig
