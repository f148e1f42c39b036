"""DDAE on the tiny synthetic cohort (two sites, travellers imaged at both)."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from neurodiff.data.covariates import CovariateEncoding
from neurodiff.methods.harmonization import PRESETS, DisentangledDiffAE, next_site
from neurodiff.nets.diffae_unet import CovariateEncoder

TINY = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,), head_channels=8,
            latent_dim=16, covariate_latent_dim=4, timesteps=100, lr=1e-3, ema_decay=None, batch_size=8,
            dropout=0.0, progress=False, inversion_steps=10, render_steps=10, sensitivity_every=0)


@pytest.fixture(scope="module")
def fitted(tiny_image_cohort):
    _, frame, images = tiny_image_cohort
    # the sensitivities are logged with their own noise: logging them does not change the training
    return DisentangledDiffAE(**{**TINY, "sensitivity_every": 10}, max_steps=40, adversarial_weight=1.0).fit(frame,
                                                                                                          images)


def test_transform_maps_to_a_training_site(fitted, tiny_image_cohort):
    _, frame, images = tiny_image_cohort
    assert fitted.sites == ["site0", "site1"]
    to0 = fitted.transform(images[:4], frame.iloc[:4], "site0")
    to1 = fitted.transform(images[:4], frame.iloc[:4], "site1")
    assert to0.shape == images[:4].shape and 0 <= to0.min() and to0.max() <= 1
    assert np.abs(to0 - to1).mean() > 1e-5  # the site latent steers the rendering
    assert np.abs(to0 - images[:4]).mean() < 0.1  # anatomy kept: close to the input
    assert fitted.unknown_latents(images[:4], frame.iloc[:4]).shape == (4, 16)


def test_adversarial_site_loss_is_logged(fitted):
    losses = fitted.history_["metrics"]["site_loss"]
    assert len(losses) == 40 and np.isfinite(losses).all()


def test_site_and_semantic_sensitivities_are_logged_beside_the_latent_one(fitted):
    for key in ("latent_sensitivity", "site_sensitivity", "semantic_sensitivity"):
        log = fitted.history_[key]
        assert [entry["step"] for entry in log] == [10, 20, 30, 40], key
        assert all(np.isfinite(entry["value"]) and entry["value"] > 0 for entry in log), key
    # the probe batch (the first 8 images) is all site0: swapping the whole latent between its images
    # hardly moves the site, yet the decoder does use the site (at step 40: 0.015 against 0.009)
    assert fitted.history_["site_sensitivity"][-1]["value"] > 1e-3


class _SiteBlindEncoder(CovariateEncoder):
    """f_ψ that cannot see the site: the site's one-hot columns are zeroed before its MLP."""

    def __init__(self, covariate_dim: int, latent_dim: int, site_columns: list[int]):
        super().__init__(covariate_dim, latent_dim)
        self.site_columns = site_columns

    def forward(self, covariates):
        return super().forward(covariates.index_fill(1, torch.tensor(self.site_columns), 0.0))


class _SiteBlindDDAE(DisentangledDiffAE):
    def _assemble(self, encoder, unet, covariate_encoder):
        columns = [i for i, name in enumerate(self.latent_encoding_.columns) if name.startswith("site=")]
        assert len(columns) == 2
        blind = _SiteBlindEncoder(covariate_encoder.covariate_dim, covariate_encoder.latent_dim, columns)
        return super()._assemble(encoder, unet, blind)


def test_a_decoder_blind_to_the_site_has_site_sensitivity_zero(tiny_image_cohort):
    """The whole-latent guard passes (the decoder uses z_υ, age and sex) while the site is ignored:
    only the site sensitivity shows that harmonising this model would change nothing."""
    _, frame, images = tiny_image_cohort
    blind = _SiteBlindDDAE(**{**TINY, "sensitivity_every": 5}, max_steps=10).fit(frame, images)
    assert [entry["step"] for entry in blind.history_["site_sensitivity"]] == [5, 10]
    assert all(entry["value"] == pytest.approx(0.0, abs=1e-7) for entry in blind.history_["site_sensitivity"])
    assert all(entry["value"] > 1e-4 for entry in blind.history_["latent_sensitivity"])
    assert all(entry["value"] > 0 for entry in blind.history_["semantic_sensitivity"])
    to0 = blind.transform(images[:2], frame.iloc[:2], "site0")
    np.testing.assert_array_equal(to0, blind.transform(images[:2], frame.iloc[:2], "site1"))  # indeed: no effect


def test_next_site_moves_every_row_to_another_site_and_keeps_the_rest():
    frame = pd.DataFrame({"age": [60.0, 70.0, 80.0], "sex": ["F", "M", "F"], "site": ["a", "b", "c"]})
    encoding = CovariateEncoding.fit(frame)
    encoded = torch.as_tensor(encoding.transform(frame))
    moved = next_site(encoded, encoding)
    expected = encoding.transform(frame.assign(site=["b", "c", "a"]))  # the next site, the last to the first
    np.testing.assert_array_equal(moved.numpy(), expected)
    assert torch.equal(encoded, torch.as_tensor(encoding.transform(frame)))  # the input is not modified
    without_site = CovariateEncoding.fit(frame, categorical=())
    assert torch.equal(next_site(encoded[:, :2], without_site), encoded[:, :2])  # no site: unchanged
    assert next_site(None, encoding) is None
    with pytest.raises(ValueError, match=r"covariates shaped \(N, 5\), got \(3, 4\)"):
        next_site(encoded[:, :4], encoding)


