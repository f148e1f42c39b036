"""Figures of the harmonisation benchmark render to PNG; UMAP falls back to PCA with few points."""

from __future__ import annotations

import io
import sys
import types

import numpy as np
import pytest

from neurodiff.reporting.harmonization_figures import (
    CAPTIONS,
    image_grid,
    latent_umap,
    metric_bars,
)
from neurodiff.reporting.results import summarize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SITES = ("A", "B", "C")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    data = buffer.getvalue()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    return data


def _latents(n_per_site: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    latents = np.concatenate([rng.normal(loc=3 * i, size=(n_per_site, 8)) for i in range(len(SITES))])
    sites = np.repeat(SITES, n_per_site)
    return latents, sites


@pytest.fixture
def fake_umap(monkeypatch):
    """A stand-in for umap-learn (its numba compilation costs ~10 s): records its arguments."""
    calls = {}

    class UMAP:
        def __init__(self, **kwargs):
            calls.update(kwargs)

        def fit_transform(self, x):
            calls["shape"] = x.shape
            return x[:, :2] * 1.0

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=UMAP))
    return calls


def test_latent_umap_uses_umap_with_enough_points(fake_umap):
    latents, sites = _latents(6)
    fig = latent_umap(latents, sites, seed=3)
    ax = fig.axes[0]
    assert "UMAP" in ax.get_title() and "PCA" not in ax.get_title()
    assert fake_umap["random_state"] == 3 and fake_umap["shape"] == (18, 8)
    neighbours, distances, index = fake_umap["precomputed_knn"]  # exact neighbours, given to umap-learn
    assert neighbours.shape == distances.shape == (18, 15) and index is None
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"{s} (n = 6)" for s in SITES]
    _png(fig)


def test_latent_umap_falls_back_to_pca_with_few_points(fake_umap):
    latents, sites = _latents(2)  # 6 points < 10
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    assert latent_umap(latents, sites, ax=ax) is fig  # draws into the given axes
    assert "PCA" in ax.get_title() and "6 points" in ax.get_title()
    assert "shape" not in fake_umap  # UMAP never ran
    _png(fig)
    with pytest.raises(ValueError, match="entries"):
        latent_umap(latents, sites[:-1])
    one = latent_umap(latents[:1], sites[:1])  # a single point still draws
    _png(one)


@pytest.mark.slow
def test_latent_umap_with_real_umap():
    latents, sites = _latents(10)
    fig = latent_umap(latents, sites, seed=0)
    assert fig.axes[0].get_title().endswith("UMAP")
    _png(fig)


def test_image_grid_renders_originals_and_methods():
    rng = np.random.default_rng(0)
    originals = {site: rng.uniform(size=(1, 16, 16)) for site in SITES}
    harmonised = {
        "ddae": {site: rng.uniform(size=(1, 1, 16, 16)) for site in SITES},
        "combat": {site: rng.uniform(size=(16, 16)) for site in SITES[:2]},  # C missing: an n/a panel
    }
    fig = image_grid(originals, harmonised, target_site="A")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["original", "ddae", "combat"]
    assert "target" in fig.axes[0].get_ylabel()
    assert any(t.get_text() == "n/a" for t in fig.axes[8].texts)
    _png(fig)
    with pytest.raises(ValueError, match="2-D image"):
        image_grid({"A": rng.uniform(size=(2, 16, 16))}, {})
    with pytest.raises(ValueError, match="non-empty"):
        image_grid({}, harmonised)


def test_metric_bars_from_a_results_document():
    rng = np.random.default_rng(0)
    methods = {}
    for method in ("raw", "ddae", "combat"):
        per_seed = {metric: list(rng.uniform(0.2, 0.9, 3)) for metric in
                    ("site_accuracy", "age_mae", "sex_auroc", "frechet", "within_site_variability", "ssim")}
        per_seed["site_chance"] = [1 / 3] * 3
        per_seed["psnr"] = [float("inf")] * 3 if method == "raw" else list(rng.uniform(20, 30, 3))
        methods[method] = {k: summarize(v) for k, v in per_seed.items()}
    document = {"task": "harmonisation", "methods": methods}
    fig = metric_bars(document)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == 7  # the default metrics present, site_chance drawn as a line only
    assert "best near 0.333" in titles[0]
    _png(fig)
    fig = metric_bars(methods, ["frechet", "custom"], higher_is_better={"custom": True})
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1  # "custom" has no values
    _png(fig)
    with pytest.raises(ValueError, match="no method"):
        metric_bars(document, ["nothing"])
    assert set(CAPTIONS) == {"latent_umap", "image_grid", "metric_bars"}


