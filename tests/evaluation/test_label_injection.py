import numpy as np
import pandas as pd
import pytest

from neurodiff.evaluation.label_injection import label_injection, swapped_covariates


def _cohort(n=240, k=12, seed=0):
    """Features = age part + sex part + subject noise, so the raw probes read both."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"age": rng.uniform(20, 80, n), "sex": rng.choice(["F", "M"], n),
                          "site": rng.choice(["a", "b"], n), "subject_id": [f"s{i}" for i in range(n)]})
    w_age, w_sex = rng.normal(size=k), rng.normal(size=k)

    def labelled(f):
        return np.outer((f["age"].to_numpy() - 50) / 17, w_age) + np.outer(f["sex"].eq("M").to_numpy(), w_sex) * 1.5

    noise = rng.normal(size=(n, k))
    return frame, labelled, noise


def test_swapped_covariates_moves_age_and_sex_together_and_keeps_the_rest():
    frame, _, _ = _cohort(n=20)
    before = frame.copy()
    swapped = swapped_covariates(frame, seed=3)
    pd.testing.assert_frame_equal(frame, before)  # input untouched
    assert swapped["site"].equals(frame["site"]) and swapped["subject_id"].equals(frame["subject_id"])
    pairs = set(zip(frame["age"], frame["sex"]))
    assert set(zip(swapped["age"], swapped["sex"])) == pairs and not swapped["age"].equals(frame["age"])
    with pytest.raises(ValueError, match="sex"):
        swapped_covariates(frame.drop(columns="sex"))


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_injection_measures_how_far_the_output_follows_the_given_labels(fraction):
    frame, labelled, noise = _cohort()
    swapped = swapped_covariates(frame, seed=1)
    raw = labelled(frame) + noise
    # a harmoniser that keeps the image but draws `fraction` of the given labels' anatomy over it
    harmonised = raw.copy()
    given = raw + fraction * (labelled(swapped) - labelled(frame))
    values = label_injection(raw, harmonised, given, frame, swapped, seed=0)
    assert values["age_injection"] == pytest.approx(fraction, abs=0.12)
    assert values["sex_injection"] == pytest.approx(fraction, abs=0.12)


def test_an_output_that_ignores_the_labels_has_zero_injection_even_when_it_changes_the_image():
    frame, labelled, noise = _cohort()
    swapped = swapped_covariates(frame, seed=1)
    raw = labelled(frame) + noise
    moved = raw * 0.7 + 0.3  # a site shift: the same whichever labels are given
    values = label_injection(raw, moved, moved.copy(), frame, swapped)
    assert values == {"age_injection": 0.0, "sex_injection": 0.0, "age_injection_years": 0.0,
                      "sex_injection_probability": 0.0}


def test_injection_checks_its_inputs():
    frame, labelled, noise = _cohort(n=30)
    raw = labelled(frame) + noise
    with pytest.raises(ValueError, match="width"):
        label_injection(raw, raw, raw[:, :5], frame, swapped_covariates(frame))
    with pytest.raises(ValueError, match="rows"):
        label_injection(raw, raw, raw, frame.iloc[:10], swapped_covariates(frame))


def test_with_a_probe_that_reads_nothing_the_unnormalised_forms_stay_finite_and_small():
    """Raw features without any age or sex in them: the normalised age value is NaN and the normalised sex
    value is noise divided by a separation near 0 (amplified far above 1). The unnormalised forms stay
    finite and small: a probe that reads no age or sex also sees none written into the output."""
    frame, labelled, noise = _cohort()
    swapped = swapped_covariates(frame, seed=1)
    follows = noise + labelled(swapped) - labelled(frame)  # an output that draws the given labels' anatomy
    values = label_injection(noise, noise, follows, frame, swapped, seed=0)
    assert np.isnan(values["age_injection"]) and values["sex_injection"] > 1
    assert 0 < abs(values["age_injection_years"]) < 0.05 and 0 < abs(values["sex_injection_probability"]) < 0.1
    ignores = label_injection(noise, noise * 0.5, noise * 0.5, frame, swapped)
    assert ignores["age_injection_years"] == 0.0 and ignores["sex_injection_probability"] == 0.0


@pytest.mark.parametrize("fraction", [0.5, 1.0])
def test_the_unnormalised_forms_are_the_normalised_ones_times_the_raw_scale(fraction):
    frame, labelled, noise = _cohort()
    swapped = swapped_covariates(frame, seed=1)
    raw = labelled(frame) + noise
    given = raw + fraction * (labelled(swapped) - labelled(frame))
    values = label_injection(raw, raw.copy(), given, frame, swapped, seed=0)
    # a strong raw age probe reads close to one year per year: the years form is near the normalised one
    assert values["age_injection_years"] == pytest.approx(values["age_injection"], rel=0.35)
    assert 0 < values["sex_injection_probability"] < values["sex_injection"]  # P(M) separation is below 1
