"""Harmonisation metrics on synthetic multi-site slices: 3 sites that add an intensity offset to smooth
16×16 images whose blob size grows with age; "harmonising" = removing the offsets exactly."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter

from neurodiff.evaluation.harmonization import (
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    _folds,
    _groups,
    age_mae,
    evaluate_harmonization,
    frechet_to_target,
    image_features,
    probe_groups,
    sex_auroc,
    site_accuracy,
    traveller_pairs,
    traveller_scores,
    within_site_variability,
)

SIZE = 16
OFFSETS = {"A": 0.0, "B": 0.12, "C": 0.24}  # A is the target (reference) site
TARGET = "A"


def _anatomy(rng: np.random.Generator, age: float, sex: str) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    radius = 2 + 5 * (age - 20) / 60
    blob = 1 / (1 + np.exp((np.hypot(xx, yy) - radius) * 2))
    texture = 1.5 * gaussian_filter(rng.normal(size=(SIZE, SIZE)), 1.5)
    return 0.2 + 0.4 * blob + 0.05 * texture + (0.05 if sex == "M" else 0.0) * (xx > 0)


def _dataset(per_site: int = 24, travellers: int = 4, seed: int = 0):
    """(raw (N, 1, 16, 16), covariates, harmonised = raw with the site offsets replaced by the target's)."""
    rng = np.random.default_rng(seed)
    images, rows = [], []
    for site, offset in OFFSETS.items():
        for _ in range(per_site):
            age, sex = float(rng.uniform(20, 80)), str(rng.choice(["F", "M"]))
            images.append(_anatomy(rng, age, sex) + offset)
            rows.append({"age": age, "sex": sex, "site": site, "true_traveller_id": ""})
    for t in range(travellers):  # the same anatomy scanned at every site
        age, sex = float(rng.uniform(20, 80)), ("F", "M")[t % 2]
        anatomy = _anatomy(rng, age, sex)
        for site, offset in OFFSETS.items():
            images.append(anatomy + offset)
            rows.append({"age": age, "sex": sex, "site": site, "true_traveller_id": f"t{t}"})
    raw = np.stack(images)[:, None]
    assert 0.0 <= raw.min() and raw.max() <= 1.0
    covariates = pd.DataFrame(rows)
    offsets = covariates["site"].map(OFFSETS).to_numpy()[:, None, None, None]
    harmonised = raw - offsets + OFFSETS[TARGET]
    return raw, covariates, harmonised


@pytest.fixture(scope="module")
def data():
    raw, covariates, harmonised = _dataset()
    features, space = image_features(raw)
    return raw, covariates, harmonised, features, space


# ------------------------------------------------------------------------------ feature space
def test_feature_space_is_fitted_once_and_reused(data):
    raw, _, harmonised, features, space = data
    assert features.shape == (len(raw), 64) and space.components == 64
    again, same = image_features(harmonised, fitted=space, components=3)  # components ignored when fitted
    assert same is space and again.shape == features.shape
    np.testing.assert_allclose(space.transform(raw), features)
    small, small_space = image_features(raw[:10], components=64)
    assert small.shape == (10, 10) and small_space.components == 10  # clipped to the number of images
    with pytest.raises(ValueError, match="fitted on"):
        space.transform(np.zeros((2, 1, 8, 8)))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        image_features(raw[:, 0])


# ------------------------------------------------------------------------------ probes
def test_site_accuracy_high_on_raw_and_near_chance_after_harmonisation(data):
    raw, covariates, harmonised, features, space = data
    sites = covariates["site"].to_numpy()
    accuracy, chance = site_accuracy(features, sites)
    assert chance == pytest.approx(1 / 3)
    assert accuracy > 0.9
    after, _ = site_accuracy(space.transform(harmonised), sites)
    assert after < 0.5
    with pytest.raises(ValueError, match="at least 2 sites"):
        site_accuracy(features, ["A"] * len(features))


def test_age_and_sex_probes_read_the_biology(data):
    _, covariates, harmonised, features, space = data
    ages, sex = covariates["age"].to_numpy(), covariates["sex"].to_numpy()
    mae = age_mae(space.transform(harmonised), ages)
    assert mae < 5.0  # ages span 20-80 years (SD ≈ 17); the blob radius encodes them
    noise = np.random.default_rng(1).normal(size=features.shape)
    assert age_mae(noise, ages) > 2 * mae
    assert sex_auroc(features, sex) > 0.9
    assert 0.2 < sex_auroc(noise, sex) < 0.8
    assert age_mae(features, ages, seed=3) == age_mae(features, ages, seed=3)  # seeded folds


def test_grouped_folds_keep_each_traveller_in_one_fold(data):
    _, covariates, _, _, _ = data
    ids = covariates["true_traveller_id"].to_numpy()
    groups = _groups(ids, len(ids))
    assert groups is not None
    for stratify, y in ((True, covariates["site"].to_numpy()), (False, covariates["age"].to_numpy())):
        for train, test in _folds(y, groups, 5, 0, stratify=stratify):
            assert not set(ids[train][ids[train] != ""]) & set(ids[test][ids[test] != ""])


def _duplicated_subjects(n: int = 30, seed: int = 0):
    """Each subject imaged twice (two near-identical images, as adjacent slices or sessions, one subject_id);
    site, age and sex drawn at random per subject and not in the images: an honest probe is at chance."""
    rng = np.random.default_rng(seed)
    images = np.stack([_anatomy(rng, 50.0, "F") for _ in range(n)])
    x = np.concatenate([images, images + rng.normal(0, 0.002, images.shape)])[:, None]
    covariates = pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)] * 2,
                               "age": np.tile(rng.uniform(20, 80, n), 2),
                               "sex": np.tile(rng.choice(["F", "M"], n), 2),
                               "site": np.tile(rng.choice(["A", "B", "C"], n), 2)})
    return x, covariates


