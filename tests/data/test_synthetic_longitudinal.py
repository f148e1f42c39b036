"""The embedded longitudinal feature table: sizes, planted effects, realism, determinism, I/O, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from neurodiff.cli import app
from neurodiff.data.synthetic_longitudinal import (
    DEFAULT_PREVALENCE,
    LABEL_COLUMNS,
    LongitudinalConfig,
    feature_catalogue,
    feature_columns,
    feature_groups,
    generate_longitudinal,
    generate_subjects,
    hemisphere_pairs,
    planted_truth,
    read_table,
    truth_path,
    write_table,
)

SMALL = LongitudinalConfig(n_subjects=400, n_paired=90, n_features=32, seed=3)


@pytest.fixture(scope="module")
def quick() -> pd.DataFrame:
    return generate_longitudinal(LongitudinalConfig.quick(seed=11))


def _visits(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Visit-1 and visit-2 rows of the paired subjects, aligned by subject."""
    second = frame[frame["visit"] == 2].set_index("subject_id")
    first = frame[frame["visit"] == 1].set_index("subject_id").loc[second.index]
    return first, second


def test_parkinsonism_substantia_nigra_declines_faster():
    # prevalence raised to 0.5 so both groups are large; the planted effect sizes are the defaults
    config = LongitudinalConfig(n_subjects=12_000, n_paired=12_000, n_features=8, seed=0,
                                prevalence={"parkinsonism": 0.5})
    first, second = _visits(generate_longitudinal(config))
    group = feature_groups(second)["substantia_nigra"]
    assert group == ["vol_lh_snc", "vol_rh_snc", "vol_lh_snr", "vol_rh_snr"]
    annual = np.log(second[group] / first[group]).mean(axis=1) / second["years_since_first"]
    change_mm3 = (second[group] - first[group]).mean(axis=1)
    pd_mask = first["parkinsonism"].to_numpy() == 1
    a, b = annual[pd_mask].dropna(), annual[~pd_mask].dropna()
    z = (a.mean() - b.mean()) / np.sqrt(a.var() / len(a) + b.var() / len(b))
    assert a.mean() < b.mean() < 0 and z < -3
    assert 1.1 < a.mean() / b.mean() < 2.0  # planted: +25 % rate, plus older age
    assert change_mm3[pd_mask].mean() < change_mm3[~pd_mask].mean() < 0


def test_default_prevalences_match_targets():
    subjects = generate_subjects(LongitudinalConfig.paper(seed=5))
    n = len(subjects)
    assert n == 41_706 and subjects["paired"].sum() == 4_997
    for label, target in DEFAULT_PREVALENCE.items():
        tolerance = 4 * np.sqrt(target * (1 - target) / n)
        assert abs(subjects[label].mean() - target) < tolerance, label
    assert subjects["age"].between(45, 82).all() and abs(subjects["age"].mean() - 63.5) < 0.3
    assert 0.45 < subjects["sex"].mean() < 0.51 and abs(subjects["townsend"].mean() + 1.7) < 0.1
    # those who later died return for the follow-up less often
    assert subjects.loc[subjects["died"] == 1, "paired"].mean() < subjects["paired"].mean()


def test_counts_visits_and_ages():
    frame = generate_longitudinal(SMALL)
    assert len(frame) == SMALL.n_subjects + SMALL.n_paired
    assert list(frame.columns[:3]) == ["subject_id", "visit", "years_since_first"]
    assert set(LABEL_COLUMNS) <= set(frame.columns) and len(feature_columns(frame)) == SMALL.n_features
    counts = frame.groupby("subject_id")["visit"].agg(["count", "min", "max"])
    assert len(counts) == SMALL.n_subjects and (counts["min"] == 1).all()
    assert (counts["count"] == counts["max"]).all() and (counts["count"] == 2).sum() == SMALL.n_paired
    assert frame["subject_id"].is_monotonic_increasing
    first, second = _visits(frame)
    assert (frame.loc[frame["visit"] == 1, "years_since_first"] == 0).all()
    assert second["years_since_first"].between(1, 5).all()
    assert (second["age"] > first["age"]).all()
    np.testing.assert_allclose(second["age"] - first["age"], second["years_since_first"], atol=0.011)
    labels = [c for c in LABEL_COLUMNS if c != "age"]
    pd.testing.assert_frame_equal(first[labels], second[labels])


