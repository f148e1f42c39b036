"""Figures of the imputation benchmark: written from a small synthetic output, skipped when inputs are missing."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest

from neurodiff.reporting.impute_figures import (
    CAPTIONS,
    FILES,
    HIGHER_IS_BETTER,
    _parse_auroc,
    figures_html,
    impute_figures,
)
from neurodiff.reporting.results import summarize

METHODS = ("secondgram", "vanilla", "ridge")
DIFFUSION = ("secondgram", "vanilla")
SEEDS = (0, 1)
D = 6
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _document(seeds=SEEDS) -> dict:
    rng = np.random.default_rng(0)
    per_seed: dict[str, dict[str, list[float]]] = {}
    for method in METHODS:
        for metric in HIGHER_IS_BETTER:
            per_seed.setdefault(method, {})[metric] = list(rng.uniform(0.1, 0.9, len(seeds)))
        for label in ("stroke", "parkinsonism"):
            for name in ("enriched", "all_generated"):
                per_seed[method][f"auroc_{label}_{name}"] = list(rng.uniform(0.5, 0.9, len(seeds)))
        per_seed[method]["case_generated_change_stroke"] = list(rng.normal(size=len(seeds)))
    for label in ("stroke", "parkinsonism"):
        for name in ("all_first", "paired_first", "paired_real"):
            per_seed.setdefault("reference", {})[f"auroc_{label}_{name}"] = list(rng.uniform(0.5, 0.9, len(seeds)))
        per_seed[f"secondgram_without_{label}"] = {f"auroc_{label}_enriched": list(rng.uniform(0.5, 0.9, len(seeds)))}
    per_seed["reference"]["case_real_change_stroke"] = list(rng.normal(size=len(seeds)))
    # an undefined value (one class in a test set) and a metric undefined in every seed
    per_seed["ridge"]["auroc_stroke_enriched"][0] = float("nan")
    per_seed["vanilla"]["frechet"] = [float("nan")] * len(seeds)
    per_seed["ridge"]["auroc_ms_enriched"] = [float("nan")] * len(seeds)  # a label undefined in every seed
    methods = {m: {k: summarize(v) for k, v in metrics.items()} for m, metrics in per_seed.items()}
    return {"task": "longitudinal_imputation", "seeds": list(seeds), "data": {"description": "synthetic"},
            "methods": methods}


def _runs(seeds=SEEDS) -> list[dict]:
    rng = np.random.default_rng(1)
    runs = []
    for seed in seeds:
        run: dict = {"seed": seed}
        for method in DIFFUSION:
            epochs, per_epoch = 12, 5
            loss = list(np.exp(-np.arange(epochs) / 4) + rng.uniform(0, 0.05, epochs))
            run[method] = {
                "skipped": 2, "clipped": 7, "epochs": epochs, "steps": epochs * per_epoch,
                "best_validation_pearson": 0.6, "seconds": 1.0, "thresholds": [1.0, 2.0],
                "epoch_loss": loss, "skipped_steps": [3, 41], "steps_per_epoch": float(per_epoch),
                "validation": [{"step": (e + 1) * per_epoch, "epoch": e + 1, "score": 0.3 + 0.03 * e}
                               for e in range(0, epochs, 2)],
            }
        run["ridge"] = {"alpha": 1.0}
        runs.append(run)
    return runs


def _correlations() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    out = {}
    for name in ("real", *METHODS):
        c = np.corrcoef(rng.normal(size=(40, D)), rowvar=False)
        out[name] = c.astype(np.float32)
    return out


def _check_png(path, min_bytes=5_000):
    assert path.is_file(), path
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > min_bytes, (path, len(data))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """All four figures drawn once from the synthetic inputs (kept to check they are not modified)."""
    root = tmp_path_factory.mktemp("render")
    inputs = (_document(), _runs(), _correlations())
    before = copy.deepcopy(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no figure may be skipped by an internal error
        figures = impute_figures(*inputs, root / "figs")
    return root, figures, inputs, before


def test_all_figures_written(rendered):
    root, figures, _, _ = rendered
    out = root / "figs"
    assert figures == FILES
    for filename in figures.values():
        _check_png(out / filename)
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES.values())  # nothing else, no temporaries
    assert sorted(p.name for p in root.iterdir()) == ["figs"]  # nothing outside out_dir


def test_figure_sizes_fit_the_page(rendered):
    root, figures, _, _ = rendered
    for filename in figures.values():
        width, height = _png_size(root / "figs" / filename)
        assert 900 <= width <= 1200, (filename, width)
        assert 150 <= height <= 1600, (filename, height)


def test_inputs_are_not_modified(rendered):
    _, _, (document, runs, correlations), (document0, runs0, correlations0) = rendered
    assert _nan_equal((document, runs), (document0, runs0))
    for key, value in correlations0.items():
        np.testing.assert_array_equal(correlations[key], value)


def _png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[16:24]
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")


def test_missing_inputs_skip_figures(tmp_path):
    assert impute_figures({}, [], {}, tmp_path / "a") == {}
    assert impute_figures(None, None, None, tmp_path / "b") == {}
    # no runs and no correlations: only the bar charts
    figures = impute_figures(_document(), [], {}, tmp_path / "c")
    assert set(figures) == {"metric_bars", "auroc_bars"}
    # runs without any diffusion history (e.g. only baselines were run)
    runs = [{"seed": 0, "ridge": {"alpha": 1.0}, "locf": {}}]
    assert "learning_curves" not in impute_figures(_document(), runs, {}, tmp_path / "d")
    # no auroc metrics: no auroc figure
    document = _document()
    document["methods"] = {m: {k: v for k, v in metrics.items() if not k.startswith("auroc_")}
                           for m, metrics in document["methods"].items()}
    figures = impute_figures(document, _runs(), _correlations(), tmp_path / "e")
    assert set(figures) == {"correlations", "learning_curves", "metric_bars"}
    # only correlations
    assert set(impute_figures(None, None, _correlations(), tmp_path / "f")) == {"correlations"}
    # inputs of the wrong kind are treated as missing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert impute_figures([1, 2], {"seed": 0}, [np.eye(3)], tmp_path / "g") == {}
        assert impute_figures({"methods": []}, ["x", 3], {"real": "junk"}, tmp_path / "h") == {}


def test_inputs_read_back_from_the_benchmark_files(tmp_path):
    """As report code will call it: results/runs from JSON, correlations straight from np.load."""
    import json

    np.savez_compressed(tmp_path / "correlations.npz", **_correlations())
    (tmp_path / "runs.json").write_text(json.dumps(_runs()))
    runs = json.loads((tmp_path / "runs.json").read_text())
    with np.load(tmp_path / "correlations.npz") as correlations:
        figures = impute_figures(None, runs, correlations, tmp_path / "figs")
    assert set(figures) == {"correlations", "learning_curves"}
    for filename in figures.values():
        _check_png(tmp_path / "figs" / filename)


def test_single_seed_and_undefined_values(tmp_path):
    document = _document(seeds=(0,))
    for metrics in document["methods"].values():
        for cell in metrics.values():
            assert cell["ci95"] is None  # one seed: no interval
    document["methods"]["secondgram"]["euclidean"] = {"mean": None, "ci95": None, "n": 0, "values": [None]}
    document["methods"]["ridge"]["cosine_distance"] = {"mean": float("nan"), "ci95": "?", "values": "junk"}
    runs = _runs(seeds=(0,))
    runs[0]["secondgram"]["validation"] = []
    runs[0]["secondgram"]["epoch_loss"][3] = None
    runs[0]["vanilla"]["steps_per_epoch"] = 0
    runs[0]["vanilla"]["validation"].append({"step": None, "epoch": None, "score": float("nan")})
    correlations = _correlations()
    correlations["vanilla"] = np.full((D, D), np.nan, dtype=np.float32)
    correlations["ridge"] = np.zeros(D)  # not a matrix: left out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figures = impute_figures(document, runs, correlations, tmp_path)
    assert figures == FILES
    for filename in figures.values():
        _check_png(tmp_path / filename)


def test_a_failing_figure_is_skipped_with_a_warning(tmp_path, monkeypatch):
    import neurodiff.reporting.impute_figures as module

    def boom(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(module, "_metric_bars_figure", boom)
    with pytest.warns(RuntimeWarning, match="metric_bars"):
        figures = impute_figures(_document(), _runs(), _correlations(), tmp_path)
    assert "metric_bars" not in figures and "correlations" in figures
    assert not (tmp_path / FILES["metric_bars"]).exists()


def _nan_equal(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_nan_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_nan_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_parse_auroc_names():
    assert _parse_auroc("auroc_stroke_enriched") == ("stroke", "enriched")
    assert _parse_auroc("auroc_white_matter_paired_first") == ("white_matter", "paired_first")
    assert _parse_auroc("auroc_stroke_all_generated") == ("stroke", "all_generated")
    assert _parse_auroc("auroc_x_custom") == ("x", "custom")
    assert _parse_auroc("pearson_feature") is None


def test_figures_html_references_the_files(rendered):
    figures = rendered[1]
    text = figures_html(figures)
    assert text.count("<figure>") == len(figures) == 4
    for key, filename in figures.items():
        assert f'src="{filename}"' in text
        assert "/" not in filename  # relative, beside report.html
        assert CAPTIONS[key][:40].replace("'", "&#x27;") in text
    assert "<figcaption>" in text
    assert figures_html({}) == ""
    assert "&lt;" in figures_html({"x": "a<b.png"})  # escaped


def test_metric_bars_outline_ties_and_never_the_reference_row():
    from neurodiff.reporting.impute_figures import _colours, _metric_bars_figure

    methods = {"secondgram": {"pearson_feature": summarize([0.6, 0.6]), "euclidean": summarize([2.0, 2.0]),
                              "frechet": summarize([1.0, 1.0])},
               "vanilla": {"pearson_feature": summarize([0.6, 0.6]), "euclidean": summarize([3.0, 3.0]),
                           "frechet": summarize([1.0, 1.0])},
               "ridge": {"pearson_feature": summarize([0.4, 0.4]), "euclidean": summarize([2.5, 2.5]),
                         "frechet": summarize([1.0, 1.0])},
               "reference": {"euclidean": summarize([0.0, 0.0])}}
    fig = _metric_bars_figure(methods, _colours(methods))
    outlined = {}
    for ax in fig.axes:
        if ax.get_visible() and ax.patches:
            labels = [t.get_text() for t in ax.get_xticklabels()]
            metric = ax.get_title().split("\n")[1].split()[0]
            outlined[metric] = [labels[round(p.get_x() + p.get_width() / 2)] for p in ax.patches
                                if p.get_linewidth() > 0]
    assert outlined == {"pearson_feature": ["secondgram", "vanilla"], "euclidean": ["secondgram"], "frechet": []}
    fig.clear()
