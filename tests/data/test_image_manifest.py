"""Reading image-cohort manifests and their NIfTI images; writing images like a reference."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurodiff.data.image_manifest import (
    ImageFileError,
    ManifestError,
    ManifestNotFoundError,
    load_images,
    read_manifest,
    save_like,
)
from neurodiff.data.synthetic_images import ImageCohortConfig, generate_image_cohort

AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])


def _nifti(path, data, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(data), affine)
    image.set_sform(affine, code="mni")
    nib.save(image, path)
    return path


def _image(seed: int, shape=(6, 5)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


@pytest.fixture
def cohort(tmp_path):
    """Three 6×5 slices (one stored as 6×5×1) and a manifest beside them."""
    for i in range(3):
        _nifti(tmp_path / "images" / f"s{i}.nii.gz", _image(i, (6, 5, 1) if i == 1 else (6, 5)))
    frame = pd.DataFrame({
        "subject_id": ["001", "002", "003"],
        "path": [f"images/s{i}.nii.gz" for i in range(3)],
        "age": [30.5, 41, 77],
        "sex": ["F", "M", "F"],
        "site": ["1", "2", "1"],
    })
    manifest = tmp_path / "manifest.csv"
    frame.to_csv(manifest, index=False)
    return manifest, frame


def _write(manifest, frame):
    frame.to_csv(manifest, index=False)
    return manifest


# ---------------------------------------------------------------- read_manifest


def test_read_manifest_resolves_paths_and_leaves_the_file_alone(cohort, tmp_path):
    manifest, _ = cohort
    before = manifest.read_bytes()
    frame = read_manifest(manifest)
    assert manifest.read_bytes() == before
    assert frame["resolved_path"].tolist() == [str((tmp_path / f"images/s{i}.nii.gz").resolve()) for i in range(3)]
    assert all(os.path.isabs(p) for p in frame["resolved_path"])
    assert frame["subject_id"].tolist() == ["001", "002", "003"]  # ids and sites stay text
    assert frame["site"].tolist() == ["1", "2", "1"]
    assert frame["age"].dtype == np.float64


def test_absolute_image_paths_are_allowed(cohort, tmp_path):
    _, frame = cohort
    frame = frame.assign(path=[str(tmp_path / p) for p in frame["path"]])
    elsewhere = tmp_path / "other" / "manifest.csv"
    elsewhere.parent.mkdir()
    assert read_manifest(_write(elsewhere, frame))["resolved_path"].iloc[2] == str(tmp_path / "images/s2.nii.gz")


def test_missing_manifest_file(tmp_path):
    with pytest.raises(ManifestNotFoundError, match=r"manifest .*nope\.csv does not exist"):
        read_manifest(tmp_path / "nope.csv")


def test_missing_column_suggests_a_close_name(cohort):
    manifest, frame = cohort
    _write(manifest, frame.rename(columns={"age": "Age"}))
    with pytest.raises(ManifestError, match=r"manifest .*manifest\.csv has no column 'age'.*did you mean 'Age'"):
        read_manifest(manifest)


def test_custom_path_column_is_required(cohort):
    manifest, _ = cohort
    with pytest.raises(ManifestError, match="no column 'volume_path'"):
        read_manifest(manifest, path_column="volume_path")


def test_empty_manifest(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ManifestError, match=r"empty\.csv is empty"):
        read_manifest(empty)
    empty.write_text("subject_id,path,age,sex,site\n")
    with pytest.raises(ManifestError, match="has a header but no rows"):
        read_manifest(empty)


def test_missing_value_names_column_row_and_subject(cohort):
    manifest, frame = cohort
    frame.loc[1, "sex"] = None
    _write(manifest, frame)
    with pytest.raises(ManifestError, match=r"column 'sex' has no value in row 3 \(subject '002'\)"):
        read_manifest(manifest)


def test_a_subject_or_site_called_na_is_a_name_not_a_missing_value(cohort):
    manifest, frame = cohort
    _write(manifest, frame.assign(subject_id=["NA", "null", "003"], site=["NA", "None", "1"]))
    read = read_manifest(manifest)
    assert read["subject_id"].tolist() == ["NA", "null", "003"] and read["site"].tolist() == ["NA", "None", "1"]
    frame.loc[1, "site"] = None  # an empty cell is still missing
    _write(manifest, frame)
    with pytest.raises(ManifestError, match=r"column 'site' has no value in row 3"):
        read_manifest(manifest)


def test_non_numeric_age(cohort):
    manifest, frame = cohort
    frame["age"] = frame["age"].astype(object)
    frame.loc[2, "age"] = "seventy"
    _write(manifest, frame)
    with pytest.raises(ManifestError, match=r"age 'seventy' in row 4 \(subject '003'\) is not a number"):
        read_manifest(manifest)


def test_missing_image_is_named_with_where_it_was_looked_for(cohort, tmp_path):
    manifest, frame = cohort
    frame.loc[0, "path"] = "images/gone.nii.gz"
    _write(manifest, frame)
    with pytest.raises(ManifestNotFoundError, match=r"image 'images/gone\.nii\.gz' in row 2 .*does not exist") as info:
        read_manifest(manifest)
    assert str(tmp_path.resolve() / "images" / "gone.nii.gz") in str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


def test_duplicate_paths(cohort):
    manifest, frame = cohort
    frame.loc[2, "path"] = "./images/s0.nii.gz"  # the same file, spelled differently
    _write(manifest, frame)
    with pytest.raises(ManifestError, match=r"row 2 \(subject '001'\) and row 4 \(subject '003'\) name the same image"):
        read_manifest(manifest)


# ---------------------------------------------------------------- load_images


def test_load_images_squeezes_to_one_channel_and_keeps_affines(cohort):
    manifest, _ = cohort
    frame = read_manifest(manifest)
    before = frame.copy()
    images, affines = load_images(frame, spatial_dims=2)
    assert images.shape == (3, 1, 6, 5) and images.dtype == np.float32
    for i in range(3):
        np.testing.assert_array_equal(images[i, 0], _image(i))
        np.testing.assert_allclose(affines[i], AFFINE)
    pd.testing.assert_frame_equal(frame, before)


def test_load_images_3d(tmp_path):
    paths = [_nifti(tmp_path / f"v{i}.nii", _image(i, (4, 3, 2, 1))) for i in range(2)]
    images, affines = load_images(pd.DataFrame({"resolved_path": paths}), progress=True)
    assert images.shape == (2, 1, 4, 3, 2) and len(affines) == 2
    with pytest.raises(ImageFileError, match=r"v0\.nii is 3D \(shape \(4, 3, 2, 1\)\), expected 2D"):
        load_images(pd.DataFrame({"resolved_path": paths}), spatial_dims=2)


def test_images_of_different_shapes(tmp_path):
    a = _nifti(tmp_path / "a.nii.gz", _image(0))
    b = _nifti(tmp_path / "b.nii.gz", _image(1, (6, 4)))
    expected = r"b\.nii\.gz has shape \(6, 4\), but the first image .*a\.nii\.gz has shape \(6, 5\)"
    with pytest.raises(ImageFileError, match=expected):
        load_images(pd.DataFrame({"resolved_path": [a, b]}))


def test_non_finite_voxels(tmp_path):
    data = _image(0)
    data[2, 3] = np.nan
    path = _nifti(tmp_path / "nan.nii.gz", data)
    expected = r"nan\.nii\.gz has 1 NaN or infinite voxel\(s\) \(first at index \(2, 3\)\)"
    with pytest.raises(ImageFileError, match=expected):
        load_images(pd.DataFrame({"resolved_path": [path]}))


def test_corrupt_and_missing_files(tmp_path):
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"this is not a NIfTI file")
    with pytest.raises(ImageFileError, match=r"corrupt\.nii\.gz"):
        load_images(pd.DataFrame({"resolved_path": [corrupt]}))
    truncated = _nifti(tmp_path / "truncated.nii", _image(0, (20, 20)))
    truncated.write_bytes(truncated.read_bytes()[:600])
    with pytest.raises(ImageFileError, match=r"truncated\.nii"):
        load_images(pd.DataFrame({"resolved_path": [truncated]}))
    with pytest.raises(ManifestNotFoundError, match=r"image .*gone\.nii does not exist"):
        load_images(pd.DataFrame({"resolved_path": [tmp_path / "gone.nii"]}))


def test_wrong_dimensionality_and_missing_column(tmp_path):
    path = _nifti(tmp_path / "4d.nii", _image(0, (3, 3, 3, 2)))
    with pytest.raises(ImageFileError, match=r"4d\.nii has shape \(3, 3, 3, 2\): expected a 2D or 3D image"):
        load_images(pd.DataFrame({"resolved_path": [path]}))
    with pytest.raises(ManifestError, match="no column 'resolved_path'; read the manifest with read_manifest"):
        load_images(pd.DataFrame({"path": [path]}))
    with pytest.raises(ManifestError, match="no rows"):
        load_images(pd.DataFrame({"resolved_path": []}))


# ---------------------------------------------------------------- save_like


def test_save_like_keeps_affine_and_header(tmp_path):
    reference = tmp_path / "in.nii.gz"
    source = nib.Nifti1Image((_image(0, (6, 5, 1)) * 1000).astype(np.int16), AFFINE)
    source.set_sform(AFFINE, code="mni")
    source.set_qform(AFFINE, code="scanner")
    source.header.set_xyzt_units("mm")
    nib.save(source, reference)
    before = reference.read_bytes()
    data = _image(7)[None]  # (1, 6, 5), as load_images gives
    out = save_like(data, reference, tmp_path / "out" / "harmonised.nii.gz")
    assert reference.read_bytes() == before
    written = nib.load(out)
    assert written.shape == (6, 5, 1) and written.get_data_dtype() == np.float32
    np.testing.assert_allclose(written.affine, AFFINE)
    np.testing.assert_array_equal(written.get_fdata(dtype=np.float32)[..., 0], data[0])
    header, ref_header = written.header, nib.load(reference).header
    for field in ("dim", "pixdim", "sform_code", "qform_code", "xyzt_units"):
        np.testing.assert_array_equal(header[field], ref_header[field])
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind
    plain = save_like(data, reference, tmp_path / "plain.nii")
    assert nib.load(plain).shape == (6, 5, 1)


def test_save_like_refuses_the_reference_and_bad_data(tmp_path):
    reference = _nifti(tmp_path / "in.nii.gz", _image(0))
    before = reference.read_bytes()
    with pytest.raises(ImageFileError, match="refusing to overwrite the reference image"):
        save_like(_image(1), reference, tmp_path / "." / "in.nii.gz")
    with pytest.raises(ImageFileError, match=r"cannot write data shaped \(4, 4\) like reference .* shaped \(6, 5\)"):
        save_like(np.zeros((4, 4)), reference, tmp_path / "out.nii.gz")
    with pytest.raises(ImageFileError, match=r"must end in \.nii or \.nii\.gz"):
        save_like(_image(1), reference, tmp_path / "out.png")
    bad = _image(1)
    bad[0, 0] = np.inf
    with pytest.raises(ImageFileError, match="1 NaN or infinite"):
        save_like(bad, reference, tmp_path / "out.nii.gz")
    assert reference.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz"]


# ---------------------------------------------------------------- a real synthetic cohort


def test_reads_a_synthetic_cohort(tmp_path):
    config = ImageCohortConfig(n_controls=3, n_travellers=1, n_patients=2, n_sites=2, size=32)
    generate_image_cohort(config, tmp_path / "cohort", progress=False)
    frame = read_manifest(tmp_path / "cohort" / "manifest.csv")
    images, affines = load_images(frame, spatial_dims=2)
    assert images.shape == (len(frame), 1, 32, 32)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert all(a.shape == (4, 4) for a in affines)
