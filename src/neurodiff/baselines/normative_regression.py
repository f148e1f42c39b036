"""Regression normative model of regional measures: NDA's classical non-generative benchmark (METHODS.md §3).

The normative model of Marquand et al. (2016, *Biological Psychiatry*) in its simplest, most used form:
for each regional measure m (here the template-weighted tissue intensities of
:func:`~neurodiff.baselines.regional_measures.regional_measures`) an ordinary least-squares fit on the
healthy controls,

    y_m = X β_m + ε_m,   ε_m ~ N(0, σ_m²),   X = [1, age, sex (0/1), one-hot of other covariates],

with σ_m the residual standard deviation, ``√(RSS / (n − p))`` (p = number of design columns). A new
image's deviation in measure m is the z-score ``z_m = (y_m − X β̂_m) / σ̂_m`` given its own covariates
(:meth:`NormativeRegression.zscores`), and the subject's score summarises the z over measures:

- ``summary="rms"`` (default): ``√(mean_m z_m²)``, the root mean square. Deviation in either direction
  counts (atrophy darkens GM measures, but contrast changes or ventricular growth may brighten or darken
  others), it is ≈ 1 for a typical control (the z being roughly standard normal), and unlike the mean
  |z| it weighs one large regional deviation more than many small ones, as a focal disease produces;
- ``summary="mean_abs"``: ``mean_m |z_m|``, the same idea, less sensitive to one extreme region;
- ``summary="mean"``: ``mean_m z_m``, signed: negative when the measures are lower than expected
  (darker, as with GM loss). Its direction depends on the disease, so :attr:`higher_is_normal` (False:
  higher = more deviant) holds for ``rms`` and ``mean_abs`` only; use ``mean`` for inspection.

Covariates are encoded as the diffusion autoencoders (:class:`~neurodiff.methods.normative.NormativeDiffAE`) encode them (sex 0/1,
numeric columns as numbers, text columns one-hot, categories learnt from the controls); age and other
numeric covariates enter linearly, and each one-hot group drops its first category (the reference, in
the intercept) so that the design has full rank.

>>> model = NormativeRegression(affine, covariates=("age", "sex", "site")).fit(controls, control_covs)
>>> model.zscores(images, covs)["gm_left_central"]
>>> deviation = model.score(images, covs)          # (N,), higher = further from normal
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from neurodiff.base import NotFittedError
from neurodiff.baselines.regional_measures import check_affine, regional_measures
from neurodiff.data.covariates import CovariateEncoding
from neurodiff.methods.diffae import _fit_encoding

SUMMARIES = ("rms", "mean_abs", "mean")
_TINY_SD = 1e-12


class NormativeRegression:
    """Per-measure OLS normative model on age, sex and other covariates; the score summarises the z-scores.

    Parameters
    ----------
    affine:
        4×4 voxel → MNI mm affine of the images' grid (see :func:`regional_measures`).
    covariates:
        Columns of the covariate frame in the design (with an intercept); ``()`` compares every image
        with the controls' mean.
    summary:
        How :meth:`score` summarises a subject's z-scores: ``"rms"``, ``"mean_abs"`` or ``"mean"``
        (module docstring).

    Attributes
    ----------
    encoding_:
        The :class:`CovariateEncoding` of the covariates, fitted on the controls (None without covariates).
    design_columns_:
        Names of the design columns, ``"intercept"`` first.
    measures_:
        Names of the regional measures modelled.
    coef_:
        Frame (design column × measure) of the OLS coefficients (continuous covariates standardised by
        the controls' mean and SD, so the age coefficient is per SD of the controls' ages).
    residual_sd_:
        Series (measure) of residual standard deviations, ddof = number of design columns.
    image_shape_, n_controls_:
        (1, *spatial) of the training images; number of controls fitted on.
    """

    score_name = "regression_z"
    higher_is_normal = False

    def __init__(self, affine: Any, covariates: Sequence[str] = ("age", "sex"), summary: str = "rms"):
        self.affine = affine
        self.covariates = covariates
        self.summary = summary

    # ------------------------------------------------------------------ fit
    def fit(self, images: Any, covariates: pd.DataFrame) -> NormativeRegression:
        """Fit one OLS per regional measure on the healthy controls' images and covariates."""
        if self.summary not in SUMMARIES:
            raise ValueError(f"summary must be one of {', '.join(map(repr, SUMMARIES))}, got {self.summary!r}")
        check_affine(self.affine)
        measures, covariates = _measures(images, covariates, self.affine)
        self.encoding_ = _fit_encoding(covariates, _names(self.covariates))
        self.design_columns_, design = _design(self.encoding_, covariates)
        n, p = design.shape
        if n <= p:
            raise ValueError(f"need more controls than design columns ({p}: {', '.join(self.design_columns_)}) "
                             f"to estimate the residual SD, got {n} images")
        if np.linalg.matrix_rank(design) < p:
            raise ValueError(f"the design columns {self.design_columns_} are collinear on these controls "
                             f"(e.g. a covariate that is constant within a site); drop one of the covariates")
        coef, *_ = np.linalg.lstsq(design, measures.to_numpy(), rcond=None)
        residuals = measures.to_numpy() - design @ coef
        self.measures_ = list(measures.columns)
        self.coef_ = pd.DataFrame(coef, index=self.design_columns_, columns=self.measures_)
        self.residual_sd_ = pd.Series(np.sqrt((residuals**2).sum(0) / (n - p)), index=self.measures_)
        self.image_shape_ = tuple(np.shape(images)[1:])
        self.n_controls_ = n
        return self

    # ------------------------------------------------------------------ deviations
    def zscores(self, images: Any, covariates: pd.DataFrame) -> pd.DataFrame:
        """z-score of every regional measure given each image's covariates: a frame (N, n_measures)."""
        self._check_fitted()
        if tuple(np.shape(images)[1:]) != self.image_shape_:
            raise ValueError(f"images are {tuple(np.shape(images)[1:])}, the model was fitted on {self.image_shape_}")
        measures, covariates = _measures(images, covariates, self.affine)
        measures = measures[self.measures_]
        _, design = _design(self.encoding_, covariates)
        expected = design @ self.coef_.to_numpy()
        z = (measures.to_numpy() - expected) / np.maximum(self.residual_sd_.to_numpy(), _TINY_SD)
        return pd.DataFrame(z, columns=self.measures_)

    def score(self, images: Any, covariates: pd.DataFrame) -> np.ndarray:
        """The subject's deviation, the z-scores summarised by :attr:`summary` (N,); higher = more deviant."""
        z = self.zscores(images, covariates).to_numpy()
        if self.summary == "rms":
            return np.sqrt((z**2).mean(axis=1))
        if self.summary == "mean_abs":
            return np.abs(z).mean(axis=1)
        if self.summary == "mean":
            return z.mean(axis=1)
        raise ValueError(f"summary must be one of {', '.join(map(repr, SUMMARIES))}, got {self.summary!r}")

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("this NormativeRegression is not fitted yet: call fit() first")


