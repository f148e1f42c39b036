"""Who is in the cohort: demographics, disease severity, travelling subjects and survival.

:func:`plan_cohort` draws one row per image (subject, site, session, age, sex, group, latent severity,
head scale, survival); :func:`sample_survival_times` draws the patients' survival under the documented
proportional-hazards model and can be used (and tested) on its own.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from neurodiff.data.synthetic_images.config import (
    PATIENT_MIN_AGE,
    ImageCohortConfig,
    SurvivalModel,
)
from neurodiff.data.synthetic_images.sites import SiteProfile

#: Columns of the plan, in order (the renderer's input; the manifest is built from it).
PLAN_COLUMNS = (
    "subject_index",
    "subject_id",
    "session",
    "site",
    "group",
    "age",
    "sex",
    "traveller_id",
    "severity",
    "head_scale",
    "time",
    "event",
)


def sample_survival_times(
    severity: np.ndarray, rng: np.random.Generator, model: SurvivalModel | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw survival times (days) and event indicators for patients of latent `severity`.

    Proportional hazards with a Weibull baseline: the cumulative hazard
    ``H(t | s) = (t / λ)^k · exp(β s)`` is a unit exponential at the event time, so
    ``T = λ · (E · exp(−β s))^(1/k)`` with ``E ~ Exp(1)``. Censoring ``C ~ U(follow-up range)``;
    returns ``time = min(T, C)`` and ``event = 1`` where ``T ≤ C``.

    Parameters
    ----------
    severity
        Latent severities (any real values; the hazard ratio per unit is ``exp(β)``).
    rng
        Seeded generator.
    model
        Baseline, log hazard ratio β and follow-up range (defaults: :class:`SurvivalModel`).

    Returns
    -------
    time, event
        float days and int 0/1, both of the shape of `severity`.
    """
    model = model or SurvivalModel()
    severity = np.asarray(severity, dtype=float)
    unit_exp = rng.standard_exponential(severity.shape)
    event_time = model.weibull_scale_days * (unit_exp * np.exp(-model.log_hr_per_severity * severity)) ** (
        1.0 / model.weibull_shape
    )
    censor_time = rng.uniform(model.followup_min_days, model.followup_max_days, size=severity.shape)
    event = (event_time <= censor_time).astype(int)
    return np.minimum(event_time, censor_time), event


def plan_cohort(config: ImageCohortConfig, sites: list[SiteProfile], rng: np.random.Generator) -> pd.DataFrame:
    """One row per image: single-visit controls, travellers (one row per site), patients."""
    lo, hi = config.age_range
    parts = [
        _controls(config, sites, rng, lo, hi),
        _travellers(config, sites, rng, lo, hi),
        _patients(config, sites, rng, lo, hi),
    ]
    plan = pd.concat([p for p in parts if len(p)], ignore_index=True)
    subject_index = pd.factorize(plan["subject_key"])[0]
    plan["subject_index"] = subject_index
    width = max(5, len(str(subject_index.max() + 1)))
    plan["subject_id"] = [f"sub-{i + 1:0{width}d}" for i in subject_index]
    scales = _head_scales(plan.groupby("subject_index")["sex"].first(), config, rng)
    plan["head_scale"] = plan["subject_index"].map(scales)
    return plan[list(PLAN_COLUMNS)]


def _controls(config, sites, rng, lo, hi) -> pd.DataFrame:
    counts = _allocate(config.n_controls, np.array([s.control_share for s in sites]))
    frames = []
    for site, count in zip(sites, counts):
        ages = _truncated_normal(site.age_mean, site.age_sd, lo, hi, count, rng)
        sexes = np.where(rng.random(count) < site.female_fraction, "F", "M")
        frames.append(pd.DataFrame({"site": site.name, "age": ages, "sex": sexes}))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["site", "age", "sex"])
    return _finish(frame, "control", "ctl", session=1)


def _travellers(config, sites, rng, lo, hi) -> pd.DataFrame:
    n = config.n_travellers
    ages = rng.uniform(lo, hi, size=n)
    sexes = np.where(rng.random(n) < 0.5, "F", "M")
    rows = [
        {"site": site.name, "age": ages[t], "sex": sexes[t], "traveller_id": f"trv-{t + 1:03d}", "session": k + 1}
        for t in range(n)
        for k, site in enumerate(sites)
    ]
    frame = pd.DataFrame(rows, columns=["site", "age", "sex", "traveller_id", "session"])
    frame["subject_key"] = frame["traveller_id"]
    frame["group"] = "control"
    frame["severity"] = 0.0
    frame["time"] = np.nan
    frame["event"] = np.nan
    return frame


def _patients(config, sites, rng, lo, hi) -> pd.DataFrame:
    n, disease = config.n_patients, config.disease
    counts = _allocate(n, np.array([s.control_share for s in sites]))
    site_names = np.repeat([s.name for s in sites], counts)
    ages = _truncated_normal(disease.patient_age_mean, disease.patient_age_sd, max(lo, PATIENT_MIN_AGE), hi, n, rng)
    sexes = np.where(rng.random(n) < disease.patient_female_fraction, "F", "M")
    severity = rng.beta(*disease.severity_beta, size=n)
    time, event = sample_survival_times(severity, rng, config.survival)
    frame = pd.DataFrame({"site": site_names, "age": ages, "sex": sexes})
    frame = _finish(frame, "patient", "pat", session=1)
    frame["severity"] = severity
    frame["time"] = np.round(time, 1)
    frame["event"] = event.astype(float)
    return frame


def _finish(frame: pd.DataFrame, group: str, key: str, *, session: int) -> pd.DataFrame:
    frame = frame.copy()
    frame["subject_key"] = [f"{key}-{i}" for i in range(len(frame))]
    frame["group"] = group
    frame["session"] = session
    frame["traveller_id"] = ""
    frame["severity"] = 0.0
    frame["time"] = np.nan
    frame["event"] = np.nan
    return frame


def _allocate(total: int, shares: np.ndarray) -> np.ndarray:
    """Split `total` by `shares` with the largest-remainder method (deterministic)."""
    exact = total * shares / shares.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def _truncated_normal(mean, sd, lo, hi, n, rng) -> np.ndarray:
    if n == 0:
        return np.zeros(0)
    a, b = (lo - mean) / sd, (hi - mean) / sd
    return stats.truncnorm.rvs(a, b, loc=mean, scale=sd, size=n, random_state=rng)


def _head_scales(sex_by_subject: pd.Series, config: ImageCohortConfig, rng) -> pd.Series:
    anatomy = config.anatomy
    mean = np.where(sex_by_subject.to_numpy() == "F", anatomy.head_scale_female, anatomy.head_scale_male)
    scale = mean * np.exp(rng.normal(0.0, anatomy.head_scale_log_sd, size=len(mean)))
    return pd.Series(scale, index=sex_by_subject.index)
