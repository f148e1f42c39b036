"""`neurodiff impute merge` and `impute benchmark --first-seed`: folders of other seeds or methods join into
the folder one run would have written; folders that are not the same benchmark are refused."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodiff.cli import app
from neurodiff.data.longitudinal_table import longitudinal_arrays, read_table
from neurodiff.data.synthetic_longitudinal import LongitudinalConfig, generate_longitudinal
from neurodiff.evaluation.longitudinal_benchmark_merge import merge_benchmarks, read_benchmark_folder

LABELS = ["--labels", "sex,age,stroke", "--exclude", "years_since_first", "--downstream-labels", "stroke"]


def _bench(table, out, *options):
    result = CliRunner().invoke(app, ["impute", "benchmark", "--data", str(table), "--quick", "--epochs", "1",
                                      *LABELS, *options, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())


def _merge(*folders, out):
    return CliRunner().invoke(app, ["impute", "merge", *map(str, folders), "--out", str(out)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 3-seed run of three methods, and the same benchmark in three pieces: two methods on seeds 0-1,
    the same two on seed 2 (--first-seed), a third method on seeds 0-2."""
    root = tmp_path_factory.mktemp("merge")
    table = root / "t.csv"
    generate_longitudinal(LongitudinalConfig(n_subjects=200, n_paired=90, n_features=8, seed=3,
                                             prevalence={"stroke": 0.3})).to_csv(table, index=False)
    whole = _bench(table, root / "whole", "--seeds", "3", "--methods", "secondgram,locf,ridge")
    _bench(table, root / "a", "--seeds", "2", "--methods", "locf,ridge")
    _bench(table, root / "b", "--first-seed", "2", "--seeds", "1", "--methods", "locf,ridge")
    _bench(table, root / "c", "--seeds", "3", "--methods", "secondgram")
    return root, table, whole


def test_first_seed_runs_the_later_seeds(runs):
    root, _, whole = runs
    later = json.loads((root / "b" / "results.json").read_text())
    assert later["seeds"] == [2] and later["config"]["seeds"] == [2]
    assert later["methods"]["ridge"]["pearson_feature"]["values"] == whole["methods"]["ridge"]["pearson_feature"]["values"][2:]
    assert len(later["data"]["fingerprint"]) == 64 and later["data"]["fingerprint"] == whole["data"]["fingerprint"]


def test_pieces_merge_into_what_one_run_writes(runs):
    root, _, whole = runs
    result = _merge(root / "a", root / "b", root / "c", out=root / "merged")
    assert result.exit_code == 0, result.output
    assert "seeds [0, 1, 2], methods secondgram, locf, ridge" in result.output and "note:" not in result.output
    merged = json.loads((root / "merged" / "results.json").read_text())
    assert merged["seeds"] == [0, 1, 2] and list(merged["methods"]) == list(whole["methods"])
    for method, metrics in whole["methods"].items():  # every cell, the reference rows included
        assert set(merged["methods"][method]) == set(metrics), method
        for metric, cell in metrics.items():
            got = merged["methods"][method][metric]
            assert got["values"] == pytest.approx(cell["values"], rel=1e-9, nan_ok=True), (method, metric)
            assert got["n"] == cell["n"] and got["mean"] == pytest.approx(cell["mean"], rel=1e-9)
            if cell["ci95"] is not None:
                assert got["ci95"] == pytest.approx(cell["ci95"], rel=1e-9)
    assert merged["data"]["splits"] == whole["data"]["splits"]
    assert {k: v for k, v in merged["config"].items()} == whole["config"]
    assert [s["folder"] for s in merged["timings"]["merged_from"]] == [str(root / n) for n in "abc"]
    runs_json = json.loads((root / "merged" / "runs.json").read_text())
    assert [r["seed"] for r in runs_json] == [0, 1, 2] and all("secondgram" in r for r in runs_json)
    with np.load(root / "merged" / "correlations.npz") as corr, np.load(root / "whole" / "correlations.npz") as ref:
        assert sorted(corr.files) == sorted(ref.files)
        assert all(np.array_equal(corr[k], ref[k]) for k in ref.files)
    report = (root / "merged" / "report.html").read_text()
    assert "Merged from 3 benchmark runs" in report and (root / "merged" / "learning_curves.png").exists()


