import nibabel as nib
import numpy as np
import pandas as pd
from typer.testing import CliRunner

from neurodiff.cli import app

runner = CliRunner()
STEPS = ["--steps", "2"]


def _fit(manifest, out):
    # the quick preset's network on 32×32 slices, two steps: enough to exercise the commands
    return runner.invoke(app, ["harmonize", "fit", "--manifest", str(manifest), "--quick", *STEPS, "--out", str(out)])


def test_fit_then_apply_writes_harmonised_nifti_and_manifest(tiny_image_cohort, tmp_path):
    manifest, frame, _ = tiny_image_cohort
    result = _fit(manifest, tmp_path / "model")
    assert result.exit_code == 0, result.output
    before = {p: p.read_bytes() for p in manifest.parent.rglob("*.nii.gz")}
    out = tmp_path / "harmonised"
    result = runner.invoke(app, ["harmonize", "apply", "--model", str(tmp_path / "model"), "--manifest", str(manifest),
                                 "--target-site", "site0", "--out", str(out), "--inversion-steps", "3",
                                 "--render-steps", "3"])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out / "manifest.csv")
    assert len(written) == len(frame) and set(written["harmonized_to"]) == {"site0"}
    first = nib.load(out / written["path"][0])
    source = nib.load(written["source_path"][0])
    assert first.shape == source.shape and np.allclose(first.affine, source.affine)
    assert {p: p.read_bytes() for p in manifest.parent.rglob("*.nii.gz")} == before  # inputs untouched


def test_apply_refuses_an_unseen_site_and_writes_nothing(tiny_image_cohort, tmp_path):
    manifest, _, _ = tiny_image_cohort
    assert _fit(manifest, tmp_path / "model").exit_code == 0
    out = tmp_path / "harmonised"
    result = runner.invoke(app, ["harmonize", "apply", "--model", str(tmp_path / "model"), "--manifest", str(manifest),
                                 "--target-site", "site5", "--out", str(out)])
    assert result.exit_code == 2 and "site5" in result.output and "site0, site1" in result.output
    assert not out.exists()


def test_fit_reports_a_missing_manifest(tmp_path):
    result = _fit(tmp_path / "nope.csv", tmp_path / "model")
    assert result.exit_code == 2 and "nope.csv" in result.output
    assert not (tmp_path / "model").exists()
