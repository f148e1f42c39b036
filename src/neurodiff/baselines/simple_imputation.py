"""Strong simple baselines for follow-up imputation (not in the SECONDGRAM paper; required here).

Both work in the prepared (scaled) feature space, like the diffusion models, so every method is
scored on the same numbers:

- :class:`LastObservationCarriedForward`: x2 := x1.
- :class:`RidgeImputation`: x2 ~ [x1, y], one multi-output ridge regression fitted on the paired
  training subjects, its penalty chosen by efficient leave-one-out cross-validation.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import RidgeCV

from neurodiff.checks import as_matrix


class LastObservationCarriedForward:
    """x2 := x1 (nothing to fit)."""

    def fit(self, x1: np.ndarray, y: np.ndarray, x2: np.ndarray) -> LastObservationCarriedForward:
        return self

    def predict(self, x1: np.ndarray, y: np.ndarray) -> np.ndarray:
        return as_matrix(x1, "x1").copy()


class RidgeImputation:
    """Multi-output ridge regression of x2 on [x1, y]; alpha from `alphas` by leave-one-out CV."""

    def __init__(self, alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)):
        self.alphas = alphas

    def fit(self, x1: np.ndarray, y: np.ndarray, x2: np.ndarray) -> RidgeImputation:
        X = np.hstack([as_matrix(x1, "x1"), as_matrix(y, "y")])
        target = as_matrix(x2, "x2")
        if len(X) != len(target):
            raise ValueError(f"x1 has {len(X)} rows but x2 has {len(target)}")
        self.model_ = RidgeCV(alphas=self.alphas).fit(X, target)
        self.alpha_ = float(self.model_.alpha_)
        return self

    def predict(self, x1: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.clip(self.model_.predict(np.hstack([as_matrix(x1, "x1"), as_matrix(y, "y")])), -1.0, 1.0)
