import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from neurodiff.cli import app

sys.path.insert(0, str(Path(__file__).parent / "methods"))
from test_secondgram import cohort  # noqa: E402

runner = CliRunner()


def test_fit_then_predict_writes_a_flagged_completed_table(tmp_path):
    table = tmp_path / "table.csv"
    cohort(n=120, paired=60).to_csv(table, index=False)
    model = tmp_path / "model"
    result = runner.invoke(app, ["impute", "fit", "--data", str(table), "--labels", "age,disease", "--out", str(model),
                                 "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert "best validation per-feature Pearson" in result.output and (model / "config.json").exists()
    out = tmp_path / "completed.parquet"
    result = runner.invoke(app, ["impute", "predict", "--model", str(model), "--data", str(table), "--out", str(out)])
    assert result.exit_code == 0, result.output
    completed = pd.read_parquet(out)
    assert len(completed) == 180 + 60 and completed["generated"].sum() == 60
    assert set(completed.loc[completed.generated, "subject_id"]) == {f"s{i}" for i in range(60, 120)}
    # the input is never overwritten
    result = runner.invoke(app, ["impute", "predict", "--model", str(model), "--data", str(table), "--out", str(table)])
    assert result.exit_code == 2 and "is the input table" in result.output
    # a table without a feature the model was fitted on: the error names the file and the column
    other = tmp_path / "without_f3.csv"
    cohort(n=120, paired=60).drop(columns=["f3"]).to_csv(other, index=False)
    result = runner.invoke(app, ["impute", "predict", "--model", str(model), "--data", str(other), "--out",
                                 str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and f"{other}: feature column 'f3'" in result.output
    assert not (tmp_path / "x.csv").exists()


def test_bad_input_exits_2_and_writes_nothing(tmp_path):
    table = tmp_path / "table.csv"
    cohort(n=40, paired=20).drop(columns=["disease"]).to_csv(table, index=False)
    out = tmp_path / "model"
    result = runner.invoke(app, ["impute", "fit", "--data", str(table), "--labels", "age,disease", "--out", str(out)])
    assert result.exit_code == 2 and "label column 'disease' is not in the table" in result.output
    assert not out.exists()
    result = runner.invoke(app, ["impute", "fit", "--data", str(tmp_path / "nope.csv"), "--labels", "age", "--out", str(out)])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["impute", "predict", "--model", str(tmp_path / "nomodel"), "--data", str(table),
                                 "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "does not exist" in result.output and not (tmp_path / "x.csv").exists()


def _own_table(n=60, paired=30):
    """The cohort with a user's column names, zero-padded ids, integer columns and a visit 3 row."""
    frame = cohort(n=n, paired=paired).rename(columns={"subject_id": "pid", "visit": "session"})
    frame["pid"] = [f"{int(s[1:]):03d}" for s in frame["pid"]]
    frame["disease"] = frame["disease"].astype(int)
    frame["scanner"] = frame.index % 3  # an integer column that is neither label nor feature
    frame["f0"] = np.round(frame["f0"] * 100).astype(int)  # an integer feature
    third = frame[frame.session == 2].head(2).assign(session=3)
    return pd.concat([frame, third], ignore_index=True)


def test_own_column_names_ids_and_integer_columns_round_trip(tmp_path):
    table = tmp_path / "table.csv"
    _own_table().to_csv(table, index=False)
    model, out = tmp_path / "model", tmp_path / "completed.csv"
    result = runner.invoke(app, ["impute", "fit", "--data", str(table), "--labels", "age,disease", "--exclude", "scanner",
                                 "--subject", "pid", "--visit", "session", "--out", str(model), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "ignoring 2 row(s) whose visit ('session') is neither 1 nor 2 (visit 3)" \
        in result.output
    assert "neurodiff impute: warning: early stopping validates on 3 paired subjects" in result.output  # 30 paired
    result = runner.invoke(app, ["impute", "predict", "--model", str(model), "--data", str(table), "--out", str(out),
                                 "--device", "cpu", "--samples", "2"])
    assert result.exit_code == 0, result.output
    assert "ignoring 2 row(s)" in result.output
    text = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert text["pid"].iloc[0] == "000" and set(text.loc[text.generated == "True", "pid"]) == {f"{i:03d}" for i in
                                                                                                 range(30, 60)}
    generated = text[text.generated == "True"]
    assert set(generated["session"]) == {"2"} and set(text["disease"]) == {"0", "1"}  # not 0.0 / 1.0
    assert set(generated["scanner"]) == {""} and set(text.loc[text.generated == "False", "scanner"]) == {"0", "1", "2"}
    assert set(generated["sample"]) == {"0", "1"} and set(text.loc[text.generated == "False", "sample"]) == {""}
    # an integer feature gets generated, fractional values: that column may become float, its real values unchanged
    assert any(float(v) != round(float(v)) for v in generated["f0"])
    real = text.loc[text.generated == "False", "f0"].astype(float).to_numpy()
    np.testing.assert_array_equal(real, _own_table()["f0"].to_numpy())


def test_predict_device_is_checked_before_anything_is_written(tmp_path):
    table = tmp_path / "table.csv"
    cohort(n=40, paired=20).to_csv(table, index=False)
    model = tmp_path / "model"
    result = runner.invoke(app, ["impute", "fit", "--data", str(table), "--labels", "age,disease", "--out", str(model),
                                 "--epochs", "1"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "completed.csv"
    result = runner.invoke(app, ["impute", "predict", "--model", str(model), "--data", str(table), "--out", str(out),
                                 "--device", "gpu"])
    assert result.exit_code == 2 and "device 'gpu' is not a device" in result.output and not out.exists()
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["impute", "predict", "--model", str(model), "--data", str(table), "--out", str(out),
                                     "--device", "cuda"])
        assert result.exit_code == 2 and "CUDA is not available" in result.output and not out.exists()
    result = runner.invoke(app, ["impute", "predict", "--model", str(model), "--data", str(table), "--out", str(out),
                                 "--device", "auto"])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def auto_model(tmp_path_factory):
    """A model whose features were detected at fit (f0 … f7), one epoch."""
    folder = tmp_path_factory.mktemp("auto")
    table = folder / "table.csv"
    cohort(n=40, paired=20).to_csv(table, index=False)
    result = runner.invoke(app, ["impute", "fit", "--data", str(table), "--labels", "age,disease", "--out",
                                 str(folder / "model"), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    return folder / "model"


@pytest.mark.parametrize("column,message", [
    ("f2", "feature column 'f2' has an infinite value (inf or -inf) at visit 1 for subject 's30' (1 in all)"),
    ("age", "label column 'age' has an infinite value (inf or -inf) at visit 1 for subject 's30' (1 in all)"),
])
def test_infinite_values_are_refused_by_fit_and_predict(tmp_path, auto_model, column, message):
    """predict used to write an all-NaN "generated" row for such a subject and exit 0; fit failed with
    sklearn's or the gradient calibration's message, which named neither column nor subject."""
    frame = cohort(n=40, paired=20)
    frame.loc[(frame.subject_id == "s30") & (frame.visit == 1), column] = np.inf
    table = tmp_path / "inf.csv"
    frame.to_csv(table, index=False)
    out = tmp_path / "completed.csv"
    result = runner.invoke(app, ["impute", "predict", "--model", str(auto_model), "--data", str(table), "--out", str(out)])
    assert result.exit_code == 2 and f"{table}: {message}" in result.output, result.output
    assert not out.exists()
    model = tmp_path / "model"
    result = runner.invoke(app, ["impute", "fit", "--data", str(table), "--labels", "age,disease", "--out", str(model),
                                 "--epochs", "1"])
    assert result.exit_code == 2 and f"{table}: {message}" in result.output, result.output
    assert not model.exists()


def test_a_stray_text_value_in_a_feature_column_is_an_error_not_a_dropped_feature(tmp_path):
    frame = cohort(n=40, paired=20)
    frame["f3"] = frame["f3"].astype(object)
    frame.loc[5, "f3"] = "4012,5"  # subject s5, visit 1: line 7 of the CSV
    table = tmp_path / "table.csv"
    frame.to_csv(table, index=False)
    model = tmp_path / "model"
    result = runner.invoke(app, ["impute", "fit", "--data", str(table), "--labels", "age,disease", "--out", str(model),
                                 "--epochs", "1"])
    assert result.exit_code == 2 and f"{table}: column 'f3' holds numbers (59 of 60 non-blank values)" in result.output
    assert "'4012,5' (subject 's5', row 7)" in result.output and "--exclude the column" in result.output
    assert not model.exists()
    # named, the example is that value, not the column's first (valid) cell
    result = runner.invoke(app, ["impute", "fit", "--data", str(table), "--labels", "age,disease", "--features",
                                 "f2,f3", "--out", str(model), "--epochs", "1"])
    assert result.exit_code == 2 and "feature column 'f3' is not numeric: e.g. '4012,5' (subject 's5', row 7)" \
        in result.output, result.output
    assert not model.exists()


def test_predict_warns_about_empty_first_visits_and_columns_the_model_does_not_know(tmp_path, auto_model):
    frame = cohort(n=40, paired=20).assign(new_volume=1.0)
    frame.loc[(frame.subject_id == "s30") & (frame.visit == 1), [f"f{j}" for j in range(8)]] = np.nan
    table, out = tmp_path / "table.csv", tmp_path / "completed.csv"
    frame.to_csv(table, index=False)
    result = runner.invoke(app, ["impute", "predict", "--model", str(auto_model), "--data", str(table), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (f"neurodiff impute: warning: {table}: 1 subject(s) have no feature values at visit 1 (subject 's30')"
            in result.output)
    assert (f"neurodiff impute: warning: {table}: numeric column(s) 'new_volume' are not features of the model (it "
            "took its features from the numeric columns of the fit table, and these were not among them): they are "
            "not generated and stay empty in generated rows" in result.output), result.output
    completed = pd.read_csv(out)
    generated = completed[completed.generated]
    assert len(generated) == 20 and generated["new_volume"].isna().all() and generated["f0"].notna().all()
    # the fit table itself draws neither warning
    cohort(n=40, paired=20).to_csv(table, index=False)
    result = runner.invoke(app, ["impute", "predict", "--model", str(auto_model), "--data", str(table), "--out",
                                 str(tmp_path / "again.csv")])
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    # features named at fit: other columns are expected, no warning
    named = tmp_path / "named"
    result = runner.invoke(app, ["impute", "fit", "--data", str(table), "--labels", "age,disease", "--features",
                                 ",".join(f"f{j}" for j in range(8)), "--out", str(named), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    cohort(n=40, paired=20).assign(new_volume=1.0).to_csv(table, index=False)
    result = runner.invoke(app, ["impute", "predict", "--model", str(named), "--data", str(table), "--out",
                                 str(tmp_path / "named.csv")])
    assert result.exit_code == 0 and "warning" not in result.output, result.output


def test_fixed_thresholds_from_the_command_line(tmp_path):
    """The public code's fixed thresholds were reachable from Python only."""
    import json

    table = tmp_path / "table.csv"
    cohort(n=60, paired=30).to_csv(table, index=False)
    model = tmp_path / "model"
    result = runner.invoke(app, ["impute", "fit", "--data", str(table), "--labels", "age,disease", "--out", str(model),
                                 "--epochs", "1", "--thresholds", "0.45,2.1"])
    assert result.exit_code == 0, result.output
    params = json.loads((model / "config.json").read_text())["hyperparameters"]
    assert (params["gradient_manipulation"], params["clip"], params["skip"]) == ("fixed", 0.45, 2.1)
    for value, variant, message in (("2.1,0.45", "secondgram", "0 < CLIP < SKIP"), ("0.3", "secondgram", "CLIP,SKIP"),
                                    ("0.3,1.8", "no_grad", "variant 'no_grad' turns off")):
        result = runner.invoke(app, ["impute", "fit", "--data", str(table), "--labels", "age,disease", "--out",
                                     str(tmp_path / "bad"), "--epochs", "1", "--thresholds", value, "--variant", variant])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "bad").exists()


def test_fit_says_when_most_updates_were_skipped(tmp_path):
    """A fit that barely trained (every update skipped) still saves its model but says so, naming the
    variants that train."""
    table = tmp_path / "table.csv"
    cohort(n=60, paired=30).to_csv(table, index=False)
    result = runner.invoke(app, ["impute", "fit", "--data", str(table), "--labels", "age,disease", "--out",
                                 str(tmp_path / "model"), "--epochs", "2", "--thresholds", "0.000001,0.000002"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "(100%) were skipped" in result.output
    assert "secondgram_warmup_calibration" in result.output and (tmp_path / "model" / "config.json").is_file()
