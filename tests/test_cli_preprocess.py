"""`neurodiff preprocess` end to end on real heads with skull: pycortex's S1 and two distorted copies.

One run (two jobs in parallel), in a folder where a killed run left a half-written subject, preprocesses
S1 as shipped, S1 rotated / rescaled / shifted on a 1.3 mm grid in another axis order with a bias field
and other intensity units, S1 also mildly warped on a 1.5 mm grid, and a corrupt file. The tests then
read what a user gets on disk.
"""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from neurodiff.cli import app
from neurodiff.data.image_manifest import load_images, read_manifest
from neurodiff.data.preprocess import slice_affine

from .data.real_heads import VARIANTS, affine_matrix, dice, distort, s1_head

runner = CliRunner()


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    """The input folder (manifest + NIfTI files), the known transforms and reference masks."""
    folder = tmp_path_factory.mktemp("heads") / "scans"
    folder.mkdir()
    head = s1_head()
    nib.save(head.image, folder / "S1.nii.gz")
    truth = {"S1": dict(transform=np.eye(4), reference=head.reference, region=head.region)}
    centre = nib.affines.apply_affine(head.image.affine, (np.asarray(head.image.shape) - 1) / 2)
    for name in ("moved", "warped"):
        spec = VARIANTS[name]
        transform = affine_matrix(spec["rotation"], spec["scale"], spec["shift"], centre)
        image, reference, region, _ = distort(head, transform=transform, seed=1, **spec["options"])
        nib.save(image, folder / f"{name}.nii.gz")
        truth[name] = dict(transform=transform, reference=reference, region=region)
    (folder / "broken.nii.gz").write_bytes((folder / "S1.nii.gz").read_bytes()[:5000])
    pd.DataFrame({
        "subject_id": ["S1", "moved", "warped", "broken"],
        "path": ["S1.nii.gz", "moved.nii.gz", "warped.nii.gz", "broken.nii.gz"],
        "age": [34, 35, 36, 37], "sex": ["F", "M", "F", "M"], "site": ["A", "B", "A", "B"],
        "group": ["control"] * 4,
    }).to_csv(folder / "manifest.csv", index=False)
    return folder, truth


@pytest.fixture(scope="module")
def processed(heads, tmp_path_factory):
    folder, _ = heads
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out = tmp_path_factory.mktemp("prepared") / "out"
    # what a killed run leaves behind: warped's temporary folder, half written (the re-run must remove it)
    partial = out / ".warped.abc123.partial"
    partial.mkdir(parents=True)
    (partial / "brain.nii.gz").write_bytes(b"half")
    result = runner.invoke(app, ["preprocess", "--manifest", str(folder / "manifest.csv"), "--out", str(out),
                                 "--jobs", "2"])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # inputs untouched
    return out, result


def test_a_corrupt_file_fails_alone_and_the_exit_status_says_so(processed):
    out, result = processed
    assert result.exit_code == 1, result.output
    assert "3 subject(s) preprocessed" in result.output and "1 failed" in result.output
    failures = pd.read_csv(out / "failures.csv")
    assert failures["subject_id"].tolist() == ["broken"]
    assert "broken.nii.gz" in failures["error"][0]
    assert not (out / "broken").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folders left


@pytest.mark.parametrize("name", ["S1", "moved", "warped"])
def test_brain_mask_matches_the_pial_surface_reference_in_native_space(processed, heads, name):
    out, _ = processed
    folder, truth = heads
    mask_image = nib.load(out / name / "native_brain_mask.nii.gz")
    source = nib.load(folder / f"{name}.nii.gz")
    assert mask_image.shape == source.shape and np.allclose(mask_image.affine, source.affine)
    mask = np.asarray(mask_image.dataobj) > 0
    score = dice(mask, truth[name]["reference"], truth[name]["region"])
    assert score >= 0.90, f"{name}: Dice {score:.3f}"


def test_registration_of_a_moved_head_agrees_with_the_known_affine_within_2mm(processed, heads):
    """S1 moved by a known affine A: its registration must equal S1's composed with A⁻¹."""
    out, _ = processed
    _, truth = heads
    s1 = np.loadtxt(out / "S1" / "native_to_template.txt")
    moved = np.loadtxt(out / "moved" / "native_to_template.txt")
    expected = s1 @ np.linalg.inv(truth["moved"]["transform"])
    head = s1_head()
    points = nib.affines.apply_affine(head.image.affine, np.argwhere(head.reference)[::20])
    points = nib.affines.apply_affine(truth["moved"]["transform"], points)  # brain points of the moved head
    error = np.linalg.norm(nib.affines.apply_affine(moved, points) - nib.affines.apply_affine(expected, points), axis=1)
    assert error.max() < 2.0, f"mean {error.mean():.2f} mm, max {error.max():.2f} mm"


