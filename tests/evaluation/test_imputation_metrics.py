import math

import numpy as np
import pytest

from neurodiff.evaluation.imputation import (
    METRIC_NAMES,
    TRAINING_SETS,
    case_study,
    corr_matrix_diff,
    cosine_distance,
    downstream_auroc,
    downstream_test_matrix,
    downstream_training_sets,
    euclidean,
    frechet,
    imputation_metrics,
    mean_correlation,
    mlp_classifier,
    pearson_feature,
    pearson_subject,
)

FAST = {"hidden": (32, 32), "max_epochs": 40}


def scaled_sample(n, d, seed):
    """Correlated features in [-1, 1], like min-max scaled regional volumes."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return np.tanh(0.7 * rng.normal(size=(n, d)) @ mixing)


# ------------------------------------------------------------------------------ metrics
def test_identical_inputs_give_perfect_scores():
    x = scaled_sample(60, 8, seed=0)
    metrics = imputation_metrics(x, x.copy())
    assert list(metrics) == list(METRIC_NAMES)
    assert metrics["pearson_feature"] == pytest.approx(1.0)
    assert metrics["pearson_subject"] == pytest.approx(1.0)
    assert metrics["mean_correlation"] == pytest.approx(1.0)
    assert metrics["euclidean"] == 0.0
    assert metrics["cosine_distance"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["corr_matrix_diff"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["frechet"] == pytest.approx(0.0, abs=1e-8)


def test_pearson_feature_by_hand():
    # column 0: [1,2,3] vs [1,3,2]: centred [-1,0,1]·[-1,1,0] = 1, norms √2·√2 → r = 0.5
    # column 1: [0,1,0] vs [0,1,0] → r = 1; mean 0.75
    real = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
    generated = np.array([[1.0, 0.0], [3.0, 1.0], [2.0, 0.0]])
    assert pearson_feature(real, generated) == pytest.approx(0.75)
    # the same pairs per feature as numpy computes them
    expected = np.mean([np.corrcoef(real[:, j], generated[:, j])[0, 1] for j in range(2)])
    assert pearson_feature(real, generated) == pytest.approx(expected)


def test_pearson_subject_by_hand():
    # row 0: [1,2,3] vs [1,3,2] → 0.5; row 1: [1,2,3] vs [3,2,1] → −1; mean −0.25
    real = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    generated = np.array([[1.0, 3.0, 2.0], [3.0, 2.0, 1.0]])
    assert pearson_subject(real, generated) == pytest.approx(-0.25)


def test_constant_real_features_and_subjects_are_left_out():
    real = np.array([[1.0, 0.0, 5.0], [2.0, 1.0, 5.0], [3.0, 0.0, 5.0]])  # feature 2 constant
    generated = np.array([[1.0, 0.0, 0.1], [3.0, 1.0, 0.2], [2.0, 0.0, 0.3]])
    assert pearson_feature(real, generated) == pytest.approx(0.75)  # as without feature 2
    # a constant subject row is left out of pearson_subject
    real_s = np.array([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]])
    gen_s = np.array([[1.0, 3.0, 2.0], [1.0, 2.0, 3.0]])
    assert pearson_subject(real_s, gen_s) == pytest.approx(0.5)


def test_a_generated_constant_counts_as_no_correlation_not_as_left_out():
    """A generator that saturates 9 of 10 features at the clamp must not score as if perfect on the tenth."""
    real = scaled_sample(20, 10, seed=4)
    collapsed = np.full_like(real, -1.0)
    collapsed[:, 0] = real[:, 0]
    assert pearson_feature(real, collapsed) == pytest.approx(0.1)
    assert pearson_subject(real[:2], np.array([real[0], np.full(10, 0.3)])) == pytest.approx(0.5)
    with pytest.warns(RuntimeWarning, match="pearson_feature"):
        assert math.isnan(pearson_feature(np.ones((4, 3)), scaled_sample(4, 3, seed=1)))


def test_pearson_feature_and_pearson_subject_measure_different_things():
    real = scaled_sample(50, 12, seed=2)
    rng = np.random.default_rng(3)
    # a per-feature affine map keeps every feature's ranking across subjects: pearson_feature = 1
    per_feature = 0.3 * real * rng.uniform(0.5, 2.0, size=12) + rng.uniform(-0.5, 0.5, size=12)
    assert pearson_feature(real, per_feature) == pytest.approx(1.0)
    assert pearson_subject(real, per_feature) < 0.8
    # a per-subject shift and scale keeps every subject's profile across features: pearson_subject = 1
    per_subject = 0.5 * real * rng.uniform(0.5, 1.5, size=(50, 1)) + rng.uniform(-0.5, 0.5, size=(50, 1))
    assert pearson_subject(real, per_subject) == pytest.approx(1.0)
    assert pearson_feature(real, per_subject) < 0.8


def test_euclidean_by_hand():
    real = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    generated = np.array([[3.0, 4.0], [1.0, 1.0], [2.0, 1.0]])  # distances 5, 0, 1
    assert euclidean(real, generated) == pytest.approx(2.0)


def test_cosine_distance_by_hand():
    real = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    generated = np.array([[0.0, 1.0], [2.0, 2.0], [0.0, -3.0]])  # cos 0, 1, −1 → distances 1, 0, 2
    assert cosine_distance(real, generated) == pytest.approx(1.0)


def test_mean_correlation_by_hand():
    # means [1, 1, 2] and [1, 2, 3]: centred dot 1, norms √6/3 and √2 → r = √3/2
    real = np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 4.0]])
    generated = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    assert mean_correlation(real, generated) == pytest.approx(math.sqrt(3) / 2)


def test_corr_matrix_diff_by_hand():
    # real: f1 = 2·f0, f2 = −f0 → C01 = 1, C02 = −1, C12 = −1
    # generated: f1 = f0, f2 = [1,−2,1] ⟂ f0 → C01 = 1, C02 = 0, C12 = 0; mean |Δ| = (0 + 1 + 1) / 3
    real = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 2.0], [3.0, 6.0, 1.0]])
    generated = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, -2.0], [3.0, 3.0, 1.0]])
    assert corr_matrix_diff(real, generated) == pytest.approx(2 / 3)


def test_corr_matrix_diff_counts_a_collapsed_generated_feature_as_uncorrelated():
    """A feature constant only in the generated data is not left out (that would reward the collapse):
    it counts with correlation 0 to every other feature."""
    # real: C01 = 1, C02 = −1, C12 = −1; generated: f1 = f0 (C01 = 1), f2 collapsed → C02 = C12 = 0
    real = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 2.0], [3.0, 6.0, 1.0]])
    generated = np.array([[1.0, 1.0, -1.0], [2.0, 2.0, -1.0], [3.0, 3.0, -1.0]])
    assert corr_matrix_diff(real, generated) == pytest.approx(2 / 3)
    # a generator that saturates half the features scores worse than one that keeps them
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 10))
    real[:, 5:] += real[:, :5]
    good = real + rng.normal(scale=0.5, size=real.shape)
    collapsed = good.copy()
    collapsed[:, 5:] = 1.0
    assert corr_matrix_diff(real, collapsed) > 2 * corr_matrix_diff(real, good)  # 0.13 vs 0.04 (was 0.045 vs 0.045)
    # a feature constant in the REAL data is still left out, with its pairs
    real_const = real.copy()
    real_const[:, 9] = 0.5
    assert corr_matrix_diff(real_const, good) == pytest.approx(corr_matrix_diff(real[:, :9], good[:, :9]))
    with pytest.warns(RuntimeWarning, match="corr_matrix_diff"):
        assert math.isnan(corr_matrix_diff(np.ones((4, 3)), scaled_sample(4, 3, seed=1)))


def test_frechet_by_hand():
    # real: mean 0, cov diag(2/3, 8/3); generated = real·[2, 1] + 1: mean (1, 1), cov diag(8/3, 8/3)
    # ‖Δμ‖² = 2; traces 10/3 + 16/3; 2·Tr√(ΣrΣg) = 2·(4/3 + 8/3) = 8 → 2 + 26/3 − 8 = 8/3
    real = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    generated = real * np.array([2.0, 1.0]) + 1.0
    assert frechet(real, generated) == pytest.approx(8 / 3)


def test_frechet_is_finite_when_n_is_below_d():
    # 30 subjects, 120 features: both covariances have rank 29 (D = 769 behaves alike, only slower)
    real, generated = scaled_sample(30, 120, seed=4), scaled_sample(30, 120, seed=5) + 0.05
    value = frechet(real, generated)
    assert math.isfinite(value) and value > 0
    assert frechet(real, real) == pytest.approx(0.0, abs=1e-6)


def test_frechet_with_disjoint_supports_is_exact():
    # Σr Σg = 0 (no well-conditioned square root); the exact answer is ‖Δμ‖² + Tr Σr + Tr Σg
    rng = np.random.default_rng(6)
    real, generated = np.zeros((30, 50)), np.zeros((30, 50))
    real[:, :5], generated[:, 5:10] = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    exact = ((real.mean(0) - generated.mean(0)) ** 2).sum() + np.cov(real.T).trace() + np.cov(generated.T).trace()
    assert frechet(real, generated) == pytest.approx(exact, rel=1e-9)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="same shape"):
        imputation_metrics(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="generated must be a 2-D"):
        imputation_metrics(np.zeros((5, 3)), np.zeros(15))
    with pytest.raises(ValueError, match="real contains NaN"):
        imputation_metrics(np.full((5, 3), np.nan), np.zeros((5, 3)))


# ------------------------------------------------------------------------------ downstream
def separable(n, d, seed, positive_rate=0.5):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < positive_rate).astype(float)
    x = rng.normal(size=(n, d))
    x[:, 0] += 3.0 * (2 * y - 1)
    return x, y


def test_the_classifier_is_a_three_layer_mlp():
    net = mlp_classifier(10)
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    sizes = [(m.in_features, m.out_features) for m in net if hasattr(m, "in_features")]
    assert sizes == [(10, 256), (256, 256), (256, 1)]


def test_downstream_auroc_is_high_on_a_separable_problem():
    x, y = separable(400, 6, seed=7)
    auroc = downstream_auroc(x[:300], y[:300], x[300:], y[300:], seed=0, **FAST)
    assert auroc > 0.95


def test_downstream_auroc_learns_a_rare_label():
    x, y = separable(700, 6, seed=8, positive_rate=0.05)
    assert 5 < y[:500].sum() < 60 and y[500:].sum() > 2
    auroc = downstream_auroc(x[:500], y[:500], x[500:], y[500:], seed=0, **FAST)
    assert auroc > 0.9


def test_downstream_auroc_is_near_chance_on_noise_and_reproducible():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(400, 6)), rng.integers(0, 2, size=400)
    a = downstream_auroc(x[:200], y[:200], x[200:], y[200:], seed=1, **FAST)
    b = downstream_auroc(x[:200], y[:200], x[200:], y[200:], seed=1, **FAST)
    assert 0.35 < a < 0.65
    assert a == b


def test_downstream_auroc_single_class_is_nan_with_a_warning():
    x, y = separable(60, 3, seed=10)
    with pytest.warns(RuntimeWarning, match="'stroke'.*test set"):
        assert math.isnan(downstream_auroc(x, y, x, np.zeros(60), seed=0, label="stroke", **FAST))
    with pytest.warns(RuntimeWarning, match="'parkinsonism'.*training set"):
        assert math.isnan(downstream_auroc(x, np.zeros(60), x, y, seed=0, label="parkinsonism", **FAST))


def test_downstream_auroc_rejects_bad_input():
    x, y = separable(20, 3, seed=11)
    with pytest.raises(ValueError, match="0/1"):
        downstream_auroc(x, 2 * y, x, y, seed=0)
    with pytest.raises(ValueError, match="train_X has NaN"):
        downstream_auroc(np.where(x > 2, np.nan, x), y, x, y, seed=0)
    with pytest.raises(ValueError, match="same number of features"):
        downstream_auroc(x, y, x[:, :2], y, seed=0)


def training_cohort():
    rng = np.random.default_rng(12)
    n, d = 10, 3
    x1 = rng.normal(size=(n, d))
    y = rng.integers(0, 2, size=n)
    paired = np.zeros(n, dtype=bool)
    paired[[1, 4, 7]] = True
    x2_real = np.full((n, d), np.nan)
    x2_real[paired] = rng.normal(size=(3, d))
    x2_gen = rng.normal(size=(n, d))
    return x1, y, paired, x2_real, x2_gen


def test_downstream_training_sets_have_the_right_rows_and_columns():
    x1, y, paired, x2_real, x2_gen = training_cohort()
    sets = downstream_training_sets(x1, y, paired, x2_real, x2_gen)
    assert tuple(sets) == TRAINING_SETS
    shapes = {name: (X.shape, yy.shape) for name, (X, yy) in sets.items()}
    assert shapes == {
        "all_first": ((10, 3), (10,)),
        "paired_first": ((3, 3), (3,)),
        "paired_real": ((3, 6), (3,)),
        "enriched": ((10, 6), (10,)),
        "all_generated": ((10, 6), (10,)),
    }
    np.testing.assert_array_equal(sets["paired_real"][0], np.hstack([x1[paired], x2_real[paired]]))
    np.testing.assert_array_equal(sets["paired_first"][1], y[paired])
    enriched = sets["enriched"][0]
    np.testing.assert_array_equal(enriched[paired, 3:], x2_real[paired])
    np.testing.assert_array_equal(enriched[~paired, 3:], x2_gen[~paired])
    np.testing.assert_array_equal(sets["all_generated"][0][:, 3:], x2_gen)
    assert np.isfinite(enriched).all()


def test_downstream_training_sets_reject_bad_input():
    x1, y, paired, x2_real, x2_gen = training_cohort()
    x2_missing = x2_real.copy()
    x2_missing[4, 0] = np.nan
    with pytest.raises(ValueError, match="x2_real"):
        downstream_training_sets(x1, y, paired, x2_missing, x2_gen)
    with pytest.raises(ValueError, match="paired must be a boolean"):
        downstream_training_sets(x1, y, paired.astype(int), x2_real, x2_gen)
    with pytest.raises(ValueError, match="x2_generated must have shape"):
        downstream_training_sets(x1, y, paired, x2_real, x2_gen[:5])


def test_downstream_test_matrix_matches_the_training_sets():
    rng = np.random.default_rng(13)
    x1, x2 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    for name in TRAINING_SETS:
        expected = 3 if name.endswith("_first") else 6
        assert downstream_test_matrix(x1, x2, name).shape == (4, expected)
    np.testing.assert_array_equal(downstream_test_matrix(x1, x2, "enriched"), np.hstack([x1, x2]))
    with pytest.raises(ValueError, match="unknown training set"):
        downstream_test_matrix(x1, x2, "everything")


# ------------------------------------------------------------------------------ case study
def test_case_study_by_hand():
    # features: [left SNc, right SNc, other]; group = columns 0 and 1
    x1 = np.array([[10.0, 10.0, 0.0], [10.0, 12.0, 0.0], [8.0, 8.0, 0.0], [9.0, 9.0, 0.0]])
    x2 = np.array([[9.0, 8.0, 5.0], [9.0, 11.0, 5.0], [8.0, 7.5, 5.0], [9.5, 8.0, 5.0]])
    label = np.array([True, True, False, False])
    # per-subject mean change over the group's columns: −1.5, −1 (positive) and −0.25, −0.25 (negative)
    assert case_study(x1, x2, label, [0, 1]) == {
        "change_positive": -1.25, "change_negative": -0.25, "n_positive": 2, "n_negative": 2,
    }
    # scaled inputs are mapped back to original units first
    scaled = case_study(x1 / 10, x2 / 10, label, [0, 1], to_original=lambda x: 10 * x)
    assert scaled["change_positive"] == pytest.approx(-1.25)
    single = case_study(x1, x2, np.zeros(4, dtype=bool), 2)
    assert single["change_negative"] == 5.0 and math.isnan(single["change_positive"]) and single["n_positive"] == 0
    with pytest.raises(ValueError, match="feature_index"):
        case_study(x1, x2, label, [7])


def test_case_study_averages_the_groups_columns_not_sums_them():
    """METHODS.md and the paper's public code: the group's mean change. Six columns that each drop by 2
    (label) or 1 (others) give −2 / −1, whatever the size of the group (a sum gave −12 / −6)."""
    rng = np.random.default_rng(0)
    x1 = rng.normal(100, 5, (100, 6))
    label = np.arange(100) < 30
    x2 = x1 - np.where(label[:, None], 2.0, 1.0)
    result = case_study(x1, x2, label, list(range(6)))
    assert result["change_positive"] == pytest.approx(-2.0) and result["change_negative"] == pytest.approx(-1.0)
    assert case_study(x1, x2, label, [0, 1])["change_positive"] == pytest.approx(-2.0)
