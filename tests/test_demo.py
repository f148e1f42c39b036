"""The main job: `neurodiff demo` end to end at the smoke budget, resuming, and the errors a newcomer hits."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurodiff.cli import app
from neurodiff.demo import runner as demo_runner
from neurodiff.demo.budget import SMOKE
from neurodiff.demo.summary import HEADLINES, reading

cli = CliRunner()


@pytest.fixture(scope="module")
def smoke_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    result = cli.invoke(app, ["demo", "--out", str(out), "--smoke"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_demo_runs_every_method_with_its_baselines(smoke_demo):
    out, output = smoke_demo
    doc = json.loads((out / "results.json").read_text())
    assert doc["task"] == "demo" and doc["budget"]["name"] == "smoke"
    tasks = doc["tasks"]
    assert set(tasks) == {"cohorts", "engine", "longitudinal_imputation", "harmonization", "normative"}
    assert set(tasks["longitudinal_imputation"]["methods"]) >= {
        "secondgram", "secondgram_noised_schedule", "vanilla", "pretrained", "no_grad", "no_self", "gan", "locf", "ridge"}
    # every baseline of the image methods (their own variants are left to the full benchmarks)
    assert set(tasks["harmonization"]["methods"]) >= {"ddae", "combat", "cvae", "style_gan", "raw"}
    assert set(tasks["normative"]["methods"]) >= {"nda", "nda_mahalanobis", "cvae", "regression_z", "brain_age_gap"}
    assert tasks["normative"]["methods"]["nda"]["c_index"]["mean"] is not None
    # the engine check: diffusion captures the ring, a fitted Gaussian cannot (its ring error is ~0.39)
    engine = tasks["engine"]["methods"]
    assert engine["diffusion_ddpm100"]["ring_error"]["mean"] < 0.2 < 0.3 < engine["gaussian_baseline"]["ring_error"]["mean"]
    assert tasks["engine"]["checks"]["save_load_identical_samples"] is True
    for stage in ("impute", "harmonize", "normative"):
        assert (out / stage / "report.html").exists() and doc["stages"][stage]["command"].startswith("neurodiff ")
        assert (out / "logs" / f"{stage}.log").read_text().startswith("$ neurodiff ")
    # progress with a remaining-time estimate, stage by stage
    assert "[5/5]" in output and "left for the whole demo" in output


def test_summary_page_has_tables_readings_figures_and_links(smoke_demo):
    out, _ = smoke_demo
    page = (out / "report.html").read_text()
    for name, headline in HEADLINES.items():
        assert headline.title in page
    for link in ("impute/report.html", "harmonize/report.html", "normative/report.html", "cohorts/cohort_traveller.png",
                 "normative/kaplan_meier.png", "harmonize/examples.png", "impute/correlations.png"):
        assert f"'{link}'" in page and (out / link).exists()
    assert "the best baseline" in page and "±" in page


def test_reading_says_when_the_method_loses():
    methods = {"secondgram": {"pearson_feature": {"mean": 0.5, "ci95": 0.01}},
               "ridge": {"pearson_feature": {"mean": 0.9, "ci95": 0.01}},
               "reference": {"pearson_feature": {"mean": 1.0, "ci95": 0.0}}}
    text = reading(methods, HEADLINES["impute"])
    assert "worse than" in text and "ridge" in text and "reference" not in text
    methods["secondgram"]["pearson_feature"] = {"mean": 0.89, "ci95": 0.05}
    assert "within the seeds' uncertainty" in reading(methods, HEADLINES["impute"])


def test_site_accuracy_is_read_as_best_near_chance_and_raw_is_never_bold():
    from neurodiff.reporting.tables import methods_table

    def site(accuracy):
        return {"site_accuracy": {"mean": accuracy, "ci95": 0.01}, "site_chance": {"mean": 0.14, "ci95": 0.0}}

    # combat's 0.02 is further from chance than ddae's 0.20: site information of the other sign
    methods = {"ddae": site(0.20), "combat": site(0.02), "raw": site(0.14)}
    headline = HEADLINES["harmonize"]
    text = reading(methods, headline)
    assert "better than the best baseline, combat" in text and "raw" not in text
    table = methods_table(methods, ["site_accuracy"], "t", headline.metrics, headline.references,
                          unranked=headline.unranked)
    assert "<b>0.200 ± 0.010</b>" in table and table.count("<b>") == 1


def test_a_harmoniser_that_collapsed_its_images_is_never_the_best_baseline():
    """A template wins site accuracy (chance) without harmonising; the full report never bolds a method whose
    within-site variability fell below 0.5, and the demo's page follows it."""
    from neurodiff.demo.summary import _section

    def row(accuracy, variability):
        return {"site_accuracy": {"mean": accuracy, "ci95": 0.01}, "site_chance": {"mean": 0.14, "ci95": 0.0},
                "within_site_variability": {"mean": variability, "ci95": 0.01}}

    methods = {"ddae": row(0.30, 0.9), "combat": row(0.16, 0.95), "cvae": row(0.14, 0.3), "raw": row(0.7, 1.0)}
    text = reading(methods, HEADLINES["harmonize"])
    assert "worse than the best baseline, combat" in text and "cvae" not in text
    page = _section("harmonize", {"results": "harmonize/results.json"}, {"methods": methods}, Path("."))
    assert "<b>0.160 ± 0.010</b>" in page and "<b>0.140" not in page
    methods["ddae"] = row(0.14, 0.2)
    assert "ddae collapsed its images" in reading(methods, HEADLINES["harmonize"])


