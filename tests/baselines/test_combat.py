"""Voxel-wise ComBat: planted site effects are removed, age kept, the target site left alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurodiff.baselines.combat import ComBat, nonparametric_eb, parametric_eb

SITES = ("a", "b", "c")
ADD = {"a": 0.0, "b": 0.08, "c": -0.06}      # additive site effect
SCALE = {"a": 0.03, "b": 0.05, "c": 0.015}   # site noise sd (multiplicative effect)
AGE_SLOPE = 0.003                             # per year, every voxel
SIZE = 8


def cohort(seed: int = 0, per_site: int = 60):
    """8×8 'images': brain (values ~0.5) in the middle, zero background at the border."""
    rng = np.random.default_rng(seed)
    sites = np.repeat(SITES, per_site)
    n = len(sites)
    age = rng.uniform(20, 80, n)
    sex = rng.integers(0, 2, n)
    base = rng.uniform(0.4, 0.6, (SIZE, SIZE))
    images = np.zeros((n, 1, SIZE, SIZE))
    for i, site in enumerate(sites):
        brain = (base + AGE_SLOPE * (age[i] - 50) + 0.02 * sex[i] + ADD[site]
                 + SCALE[site] * rng.standard_normal((SIZE, SIZE)))
        images[i, 0, 1:-1, 1:-1] = brain[1:-1, 1:-1]
    covariates = pd.DataFrame({"age": age, "sex": np.where(sex == 1, "M", "F"), "site": sites})
    return np.clip(images, 0, 1).astype(np.float32), covariates


def age_residual(values: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Per-voxel values (n, p) with the planted age effect removed."""
    return values - AGE_SLOPE * (age[:, None] - 50)


@pytest.fixture(scope="module")
def data():
    images, covariates = cohort()
    return images, covariates, ComBat().fit(images, covariates)


def test_default_mask_is_the_brain(data):
    _, _, combat = data
    expected = np.zeros((SIZE, SIZE), dtype=bool)
    expected[1:-1, 1:-1] = True
    np.testing.assert_array_equal(combat.mask_, expected)
    assert combat.n_features_ == 36 and combat.sites_ == list(SITES)


def test_sites_take_on_the_target_mean_and_variance_and_age_is_kept(data):
    images, covariates, combat = data
    out = combat.transform(images, covariates, target_site="a")
    assert out.shape == images.shape and out.dtype == np.float32
    age, sites = covariates["age"].to_numpy(), covariates["site"].to_numpy()
    inside = out[:, 0, 1:-1, 1:-1].reshape(len(out), -1)
    raw = images[:, 0, 1:-1, 1:-1].reshape(len(out), -1)
    target = age_residual(inside[sites == "a"], age[sites == "a"])
    for site in ("b", "c"):
        rows = sites == site
        before, after = age_residual(raw[rows], age[rows]), age_residual(inside[rows], age[rows])
        # raw: planted offset 0.08 / -0.06 and sd 0.05 / 0.015; after: the target's (0, 0.03)
        assert abs((before.mean(0) - target.mean(0)).mean()) > 0.05
        assert abs((after.mean(0) - target.mean(0)).mean()) < 0.01
        assert np.median(after.std(0) / target.std(0)) == pytest.approx(1.0, abs=0.15)
        # age effect preserved: per-voxel slope on age still the planted one, correlation kept
        slope = np.polyfit(age[rows], inside[rows].mean(1), 1)[0]
        assert slope == pytest.approx(AGE_SLOPE, rel=0.15)
        assert np.corrcoef(age[rows], inside[rows].mean(1))[0, 1] > 0.9


