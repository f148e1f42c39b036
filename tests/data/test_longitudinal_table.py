import warnings

import numpy as np
import pandas as pd
import pytest

from neurodiff.data.longitudinal_table import (
    EmptyFirstVisitWarning,
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


@pytest.mark.parametrize(
    "row,column,message",
    [
        (0, "hippocampus", r"feature column 'hippocampus' has an infinite value \(inf or -inf\) at visit 1 for "
                           r"subject 'a' \(1 in all\); replace it with a number, or leave the cell empty"),
        (4, "ventricles", r"feature column 'ventricles' has an infinite value \(inf or -inf\) at visit 2 for subject 'c'"),
        (2, "age", r"label column 'age' has an infinite value \(inf or -inf\) at visit 1 for subject 'b'"),
    ],
)
def test_infinite_values_are_errors_naming_column_visit_and_subject(row, column, message):
    """±inf went through the imputer as NaN rows: predict wrote all-NaN "generated" follow-ups."""
    frame = table()
    frame.loc[row, column] = -np.inf if column == "ventricles" else np.inf
    with pytest.raises(ValueError, match=r"t\.csv: " + message):
        longitudinal_arrays(frame, labels=["age", "stroke"], source="t.csv")


def test_infinite_values_name_at_most_five_subjects():
    frame = pd.DataFrame({"subject_id": [f"s{i}" for i in range(8)], "visit": 1, "age": 60.0,
                          "f0": np.inf, "f1": 1.0})
    with pytest.raises(ValueError, match=r"subjects 's0', 's1', 's2', 's3', 's4' and 3 more \(8 in all\)"):
        longitudinal_arrays(frame, labels=["age"])


def test_inf_read_from_a_csv_is_refused(tmp_path):
    frame = table()
    frame["hippocampus"] = frame["hippocampus"].astype(object)
    frame.loc[3, "hippocampus"] = "-inf"
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match="feature column 'hippocampus' has an infinite value .* subject 'c'"):
        longitudinal_arrays(read_table(tmp_path / "t.csv"), labels=["age"])


def test_automatic_detection_refuses_a_numeric_column_with_stray_text():
    """A '4012,5' among volumes made pandas read the column as text, which then silently was no feature."""
    frame = table()
    frame["hippocampus"] = frame["hippocampus"].astype(object)
    frame.loc[2, "hippocampus"] = "3500,5"
    with pytest.raises(ValueError, match=r"t\.csv: column 'hippocampus' holds numbers \(3 of 4 non-blank values\) "
                                         r"but also text that is not a number: '3500,5' \(subject 'b', row 4\).*"
                                         r"fix those cells \(or leave them empty\), or --exclude the column"):
        longitudinal_arrays(frame, labels=["age"], source="t.csv")
    # excluded, it is no feature and no error; a text column (site_name) is never one
    data = longitudinal_arrays(frame, labels=["age"], exclude=["hippocampus"])
    assert data.feature_columns == ["stroke", "ventricles"]
    assert longitudinal_arrays(table(), labels=["age"]).feature_columns == ["stroke", "hippocampus", "ventricles"]


def test_stray_text_lists_the_first_three_bad_cells():
    frame = pd.DataFrame({"subject_id": [f"s{i}" for i in range(10)], "visit": 1, "age": 60.0,
                          "f0": ["1", "x", "2", "y", "3", "z", "4", "w", "5", "6"], "f1": 1.0})
    with pytest.raises(ValueError, match=r"holds numbers \(6 of 10.*: 'x' \(subject 's1', row 3\), 'y' \(subject "
                                         r"'s3', row 5\), 'z' \(subject 's5', row 7\) and 1 more\."):
        longitudinal_arrays(frame, labels=["age"])
    frame["f0"] = ["1", "x", "y", "z", "w", "v", "2", None, None, None]  # mostly text: a text column, left out
    assert longitudinal_arrays(frame, labels=["age"]).feature_columns == ["f1"]


def test_a_named_non_numeric_feature_shows_its_first_value_that_is_not_a_number():
    """The example used to be the first cell, which may be a valid number ('4000.0')."""
    frame = table()
    frame["hippocampus"] = ["4000.0", "3950.0", "3500,5", None, "4100.0"]
    with pytest.raises(ValueError, match=r"feature column 'hippocampus' is not numeric: e\.g\. '3500,5' "
                                         r"\(subject 'b', row 4\)$"):
        longitudinal_arrays(frame, labels=["age"], features=["hippocampus", "ventricles"])


def test_a_subject_without_any_visit_1_feature_value_draws_a_warning():
    rows = table()
    rows.loc[2, ["hippocampus", "ventricles"]] = np.nan  # subject b, visit 1
    with pytest.warns(EmptyFirstVisitWarning, match=r"t\.csv: 1 subject\(s\) have no feature values at visit 1 "
                      r"\(subject 'b'\); their first visit is entirely imputed"):
        data = longitudinal_arrays(rows, labels=["age", "stroke"], source="t.csv")
    assert np.isnan(data.x1[1]).all()
    many = pd.DataFrame({"subject_id": [f"s{i}" for i in range(9)], "visit": 1, "age": 60.0,
                         "f0": [1.0, 2.0] + [np.nan] * 7, "f1": [1.0, 2.0] + [np.nan] * 7})
    with pytest.warns(EmptyFirstVisitWarning, match=r"7 subject\(s\) .* \(subjects 's2', 's3', 's4', 's5', 's6' "
                                                    r"and 2 more\)"):
        longitudinal_arrays(many, labels=["age"])
    with warnings.catch_warnings():  # every subject has a visit-1 value: no warning
        warnings.simplefilter("error", EmptyFirstVisitWarning)
        longitudinal_arrays(table(), labels=["age"])


def test_blank_follow_up_warning_names_up_to_five_subjects_and_a_count():
    many = pd.DataFrame({"subject_id": [f"s{i}" for i in range(8)] * 2, "visit": [1] * 8 + [2] * 8, "age": 60.0,
                         "f0": [1.0] * 8 + [np.nan] * 7 + [2.0]})
    with pytest.warns(IgnoredVisitsWarning, match=r"ignoring 7 follow-up row\(s\) .* \(subjects 's0', 's1', 's2', "
                                                  r"'s3', 's4' and 2 more\)"):
        longitudinal_arrays(many, labels=["age"])

