"""The report tables: which mean is bold."""

from neurodiff.evaluation.harmonization_benchmark import HIGHER_IS_BETTER, REFERENCES
from neurodiff.reporting.tables import methods_table


def _summary(mean):
    return {"mean": mean, "ci95": None, "n": 1}


def test_site_accuracy_is_best_nearest_chance_not_lowest():
    """Below chance is as much site information as above it: 0.30 beats 0.20 and 0.45 at chance 0.333."""
    methods = {name: {"site_accuracy": _summary(acc), "site_chance": _summary(1 / 3), "age_mae": _summary(mae)}
               for name, acc, mae in (("combat", 0.20, 4.0), ("ddae", 0.30, 5.0), ("raw", 0.45, 3.0))}
    table = methods_table(methods, ["site_accuracy", "age_mae"], "t", HIGHER_IS_BETTER, REFERENCES)
    assert "<b>0.300</b>" in table and "<b>0.200</b>" not in table
    assert "<b>3.000</b>" in table  # age MAE: lower is better
    assert "site_accuracy (best near site_chance)" in table and "age_mae ↓" in table
    # without references a metric of no direction is not ranked
    assert "<b>0.300</b>" not in methods_table(methods, ["site_accuracy"], "t", HIGHER_IS_BETTER)
