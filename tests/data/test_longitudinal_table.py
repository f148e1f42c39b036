import numpy as np
import pandas as pd
import pytest

from neurodiff.data.longitudinal_table import longitudinal_arrays, read_table


def table():
    return pd.DataFrame({
        "subject_id": ["a", "a", "b", "c", "c"],
        "visit": [1, 2, 1, 1, 2],
        "age": [60.0, 62.0, 70.0, 55.0, 58.0],
        "stroke": [0, 0, 1, 0, 0],
        "hippocampus": [4000.0, 3950.0, 3500.0, np.nan, 4100.0],
        "ventricles": [20000.0, 21000.0, 30000.0, 18000.0, 18500.0],
        "site_name": ["x", "x", "y", "x", "x"],
    })


def test_arrays_align_visits_by_subject():
    data = longitudinal_arrays(table(), labels=["age", "stroke"])
    assert data.feature_columns == ["hippocampus", "ventricles"]  # numeric, not id/label
    assert list(data.subject_ids) == ["a", "b", "c"] and list(data.paired) == [True, False, True]
    np.testing.assert_array_equal(data.x2[0], [3950.0, 21000.0])
    assert np.isnan(data.x2[1]).all() and np.isnan(data.x1[2, 0])
    np.testing.assert_array_equal(data.y[:, 0], [60.0, 70.0, 55.0])  # labels from visit 1


@pytest.mark.parametrize(
    "change,kwargs,message",
    [
        (None, {"labels": ["agee"]}, "label column 'agee' is not in the table; did you mean 'age'"),
        (None, {"labels": ["age"], "features": ["site_name"]}, "feature column 'site_name' is not numeric"),
        (lambda t: t.assign(stroke=["n", "n", "y", "n", "n"]), {"labels": ["stroke"]}, "label column 'stroke' is not numeric"),
        (lambda t: t.assign(visit=[1, 1, 1, 1, 2]), {"labels": ["age"]}, "subject 'a' has two first visits"),
        (lambda t: t[t.subject_id != "b"].assign(visit=[1, 2, 2, 2]), {"labels": ["age"]}, "two follow-up"),
        (lambda t: t.assign(subject_id=["a", "a", "b", "c", "d"]), {"labels": ["age"]}, "subject 'd' has a follow-up but no first visit"),
        (lambda t: t.assign(hippocampus=np.nan), {"labels": ["age"]}, "feature column 'hippocampus' has no values"),
        (lambda t: t.assign(age=[np.nan, 1, 2, 3, 4]), {"labels": ["age"]}, "subject 'a' has no value for label 'age'"),
    ],
)
def test_bad_tables_name_the_problem(change, kwargs, message):
    frame = table() if change is None else change(table())
    with pytest.raises(ValueError, match=message):
        longitudinal_arrays(frame, **kwargs)


def test_read_table_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neurodiff synth longitudinal"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(ValueError, match=".csv or .parquet"):
        read_table(tmp_path / "t.xlsx")
    table().to_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.parquet"), table())
