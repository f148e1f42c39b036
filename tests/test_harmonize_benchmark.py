import json

from typer.testing import CliRunner

from neurodiff.cli import app
from neurodiff.evaluation.harmonization import METRIC_NAMES
from neurodiff.evaluation.harmonization_benchmark import ALL_METHODS, split_cohort

runner = CliRunner()


def test_split_keeps_travellers_for_testing_and_patients_out(tiny_image_cohort):
    _, frame, _ = tiny_image_cohort
    frame = frame.copy()
    frame.loc[0, "group"] = "patient"
    train, test = split_cohort(frame, 0.3, seed=0)
    travellers = frame["true_traveller_id"].fillna("").astype(str).ne("").to_numpy()
    assert set(test) >= set(travellers.nonzero()[0]) and not set(train) & set(test)
    assert 0 not in train and 0 not in test
    assert not set(frame["subject_id"].iloc[train]) & set(frame["subject_id"].iloc[test])
    again, _ = split_cohort(frame, 0.3, seed=0)
    assert list(again) == list(train)


def test_benchmark_writes_every_method_and_metric(tiny_image_cohort, tmp_path):
    manifest, _, _ = tiny_image_cohort
    out = tmp_path / "bench"
    result = runner.invoke(app, ["harmonize", "benchmark", "--manifest", str(manifest), "--quick", "--seeds", "1",
                                 "--steps", "2", "--baseline-steps", "2", "--no-timing", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["methods"]) == set(ALL_METHODS)
    for method in ALL_METHODS:
        assert set(METRIC_NAMES) <= set(doc["methods"][method]), method
    assert "latent_site_accuracy" in doc["methods"]["ddae"]
    # raw images are their own travellers' reference only at the target site: a finite, imperfect score
    assert 0 < doc["methods"]["raw"]["ssim"]["mean"] < 1
    assert (out / "report.html").read_text().count("<table>") >= 4
    assert (out / "examples.png").exists() and (out / "umap_ddae.png").exists()


def test_benchmark_refuses_an_unknown_method_and_a_missing_target(tiny_image_cohort, tmp_path):
    manifest, _, _ = tiny_image_cohort
    result = runner.invoke(app, ["harmonize", "benchmark", "--manifest", str(manifest), "--methods", "ddae,magic",
                                 "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "magic" in result.output
    result = runner.invoke(app, ["harmonize", "benchmark", "--manifest", str(manifest), "--target-site", "site4",
                                 "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "site4" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
