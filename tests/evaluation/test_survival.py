"""Survival analysis (NDA, METHODS.md §3) on cohorts simulated from a known Cox model: exponential
baseline hazard, log-HR -0.7 per unit of a N(0, 1) score (higher score → longer survival), uniform
censoring, and an inert age and sex; for the adjusted model a second cohort where age matters too.
Fixed seeds throughout."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceError
from lifelines.utils import concordance_index

from neurodiff.evaluation import survival as survival_module
from neurodiff.evaluation.survival import (
    SurvivalDataError,
    SurvivalWarning,
    check_survival_frame,
    cox_analysis,
    kaplan_meier_split,
    ks_split,
    survival_analysis,
)
from neurodiff.reporting.survival_figures import (
    plot_kaplan_meier,
    plot_score_distributions,
)

TRUE_LOG_HR = -0.7
TRUE_AGE_LOG_HR = 0.04  # per year
# Censoring uniform on (0, CENSOR_MAX) days against a baseline mean survival of 100 days: ~15 % censored.
# Heavier censoring (e.g. up to 300 days, ~33 %) truncates the death times of both groups alike and
# leaves the deaths-only KS test with little power (p < 1e-3 in only ~65 % of seeds there; 40/40 here).
CENSOR_MAX = 1000.0


def simulate(n: int = 400, seed: int = 0, log_hr: float = TRUE_LOG_HR, age_log_hr: float = 0.0):
    rng = np.random.default_rng(seed)
    score = rng.normal(size=n)
    age = rng.normal(60.0, 10.0, size=n)
    sex = rng.choice(["F", "M"], size=n)
    hazard = 0.01 * np.exp(log_hr * score + age_log_hr * (age - 60.0))
    death = rng.exponential(1.0 / hazard)
    censor = rng.uniform(0.0, CENSOR_MAX, size=n)
    return pd.DataFrame({
        "subject_id": [f"S{i:03d}" for i in range(n)],
        "score": score,
        "time": np.minimum(death, censor),
        "event": (death <= censor).astype(int),
        "age": age,
        "sex": sex,
    })


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return simulate()


@pytest.fixture(scope="module")
def result(cohort) -> dict:
    return survival_analysis(cohort, "score", covariates=["age", "sex"])


@pytest.fixture(scope="module")
def aged() -> pd.DataFrame:
    return simulate(seed=1, age_log_hr=TRUE_AGE_LOG_HR)


# ------------------------------------------------------------------------------------------ Cox
def test_cox_recovers_the_true_hazard_ratio(result):
    lo, hi = result["hr_ci"]
    assert lo < math.exp(TRUE_LOG_HR) < hi
    assert lo < result["hr"] < hi < 1.0
    assert result["p"] < 1e-3
    assert result["n"] == 400 and 100 < result["events"] < 400


def test_hr_per_sd_is_consistent_with_hr_and_sd(cohort, result):
    sd = cohort["score"].std(ddof=1)
    assert result["score_sd"] == pytest.approx(sd, rel=1e-12)
    assert result["hr_per_sd"] == pytest.approx(result["hr"] ** sd, rel=1e-9)
    assert result["hr"] == pytest.approx(result["hr_per_sd"] ** (1 / sd), rel=1e-9)
    for per_sd, per_unit in zip(result["hr_per_sd_ci"], result["hr_ci"]):
        assert per_sd == pytest.approx(per_unit ** sd, rel=1e-9)


def test_standardised_fit_matches_a_direct_lifelines_fit(cohort, result):
    direct = CoxPHFitter().fit(cohort[["time", "event", "score"]], "time", "event").summary.loc["score"]
    assert result["hr"] == pytest.approx(direct["exp(coef)"], rel=1e-5)
    assert result["hr_ci"][0] == pytest.approx(direct["exp(coef) lower 95%"], rel=1e-5)
    assert result["p"] == pytest.approx(direct["p"], rel=1e-3)


def test_tiny_scale_score_gives_the_same_inference(cohort, result):
    # like cosine similarities: 0.97 ± 0.01
    scaled = cohort.assign(score=0.97 + 0.01 * cohort["score"])
    small = cox_analysis(scaled, "score")
    assert small["p"] == pytest.approx(result["p"], rel=1e-6)
    assert small["c_index"] == pytest.approx(result["c_index"], abs=1e-12)
    assert small["hr_per_sd"] == pytest.approx(result["hr_per_sd"], rel=1e-6)
    assert small["ph_p"] == pytest.approx(result["ph_p"], rel=1e-6)
    assert small["score_sd"] == pytest.approx(0.01 * result["score_sd"], rel=1e-9)
    # per unit of the small score: 100 × the log-HR per unit of the original score
    assert small["log_hr"] == pytest.approx(100 * math.log(result["hr"]), rel=1e-6)
    assert small["hr"] == pytest.approx(math.exp(small["log_hr"]), rel=1e-9)
    assert small["hr"] < 1e-20


def test_c_index_orientation(cohort, result):
    time, event, score = cohort["time"], cohort["event"], cohort["score"]
    assert result["hr"] < 1
    # HR < 1: a higher score predicts longer survival, so the score itself is concordant with time
    assert result["c_index"] == pytest.approx(concordance_index(time, score, event), abs=1e-6)
    assert result["c_index"] > 0.6
    assert concordance_index(time, -score, event) < 0.4  # the opposite orientation
    # HR > 1 (the score negated): the model's c-index is that of minus the (negated) score
    negated = -score
    flipped = cox_analysis(cohort.assign(score=negated), "score")
    assert flipped["hr"] > 1
    assert flipped["c_index"] == pytest.approx(concordance_index(time, -negated, event), abs=1e-6)
    assert flipped["c_index"] == pytest.approx(result["c_index"], abs=1e-12)


def test_null_score_is_not_significant():
    null = simulate(seed=11, log_hr=0.0)
    out = cox_analysis(null, "score")
    assert out["p"] > 0.01
    assert out["hr_ci"][0] < 1.0 < out["hr_ci"][1]
    assert abs(out["c_index"] - 0.5) < 0.05


def test_proportional_hazards_hold_for_the_simulated_model(result):
    assert 0.0 <= result["ph_p"] <= 1.0
    assert result["ph_p"] > 0.01  # the simulation has proportional hazards


def test_adjusted_model_has_numeric_and_dummy_covariates(result, aged):
    assert set(result["adjusted"]["covariates"]) == {"age", "sex[M]"}
    assert result["adjusted"]["covariates"]["age"]["p"] > 0.01  # inert in the main cohort
    unadjusted = cox_analysis(aged, "score")
    adjusted = cox_analysis(aged, "score", ["age", "sex"])
    assert set(adjusted["covariates"]) == {"age", "sex[M]"}
    age = adjusted["covariates"]["age"]
    assert age["hr_ci"][0] < math.exp(TRUE_AGE_LOG_HR) < age["hr_ci"][1]  # per year, converted back
    assert age["p"] < 1e-3
    assert adjusted["covariates"]["sex[M]"]["hr_ci"][0] < 1.0 < adjusted["covariates"]["sex[M]"]["hr_ci"][1]
    # the score's effect adjusted for age: within 3 standard errors of the truth (a 95 % CI misses 1 in 20)
    lo, hi = (math.log(v) for v in adjusted["hr_ci"])
    assert abs(math.log(adjusted["hr"]) - TRUE_LOG_HR) < 3 * (hi - lo) / (2 * 1.959964)
    assert adjusted["c_index"] > unadjusted["c_index"] + 0.02  # age carries real information


def test_categorical_reference_level_is_the_first_category(cohort):
    recoded = cohort.assign(sex=pd.Categorical(cohort["sex"], categories=["M", "F"]))
    out = cox_analysis(recoded, "score", ["sex"])
    assert list(out["covariates"]) == ["sex[F]"]


def test_covariate_errors(cohort):
    with pytest.raises(SurvivalDataError, match=r"'sexx'.*did you mean 'sex'"):
        cox_analysis(cohort, "score", ["age", "sexx"])
    with pytest.raises(SurvivalDataError, match=r"'site'.*single level"):
        cox_analysis(cohort.assign(site="A"), "score", ["site"])
    gappy = cohort.copy()
    gappy.loc[7, "age"] = np.nan
    with pytest.raises(SurvivalDataError, match=r"'age'.*S007"):
        cox_analysis(gappy, "score", ["age"])


def test_site_codes_are_labels_whatever_their_type(cohort):
    """Site 1/2/3 entered as one linear term 'per unit of site' before; now as dummies, like text codes,
    with numbers ordered as numbers (site 2 before site 10)."""
    sites = np.resize([1, 2, 10], len(cohort))
    numeric = cox_analysis(cohort.assign(site=sites), "score", ["site"])
    text = cox_analysis(cohort.assign(site=[f"s{v:02d}" for v in sites]), "score", ["site"])
    assert list(numeric["covariates"]) == ["site[2]", "site[10]"]
    assert list(text["covariates"]) == ["site[s02]", "site[s10]"]
    assert numeric["hr"] == pytest.approx(text["hr"], rel=1e-9)
    floats = cox_analysis(cohort.assign(site=sites.astype(float)), "score", ["site"])  # as read from a CSV gap
    assert list(floats["covariates"]) == ["site[2]", "site[10]"]


def test_a_numeric_covariate_with_stray_text_is_named_not_dummy_coded(cohort):
    typo = cohort.assign(age=cohort["age"].round(0).astype(object))
    typo.loc[3, "age"] = "65+"
    with pytest.raises(SurvivalDataError, match=r"covariate column 'age' is numeric except for 1 entry: "
                                                r"subject_id S003 \(age='65\+'\)"):
        cox_analysis(typo, "score", ["age"])


def test_likelihood_ratio_p_is_reported_and_a_wald_p_that_lost_its_power_warns():
    """A score that nearly separates deaths from survivors: a huge standard error makes the Wald test
    useless (p large) while the likelihood-ratio test sees the effect."""
    rng = np.random.default_rng(0)
    event = rng.integers(0, 2, 40)
    frame = pd.DataFrame({"time": np.ceil(rng.exponential(300, 40)), "event": event,
                          "score": event + rng.normal(0, 0.01, 40)})
    with pytest.warns(SurvivalWarning, match="Wald p .* and likelihood-ratio p .* disagree"):
        out = survival_analysis(frame, "score", min_events=0)
    assert out["p"] > 0.05 and out["p_likelihood_ratio"] < 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("error", SurvivalWarning)
        agreeing = survival_analysis(simulate(seed=5), "score")  # both tiny: no warning
    assert agreeing["p_likelihood_ratio"] < 1e-6 and agreeing["p"] < 1e-6


def test_convergence_error_is_reraised_with_an_explanation(cohort, monkeypatch):
    def fail(self, *args, **kwargs):
        raise ConvergenceError("Convergence halted due to matrix inversion problems.")

    monkeypatch.setattr(CoxPHFitter, "fit", fail)
    with pytest.raises(SurvivalDataError, match="did not converge.*not a matter of scale"):
        cox_analysis(cohort, "score")


# --------------------------------------------------------------------------------- KM, log-rank, KS
def test_kaplan_meier_split_separates_the_groups(cohort, result):
    km = result["km"]
    assert km["threshold"] == pytest.approx(np.median(cohort["score"]))
    assert km["high"]["n"] + km["low"]["n"] == 400
    assert km["high"]["n"] == int((cohort["score"] > km["threshold"]).sum())
    assert km["high"]["events"] + km["low"]["events"] == result["events"]
    assert km["logrank_p"] < 1e-3 and result["logrank_p"] == km["logrank_p"]
    assert km["logrank_statistic"] > 10
    # high score → longer survival: the high curve lies above the low curve at the low group's median
    assert km["high"]["median_survival"] is None or km["high"]["median_survival"] > km["low"]["median_survival"]
    for group in ("high", "low"):
        curve = km[group]
        assert len(curve["timeline"]) == len(curve["survival"]) == len(curve["ci_lower"]) == len(curve["ci_upper"])
        assert np.all(np.diff(curve["survival"]) <= 1e-12)
        assert curve["survival"][0] == 1.0
    assert len(km["high"]["censored_times"]) == km["high"]["n"] - km["high"]["events"]


def test_kaplan_meier_threshold_and_empty_group(cohort):
    km = kaplan_meier_split(cohort, "score", threshold=1.0)
    assert km["split"] == "threshold" and km["high"]["n"] == int((cohort["score"] > 1.0).sum())
    with pytest.raises(SurvivalDataError, match="group empty"):
        kaplan_meier_split(cohort, "score", threshold=100.0)


def test_infinite_median_survival_is_none():
    # the high group's curve stops at 0.75 (one death, then only censored times)
    frame = pd.DataFrame({"score": [1, 2, 3, 4, 5, 6, 7, 8], "time": [1, 2, 3, 4, 50, 60, 70, 80],
                          "event": [1, 1, 1, 1, 1, 0, 0, 0]})
    km = kaplan_meier_split(frame, "score")
    assert km["high"]["median_survival"] is None
    assert km["low"]["median_survival"] == pytest.approx(2.0)
    json.dumps(km, allow_nan=False)


def test_ks_split(cohort, result):
    assert result["ks_p"] < 1e-3 and 0 < result["ks_statistic"] <= 1
    deaths = ks_split(cohort, "score")
    everyone = ks_split(cohort, "score", events_only=False)
    assert deaths["n_high"] + deaths["n_low"] == result["events"]
    assert everyone["n_high"] + everyone["n_low"] == 400
    assert deaths["ks_p"] == result["ks_p"] and deaths["note"] is None


def test_ks_undefined_with_fewer_than_two_deaths_in_a_group():
    frame = pd.DataFrame({"score": [1, 2, 3, 4, 5, 6], "time": [5, 6, 7, 8, 9, 10], "event": [1, 1, 1, 0, 0, 1]})
    out = ks_split(frame, "score")
    assert out["ks_statistic"] is None and out["ks_p"] is None
    assert out["n_high"] == 1 and out["n_low"] == 3
    assert "at least 2" in out["note"]
    json.dumps(out, allow_nan=False)


def test_survival_analysis_keys_and_json(cohort, result):
    expected = {"hr", "hr_ci", "p", "hr_per_sd", "hr_per_sd_ci", "score_sd", "c_index", "ph_p", "logrank_p",
                "ks_statistic", "ks_p", "n", "events", "threshold", "adjusted", "km"}
    assert expected <= set(result)
    json.loads(json.dumps(result, allow_nan=False))
    plain = survival_analysis(cohort, "score")
    assert "adjusted" not in plain
    assert plain["hr"] == result["hr"]  # the flat numbers are the unadjusted model


# --------------------------------------------------------------------------------------- checks
def test_check_converts_types_and_accepts_flag_spellings():
    frame = pd.DataFrame({"subject_id": ["a", "b", "c", "d"], "time": ["10", "20.5", 30, 40],
                          "event": [True, False, "1", "0"], "score": [1, 2, 3, 4]})
    out = check_survival_frame(frame, "score", min_events=0)
    assert out["time"].dtype == np.float64 and out["time"].tolist() == [10.0, 20.5, 30.0, 40.0]
    assert out["event"].dtype == np.int64 and out["event"].tolist() == [1, 0, 1, 0]
    assert out["score"].dtype == np.float64
    assert frame["event"].tolist() == [True, False, "1", "0"]  # a copy: the input is untouched
    floats = frame.assign(event=[1.0, 0.0, 1.0, 0.0])
    assert check_survival_frame(floats, "score", min_events=0)["event"].tolist() == [1, 0, 1, 0]


def _base() -> pd.DataFrame:
    return pd.DataFrame({
        "subject_id": ["P1", "P2", "P3", "P4", "P5", "P6"],
        "time": [100.0, 200.0, 300.0, 400.0, 500.0, 600.0],
        "event": [1, 0, 1, 1, 0, 1],
        "score": [0.9, 0.8, 0.95, 0.7, 0.85, 0.75],
    })


def _with(column, values):
    frame = _base()
    frame[column] = pd.Series(values, dtype=object)
    return frame


@pytest.mark.parametrize(
    ("frame", "pattern"),
    [
        (_base().rename(columns={"time": "tme"}), r"'time'.*did you mean 'tme'"),
        (_with("time", [100, None, 300, 400, 500, 600]), r"'time'.*missing.*P2"),
        (_with("time", [100, "soon", 300, 400, 500, 600]), r"'time'.*non-numeric.*P2 \(time='soon'\)"),
        (_with("time", [100, 200, -3, 0, 500, 600]), r"'time'.*> 0.*P3 \(time=-3\), P4 \(time=0\)"),
        (_with("time", [100, 200, 300, np.inf, 500, 600]), r"'time'.*infinite.*P4"),
        (_with("event", [1, 0, None, 1, 0, 1]), r"'event'.*missing.*P3"),
        (_with("event", [1, 0, 2, 1, 0, 1]), r"'event'.*0/1.*P3 \(event=2\)"),
        (_with("event", [1, 0, "yes", 1, 0, 1]), r"'event'.*0/1.*P3 \(event='yes'\)"),
        (_with("score", [0.9, np.nan, 0.95, 0.7, 0.85, 0.75]), r"'score'.*missing.*P2"),
        (_with("score", [0.9, 0.8, -np.inf, 0.7, 0.85, 0.75]), r"'score'.*infinite.*P3"),
        (_with("score", [0.5] * 6), r"'score'.*constant"),
        (_with("event", [1, 0, 0, 0, 0, 0]), r"'event'.*1 events.*at least 2"),
        (_base().iloc[:2], r"2 rows.*at least 3"),
    ],
    ids=["missing-column", "missing-time", "non-numeric-time", "non-positive-time", "infinite-time",
         "missing-event", "event-2", "event-text", "missing-score", "infinite-score", "constant-score",
         "one-event", "two-rows"],
)
def test_check_errors_name_the_column_and_subjects(frame, pattern):
    with pytest.raises(SurvivalDataError, match=pattern):
        check_survival_frame(frame, "score", min_events=0)


def test_check_names_at_most_five_subjects():
    frame = pd.DataFrame({"subject_id": [f"X{i}" for i in range(9)], "time": [-1.0] * 8 + [5.0],
                          "event": [1] * 9, "score": np.arange(9.0)})
    with pytest.raises(SurvivalDataError, match=r"8 entries.*X4 \(time=-1.0\) and 3 more") as info:
        check_survival_frame(frame, "score")
    assert "X5" not in str(info.value)


def test_check_names_rows_without_a_subject_column():
    frame = _base().drop(columns="subject_id").set_index(pd.Index(["r1", "r2", "r3", "r4", "r5", "r6"]))
    frame.loc["r5", "time"] = -2.0
    with pytest.raises(SurvivalDataError, match=r"row r5 \(time=-2.0\)"):
        check_survival_frame(frame, "score", min_events=0)


def test_few_events_warn_once():
    with pytest.warns(SurvivalWarning, match=r"only 4 events.*unreliable") as record:
        check_survival_frame(_base(), "score")
    assert len(record) == 1
    frame = simulate(n=60, seed=3)
    n_events = int(frame["event"].sum())
    with pytest.warns(SurvivalWarning, match=rf"only {n_events} events") as record:
        survival_analysis(frame, "score", min_events=n_events + 1)
    assert sum(issubclass(w.category, SurvivalWarning) for w in record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", SurvivalWarning)
        check_survival_frame(_base(), "score", min_events=4)  # exactly enough: no warning


def test_non_dataframe_is_rejected():
    with pytest.raises(TypeError, match="DataFrame"):
        check_survival_frame({"time": [1, 2, 3]})


def test_module_exports():
    assert set(survival_module.__all__) >= {"check_survival_frame", "cox_analysis", "kaplan_meier_split",
                                             "ks_split", "survival_analysis"}


# -------------------------------------------------------------------------------------- figures
def test_plot_kaplan_meier(result):
    ax = plot_kaplan_meier(result["km"])
    assert len(ax.get_lines()) == 4  # two curves and two censor-tick markers
    assert ax.get_legend().get_title().get_text().startswith("log-rank p = ")
    assert len(ax.collections) == 2  # the CI bands
    assert ax.get_xlabel() == "time (days)"
    ax.figure.canvas.draw()  # renders with the Agg canvas


def test_plot_kaplan_meier_after_json_round_trip_into_given_axes(result):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    km = json.loads(json.dumps(result["km"], allow_nan=False))
    fig = Figure()
    FigureCanvasAgg(fig)  # the Agg canvas, no pyplot state
    ax = fig.add_subplot(1, 1, 1)
    out = plot_kaplan_meier(km, ax=ax, title="ALS", time_unit="months", censor_ticks=False, ci=False)
    assert out is ax
    assert len(ax.get_lines()) == 2 and len(ax.collections) == 0
    assert ax.get_title() == "ALS" and ax.get_xlabel() == "time (months)"
    with pytest.raises(ValueError, match="'low' and 'high'"):
        plot_kaplan_meier({"high": km["high"]})


def test_plot_score_distributions():
    rng = np.random.default_rng(5)
    groups = {"control": rng.normal(0.97, 0.005, 80), "patient": rng.normal(0.95, 0.01, 40)}
    ax = plot_score_distributions(groups, title="similarity", xlabel="cosine similarity")
    assert len(ax.get_lines()) == 2  # one KDE per group
    assert ax.get_xlabel() == "cosine similarity"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("control (n=80") and labels[1].startswith("patient (n=40")
    assert len(ax.patches) > 0  # the histograms
    ax.figure.canvas.draw()
    with pytest.raises(ValueError, match="'patient' has no scores"):
        plot_score_distributions({"control": [0.9, 0.95], "patient": []})