def _measures(images: Any, covariates: pd.DataFrame, affine: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Regional measures of the images and the covariates, one row per image (index reset)."""
    if not isinstance(covariates, pd.DataFrame):
        raise TypeError(f"covariates must be a pandas DataFrame (one row per image), got {type(covariates).__name__}")
    measures = regional_measures(images, affine)
    if len(covariates) != len(measures):
        raise ValueError(f"{len(measures)} images but {len(covariates)} covariate rows; give one row per image")
    return measures, covariates.reset_index(drop=True)


def _names(columns: Sequence[str] | str | None) -> list[str]:
    if columns is None:
        return []
    return [columns] if isinstance(columns, str) else list(columns)


def _design(encoding: CovariateEncoding | None, covariates: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Names and values of the design [intercept, continuous, binary, one-hot less its first category]."""
    ones = np.ones((len(covariates), 1))
    if encoding is None:
        return ["intercept"], ones
    encoded = encoding.transform(covariates).astype(np.float64)
    keep = np.ones(encoded.shape[1], dtype=bool)
    start = len(encoding.continuous) + len(encoding.binary)
    for covariate in encoding.categorical:
        keep[start] = False  # the first category is the reference level
        start += len(covariate.categories)
    names = ["intercept", *(name for name, kept in zip(encoding.columns, keep) if kept)]
    return names, np.concatenate([ones, encoded[:, keep]], axis=1)
