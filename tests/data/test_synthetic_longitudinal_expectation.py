"""expected_change: the Monte Carlo expectation of a group's change with vs without a diagnosis.

It repeats the generator's private steps, so these tests are its guard: the subjects and pairs it draws
must be the table's, and the planted rate must show up where the generator puts it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from neurodiff.data.synthetic_longitudinal import (
    EVALUATION_PREVALENCE,
    LongitudinalConfig,
    generate_subjects,
    planted_truth,
)
from neurodiff.data.synthetic_longitudinal_expectation import expected_change

SNC = ("vol_lh_snc", "vol_rh_snc")
GROUP_KEYS = {"draws", "mean_change_mm3", "se", "age_visit1", "group_visit1"}
# Large tissue volumes that dementia gives its +30 % rate and only a 0.1 SD baseline shift: their mean has
# little measurement noise next to its change, so the case ordering shows with a few thousand draws.
TISSUE = ("vol_lh_cerebral_white_matter", "vol_rh_cerebral_white_matter", "vol_lh_cerebellum_cortex",
          "vol_rh_cerebellum_cortex", "vol_lh_thalamus", "vol_rh_thalamus")
DEMENTIA = LongitudinalConfig.quick(prevalence={"dementia": 0.15})
SEEDS, REPLICATES, CONTROLS = 8, 3, 600


@pytest.fixture(scope="module")
def dementia() -> dict:
    return expected_change(DEMENTIA, TISSUE, "dementia", seeds=SEEDS, replicates=REPLICATES, controls=CONTROLS)


def test_output_keys_and_finite_values(dementia):
    assert set(dementia) == {"seeds", "replicates_per_case", "controls_per_seed", "with", "with_no_extra_rate",
                             "without", "cases_per_table"}
    assert (dementia["seeds"], dementia["replicates_per_case"], dementia["controls_per_seed"]) == (
        SEEDS, REPLICATES, CONTROLS)
    for key in ("with", "with_no_extra_rate", "without"):
        assert set(dementia[key]) == GROUP_KEYS, key
        assert dementia[key]["draws"] > 500, key
        assert all(np.isfinite(v) for v in dementia[key].values()), key
        assert dementia[key]["se"] > 0, key


def test_subjects_are_the_tables(dementia):
    """The cases and controls are the paired subjects of the tables with seeds 0..SEEDS-1."""
    cases, non_cases, case_ages = 0, 0, []
    for seed in range(SEEDS):
        subjects = generate_subjects(dataclasses.replace(DEMENTIA, seed=seed))
        paired = subjects[subjects["paired"] == 1]
        is_case = paired["dementia"] == 1
        cases += int(is_case.sum())
        non_cases += min(CONTROLS, int((~is_case).sum()))
        case_ages.append(paired.loc[is_case, "age"].to_numpy())
    assert dementia["with"]["draws"] == dementia["with_no_extra_rate"]["draws"] == REPLICATES * cases
    assert dementia["without"]["draws"] == non_cases
    assert dementia["cases_per_table"] == pytest.approx(cases / SEEDS)
    assert dementia["with"]["age_visit1"] == pytest.approx(np.concatenate(case_ages).mean(), rel=1e-12)


def test_cases_change_more_and_the_counterfactual_lies_between(dementia):
    with_, no_rate, without = (dementia[k] for k in ("with", "with_no_extra_rate", "without"))
    # the counterfactual redraws the same cases with the same random numbers: visit 1 is identical
    assert no_rate["group_visit1"] == with_["group_visit1"] and no_rate["age_visit1"] == with_["age_visit1"]
    assert with_["age_visit1"] > without["age_visit1"] + 3  # dementia cases are older ...
    # ... so even without the extra rate they shrink faster (the accelerating age curve)
    assert with_["mean_change_mm3"] < no_rate["mean_change_mm3"] < without["mean_change_mm3"] < 0
    assert without["mean_change_mm3"] - no_rate["mean_change_mm3"] > 3 * without["se"]
    # the extra rate multiplies the cases' change by 1 + rate (the planted +30 % for these features)
    (rate,) = _dementia_rates()
    assert with_["mean_change_mm3"] / no_rate["mean_change_mm3"] == pytest.approx(1 + rate, abs=0.1)


def _dementia_rates() -> set[float]:
    """Dementia's extra rate for the TISSUE features, from the planted truth (one value: 0.3)."""
    effects = planted_truth(LongitudinalConfig())["effects"]
    return {e["extra_rate_fraction"] for e in effects for col in TISSUE
            if e["label"] == "dementia" and col in e["features"]}


def test_deterministic_for_a_seed():
    config = LongitudinalConfig.quick(prevalence=EVALUATION_PREVALENCE)
    run = {"seeds": 1, "replicates": 2, "controls": 50}
    first = expected_change(config, SNC, "parkinsonism", **run)
    assert first["with"]["draws"] > 0
    assert expected_change(config, SNC, "parkinsonism", **run) == first
    other = expected_change(config, SNC, "parkinsonism", **run, seed=1)
    assert other["with"]["mean_change_mm3"] != first["with"]["mean_change_mm3"]
    assert other["with"]["draws"] == first["with"]["draws"]  # the same tables, other feature draws


def test_single_column_and_no_cases():
    config = LongitudinalConfig(n_subjects=60, n_paired=20, n_features=32)
    subjects = generate_subjects(config)
    assert not ((subjects["paired"] == 1) & (subjects["multiple_sclerosis"] == 1)).any()  # precondition
    out = expected_change(config, "vol_lh_snc", "multiple_sclerosis", seeds=1, replicates=2, controls=5)
    assert out["with"]["draws"] == out["with_no_extra_rate"]["draws"] == 0
    assert np.isnan(out["with"]["mean_change_mm3"]) and np.isnan(out["with"]["se"])
    assert out["without"]["draws"] == 5 and np.isfinite(out["without"]["mean_change_mm3"])
    assert out["cases_per_table"] == 0


@pytest.mark.parametrize(("columns", "label", "counts", "named"), [
    (("vol_lh_snc", "vol_lh_nowhere"), "parkinsonism", {}, "vol_lh_nowhere"),
    ((), "parkinsonism", {}, "columns"),
    (SNC, "died", {}, "'died'"),
    (SNC, "age", {}, "'age'"),
    (SNC, "Parkinsonism", {}, "'Parkinsonism'"),
    (SNC, "parkinsonism", {"seeds": 0}, "seeds must be a positive integer, got 0"),
    (SNC, "parkinsonism", {"replicates": -1}, "replicates must be a positive integer, got -1"),
    (SNC, "parkinsonism", {"controls": 0}, "controls must be a positive integer, got 0"),
    (SNC, "parkinsonism", {"seeds": 1.5}, "seeds must be a positive integer, got 1.5"),
])
def test_bad_input_names_the_value(columns, label, counts, named):
    run = {"seeds": 1, "replicates": 1, "controls": 1, **counts}
    with pytest.raises(ValueError, match=named):
        expected_change(LongitudinalConfig.quick(), columns, label, **run)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="n_paired"):
        expected_change(LongitudinalConfig(n_subjects=10, n_paired=20), SNC, "parkinsonism", seeds=1,
                        replicates=1, controls=1)
