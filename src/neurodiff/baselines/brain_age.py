"""Brain-age gap: NDA's second non-generative normative benchmark (METHODS.md §3).

A brain-age model (Franke et al. 2010; Cole & Franke 2017) learns to predict chronological age from
the images of healthy controls; a patient whose brain "looks older" than their age has a positive gap.
Here, deliberately simple and fast:

- features: PCA of the flattened images (fitted on the training controls; at most n − 1 components);
- model: :class:`sklearn.linear_model.RidgeCV` on the PCA scores, its penalty chosen from `alphas` by
  efficient leave-one-out cross-validation;
- age-bias correction (Smith et al. 2019, *NeuroImage*; Le et al. 2018): regression to the mean makes
  the raw gap (predicted − age) correlate negatively with age, so young controls look old and old ones
  young. Out-of-sample predictions of the training controls (`cv`-fold cross-validation, the whole
  PCA → ridge pipeline refitted per fold) are regressed on age, ``gap_cv = a + b·age``, and the score is
  the corrected gap ``predicted − age − (a + b·age)``, ≈ 0 on average at every age for controls.

The score is signed: positive = older-looking than normal (atrophy), so ``higher_is_normal = False``.

>>> model = BrainAgeModel().fit(controls, control_covariates)      # needs an "age" column
>>> model.cv_mae_                                                  # out-of-sample MAE on the controls (years)
>>> gap = model.score(images, covariates)                          # corrected brain-age gap (years)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline

from neurodiff.base import NotFittedError
from neurodiff.baselines.combat import check_harmonisation_inputs


class BrainAgeModel:
    """PCA → ridge regression of age on controls' images; the score is the age-bias-corrected brain-age gap.

    Parameters
    ----------
    n_components:
        PCA components (capped at n − 1 for n training images, and at the number of pixels).
    alphas:
        Ridge penalties tried by :class:`~sklearn.linear_model.RidgeCV`.
    cv:
        Folds of the cross-validation that gives the controls' out-of-sample predictions (bias correction
        and :attr:`cv_mae_`).
    seed:
        Seeds the fold split and PCA's randomised solver.

    Attributes
    ----------
    model_:
        The fitted :class:`~sklearn.pipeline.Pipeline` (``pca``, ``ridge``) on all training controls.
    n_components_, alpha_:
        The PCA components used and the ridge penalty chosen.
    cv_predictions_, cv_mae_:
        Out-of-sample predicted ages of the training controls and their mean absolute error (years).
    bias_intercept_, bias_slope_:
        a and b of the age-bias correction ``gap_cv = a + b·age``.
    image_shape_:
        (1, *spatial) of the training images.
    """

    score_name = "brain_age_gap"
    higher_is_normal = False

    def __init__(self, n_components: int = 64, alphas: Any = np.logspace(-2, 4, 13), cv: int = 5, seed: int = 0):
        self.n_components = n_components
        self.alphas = alphas
        self.cv = cv
        self.seed = seed

    def fit(self, images: Any, covariates: pd.DataFrame) -> BrainAgeModel:
        """Fit PCA and ridge on the controls, then the age-bias correction from cross-validated predictions."""
        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}")
        if not isinstance(self.cv, (int, np.integer)) or self.cv < 2:
            raise ValueError(f"cv must be an integer >= 2, got {self.cv!r}")
        alphas = np.asarray(self.alphas, dtype=np.float64).ravel()
        if alphas.size == 0 or not (np.isfinite(alphas).all() and (alphas > 0).all()):
            raise ValueError(f"alphas must be positive finite numbers, got {self.alphas!r}")
        x, covariates = check_harmonisation_inputs(images, covariates)
        age = _ages(covariates)
        n = len(x)
        if n < max(2 * self.cv, 4):
            raise ValueError(f"need at least {max(2 * self.cv, 4)} control images for {self.cv}-fold "
                             f"cross-validation, got {n}")
        if np.ptp(age) == 0:
            raise ValueError(f"column 'age' has the same value ({age[0]:g}) for every control: nothing to learn")
        features = x.reshape(n, -1)

        predictions = np.empty(n)
        folds = KFold(n_splits=self.cv, shuffle=True, random_state=self.seed)
        for train, test in folds.split(features):
            model = self._pipeline(len(train), features.shape[1], alphas).fit(features[train], age[train])
            predictions[test] = model.predict(features[test])
        bias = LinearRegression().fit(age[:, None], predictions - age)

        self.model_ = self._pipeline(n, features.shape[1], alphas).fit(features, age)
        self.n_components_ = int(self.model_.named_steps["pca"].n_components_)
        self.alpha_ = float(self.model_.named_steps["ridge"].alpha_)
        self.cv_predictions_ = predictions
        self.cv_mae_ = float(np.abs(predictions - age).mean())
        self.bias_intercept_ = float(bias.intercept_)
        self.bias_slope_ = float(bias.coef_[0])
        self.image_shape_ = tuple(x.shape[1:])
        return self

    def _pipeline(self, n: int, n_features: int, alphas: np.ndarray) -> Pipeline:
        k = int(min(self.n_components, n - 1, n_features))
        return Pipeline([("pca", PCA(n_components=k, random_state=self.seed)), ("ridge", RidgeCV(alphas=alphas))])

    def predict_age(self, images: Any, covariates: pd.DataFrame) -> np.ndarray:
        """Predicted (brain) age of each image, before the bias correction (N,)."""
        self._check_fitted()
        x, _ = check_harmonisation_inputs(images, covariates, shape=self.image_shape_)
        if len(x) == 0:
            return np.zeros(0)
        return self.model_.predict(x.reshape(len(x), -1))

    def score(self, images: Any, covariates: pd.DataFrame) -> np.ndarray:
        """Bias-corrected brain-age gap ``predicted − age − (a + b·age)`` in years (N,); positive = older-looking."""
        predicted = self.predict_age(images, covariates)
        age = _ages(covariates.reset_index(drop=True))
        return predicted - age - (self.bias_intercept_ + self.bias_slope_ * age)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this BrainAgeModel is not fitted yet: call fit() first")


def _ages(covariates: pd.DataFrame) -> np.ndarray:
    """The 'age' column as finite floats; ValueError naming the column and the first bad row otherwise."""
    if "age" not in covariates.columns:
        raise ValueError(f"the covariates have no column 'age' (columns: {', '.join(map(str, covariates.columns))})")
    age = pd.to_numeric(covariates["age"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(age)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"column 'age' has the missing or non-numeric value {covariates['age'].iloc[first]!r} "
                         f"in row {first} ({int(bad.sum())} bad in all)")
    return age
