import numpy as np
import pandas as pd
import pytest

from neurodiff.methods.feature_diffusion import FeatureDiffusion

TINY = dict(hidden=(32, 16), emb_dim=16, batch_size=64, progress=False)


def test_learns_a_conditional_mean():
    """x = 3·c + small noise: samples follow the condition and come back in original units."""
    rng = np.random.default_rng(1)
    c = rng.uniform(-1, 1, size=(512, 1))
    X = np.hstack([3 * c + 0.05 * rng.normal(size=(512, 1)), -3 * c + 0.05 * rng.normal(size=(512, 1))])
    model = FeatureDiffusion(**TINY, schedule="cosine", max_epochs=60, lr=3e-3).fit(X, c)
    probe = np.array([[-0.8], [0.0], [0.8]]).repeat(50, axis=0)
    samples = model.sample(cond=probe, seed=0)
    means = samples.reshape(3, 50, 2).mean(axis=1)
    np.testing.assert_allclose(means[:, 0], [-2.4, 0.0, 2.4], atol=0.5)
    np.testing.assert_allclose(means[:, 1], [2.4, 0.0, -2.4], atol=0.5)
    assert model.history_["epoch_loss"][-1] < model.history_["epoch_loss"][0]


def test_unconditional_sampling_stays_in_the_training_range():
    X = np.random.default_rng(2).normal(size=(128, 3))
    model = FeatureDiffusion(**TINY, max_epochs=2, sampler="ddim", ddim_steps=5).fit(X)
    samples = model.sample(10)
    assert samples.shape == (10, 3)
    assert (samples >= X.min(axis=0) - 1e-9).all() and (samples <= X.max(axis=0) + 1e-9).all()


def test_gradient_manipulation_is_recorded():
    X = np.random.default_rng(3).normal(size=(128, 3))
    model = FeatureDiffusion(**TINY, max_epochs=2, gradient_manipulation="calibrated").fit(X)
    assert model.history_["thresholds"]["mode"] == "calibrated"
    assert model.history_["thresholds"]["skip"] == pytest.approx(3 * max(model.history_["calibration_norms"]))


def test_bad_input_names_the_column():
    X = pd.DataFrame({"hippocampus": [1.0, 2.0, 3.0], "ventricles": [1.0, np.nan, 2.0]})
    with pytest.raises(ValueError, match="column 'ventricles'"):
        FeatureDiffusion(**TINY, max_epochs=1).fit(X)
    with pytest.raises(ValueError, match="X has 3 rows but cond has 2"):
        FeatureDiffusion(**TINY, max_epochs=1).fit(np.zeros((3, 2)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="gradient_manipulation must be"):
        FeatureDiffusion(**TINY, max_epochs=1, gradient_manipulation="sometimes").fit(np.zeros((3, 2)))
    model = FeatureDiffusion(**TINY, max_epochs=1).fit(np.random.default_rng(0).normal(size=(8, 2)), np.zeros((8, 1)))
    with pytest.raises(ValueError, match="pass cond"):
        model.sample(3)
    with pytest.raises(ValueError, match="cond has 2 columns, the model was fitted with 1"):
        model.sample(cond=np.zeros((3, 2)))
