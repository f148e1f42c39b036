"""Harmonisation report ranking: the biology columns rank the transfer probes, and a method that collapsed its
images towards a template is marked and never bold on the metrics a template wins."""

from __future__ import annotations

import pytest

from neurodiff.reporting.results import summarize


def _bold(page: str, caption: str) -> list[str]:
    """Methods with a bold cell in the table whose caption starts with `caption`."""
    table = next(t for t in page.split("<table>") if t.startswith(f"<caption>{caption}"))
    return [row.split("</th>")[0].removeprefix("<th>") for row in table.split("<tr>")[2:] if "<b>" in row]


def _methods() -> dict:
    """ddae / combat harmonise; template collapses every image (variability 0.2) and so wins site accuracy,
    Fréchet and the transfer probes; cvae writes age and sex into its output (best within-image probes)."""
    def cell(*values):
        return summarize(list(values))

    rows = {  # site_accuracy, frechet, variability, age_mae_transfer, sex_auroc_transfer, age_mae, sex_auroc
        "ddae": (0.30, 8.0, 0.80, 11.0, 0.86, 11.7, 0.91),
        "combat": (0.15, 11.0, 1.05, 12.0, 0.84, 12.0, 0.84),
        "cvae": (0.20, 9.5, 0.79, 12.5, 0.83, 2.9, 0.96),
        "template": (0.143, 5.0, 0.20, 7.8, 1.00, 0.02, 1.00),
        "raw": (0.74, 12.8, 1.00, 12.8, 0.85, 12.8, 0.85),
    }
    names = ("site_accuracy", "frechet", "within_site_variability", "age_mae_transfer", "sex_auroc_transfer",
             "age_mae", "sex_auroc")
    methods = {m: {k: cell(v, v) for k, v in zip(names, values)} for m, values in rows.items()}
    for values in methods.values():
        values["site_chance"] = cell(1 / 7, 1 / 7)
    return methods


def test_report_ranks_transfer_probes_and_never_bolds_a_collapsed_method():
    from neurodiff.evaluation.harmonization_benchmark import (
        COLLAPSE_THRESHOLD,
        collapsed_methods,
        report_html,
    )

    methods = _methods()
    assert COLLAPSE_THRESHOLD == 0.5 and collapsed_methods(methods) == ("template",)
    document = {"data": {"description": "synthetic"}, "config": {"target_site": "site0"}, "seeds": [0, 1],
                "methods": methods}
    page = report_html(document, {})
    # template has chance site accuracy and the least Fréchet: marked, shown, never bold
    assert _bold(page, "Site removal") == ["combat"]
    assert _bold(page, "Distribution") == ["ddae", "combat"]  # Fréchet: ddae; variability (nearest 1): combat
    assert "<th>template †</th><td>0.143 ± 0.000</td>" in page
    assert page.count("†: within-site variability below 0.5") == 3
    # biology: only the transfer probes are ranked; cvae's within-image age MAE (label injection) is not bold
    biology = _bold(page, "Biology kept")
    assert biology == ["ddae"]
    assert "<td>2.900 ± 0.000</td>" in page and "<td><b>2.900" not in page
    assert "age_mae_transfer ↓" in page and "sex_auroc_transfer ↑" in page
    assert "<th>age_mae</th>" in page and "<th>age_mae ↓</th>" not in page
    assert "can write them into its output" in page
    # raw stays unranked and unmarked; methods keep their names in the other tables
    assert "<th>raw</th>" in page and "raw †" not in page


def test_distribution_table_bolds_variability_among_the_rest():
    from neurodiff.evaluation.harmonization_benchmark import report_html

    document = {"data": {"description": "synthetic"}, "config": {"target_site": "site0"}, "seeds": [0, 1],
                "methods": _methods()}
    table = next(t for t in report_html(document, {}).split("<table>") if t.startswith("<caption>Distribution"))
    assert "<th>combat</th><td>11.000 ± 0.000</td><td><b>1.050 ± 0.000</b></td>" in table
    assert "<th>ddae</th><td><b>8.000 ± 0.000</b></td><td>0.800 ± 0.000</td>" in table


