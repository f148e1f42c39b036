import warnings

import numpy as np
import pandas as pd
import pytest

from neurodiff.data.longitudinal_table import (
    IgnoredVisitsWarning,
    keep_integer_columns,
    longitudinal_arrays,
    read_table,
)


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
        (lambda t: t.assign(subject_id=["a", "a", None, "c", "c"]), {"labels": ["age"]},
         "subject column 'subject_id' has an empty value in row 4"),
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


def test_other_visits_are_ignored_with_a_warning_that_says_which():
    third = pd.DataFrame({"subject_id": ["a", "c", "c"], "visit": [3, 3, 4], "age": [64.0, 60.0, 61.0],
                          "stroke": [0, 0, 0], "hippocampus": [3900.0, 4000.0, 3990.0],
                          "ventricles": [22000.0, 19000.0, 19100.0], "site_name": ["x", "x", "x"]})
    with pytest.warns(IgnoredVisitsWarning, match=r"t\.csv: ignoring 3 row\(s\) whose visit \('visit'\) is neither "
                      r"1 nor 2 \(visit 3, 4\)"):
        data = longitudinal_arrays(pd.concat([table(), third], ignore_index=True), labels=["age"], source="t.csv")
    expected = longitudinal_arrays(table(), labels=["age"])
    np.testing.assert_array_equal(data.x2, expected.x2)
    assert list(data.paired) == list(expected.paired)
    with warnings.catch_warnings():  # only visits 1 and 2: no warning
        warnings.simplefilter("error", IgnoredVisitsWarning)
        longitudinal_arrays(table(), labels=["age"])


def test_subject_ids_are_read_as_text_and_keep_leading_zeros(tmp_path):
    frame = table().rename(columns={"subject_id": "pid"}).assign(pid=["007", "007", "010", "0012", "0012"])
    frame.to_csv(tmp_path / "t.csv", index=False)
    back = read_table(tmp_path / "t.csv", subject="pid")
    assert list(back["pid"]) == ["007", "007", "010", "0012", "0012"]
    data = longitudinal_arrays(back, labels=["age"], subject="pid")
    assert list(data.subject_ids) == ["007", "010", "0012"]
    # Parquet keeps its types; numeric ids become the same text as a CSV's
    table().assign(subject_id=[7, 7, 10, 12, 12]).to_parquet(tmp_path / "t.parquet")
    assert list(read_table(tmp_path / "t.parquet")["subject_id"]) == ["7", "7", "10", "12", "12"]


def test_keep_integer_columns_only_where_nothing_is_lost():
    like = pd.DataFrame({"visit": [1, 2], "sex": [0, 1], "count": [3, 4], "score": [1.5, 2.0], "feature": [10, 11]})
    appended = pd.concat([like, pd.DataFrame({"visit": [2], "sex": [1.0], "feature": [10.25]})], ignore_index=True)
    assert appended["sex"].dtype == np.float64  # what appending did
    kept = keep_integer_columns(appended, like)
    assert kept["visit"].dtype == np.int64 and kept["sex"].dtype == np.int64 and list(kept["sex"]) == [0, 1, 1]
    assert str(kept["count"].dtype) == "Int64" and kept["count"].isna().tolist() == [False, False, True]
    assert kept["feature"].dtype == np.float64 and kept["score"].dtype == np.float64  # fractional, or not integer


def test_a_follow_up_row_without_any_feature_value_is_no_follow_up():
    """A visit-2 row with every feature empty (a wide export with a row for everyone) would otherwise make
    its subject "paired" on values the imputer invents."""
    rows = table()
    rows.loc[(rows["subject_id"] == "c") & (rows["visit"] == 2), ["hippocampus", "ventricles"]] = np.nan
    with pytest.warns(IgnoredVisitsWarning, match=r"t\.csv: ignoring 1 follow-up row\(s\) \(visit 2\) with no "
                      r"feature values \(subject 'c'\)"):
        data = longitudinal_arrays(rows, labels=["age", "stroke"], source="t.csv")
    assert list(data.paired) == [True, False, False]
    rows.loc[(rows["subject_id"] == "c") & (rows["visit"] == 2), "ventricles"] = 18500.0  # one value: a follow-up
    assert list(longitudinal_arrays(rows, labels=["age", "stroke"]).paired) == [True, False, True]