def test_probes_keep_all_images_of_a_subject_in_one_fold():
    """Several images per subject_id (slices, sessions) must not straddle a probe's train and test folds:
    grouping only by traveller id let the site classifier recognise the subject (0.93 at chance 0.33)."""
    x, covariates = _duplicated_subjects()
    grouped = evaluate_harmonization(x, x, covariates, "A")
    assert grouped["site_accuracy"] < 0.6 and grouped["sex_auroc"] < 0.7 and grouped["sex_auroc_transfer"] < 0.7
    # the leak the groups close: without subject ids every image is its own group
    leaky = evaluate_harmonization(x, x, covariates.drop(columns="subject_id"), "A")
    assert leaky["site_accuracy"] > 0.8
    groups = probe_groups(covariates)
    for train, test in _folds(covariates["site"].to_numpy(), _groups(groups, len(groups)), 5, 0, stratify=True):
        assert not set(covariates["subject_id"][train]) & set(covariates["subject_id"][test])


def test_probe_groups_join_subject_and_traveller_ids():
    covariates = pd.DataFrame({"subject_id": ["a", "a", "b", "t1", "c", "d", ""],
                               "true_traveller_id": ["", "", "", "t1", "t1", "", ""]})
    groups = probe_groups(covariates)
    # a's two rows; the traveller t1 (subject ids "t1" and "c" joined through it); b, d and the blank row alone
    assert groups[0] == groups[1] != "" and groups[3] == groups[4] != "" and groups[0] != groups[3]
    assert list(groups[[2, 5, 6]]) == ["", "", ""]
    assert probe_groups(covariates.drop(columns="subject_id")) is not None  # travellers only
    assert probe_groups(pd.DataFrame({"subject_id": ["a", "b"]})) is None  # one image per subject: plain K-fold
    assert probe_groups(pd.DataFrame({"age": [1.0, 2.0]})) is None


def test_latent_site_accuracy_groups_by_subject():
    from types import SimpleNamespace

    from neurodiff.evaluation.harmonization_benchmark import (
        HarmonizeBenchmarkConfig,
        _ddae_extras,
    )

    x, covariates = _duplicated_subjects()
    model = SimpleNamespace(encode=lambda images, frame: images.reshape(len(images), -1), latent_dim=SIZE * SIZE)
    config = HarmonizeBenchmarkConfig(target_site="A")
    values = _ddae_extras(model, x, covariates, config, 0, {"latents": {}}, "ddae")
    assert values["latent_site_accuracy"] < 0.6