def test_features_are_positive_realistic_and_paired_by_hemisphere(quick):
    features = feature_columns(quick)
    assert len(features) == 128 and len(quick) == 3_600
    values = quick[features]
    assert (values.min() > 0).all()
    thick = [c for c in features if c.startswith("thick_")]
    assert values[thick].median().between(1.5, 4.0).all()
    assert 1.3e6 < values["vol_etiv"].median() < 1.7e6 and 3000 < values["vol_lh_hippocampus"].median() < 5000
    first = quick[quick["visit"] == 1]
    pairs = hemisphere_pairs(quick)
    r = np.array([first[lh].corr(first[rh]) for lh, rh in pairs])
    assert len(pairs) >= 60 and r.min() > 0.4 and np.median(r) > 0.65
    assert first["vol_etiv"].corr(first["sex"]) > 0.4  # head size differs by sex
    assert first["vol_lh_hippocampus"].corr(first["age"]) < -0.15  # atrophy with age
    assert first["vol_lh_lateral_ventricle"].corr(first["age"]) > 0.3


def test_test_retest_and_change_directions(quick):
    first, second = _visits(quick)
    features = feature_columns(quick)
    r = pd.Series({c: first[c].corr(second[c]) for c in features})
    assert 0.85 < r.median() < 0.97 and r.min() > 0.6 and r.max() < 0.995  # strong, not perfect
    change = (second[features] - first[features]).mean()
    assert change["vol_lh_hippocampus"] < 0 and change["vol_rh_hippocampus"] < 0
    assert change["vol_lh_lateral_ventricle"] > 0 and change["vol_wm_hypointensities"] > 0
    assert abs(change["vol_etiv"]) < 0.002 * first["vol_etiv"].mean()


def test_missing_fraction_is_as_requested():
    frame = generate_longitudinal(LongitudinalConfig.quick(n_subjects=1_000, n_paired=200, missing_fraction=0.02))
    features = feature_columns(frame)
    assert abs(frame[features].isna().to_numpy().mean() - 0.02) < 0.002
    assert not frame.drop(columns=features).isna().any().any()  # ids, time and labels are complete
    none = generate_longitudinal(LongitudinalConfig.quick(n_subjects=200, n_paired=20, missing_fraction=0.0))
    assert not none.isna().any().any()


def test_seed_determinism_and_feature_subsets():
    a, b = generate_longitudinal(SMALL), generate_longitudinal(SMALL)
    pd.testing.assert_frame_equal(a, b)
    other = generate_longitudinal(LongitudinalConfig(**{**SMALL.__dict__, "seed": 4}))
    assert not np.allclose(a["vol_lh_hippocampus"], other["vol_lh_hippocampus"], equal_nan=True)
    more = generate_longitudinal(LongitudinalConfig(**{**SMALL.__dict__, "n_features": 96}))
    assert set(feature_columns(a)) < set(feature_columns(more))
    pd.testing.assert_frame_equal(a, more[a.columns])  # fewer features = a column subset, same values


def test_catalogue_and_groups():
    catalogue = feature_catalogue()
    assert len(catalogue) == 769 and catalogue["name"].is_unique
    assert set(catalogue["unit"]) == {"mm3", "mm2", "mm"}
    for name in ("vol_lh_hippocampus", "area_rh_precentral", "thick_lh_insula", "vol_lh_snc", "vol_rh_snc"):
        assert name in set(catalogue["name"])
    groups = feature_groups(catalogue["name"])
    assert groups["snc"] == ["vol_lh_snc", "vol_rh_snc"]
    assert len(groups["vol"]) + len(groups["area"]) + len(groups["thick"]) == 769
    assert len(hemisphere_pairs(catalogue["name"])) == 379


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_round_trip(tmp_path, suffix):
    frame = generate_longitudinal(SMALL)
    path = write_table(frame, tmp_path / f"long{suffix}", truth=planted_truth(SMALL))
    back = read_table(path)
    pd.testing.assert_frame_equal(back, frame, check_dtype=suffix == ".parquet")
    truth = json.loads(truth_path(path).read_text())
    assert truth["config"]["n_paired"] == SMALL.n_paired and len(truth["features"]) == SMALL.n_features
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, truth_path(path).name])
    assert truth["table"] == path.name
    write_table(frame.head(10), path)  # rewritten without a truth: the old sidecar goes
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_csv_and_a_parquet_of_one_name_keep_their_own_ground_truth(tmp_path):
    frame = generate_longitudinal(SMALL)
    csv = write_table(frame, tmp_path / "long.csv", truth=planted_truth(SMALL))
    other = dataclasses.replace(SMALL, seed=SMALL.seed + 1)
    parquet = write_table(generate_longitudinal(other), tmp_path / "long.parquet", truth=planted_truth(other))
    assert truth_path(csv).name == "long.csv.truth.json" and truth_path(parquet).name == "long.parquet.truth.json"
    assert json.loads(truth_path(csv).read_text())["config"]["seed"] == SMALL.seed
    write_table(frame, parquet)  # the parquet without its truth: the csv's stays
    assert truth_path(csv).exists() and not truth_path(parquet).exists()