def test_outputs_follow_the_layout_and_feed_the_image_cohort_contract(processed):
    out, _ = processed
    for name in ("S1", "moved", "warped"):
        for file in ("brain.nii.gz", "brain_mask.nii.gz", "native_brain_mask.nii.gz", "slice.nii.gz",
                     "template_to_native.tfm", "native_to_template.txt", "qc.png", "preprocess.json"):
            assert (out / name / file).is_file(), f"{name}/{file} missing"
    brain = nib.load(out / "S1" / "brain.nii.gz")
    assert brain.shape == (130, 130, 130) and np.allclose(np.abs(np.diag(brain.affine)[:3]), 1.5)
    data = np.asarray(brain.dataobj)
    assert data.min() == 0.0 and data.max() == 1.0
    slice_image = nib.load(out / "S1" / "slice.nii.gz")
    assert slice_image.shape == (128, 128, 1) and np.allclose(slice_image.affine, slice_affine(22.0))
    native = nib.load(out / "S1" / "native_brain_mask.nii.gz")
    for image, space in ((brain, 4), (slice_image, 4), (native, 1)):  # MNI152 / scanner, in mm, as tools read it
        assert int(image.header["sform_code"]) == int(image.header["qform_code"]) == space
        assert image.header.get_xyzt_units()[0] == "mm"
    record = json.loads((out / "S1" / "preprocess.json").read_text())
    assert 1100 < record["brain_volume_ml"] < 1700 and record["settings"]["skull_strip"] == "template"
    assert (out / "S1" / "qc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    frame = read_manifest(out / "manifest.csv")  # the image-cohort contract: subject_id, path, age, sex, site
    assert frame["subject_id"].tolist() == ["S1", "moved", "warped"]
    assert frame["group"].tolist() == ["control"] * 3 and frame["age"].tolist() == [34, 35, 36]
    images, _ = load_images(frame, spatial_dims=2)
    assert images.shape == (3, 1, 128, 128)
    # the three slices show the same anatomy: registration put them on one grid
    flat = images.reshape(3, -1)
    assert np.corrcoef(flat)[0, 1:].min() > 0.8


def test_a_rerun_skips_finished_subjects_and_refuses_other_settings(processed, heads, tmp_path):
    out, _ = processed
    folder, _ = heads
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    stamps = {p: p.stat().st_mtime_ns for p in (copy / "S1").iterdir()}
    manifest = folder / "manifest.csv"
    result = runner.invoke(app, ["preprocess", "--manifest", str(manifest), "--out", str(copy)])
    assert result.exit_code == 1 and "3 already done (skipped)" in result.output
    assert {p: p.stat().st_mtime_ns for p in (copy / "S1").iterdir()} == stamps
    result = runner.invoke(app, ["preprocess", "--manifest", str(manifest), "--out", str(copy), "--slices", "3"])
    assert result.exit_code == 1 and "other settings" in result.output and "--overwrite" in result.output
    assert {p: p.stat().st_mtime_ns for p in (copy / "S1").iterdir()} == stamps


def test_manifest_problems_are_errors_that_name_them(tmp_path):
    (tmp_path / "m.csv").write_text("subject,path\nS1,a.nii.gz\n")
    result = runner.invoke(app, ["preprocess", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no column 'subject_id'" in result.output and "'subject'" in result.output
    (tmp_path / "d.csv").write_text("subject_id,path\nS1,a.nii.gz\nS1,b.nii.gz\n")
    result = runner.invoke(app, ["preprocess", "--manifest", str(tmp_path / "d.csv"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "rows 2, 3" in result.output and "session" in result.output
    assert not (tmp_path / "o").exists()


def test_bad_rows_fail_alone_with_their_reason(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 4), np.float32), np.eye(4)), folder / "series.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)), folder / "empty.nii.gz")
    (folder / "notes.txt").write_text("hello")
    pd.DataFrame({
        "subject_id": ["series", "empty", "text", "outside", "missing", "../bad"],
        "path": ["series.nii.gz", "empty.nii.gz", "notes.txt", "../elsewhere/x.nii.gz", "none.nii.gz", "x.nii.gz"],
    }).to_csv(folder / "manifest.csv", index=False)
    out = tmp_path / "out"
    result = runner.invoke(app, ["preprocess", "--manifest", str(folder / "manifest.csv"), "--out", str(out)])
    assert result.exit_code == 1 and "6 failed" in result.output
    errors = dict(pd.read_csv(out / "failures.csv")[["subject_id", "error"]].itertuples(index=False))
    assert "4D" in errors["series"] and "empty" in errors["empty"] and "not a NIfTI" in errors["text"]
    assert "outside the manifest's folder" in errors["outside"] and "does not exist" in errors["missing"]
    assert "cannot name a folder" in errors["../bad"]
    assert not (out / "manifest.csv").exists()


def test_a_killed_runs_temporary_folder_is_removed_and_the_subject_redone(processed):
    """The fixture's run started in a folder where a killed run had left warped half written."""
    out, _ = processed
    assert not (out / ".warped.abc123.partial").exists()
    assert nib.load(out / "warped" / "brain.nii.gz").shape == nib.load(out / "S1" / "brain.nii.gz").shape
    assert "warped" in pd.read_csv(out / "manifest.csv")["subject_id"].tolist()
