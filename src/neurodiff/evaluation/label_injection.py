"""Does a harmoniser write the age and sex it is given into its output? The label-swap control.

A harmoniser that is given each image's age and sex (the cVAE's decoder, DDAE's covariate encoder,
ComBat's design matrix) could draw anatomy typical of those labels instead of keeping the subject's.
The transfer probes (:func:`~neurodiff.evaluation.harmonization.age_mae`, fitted on raw images) then
read the labels back and score better than the raw images themselves, which no method that only keeps
anatomy can do. This control measures it directly: harmonise the same images a second time with age
and sex taken from other images (:func:`swapped_covariates`) and ask how far a probe fitted on raw
anatomy follows the labels given instead of the images.

- ``age_injection``: over the images, the slope (through the origin) of the probe's change in
  predicted age (swapped − true labels given) on the change of the given age, divided by the probe's
  slope on raw images (its predictions regressed on the true ages). 0: the output ignores the given
  age; 1: the output reads as the given age as strongly as raw anatomy reads the true one.
- ``sex_injection``: over the images whose given sex changed, the mean change of the probe's P(M) in
  the direction of the change (+ for F→M, − for M→F), divided by the probe's separation on raw images
  (mean P(M) of the men minus that of the women). Same scale.

Both are normalised by how well the raw probe reads the true label, which on a small test set can read
almost nothing (then NaN). Their unnormalised forms are defined whenever the swap changed a label and
the probe could be fitted: ``age_injection_years``, the same slope in years of predicted age per year of
age given, and ``sex_injection_probability``, the same mean change of P(M). 0 for an output that ignores
the labels;
no threshold applies to them (they have no scale to compare with). They avoid dividing by a scale near 0,
which amplifies noise, but they are no more sensitive than the probe: a probe that reads no age on raw
images sees none written into the output either (both forms near 0 or NaN then).

Probes are the transfer probes' (ridge for age, logistic regression for sex, fitted on the raw images
of the training folds, same folds and scaling), applied to both harmonised versions of the held-out fold.
Values well above 0 mean a transfer probe's score is partly the given labels, not kept anatomy
(:data:`INJECTION_THRESHOLD`, the benchmark's rule). NaN when the swap changed no label (no age, or no
sex); else 0 when the probe's predictions do not change at all with the labels given (raw, or a method
that does not read them); else NaN when the raw probe reads nothing (slope or separation ≤ 0, e.g. with
very few images).

>>> swapped = swapped_covariates(covariates, seed=0)
>>> out, out_swapped = model.transform(x, covariates, "site0"), model.transform(x, swapped, "site0")
>>> label_injection(space.transform(x), space.transform(out), space.transform(out_swapped), covariates, swapped)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from neurodiff.evaluation.harmonization import (
    RIDGE_ALPHAS,
    _features,
    _folds,
    _groups,
    _logistic,
    _one_blas_thread,
    _scaled,
)

METRIC_NAMES = ("age_injection", "sex_injection", "age_injection_years", "sex_injection_probability")
#: A harmoniser with ``age_injection`` or ``sex_injection`` above this writes a good part of the labels it
#: is given into its output: the benchmark marks it (‡) and does not rank it on the transfer probes. A
#: judgement, not a statistic: at 0.25 the output follows the given label a quarter as strongly as raw
#: anatomy follows the true one.
INJECTION_THRESHOLD = 0.25
SWAPPED_COLUMNS = ("age", "sex")


def swapped_covariates(covariates: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """A copy of `covariates` whose ``age`` and ``sex`` are those of other rows (a seeded permutation,
    age and sex moving together); every other column (site, ids) unchanged. The input is not modified."""
    missing = [c for c in SWAPPED_COLUMNS if c not in covariates.columns]
    if missing:
        raise ValueError(f"covariates lack the column(s) {', '.join(missing)} the label swap needs")
    if len(covariates) < 2:
        raise ValueError("the label swap needs at least 2 images")
    order = np.random.default_rng(seed).permutation(len(covariates))
    swapped = covariates.copy()
    for column in SWAPPED_COLUMNS:
        swapped[column] = covariates[column].to_numpy()[order]
    return swapped


def label_injection(raw_features: Any, harmonised_features: Any, swapped_features: Any,
                    covariates: pd.DataFrame, swapped: pd.DataFrame, *, folds: int = 5, seed: int = 0,
                    groups: Any = None) -> dict[str, float]:
    """``age_injection``, ``sex_injection`` and their unnormalised forms ``age_injection_years``,
    ``sex_injection_probability`` (see the module docstring).

    Parameters
    ----------
    raw_features, harmonised_features, swapped_features:
        ``(N, K)`` features (one fixed feature space) of the raw images, of their harmonisation given the
        true covariates and of their harmonisation given `swapped`; row i the same image in all three.
    covariates, swapped:
        the true and the given ``age`` / ``sex`` per row (:func:`swapped_covariates`).
    folds, seed, groups:
        the probes' cross-validation, as the transfer probes' (:func:`~neurodiff.evaluation.harmonization.probe_groups`).
    """
    raw = _features("raw_features", raw_features)
    n = len(raw)
    h = _features("harmonised_features", harmonised_features, n)
    s = _features("swapped_features", swapped_features, n)
    if not raw.shape[1] == h.shape[1] == s.shape[1]:
        raise ValueError(f"the three feature arrays differ in width ({raw.shape[1]}, {h.shape[1]}, {s.shape[1]}); "
                         "project them with the same feature space")
    for name, frame in (("covariates", covariates), ("swapped", swapped)):
        if len(frame) != n:
            raise ValueError(f"{name} has {len(frame)} rows for {n} images")
    age = pd.to_numeric(covariates["age"]).to_numpy(dtype=np.float64)
    age_given = pd.to_numeric(swapped["age"]).to_numpy(dtype=np.float64)
    if not (np.isfinite(age).all() and np.isfinite(age_given).all()):
        raise ValueError("ages contain NaN or infinite values")
    male = covariates["sex"].astype(str).eq("M").to_numpy()
    male_given = swapped["sex"].astype(str).eq("M").to_numpy()
    predicted = _cross_fitted(raw, h, s, age, male, folds, seed, groups)
    age_years, age_scale, age_ignored = _age_injection(predicted["age"], age, age_given)
    sex_probability, sex_scale, sex_ignored = _sex_injection(predicted["sex"], male, male_given)
    return {"age_injection": _normalised(age_years, age_scale, age_ignored),
            "sex_injection": _normalised(sex_probability, sex_scale, sex_ignored),
            "age_injection_years": age_years, "sex_injection_probability": sex_probability}


def _normalised(value: float, scale: float, ignored: bool) -> float:
    """`value` over the raw probe's `scale`: 0 when the output ignores the labels given (its predictions do not
    change at all), whatever the probe reads; NaN when no label changed or the probe reads nothing (scale NaN
    or ≤ 0)."""
    if ignored or math.isnan(value):
        return value
    return value / scale if scale > 0 else math.nan


def _cross_fitted(raw, h, s, age, male, folds, seed, groups) -> dict[str, np.ndarray]:
    """Held-out predictions of the raw-fitted probes on (raw, harmonised, swapped): age (3, N), P(M) (3, N).

    The folds are the transfer probes': K-fold for age, stratified K-fold for sex (both grouped). A sex
    with fewer than 2 subjects leaves the sex predictions NaN.
    """
    from sklearn.linear_model import RidgeCV

    group_ids = _groups(groups, len(raw))

    def held_out(y, stratify, fit_predict) -> np.ndarray:
        out = np.full((3, len(raw)), np.nan)
        try:
            splits = _folds(y, group_ids, folds, seed, stratify=stratify)
        except ValueError:  # too few subjects of one class for stratified folds
            return out
        for train, test in splits:
            fitted = _scaled(raw, train)[0][train]
            versions = [_scaled(raw, train, other)[1][test] for other in (raw, h, s)]
            predicted = fit_predict(fitted, y[train], versions)
            if predicted is not None:
                out[:, test] = predicted
        return out

    def ridge(x, y, versions):
        model = RidgeCV(alphas=RIDGE_ALPHAS).fit(x, y)
        return [model.predict(v) for v in versions]

    def logistic(x, y, versions):
        if len(np.unique(y)) < 2:
            return None
        model = _logistic().fit(x, y)
        return [model.predict_proba(v)[:, 1] for v in versions]

    with _one_blas_thread():
        return {"age": held_out(age, False, ridge), "sex": held_out(male.astype(int), True, logistic)}


def _age_injection(predicted: np.ndarray, age: np.ndarray, age_given: np.ndarray) -> tuple[float, float, bool]:
    """(years of predicted age per year of age given, the raw probe's slope on the true age, whether the
    predictions ignore the age given)."""
    raw, harmonised, swapped = predicted
    shift = age_given - age
    centred = age - age.mean()
    raw_slope = float((raw - raw.mean()) @ centred / (centred @ centred)) if centred.any() else math.nan
    if not shift.any():
        return math.nan, raw_slope, False
    if np.array_equal(swapped, harmonised):  # the output ignores the labels given, whatever the probe reads
        return 0.0, raw_slope, True
    return float((swapped - harmonised) @ shift / (shift @ shift)), raw_slope, False


def _sex_injection(predicted: np.ndarray, male: np.ndarray, male_given: np.ndarray) -> tuple[float, float, bool]:
    """(mean change of P(M) towards the sex given, the raw probe's male − female separation, whether the
    predictions ignore the sex given)."""
    raw, harmonised, swapped = predicted
    changed = (male != male_given) & np.isfinite(harmonised) & np.isfinite(swapped)
    usable = np.isfinite(raw)
    separation = (float(raw[usable & male].mean() - raw[usable & ~male].mean())
                  if (usable & male).any() and (usable & ~male).any() else math.nan)
    if not changed.any():
        return math.nan, separation, False
    if np.array_equal(swapped[changed], harmonised[changed]):  # the output ignores the labels given
        return 0.0, separation, True
    direction = np.where(male_given, 1.0, -1.0)
    return float((direction * (swapped - harmonised))[changed].mean()), separation, False
