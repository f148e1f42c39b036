"""Preparation of longitudinal features, fitted on training subjects only (METHODS.md).

1. Iterative imputation of missing feature values (scikit-learn's ``IterativeImputer`` with
   a ridge regression per feature, fitted on at most 5,000 training rows of both visits). Its fitted chain of linear
   regressions is exported to plain arrays so that a saved model needs no pickle; applying the
   arrays reproduces ``IterativeImputer.transform`` exactly (tested) when it was fitted on every row.
   Above 5,000 rows the chain is fitted on a random 5,000, but the initial fill is the mean of all
   rows, not of those 5,000, so the result differs slightly from the subsample's IterativeImputer.
2. Min–max scaling of each feature to [-1, 1] (training range). A feature constant in training maps
   to -1, and every value generated for it is that constant.
3. Scaling of labels: continuous labels standardised, binary (0/1) labels kept as they are.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer
from sklearn.linear_model import Ridge


@dataclass
class ChainedImputer:
    """IterativeImputer's fitted state as arrays: initial means and the chain of regressions."""

    means: np.ndarray  # (D,) initial fill
    feature: np.ndarray  # (S,) the feature each step imputes
    neighbours: np.ndarray  # (S, k) the features it regresses on
    coef: np.ndarray  # (S, k)
    intercept: np.ndarray  # (S,)

    @classmethod
    def fit(cls, X: np.ndarray, *, neighbours: int = 20, max_iter: int = 5, max_rows: int = 5000,
            seed: int = 0) -> ChainedImputer:
        """Fit IterativeImputer on (at most `max_rows` random rows of) X and export it."""
        rng = np.random.default_rng(seed)
        rows = X if len(X) <= max_rows else X[rng.choice(len(X), max_rows, replace=False)]
        D = X.shape[1]
        if not np.isnan(rows).any() or D < 2:
            return cls(np.nanmean(X, axis=0), *_empty_chain(max(1, min(neighbours, D - 1))))
        with warnings.catch_warnings():  # a few rounds rarely meet sklearn's tolerance; they need not
            warnings.simplefilter("ignore", ConvergenceWarning)
            imputer = IterativeImputer(
                estimator=Ridge(alpha=1.0), max_iter=max_iter, n_nearest_features=min(neighbours, D - 1),
                random_state=seed, skip_complete=True, keep_empty_features=True,
            ).fit(rows)
        k = min(neighbours, D - 1)
        steps = imputer.imputation_sequence_
        return cls(
            means=np.nanmean(X, axis=0) if len(X) > max_rows else imputer.initial_imputer_.statistics_.copy(),
            feature=np.array([s.feat_idx for s in steps], dtype=np.int64).reshape(-1),
            neighbours=np.array([s.neighbor_feat_idx for s in steps], dtype=np.int64).reshape(-1, k),
            coef=np.array([s.estimator.coef_ for s in steps], dtype=np.float64).reshape(-1, k),
            intercept=np.array([s.estimator.intercept_ for s in steps], dtype=np.float64).reshape(-1),
        )

    def transform(self, X: np.ndarray) -> np.ndarray:
        missing = np.isnan(X)
        if not missing.any():
            return X.copy()
        filled = np.where(missing, self.means, X)
        for feat, nbrs, coef, icpt in zip(self.feature, self.neighbours, self.coef, self.intercept):
            rows = missing[:, feat]
            if rows.any():
                filled[rows, feat] = filled[np.ix_(rows, nbrs)] @ coef + icpt
        filled[~missing] = X[~missing]
        return filled

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": getattr(self, k) for k in ("means", "feature", "neighbours", "coef", "intercept")}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> ChainedImputer:
        return cls(*(arrays[f"{prefix}{k}"] for k in ("means", "feature", "neighbours", "coef", "intercept")))


def _empty_chain(k: int) -> tuple[np.ndarray, ...]:
    return (np.zeros(0, np.int64), np.zeros((0, k), np.int64), np.zeros((0, k)), np.zeros(0))


@dataclass
class Preparation:
    """Fitted imputer, feature scaler and label scaler (see module docstring)."""

    imputer: ChainedImputer
    x_min: np.ndarray
    x_max: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray  # 1 for binary labels (mean 0): kept as they are

    @classmethod
    def fit(cls, x1: np.ndarray, x2: np.ndarray, y: np.ndarray, *, seed: int = 0,
            neighbours: int = 20, max_iter: int = 5) -> Preparation:
        """Fit on training subjects: `x2` may hold NaN rows (unpaired subjects), which are ignored."""
        _finite_or_missing(x1, "x1")
        _finite_or_missing(x2, "x2")
        _finite_or_missing(y, "labels")
        rows = np.vstack([x1, x2[~np.isnan(x2).all(axis=1)]])
        imputer = ChainedImputer.fit(rows, neighbours=neighbours, max_iter=max_iter, seed=seed)
        complete = imputer.transform(rows)
        binary = np.array([np.isin(np.unique(col), (0.0, 1.0)).all() for col in y.T], dtype=bool)
        y_mean = np.where(binary, 0.0, y.mean(axis=0))
        y_std = np.where(binary | (y.std(axis=0) == 0), 1.0, y.std(axis=0))
        return cls(imputer, complete.min(axis=0), complete.max(axis=0), y_mean, y_std)

    @property
    def _span(self) -> np.ndarray:
        return np.where(self.x_max > self.x_min, self.x_max - self.x_min, 1.0)

    def features(self, x: np.ndarray) -> np.ndarray:
        """Impute, then scale to [-1, 1] (values outside the training range fall outside it)."""
        _finite_or_missing(x, "features")
        return 2.0 * (self.imputer.transform(x) - self.x_min) / self._span - 1.0

    def inverse_features(self, z: np.ndarray) -> np.ndarray:
        """Back to original units. A feature constant in training gets that constant, whatever `z`: its
        scaled values carry no information (the span is a placeholder), so [-1, 1] must not map onto
        [x_min, x_min + 1]."""
        return np.where(self.x_max > self.x_min, (z + 1.0) / 2.0 * self._span + self.x_min, self.x_min)

    def labels(self, y: np.ndarray) -> np.ndarray:
        _finite_or_missing(y, "labels")
        return (y - self.y_mean) / self.y_std

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {**self.imputer.to_arrays("imputer_"), "x_min": self.x_min, "x_max": self.x_max,
                "y_mean": self.y_mean, "y_std": self.y_std}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Preparation:
        return cls(ChainedImputer.from_arrays(arrays, "imputer_"), arrays["x_min"], arrays["x_max"],
                   arrays["y_mean"], arrays["y_std"])


def _finite_or_missing(x: np.ndarray, what: str) -> None:
    """Refuse ±inf: the imputer would spread it into NaN rows (tables are checked, with names, by
    :func:`neurodiff.data.longitudinal_table.longitudinal_arrays`; this guards arrays given directly)."""
    infinite = np.isinf(np.asarray(x, dtype=np.float64))
    if infinite.any():
        first = tuple(int(i) for i in np.argwhere(infinite)[0])
        raise ValueError(f"{what} contain infinite values ({int(infinite.sum())}, the first at (row, column) {first}); "
                         f"replace them with numbers, or NaN (features only) to have them imputed")