def test_rerun_resumes_from_the_first_unfinished_stage(smoke_demo, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(smoke_demo[0], out)
    shutil.rmtree(out / "engine")  # as if the demo had been interrupted during the engine stage
    (out / ".engine.x1y2.partial").mkdir()  # and killed outright, leaving atomic_dir's temporary folder
    result = cli.invoke(app, ["demo", "--out", str(out), "--smoke"])
    assert result.exit_code == 0, result.output
    assert "Resuming" in result.output and "4 of 5 stages are done" in result.output
    assert "[2/5]" in result.output and "[3/5]" not in result.output
    assert (out / "engine" / "results.json").exists() and not (out / ".engine.x1y2.partial").exists()
    # other settings in the same folder: refused with what to do, unless --overwrite
    result = cli.invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (out / "report.html").exists()
    # a folder of an earlier version (its cohorts and stages differ) is not resumed either
    state = json.loads((out / "demo.json").read_text())
    state["settings"].pop("revision")
    (out / "demo.json").write_text(json.dumps(state))
    result = cli.invoke(app, ["demo", "--out", str(out), "--smoke"])
    assert result.exit_code == 2 and "an earlier neurodiff version" in result.output


def test_foreign_or_full_folders_are_refused_untouched(tmp_path, monkeypatch):
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("precious")
    for extra in ([], ["--overwrite"]):
        result = cli.invoke(app, ["demo", "--out", str(foreign), "--smoke", *extra])
        assert result.exit_code == 2 and "not a demo output folder" in result.output
        assert [p.name for p in foreign.iterdir()] == ["chapter1.tex"]
    earlier = tmp_path / "demo-output"  # what the demo wrote before it could resume: only results.json
    earlier.mkdir()
    (earlier / "results.json").write_text('{"task": "demo"}')
    result = cli.invoke(app, ["demo", "--out", str(earlier), "--smoke"])
    assert result.exit_code == 2 and "an earlier demo's output" in result.output
    assert f"neurodiff demo --out {earlier} --smoke --overwrite" in result.output
    assert [p.name for p in earlier.iterdir()] == ["results.json"]
    monkeypatch.setattr(demo_runner, "MIN_FREE_BYTES", 1 << 62)
    result = cli.invoke(app, ["demo", "--out", str(tmp_path / "new"), "--smoke"])
    assert result.exit_code == 2 and "not enough disk space" in result.output and "free" in result.output
    assert not (tmp_path / "new").exists()


def test_a_failing_stage_names_its_log_and_how_to_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_runner, "stage_command",
                        lambda name, out, budget: ["impute", "benchmark", "--data", str(tmp_path / "missing.csv")])
    with pytest.raises(demo_runner.DemoError) as caught:
        demo_runner._run_command("impute", tmp_path, SMOKE, log=lambda line: None)
    message = str(caught.value)
    assert caught.value.exit_code == 1 and "missing.csv" in message
    assert str(tmp_path / "logs" / "impute.log") in message and "run the same command again" in message
    assert not (tmp_path / "impute").exists()


def test_an_interrupted_run_says_how_to_continue(tmp_path, monkeypatch):
    def interrupted(stage, out, budget, log):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_runner, "_run_stage", interrupted)
    result = cli.invoke(app, ["demo", "--out", str(tmp_path / "run"), "--smoke"])
    assert result.exit_code == 130
    assert "interrupted during the cohorts stage" in result.output and "Run the same command again" in result.output
    assert (tmp_path / "run" / "demo.json").exists() and not (tmp_path / "run" / "cohorts").exists()
