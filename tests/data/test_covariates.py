"""Encoding covariates for networks: fitted on training rows, strict on new values, saveable as JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from neurodiff.data.covariates import CovariateEncoding, CovariateError


@pytest.fixture
def train() -> pd.DataFrame:
    return pd.DataFrame({
        "subject_id": ["s1", "s2", "s3", "s4"],
        "age": [20.0, 40.0, 60.0, 80.0],
        "sex": ["F", "male", "Female", "m"],
        "site": ["site1", "site0", "site1", "site2"],
        "group": ["control"] * 4,
    })


def test_fit_and_transform(train):
    before = train.copy()
    encoding = CovariateEncoding.fit(train)
    x = encoding.transform(train)
    assert x.dtype == np.float32 and x.shape == (4, encoding.width) == (4, 5)
    assert encoding.columns == ["age", "sex", "site=site0", "site=site1", "site=site2"]
    np.testing.assert_allclose(x[:, 0], (train["age"] - 50) / np.std(train["age"]), rtol=1e-6)
    np.testing.assert_array_equal(x[:, 1], [0, 1, 0, 1])
    np.testing.assert_array_equal(x[:, 2:], [[0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert encoding.categories("site") == ["site0", "site1", "site2"]
    assert encoding.categories("sex") == ["female", "male"]
    pd.testing.assert_frame_equal(train, before)


def test_roles_may_be_empty(train):
    encoding = CovariateEncoding.fit(train, continuous=(), binary=(), categorical=("site",))
    assert encoding.columns == ["site=site0", "site=site1", "site=site2"]
    empty = CovariateEncoding.fit(train, continuous=(), binary=(), categorical=())
    assert empty.width == 0 and empty.transform(train).shape == (4, 0)


def test_binary_codes():
    frame = pd.DataFrame({
        "numeric": [0, 1, 1, 0], "yesno": ["yes", "no", "no", "yes"], "codes": [2, 1, 1, 2], "women": ["F"] * 4,
    })
    binary = ("numeric", "yesno", "codes", "women")
    encoding = CovariateEncoding.fit(frame, continuous=(), binary=binary, categorical=())
    np.testing.assert_array_equal(encoding.transform(frame), [[0, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0]])
    assert encoding.categories("yesno") == ["no", "yes"] and encoding.categories("codes") == [1, 2]
    males = encoding.transform(encoding.with_values(frame, women="M"))  # fixed sex codes: M works though unseen
    np.testing.assert_array_equal(males[:, 3], 1)


def test_binary_with_more_than_two_values(train):
    frame = train.assign(sex=["F", "M", "X", "unknown"])
    expected = r"binary covariate 'sex' has 4 distinct values \('F', 'M', 'X', 'unknown'\)"
    with pytest.raises(CovariateError, match=expected):
        CovariateEncoding.fit(frame)


def test_binary_with_one_unknown_value(train):
    with pytest.raises(CovariateError, match=r"binary covariate 'group' has only the value 'control'"):
        CovariateEncoding.fit(train, binary=("group",))


def test_unknown_binary_value_at_transform(train):
    encoding = CovariateEncoding.fit(train)
    expected = r"'sex' has the unknown value 'X' for subject 's2' \(row 1\); expected F/female"
    with pytest.raises(CovariateError, match=expected):
        encoding.transform(train.assign(sex=["F", "X", "M", "M"]))


def test_constant_continuous_column(train):
    expected = r"continuous covariate 'age' has the same value \(50\) in every training row"
    with pytest.raises(CovariateError, match=expected):
        CovariateEncoding.fit(train.assign(age=50.0))


def test_non_numeric_continuous_column(train):
    frame = train.assign(age=["20", "forty", "60", "80"])
    with pytest.raises(CovariateError, match=r"'age' has the non-numeric value 'forty' for subject 's2'"):
        CovariateEncoding.fit(frame)


def test_unseen_category_names_column_value_and_known_ones(train):
    encoding = CovariateEncoding.fit(train)
    new = train.assign(site=["site0", "site0", "site9", "site1"])
    with pytest.raises(CovariateError, match=r"'site' has the value 'site9' for subject 's3' \(row 2\), not seen in "
                                             r"training; known: 'site0', 'site1', 'site2'"):
        encoding.transform(new)
    with pytest.raises(CovariateError, match=r"'site' has the value 'site9', not seen in training; known: 'site0'"):
        encoding.with_values(train, site="site9")


@pytest.mark.parametrize("column", ["age", "sex", "site"])
def test_missing_values_name_column_and_subject(train, column):
    frame = train.copy()
    frame.loc[2, column] = None
    with pytest.raises(CovariateError, match=rf"covariate '{column}' has no value for subject 's3' \(row 2\)"):
        CovariateEncoding.fit(frame)
    encoding = CovariateEncoding.fit(train)
    with pytest.raises(CovariateError, match=rf"'{column}' has no value for subject 's3'"):
        encoding.transform(frame)
    with pytest.raises(CovariateError, match=rf"'{column}' has no value for row 2 "):
        encoding.transform(frame.drop(columns="subject_id"))


def test_missing_column_suggests_a_close_name(train):
    with pytest.raises(CovariateError, match=r"covariate column 'age' is not in the frame; did you mean 'Age'"):
        CovariateEncoding.fit(train.rename(columns={"age": "Age"}))
    with pytest.raises(CovariateError, match="named twice"):
        CovariateEncoding.fit(train, continuous=("age",), binary=("age",))
    with pytest.raises(CovariateError, match="empty frame"):
        CovariateEncoding.fit(train.iloc[:0])


def test_with_values_sets_a_target_site_and_keeps_the_rest(train):
    encoding = CovariateEncoding.fit(train)
    before = train.copy()
    target = encoding.with_values(train, site="site0")
    pd.testing.assert_frame_equal(train, before)
    assert target["site"].tolist() == ["site0"] * 4
    x, y = encoding.transform(train), encoding.transform(target)
    np.testing.assert_array_equal(x[:, :2], y[:, :2])  # same age, same sex
    np.testing.assert_array_equal(y[:, 2:], [[1, 0, 0]] * 4)
    with pytest.raises(CovariateError, match=r"cannot set column 'stie'.*did you mean 'site'"):
        encoding.with_values(train, stie="site0")
    with pytest.raises(CovariateError, match="must be set to a number"):
        encoding.with_values(train, age="old")


def test_numeric_categories_match_text(train):
    encoding = CovariateEncoding.fit(train.assign(site=[1, 2, 1, 3]), binary=())
    assert encoding.categories("site") == ["1", "2", "3"]
    x = encoding.transform(train.assign(site=["2", 2.0, 3, "1"]))
    np.testing.assert_array_equal(x[:, 1:], [[0, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]])


def test_json_round_trip(train):
    frame = train.assign(smoker=np.array([True, False, True, True]), site=train["site"].astype("category"))
    encoding = CovariateEncoding.fit(frame, binary=("sex", "smoker"))
    data = json.loads(json.dumps(encoding.to_dict()))
    assert data == encoding.to_dict()
    again = CovariateEncoding.from_dict(data)
    assert again == encoding
    np.testing.assert_array_equal(again.transform(frame), encoding.transform(frame))
    assert again.columns == encoding.columns


def test_from_dict_rejects_malformed_input(train):
    data = CovariateEncoding.fit(train).to_dict()
    with pytest.raises(CovariateError, match="format"):
        CovariateEncoding.from_dict({**data, "format": 99})
    with pytest.raises(CovariateError, match="malformed"):
        CovariateEncoding.from_dict({**data, "continuous": [{"name": "age"}]})
    with pytest.raises(CovariateError, match="unknown kind"):
        CovariateEncoding.from_dict({**data, "binary": [{"name": "sex", "kind": "other", "levels": []}]})


def test_categories_of_unknown_or_continuous_covariates(train):
    encoding = CovariateEncoding.fit(train)
    with pytest.raises(CovariateError, match="'age' is continuous"):
        encoding.categories("age")
    with pytest.raises(CovariateError, match=r"'sites' is not an encoded covariate.*did you mean 'site'"):
        encoding.categories("sites")


def test_ages_far_outside_the_training_range_warn_and_a_negative_age_is_an_error(train):
    """The audit's `harmonize apply` with ages 150 and 5 (trained on 21–79) wrote images without a word."""
    import warnings

    from neurodiff.data.covariates import CovariateWarning

    encoding = CovariateEncoding.fit(train)  # ages 20–80: up to 6 years beyond either end pass quietly
    with warnings.catch_warnings():
        warnings.simplefilter("error", CovariateWarning)
        encoding.transform(train.assign(age=[14.5, 85.5, 50.0, 50.0]))
    with pytest.warns(CovariateWarning, match=r"'age' has 2 value\(s\) far outside its training range 20–80, "
                                              r"e.g. 150 for subject 's1'"):
        encoding.transform(train.assign(age=[150.0, 5.0, 50.0, 50.0]))
    with pytest.raises(CovariateError, match=r"'age' has the negative value -20 for subject 's3'"):
        encoding.transform(train.assign(age=[50.0, 50.0, -20.0, 50.0]))
    # the range is saved; an encoding saved before it was kept loads and checks nothing
    data = encoding.to_dict()
    assert data["continuous"][0]["low"] == 20.0 and data["continuous"][0]["high"] == 80.0
    old = {**data, "continuous": [{"name": "age", "mean": 50.0, "sd": 22.36}]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", CovariateWarning)
        CovariateEncoding.from_dict(old).transform(train.assign(age=150.0))