def test_a_method_missing_on_some_seeds_is_named(runs, tmp_path):
    root, table, _ = runs
    single = tmp_path / "one"
    _bench(table, single, "--seeds", "1", "--methods", "no_grad")
    result = _merge(root / "a", root / "b", single, out=tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert "note: no_grad was not run on seeds 1, 2: its mean and CI are over 1 seed\n" in result.output
    merged = json.loads((tmp_path / "m" / "results.json").read_text())
    cell = merged["methods"]["no_grad"]["pearson_feature"]
    assert cell["values"][1:] == [None, None] and cell["n"] == 1 and cell["ci95"] is None


def test_the_same_table_from_another_path_merges(runs, tmp_path):
    root, table, _ = runs
    moved = tmp_path / "copy.csv"
    shutil.copy(table, moved)
    _bench(moved, tmp_path / "d", "--first-seed", "3", "--seeds", "1", "--methods", "locf,ridge")
    result = _merge(root / "a", tmp_path / "d", out=tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m" / "results.json").read_text())["seeds"] == [0, 1, 3]


@pytest.mark.parametrize("change, message", [
    (lambda d: d["config"].update(max_epochs=7), "other settings than"),
    (lambda d: d["data"].update(fingerprint="0" * 64), "fingerprints differ"),
    (lambda d: d["methods"]["reference"]["auroc_stroke_all_first"]["values"].__setitem__(0, 0.123),
     "reference auroc_stroke_all_first at seed 0 is 0.123"),
    (lambda d: d["data"]["splits"][0].update(n_test=1), "seed 0's split is"),
    (lambda d: d.update(task="harmonization"), "not an output folder of `neurodiff impute benchmark`"),
])
def test_other_benchmarks_are_refused_and_nothing_written(runs, tmp_path, change, message):
    root, _, _ = runs
    other = tmp_path / "other"
    shutil.copytree(root / "c", other)
    document = json.loads((other / "results.json").read_text())
    change(document)
    (other / "results.json").write_text(json.dumps(document))
    result = _merge(root / "a", other, out=tmp_path / "m")
    assert result.exit_code == 2 and message in result.output and str(other) in result.output, result.output
    assert not (tmp_path / "m").exists()


def test_bad_folders_and_outputs(runs, tmp_path):
    root, table, _ = runs
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep")
    result = _merge(root / "a", root / "b", out=tmp_path / "taken")
    assert result.exit_code == 2 and "not an empty folder" in result.output
    assert (tmp_path / "taken" / "x").read_text() == "keep"
    result = _merge(root / "a", tmp_path / "nowhere", out=tmp_path / "m")
    assert result.exit_code == 2 and "nowhere: not a folder" in result.output
    result = _merge(root / "a", table.parent, out=tmp_path / "m")
    assert result.exit_code == 2 and "no results.json, runs.json, correlations.npz" in result.output
    result = _merge(root / "a", root / "a", out=tmp_path / "m")
    assert result.exit_code == 2 and "given more than once" in result.output
    result = _merge(root / "a", out=tmp_path / "m")
    assert result.exit_code == 2 and "at least two benchmark folders" in result.output
    bad = CliRunner().invoke(app, ["impute", "benchmark", "--data", str(table), "--first-seed", "-1", *LABELS,
                                   "--methods", "locf", "--out", str(tmp_path / "neg")])
    assert bad.exit_code == 2 and "--first-seed must be 0 or more" in bad.output
    assert not (tmp_path / "m").exists() and not (tmp_path / "neg").exists()


def test_fingerprint_follows_the_values(runs):
    _, table, _ = runs
    frame = read_table(table)
    labels = dict(labels=["sex", "age", "stroke"], exclude=["years_since_first"])
    arrays = longitudinal_arrays(frame, **labels)
    assert arrays.fingerprint() == longitudinal_arrays(read_table(table), **labels).fingerprint()
    feature = arrays.feature_columns[0]
    frame.loc[frame.index[0], feature] += 1e-9
    assert longitudinal_arrays(frame, **labels).fingerprint() != arrays.fingerprint()


def test_tolerance_keeps_the_first_value(runs, tmp_path):
    root, _, _ = runs
    a, c = read_benchmark_folder(root / "a"), read_benchmark_folder(root / "c")
    cell = c.document["methods"]["reference"]["auroc_stroke_all_first"]["values"]
    value = a.document["methods"]["reference"]["auroc_stroke_all_first"]["values"][0]
    assert cell[0] == value  # the two runs agree exactly
    cell[0] = value * (1 + 1e-3)  # as another thread count might move a trained metric
    with pytest.raises(ValueError, match="more than the tolerance 0.0001 apart.*threads per seed"):
        merge_benchmarks([a, c], log=lambda _: None)
    document, _, _ = merge_benchmarks([a, c], log=lambda _: None, tolerance=0.01)
    assert document["methods"]["reference"]["auroc_stroke_all_first"]["values"][0] == value
    # every two folders must agree, so the order cannot decide: value, +0.8 %, +1.6 % at a tolerance of 1 %
    import copy
    import itertools

    b = copy.deepcopy(c)
    b.path = root / "b-copy"
    b.document["methods"]["reference"]["auroc_stroke_all_first"]["values"][0] = value * 1.016
    cell[0] = value * 1.008
    for order in itertools.permutations([a, c, b]):
        with pytest.raises(ValueError, match="more than the tolerance 0.01 apart"):
            merge_benchmarks(order, log=lambda _: None, tolerance=0.01)
    other = tmp_path / "c"  # and from the command line
    shutil.copytree(root / "c", other)
    (other / "results.json").write_text(json.dumps(c.document))
    assert _merge(root / "a", other, out=tmp_path / "m").exit_code == 2
    result = CliRunner().invoke(app, ["impute", "merge", str(root / "a"), str(other), "--tolerance", "0.01",
                                      "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output


def test_the_same_method_in_two_folders_and_a_merged_folder_merge_again(runs, tmp_path):
    root, _, whole = runs
    result = _merge(root / "c", root / "whole", out=tmp_path / "cw")  # secondgram on seeds 0-2 in both
    assert result.exit_code == 0, result.output
    merged = json.loads((tmp_path / "cw" / "results.json").read_text())
    assert merged["methods"] == whole["methods"]
    first = json.loads((root / "c" / "runs.json").read_text())
    assert json.loads((tmp_path / "cw" / "runs.json").read_text())[1]["secondgram"] == first[1]["secondgram"]
    assert _merge(root / "a", root / "b", out=tmp_path / "ab").exit_code == 0
    result = _merge(tmp_path / "ab", root / "whole", out=tmp_path / "again")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "again" / "results.json").read_text())["methods"] == whole["methods"]


def test_which_table_does_not_depend_on_the_order(runs):
    """A folder without a fingerprint (written before it was recorded) and two with different ones: refused
    in every order; without fingerprints the descriptions must match across all folders."""
    import itertools

    root, _, _ = runs
    old, new, newer = (read_benchmark_folder(root / n) for n in "abc")
    del old.document["data"]["fingerprint"]
    newer.document["data"]["fingerprint"] = "f" * 64
    for order in itertools.permutations([old, new, newer]):
        with pytest.raises(ValueError, match="fingerprints differ"):
            merge_benchmarks(order, log=lambda _: None)
    newer.document["data"]["fingerprint"] = new.document["data"]["fingerprint"]
    newer.document["data"]["description"] = "table elsewhere/t.csv"  # same fingerprint, another path
    merge_benchmarks([new, newer], log=lambda _: None)
    for order in itertools.permutations([old, new, newer]):
        with pytest.raises(ValueError, match="data 'description'"):
            merge_benchmarks(order, log=lambda _: None)


def test_device_may_differ_and_environments_are_named(runs):
    root, _, _ = runs
    a, b = read_benchmark_folder(root / "a"), read_benchmark_folder(root / "b")
    b.document["config"]["device"] = "cuda"
    b.document["environment"].update(torch_threads=64, cpu_count=64)
    lines = []
    document, _, _ = merge_benchmarks([a, b], log=lines.append)
    assert document["seeds"] == [0, 1, 2]
    assert any(line.startswith("note: the folders ran with different torch threads per seed") and ": 64" in line
               for line in lines), lines
    assert any(line.startswith("note: the folders ran on different devices") for line in lines), lines
    assert document["config"]["device"] == "mixed (cpu, cuda)"
    assert [m["device"] for m in document["timings"]["merged_from"]] == ["cpu", "cuda"]
    b.document["timings"]["seed_jobs"] = {"launcher": "local", "jobs": 64}  # 64 workers of 1 thread each
    a.document["environment"]["torch_threads"] = 1
    lines.clear()
    document, _, _ = merge_benchmarks([a, b], log=lines.append)
    assert not any("threads" in line for line in lines), lines
    assert document["timings"]["threads_per_seed"] == 1  # a merged folder keeps what its seeds trained with


def test_a_merged_folder_keeps_its_threads_per_seed(runs, tmp_path):
    """Merged again, a merged folder counts the threads its seeds trained with, not its first folder's process."""
    root, _, _ = runs
    assert _merge(root / "a", root / "b", out=tmp_path / "ab").exit_code == 0
    merged = json.loads((tmp_path / "ab" / "results.json").read_text())
    merged["timings"]["threads_per_seed"] = 7
    merged["environment"]["torch_threads"] = 99
    (tmp_path / "ab" / "results.json").write_text(json.dumps(merged))
    c = read_benchmark_folder(root / "c")
    c.document["environment"]["torch_threads"] = 7
    c.document["timings"]["seed_jobs"] = {"launcher": "local", "jobs": 1}
    lines = []
    merge_benchmarks([read_benchmark_folder(tmp_path / "ab"), c], log=lines.append)
    assert not any("threads" in line for line in lines), lines


def test_malformed_results_are_named(runs, tmp_path):
    root, _, _ = runs
    other = tmp_path / "b"
    shutil.copytree(root / "b", other)
    document = json.loads((other / "results.json").read_text())
    document["methods"]["ridge"]["pearson_feature"]["values"].append(0.5)
    (other / "results.json").write_text(json.dumps(document))
    result = _merge(root / "a", other, out=tmp_path / "m")
    assert result.exit_code == 2 and "methods.ridge.pearson_feature.values must hold one number or null per seed (1)" in result.output
    shutil.copy(root / "b" / "results.json", other / "results.json")
    (other / "correlations.npz").write_bytes((root / "b" / "correlations.npz").read_bytes()[:100])  # truncated
    result = _merge(root / "a", other, out=tmp_path / "m")
    assert result.exit_code == 2 and "correlations.npz: unreadable" in result.output, result.output
    assert not (tmp_path / "m").exists()
