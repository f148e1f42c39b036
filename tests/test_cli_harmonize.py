import json
import re
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
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


def test_fit_prints_the_last_latent_and_site_sensitivities(tiny_image_cohort, tmp_path, monkeypatch):
    from neurodiff.methods import harmonization

    manifest, _, _ = tiny_image_cohort
    monkeypatch.setitem(harmonization.PRESETS, "quick", {**harmonization.PRESETS["quick"], "sensitivity_every": 1})
    result = _fit(manifest, tmp_path / "model")
    assert result.exit_code == 0, result.output
    printed = re.search(r"latent sensitivity ([0-9.e+-]+), site sensitivity ([0-9.e+-]+)\)", result.output)
    assert printed, result.output
    statistics = json.loads((tmp_path / "model" / "statistics.json").read_text())
    logged = statistics["training"]["site_sensitivity"]
    assert [entry["step"] for entry in logged] == [1, 2]
    assert printed.group(2) == f"{logged[-1]['value']:.3g}"


# ---------------------------------------------------------------- apply: provenance and --device

TINY = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,), head_channels=8,
            latent_dim=16, covariate_latent_dim=4, timesteps=100, ema_decay=None, batch_size=8, progress=False,
            sensitivity_every=0, max_steps=2)
APPLY_STEPS = ["--inversion-steps", "2", "--render-steps", "2"]


@pytest.fixture(scope="module")
def tiny_model(tiny_image_cohort, tmp_path_factory):
    """A tiny DDAE trained for two steps, saved (device cpu)."""
    from neurodiff.methods.harmonization import DisentangledDiffAE

    _, frame, images = tiny_image_cohort
    folder = tmp_path_factory.mktemp("tiny-ddae") / "model"
    DisentangledDiffAE(**TINY).fit(frame, images).save(folder)
    return folder


def _prepared(frame, folder):
    """A manifest laid out like `neurodiff preprocess` writes one: every slice called slice.nii.gz in its own
    folder, relative volume_path and brain_mask_path, source_path the absolute raw T1."""
    rows = []
    for i, k in enumerate([0, 1, len(frame) - 2, len(frame) - 1]):  # both sites
        row = frame.iloc[k]
        (folder / f"s{i}").mkdir(parents=True)
        shutil.copy(row["resolved_path"], folder / f"s{i}" / "slice.nii.gz")
        rows.append({"subject_id": row["subject_id"], "path": f"s{i}/slice.nii.gz", "age": row["age"],
                     "sex": row["sex"], "site": row["site"], "volume_path": f"s{i}/brain.nii.gz",
                     "brain_mask_path": f"s{i}/brain_mask.nii.gz", "source_path": f"/raw/s{i}_T1w.nii.gz"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def test_apply_keeps_the_original_scan_and_records_the_harmonised_input(tiny_image_cohort, tiny_model, tmp_path):
    _, frame, _ = tiny_image_cohort
    manifest = _prepared(frame, tmp_path / "prepared")
    out = tmp_path / "harmonised"
    result = runner.invoke(app, ["harmonize", "apply", "--model", str(tiny_model), "--manifest", str(manifest),
                                 "--target-site", "site0", "--out", str(out), *APPLY_STEPS])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out / "manifest.csv")
    prepared = (tmp_path / "prepared").resolve()
    assert list(written["source_path"]) == [f"/raw/s{i}_T1w.nii.gz" for i in range(4)]  # the raw T1, kept
    assert list(written["harmonized_from"]) == [str(prepared / f"s{i}" / "slice.nii.gz") for i in range(4)]
    assert list(written["volume_path"]) == [str(prepared / f"s{i}" / "brain.nii.gz") for i in range(4)]
    assert list(written["brain_mask_path"]) == [str(prepared / f"s{i}" / "brain_mask.nii.gz") for i in range(4)]
    # every input is called slice.nii.gz: the row number keeps the outputs apart
    assert written["path"].nunique() == 4 and all((out / p).is_file() for p in written["path"])


def test_apply_runs_on_the_device_asked_for_not_the_one_saved(tiny_image_cohort, tiny_model, tmp_path):
    manifest, _, _ = tiny_image_cohort
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    config["hyperparameters"]["device"] = "cuda"  # as if fitted on a GPU machine
    (model / "config.json").write_text(json.dumps(config))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        out = tmp_path / f"on-{device}"
        result = runner.invoke(app, ["harmonize", "apply", "--model", str(model), "--manifest", str(manifest),
                                     "--target-site", "site1", "--out", str(out), "--device", device, *APPLY_STEPS])
        assert result.exit_code == 0, result.output
        assert len(pd.read_csv(out / "manifest.csv")) == len(pd.read_csv(manifest))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_apply_refuses_a_missing_cuda_before_any_work(tiny_image_cohort, tiny_model, tmp_path):
    manifest, _, _ = tiny_image_cohort
    out = tmp_path / "harmonised"
    result = runner.invoke(app, ["harmonize", "apply", "--model", str(tiny_model), "--manifest", str(manifest),
                                 "--target-site", "site0", "--out", str(out), "--device", "cuda"])
    assert result.exit_code == 2 and "CUDA is not available" in result.output
    assert not out.exists()
