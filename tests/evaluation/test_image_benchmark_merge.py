"""`neurodiff harmonize|normative merge` and their benchmarks' `--first-seed`: folders of other seeds or methods
join into the folder one run would have written; folders of another cohort, settings or benchmark are refused
and nothing is written. Methods without training (raw, ComBat; regression z-scores, brain-age gap) keep it fast."""

import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from neurodiff.cli import app

runner = CliRunner()
HARMONIZE = ["harmonize", "benchmark", "--no-timing", "--quick", "--steps", "2", "--methods", "raw,combat"]
NORMATIVE = ["normative", "benchmark", "--quick", "--methods", "regression_z,brain_age_gap"]


def _bench(command, manifest, out, *options):
    result = runner.invoke(app, [*command, "--manifest", str(manifest), *options, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())


def _merge(group, *folders, out, options=()):
    return runner.invoke(app, [group, "merge", *map(str, folders), "--out", str(out), *options])


def _values(document):
    """method → metric → per-seed values, NaN-safe for comparison."""
    return {m: {k: [("nan" if v is None else v) for v in s["values"]] for k, s in metrics.items() if "values" in s}
            for m, metrics in document["methods"].items()}


@pytest.fixture(scope="module")
def harmonize_runs(tiny_image_cohort, tmp_path_factory):
    manifest, _, _ = tiny_image_cohort
    root = tmp_path_factory.mktemp("harmonize-merge")
    whole = _bench(HARMONIZE, manifest, root / "whole", "--seeds", "2")
    _bench(HARMONIZE, manifest, root / "a", "--seeds", "1")
    _bench(HARMONIZE, manifest, root / "b", "--first-seed", "1", "--seeds", "1")
    return root, manifest, whole


def test_harmonize_pieces_merge_into_what_one_run_writes(harmonize_runs):
    root, _, whole = harmonize_runs
    result = _merge("harmonize", root / "b", root / "a", out=root / "ab")  # any order
    assert result.exit_code == 0, result.output
    assert "seeds [0, 1], methods combat, raw" in result.output
    merged = json.loads((root / "ab" / "results.json").read_text())
    assert merged["seeds"] == [0, 1] and merged["data"]["splits"] == whole["data"]["splits"]
    assert merged["data"]["fingerprint"] == whole["data"]["fingerprint"]
    assert _values(merged) == _values(whole)
    for method, metrics in whole["methods"].items():
        for metric, summary in metrics.items():
            for key in ("mean", "ci95"):
                a, b = merged["methods"][method][metric][key], summary[key]
                assert a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-12)), (method, metric)
    assert [t["seed"] for t in merged["timings"]["training"]] == [0, 1]
    assert [f["seeds"] for f in merged["timings"]["merged_from"]] == [[1], [0]]
    # the metric bars drawn again; the examples are seed 0's, from the folder that began there
    assert (root / "ab" / "metrics.png").is_file()
    assert (root / "ab" / "examples.png").read_bytes() == (root / "a" / "examples.png").read_bytes()
    report = (root / "ab" / "report.html").read_text()
    assert "seeds [0, 1]" in report and "examples.png" in report and "metrics.png" in report


def test_harmonize_the_same_cohort_elsewhere_merges_and_another_cohort_is_refused(harmonize_runs, tiny_image_cohort,
                                                                                   tmp_path):
    root, manifest, _ = harmonize_runs
    moved = tmp_path / "moved"
    shutil.copytree(manifest.parent, moved)  # same images and values, another path: same fingerprint
    _bench(HARMONIZE, moved / "manifest.csv", tmp_path / "c", "--first-seed", "1", "--seeds", "1")
    result = _merge("harmonize", root / "a", tmp_path / "c", out=tmp_path / "ok")
    assert result.exit_code == 0, result.output

    _, frame, _ = tiny_image_cohort
    older = frame.assign(age=frame["age"] + 1.0)
    older.to_csv(moved / "older.csv", index=False)
    _bench(HARMONIZE, moved / "older.csv", tmp_path / "d", "--first-seed", "1", "--seeds", "1")
    result = _merge("harmonize", root / "a", tmp_path / "d", out=tmp_path / "no")
    assert result.exit_code == 2 and "fingerprints differ" in result.output, result.output
    assert not (tmp_path / "no").exists()


def test_harmonize_overlapping_seeds_must_agree_and_other_settings_are_refused(harmonize_runs, tmp_path):
    root, manifest, _ = harmonize_runs
    raw_only = tmp_path / "raw"
    _bench([*HARMONIZE[:-1], "raw"], manifest, raw_only, "--seeds", "2")
    result = _merge("harmonize", root / "a", raw_only, out=tmp_path / "ok")
    assert result.exit_code == 0, result.output  # raw at seed 0 in both: the same values
    assert "note: combat was not run on seed 1: its mean and CI are over 1 seed" in result.output

    tampered = tmp_path / "tampered"
    shutil.copytree(raw_only, tampered)
    document = json.loads((tampered / "results.json").read_text())
    document["methods"]["raw"]["site_accuracy"]["values"][0] += 0.01
    (tampered / "results.json").write_text(json.dumps(document))
    result = _merge("harmonize", root / "a", tampered, out=tmp_path / "no")
    assert result.exit_code == 2 and "raw site_accuracy at seed 0" in result.output, result.output

    _bench(HARMONIZE, manifest, tmp_path / "site1", "--first-seed", "1", "--seeds", "1", "--target-site", "site1")
    result = _merge("harmonize", root / "a", tmp_path / "site1", out=tmp_path / "no")
    assert result.exit_code == 2 and "target_site" in result.output and "other settings" in result.output
    assert not (tmp_path / "no").exists()