# ------------------------------------------------------------------------------ transfer probes
def _covariate_decoder(raw, covariates, sign: float = 1.0):
    """A 'harmoniser' that ignores the input image: the target site's mean image plus `sign` × its age and sex
    slopes (least squares on the raw target-site images), rendered from each image's age and sex."""
    at = (covariates["site"] == TARGET).to_numpy()

    def design(c):
        return np.column_stack([np.ones(len(c)), (c["age"].to_numpy() - 50) / 15, c["sex"].eq("M").to_numpy()])

    beta, *_ = np.linalg.lstsq(design(covariates[at]), raw[at].reshape(at.sum(), -1), rcond=None)
    beta[1:] *= sign
    return (design(covariates) @ beta).reshape(raw.shape)


def test_transfer_probes_do_not_credit_labels_written_into_the_output(data):
    """Probes fitted on the harmonised images read back any age / sex a method writes into its output; the
    transfer probes (fitted on raw images, applied to harmonised ones) only credit the raw anatomy's signal.
    Here a decoder writes the labels against the anatomy's direction (older = smaller blob)."""
    raw, covariates, harmonised, _, space = data
    before = evaluate_harmonization(raw, raw, covariates, TARGET, features=space)
    assert before["age_mae_transfer"] == before["age_mae"]  # raw: the transfer probe is the within-raw probe
    assert before["sex_auroc_transfer"] == before["sex_auroc"]
    kept = evaluate_harmonization(raw, harmonised, covariates, TARGET, features=space)
    assert kept["age_mae_transfer"] < 2 * before["age_mae_transfer"] and kept["sex_auroc_transfer"] > 0.9
    written = evaluate_harmonization(raw, _covariate_decoder(raw, covariates, sign=-1.0), covariates, TARGET,
                                     features=space)
    assert written["age_mae"] < 0.5 and written["sex_auroc"] > 0.99  # the within probes are fooled
    assert written["age_mae_transfer"] > 10 * before["age_mae_transfer"]
    assert written["sex_auroc_transfer"] < 0.2
    # the same functions directly: fitted on one feature array, scored on another of the same rows and width
    ages, sex = covariates["age"].to_numpy(), covariates["sex"].to_numpy()
    r, h = space.transform(raw), space.transform(harmonised)
    assert age_mae(r, ages, test_features=r) == age_mae(r, ages)
    assert sex_auroc(r, sex, test_features=h) == pytest.approx(kept["sex_auroc_transfer"])
    with pytest.raises(ValueError, match="test_features has 3 features"):
        age_mae(r, ages, test_features=h[:, :3])


def test_only_the_transfer_probes_are_ranked():
    from neurodiff.evaluation import harmonization_benchmark as benchmark

    for directions in (HIGHER_IS_BETTER, benchmark.HIGHER_IS_BETTER):
        assert directions["age_mae_transfer"] is False and directions["sex_auroc_transfer"] is True
        assert directions["age_mae"] is None and directions["sex_auroc"] is None
        assert "age_mae" not in benchmark.REFERENCES and "sex_auroc" not in benchmark.REFERENCES


# ------------------------------------------------------------------------------ distributions
def test_frechet_to_target(data):
    raw, covariates, harmonised, features, space = data
    at_target = (covariates["site"] == TARGET).to_numpy()
    real = features[at_target]
    assert frechet_to_target(real, real.copy()) == pytest.approx(0.0, abs=1e-8)
    before = frechet_to_target(features[~at_target], real)
    after = frechet_to_target(space.transform(harmonised)[~at_target], real)
    assert after < 0.1 * before
    with pytest.raises(ValueError, match="width"):
        frechet_to_target(real[:, :3], real)


def test_within_site_variability(data):
    raw, covariates, _, _, _ = data
    sites = covariates["site"].to_numpy()
    assert within_site_variability(raw, raw.copy(), sites) == pytest.approx(1.0)
    # halving every image's deviation from a constant halves every pairwise distance
    assert within_site_variability(raw, 0.5 * raw + 0.3, sites) == pytest.approx(0.5)
    # a site with a single image is left out; all-identical images give NaN
    assert within_site_variability(raw[:3], raw[:3], ["A", "A", "B"]) == pytest.approx(1.0)
    flat = np.zeros((4, 1, 4, 4))
    assert math.isnan(within_site_variability(flat, flat, ["A", "A", "B", "B"]))
    with pytest.raises(ValueError, match="differ in shape"):
        within_site_variability(raw, raw[:-1], sites)


