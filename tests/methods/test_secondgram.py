import numpy as np
import pandas as pd
import pytest

from neurodiff.evaluation.imputation import pearson_feature
from neurodiff.methods.longitudinal import PRESETS, SecondGram
from neurodiff.methods.longitudinal.secondgram import _PAPER_ALPHA_BAR

TINY = dict(labels=["age", "disease"], hidden=(64, 32, 16), emb_dim=32, batch_size=64, progress=False)


def cohort(n=300, paired=150, d=8, seed=0):
    """x1 from a 2-factor model; x2 = x1 − 0.3·disease·(first half of features) + noise."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(50, 80, n)
    disease = (rng.random(n) < 0.3).astype(float)
    loadings = np.random.default_rng(99).normal(size=(2, d))  # the same population for every seed
    x1 = rng.normal(size=(n, 2)) @ loadings + 0.02 * (age[:, None] - 65) + 10
    effect = np.zeros(d)
    effect[: d // 2] = 0.3
    x2 = x1 - disease[:, None] * effect + 0.05 * rng.normal(size=(n, d))
    cols = [f"f{j}" for j in range(d)]
    first = pd.DataFrame(x1, columns=cols).assign(subject_id=[f"s{i}" for i in range(n)], visit=1, age=age, disease=disease)
    second = pd.DataFrame(x2[:paired], columns=cols).assign(
        subject_id=[f"s{i}" for i in range(paired)], visit=2, age=age[:paired] + 2, disease=disease[:paired])
    return pd.concat([first, second], ignore_index=True)


@pytest.fixture(scope="module")
def fitted():
    return SecondGram(**TINY, max_epochs=120, patience=None, lr=2e-3).fit(cohort())


def test_learns_the_follow_up(fitted):
    data = fitted.read(cohort(seed=1))  # new subjects from the same model
    paired = data.subset(np.flatnonzero(data.paired))
    generated = fitted.generate(paired)[0]
    assert pearson_feature(paired.x2, generated) > 0.6
    assert fitted.history_["thresholds"]["mode"] == "calibrated"
    assert fitted.history_["best_score"] == max(v["score"] for v in fitted.history_["validation"])


def test_training_samples_include_self_conditioning(fitted):
    # 150 paired − 15 validation = 135 pairs, plus 300 − 15 = 285 self samples
    assert fitted.n_train_samples_ == 135 + 285
    assert _PAPER_ALPHA_BAR[6].sqrt().item() == pytest.approx(0.993, abs=5e-4)
    assert (1 - _PAPER_ALPHA_BAR[6]).sqrt().item() == pytest.approx(0.120, abs=5e-4)


def test_predict_and_complete_flag_generated_rows(fitted):
    table = cohort()
    predicted = fitted.predict(table, n_samples=2, seed=3)
    assert len(predicted) == 2 * 150 and set(predicted["sample"]) == {0, 1} and predicted["generated"].all()
    assert (predicted["visit"] == 2).all() and set(predicted["subject_id"]) == {f"s{i}" for i in range(150, 300)}
    completed = fitted.complete(table)
    assert len(completed) == len(table) + 150
    assert completed["generated"].sum() == 150 and not completed["generated"][: len(table)].any()
    assert np.isfinite(predicted[[f"f{j}" for j in range(8)]].to_numpy()).all()


def test_save_load_round_trip(fitted, tmp_path):
    fitted.save(tmp_path / "sg")
    again = SecondGram.load(tmp_path / "sg")
    a = fitted.predict(cohort(), seed=5)
    b = again.predict(cohort(), seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert again.training_summary_["thresholds"]["mode"] == "calibrated"


def test_complete_replaces_a_follow_up_row_without_feature_values(fitted):
    """Such a row is no follow-up: the subject gets a generated one, which takes the blank row's place."""
    table = cohort()
    blank = table.index[(table.subject_id == "s3") & (table.visit == 2)]
    table.loc[blank, [f"f{j}" for j in range(8)]] = np.nan
    with pytest.warns(UserWarning, match="no feature values"):
        completed = fitted.complete(table)
    s3 = completed[completed.subject_id == "s3"]
    assert s3["visit"].tolist() == [1, 2] and s3["generated"].tolist() == [False, True]
    assert s3[[f"f{j}" for j in range(8)]].notna().all().all()


def test_mismatched_features_at_predict_are_named(fitted):
    with pytest.raises(ValueError, match="feature column 'f3' used when the model was fitted is not in the table"):
        fitted.predict(cohort().drop(columns=["f3"]))


