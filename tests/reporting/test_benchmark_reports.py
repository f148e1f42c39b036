"""The benchmarks' report.html: rows that are not methods are never bold, p-values stay readable."""

from __future__ import annotations

import re

from neurodiff.reporting.results import summarize


def _bold(page: str, metric_caption: str) -> list[str]:
    """Methods with a bold cell in the table whose caption starts with `metric_caption`."""
    table = next(t for t in page.split("<table>") if t.startswith(f"<caption>{metric_caption}"))
    return [row.split("</th>")[0].removeprefix("<th>") for row in table.split("<tr>")[2:] if "<b>" in row]


def test_harmonisation_report_never_bolds_raw():
    from neurodiff.evaluation.harmonization_benchmark import report_html

    methods = {"ddae": {"frechet": summarize([2.0, 2.2]), "within_site_variability": summarize([0.97, 0.99])},
               "combat": {"frechet": summarize([3.0, 3.1]), "within_site_variability": summarize([1.08, 1.1])},
               "raw": {"frechet": summarize([1.0, 1.0]), "within_site_variability": summarize([1.0, 1.0])}}
    document = {"data": {"description": "synthetic"}, "config": {"target_site": "a"}, "seeds": [0, 1],
                "methods": methods}
    page = report_html(document, {})
    assert "<th>raw</th><td>1.000 ± 0.000</td><td>1.000 ± 0.000</td>" in page
    assert _bold(page, "Distribution") == ["ddae"]


def test_normative_report_never_bolds_the_oracle_and_prints_p_values():
    from neurodiff.reporting.normative_report import report_html

    methods = {"nda": {"c_index_expected": summarize([0.70, 0.72]), "c_index": summarize([0.70, 0.72]),
                       "p": summarize([2e-6, 4e-5]), "logrank_p": summarize([3e-4, float("nan")])},
               "cvae": {"c_index_expected": summarize([0.40, 0.38]), "c_index": summarize([0.60, 0.62]),
                        "p": summarize([0.01, 0.03]), "logrank_p": summarize([0.02, 0.04])},
               "oracle_severity": {"c_index_expected": summarize([0.90, 0.91]), "c_index": summarize([0.90, 0.91]),
                                   "p": summarize([1e-12, 1e-11]), "logrank_p": summarize([1e-9, 1e-8])}}
    document = {"data": {"description": "synthetic"}, "seeds": [0, 1], "methods": methods}
    page = report_html(document, {})
    assert _bold(page, "Cox proportional hazards") == ["nda"]  # by c_index_expected only
    # two-sided tests and the Cox model's own concordance are the same for a score and its negation: not ranked
    assert _bold(page, "Patients split") == []
    assert "0.000 ± 0.000" not in page
    assert "<td>2.10e-05 ± 3.72e-05</td>" in page  # p: 3 significant digits, not bold
    assert "<td>3.00e-04 (n=1 of 2)</td>" in page  # a seed without a log-rank p
    assert "<td><b>0.710 ± 0.020</b></td>" in page and "<td>0.710 ± 0.020</td>" in page  # expected / model's C


def test_imputation_report_never_bolds_the_reference_sets():
    from neurodiff.evaluation.longitudinal_benchmark import report_html

    methods = {"secondgram": {"auroc_stroke_enriched": summarize([0.70, 0.72]),
                              "auroc_stroke_all_generated": summarize([0.65, 0.66])},
               "ridge": {"auroc_stroke_enriched": summarize([0.60, 0.62]),
                         "auroc_stroke_all_generated": summarize([0.68, 0.69])},
               "reference": {"auroc_stroke_all_first": summarize([0.9, 0.9]),
                             "auroc_stroke_paired_real": summarize([0.8, 0.8])}}
    document = {"data": {"description": "synthetic"}, "seeds": [0, 1], "methods": methods}
    page = report_html(document)
    assert _bold(page, "Downstream") == ["secondgram", "ridge"]
    assert not re.search(r"<th>reference</th>[^\n]*<b>", page.split("Downstream")[1].split("</table>")[0])