def test_target_site_images_come_back_unchanged_and_background_is_kept(data):
    import warnings

    from neurodiff.data.covariates import CovariateWarning

    images, covariates, combat = data
    for target in SITES:
        with warnings.catch_warnings():  # the target site was looked up with a made-up age 0, which warned
            warnings.simplefilter("error", CovariateWarning)
            out = combat.transform(images, covariates, target_site=target)
        rows = (covariates["site"] == target).to_numpy()
        np.testing.assert_allclose(out[rows], images[rows], atol=1e-6)
        np.testing.assert_array_equal(out[:, :, 0], images[:, :, 0])  # outside the mask
        assert out.min() >= 0.0 and out.max() <= 1.0


def test_new_images_and_numeric_sex_codes(data):
    combat = data[2]
    new_images, new_covariates = cohort(seed=1, per_site=5)
    new_covariates["sex"] = (new_covariates["sex"] == "M").astype(int)
    with pytest.raises(ValueError, match="sex"):
        combat.transform(new_images, new_covariates, "a")  # trained on F/M, not 0/1
    new_covariates["sex"] = np.where(new_covariates["sex"] == 1, "male", "female")
    out = combat.transform(new_images, new_covariates, "b")
    rows = (new_covariates["site"] == "b").to_numpy()
    np.testing.assert_allclose(out[rows], new_images[rows], atol=1e-6)


def test_eb_false_keeps_the_per_site_estimates_and_eb_shrinks(data):
    images, covariates, combat = data
    plain = ComBat(eb=False).fit(images, covariates)
    np.testing.assert_array_equal(plain.gamma_star_, plain.gamma_hat_)
    np.testing.assert_array_equal(plain.delta_star_, plain.delta_hat_)
    np.testing.assert_allclose(plain.gamma_hat_, combat.gamma_hat_)
    assert not np.allclose(combat.gamma_star_, combat.gamma_hat_, rtol=0, atol=1e-6)
    g_bar = combat.gamma_hat_.mean(axis=1, keepdims=True)  # shrunk towards each site's prior mean
    assert np.all(np.abs(combat.gamma_star_ - g_bar) <= np.abs(combat.gamma_hat_ - g_bar) + 1e-9)
    assert all(1 <= used < 1000 for used in combat.eb_iterations_)


def test_non_parametric_priors_agree_with_parametric(data):
    images, covariates, combat = data
    other = ComBat(parametric=False).fit(images, covariates)
    np.testing.assert_allclose(other.gamma_star_, combat.gamma_star_, atol=0.1)
    a = combat.transform(images, covariates, "c")
    b = other.transform(images, covariates, "c")
    assert np.abs(a - b).mean() < 0.005


def test_empirical_bayes_on_a_known_case():
    """Many images per site: little shrinkage; a strong prior (equal γ̂): γ* = γ̂."""
    rng = np.random.default_rng(0)
    gamma_hat, delta_hat = rng.normal(0.5, 0.2, 200), rng.uniform(0.8, 1.2, 200)
    g, d, _ = parametric_eb(gamma_hat, delta_hat, n=100_000)
    np.testing.assert_allclose(g, gamma_hat, atol=1e-3)
    np.testing.assert_allclose(d, delta_hat, atol=0.01)
    g, d = nonparametric_eb(np.full(50, 0.3), np.full(50, 2.0), n=5)
    np.testing.assert_allclose(g, 0.3)
    np.testing.assert_allclose(d, 2.0)


def test_explicit_mask(data):
    images, covariates, _ = data
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[2:5, 2:5] = True
    combat = ComBat(mask=mask).fit(images, covariates)
    out = combat.transform(images, covariates, "a")
    assert combat.n_features_ == 9
    np.testing.assert_array_equal(out[:, :, ~mask], images[:, :, ~mask])
    assert not np.allclose(out[:, :, mask], images[:, :, mask])
    with pytest.raises(ValueError, match="mask has shape"):
        ComBat(mask=np.ones((4, 4), dtype=bool)).fit(images, covariates)
    with pytest.raises(ValueError, match="boolean"):
        ComBat(mask=mask.astype(float)).fit(images, covariates)


