import sys
from pathlib import Path

import pandas as pd
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