def test_exact_neighbours_match_a_brute_force_search():
    from sklearn.neighbors import NearestNeighbors

    from neurodiff.reporting.harmonization_figures import _exact_neighbours

    latents = np.random.default_rng(1).normal(size=(50, 12))
    neighbours, distances, _ = _exact_neighbours(latents, 7)
    expected_distances, expected = NearestNeighbors(n_neighbors=7).fit(latents).kneighbors(latents)
    assert (neighbours[:, 0] == np.arange(50)).all() and np.allclose(distances[:, 0], 0.0)
    assert (neighbours == expected).all() and np.allclose(distances, expected_distances)


def _outlined(ax) -> list[str]:
    """Tick labels of the bars drawn with a black outline (the best means)."""
    labels = [t.get_text() for t in ax.get_xticklabels()]
    return [labels[round(p.get_x() + p.get_width() / 2)] for p in ax.patches if p.get_linewidth() > 0]


def test_metric_bars_outline_the_same_best_as_the_table():
    """Ties are all outlined, a constant metric has none, and unranked rows (raw) never are."""
    from neurodiff.evaluation.harmonization_benchmark import (
        HIGHER_IS_BETTER as TABLE_DIRECTIONS,
    )
    from neurodiff.evaluation.harmonization_benchmark import REFERENCES
    from neurodiff.reporting.tables import methods_table

    methods = {"combat": {"ssim": summarize([0.8, 0.8]), "psnr": summarize([30.0, 30.0]),
                          "within_site_variability": summarize([1.10, 1.12])},
               "ddae": {"ssim": summarize([0.8, 0.8]), "psnr": summarize([30.0, 30.0]),
                        "within_site_variability": summarize([0.97, 0.99])},
               "cvae": {"ssim": summarize([0.7, 0.7]), "psnr": summarize([30.0, 30.0]),
                        "within_site_variability": summarize([1.2, 1.2])},
               "raw": {"within_site_variability": summarize([1.0, 1.0])}}
    metrics = ["ssim", "psnr", "within_site_variability"]
    fig = metric_bars(methods, metrics, unranked=("raw",))
    assert [_outlined(ax) for ax in fig.axes if ax.get_visible()] == [["combat", "ddae"], [], ["ddae"]]
    tables = [methods_table(methods, [m], "t", TABLE_DIRECTIONS, REFERENCES, unranked=("raw",)) for m in metrics]
    assert [[name for name in methods if f"<th>{name}</th><td><b>" in table] for table in tables] == \
        [["combat", "ddae"], [], ["ddae"]]
    assert _outlined(metric_bars(methods, ["within_site_variability"]).axes[0]) == ["raw"]  # ranked when not listed
    _png(fig)


def test_benchmark_figures_leave_out_the_rows_that_are_not_methods(monkeypatch, tmp_path):
    """harmonize_figures leaves raw unranked, normative_figures the planted oracle."""
    import neurodiff.reporting.harmonization_figures as module
    from neurodiff.evaluation.harmonization_benchmark import harmonize_figures
    from neurodiff.reporting.normative_report import normative_figures

    unranked = []

    def fake(summary, metrics=None, **kwargs):
        unranked.append(tuple(kwargs.get("unranked")))
        raise ValueError("not drawn in this test")

    monkeypatch.setattr(module, "metric_bars", fake)
    document = {"methods": {"raw": {"ssim": summarize([1.0])}, "oracle_severity": {"c_index": summarize([0.9])}}}
    with pytest.warns(RuntimeWarning, match="'metrics.png' skipped: ValueError: not drawn in this test"):
        harmonize_figures(document, {}, tmp_path)
    with pytest.warns(RuntimeWarning, match="'metrics.png' skipped"):
        normative_figures(document, {}, tmp_path)
    assert unranked == [("raw",), ("oracle_severity",)]


def test_a_failing_figure_is_a_warning_and_the_others_are_still_drawn(tmp_path):
    """One figure's error must not discard a benchmark's other figures (nor its results and report)."""
    import matplotlib.pyplot as plt

    from neurodiff.evaluation.harmonization_benchmark import harmonize_figures

    document = {"methods": {"ddae": {"ssim": summarize([0.8, 0.9])}, "combat": {"ssim": summarize([0.7, 0.8])}},
                "config": {"target_site": "a"}}
    first = {"extras": {"latents": {"ddae": np.full((4, 3), np.nan)}}}  # UMAP of NaN latents fails
    before = set(plt.get_fignums())
    with pytest.warns(RuntimeWarning) as caught:
        files = harmonize_figures(document, first, tmp_path)
    skipped = sorted(str(w.message).split("'")[1] for w in caught if "skipped" in str(w.message))
    assert skipped == ["examples.png", "umap_ddae.png"]
    assert files == {"metrics": "metrics.png"} and (tmp_path / "metrics.png").stat().st_size > 0
    assert set(plt.get_fignums()) == before  # the failed figures are closed
