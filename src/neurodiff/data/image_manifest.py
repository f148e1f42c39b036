"""Reading an image cohort (ARCHITECTURE.md "Image cohort"): the manifest CSV and its NIfTI images.

A manifest has one row per image: ``subject_id, path`` (NIfTI, relative to the manifest's folder or
absolute), ``age, sex, site`` and optional columns (``group``, ``time``, ``event``, ``session``,
``volume_path``, ...). :func:`read_manifest` checks it and adds the absolute ``resolved_path``;
:func:`load_images` stacks the images into a float32 array shaped ``(N, 1, *spatial)`` with their
affines; :func:`save_like` writes an output image (e.g. a harmonised one) with the affine and header of
its input. Every problem is an error that names the file, column, row or value at fault.
"""

from __future__ import annotations

import difflib
import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from neurodiff.atomic import atomic_path

#: The columns every image-cohort manifest must have.
REQUIRED_COLUMNS = ("subject_id", "path", "age", "sex", "site")

#: Columns read as text whatever they look like (a site called "1" stays "1"; ids and sessions keep
#: leading zeros: session 01 names the folder sub-1_ses-01).
_TEXT_COLUMNS = ("subject_id", "site", "path", "volume_path", "session")
#: What pandas reads as missing by default (its documented ``na_values``), kept for the other columns.
_PANDAS_NA_VALUES = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")


class ManifestError(ValueError):
    """A manifest, or an image it names, is missing, malformed or inconsistent."""


class ManifestNotFoundError(ManifestError, FileNotFoundError):
    """The manifest file, or an image file it names, does not exist."""


class ImageFileError(ManifestError):
    """An image cannot be read, has the wrong shape or dimensionality, or holds NaN / infinite voxels."""


# ---------------------------------------------------------------- manifest


def read_manifest(
    path: str | os.PathLike,
    *,
    required: Sequence[str] = REQUIRED_COLUMNS,
    path_column: str = "path",
    check_images: bool = True,
) -> pd.DataFrame:
    """Read and check a manifest CSV; return it with an absolute ``resolved_path`` column added.

    Parameters
    ----------
    path
        The manifest CSV. Image paths in it are relative to its folder, or absolute.
    required
        Columns that must exist and have a value in every row.
    path_column
        The column holding the image paths (``"volume_path"`` for the 3D volumes of a synthetic cohort).
    check_images
        Check that every image exists (turn off to report missing images one by one yourself).

    Raises
    ------
    ManifestNotFoundError
        The manifest, or an image it names, does not exist.
    ManifestError
        A required column is missing or has an empty value, the manifest has no rows, an age is not a
        number, or two rows name the same image.
    """
    path = Path(path)
    frame = _read_csv(path)
    needed = list(dict.fromkeys([*required, path_column]))
    _require_columns(frame, needed, path)
    if frame.empty:
        raise ManifestError(f"manifest {path} has a header but no rows")
    for column in needed:
        _no_missing(frame, column, path)
    if "age" in frame.columns:
        frame["age"] = _numeric_age(frame, path)
    frame["resolved_path"] = resolve_paths(frame, path_column, path)
    _no_duplicate_paths(frame, path_column, path)
    if check_images:
        _images_exist(frame, path_column, path)
    return frame


def cohort_fingerprint(frame: pd.DataFrame, images: np.ndarray) -> str:
    """SHA-256 of the images and of the manifest's columns other than file paths (any column whose name ends
    in ``path``: ``path``, ``volume_path`` and the ``resolved_path`` :func:`read_manifest` adds): equal for the
    same cohort read twice or from another folder, different when any image, value, row order or column
    differs (``harmonize merge`` and ``normative merge`` check it)."""
    import hashlib

    digest = hashlib.sha256()
    for column in sorted(c for c in frame.columns if not str(c).endswith("path")):
        digest.update(f"{column}\x1e".encode())
        digest.update("\x1f".join(frame[column].astype(str)).encode())
    data = np.ascontiguousarray(images, dtype=np.float32)
    digest.update(str(data.shape).encode())
    digest.update(data.tobytes())
    return digest.hexdigest()