def test_harmonize_timing_is_not_checked_and_figures_come_from_every_folder_at_the_lowest_seed(harmonize_runs,
                                                                                               tmp_path):
    root, manifest, _ = harmonize_runs
    ddae = tmp_path / "ddae"
    _bench([*HARMONIZE[:-1], "ddae"], manifest, ddae, "--seeds", "1")  # the same settings, another method
    # the same run again differs only in its wall-clock images_per_second, which is not checked
    again = tmp_path / "again"
    shutil.copytree(ddae, again)
    document = json.loads((again / "results.json").read_text())
    document["methods"]["ddae"]["images_per_second"]["values"][0] *= 2
    (again / "results.json").write_text(json.dumps(document))
    result = _merge("harmonize", ddae, again, out=tmp_path / "twice")
    assert result.exit_code == 0, result.output
    merged = json.loads((tmp_path / "twice" / "results.json").read_text())
    first = json.loads((ddae / "results.json").read_text())
    assert merged["methods"]["ddae"]["images_per_second"]["values"] == first["methods"]["ddae"]["images_per_second"]["values"]

    # raw + ComBat and DDAE, both from seed 0: DDAE's latent map joins the other folder's figures
    result = _merge("harmonize", ddae, root / "a", out=tmp_path / "both")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "both" / "umap_ddae.png").read_bytes() == (ddae / "umap_ddae.png").read_bytes()
    assert (tmp_path / "both" / "examples.png").read_bytes() == (root / "a" / "examples.png").read_bytes()
    assert "umap_ddae.png" in (tmp_path / "both" / "report.html").read_text()


def test_a_benchmark_of_another_kind_and_a_bad_first_seed_are_refused(harmonize_runs, tiny_patient_cohort, tmp_path):
    root, manifest, _ = harmonize_runs
    result = _merge("normative", root / "a", root / "b", out=tmp_path / "no")
    assert result.exit_code == 2 and "not an output folder of `neurodiff normative benchmark`" in result.output
    result = runner.invoke(app, [*HARMONIZE, "--manifest", str(manifest), "--first-seed", "-1", "--out",
                                 str(tmp_path / "neg")])
    assert result.exit_code == 2 and "--first-seed must be 0 or more" in result.output
    assert not (tmp_path / "no").exists() and not (tmp_path / "neg").exists()


def test_normative_pieces_merge_into_what_one_run_writes(tiny_patient_cohort, tmp_path):
    manifest, _, _ = tiny_patient_cohort
    whole = _bench(NORMATIVE, manifest, tmp_path / "whole", "--seeds", "2")
    _bench(NORMATIVE, manifest, tmp_path / "a", "--seeds", "1")
    _bench(NORMATIVE, manifest, tmp_path / "b", "--first-seed", "1", "--seeds", "1")
    result = _merge("normative", tmp_path / "a", tmp_path / "b", out=tmp_path / "ab")
    assert result.exit_code == 0, result.output
    merged = json.loads((tmp_path / "ab" / "results.json").read_text())
    assert merged["seeds"] == [0, 1] and _values(merged) == _values(whole)
    for method, metrics in whole["methods"].items():  # the Cox CIs per seed, and their geometric mean
        assert merged["methods"][method]["hr_ci"]["per_seed"] == metrics["hr_ci"]["per_seed"], method
        assert merged["methods"][method]["hr_ci"]["geometric_mean"] == pytest.approx(
            metrics["hr_ci"]["geometric_mean"], rel=1e-12), method
    assert (tmp_path / "ab" / "kaplan_meier.png").read_bytes() == (tmp_path / "a" / "kaplan_meier.png").read_bytes()
    report = (tmp_path / "ab" / "report.html").read_text()
    assert "Hazard ratio per unit" in report and "Training seconds" in report and "kaplan_meier.png" in report

    # a merged folder with a gap (brain_age_gap not run on seed 1) is completed by a later merge
    _bench(["normative", "benchmark", "--quick", "--methods", "regression_z"], manifest, tmp_path / "c",
           "--first-seed", "1", "--seeds", "1")
    result = _merge("normative", tmp_path / "a", tmp_path / "c", out=tmp_path / "ac")
    assert result.exit_code == 0, result.output
    assert "note: brain_age_gap was not run on seed 1" in result.output
    gap = json.loads((tmp_path / "ac" / "results.json").read_text())
    assert gap["method_seeds"]["brain_age_gap"] == [0] and gap["method_seeds"]["regression_z"] == [0, 1]
    assert gap["methods"]["brain_age_gap"]["hr_ci"]["per_seed"][1] == [None, None]
    assert gap["methods"]["brain_age_gap"]["hr_ci"]["geometric_mean"] == pytest.approx(  # over seed 0 alone
        whole["methods"]["brain_age_gap"]["hr_ci"]["per_seed"][0], rel=1e-12)
    result = _merge("normative", tmp_path / "ac", tmp_path / "b", out=tmp_path / "acb")
    assert result.exit_code == 0, result.output
    completed = json.loads((tmp_path / "acb" / "results.json").read_text())
    assert _values(completed) == _values(whole)
    assert completed["methods"]["brain_age_gap"]["hr_ci"] == merged["methods"]["brain_age_gap"]["hr_ci"]

    # a seed's Cox CI that disagrees is refused like any value
    shutil.copytree(tmp_path / "a", tmp_path / "a2")
    document = json.loads((tmp_path / "a2" / "results.json").read_text())
    document["methods"]["regression_z"]["hr_ci"]["per_seed"][0][0] *= 1.01
    (tmp_path / "a2" / "results.json").write_text(json.dumps(document))
    result = _merge("normative", tmp_path / "a", tmp_path / "a2", out=tmp_path / "no")
    assert result.exit_code == 2 and "regression_z hr_ci at seed 0" in result.output, result.output
    assert not (tmp_path / "no").exists()
