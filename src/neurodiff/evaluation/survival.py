"""Survival analysis of a deviation score (NDA, METHODS.md §3 "Survival").

Input is one table (a DataFrame), one row per subject, with a survival ``time`` (days; > 0), an
``event`` flag (1 = died, 0 = censored: alive at the last contact), a numeric ``score`` column (e.g. the
cosine similarity of a patient's latent to the mean healthy latent) and optionally covariates (``age``,
``sex``, ``site`` ...). Column names are arguments; ``subject_id`` (when present) is only used to name
the offending subjects in error messages (the row labels otherwise). Built on lifelines (Cox model,
Kaplan–Meier, log-rank test, proportional-hazards test) and scipy (Kolmogorov–Smirnov test).

Functions
---------
- :func:`check_survival_frame` (from :mod:`neurodiff.evaluation.survival_checks`)  validates and converts
  the table (float time, int event, float score); every problem raises :class:`SurvivalDataError`
  naming the column and up to 5 subjects with their values; fewer than ``min_events`` deaths warns (:class:`SurvivalWarning`): with few events the hazard
  ratios and their intervals are unreliable (a common rule of thumb asks ≥ 10 events per term).
- :func:`cox_analysis`  Cox proportional hazards of time on the score (plus covariates):
  hazard ratio per unit of the score with 95 % CI and Wald p, per SD of the score, the model's
  concordance index and a proportional-hazards test.
- :func:`kaplan_meier_split`  Kaplan–Meier curves of the subjects above / at-or-below the median score
  (or a given threshold) and a log-rank test between the two groups.
- :func:`ks_split`  two-sample Kolmogorov–Smirnov test on the survival times of the same two groups.
- :func:`survival_analysis`  all of the above in one flat, JSON-able dict (the NDA report's numbers).

Conventions
-----------
*Orientation.* ``hr`` is the hazard ratio for one unit **increase** of the score: for a similarity to
the healthy mean, HR < 1 means "closer to healthy → lower hazard → longer survival" (the paper: 0.73).
``c_index`` is lifelines' ``concordance_index_`` of the fitted model, i.e. the concordance of the
model's predicted survival ordering (minus the partial hazard) with the observed times: 0.5 is chance,
1 perfect, whatever the sign of the effect. For a score alone with HR < 1 it equals
``lifelines.utils.concordance_index(time, score, event)``; with HR > 1 it equals the same with
``-score``.

*Scale.* Scores such as cosine similarities can live in [0.95, 0.99] (SD ≈ 0.01): fitted raw, the
coefficient per unit is huge (tens) and Newton steps from 0 can fail. The model is therefore always
fitted on the standardised score z = (score − mean) / SD (SD with ddof = 1, reported as ``score_sd``),
which only re-parametrises the model (same likelihood, same p, same concordance); the per-unit results
are converted back exactly: log HR per unit = log HR per SD / SD, so ``hr = hr_per_sd ** (1 / sd)``
and likewise for the CI bounds (Wald intervals map through the same linear change). Numeric
covariates are standardised and converted back the same way. A per-unit HR of a tiny-scale score can
be astronomically small or large; ``log_hr`` is reported beside it, and a bound that overflows a
float becomes ``None``.

*Covariates.* Numeric columns (and booleans, as 0/1) enter as they are (per unit); text or categorical
columns, and ``site`` and ``sex`` whatever their type (site codes 1/2/3 are labels, not amounts), are
dummy-coded with the first level (numbers in numeric order, then text sorted, or the categorical's first
category) as reference and dropped, giving terms named ``"sex[M]"``, ``"site[B]"``, ``"site[2]"``. A text
column whose values are mostly numbers (an age column holding one ``"65+"``) is an error naming the
entries that are not numbers, not 16 dummy terms. A missing
covariate column, a missing value or a covariate with a single value raises SurvivalDataError.

*Wald and likelihood ratio.* ``p`` is the Wald p-value, as the paper reports. When the score nearly
separates the deaths from the survivors the Wald test loses its power (a huge standard error), so the
unadjusted analysis also reports ``p_likelihood_ratio`` (lifelines' likelihood-ratio test of the
score-only model) and warns (SurvivalWarning) when one is below 0.05 and the other is not, more than a
factor of 10 apart.

*Proportional hazards.* ``ph_p`` is the p-value of lifelines' ``proportional_hazard_test`` (scaled
Schoenfeld residuals against the rank of time, ``time_transform="rank"``) for the score: a small value
means the hazard ratio changes over time, so a single HR summarises the effect poorly.

*Split.* Kaplan–Meier and KS use the same split: ``high`` = score > threshold (default: the median
score), ``low`` = the rest; both groups must be non-empty.

*KS on deaths only.* By default the KS test compares the times of the subjects who died
(``events_only=True``): a censored time is not a survival time, only a lower bound of it (e.g. the date
the study closed), so mixing censored times in would compare follow-up lengths as much as survival.
With few deaths the test has little power, and heavy censoring costs it power too (censoring truncates
the death times of both groups alike: in simulations with a third of the subjects censored it misses
effects the log-rank test finds easily); with fewer than 2 times in a group it is undefined, and the
statistic and p are ``None`` with a ``note`` saying why. ``events_only=False`` compares all observed
times.

*JSON.* Every returned dict holds only Python floats / ints / str / lists / dicts / None, with
non-finite numbers (an infinite median survival when a group's curve never drops to 0.5, an undefined
KS test) written as ``None``, so ``json.dumps(result, allow_nan=False)`` works.

>>> result = survival_analysis(table, "similarity", covariates=["age", "sex"])
>>> result["hr"], result["hr_ci"], result["p"], result["c_index"], result["adjusted"]["hr"]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from neurodiff.data.covariates import category_key
from neurodiff.evaluation.survival_checks import (
    SurvivalDataError,
    SurvivalWarning,
    _missing_mask,
    _offenders,
    _require_column,
    _subject_ids,
    check_survival_frame,
)

__all__ = [
    "SurvivalDataError",
    "SurvivalWarning",
    "check_survival_frame",
    "cox_analysis",
    "kaplan_meier_split",
    "ks_split",
    "survival_analysis",
]

#: Covariates dummy-coded whatever their type: site 1/2/3 are labels, not amounts (sex 0/1 gives the same
#: model either way, named "sex[1]").
ALWAYS_CATEGORICAL = frozenset({"site", "sex"})
#: Wald and likelihood-ratio p-values of the score this far apart, on either side of 0.05, warn.
P_DISAGREEMENT = 10.0
# internal column names of the design matrix given to lifelines (user names may clash with anything)
_T, _E, _SCORE = "__time__", "__event__", "__score__"


# -------------------------------------------------------------------------------------- helpers
def _float(value: Any) -> float | None:
    """A Python float, or None when not finite (JSON has no NaN / inf)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _exp(log_value: float) -> float | None:
    try:
        return _float(math.exp(log_value))
    except OverflowError:
        return None


