"""The report tables: which mean is bold, and how cells are written."""

import pytest

from neurodiff.evaluation.harmonization_benchmark import HIGHER_IS_BETTER, REFERENCES
from neurodiff.reporting.results import add_seed_metrics, results_document
from neurodiff.reporting.tables import (
    best_methods,
    format_cell,
    format_p,
    methods_table,
    ranking_losses,
)


def _summary(mean):
    return {"mean": mean, "ci95": None, "n": 1}


def test_site_accuracy_is_best_nearest_chance_not_lowest():
    """Below chance is as much site information as above it: 0.30 beats 0.20 and 0.45 at chance 0.333."""
    methods = {name: {"site_accuracy": _summary(acc), "site_chance": _summary(1 / 3), "age_mae_transfer": _summary(mae)}
               for name, acc, mae in (("combat", 0.20, 4.0), ("ddae", 0.30, 5.0), ("raw", 0.45, 3.0))}
    table = methods_table(methods, ["site_accuracy", "age_mae_transfer"], "t", HIGHER_IS_BETTER, REFERENCES)
    assert "<b>0.300</b>" in table and "<b>0.200</b>" not in table
    assert "<b>3.000</b>" in table  # age MAE: lower is better
    assert "site_accuracy (best near site_chance)" in table and "age_mae_transfer ↓" in table
    # without references a metric of no direction is not ranked
    assert "<b>0.300</b>" not in methods_table(methods, ["site_accuracy"], "t", HIGHER_IS_BETTER)


def _cell(*values):
    from neurodiff.reporting.results import summarize

    return summarize(list(values))


def _bold_rows(table: str) -> list[str]:
    """The method of every row with a bold cell, in order."""
    import re

    return [m.group(1) for row in table.split("<tr>") if "<b>" in row
            for m in [re.match(r"<th>([^<]*)</th>", row)] if m]


def test_unranked_rows_are_shown_but_never_bold():
    """raw keeps the images: its variability ratio is exactly 1, which must not win the column."""
    methods = {"ddae": {"within_site_variability": _cell(0.97, 0.99)},
               "combat": {"within_site_variability": _cell(1.05, 1.07)},
               "raw": {"within_site_variability": _cell(1.0, 1.0)}}
    table = methods_table(methods, ["within_site_variability"], "t", HIGHER_IS_BETTER, REFERENCES,
                          unranked=("raw",))
    assert "<th>raw</th><td>1.000 ± 0.000</td>" in table
    assert _bold_rows(table) == ["ddae"]
    assert _bold_rows(methods_table(methods, ["within_site_variability"], "t", HIGHER_IS_BETTER,
                                    REFERENCES)) == ["raw"]  # without the argument raw is ranked like a method


def test_p_values_keep_three_significant_digits():
    methods = {"nda": {"p": _cell(2e-6, 4e-5, 1e-4), "c_index": _cell(0.7, 0.72, 0.71)},
               "cvae": {"p": _cell(0.04, 0.05, 0.03), "c_index": _cell(0.6, 0.61, 0.6)}}
    table = methods_table(methods, ["p", "c_index"], "t", {"p": False, "c_index": True}, p_values=("p",))
    assert "0.000" not in table
    assert "<b>4.73e-05 ± 5.59e-05</b>" in table and "0.0400 ± 0.0113" in table
    assert "0.710 ± 0.011" in table  # other metrics keep their 3 decimals
    assert format_p(0.5) == "0.500" and format_p(0.0123) == "0.0123" and format_p(0.00099) == "9.90e-04"
    assert format_p(0.0) == "0.00" and format_p(1.0) == "1.00"


def test_cell_says_how_many_seeds_gave_a_value():
    assert format_cell(_cell(1.0, 2.0, float("nan"), float("nan"), float("nan"))) == "1.500 ± 0.980 (n=2 of 5)"
    assert format_cell(_cell(1.0, float("inf"))) == "1.000 (n=1 of 2)"
    assert format_cell(_cell(1.0, 2.0)) == "1.500 ± 0.980"  # every seed: the cell as before
    assert format_cell(_cell(float("nan"))) == "–"
    assert format_cell({"mean": 0.5, "ci95": None, "n": 1}) == "0.500"  # no per-seed values: n unknown


def test_ties_are_all_bold_and_a_constant_column_has_none():
    methods = {"a": {"m": _cell(0.5, 0.5)}, "b": {"m": _cell(0.8, 0.8)}, "c": {"m": _cell(0.8, 0.8)}}
    assert _bold_rows(methods_table(methods, ["m"], "t", {"m": True})) == ["b", "c"]
    assert _bold_rows(methods_table(methods, ["m"], "t", {"m": False})) == ["a"]
    constant = {"a": {"m": _cell(0.5, 0.5)}, "b": {"m": _cell(0.5, 0.5)}}
    for direction in (True, False):
        assert _bold_rows(methods_table(constant, ["m"], "t", {"m": direction})) == []


def test_best_methods_tolerance_and_exclusions():
    assert best_methods({"a": 1.0, "b": 1.0 + 1e-12, "c": 2.0}) == {"a", "b"}
    assert best_methods({"a": 1e-10, "b": 5e-10}) == {"a"}  # small p-values do not tie
    assert best_methods({"a": 1.0, "b": 1.0}) == set()
    assert best_methods({"a": 1.0}) == set()  # nothing to compare with
    assert best_methods({"a": 0.0, "b": 1.0, "c": 2.0}, unranked=("a",)) == {"b"}
    assert best_methods({"a": float("nan"), "b": None, "c": 1.0, "d": 2.0}) == {"c"}
    assert ranking_losses({"a": 0.3, "b": 0.5}, None, {"a": 0.4}) == {"a": pytest.approx(0.1)}
    assert ranking_losses({"a": 0.3}, None) == {}


def test_per_seed_values_line_up_with_the_seeds_when_a_seed_lacks_a_metric():
    per_seed: dict = {}
    seeds = [{"a": {"x": 1.0, "y": 5.0}}, {"a": {"x": 2.0}}, {"a": {"x": 3.0, "y": 7.0}, "b": {"x": 4.0}}]
    for index, metrics in enumerate(seeds):
        add_seed_metrics(per_seed, metrics, index, len(seeds))
    document = results_document("t", {}, [0, 1, 2], per_seed)
    assert document["methods"]["a"]["y"]["values"] == [5.0, None, 7.0]
    assert document["methods"]["a"]["y"]["n"] == 2 and document["methods"]["a"]["y"]["mean"] == 6.0
    assert document["methods"]["b"]["x"]["values"] == [None, None, 4.0]