def test_metric_bars_leave_collapsed_methods_out_per_metric(monkeypatch, tmp_path):
    import neurodiff.reporting.harmonization_figures as module
    from neurodiff.evaluation.harmonization_benchmark import (
        COLLAPSE_GAMED,
        harmonize_figures,
    )
    from neurodiff.reporting.harmonization_figures import metric_bars

    methods = _methods()
    fig = metric_bars(methods, ["site_accuracy", "frechet", "within_site_variability", "age_mae"],
                      unranked=("raw",), unranked_per_metric={"site_accuracy": ("template",),
                                                              "frechet": ("template",)})
    outlined = []
    for ax in [a for a in fig.axes if a.get_visible()]:
        labels = [t.get_text() for t in ax.get_xticklabels()]
        outlined.append([labels[round(p.get_x() + p.get_width() / 2)] for p in ax.patches if p.get_linewidth() > 0])
    assert outlined == [["combat"], ["ddae"], ["combat"], []]  # age_mae (within-image probe): not ranked

    seen = {}

    def fake(summary, metrics=None, **kwargs):
        seen.update(metrics=metrics, **kwargs)
        raise ValueError("not drawn in this test")

    monkeypatch.setattr(module, "metric_bars", fake)
    with pytest.warns(RuntimeWarning, match="'metrics.png' skipped"):
        harmonize_figures({"methods": methods}, {}, tmp_path)
    assert seen["unranked"] == ("raw",)
    assert seen["unranked_per_metric"] == {m: ("template",) for m in COLLAPSE_GAMED}
    assert {"age_mae_transfer", "sex_auroc_transfer"} <= set(seen["metrics"])


def test_a_method_that_writes_the_given_labels_is_marked_and_not_ranked_on_the_transfer_probes():
    """The label-swap control: cvae follows the age it is given (age_injection 0.8) and so beats raw on the
    transfer age probe; it is marked ‡ and not bold there, and the control's own table ranks nearest 0."""
    from neurodiff.evaluation.harmonization_benchmark import (
        INJECTION_THRESHOLD,
        gamed_per_metric,
        injecting_methods,
        report_html,
    )
    from neurodiff.demo.summary import HEADLINES, reading

    methods = _methods()
    methods["cvae"]["age_mae_transfer"] = summarize([8.3, 8.3])
    injections = {"ddae": (0.10, 0.05), "combat": (0.02, 0.01), "cvae": (0.80, 0.40), "template": (0.5, 0.5),
                  "raw": (0.0, 0.0)}
    for method, (age, sex) in injections.items():
        methods[method]["age_injection"] = summarize([age, age])
        methods[method]["sex_injection"] = summarize([sex, sex])
    assert INJECTION_THRESHOLD == 0.25 and injecting_methods(methods) == ("cvae", "template")
    assert gamed_per_metric(methods)["age_mae_transfer"] == ("template", "cvae")
    assert gamed_per_metric(methods)["site_accuracy"] == ("template",)  # label writing does not game site removal
    page = report_html({"data": {"description": "synthetic"}, "config": {"target_site": "site0"}, "seeds": [0, 1],
                        "methods": methods}, {})
    assert _bold(page, "Biology kept") == ["ddae"]  # not cvae ‡ (8.3 years, better than raw's 12.8)
    assert "<th>cvae ‡</th>" in page and "<th>template † ‡</th>" in page
    assert _bold(page, "Site removal") == ["combat"]
    assert _bold(page, "Label-swap control") == ["combat"]
    # the demo's reading: cvae is not the best baseline on the age probe, and ddae, when it writes labels, is flagged
    text = reading(methods, HEADLINES["harmonize"])
    assert "cvae 8.300" not in text and "age_mae_transfer</b>: ddae" in text
    methods["ddae"]["age_injection"] = summarize([0.6, 0.6])
    text = reading(methods, HEADLINES["harmonize"])
    assert "<b>age_mae_transfer</b>: ddae writes the age / sex it is given" in text
    assert "<b>site_accuracy</b>: ddae" in text and "site_accuracy</b>: ddae writes" not in text