# ------------------------------------------------------------------------------ travellers
def test_traveller_pairs_and_perfect_scores(data):
    raw, covariates, harmonised, _, _ = data
    rows, reference = traveller_pairs(covariates, TARGET)
    assert len(rows) == 4 * 2  # 4 travellers, each at the 2 non-target sites
    ids, sites = covariates["true_traveller_id"].to_numpy(), covariates["site"].to_numpy()
    assert (ids[rows] == ids[reference]).all() and (sites[reference] == TARGET).all()
    assert (sites[rows] != TARGET).all()
    scores = traveller_scores(harmonised[rows], raw[reference])  # offsets removed: equal up to rounding
    assert scores["ssim"] == pytest.approx(1.0)
    assert scores["mae"] == pytest.approx(0.0, abs=1e-12)
    assert scores["psnr"] > 200
    assert scores["per_image"]["ssim"].shape == (8,)
    identical = traveller_scores(raw[reference], raw[reference].copy())
    assert identical["ssim"] == 1.0 and identical["mae"] == 0.0 and identical["psnr"] == math.inf
    before = traveller_scores(raw[rows], raw[reference])
    assert before["mae"] == pytest.approx(np.mean([0.12, 0.24]))
    empty = traveller_scores(raw[:0], raw[:0])
    assert math.isnan(empty["ssim"]) and math.isnan(empty["psnr"]) and math.isnan(empty["mae"])
    no_column = covariates.drop(columns="true_traveller_id")
    assert len(traveller_pairs(no_column, TARGET)[0]) == 0


# ------------------------------------------------------------------------------ all metrics
def test_evaluate_harmonization_raw_vs_harmonised(data):
    raw, covariates, harmonised, _, space = data
    before = evaluate_harmonization(raw, raw, covariates, TARGET, features=space)
    after = evaluate_harmonization(raw, harmonised, covariates, TARGET, features=space)
    assert list(after) == list(METRIC_NAMES)
    assert before["site_accuracy"] > 0.9 and after["site_accuracy"] < 0.5
    assert after["site_chance"] == pytest.approx(1 / 3)
    assert after["frechet"] < 0.1 * before["frechet"]
    assert after["within_site_variability"] == pytest.approx(1.0)
    assert after["age_mae"] < 5.0 and after["sex_auroc"] > 0.9
    assert after["ssim"] == pytest.approx(1.0) and after["mae"] == pytest.approx(0.0, abs=1e-12)
    assert before["mae"] > 0.1
    # without travellers (no id column) the traveller metrics are NaN; features=None fits the PCA here
    plain = evaluate_harmonization(raw, harmonised, covariates.drop(columns="true_traveller_id"), TARGET)
    assert all(math.isnan(plain[k]) for k in ("ssim", "psnr", "mae"))
    assert plain["frechet"] == pytest.approx(after["frechet"])


def test_evaluate_harmonization_errors(data):
    raw, covariates, harmonised, _, space = data
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate_harmonization(raw, harmonised[:-1], covariates, TARGET, features=space)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        evaluate_harmonization(raw[:, 0], harmonised[:, 0], covariates, TARGET)
    with pytest.raises(ValueError, match="age, sex"):
        evaluate_harmonization(raw, harmonised, covariates.drop(columns=["age", "sex"]), TARGET, features=space)
    with pytest.raises(ValueError, match="rows but there are"):
        evaluate_harmonization(raw, harmonised, covariates.iloc[:-1], TARGET, features=space)
    single = covariates.assign(site="A")
    with pytest.raises(ValueError, match="at least 2 sites"):
        evaluate_harmonization(raw, harmonised, single, TARGET, features=space)
    with pytest.raises(ValueError, match="has no images"):
        evaluate_harmonization(raw, harmonised, covariates, "Z", features=space)
    with pytest.raises(ValueError, match="'F' or 'M'"):
        evaluate_harmonization(raw, harmonised, covariates.assign(sex="female"), TARGET, features=space)
    bad = harmonised.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_harmonization(raw, bad, covariates, TARGET, features=space)
