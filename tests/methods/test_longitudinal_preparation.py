import warnings

import numpy as np
import pytest
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer
from sklearn.linear_model import Ridge

from neurodiff.methods.longitudinal import ChainedImputer, Preparation


def low_rank(n, d, seed):
    """Rows share one set of loadings (seed 99); `seed` draws the subjects."""
    loadings = np.random.default_rng(99).normal(size=(3, d))
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) @ loadings + 0.1 * rng.normal(size=(n, d))


def with_gaps(X, rate, seed):
    X = X.copy()
    X[np.random.default_rng(seed).random(X.shape) < rate] = np.nan
    return X


def test_exported_imputer_reproduces_sklearn_exactly():
    train, test = with_gaps(low_rank(400, 12, 0), 0.05, 1), with_gaps(low_rank(50, 12, 2), 0.1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = IterativeImputer(estimator=Ridge(alpha=1.0), max_iter=5, n_nearest_features=5, random_state=0,
                                     skip_complete=True, keep_empty_features=True).fit(train)
        ours = ChainedImputer.fit(train, neighbours=5, max_iter=5, seed=0)
    np.testing.assert_allclose(ours.transform(test), reference.transform(test), rtol=0, atol=1e-10)
    again = ChainedImputer.from_arrays(ours.to_arrays("p_"), "p_")
    np.testing.assert_array_equal(again.transform(test), ours.transform(test))


def test_imputation_uses_correlated_features():
    truth = low_rank(50, 12, 2)
    gaps = with_gaps(truth, 0.1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imputer = ChainedImputer.fit(with_gaps(low_rank(400, 12, 0), 0.05, 1), neighbours=11)
    missing = np.isnan(gaps)
    err_chain = np.abs(imputer.transform(gaps) - truth)[missing].mean()
    err_mean = np.abs(np.where(missing, imputer.means, gaps) - truth)[missing].mean()
    assert err_chain < 0.5 * err_mean


def test_preparation_scales_to_unit_range_and_inverts():
    rng = np.random.default_rng(0)
    x1 = rng.uniform(1000, 5000, size=(100, 4))
    x2 = x1 * 0.98
    x2[50:] = np.nan  # unpaired subjects
    y = np.column_stack([rng.uniform(40, 80, 100), rng.integers(0, 2, 100)])
    prep = Preparation.fit(x1, x2, y)
    z = prep.features(x1)
    assert z.min() == pytest.approx(-1.0) and z.max() <= 1.0
    np.testing.assert_allclose(prep.inverse_features(z), x1)
    scaled_y = prep.labels(y)
    assert scaled_y[:, 0].mean() == pytest.approx(0, abs=1e-9) and scaled_y[:, 0].std() == pytest.approx(1)
    np.testing.assert_array_equal(scaled_y[:, 1], y[:, 1])  # binary labels kept
    again = Preparation.from_arrays(prep.to_arrays())
    np.testing.assert_array_equal(again.features(x1), z)


def test_a_feature_constant_in_training_is_generated_as_that_constant():
    """The placeholder span of 1 mapped a constant feature's [-1, 1] onto [x_min, x_min + 1]."""
    rng = np.random.default_rng(0)
    x1 = np.column_stack([rng.uniform(1000, 5000, 50), np.full(50, 1000.0)])
    x2 = x1.copy()
    prep = Preparation.fit(x1, x2, rng.uniform(40, 80, (50, 1)))
    z = np.column_stack([np.linspace(-1, 1, 11), np.linspace(-1, 1, 11)])  # what a sampler may return
    back = prep.inverse_features(z)
    np.testing.assert_array_equal(back[:, 1], 1000.0)
    np.testing.assert_allclose(back[:, 0], (z[:, 0] + 1) / 2 * (prep.x_max[0] - prep.x_min[0]) + prep.x_min[0])
    np.testing.assert_array_equal(prep.features(x1)[:, 1], -1.0)
    np.testing.assert_allclose(prep.inverse_features(prep.features(x1)), x1)


def test_preparation_refuses_infinite_values():
    """An infinite value went through the imputer as NaN rows (tables are checked with names earlier)."""
    x = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 6.0]])
    prep = Preparation.fit(x, x, np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"features contain infinite values \(1, the first at \(row, column\) \(1, 0\)\)"):
        prep.features(np.array([[1.0, 2.0], [np.inf, np.nan]]))
    with pytest.raises(ValueError, match="labels contain infinite values"):
        prep.labels(np.array([[-np.inf]]))
    with pytest.raises(ValueError, match="x1 contain infinite values"):
        Preparation.fit(np.where(np.isnan(x), np.inf, x), x, np.zeros((3, 1)))
