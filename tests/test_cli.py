import json

from typer.testing import CliRunner

from neurodiff import __version__
from neurodiff.cli import app

runner = CliRunner()


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"neurodiff {__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("synth", "preprocess", "impute", "harmonize", "normative", "demo"):
        assert group in result.output
    assert "not built yet" not in runner.invoke(app, ["synth", "--help"]).output


def test_demo_quick_writes_results(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--quick"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    assert doc["task"] == "demo" and doc["checks"]["save_load_identical_samples"] is True
    methods = doc["methods"]
    assert set(methods) >= {"engine/diffusion_ddpm100", "engine/diffusion_ddim20", "engine/gaussian_baseline"}
    # the diffusion model captures the ring; a Gaussian cannot (its ring error is ~0.39)
    assert methods["engine/diffusion_ddpm100"]["ring_error"]["mean"] < 0.2
    assert methods["engine/gaussian_baseline"]["ring_error"]["mean"] > 0.3
    assert (out / "engine_ring.png").stat().st_size > 10_000
    assert (out / "cohort_traveller.png").stat().st_size > 10_000
    assert doc["cohorts"]["image_sites"] == 7 and (out / "synthetic-images" / "manifest.csv").exists()
    assert doc["cohorts"]["table_subjects"] == 3000
    assert "not built yet" in result.output.lower()
    # a second run replaces the earlier demo output; a foreign folder is refused untouched
    assert runner.invoke(app, ["demo", "--out", str(out), "--quick"]).exit_code == 0
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("precious")
    result = runner.invoke(app, ["demo", "--out", str(foreign), "--quick"])
    assert result.exit_code == 2 and "not an earlier demo output" in result.output
    assert (foreign / "chapter1.tex").read_text() == "precious"