def missing_manifest_message(path: Path) -> str:
    """What to do when a manifest is not where the user said: a folder given instead of its CSV, a
    typo, or no manifest yet."""
    if path.is_dir():
        inside = path / "manifest.csv"
        if inside.is_file():
            return f"{path} is a folder; give the manifest file inside it: {inside}"
        return (f"{path} is a folder, not a manifest CSV. Write a manifest (one row per image: subject_id, path "
                "and covariates; see docs/workflow-harmonise-t1-folder.md) and give its file name")
    return (f"manifest {path} does not exist. Check the path (it is relative to the current folder "
            f"{Path.cwd()}), or write one: a CSV with one row per image (subject_id, path and covariates; see "
            "docs/workflow-harmonise-t1-folder.md). To try the tools first, `neurodiff synth images --quick "
            "--out example` writes an example cohort with example/manifest.csv")


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ManifestNotFoundError(missing_manifest_message(path))
    try:
        header = pd.read_csv(path, nrows=0)
        text = {column: str for column in _TEXT_COLUMNS if column in header.columns}
        # in the text columns only an empty cell is missing: a site or subject called "NA" or "null" is a name
        missing = {column: [""] if column in text else list(_PANDAS_NA_VALUES) for column in header.columns}
        return pd.read_csv(path, dtype=text, keep_default_na=False, na_values=missing)
    except pd.errors.EmptyDataError as error:
        raise ManifestError(f"manifest {path} is empty (not even a header line)") from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ManifestError(f"cannot read manifest {path} as CSV: {error}") from error


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], source: Path) -> None:
    present = [str(c) for c in frame.columns]
    for column in columns:
        if column not in frame.columns:
            close = difflib.get_close_matches(column, present, n=3, cutoff=0.6)
            close += [c for c in present if c.lower() == column.lower() and c not in close]
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ManifestError(
                f"manifest {source} has no column {column!r} (columns: {', '.join(present)}){hint}"
            )


def _row(frame: pd.DataFrame, position: int) -> str:
    """'row 5 (subject 'sub-003')': rows counted like a spreadsheet, the header being row 1."""
    where = f"row {position + 2}"
    if "subject_id" in frame.columns:
        subject = frame["subject_id"].iloc[position]
        if not pd.isna(subject):
            where += f" (subject {subject!r})"
    return where


def _blank(values: pd.Series) -> np.ndarray:
    text = values.astype("string").str.strip()
    return (values.isna() | (text == "")).to_numpy(dtype=bool)


def _no_missing(frame: pd.DataFrame, column: str, source: Path) -> None:
    blank = _blank(frame[column])
    if blank.any():
        first = int(np.flatnonzero(blank)[0])
        raise ManifestError(
            f"manifest {source}: column {column!r} has no value in {_row(frame, first)}"
            f" ({int(blank.sum())} empty row(s) in all)"
        )


def _numeric_age(frame: pd.DataFrame, source: Path) -> pd.Series:
    age = pd.to_numeric(frame["age"], errors="coerce")
    bad = ~np.isfinite(age.to_numpy(dtype=float)) & ~_blank(frame["age"])
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ManifestError(
            f"manifest {source}: age {frame['age'].iloc[first]!r} in {_row(frame, first)} is not a number"
        )
    return age.astype(float)


def resolve_paths(frame: pd.DataFrame, column: str, source: Path) -> pd.Series:
    """`column`'s paths made absolute, relative ones against the folder of the manifest `source`;
    empty cells stay as they are."""
    folder = Path(source).resolve().parent
    resolved = []
    for value, blank in zip(frame[column], _blank(frame[column])):
        image = Path(str(value).strip()).expanduser()
        resolved.append(value if blank else str((image if image.is_absolute() else folder / image).resolve()))
    return pd.Series(resolved, index=frame.index, dtype=object)


def _no_duplicate_paths(frame: pd.DataFrame, column: str, source: Path) -> None:
    duplicated = frame["resolved_path"].duplicated(keep=False).to_numpy()
    if duplicated.any():
        rows = np.flatnonzero(duplicated)
        first = rows[0]
        second = next(r for r in rows[1:] if frame["resolved_path"].iloc[r] == frame["resolved_path"].iloc[first])
        raise ManifestError(
            f"manifest {source}: {_row(frame, first)} and {_row(frame, second)} name the same image "
            f"{frame[column].iloc[first]!r}; each image may appear once"
        )


def _images_exist(frame: pd.DataFrame, column: str, source: Path) -> None:
    for position, resolved in enumerate(frame["resolved_path"]):
        if not Path(resolved).is_file():
            raise ManifestNotFoundError(
                f"manifest {source}: image {frame[column].iloc[position]!r} in {_row(frame, position)} "
                f"does not exist (looked for {resolved})"
            )


# ---------------------------------------------------------------- images