def _floats(values: Any) -> list[float | None]:
    return [_float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def _column_list(covariates: Hashable | Sequence[Hashable] | None) -> list[Hashable]:
    if covariates is None:
        return []
    if isinstance(covariates, str) or not isinstance(covariates, Sequence):
        return [covariates]
    return list(covariates)


def _covariate_terms(
    frame: pd.DataFrame, covariates: list[Hashable], ids: np.ndarray, kind: str
) -> tuple[pd.DataFrame, dict[str, tuple[str, float]]]:
    """Design columns for the covariates and, per internal column, (term name, scale to per unit).

    Numeric covariates are standardised (scale = SD); dummies of text covariates are left as 0/1.
    """
    columns: dict[str, np.ndarray] = {}
    terms: dict[str, tuple[str, float]] = {}
    for name in covariates:
        _require_column(frame, name, "covariate")
        series = frame[name]
        missing = _missing_mask(series)
        if missing.any():
            raise SurvivalDataError(f"covariate column {name!r} has missing values, "
                                    f"{_offenders(ids, kind, series, missing)}")
        categorical = str(name) in ALWAYS_CATEGORICAL
        if not categorical and not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
            _refuse_stray_text(series, name, ids, kind)
        if not categorical and (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
            values = series.to_numpy(dtype=np.float64)
            bad = ~np.isfinite(values)
            if bad.any():
                raise SurvivalDataError(f"covariate column {name!r} has infinite values, "
                                        f"{_offenders(ids, kind, series, bad)}")
            sd = float(values.std(ddof=1))
            if not sd > 0:
                raise SurvivalDataError(f"covariate column {name!r} is constant ({float(values[0]):g}): its effect "
                                        "cannot be estimated; leave it out")
            key = f"__cov{len(columns)}__"
            columns[key] = (values - values.mean()) / sd
            terms[key] = (str(name), sd)
            continue
        if isinstance(series.dtype, pd.CategoricalDtype):
            present = set(series.astype(str))
            levels = [str(c) for c in series.cat.categories if str(c) in present]
        else:
            # as the encodings compare categories: site 2.0 is "2", " A" is "A"
            series = series.map(category_key)
            levels = sorted(set(series), key=_level_order)
        if len(levels) < 2:
            raise SurvivalDataError(f"covariate column {name!r} has a single level ({levels[0]!r}): its effect "
                                    "cannot be estimated; leave it out")
        text = series.astype(str).to_numpy()
        for level in levels[1:]:  # the first level is the reference
            key = f"__cov{len(columns)}__"
            columns[key] = (text == level).astype(np.float64)
            terms[key] = (f"{name}[{level}]", 1.0)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(frame))), terms