def test_unseen_target_site_is_a_clear_error(fitted, tiny_image_cohort):
    _, frame, images = tiny_image_cohort
    with pytest.raises(ValueError, match="target site 'site7' was not seen in training; known sites: site0, site1"):
        fitted.transform(images[:2], frame.iloc[:2], "site7")
    with pytest.raises(ValueError, match="site9"):  # an input from an unseen site
        fitted.transform(images[:2], frame.iloc[:2].assign(site="site9"), "site0")


def test_single_site_is_refused(tiny_image_cohort):
    _, frame, images = tiny_image_cohort
    one = (frame["site"] == "site0").to_numpy()
    with pytest.raises(ValueError, match="at least two sites"):
        DisentangledDiffAE(**TINY, max_steps=1).fit(frame[one], images[one])


@pytest.mark.parametrize("relabel", [lambda s: " " + s + " ", lambda s: float(s.removeprefix("site")) + 1],
                         ids=["spaces", "numbers"])
def test_site_labels_with_spaces_or_numbers_are_the_categories_the_encoding_sees(tiny_image_cohort, relabel):
    """A CSV cell " site0 " is site "site0" and a site code 1.0 is the category "1" (not a continuous
    covariate), also for the adversarial site head's targets."""
    _, frame, images = tiny_image_cohort
    model = DisentangledDiffAE(**TINY, max_steps=1, adversarial_weight=1.0)
    model.fit(frame.assign(site=frame["site"].map(relabel)), images)
    expected = ["site0", "site1"] if isinstance(relabel("site0"), str) else ["1", "2"]
    assert model.sites == expected
    assert np.isfinite(model.history_["metrics"]["site_loss"]).all()
    # the target is named as the training table named it (1.0, " site1 "), and is that site
    target = relabel("site1")
    relabelled = frame.iloc[:2].assign(site=frame["site"].iloc[:2].map(relabel))
    np.testing.assert_array_equal(model.transform(images[:2], relabelled, target),
                                  model.transform(images[:2], relabelled, expected[1]))


def test_an_image_outside_0_1_is_named_by_its_file(tiny_image_cohort):
    _, frame, images = tiny_image_cohort
    bad = images.copy()
    bad[3] += 1.5
    name = f"image {frame['resolved_path'].iloc[3]} (subject {frame['subject_id'].iloc[3]}) has"
    with pytest.raises(ValueError, match=re.escape(name) + r".*\(1 of \d+ images outside\)"):
        DisentangledDiffAE(**TINY, max_steps=1).fit(frame, bad)


def test_missing_covariate_column(tiny_image_cohort):
    _, frame, images = tiny_image_cohort
    with pytest.raises(ValueError, match="'sex'"):
        DisentangledDiffAE(**TINY, max_steps=1).fit(frame.drop(columns=["sex"]), images)


def test_save_load_round_trip(fitted, tiny_image_cohort, tmp_path):
    _, frame, images = tiny_image_cohort
    fitted.save(tmp_path / "m")
    loaded = DisentangledDiffAE.load(tmp_path / "m")
    assert loaded.adversarial_weight == 1.0 and loaded.sites == fitted.sites
    for key in ("latent_sensitivity", "site_sensitivity", "semantic_sensitivity"):
        assert loaded.training_summary_[key] == fitted.history_[key]
    np.testing.assert_allclose(loaded.transform(images[:2], frame.iloc[:2], "site0"),
                               fitted.transform(images[:2], frame.iloc[:2], "site0"), atol=1e-5)


def test_presets():
    assert PRESETS["quick"]["covariate_latent_dim"] == 16
    model = DisentangledDiffAE.preset("quick", max_steps=3)
    assert model.latent_covariates == ("age", "sex", "site") and model.max_steps == 3


def test_fit_takes_a_manifest_file_with_its_images_in_memory(tiny_image_cohort):
    path, frame, images = tiny_image_cohort
    from_file = DisentangledDiffAE(**TINY, max_steps=1).fit(path, images)
    from_frame = DisentangledDiffAE(**TINY, max_steps=1).fit(frame, images)
    np.testing.assert_allclose(from_file.encode(images[:2], frame.iloc[:2]),
                               from_frame.encode(images[:2], frame.iloc[:2]), atol=1e-6)


def test_default_steps_fit_a_model_with_fewer_diffusion_steps(tiny_image_cohort):
    """inversion_steps/render_steps None: 50, or T when the model has fewer steps; explicit ones are kept."""
    _, frame, images = tiny_image_cohort
    params = {**TINY, "timesteps": 8, "inversion_steps": None, "render_steps": None}
    model = DisentangledDiffAE(**params, max_steps=1).fit(frame, images)
    assert model.transform(images[:2], frame.iloc[:2], "site1").shape == images[:2].shape
    model.set_params(inversion_steps=20)
    with pytest.raises(ValueError, match="DDIM steps must be an integer in \\[1, 8\\], got 20"):
        model.transform(images[:2], frame.iloc[:2], "site1")


@pytest.mark.parametrize("weight", [-1.0, float("nan"), True])
def test_a_negative_or_nan_adversarial_weight_is_refused(tiny_image_cohort, weight):
    """A negative weight trains the encoder to encode the site (the loss is unbounded below)."""
    _, frame, images = tiny_image_cohort
    with pytest.raises(ValueError, match="adversarial_weight must be a finite number ≥ 0"):
        DisentangledDiffAE(**TINY, max_steps=1, adversarial_weight=weight).fit(frame, images)
