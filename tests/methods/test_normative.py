"""NDA: the normative diffusion autoencoder on a tiny synthetic cohort with patients (32×32, two sites)."""

import json

import numpy as np
import pytest

from neurodiff.methods.normative import (
    SCORE_COLUMNS,
    NormativeDiffAE,
    calibration_split,
    check_controls,
)
from neurodiff.training import seed_everything

TINY = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,), head_channels=8,
            latent_dim=18, timesteps=100, lr=1e-3, ema_decay=None, batch_size=8, dropout=0.0, progress=False,
            sensitivity_every=0, deviation_steps=20)


@pytest.fixture(scope="module")
def cohort(tiny_patient_cohort):
    _, frame, images = tiny_patient_cohort
    controls = frame["group"].eq("control").to_numpy()
    return frame, images, controls


@pytest.fixture(scope="module")
def trained(cohort):
    frame, images, controls = cohort
    return NormativeDiffAE(**TINY, max_steps=80, calibration_fraction=0.25).fit(
        frame[controls].reset_index(drop=True), images[controls])


def test_scores_every_subject_with_calibrated_columns(trained, cohort):
    frame, images, _ = cohort
    scores = trained.score(images, frame)
    assert list(scores.columns) == list(SCORE_COLUMNS) and len(scores) == len(frame)
    assert np.isfinite(scores.to_numpy()).all()
    assert scores["similarity"].between(-1, 1).all()
    assert scores["similarity_percentile"].between(0, 100).all()
    assert (scores["mahalanobis"] >= 0).all()
    # 40 controls, a quarter (10 subjects) held out for calibration, the rest trained on
    assert trained.n_controls_ == 30 and len(trained.calibration_["similarity"]) == 10


def test_hierarchical_latent_is_conditioned_on_age_through_trained_layers(trained, cohort):
    frame, images, controls = cohort
    x, rows = images[:4], frame.iloc[:4]
    assert not np.allclose(trained.encode(x, rows), trained.encode(x, rows.assign(age=rows["age"] + 25)))
    assert trained.net_.encoder.hierarchical and len(trained.net_.encoder.heads) == 3
    # the age embedding is a registered module that training moved away from its initial weights
    untrained = NormativeDiffAE(**TINY, max_steps=0)
    untrained.image_shape_, untrained.encoder_encoding_, untrained.latent_encoding_ = (
        trained.image_shape_, trained.encoder_encoding_, None)
    seed_everything(0)  # fit builds the network right after seeding with the model seed (0)
    initial = untrained._build().encoder.covariate_embedding[0].weight
    trained_weight = trained.net_.encoder.covariate_embedding[0].weight
    assert initial.shape == trained_weight.shape
    assert (trained_weight - initial).abs().max() > 1e-3


def test_mean_healthy_latent_scores_as_perfectly_healthy(trained, cohort):
    mu = trained.healthy_mean_
    np.testing.assert_allclose(trained.healthy_latents(mu[None]), mu[None].astype(np.float32), atol=1e-5)
    projected = trained.healthy_latents(mu[None] + 1.0)
    assert np.linalg.norm(projected - mu) <= np.linalg.norm(np.ones_like(mu)) + 1e-6


def test_fitting_on_patients_is_an_error_naming_them(cohort):
    frame, images, _ = cohort
    with pytest.raises(ValueError, match=r"healthy controls only.*'patient'.*subjects .*"):
        NormativeDiffAE(**TINY, max_steps=1).fit(frame, images)
    blank = frame.head(3).assign(group=[None, "control", "control"])
    with pytest.raises(ValueError, match=str(blank["subject_id"].iloc[0])):
        check_controls(blank)


def test_missing_age_is_an_error_naming_the_subject(cohort):
    frame, images, controls = cohort
    rows = frame[controls].reset_index(drop=True).copy()
    rows.loc[3, "age"] = np.nan
    with pytest.raises(ValueError, match=rf"age.*{rows['subject_id'].iloc[3]}|{rows['subject_id'].iloc[3]}.*age"):
        NormativeDiffAE(**TINY, max_steps=1, calibration_fraction=0).fit(rows, images[controls])


def test_calibration_split_is_by_subject_seeded_and_checked(cohort):
    frame, _, controls = cohort
    rows = frame[controls].reset_index(drop=True)
    train, held = calibration_split(rows, 0.25, seed=3)
    again = calibration_split(rows, 0.25, seed=3)
    assert np.array_equal(train, again[0]) and len(held) == 10
    assert not set(rows["subject_id"].iloc[train]) & set(rows["subject_id"].iloc[held])
    with pytest.raises(ValueError, match="need at least 5"):
        calibration_split(rows.head(12), 0.25, seed=0)


def test_without_calibration_the_calibrated_columns_are_nan_until_calibrate(cohort):
    frame, images, controls = cohort
    rows, x = frame[controls].reset_index(drop=True), images[controls]
    model = NormativeDiffAE(**TINY, max_steps=5, calibration_fraction=0, encoder_covariates=()).fit(
        rows.drop(columns=["age"]).iloc[:30], x[:30])
    scores = model.score(x[30:], rows.iloc[30:])
    assert scores["similarity_z"].isna().all() and scores["similarity"].notna().all()
    with pytest.raises(ValueError, match="at least 5"):
        model.calibrate(x[30:33], rows.iloc[30:33])
    model.calibrate(x[30:], rows.iloc[30:])
    calibrated = model.score(x[30:], rows.iloc[30:])
    assert abs(calibrated["similarity_z"].mean()) < 1e-6  # scoring the calibration controls themselves


