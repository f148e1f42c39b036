"""The DiffAE core on the tiny synthetic cohort (real MNI152 anatomy, 32×32 slices, two sites)."""

import numpy as np
import pandas as pd
import pytest
import torch

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


# ---------------------------------------------------------------- small random cohorts (16×16 / 8³, seconds)
SMALL = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(), head_channels=8,
             latent_dim=8, timesteps=50, lr=1e-3, ema_decay=None, batch_size=4, dropout=0.0, progress=False,
             sensitivity_every=0)


def _random_cohort(n=4, size=16, dims=2, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (n, 1) + (size,) * dims).astype(np.float32)
    frame = pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "path": [f"s{i}.nii.gz" for i in range(n)],
                          "age": rng.uniform(50, 80, n).round(1), "sex": ["M", "F"] * (n // 2),
                          "site": ["a", "b"] * (n // 2), "group": ["control"] * n})
    return frame, images


@pytest.mark.parametrize("dims", [2, 3])
def test_augmentation_mirrors_left_right_the_first_spatial_axis(dims, monkeypatch):
    """The images hold left → right along their first spatial axis (dim 2), in 2D and 3D."""
    from neurodiff.diffusion import Diffusion

    frame, _ = _random_cohort(4, dims=dims)
    size = 16 if dims == 2 else 8
    images = np.zeros((4, 1) + (size,) * dims, np.float32)
    images[:, :, : size // 4, : size // 2] = 1.0  # a block on the left, asymmetric along every axis
    seen = []
    loss = Diffusion.loss
    monkeypatch.setattr(Diffusion, "loss", lambda self, net, x0, *a, **k: seen.append(x0.clone()) or
                        loss(self, net, x0, *a, **k))
    DiffusionAutoencoder(**SMALL, max_steps=4, augment=True).fit(frame, images)
    x = torch.as_tensor(images[:1]) * 2 - 1
    seen = torch.cat(seen)
    flipped = (seen == x.flip(2)).flatten(1).all(1)
    unflipped = (seen == x).flatten(1).all(1)
    assert bool((flipped | unflipped).all())  # nothing else: no anterior–posterior or superior–inferior flip
    assert 0 < int(flipped.sum()) < len(seen)


def test_resaving_a_loaded_model_keeps_its_training_summary(tmp_path):
    frame, images = _random_cohort()
    model = DiffusionAutoencoder(**{**SMALL, "sensitivity_every": 1}, max_steps=2).fit(frame, images)
    model.save(tmp_path / "first")
    loaded = DiffusionAutoencoder.load(tmp_path / "first")
    loaded.save(tmp_path / "second")
    again = DiffusionAutoencoder.load(tmp_path / "second")
    assert again.training_summary_ == loaded.training_summary_
    assert again.training_summary_["steps"] == 2
    assert [e["step"] for e in again.training_summary_["latent_sensitivity"]] == [1, 2]


class _Killed(RuntimeError):
    pass


class _KilledAtStep(DiffusionAutoencoder):
    """Dies while computing the loss of training step `kill_at` (as a killed process would)."""

    kill_at = 4

    def _loss(self, net, batch, generator):
        self._calls = getattr(self, "_calls", 0) + 1
        if self._calls == self.kill_at:
            raise _Killed
        return super()._loss(net, batch, generator)


@pytest.mark.parametrize("interruption", ["killed", "finished then continued"])
def test_a_resumed_run_has_the_latent_sensitivity_log_of_an_uninterrupted_one(interruption, tmp_path):
    frame, images = _random_cohort()
    params = dict(SMALL, sensitivity_every=1, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=2)
    if interruption == "killed":  # checkpoint at step 2, killed in step 4: step 3's entry was only in memory
        with pytest.raises(_Killed):
            _KilledAtStep(**params, max_steps=6).fit(frame, images)
    else:
        DiffusionAutoencoder(**params, max_steps=2).fit(frame, images)
    resumed = DiffusionAutoencoder(**params, max_steps=6).fit(frame, images)
    straight = DiffusionAutoencoder(**{**params, "checkpoint_dir": None}, max_steps=6).fit(frame, images)
    assert resumed.history_["resumed_at_step"] == 2
    log, expected = resumed.history_["latent_sensitivity"], straight.history_["latent_sensitivity"]
    assert [e["step"] for e in log] == [e["step"] for e in expected] == [1, 2, 3, 4, 5, 6]
    assert [e["value"] for e in log] == pytest.approx([e["value"] for e in expected], rel=1e-6, abs=1e-12)
    assert "latent_sensitivity" not in resumed.history_["metrics"]


def test_default_step_counts_fit_a_model_with_few_diffusion_steps():
    frame, images = _random_cohort()
    model = DiffusionAutoencoder(**{**SMALL, "timesteps": 10}, max_steps=1).fit(frame, images)
    z = model.encode(images)
    x_T = model.encode_stochastic(images, z)  # min(250, 10) steps
    assert model.render(x_T, z).shape == images.shape  # min(20, 10)
    assert model.reconstruct(images).shape == images.shape  # min(100, 10), min(20, 10)
    with pytest.raises(ValueError, match=r"\[1, 10\], got 11"):  # an explicit count above T stays an error
        model.encode_stochastic(images, z, steps=11)
    with pytest.raises(ValueError, match=r"\[1, 10\], got 11"):
        model.reconstruct(images, render_steps=11)


def test_latent_counts_and_noise_shapes_are_checked():
    frame, images = _random_cohort()
    model = DiffusionAutoencoder(**SMALL, max_steps=1).fit(frame, images)
    z = model.encode(images)
    with pytest.raises(ValueError, match=r"one latent per image: 4 images but latents shaped \(3, 8\)"):
        model.encode_stochastic(images, z[:-1], steps=2)
    with pytest.raises(ValueError, match=r"4 images but latents shaped \(8, 8\)"):
        model.encode_stochastic(images, np.concatenate([z, z]), steps=2)
    with pytest.raises(ValueError, match=r"x_T must be shaped \(N, 1, 16, 16\).*got \(4, 1, 32, 32\)"):
        model.render(np.zeros((4, 1, 32, 32), np.float32), z, steps=2)
    with pytest.raises(ValueError, match=r"4 noise maps but latents shaped \(3, 8\)"):
        model.render(np.zeros((4, 1, 16, 16), np.float32), z[:3], steps=2)


def test_fit_takes_a_manifest_file_with_its_images_in_memory(tmp_path):
    frame, images = _random_cohort()
    frame.to_csv(tmp_path / "manifest.csv", index=False)
    params = dict(SMALL, max_steps=1, encoder_covariates=("age",))
    from_file = DiffusionAutoencoder(**params).fit(tmp_path / "manifest.csv", images)
    from_frame = DiffusionAutoencoder(**params).fit(frame, images)
    np.testing.assert_allclose(from_file.encode(images, frame), from_frame.encode(images, frame), atol=1e-6)
    with pytest.raises(ValueError, match="3 images but 4 manifest rows"):
        DiffusionAutoencoder(**params).fit(str(tmp_path / "manifest.csv"), images[:3])
    with pytest.raises(ValueError, match="3 images but 4 manifest rows"):
        DiffusionAutoencoder(**params).fit(frame, images[:3])