def _level_order(level: str) -> tuple:
    """Numbers in numeric order (site 2 before site 10), then text in alphabetical order."""
    number = _float(level)
    return (0, number, level) if number is not None else (1, 0.0, level)


def _refuse_stray_text(series: pd.Series, name: Hashable, ids: np.ndarray, kind: str) -> None:
    """A text column whose values are mostly numbers is a numeric covariate with typos ("65+", "n/a"):
    dummy-coding it would give one term per distinct value, so name the entries that are not numbers."""
    numeric = pd.to_numeric(series, errors="coerce")
    parsed = numeric.notna().to_numpy(dtype=bool)
    if parsed.mean() >= 0.5 and not parsed.all():
        raise SurvivalDataError(f"covariate column {name!r} is numeric except for "
                                f"{_offenders(ids, kind, series, ~parsed)}: fix those values (or make the column "
                                "text throughout if it really is categorical)")


def _fit_cox(design: pd.DataFrame):
    """A fitted lifelines CoxPHFitter; lifelines' convergence warnings re-issued as SurvivalWarning."""
    from lifelines import CoxPHFitter
    from lifelines.exceptions import (
        ConvergenceError,
        ConvergenceWarning,
        StatisticalWarning,
    )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = CoxPHFitter().fit(design, duration_col=_T, event_col=_E)
        except ConvergenceError as error:
            raise SurvivalDataError(
                "the Cox model did not converge. The score is standardised before fitting, so this is not "
                "a matter of scale: usually a covariate (or the score) separates the deaths from the "
                "survivors perfectly, or a covariate level holds only censored or only dead subjects, or "
                f"there are too few events for the number of terms. lifelines said: {error}"
            ) from error
    for record in caught:
        if issubclass(record.category, (ConvergenceWarning, StatisticalWarning)):
            warnings.warn(f"Cox model: {record.message}", SurvivalWarning, stacklevel=3)
        else:
            warnings.warn(record.message, record.category, stacklevel=3)
    return model


def _ph_pvalues(model, design: pd.DataFrame) -> dict[str, float | None]:
    from lifelines.statistics import proportional_hazard_test

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lifelines' notes on the test, not about the data
        summary = proportional_hazard_test(model, design, time_transform="rank").summary
    return {str(k): _float(v) for k, v in summary["p"].items()}


