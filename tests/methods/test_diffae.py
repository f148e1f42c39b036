"""The DiffAE core on the tiny synthetic cohort (real MNI152 anatomy, 32×32 slices, two sites)."""

import numpy as np
import pandas as pd
import pytest

from neurodiff.evaluation.image_quality import psnr
from neurodiff.methods.diffae import PRESETS, DiffusionAutoencoder

TINY = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,), head_channels=8,
            latent_dim=16, timesteps=100, lr=1e-3, ema_decay=None, batch_size=8, dropout=0.0, progress=False)


@pytest.fixture(scope="module")
def cohort(tiny_image_cohort):
    return tiny_image_cohort


@pytest.fixture(scope="module")
def trained(cohort):
    """Trained for 150 steps (about 10 s), with age seen by the encoder."""
    manifest, _, _ = cohort
    return DiffusionAutoencoder(**TINY, max_steps=150, sensitivity_every=50, encoder_covariates=("age",)).fit(manifest)


def test_encode_invert_render_reconstructs_closely(trained, cohort):
    _, frame, images = cohort
    x, covariates = images[:4], frame.iloc[:4]
    z = trained.encode(x, covariates)
    assert z.shape == (4, 16)
    again = trained.render(trained.encode_stochastic(x, z, steps=50), z, steps=50)
    assert again.shape == x.shape and again.min() >= 0 and again.max() <= 1
    assert np.abs(again - x).mean() < 0.01  # mean intensity of these slices is ~0.35
    assert psnr(again, x).min() > 30
    np.testing.assert_allclose(trained.reconstruct(x, covariates, inversion_steps=50, render_steps=50), again,
                               atol=1e-6)


def test_the_decoder_uses_its_latent(trained, cohort):
    """The known DiffAE failure is a decoder that ignores z: the same x_T under two latents must differ."""
    _, frame, images = cohort
    x = images[:4]
    z = trained.encode(x, frame.iloc[:4])
    x_T = trained.encode_stochastic(x, z, steps=20)
    same = trained.render(x_T, z, steps=20)
    swapped = trained.render(x_T, z[::-1].copy(), steps=20)
    # float noise is ~1e-7; a decoder that ignored z (an encoder giving a constant latent) gave 6e-8
    assert np.abs(same - swapped).mean() > 1e-5
    log = trained.history_["latent_sensitivity"]
    assert [entry["step"] for entry in log] == [50, 100, 150]
    assert all(entry["value"] > 1e-5 for entry in log)  # (it grows with longer training: 4e-4 → 7e-3 by step 600)


def test_age_conditions_the_encoder(trained, cohort):
    _, frame, images = cohort
    older = frame.iloc[:4].assign(age=frame["age"].iloc[:4] + 20)
    assert not np.allclose(trained.encode(images[:4], frame.iloc[:4]), trained.encode(images[:4], older))
    with pytest.raises(ValueError, match=r"needs the covariates \['age'\]"):
        trained.encode(images[:4])


def test_save_load_round_trip(trained, cohort, tmp_path):
    _, frame, images = cohort
    trained.save(tmp_path / "model")
    loaded = DiffusionAutoencoder.load(tmp_path / "model")
    z = trained.encode(images[:3], frame.iloc[:3])
    np.testing.assert_allclose(loaded.encode(images[:3], frame.iloc[:3]), z, atol=1e-6)
    x_T = np.random.default_rng(0).standard_normal(images[:3].shape).astype(np.float32)
    np.testing.assert_allclose(loaded.render(x_T, z, steps=5), trained.render(x_T, z, steps=5), atol=1e-5)
    assert loaded.training_summary_["latent_sensitivity"] == trained.history_["latent_sensitivity"]


def test_bad_images_are_refused(trained, cohort):
    _, frame, images = cohort
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        trained.encode(images[:2] * 300, frame.iloc[:2])
    with pytest.raises(ValueError, match=r"trained on \(1, 32, 32\)"):
        trained.encode(np.zeros((2, 1, 16, 16), np.float32), frame.iloc[:2])
    with pytest.raises(ValueError, match="NaN"):
        trained.encode(np.full((2, 1, 32, 32), np.nan, np.float32), frame.iloc[:2])
    with pytest.raises(ValueError, match="3 covariate rows for 2 images"):
        trained.encode(images[:2], frame.iloc[:3])


def test_site_through_a_covariate_encoder_and_unseen_site(cohort):
    _, frame, images = cohort
    model = DiffusionAutoencoder(**TINY, max_steps=2, sensitivity_every=0, latent_covariates=("age", "sex", "site"),
                                 covariate_latent_dim=4).fit(frame, images)
    assert model.encode(images[:2], frame.iloc[:2]).shape == (2, 16 + 4)
    with pytest.raises(ValueError, match="site9"):
        model.encode(images[:2], frame.iloc[:2].assign(site="site9"))


def test_training_resumes_from_its_checkpoint(cohort, tmp_path):
    _, frame, images = cohort
    params = dict(TINY, sensitivity_every=0, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=2)
    DiffusionAutoencoder(**params, max_steps=4).fit(frame, images)
    resumed = DiffusionAutoencoder(**params, max_steps=6).fit(frame, images)
    straight = DiffusionAutoencoder(**{**params, "checkpoint_dir": None}, max_steps=6).fit(frame, images)
    assert resumed.history_["resumed_at_step"] == 4
    np.testing.assert_allclose(resumed.encode(images[:2]), straight.encode(images[:2]), atol=1e-5)


def test_volumes_train_and_reconstruct_shapes():
    rng = np.random.default_rng(0)
    volumes = rng.uniform(0, 1, (4, 1, 8, 8, 8)).astype(np.float32)
    frame = pd.DataFrame({"subject_id": list("abcd"), "resolved_path": [f"{s}.nii.gz" for s in "abcd"]})
    model = DiffusionAutoencoder(**{**TINY, "attention_resolutions": (4,)}, max_steps=2, sensitivity_every=1)
    model.fit(frame, volumes)
    assert model.reconstruct(volumes[:2], inversion_steps=3, render_steps=3).shape == (2, 1, 8, 8, 8)


def test_presets():
    assert PRESETS["paper"]["timesteps"] == 1000 and PRESETS["paper"]["ema_decay"] == 0.9999
    quick = DiffusionAutoencoder.preset("quick", max_steps=10)
    assert quick.max_steps == 10 and quick.augment is False
    with pytest.raises(ValueError, match="unknown preset"):
        DiffusionAutoencoder.preset("fast")