def load_images(
    manifest: pd.DataFrame,
    *,
    path_column: str = "resolved_path",
    spatial_dims: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Load every image of a manifest into one float32 array shaped ``(N, 1, *spatial)``.

    Trailing dimensions of size 1 are dropped, so a 2D slice stored as ``(H, W)`` or ``(H, W, 1)``
    becomes ``(1, H, W)``. All images must have the same shape and only finite voxels.

    Parameters
    ----------
    manifest
        A frame from :func:`read_manifest` (or any frame with absolute paths in `path_column`).
    path_column
        The column holding the image paths.
    spatial_dims
        2 or 3 to require that dimensionality; None accepts either (but the same for all images).
    progress
        Show a progress bar.

    Returns
    -------
    images, affines
        The stacked images and each image's 4×4 affine (float64).
    """
    if spatial_dims not in (None, 2, 3):
        raise ValueError(f"spatial_dims must be 2, 3 or None, not {spatial_dims!r}")
    if path_column not in manifest.columns:
        hint = "; read the manifest with read_manifest() first" if path_column == "resolved_path" else ""
        raise ManifestError(f"the manifest has no column {path_column!r}{hint}")
    paths = [str(p) for p in manifest[path_column]]
    if not paths:
        raise ManifestError("the manifest has no rows: no images to load")
    bar = tqdm(total=len(paths), desc="load images", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        first, affine = _load_one(paths[0], spatial_dims)
        images = np.empty((len(paths), 1, *first.shape), dtype=np.float32)
        images[0, 0], affines = first, [affine]
        bar.update(1)
        for index, path in enumerate(paths[1:], start=1):
            data, affine = _load_one(path, spatial_dims)
            if data.shape != first.shape:
                raise ImageFileError(
                    f"image {path} has shape {data.shape}, but the first image {paths[0]} has shape "
                    f"{first.shape}; all images must have the same shape"
                )
            images[index, 0] = data
            affines.append(affine)
            bar.update(1)
    finally:
        bar.close()
    return images, affines


def manifest_spatial_dims(manifest: str | os.PathLike) -> int:
    """2 or 3: the dimensionality of a manifest's first image, read from its header only."""
    frame = read_manifest(manifest, required=("path",), check_images=False)
    first = frame["resolved_path"].iloc[0]
    shape = list(_load_image(first).shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    if len(shape) not in (2, 3):
        raise ImageFileError(f"image {first} has shape {tuple(shape)}: expected a 2D or 3D image")
    return len(shape)


def _load_image(path: str | os.PathLike) -> nib.spatialimages.SpatialImage:
    if not Path(path).is_file():
        raise ManifestNotFoundError(f"image {path} does not exist")
    try:
        return nib.load(path)
    except Exception as error:  # nibabel raises many kinds: ImageFileError, EOFError, OSError, ...
        raise ImageFileError(f"cannot read image {path}: {error}") from error


def _load_one(path: str, spatial_dims: int | None) -> tuple[np.ndarray, np.ndarray]:
    image = _load_image(path)
    try:
        data = np.asarray(image.get_fdata(dtype=np.float32), dtype=np.float32)
    except Exception as error:  # truncated or corrupt voxel data
        raise ImageFileError(f"cannot read the voxels of image {path}: {error}") from error
    stored = data.shape
    while data.ndim > 2 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise ImageFileError(f"image {path} has shape {stored}: expected a 2D or 3D image")
    if spatial_dims is not None and data.ndim != spatial_dims:
        raise ImageFileError(
            f"image {path} is {data.ndim}D (shape {stored}), expected {spatial_dims}D (spatial_dims={spatial_dims})"
        )
    finite = np.isfinite(data)
    if not finite.all():
        raise ImageFileError(
            f"image {path} has {int((~finite).sum())} NaN or infinite voxel(s) "
            f"(first at index {tuple(int(i) for i in np.argwhere(~finite)[0])})"
        )
    affine = image.affine
    return data, np.eye(4) if affine is None else np.array(affine, dtype=np.float64)


# ---------------------------------------------------------------- writing


def image_stem(path: str | os.PathLike) -> str:
    """A NIfTI file's name without ``.nii.gz`` / ``.nii`` (for naming outputs derived from it)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def save_like(data: np.ndarray, reference_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Write `data` as a float32 NIfTI with the affine and header of the reference image, atomically.

    `data` must have as many values as the reference image; it is reshaped to the reference's shape
    (so an array shaped ``(1, H, W)`` can be written like an ``(H, W, 1)`` input). `out_path` must end
    in ``.nii`` or ``.nii.gz`` and must not be the reference itself. Returns `out_path`.
    """
    reference_path, out_path = Path(reference_path), Path(out_path)
    if _same_file(reference_path, out_path):
        raise ImageFileError(f"refusing to overwrite the reference image {reference_path}; choose another output path")
    name = out_path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        raise ImageFileError(f"output {out_path} must end in .nii or .nii.gz")
    reference = _load_image(reference_path)
    if not isinstance(reference, nib.Nifti1Pair):
        raise ImageFileError(f"reference image {reference_path} is not NIfTI ({type(reference).__name__})")
    data = np.asarray(data, dtype=np.float32)
    if data.size != int(np.prod(reference.shape)):
        raise ImageFileError(
            f"cannot write data shaped {data.shape} like reference {reference_path} shaped {reference.shape}"
        )
    bad = int((~np.isfinite(data)).sum())
    if bad:
        raise ImageFileError(f"data to write to {out_path} has {bad} NaN or infinite values")
    kind = nib.Nifti2Image if isinstance(reference, nib.Nifti2Pair) else nib.Nifti1Image
    image = kind(data.reshape(reference.shape), reference.affine, reference.header.copy())
    image.set_data_dtype(np.float32)
    payload = image.to_bytes()
    if name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(payload)
    return out_path


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
