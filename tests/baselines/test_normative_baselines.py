"""NDA's non-diffusion normative benchmarks: regional measures, regression z, brain-age gap, normative cVAE.

One tiny synthetic cohort (32×32 MNI slices, two sites, 40 controls, 20 patients) is generated per
module; controls are split (seeded, stratified by site) into 28 for training and 12 held out.

At this size no scorer separates patients from held-out controls robustly (the planted motor-cortex
and corticospinal changes move the central-sector measures by ~0.2–0.3 residual SD at the mean
severity), so patient-vs-control comparisons are not asserted here; what the regional measures must
do, pick up the planted disease where it was planted, is checked on counterfactual renders of the
same patients with and without disease.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from neurodiff.baselines.brain_age import BrainAgeModel
from neurodiff.baselines.normative_cvae import NormativeCVAE
from neurodiff.baselines.normative_regression import NormativeRegression
from neurodiff.baselines.regional_measures import regional_measures, sector_weights
from neurodiff.data.image_manifest import load_images, read_manifest
from neurodiff.data.synthetic_images import ImageCohortConfig, generate_image_cohort, iter_images
from neurodiff.data.synthetic_images.render import Renderer

TINY_CVAE = {"latent_dim": 8, "base_channels": 8, "levels": 2, "batch_size": 16, "lr": 3e-3, "max_steps": 100,
             "progress": False}
SCORERS = (NormativeRegression, BrainAgeModel, NormativeCVAE)


@dataclasses.dataclass
class Cohort:
    images: np.ndarray
    covariates: pd.DataFrame
    affine: np.ndarray
    train: np.ndarray  # control rows fitted on
    held_out: np.ndarray  # control rows kept apart
    patients: np.ndarray

    def rows(self, index: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
        return self.images[index], self.covariates.iloc[index].reset_index(drop=True)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Cohort:
    folder = tmp_path_factory.mktemp("normative-cohort") / "cohort"
    config = ImageCohortConfig.quick(size=32, n_sites=2, n_controls=40, n_travellers=0, n_patients=20)
    generate_image_cohort(config, folder, progress=False)
    frame = read_manifest(folder / "manifest.csv")
    images, affines = load_images(frame)
    controls = np.flatnonzero(frame["group"] == "control")
    train, held_out = train_test_split(controls, test_size=12, random_state=0, stratify=frame["site"].iloc[controls])
    covariates = frame[["subject_id", "age", "sex", "site", "group", "true_severity"]].reset_index(drop=True)
    return Cohort(images, covariates, affines[0], np.sort(train), np.sort(held_out),
                  np.flatnonzero(frame["group"] == "patient"))


@pytest.fixture(scope="module")
def cvae(cohort) -> NormativeCVAE:
    return NormativeCVAE(**TINY_CVAE).fit(*cohort.rows(cohort.train))


# ---------------------------------------------------------------- regional measures


def test_regional_measures_are_finite_per_sector(cohort):
    measures = regional_measures(cohort.images, cohort.affine)
    assert measures.shape == (60, 16)
    assert measures.columns[:2].tolist() == ["gm_left_frontal", "gm_left_central"]
    assert {"gm_right_central", "wm_left_central", "wm_right_occipital"} <= set(measures.columns)
    assert np.isfinite(measures.to_numpy()).all()
    assert measures.to_numpy().min() > 0.0 and measures.to_numpy().max() < 1.0
    # the same columns and values image by image (sectors depend on the grid only)
    pd.testing.assert_frame_equal(regional_measures(cohort.images[5:7], cohort.affine),
                                  measures.iloc[5:7].reset_index(drop=True))
    names, weights = sector_weights(cohort.images.shape[2:], cohort.affine)
    assert names == measures.columns.tolist()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)


def test_regional_measures_pick_up_the_planted_disease():
    """The same patients rendered with and without disease: only the central sectors darken."""
    config = ImageCohortConfig.quick(size=32, n_sites=2, n_controls=0, n_travellers=0, n_patients=6, seed=3)
    healthy = config.replace(disease=dataclasses.replace(config.disease, motor_gm_loss=0.0, cst_contrast_loss=0.0))
    ill, well = list(iter_images(config)), list(iter_images(healthy))
    severity = np.array([item.anatomy.severity for item in ill])
    affine = Renderer(config).slice_affine()
    change = (regional_measures(np.stack([i.slice for i in ill])[:, None], affine)
              - regional_measures(np.stack([i.slice for i in well])[:, None], affine))
    central = [c for c in change.columns if c.endswith("_central")]
    elsewhere = [c for c in change.columns if not c.endswith("_central")]
    assert len(central) == 4
    per_unit = change[central].to_numpy() / severity[:, None]
    assert (per_unit < -0.003).all(), per_unit  # every patient, GM and WM, both hemispheres
    # elsewhere: ~2 % of the central change on average (tube tails, per-image intensity normalisation)
    assert np.abs(change[elsewhere].to_numpy()).mean() < 0.1 * np.abs(change[central].to_numpy()).mean()


def test_regional_measures_of_a_volume():
    affine = np.diag([12.0, 12.0, 12.0, 1.0])
    affine[:3, 3] = (-90.0, -126.0, -72.0)
    images = np.random.default_rng(0).uniform(0, 1, (3, 1, 16, 16, 12)).astype(np.float32)
    measures = regional_measures(images, affine)
    assert measures.shape == (3, 16) and np.isfinite(measures.to_numpy()).all()


def test_regional_measures_errors(cohort):
    images = cohort.images[:2]
    with pytest.raises(ValueError, match="4×4"):
        regional_measures(images, np.eye(3))
    bad = cohort.affine.copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        regional_measures(images, bad)
    far = cohort.affine.copy()
    far[:3, 3] += 5000.0
    with pytest.raises(ValueError, match="not look registered to MNI152"):
        regional_measures(images, far)
    with pytest.raises(ValueError, match="must be shaped"):
        regional_measures(images[:, 0], cohort.affine)


def test_regional_measures_name_a_bad_image_by_its_place_in_the_whole_set(cohort, monkeypatch):
    import neurodiff.baselines.regional_measures as module

    monkeypatch.setattr(module, "_CHUNK", 4)  # image 5 lies in the second chunk
    images = cohort.images[:8].copy()
    images[5, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="first: image 5,"):
        regional_measures(images, cohort.affine)


# ---------------------------------------------------------------- regression normative model


def test_regression_zscores_of_the_controls_are_standardised(cohort):
    images, covariates = cohort.rows(cohort.train)
    model = NormativeRegression(cohort.affine, covariates=("age", "sex", "site")).fit(images, covariates)
    assert model.design_columns_ == ["intercept", "age", "sex", "site=site1"]
    z = model.zscores(images, covariates)
    assert z.shape == (28, 16) and z.columns.tolist() == model.measures_
    n, p = 28, len(model.design_columns_)
    np.testing.assert_allclose(z.mean(), 0.0, atol=1e-8)
    np.testing.assert_allclose(np.sqrt((z**2).sum() / (n - p)), 1.0, rtol=1e-8)  # SD with ddof = p
    score = model.score(*cohort.rows(np.arange(60)))
    assert score.shape == (60,) and np.isfinite(score).all() and (score >= 0).all()


def test_regression_summaries(cohort):
    images, covariates = cohort.rows(cohort.train)
    every = cohort.rows(np.arange(60))
    scores = {summary: NormativeRegression(cohort.affine, summary=summary).fit(images, covariates).score(*every)
              for summary in ("rms", "mean_abs", "mean")}
    assert NormativeRegression(cohort.affine).fit(images, covariates).design_columns_ == ["intercept", "age", "sex"]
    plain = NormativeRegression(cohort.affine, covariates=()).fit(images, covariates)
    assert plain.design_columns_ == ["intercept"] and plain.encoding_ is None
    np.testing.assert_allclose(plain.coef_.loc["intercept"], regional_measures(images, cohort.affine).mean())
    assert (scores["rms"] >= scores["mean_abs"] - 1e-12).all()
    assert (scores["mean_abs"] >= np.abs(scores["mean"]) - 1e-12).all()
    assert NormativeRegression.score_name == "regression_z" and NormativeRegression.higher_is_normal is False


def test_regression_errors(cohort):
    images, covariates = cohort.rows(cohort.train)
    with pytest.raises(ValueError, match="summary must be one of"):
        NormativeRegression(cohort.affine, summary="max").fit(images, covariates)
    with pytest.raises(ValueError, match="'scanner'"):
        NormativeRegression(cohort.affine, covariates=("age", "scanner")).fit(images, covariates)
    with pytest.raises(ValueError, match="more controls than design columns"):
        NormativeRegression(cohort.affine).fit(images[:3], covariates.iloc[:3])
    with pytest.raises(ValueError, match="4×4"):
        NormativeRegression(np.eye(2)).fit(images, covariates)
    with pytest.raises(ValueError, match="2 images but 3 covariate rows"):
        NormativeRegression(cohort.affine).fit(images[:2], covariates.iloc[:3])
    model = NormativeRegression(cohort.affine, covariates=("age", "sex", "site")).fit(images, covariates)
    with pytest.raises(ValueError, match=r"'site'.*'site9'"):
        model.score(images[:1], covariates.iloc[:1].assign(site="site9"))
    with pytest.raises(ValueError, match="model was fitted on"):
        model.score(images[:, :, :16, :16], covariates)


# ---------------------------------------------------------------- brain-age gap


def test_brain_age_predicts_age_better_than_the_mean(cohort):
    images, covariates = cohort.rows(cohort.train)
    model = BrainAgeModel().fit(images, covariates)
    age = covariates["age"].to_numpy()
    assert model.cv_mae_ < age.std()
    assert model.n_components_ == 27  # capped at n - 1
    # the bias correction leaves the controls' cross-validated gap uncorrelated with age
    corrected = model.cv_predictions_ - age - (model.bias_intercept_ + model.bias_slope_ * age)
    assert abs(np.corrcoef(age, corrected)[0, 1]) < 1e-8
    every = cohort.rows(np.arange(60))
    gap, predicted = model.score(*every), model.predict_age(*every)
    assert gap.shape == predicted.shape == (60,) and np.isfinite(gap).all()
    np.testing.assert_allclose(gap, predicted - every[1]["age"] - model.bias_intercept_
                               - model.bias_slope_ * every[1]["age"])


def test_brain_age_errors(cohort):
    images, covariates = cohort.rows(cohort.train)
    with pytest.raises(ValueError, match="no column 'age'"):
        BrainAgeModel().fit(images, covariates.drop(columns="age"))
    with pytest.raises(ValueError, match="'age'.*'unknown'"):
        BrainAgeModel().fit(images, covariates.astype({"age": object}).assign(age=["unknown"] + [50.0] * 27))
    with pytest.raises(ValueError, match="at least 10 control images"):
        BrainAgeModel(cv=5).fit(images[:8], covariates.iloc[:8])
    with pytest.raises(ValueError, match="n_components"):
        BrainAgeModel(n_components=0).fit(images, covariates)


# ---------------------------------------------------------------- normative cVAE


def test_cvae_scores(cohort, cvae):
    assert cvae.encoding_.columns == ["age", "sex"]
    loss = cvae.history_["loss"]
    assert np.mean(loss[-10:]) < 0.5 * np.mean(loss[:10])
    every = cohort.rows(np.arange(60))
    distance, error = cvae.score(*every), cvae.reconstruction_error(*every)
    assert distance.shape == error.shape == (60,)
    assert np.isfinite(distance).all() and (distance >= 0).all()
    assert np.isfinite(error).all() and (error > 0).all() and (error < 0.25).all()
    assert cvae.encode(*every).shape == (60, 8)
    assert cvae.latent_covariance_.shape == cvae.latent_precision_.shape == (8, 8)
    assert 0.0 <= cvae.shrinkage_ <= 1.0


def test_cvae_save_load_gives_identical_scores(cohort, cvae, tmp_path):
    every = cohort.rows(np.arange(60))
    cvae.save(tmp_path / "cvae")
    loaded = NormativeCVAE.load(tmp_path / "cvae")
    np.testing.assert_array_equal(loaded.score(*every), cvae.score(*every))
    np.testing.assert_array_equal(loaded.reconstruction_error(*every), cvae.reconstruction_error(*every))
    assert loaded.history_ is None and loaded.image_shape_ == (1, 32, 32)


def test_cvae_errors(cohort):
    images, covariates = cohort.rows(cohort.train)
    with pytest.raises(ValueError, match="2D images .* only"):
        NormativeCVAE(**TINY_CVAE).fit(images[:, :, None].repeat(8, axis=2), covariates)
    with pytest.raises(ValueError, match="at least one column"):
        NormativeCVAE(covariates=(), **TINY_CVAE).fit(images, covariates)
    with pytest.raises(ValueError, match="'sex'"):
        NormativeCVAE(**TINY_CVAE).fit(images, covariates.drop(columns="sex"))
    with pytest.raises(ValueError, match="divisible by 2\\*\\*levels"):
        NormativeCVAE(**{**TINY_CVAE, "levels": 6}).fit(images, covariates)


def test_cvae_unknown_sex_code(cohort, cvae):
    images, covariates = cohort.rows(cohort.held_out[:2])
    with pytest.raises(ValueError, match=r"'sex'.*'X'"):
        cvae.score(images, covariates.assign(sex="X"))


# ---------------------------------------------------------------- shared interface


@pytest.mark.parametrize("scorer", SCORERS)
def test_scorers_share_the_interface(scorer):
    assert isinstance(scorer.score_name, str) and scorer.score_name
    assert scorer.higher_is_normal is False