def test_errors(data):
    images, covariates, combat = data
    with pytest.raises(ValueError, match=r"'z'.*known sites: 'a', 'b', 'c'"):
        combat.transform(images, covariates, target_site="z")
    unseen = covariates.assign(site=["q"] + list(covariates["site"][1:]))
    with pytest.raises(ValueError, match=r"'q'.*known: 'a', 'b', 'c'"):
        combat.transform(images, unseen, target_site="a")
    with pytest.raises(ValueError, match="at least two sites"):
        ComBat().fit(images[:60], covariates[:60])
    with pytest.raises(ValueError, match="180 images but 179 covariate rows"):
        ComBat().fit(images, covariates[:-1])
    with pytest.raises(ValueError, match="at least 2 images per site"):
        ComBat().fit(images[59:], covariates[59:])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ComBat().fit(images * 2, covariates)
    with pytest.raises(ValueError, match="fitted on"):
        combat.transform(images[:, :, :4, :4], covariates, "a")
    with pytest.raises(TypeError, match="DataFrame"):
        combat.transform(images, covariates.to_numpy(), "a")
    with pytest.raises(RuntimeError, match="not fitted"):
        ComBat().transform(images, covariates, "a")


def test_a_small_target_site_is_matched_at_its_own_mean():
    """Sites mapped to a 4-image target land on that target's images, not on its shrunk effect."""
    rng = np.random.default_rng(0)
    p = 64
    base, shift = rng.uniform(0.3, 0.7, p), rng.normal(0, 0.05, p)
    sites = np.array(["big"] * 40 + ["small"] * 4)
    values = np.stack([base + (shift if s == "small" else 0) + rng.normal(0, 0.02 * (1 + (s == "small")), p)
                       for s in sites])
    images = np.clip(values, 0, 1).reshape(-1, 1, 8, 8)
    covariates = pd.DataFrame({"age": rng.uniform(20, 80, len(sites)), "sex": rng.choice(["F", "M"], len(sites)),
                               "site": sites})
    out = ComBat(mask=np.ones((8, 8), dtype=bool)).fit(images, covariates).transform(images, covariates, "small")
    flat = out.reshape(len(out), -1)
    gap = np.abs(flat[sites == "big"].mean(0) - flat[sites == "small"].mean(0)).mean()
    # raw 0.042; mapped to the target's shrunk effect (the old rule) 0.006; neuroCombat's reference batch 0.001
    assert gap < 0.003


def test_a_covariate_determined_by_site_is_refused_and_a_constant_one_left_out(data):
    images, covariates, combat = data
    men = covariates.assign(sex="M")
    only_men = ComBat().fit(images, men)
    assert only_men.constant_covariates_ == {"sex": 1.0} and combat.constant_covariates_ == {}
    out = only_men.transform(images[:6], men[:6], "a")
    assert out.shape == images[:6].shape and np.isfinite(out).all()
    with pytest.raises(ValueError, match=r"all had the same 'sex'.*image 2 has 'sex' = 'F'"):
        only_men.transform(images[:6], men[:6].assign(sex=["M", "M", "F", "M", "M", "M"]), "a")
    by_site = covariates.assign(sex=np.where(covariates["site"] == "a", "F", "M"))
    with pytest.raises(ValueError, match="'sex' is determined by the site"):
        ComBat().fit(images, by_site)


def test_a_bad_image_is_named_by_its_position(data):
    images, covariates, _ = data
    bad = images.copy()
    bad[7, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="first: image 7"):
        ComBat().fit(bad, covariates)
    bad[7, 0, 3, 3], bad[9, 0, 2, 2] = 0.5, 1.5
    with pytest.raises(ValueError, match="first outside: image 9"):
        ComBat().fit(bad, covariates)


def test_the_image_check_passes_an_empty_batch():
    """Callers such as the cVAE's transform accept zero images; naming a bad image must not break that."""
    from neurodiff.baselines.combat import check_images

    assert check_images(np.zeros((0, 1, 8, 8))).shape == (0, 1, 8, 8)
