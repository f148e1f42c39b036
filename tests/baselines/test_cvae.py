"""Conditional VAE harmoniser: shapes, range, training, site conditioning, errors (tiny, CPU)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from neurodiff.baselines.cvae import ConditionalVAE, ConditionalVAENet

TINY = {"latent_dim": 4, "base_channels": 4, "levels": 2, "batch_size": 16, "lr": 3e-3, "progress": False}


def cohort(n: int = 48, size: int = 16, seed: int = 0):
    """A blob whose brightness depends on the site and whose size depends on age."""
    rng = np.random.default_rng(seed)
    sites = np.array(["a", "b", "c"])[np.arange(n) % 3]
    age = rng.uniform(20, 80, n)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    radius = size / 4 + (age - 50)[:, None, None] / 30
    brightness = np.select([sites == "a", sites == "b"], [0.5, 0.8], 0.3)[:, None, None]
    images = brightness * (np.hypot(yy, xx)[None] < radius) + 0.02 * rng.standard_normal((n, size, size))
    covariates = pd.DataFrame({"age": age, "sex": rng.choice(["F", "M"], n), "site": sites})
    return np.clip(images, 0, 1)[:, None].astype(np.float32), covariates


@pytest.fixture(scope="module")
def fitted():
    images, covariates = cohort()
    return images, covariates, ConditionalVAE(max_steps=40, **TINY).fit(images, covariates)


def test_training_reduces_the_loss(fitted):
    _, _, cvae = fitted
    loss = cvae.history_["loss"]
    assert len(loss) == 40
    assert np.mean(loss[-5:]) < 0.7 * np.mean(loss[:5])
    assert set(cvae.history_["metrics"]) == {"recon", "kl"}


def test_transform_shape_range_and_site_conditioning(fitted):
    images, covariates, cvae = fitted
    to_a = cvae.transform(images, covariates, target_site="a")
    to_b = cvae.transform(images, covariates, target_site="b")
    assert to_a.shape == images.shape and to_a.dtype == np.float32
    assert to_a.min() >= 0.0 and to_a.max() <= 1.0
    assert np.abs(to_a - to_b).mean() > 1e-3
    np.testing.assert_array_equal(to_a, cvae.transform(images, covariates, target_site="a"))  # deterministic


def test_seeded_fit_is_reproducible():
    images, covariates = cohort(n=12)
    one = ConditionalVAE(max_steps=3, **TINY).fit(images, covariates).history_["loss"]
    two = ConditionalVAE(max_steps=3, **TINY).fit(images, covariates).history_["loss"]
    assert one == two


def test_network_sizes_and_latent():
    net = ConditionalVAENet((32, 16), cond_dim=5, latent_dim=3, base_channels=4, levels=3)
    x, c = torch.zeros(2, 1, 32, 16), torch.zeros(2, 5)
    mu, logvar = net.encode(x, c)
    assert mu.shape == logvar.shape == (2, 3)
    assert net.decode(mu, c).shape == (2, 1, 32, 16)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*levels = 8"):
        ConditionalVAENet((20, 16), cond_dim=5, levels=3)


def test_save_load_round_trip(fitted, tmp_path):
    images, covariates, cvae = fitted
    cvae.save(tmp_path / "cvae")
    loaded = ConditionalVAE.load(tmp_path / "cvae")
    np.testing.assert_allclose(loaded.transform(images, covariates, "c"), cvae.transform(images, covariates, "c"),
                               atol=1e-6)


def test_errors(fitted):
    images, covariates, cvae = fitted
    with pytest.raises(ValueError, match=r"'z'.*known sites: 'a', 'b', 'c'"):
        cvae.transform(images, covariates, target_site="z")
    unseen = covariates.assign(site=["q"] + list(covariates["site"][1:]))
    with pytest.raises(ValueError, match=r"'q'.*known: 'a', 'b', 'c'"):
        cvae.transform(images, unseen, target_site="a")
    with pytest.raises(ValueError, match="at least two sites"):
        ConditionalVAE(max_steps=1, **TINY).fit(images[::3], covariates[::3])
    with pytest.raises(ValueError, match="48 images but 47 covariate rows"):
        ConditionalVAE(max_steps=1, **TINY).fit(images, covariates[:-1])
    with pytest.raises(ValueError, match="divisible"):
        ConditionalVAE(max_steps=1, **TINY).fit(images[:, :, :14, :14], covariates)
    with pytest.raises(ValueError, match="fitted on"):
        cvae.transform(images[:, :, :8, :8], covariates, "a")
    with pytest.raises(ValueError, match="max_steps"):
        ConditionalVAE(max_steps=0).fit(images, covariates)