def test_a_sidecar_named_by_an_earlier_version_goes_unless_a_sibling_table_may_own_it(tmp_path):
    frame = generate_longitudinal(SMALL)
    legacy = tmp_path / "long.truth.json"
    legacy.write_text("{}")
    write_table(frame, tmp_path / "long.csv", truth=planted_truth(SMALL))
    assert not legacy.exists()
    legacy.write_text("{}")  # now long.csv is beside long.parquet: the old name may be either's
    write_table(frame, tmp_path / "long.parquet")
    assert legacy.exists()


def test_a_table_that_fails_to_move_in_leaves_the_old_table_and_no_sidecar(tmp_path, monkeypatch):
    """Both files are written before either moves in; the old sidecar goes first and the new one moves in
    after the table, so a failure never leaves a table beside another table's ground truth."""
    frame = generate_longitudinal(SMALL)
    path = write_table(frame, tmp_path / "long.csv", truth=planted_truth(SMALL))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == path:
            raise OSError("simulated failure moving the table in")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    other = dataclasses.replace(SMALL, seed=SMALL.seed + 1)
    with pytest.raises(OSError, match="simulated"):
        write_table(generate_longitudinal(other), path, truth=planted_truth(other))
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # the old table stays; its sidecar was removed just before the move, never replaced by the new one
    assert after == {path.name: before[path.name]}


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"n_paired": 500}, "500"),
        ({"n_subjects": 0}, "n_subjects"),
        ({"n_paired": -1}, "-1"),
        ({"n_features": 3}, "3"),
        ({"n_features": 1000}, "1000"),
        ({"missing_fraction": 0.7}, "0.7"),
        ({"seed": -2}, "-2"),
        ({"prevalence": {"gout": 0.1}}, "gout"),
    ],
)
def test_bad_config_is_named(changes, named):
    with pytest.raises(ValueError, match=named):
        generate_longitudinal(LongitudinalConfig(**{**SMALL.__dict__, **changes}))


def test_write_table_refuses_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match="xlsx"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.xlsx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, named",
    [
        (["--quick", "--paired", "5000"], "5000"),
        (["--subjects", "0"], "0"),
        (["--quick", "--features", "2000"], "2000"),
        (["--quick", "--missing", "-0.1"], "-0.1"),
        (["--quick", "--out-file", "x.csv"], "--out-file"),
        (["--quick", "--subjects", "many"], "--subjects"),  # typer names the option
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, args, named):
    result = CliRunner().invoke(app, ["synth", "longitudinal", "--out", str(tmp_path / "t.csv"), *args])
    assert result.exit_code == 2 and named in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_unknown_extension_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["synth", "longitudinal", "--quick", "--out", str(tmp_path / "t.xlsx")])
    assert result.exit_code == 2 and ".xlsx" in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_table_and_truth(tmp_path):
    out = tmp_path / "sub" / "long.parquet"
    args = ["synth", "longitudinal", "--subjects", "300", "--paired", "40", "--features", "16", "--seed", "2",
            "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "340 rows" in result.output and "40 paired" in result.output and "16 features" in result.output
    frame = read_table(out)
    assert len(frame) == 340 and len(feature_columns(frame)) == 16
    assert truth_path(out).exists()
    expected = generate_longitudinal(LongitudinalConfig(n_subjects=300, n_paired=40, n_features=16, seed=2))
    pd.testing.assert_frame_equal(frame, expected)


@pytest.mark.parametrize("quick, expected", [(False, 120), (True, 200)])
def test_cli_subjects_alone_keeps_the_presets_share_with_a_follow_up(tmp_path, quick, expected):
    out = tmp_path / "t.csv"
    args = ["synth", "longitudinal", *(["--quick"] if quick else []), "--subjects", "1000", "--features", "8",
            "--no-truth", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"{expected} paired" in result.output
