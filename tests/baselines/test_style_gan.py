import numpy as np
import pandas as pd
import pytest
import torch

from neurodiff.base import NotFittedError
from neurodiff.baselines.style_gan import SiteHeads, StyleEncodingGAN, StyleGenerator, n_downsamplings

TINY = dict(base_channels=4, style_dim=8, max_steps=20, batch_size=8, lr=1e-3, progress=False)


def two_sites(n: int = 24, size: int = 16, seed: int = 0):
    """Blob phantoms; site "B" is site "A"'s intensity scaled by 0.6."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / (size - 1) - 0.5
    images = np.empty((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        cx, cy = rng.uniform(-0.1, 0.1, size=2)
        radius = rng.uniform(0.25, 0.4)
        blob = np.clip(1.2 - np.hypot(xx - cx, yy - cy) / radius, 0, 1)
        images[i, 0] = np.clip(blob + 0.03 * rng.normal(size=blob.shape), 0, 1)
    site = np.where(np.arange(n) % 2 == 0, "A", "B")
    images[site == "B"] *= 0.6
    covariates = pd.DataFrame({"age": rng.uniform(20, 80, n), "sex": rng.integers(0, 2, n), "site": site})
    return images, covariates


@pytest.fixture(scope="module")
def fitted():
    images, covariates = two_sites()
    return StyleEncodingGAN(**TINY).fit(images, covariates), images, covariates


def test_networks_shapes_and_untrained_generator_is_the_identity():
    assert n_downsamplings(16, 16) == 2 and n_downsamplings(128, 128) == 5 and n_downsamplings(128, 96, limit=3) == 3
    gen = StyleGenerator(base_channels=4, style_dim=8, n_down=2)
    x = torch.rand(3, 1, 20, 12)  # any size: decoder upsamples to the encoder's resolutions
    out = gen(x, torch.randn(3, 8))
    assert out.shape == x.shape
    torch.testing.assert_close(out, x.clamp(1e-3, 1 - 1e-3))  # zero-initialised residual
    heads = SiteHeads(base_channels=4, n_down=2, n_sites=3, out_dim=8)
    y = torch.tensor([0, 2, 1])
    assert heads(x, y).shape == (3, 8)
    assert SiteHeads(base_channels=4, n_down=2, n_sites=3, out_dim=1)(x, y).shape == (3,)
    torch.nn.init.normal_(gen.to_rgb[2].weight, std=0.1)  # once trained, the output depends on the style
    assert (gen(x, torch.randn(3, 8)) - gen(x, torch.randn(3, 8))).abs().mean() > 1e-3
    all_heads = heads.heads(heads.trunk(x).mean(dim=(2, 3))).view(3, 3, 8)  # the right head per row
    torch.testing.assert_close(heads(x, y), all_heads[torch.arange(3), y])


def test_fit_transform_shapes_range_and_finite_losses(fitted):
    model, images, covariates = fitted
    assert model.sites_ == ["A", "B"] and model.image_shape_ == (1, 16, 16)
    assert model.site_counts_ == {"A": 12, "B": 12}
    assert model.site_styles_.shape == (2, 8)
    out = model.transform(images, covariates, target_site="A")
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    history = model.history_
    assert history["steps"] == 20
    for key in ("d_loss", "d_real", "d_fake", "r1", "g_loss", "g_adv", "sty", "cyc"):
        assert len(history[key]) == 20 and np.isfinite(history[key]).all(), key
    assert model.encode_style(images[:5], "B").shape == (5, 8)


def test_different_target_sites_give_different_outputs(fitted):
    model, images, covariates = fitted
    to_a = model.transform(images, covariates, "A")
    to_b = model.transform(images, covariates, "B")
    # 20 steps move the zero-initialised output layer little, so the gap is small but clearly non-zero
    assert np.abs(model.site_styles_[0] - model.site_styles_[1]).mean() > 1e-2
    assert np.abs(to_a - to_b).max() > 1e-6
    # the input's site column is not read: another site column gives the same output
    relabelled = covariates.assign(site="A")
    np.testing.assert_array_equal(model.transform(images, relabelled, "B"), to_b)
    np.testing.assert_array_equal(model.transform(images, None, "B"), to_b)
    # reference-guided: the mean style of the training images of B reproduces site_styles_
    b_images = images[covariates["site"].to_numpy() == "B"]
    np.testing.assert_allclose(model.transform(images, covariates, "B", reference_images=b_images), to_b, atol=1e-6)


def test_same_seed_gives_identical_models():
    images, covariates = two_sites()
    params = {**TINY, "max_steps": 6}
    first = StyleEncodingGAN(**params, seed=3).fit(images, covariates).transform(images, covariates, "B")
    second = StyleEncodingGAN(**params, seed=3).fit(images, covariates).transform(images, covariates, "B")
    np.testing.assert_array_equal(first, second)
    other = StyleEncodingGAN(**params, seed=4).fit(images, covariates).transform(images, covariates, "B")
    assert not np.array_equal(first, other)


def test_errors():
    images, covariates = two_sites(n=8)
    model = StyleEncodingGAN(**{**TINY, "max_steps": 1})
    with pytest.raises(NotFittedError):
        model.transform(images, covariates, "A")
    with pytest.raises(ValueError, match="at least 2 sites"):
        model.fit(images, covariates.assign(site="A"))
    with pytest.raises(ValueError, match="8 rows but covariates has 7"):
        model.fit(images, covariates.iloc[:7])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.fit(images * 2 + 0.5, covariates)
    with pytest.raises(ValueError, match="no 'site' column"):
        model.fit(images, covariates.drop(columns="site"))
    with pytest.raises(ValueError, match="max_steps"):
        StyleEncodingGAN(max_steps=0).fit(images, covariates)
    model.fit(images, covariates)
    with pytest.raises(ValueError, match=r"unknown target_site 'C'.*\['A', 'B'\]"):
        model.transform(images, covariates, "C")
    with pytest.raises(ValueError, match="8 rows but covariates has 3"):
        model.transform(images, covariates.iloc[:3], "A")
    with pytest.raises(ValueError, match="trained on"):
        model.transform(images[:, :, :8, :8], None, "A")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.transform(images - 0.5, covariates, "A")


def test_save_and_load_give_identical_outputs(fitted, tmp_path):
    model, images, covariates = fitted
    model.save(tmp_path / "gan")
    loaded = StyleEncodingGAN.load(tmp_path / "gan")
    assert loaded.sites_ == ["A", "B"] and loaded.discriminator_ is None
    np.testing.assert_array_equal(loaded.transform(images, covariates, "A"), model.transform(images, covariates, "A"))


def test_site_codes_compare_as_the_covariate_encodings_compare_them():
    """Sites read as 1.0 / 2.0 (a float column) are "1" / "2", and a target 1 or " 1 " is site "1"."""
    images, covariates = two_sites(n=8)
    coded = covariates.assign(site=np.where(covariates["site"] == "A", 1.0, 2.0))
    model = StyleEncodingGAN(**{**TINY, "max_steps": 1}).fit(images, coded)
    assert model.sites_ == ["1", "2"]
    expected = model.transform(images, coded, "1")
    for target in (1, 1.0, " 1 "):
        np.testing.assert_array_equal(model.transform(images, coded, target), expected)
    model.sites_ = ["1.0", "2.0"]  # as models saved before kept a float column's sites
    np.testing.assert_array_equal(model.transform(images, coded, 1.0), expected)
