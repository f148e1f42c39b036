"""3D volumes end to end through the command line: synth --volumes → harmonize fit/apply and
normative fit/score (with deviation maps)/survival, on 32³ volumes of the real MNI152 anatomy."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from neurodiff.cli import app
from neurodiff.methods.harmonization import DisentangledDiffAE

runner = CliRunner()


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    from neurodiff.data.synthetic_images import ImageCohortConfig, generate_image_cohort

    folder = tmp_path_factory.mktemp("volumes") / "cohort"
    config = ImageCohortConfig.quick(size=32, n_sites=2, n_controls=12, n_travellers=1, n_patients=5, volumes=True)
    generate_image_cohort(config, folder, progress=False)
    return folder


def test_synth_writes_a_manifest_of_the_volumes(volumes):
    slices, vols = pd.read_csv(volumes / "manifest.csv"), pd.read_csv(volumes / "manifest-3d.csv")
    assert list(vols["path"]) == list(slices["volume_path"]) and "volume_path" not in vols.columns
    travellers = vols[vols["true_traveller_id"].notna()]
    assert len(travellers) == 2 and travellers["true_reference_path"].str.startswith("volumes/").all()
    assert nib.load(volumes / vols["path"][0]).shape == (32, 32, 32)


def test_harmonize_fit_and_apply_on_volumes(volumes, tmp_path):
    manifest = volumes / "manifest-3d.csv"
    result = runner.invoke(app, ["harmonize", "fit", "--manifest", str(manifest), "--quick", "--steps", "2",
                                 "--out", str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    assert "quick3d preset" in result.output
    assert DisentangledDiffAE.load(tmp_path / "model").image_shape_ == (1, 32, 32, 32)
    result = runner.invoke(app, ["harmonize", "apply", "--model", str(tmp_path / "model"), "--manifest",
                                 str(manifest), "--target-site", "site0", "--out", str(tmp_path / "harmonised"),
                                 "--inversion-steps", "2", "--render-steps", "2"])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(tmp_path / "harmonised" / "manifest.csv")
    first, source = nib.load(tmp_path / "harmonised" / written["path"][0]), nib.load(written["source_path"][0])
    assert first.shape == (32, 32, 32) and np.allclose(first.affine, source.affine)
    assert np.isfinite(first.get_fdata()).all()


def test_normative_fit_score_maps_and_survival_on_volumes(volumes, tmp_path):
    manifest = volumes / "manifest-3d.csv"
    result = runner.invoke(app, ["normative", "fit", "--manifest", str(manifest), "--controls-only", "--quick",
                                 "--steps", "2", "--calibration-fraction", "0.45", "--out", str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["normative", "score", "--model", str(tmp_path / "model"), "--manifest", str(manifest),
                                 "--out", str(tmp_path / "scores")])
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(tmp_path / "scores" / "scores.csv")
    assert len(scores) == 19 and np.isfinite(scores["similarity"]).all()
    # deviation maps (partial DDIM denoising of each volume) for two of them
    pd.read_csv(manifest).iloc[[0, -1]].to_csv(volumes / "two.csv", index=False)
    result = runner.invoke(app, ["normative", "score", "--model", str(tmp_path / "model"), "--manifest",
                                 str(volumes / "two.csv"), "--out", str(tmp_path / "maps"), "--maps"])
    assert result.exit_code == 0, result.output
    maps = sorted((tmp_path / "maps" / "maps").iterdir())
    reference = nib.load(volumes / pd.read_csv(manifest)["path"].iloc[0])
    assert len(maps) == 2 and nib.load(maps[0]).shape == (32, 32, 32)
    assert np.allclose(nib.load(maps[0]).affine, reference.affine)
    result = runner.invoke(app, ["normative", "survival", "--scores", str(tmp_path / "scores" / "scores.csv"),
                                 "--out", str(tmp_path / "survival")])
    assert result.exit_code == 0, result.output
    assert "C-index" in result.output


@pytest.mark.parametrize("group", ["harmonize", "normative"])
def test_benchmarks_refuse_volumes_before_any_work(volumes, tmp_path, group):
    result = runner.invoke(app, [group, "benchmark", "--manifest", str(volumes / "manifest-3d.csv"), "--quick",
                                 "--seeds", "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "names 3D volumes" in result.output and f"`{group} fit`" in result.output
    assert not (tmp_path / "out").exists()