def test_preparation_is_fitted_without_the_early_stopping_subjects():
    """A validation subject's follow-up must not move the scaler (the public code's "scalers fitted before
    the split"); with 40 paired subjects only 4 validate, which draws a warning."""
    table = cohort(n=60, paired=40)
    model = SecondGram(**TINY, max_epochs=1)
    data = model.read(table)
    _, val = model._split(data.paired)
    changed = table.copy()
    changed.loc[changed.subject_id.eq(data.subject_ids[val[0]]) & changed.visit.eq(2), "f0"] = 100.0
    with pytest.warns(UserWarning, match="early stopping validates on 4 paired subjects"):
        before = SecondGram(**TINY, max_epochs=1).fit(table).preparation_
    after = SecondGram(**TINY, max_epochs=1).fit(changed).preparation_
    np.testing.assert_array_equal(before.x_max, after.x_max)


def test_no_paired_subjects_is_a_clear_error():
    table = cohort()
    with pytest.raises(ValueError, match="found 0"):
        SecondGram(**TINY, max_epochs=1).fit(table[table.visit == 1])


def test_presets():
    assert set(PRESETS) == {"secondgram", "secondgram_noised_schedule", "vanilla", "pretrained", "no_grad", "no_self",
                            "secondgram_warmup_calibration"}
    vanilla = SecondGram.preset("vanilla", labels=["age"])
    assert not vanilla.self_conditioning and vanilla.gradient_manipulation == "none"
    with pytest.raises(ValueError, match="unknown SECONDGRAM variant 'best'"):
        SecondGram.preset("best")


def test_pretrained_variant_runs():
    model = SecondGram.preset("pretrained", **{**TINY, "pretrain_epochs": 2, "max_epochs": 2}).fit(cohort(n=120, paired=60))
    assert len(model.pretrain_history_["epoch_loss"]) == 2
    assert model.n_train_samples_ == 60 - 6  # paired only, minus validation


def test_complete_keeps_the_tables_dtypes(fitted):
    table = cohort(n=40, paired=20).assign(disease=lambda t: t["disease"].astype(int), scanner=3)
    with pytest.warns(UserWarning, match="numeric column\\(s\\) 'scanner' are not features of the model"):
        completed = fitted.complete(table)  # features detected at fit: 'scanner' is none of them
    assert completed["disease"].dtype == np.int64 and completed["visit"].dtype == np.int64
    assert str(completed["scanner"].dtype) == "Int64" and completed["scanner"].isna().sum() == 20
    assert completed["f0"].dtype == np.float64
    everyone_paired = fitted.complete(cohort(n=20, paired=20))  # nothing to generate: the table unchanged
    assert (everyone_paired.dtypes.drop("generated") == cohort(n=20, paired=20).dtypes).all()
    assert not everyone_paired["generated"].any()


def test_a_fit_that_skips_most_updates_warns_and_one_that_trains_does_not():
    import warnings

    from neurodiff.methods.longitudinal.secondgram import MostlySkippedWarning

    table = cohort(n=120, paired=60)
    stalled = SecondGram(**TINY, max_epochs=3, patience=None, gradient_manipulation="fixed", clip=1e-6, skip=2e-6)
    with pytest.warns(MostlySkippedWarning, match=r"of \d+ updates \(100%\) were skipped.*fixed skip threshold 2e-06"):
        stalled.fit(table)
    assert stalled.history_["skipped"] == len(stalled.history_["loss"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", MostlySkippedWarning)
        SecondGram.preset("no_grad", **TINY, max_epochs=3, patience=None).fit(table)


@pytest.mark.parametrize("variant, params, says, recommends, not_recommended", [
    ("secondgram", {}, "calibrated at initialisation", "secondgram_warmup_calibration and no_grad", None),
    ("secondgram_warmup_calibration", {}, "calibrated after 5 epochs", "no_grad", "secondgram_warmup_calibration"),
    ("secondgram", {"gradient_manipulation": "fixed", "clip": 0.3, "skip": 1.8}, "fixed skip threshold 1.8",
     "secondgram_warmup_calibration and no_grad", None),
    ("no_grad", {}, "not finite (the training diverged)", "lower learning rate", "no_grad"),
])
def test_the_skip_warning_says_what_skipped_the_updates_in_every_mode(variant, params, says, recommends,
                                                                     not_recommended):
    from neurodiff.methods.longitudinal.secondgram import MostlySkippedWarning

    model = SecondGram.preset(variant, labels=["age"], **params)
    model.history_ = {"loss": [1.0] * 10, "skipped": 4, "best_score": 0.01}  # 40 % skipped: above the 30 % rule
    with pytest.warns(MostlySkippedWarning, match="4 of 10 updates") as caught:
        model._warn_if_stalled()
    message = str(caught[0].message)
    assert says in message and recommends in message
    assert not_recommended is None or f"{not_recommended} " not in message.split(";")[1]
    model.history_ = {"loss": [1.0] * 10, "skipped": 3, "best_score": 0.01}  # 30 %: no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", MostlySkippedWarning)
        model._warn_if_stalled()