def _likelihood_ratio_p(model) -> float | None:
    """p of lifelines' likelihood-ratio test of the fitted model against the null model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _float(model.log_likelihood_ratio_test().p_value)


def _warn_if_p_values_disagree(wald: float | None, ratio: float | None, score: Hashable) -> None:
    if wald is None or ratio is None or min(wald, ratio) >= 0.05 or max(wald, ratio) < 0.05:
        return  # they agree on significance at 0.05
    if max(wald, ratio) > P_DISAGREEMENT * max(min(wald, ratio), 1e-300):
        why = ("the score nearly separates deaths from survivors, and the Wald test (p) loses its power then; "
               "trust the likelihood-ratio p, the log-rank test and the concordance more") if wald > ratio else (
               "the two large-sample tests differ, as they can with few events; neither is exact here")
        warnings.warn(f"the Cox model's Wald p ({wald:.3g}) and likelihood-ratio p ({ratio:.3g}) for score {score!r} "
                      f"disagree: {why}", SurvivalWarning, stacklevel=3)


def _term(row: pd.Series, scale: float) -> dict[str, Any]:
    """hr, hr_ci and p of one term fitted on a variable divided by `scale`, per unit of the original."""
    return {
        "hr": _exp(row["coef"] / scale),
        "hr_ci": [_exp(row["coef lower 95%"] / scale), _exp(row["coef upper 95%"] / scale)],
        "p": _float(row["p"]),
    }


def _split(checked: pd.DataFrame, score: Hashable, threshold: float | None) -> tuple[np.ndarray, float, str]:
    values = checked[score].to_numpy(dtype=np.float64)
    how = "median" if threshold is None else "threshold"
    cut = float(np.median(values)) if threshold is None else float(threshold)
    if not math.isfinite(cut):
        raise SurvivalDataError(f"threshold must be a finite number, got {threshold!r}")
    high = values > cut
    if high.all() or not high.any():
        raise SurvivalDataError(
            f"splitting score column {score!r} at {cut:.6g} leaves a group empty (scores range from "
            f"{values.min():.6g} to {values.max():.6g}; high = score > threshold)"
        )
    return high, cut, how


# ------------------------------------------------------------------------------------ analyses
def cox_analysis(
    frame: pd.DataFrame,
    score: Hashable,
    covariates: Hashable | Sequence[Hashable] = (),
    *,
    time: Hashable = "time",
    event: Hashable = "event",
    subject: Hashable | None = "subject_id",
) -> dict[str, Any]:
    """Cox proportional hazards of `time` / `event` on `score` (plus `covariates`), lifelines' CoxPHFitter.

    Returns a JSON-able dict: ``hr`` (per unit increase of the score), ``hr_ci`` [lower, upper] (95 %
    Wald), ``p`` (Wald), ``log_hr`` (per unit), ``hr_per_sd``, ``hr_per_sd_ci``, ``score_sd`` (ddof = 1),
    ``c_index`` (the model's ``concordance_index_``), ``ph_p`` (proportional-hazards test of the score,
    rank time transform), ``n``, ``events`` and ``covariates``: term → ``{"hr", "hr_ci", "p", "ph_p"}``
    (per unit of numeric covariates; dummies against the first level); without covariates also
    ``p_likelihood_ratio`` (the likelihood-ratio test of the score). Fitted on the standardised score
    (see the module docstring), so the scale of the score never prevents convergence; a lifelines
    ConvergenceError is re-raised as SurvivalDataError.
    """
    checked = check_survival_frame(frame, score, time=time, event=event, subject=subject, min_events=0)
    ids, kind = _subject_ids(checked, subject)
    names = _column_list(covariates)
    for name in names:
        if name in (score, time, event):
            raise SurvivalDataError(f"covariate {name!r} is also the score, time or event column")
    values = checked[score].to_numpy(dtype=np.float64)
    sd = float(values.std(ddof=1))
    covariate_design, terms = _covariate_terms(checked, names, ids, kind)
    design = pd.DataFrame(
        {_T: checked[time].to_numpy(), _E: checked[event].to_numpy(), _SCORE: (values - values.mean()) / sd}
    )
    design = pd.concat([design, covariate_design], axis=1)
    model = _fit_cox(design)
    summary = model.summary
    ph = _ph_pvalues(model, design)

    row = summary.loc[_SCORE]
    per_unit = _term(row, sd)
    return {
        "hr": per_unit["hr"],
        "hr_ci": per_unit["hr_ci"],
        "p": per_unit["p"],
        "log_hr": _float(row["coef"] / sd),
        "hr_per_sd": _exp(row["coef"]),
        "hr_per_sd_ci": [_exp(row["coef lower 95%"]), _exp(row["coef upper 95%"])],
        "score_sd": sd,
        "c_index": _float(model.concordance_index_),
        "ph_p": ph.get(_SCORE),
        **({"p_likelihood_ratio": _likelihood_ratio_p(model)} if not names else {}),
        "n": len(design),
        "events": int(design[_E].sum()),
        "covariates": {
            term: {**_term(summary.loc[key], scale), "ph_p": ph.get(key)} for key, (term, scale) in terms.items()
        },
    }


def _km_group(times: np.ndarray, events: np.ndarray, label: str) -> dict[str, Any]:
    from lifelines import KaplanMeierFitter

    kmf = KaplanMeierFitter().fit(times, events, label=label)
    ci = kmf.confidence_interval_
    return {
        "n": len(times),
        "events": int(events.sum()),
        "median_survival": _float(kmf.median_survival_time_),
        "timeline": _floats(kmf.survival_function_.index),
        "survival": _floats(kmf.survival_function_.iloc[:, 0]),
        "ci_lower": _floats(ci.iloc[:, 0]),
        "ci_upper": _floats(ci.iloc[:, 1]),
        "censored_times": _floats(np.sort(times[events == 0])),
    }


def kaplan_meier_split(
    frame: pd.DataFrame,
    score: Hashable,
    *,
    time: Hashable = "time",
    event: Hashable = "event",
    threshold: float | None = None,
    subject: Hashable | None = "subject_id",
) -> dict[str, Any]:
    """Kaplan–Meier curves of the high- (score > threshold) and low-score groups, and a log-rank test.

    `threshold` defaults to the median score. Returns ``score`` (the column name), ``split``
    ("median" or "threshold"), ``threshold``, ``logrank_p``, ``logrank_statistic`` and, for ``"high"``
    and ``"low"``: ``n``, ``events``, ``median_survival`` (None when the curve never reaches 0.5),
    the curve (``timeline``, ``survival``, 95 % ``ci_lower`` / ``ci_upper``, lifelines' exponential
    Greenwood interval) and ``censored_times`` (for censor ticks). Draw it with
    :func:`neurodiff.reporting.survival_figures.plot_kaplan_meier`.
    """
    from lifelines.statistics import logrank_test

    checked = check_survival_frame(frame, score, time=time, event=event, subject=subject, min_events=0)
    high, cut, how = _split(checked, score, threshold)
    times = checked[time].to_numpy(dtype=np.float64)
    events = checked[event].to_numpy(dtype=np.int64)
    test = logrank_test(times[high], times[~high], events[high], events[~high])
    return {
        "score": str(score),
        "split": how,
        "threshold": cut,
        "logrank_p": _float(test.p_value),
        "logrank_statistic": _float(test.test_statistic),
        "high": _km_group(times[high], events[high], "high"),
        "low": _km_group(times[~high], events[~high], "low"),
    }


def ks_split(
    frame: pd.DataFrame,
    score: Hashable,
    *,
    time: Hashable = "time",
    event: Hashable = "event",
    threshold: float | None = None,
    events_only: bool = True,
    subject: Hashable | None = "subject_id",
) -> dict[str, Any]:
    """Two-sample Kolmogorov–Smirnov test (scipy ``ks_2samp``, two-sided) of survival times, high vs low score.

    Same split as :func:`kaplan_meier_split`. With ``events_only`` (default) only the times of subjects
    who died enter: censored times are lower bounds, not survival times. Returns ``ks_statistic``,
    ``ks_p``, ``n_high`` / ``n_low`` (the numbers of times compared), ``events_only``, ``threshold``,
    ``split`` and ``note``: None, or why the test is undefined (a group with < 2 times; statistic and p
    are then None).
    """
    from scipy.stats import ks_2samp

    checked = check_survival_frame(frame, score, time=time, event=event, subject=subject, min_events=0)
    high, cut, how = _split(checked, score, threshold)
    times = checked[time].to_numpy(dtype=np.float64)
    keep = checked[event].to_numpy(dtype=np.int64) == 1 if events_only else np.ones(len(times), dtype=bool)
    a, b = times[high & keep], times[~high & keep]
    result: dict[str, Any] = {
        "ks_statistic": None,
        "ks_p": None,
        "n_high": len(a),
        "n_low": len(b),
        "events_only": bool(events_only),
        "threshold": cut,
        "split": how,
        "note": None,
    }
    if min(len(a), len(b)) < 2:
        what = "deaths" if events_only else "times"
        result["note"] = (f"KS test undefined: the high-score group has {len(a)} and the low-score group "
                          f"{len(b)} {what}; each needs at least 2")
        return result
    test = ks_2samp(a, b)
    result["ks_statistic"] = _float(test.statistic)
    result["ks_p"] = _float(test.pvalue)
    return result


def survival_analysis(
    frame: pd.DataFrame,
    score: Hashable,
    covariates: Hashable | Sequence[Hashable] = (),
    *,
    time: Hashable = "time",
    event: Hashable = "event",
    min_events: int = 10,
    subject: Hashable | None = "subject_id",
) -> dict[str, Any]:
    """The NDA survival report of one score: checks, unadjusted Cox, Kaplan–Meier split, KS test.

    Returns one flat JSON-able dict: ``hr``, ``hr_ci``, ``p``, ``p_likelihood_ratio``, ``hr_per_sd``,
    ``hr_per_sd_ci``, ``score_sd``, ``c_index``, ``ph_p`` (unadjusted Cox on the score alone), ``logrank_p``,
    ``ks_statistic``, ``ks_p``, ``ks_note`` (median split; KS on deaths only), ``n``, ``events``,
    ``threshold`` (the median score), ``km`` (the :func:`kaplan_meier_split` dict, for plotting) and,
    when covariates are given, ``adjusted`` (the :func:`cox_analysis` dict with them). Warns
    (SurvivalWarning) once when there are fewer than `min_events` events.
    """
    checked = check_survival_frame(frame, score, time=time, event=event, subject=subject, min_events=min_events)
    keys: dict[str, Any] = {"time": time, "event": event, "subject": subject}
    cox = cox_analysis(checked, score, **keys)
    km = kaplan_meier_split(checked, score, **keys)
    ks = ks_split(checked, score, threshold=km["threshold"], **keys)
    result: dict[str, Any] = {
        key: cox[key]
        for key in ("hr", "hr_ci", "p", "p_likelihood_ratio", "hr_per_sd", "hr_per_sd_ci", "score_sd", "c_index",
                    "ph_p")
    }
    _warn_if_p_values_disagree(cox["p"], cox["p_likelihood_ratio"], score)
    result.update(
        logrank_p=km["logrank_p"],
        ks_statistic=ks["ks_statistic"],
        ks_p=ks["ks_p"],
        ks_note=ks["note"],
        n=cox["n"],
        events=cox["events"],
        threshold=km["threshold"],
    )
    names = _column_list(covariates)
    if names:
        result["adjusted"] = cox_analysis(checked, score, names, **keys)
    result["km"] = km
    return result