def test_deviation_maps_are_images_in_range(trained, cohort):
    frame, images, _ = cohort
    patients = frame["group"].eq("patient").to_numpy()
    maps, healthy = trained.deviation_maps(images[patients][:3], frame[patients].iloc[:3])
    assert maps.shape == healthy.shape == images[:3].shape
    assert np.isfinite(maps).all() and maps.min() >= 0 and healthy.min() >= 0 and healthy.max() <= 1
    np.testing.assert_allclose(maps, np.abs(images[patients][:3] - healthy), atol=1e-6)


def test_save_load_round_trip_gives_the_same_scores(trained, cohort, tmp_path):
    frame, images, _ = cohort
    trained.save(tmp_path / "nda")
    loaded = NormativeDiffAE.load(tmp_path / "nda")
    assert json.loads(json.dumps(loaded.get_params())) == json.loads(json.dumps(trained.get_params()))
    np.testing.assert_allclose(loaded.score(images[:6], frame.iloc[:6]).to_numpy(),
                               trained.score(images[:6], frame.iloc[:6]).to_numpy(), rtol=1e-6, atol=1e-9)


def test_roles_name_training_and_calibration_controls_and_survive_saving(trained, cohort, tmp_path):
    """Training controls are scored in-sample; the model says which they are, so nobody takes them for a
    held-out reference."""
    frame, _, controls = cohort
    roles = trained.roles(frame)
    subjects = frame["subject_id"].astype(str)
    train, calibration = calibration_split(frame[controls].reset_index(drop=True), 0.25, trained.seed)
    control_ids = subjects[controls].reset_index(drop=True)
    assert set(subjects[roles.eq("training").to_numpy()]) == set(control_ids[train])
    assert set(subjects[roles.eq("calibration").to_numpy()]) == set(control_ids[calibration])
    assert roles[~controls].eq("new").all()
    trained.save(tmp_path / "nda")
    loaded = NormativeDiffAE.load(tmp_path / "nda")
    assert loaded.roles(frame).equals(roles)
    statistics = json.loads((tmp_path / "nda" / "statistics.json").read_text())
    statistics.pop("training_subjects"), statistics.pop("calibration_subjects")  # as saved before they were kept
    (tmp_path / "nda" / "statistics.json").write_text(json.dumps(statistics))
    assert NormativeDiffAE.load(tmp_path / "nda").roles(frame) is None


def test_bad_hyperparameters_are_errors(cohort):
    frame, images, controls = cohort
    with pytest.raises(ValueError, match="calibration_fraction"):
        NormativeDiffAE(**TINY, calibration_fraction=1.5).fit(frame[controls], images[controls])
    with pytest.raises(ValueError, match="unknown preset"):
        NormativeDiffAE.preset("huge")


def _random_controls(n=4, size=16, seed=0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (n, 1, size, size)).astype(np.float32)
    frame = pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "path": [f"s{i}.nii.gz" for i in range(n)],
                          "age": rng.uniform(50, 80, n).round(1), "group": ["control"] * n})
    return frame, images


SMALL = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(), head_channels=8,
             latent_dim=9, lr=1e-3, ema_decay=None, batch_size=4, dropout=0.0, progress=False, sensitivity_every=0,
             calibration_fraction=0, max_steps=1)


def test_deviation_maps_use_the_fitted_schedule_not_the_timesteps_hyperparameter():
    """set_params(timesteps=…) after fitting sets the next fit's T; it changes nothing of the fitted model."""
    frame, images = _random_controls()
    model = NormativeDiffAE(**SMALL, timesteps=40, deviation_steps=10).fit(frame, images)
    maps, _ = model.deviation_maps(images[:2], frame.iloc[:2])
    model.set_params(timesteps=400)
    again, _ = model.deviation_maps(images[:2], frame.iloc[:2])
    np.testing.assert_array_equal(again, maps)


def test_default_deviation_steps_are_capped_at_T_explicit_ones_are_not():
    frame, images = _random_controls()
    model = NormativeDiffAE(**SMALL, timesteps=40).fit(frame, images)  # T = 40 < the 50 default DDIM steps
    assert model.deviation_steps is None
    maps, healthy = model.deviation_maps(images[:2], frame.iloc[:2])  # min(50, T) = 40 steps
    assert maps.shape == healthy.shape == images[:2].shape
    model.set_params(deviation_steps=41)
    with pytest.raises(ValueError, match=r"\[1, 40\], got 41"):
        model.deviation_maps(images[:2], frame.iloc[:2])


def test_fit_takes_a_manifest_file_with_its_images_in_memory(tmp_path):
    frame, images = _random_controls()
    frame.to_csv(tmp_path / "manifest.csv", index=False)
    model = NormativeDiffAE(**SMALL, timesteps=20).fit(tmp_path / "manifest.csv", images)
    assert model.n_controls_ == 4 and model.score(images, frame).shape == (4, len(SCORE_COLUMNS))
