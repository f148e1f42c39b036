"""Reading a T1 scan and moving it between nibabel (RAS) and SimpleITK (LPS).

:func:`load_t1` reads a NIfTI file, checks that it is a usable 3D image and returns it reoriented to
RAS+ (the closest canonical orientation: axes permuted and flipped, never resampled) with float32
voxels. :func:`to_sitk` / :func:`from_sitk` convert between a ``(data, affine)`` pair in nibabel's RAS
world coordinates and a SimpleITK image in ITK's LPS physical coordinates, so that every step sees the
same millimetres.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

#: RAS world coordinates → LPS (ITK) and back: flip x and y.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


class PreprocessError(ValueError):
    """A scan cannot be preprocessed; the message names the file and what is wrong with it."""


def load_t1(path: str | os.PathLike) -> nib.Nifti1Image:
    """Read a T1 NIfTI file, check it, and return it in RAS+ orientation with float32 voxels.

    A 4D file whose fourth dimension has size 1 is accepted as 3D.

    Raises
    ------
    PreprocessError
        The file does not exist, is not NIfTI, is a corrupt or truncated gzip, is not 3D, is empty or
        all one value (e.g. all zero), holds NaN / infinite voxels, or has a degenerate or sheared affine.
    """
    path = Path(path)
    if not path.is_file():
        raise PreprocessError(f"{path}: the file does not exist")
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise PreprocessError(f"{path}: not a NIfTI file (expected a name ending in .nii or .nii.gz)")
    try:
        image = nib.load(path)
    except Exception as error:  # nibabel raises ImageFileError, EOFError, OSError, zlib.error, ...
        raise PreprocessError(f"{path}: cannot read as NIfTI: {_reason(error)}") from error
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise PreprocessError(f"{path}: not a NIfTI image ({type(image).__name__})")
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        image = image.slicer[..., 0]
    if len(image.shape) != 3:
        raise PreprocessError(
            f"{path}: the image is {len(shape)}D with shape {shape}; preprocessing needs a 3D T1 volume"
            + (" (for a 4D series, extract one volume first)" if len(shape) == 4 else "")
        )
    if min(image.shape) < 2 or int(np.prod(image.shape)) < 64:
        raise PreprocessError(f"{path}: the image is empty or too small (shape {image.shape})")
    try:
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except (EOFError, OSError, zlib.error, ValueError) as error:
        raise PreprocessError(f"{path}: the voxel data is corrupt or truncated: {_reason(error)}") from error
    finite = np.isfinite(data)
    if not finite.all():
        raise PreprocessError(f"{path}: {int((~finite).sum())} voxel(s) are NaN or infinite")
    if float(data.max()) == float(data.min()):
        raise PreprocessError(f"{path}: every voxel has the value {float(data.min()):g}; the image is empty")
    affine = image.affine
    if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise PreprocessError(f"{path}: the image has no usable affine (voxel-to-world matrix)")
    try:
        spacing_and_direction(affine)  # here, naming the file, rather than minutes later in registration
    except PreprocessError as error:
        raise PreprocessError(f"{path}: {error}") from error
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    return nib.Nifti1Image(np.asarray(canonical.dataobj, dtype=np.float32), canonical.affine)


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def reorient_like(image: nib.Nifti1Image, reference_affine: np.ndarray) -> nib.Nifti1Image:
    """Return `image` (RAS+, e.g. a mask computed on :func:`load_t1`'s output) in the axis order of the
    original file whose affine is `reference_affine`: the same voxel grid and affine as that file."""
    target = nib.orientations.io_orientation(reference_affine)
    current = nib.orientations.io_orientation(image.affine)
    return image.as_reoriented(nib.orientations.ornt_transform(current, target))


def spacing_and_direction(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxel sizes (mm) and the unit direction matrix of an affine; refuses a sheared affine."""
    linear = np.asarray(affine, dtype=float)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise PreprocessError(
            "the image's affine is sheared (its axes are not perpendicular); resample it to a regular grid first"
        )
    return spacing, direction


def to_sitk(data: np.ndarray, affine: np.ndarray, *, pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
    """A SimpleITK image (LPS physical space) of the voxel array `data` indexed ``[i, j, k]``."""
    lps = RAS_TO_LPS @ np.asarray(affine, dtype=float)
    spacing, direction = spacing_and_direction(lps)
    array = np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0))
    image = sitk.Cast(sitk.GetImageFromArray(array), pixel_type)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in lps[:3, 3]])
    image.SetDirection([float(d) for d in direction.ravel()])
    return image


def from_sitk(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The voxel array indexed ``[i, j, k]`` and the RAS affine of a SimpleITK image."""
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return data, RAS_TO_LPS @ lps


def sitk_of(image: nib.Nifti1Image, *, pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
    """:func:`to_sitk` of a nibabel image."""
    return to_sitk(np.asarray(image.dataobj), image.affine, pixel_type=pixel_type)
