import numpy as np
import pytest

from neurodiff.baselines.simple_imputation import LastObservationCarriedForward, RidgeImputation


def test_locf_copies_the_first_visit():
    x1 = np.random.default_rng(0).uniform(-1, 1, (5, 3))
    np.testing.assert_array_equal(LastObservationCarriedForward().fit(x1, None, x1).predict(x1, np.zeros((5, 1))), x1)


def test_ridge_recovers_a_linear_follow_up():
    rng = np.random.default_rng(1)
    x1, y = rng.uniform(-0.5, 0.5, (400, 6)), rng.integers(0, 2, (400, 2)).astype(float)
    x2 = 0.9 * x1 - 0.2 * y[:, :1] + 0.01 * rng.normal(size=(400, 6))
    model = RidgeImputation().fit(x1[:300], y[:300], x2[:300])
    error = np.abs(model.predict(x1[300:], y[300:]) - x2[300:]).mean()
    assert error < 0.02 and model.alpha_ in model.alphas
    with pytest.raises(ValueError, match="x1 has 300 rows but x2 has 10"):
        RidgeImputation().fit(x1[:300], y[:300], x2[:10])
