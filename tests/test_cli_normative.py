"""`neurodiff normative fit|score|survival|benchmark` on the tiny cohort with patients (32×32)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from neurodiff.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def scored(tiny_patient_cohort, tmp_path_factory):
    """A 2-step quick model and its scores.csv (with deviation maps) for the whole cohort."""
    manifest, _, _ = tiny_patient_cohort
    folder = tmp_path_factory.mktemp("nda-cli")
    result = runner.invoke(app, ["normative", "fit", "--manifest", str(manifest), "--controls-only", "--quick",
                                 "--steps", "2", "--out", str(folder / "model")])
    assert result.exit_code == 0, result.output
    before = {p: p.read_bytes() for p in manifest.parent.rglob("*.nii.gz")}
    result = runner.invoke(app, ["normative", "score", "--model", str(folder / "model"), "--manifest", str(manifest),
                                 "--out", str(folder / "scores"), "--maps"])
    assert result.exit_code == 0, result.output
    assert {p: p.read_bytes() for p in manifest.parent.rglob("*.nii.gz")} == before  # inputs untouched
    return folder


def test_fit_refuses_patients_and_writes_nothing(tiny_patient_cohort, tmp_path):
    manifest, _, _ = tiny_patient_cohort
    result = runner.invoke(app, ["normative", "fit", "--manifest", str(manifest), "--quick", "--steps", "2",
                                 "--out", str(tmp_path / "model")])
    assert result.exit_code == 2 and "healthy controls only" in result.output and "'patient'" in result.output
    assert not (tmp_path / "model").exists()


def test_score_writes_scores_and_deviation_maps(scored, tiny_patient_cohort):
    _, frame, _ = tiny_patient_cohort
    table = pd.read_csv(scored / "scores" / "scores.csv")
    assert len(table) == len(frame)
    for column in ("subject_id", "group", "time", "event", "similarity", "similarity_percentile", "similarity_z",
                   "mahalanobis", "mahalanobis_z", "deviation_path"):
        assert column in table.columns
    assert table["similarity"].between(-1, 1).all() and table["similarity_percentile"].between(0, 100).all()
    # which rows the model was fitted on (in-sample), which calibrated it, which are new
    assert set(table["normative_role"]) == {"training", "calibration", "new"}
    assert table.loc[table["normative_role"].ne("new"), "group"].eq("control").all()
    assert table.loc[table["group"].eq("patient"), "normative_role"].eq("new").all()
    deviation = nib.load(scored / "scores" / table["deviation_path"][0])
    source = nib.load(frame["resolved_path"][0])
    assert deviation.shape == source.shape and np.allclose(deviation.affine, source.affine)


def test_survival_on_the_scores_writes_the_cox_km_and_ks_results(scored, tiny_patient_cohort):
    manifest, frame, _ = tiny_patient_cohort
    out = scored / "survival"
    result = runner.invoke(app, ["normative", "survival", "--scores", str(scored / "scores" / "scores.csv"),
                                 "--manifest", str(manifest), "--covariates", "age,sex", "--out", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads((out / "results.json").read_text())
    analysis = document["result"]
    assert analysis["n"] == int(frame["group"].eq("patient").sum())
    for key in ("hr", "hr_ci", "p", "hr_per_sd", "c_index", "logrank_p", "ks_statistic", "ks_p", "adjusted"):
        assert key in analysis
    assert (out / "km.png").stat().st_size > 1000 and "Cox" in (out / "report.html").read_text()


def test_survival_names_bad_times_and_missing_events(scored, tmp_path):
    table = pd.read_csv(scored / "scores" / "scores.csv")
    patient = table.index[table["group"].eq("patient")][0]
    bad = table.copy()
    bad.loc[patient, "time"] = -5
    bad.to_csv(tmp_path / "bad_time.csv", index=False)
    result = runner.invoke(app, ["normative", "survival", "--scores", str(tmp_path / "bad_time.csv"),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and table["subject_id"][patient] in result.output and "time" in result.output
    bad = table.copy()
    bad.loc[patient, "event"] = np.nan
    bad.to_csv(tmp_path / "bad_event.csv", index=False)
    result = runner.invoke(app, ["normative", "survival", "--scores", str(tmp_path / "bad_event.csv"),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and table["subject_id"][patient] in result.output and "event" in result.output
    result = runner.invoke(app, ["normative", "survival", "--scores", str(scored / "scores" / "scores.csv"),
                                 "--score-column", "simlarity", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "simlarity" in result.output
    assert not (tmp_path / "out").exists()


def test_survival_names_a_blank_subject_id_and_warns_of_unscored_patients(scored, tiny_patient_cohort, tmp_path):
    """A blank id used to crash with a TypeError traceback; manifest patients without a score were dropped
    without a word."""
    manifest, frame, _ = tiny_patient_cohort
    table = pd.read_csv(scored / "scores" / "scores.csv", dtype={"subject_id": str})
    blank = table.copy()
    blank.loc[3, "subject_id"] = np.nan
    blank.to_csv(tmp_path / "blank.csv", index=False)
    result = runner.invoke(app, ["normative", "survival", "--scores", str(tmp_path / "blank.csv"), "--manifest",
                                 str(manifest), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "blank.csv has 1 row(s) without a subject_id (row 5)" in result.output
    assert not (tmp_path / "out").exists()
    patients = table.index[table["group"].eq("patient")]
    table.drop(index=patients[:2]).to_csv(tmp_path / "fewer.csv", index=False)
    result = runner.invoke(app, ["normative", "survival", "--scores", str(tmp_path / "fewer.csv"), "--manifest",
                                 str(manifest), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    dropped = ", ".join(sorted(table["subject_id"][patients[:2]]))
    assert f"2 patient(s) of --manifest {manifest} have no score" in result.output and dropped in result.output
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["result"]["n"] == int(frame["group"].eq("patient").sum()) - 2
    assert any("have no score" in w for w in document["warnings"])
    # a clinical table without a group column: the controls in it are not "patients without a score"
    clinical = tmp_path / "clinical.csv"
    pd.read_csv(manifest, dtype={"subject_id": str}).drop(columns=["group"]).to_csv(clinical, index=False)
    result = runner.invoke(app, ["normative", "survival", "--scores", str(scored / "scores" / "scores.csv"),
                                 "--manifest", str(clinical), "--out", str(tmp_path / "out2")])
    assert result.exit_code == 0, result.output
    assert "have no score" not in result.output


def test_survival_warns_when_events_are_few(scored, tmp_path):
    result = runner.invoke(app, ["normative", "survival", "--scores", str(scored / "scores" / "scores.csv"),
                                 "--min-events", "1000", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "events" in result.output


def test_benchmark_writes_every_method_and_the_survival_keys(tiny_patient_cohort, tmp_path):
    manifest, _, _ = tiny_patient_cohort
    out = tmp_path / "bench"
    result = runner.invoke(app, ["normative", "benchmark", "--manifest", str(manifest), "--quick", "--seeds", "1",
                                 "--steps", "2", "--baseline-steps", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads((out / "results.json").read_text())
    assert set(document["methods"]) == {"nda", "nda_mahalanobis", "nda_no_age", "cvae", "regression_z",
                                        "brain_age_gap", "oracle_severity"}
    for values in document["methods"].values():
        for key in ("hr", "hr_ci", "p", "c_index", "ks_statistic", "ks_p", "logrank_p", "spearman_severity"):
            assert key in values
    # the planted severity as a score: perfectly ordered with itself, and every patient above every control
    oracle = document["methods"]["oracle_severity"]
    assert oracle["spearman_severity"]["mean"] == pytest.approx(1.0) and oracle["auroc_patients"]["mean"] == 1.0
    report = (out / "report.html").read_text()
    assert "Cox proportional hazards" in report and "kaplan_meier.png" in report
    assert (out / "kaplan_meier.png").exists() and (out / "deviation_maps.png").exists()


def test_control_split_is_by_subject_one_image_per_held_out_subject_and_never_patients():
    from neurodiff.evaluation.normative_benchmark import split_controls

    frame = pd.DataFrame({"subject_id": ["a", "a", "b", "b", "c", "d", "e", "f", "p1", "p2"],
                          "group": ["control"] * 8 + ["patient"] * 2})
    train, held = split_controls(frame, 0.5, seed=0)
    assert np.array_equal(held, split_controls(frame, 0.5, seed=0)[1])
    subjects = frame["subject_id"].to_numpy()
    assert len(held) == 3 and len(set(subjects[held])) == 3  # 3 of the 6 control subjects, one image each
    assert not set(subjects[train]) & set(subjects[held])
    assert frame["group"].iloc[np.r_[train, held]].eq("control").all()


def test_benchmark_check_refuses_a_patient_imaged_twice_and_too_few_controls_for_brain_age():
    """Checked before any training: a patient's second image would count as a second patient in the Cox
    model, and 13 control subjects (one image each) leave 9 for training, below the brain-age model's
    5-fold minimum."""
    from neurodiff.evaluation.normative_benchmark import NormativeBenchmarkConfig

    def cohort(controls, patients):
        ids = [f"c{i}" for i in range(controls)] + list(patients)
        return pd.DataFrame({"subject_id": ids, "group": ["control"] * controls + ["patient"] * len(patients),
                             "age": 60.0, "sex": "F", "time": 100.0, "event": 1})

    config = NormativeBenchmarkConfig()
    config.check(cohort(14, ["p1", "p2", "p3"]))
    with pytest.raises(ValueError, match=r"patient\(s\) p2 have several images"):
        config.check(cohort(14, ["p1", "p2", "p2", "p3"]))
    with pytest.raises(ValueError, match="brain_age_gap needs at least 10 training control images.*leaves 9"):
        config.check(cohort(13, ["p1", "p2", "p3"]))
    NormativeBenchmarkConfig(methods=("nda",)).check(cohort(13, ["p1", "p2", "p3"]))


def test_benchmark_check_refuses_bad_patient_survival_data_before_training():
    """A negative time used to pass the check and fail only after the first model (NDA: hours) was fitted."""
    from neurodiff.evaluation.normative_benchmark import NormativeBenchmarkConfig

    frame = pd.DataFrame({"subject_id": [f"c{i}" for i in range(14)] + ["p1", "p2", "p3"],
                          "group": ["control"] * 14 + ["patient"] * 3, "age": 60.0, "sex": "F",
                          "time": [float("nan")] * 14 + [100.0, -5.0, 30.0], "event": [0] * 14 + [1, 1, 0]})
    with pytest.raises(ValueError, match=r"time column 'time' must be > 0.*p2 \(time=-5.0\)"):
        NormativeBenchmarkConfig().check(frame)
    frame.loc[15, "time"] = 5.0
    NormativeBenchmarkConfig().check(frame)  # controls' blank times are not checked


def test_ranked_survival_metrics_know_which_way_the_score_should_point():
    """A score of deviation whose patients live *longer* the more deviant they are runs the wrong way: the
    Cox model's own C-index and 'CI excludes 1' cannot tell (the model picks its sign from the outcome), the
    direction-aware metrics can."""
    from neurodiff.evaluation.normative_benchmark import NormativeBenchmarkConfig, _evaluate
    from neurodiff.evaluation.survival import survival_analysis

    rng = np.random.default_rng(0)
    n_controls, n_patients = 30, 60
    values = np.r_[rng.normal(0.0, 1.0, n_controls), rng.normal(1.0, 1.0, n_patients)]
    time = np.r_[np.full(n_controls, np.nan), 100.0 * np.exp(0.8 * values[n_controls:] + rng.normal(0, 0.3, n_patients))]
    frame = pd.DataFrame({"subject_id": [f"s{i}" for i in range(len(values))], "time": time,
                          "event": np.r_[np.zeros(n_controls, int), np.ones(n_patients, int)]})
    is_patient = np.r_[np.zeros(n_controls, bool), np.ones(n_patients, bool)]
    config = NormativeBenchmarkConfig(survival_covariates=())
    wrong, _ = _evaluate("cvae", values, frame, is_patient, config, survival_analysis)  # higher = more deviant
    right, _ = _evaluate("nda", values, frame, is_patient, config, survival_analysis)   # higher = more normal
    assert wrong["c_index"] == pytest.approx(right["c_index"]) and wrong["c_index"] > 0.7
    assert wrong["hr_ci_excludes_1"] == right["hr_ci_excludes_1"] == 1.0
    assert wrong["c_index_expected"] == pytest.approx(1 - right["c_index_expected"]) and wrong["c_index_expected"] < 0.3
    assert (wrong["hr_ci_expected_side"], right["hr_ci_expected_side"]) == (0.0, 1.0)


def test_survival_refuses_a_patient_scored_twice_without_a_manifest(scored, tmp_path):
    table = pd.read_csv(scored / "scores" / "scores.csv", dtype={"subject_id": str})
    patient = table[table["group"].eq("patient")].iloc[[0]]
    pd.concat([table, patient]).to_csv(tmp_path / "twice.csv", index=False)
    result = runner.invoke(app, ["normative", "survival", "--scores", str(tmp_path / "twice.csv"),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "several rows" in result.output
    assert patient["subject_id"].iloc[0] in result.output and not (tmp_path / "out").exists()


def test_survival_ignores_a_control_scanned_twice_but_refuses_a_patient_twice_in_the_manifest(
        scored, tiny_patient_cohort, tmp_path):
    """Controls are not analysed, so a repeated control (travelling subjects, extra sessions) in the scores
    and the manifest is no error; a repeated patient in the manifest still is."""
    manifest, _, _ = tiny_patient_cohort
    table = pd.read_csv(scored / "scores" / "scores.csv", dtype={"subject_id": str})
    rows = pd.read_csv(manifest, dtype={"subject_id": str})
    control = table.index[table["group"].eq("control")][0]
    pd.concat([table, table.loc[[control]]]).to_csv(tmp_path / "scores.csv", index=False)
    control_id = table["subject_id"][control]
    pd.concat([rows, rows[rows["subject_id"].eq(control_id)]]).to_csv(tmp_path / "manifest.csv", index=False)
    args = ["normative", "survival", "--scores", str(tmp_path / "scores.csv"), "--manifest"]
    result = runner.invoke(app, [*args, str(tmp_path / "manifest.csv"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    analysed = json.loads((tmp_path / "out" / "results.json").read_text())["result"]["n"]
    assert analysed == int(table["group"].eq("patient").sum())

    patient_id = table["subject_id"][table.index[table["group"].eq("patient")][0]]
    pd.concat([rows, rows[rows["subject_id"].eq(patient_id)]]).to_csv(tmp_path / "twice.csv", index=False)
    result = runner.invoke(app, [*args, str(tmp_path / "twice.csv"), "--out", str(tmp_path / "out2")])
    assert result.exit_code == 2 and "several rows" in result.output and patient_id in result.output
    assert control_id not in result.output and not (tmp_path / "out2").exists()


def test_survival_takes_the_group_from_the_manifest_when_both_files_have_one(scored, tiny_patient_cohort, tmp_path):
    """Columns in both files come from the manifest: patients recoded there (ALS → patient) are analysed."""
    manifest, _, _ = tiny_patient_cohort
    table = pd.read_csv(scored / "scores" / "scores.csv", dtype={"subject_id": str})
    patients = int(table["group"].eq("patient").sum())
    table.assign(group=table["group"].replace("patient", "ALS")).to_csv(tmp_path / "scores.csv", index=False)
    result = runner.invoke(app, ["normative", "survival", "--scores", str(tmp_path / "scores.csv"),
                                 "--manifest", str(manifest), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "results.json").read_text())["result"]["n"] == patients


def test_survival_keeps_subject_ids_as_written(scored, tmp_path):
    """Ids are text: read as numbers, "007" and "7" would become one subject scored twice."""
    table = pd.read_csv(scored / "scores" / "scores.csv", dtype={"subject_id": str})
    table["subject_id"] = [f"{i + 100}" for i in range(len(table))]
    patients = table.index[table["group"].eq("patient")]
    table.loc[patients[0], "subject_id"], table.loc[patients[1], "subject_id"] = "007", "7"
    table.to_csv(tmp_path / "scores.csv", index=False)
    table[["subject_id", "time", "event", "group"]].to_csv(tmp_path / "manifest.csv", index=False)
    result = runner.invoke(app, ["normative", "survival", "--scores", str(tmp_path / "scores.csv"),
                                 "--manifest", str(tmp_path / "manifest.csv"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    analysed = json.loads((tmp_path / "out" / "results.json").read_text())["result"]["n"]
    assert analysed == int(table["group"].eq("patient").sum())


def test_score_runs_on_the_device_asked_for(scored, tiny_patient_cohort, tmp_path):
    manifest, _, _ = tiny_patient_cohort
    args = ["normative", "score", "--model", str(scored / "model"), "--manifest", str(manifest)]
    result = runner.invoke(app, [*args, "--device", "cuda:7", "--out", str(tmp_path / "gpu")])
    import torch

    if not torch.cuda.is_available():
        assert result.exit_code == 2 and "CUDA is not available" in result.output
        assert not (tmp_path / "gpu").exists()
    result = runner.invoke(app, [*args, "--device", "auto", "--out", str(tmp_path / "auto")])
    assert result.exit_code == 0, result.output
    auto = pd.read_csv(tmp_path / "auto" / "scores.csv")
    cpu = pd.read_csv(scored / "scores" / "scores.csv")
    if not torch.cuda.is_available():  # auto is the cpu here: the same scores as the default
        assert np.allclose(auto["similarity"], cpu["similarity"], atol=1e-6)
