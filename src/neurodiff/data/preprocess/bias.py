"""N4 bias-field correction (SimpleITK's N4BiasFieldCorrectionImageFilter).

The field is estimated on a shrunken copy of the image inside an Otsu head mask (N4's usual practice:
the field is smooth, so a 4× shrink loses nothing and saves most of the time) and then evaluated at full
resolution, so the corrected image keeps every voxel of the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from neurodiff.data.preprocess.volume import from_sitk, sitk_of


@dataclass(frozen=True)
class BiasCorrection:
    """The corrected image and the estimated multiplicative bias field (corrected = input / field)."""

    corrected: nib.Nifti1Image
    field: nib.Nifti1Image


def head_mask(image: sitk.Image) -> sitk.Image:
    """Foreground (head) mask: Otsu's threshold, largest connected component, holes filled."""
    mask = sitk.OtsuThreshold(image, 0, 1, 200)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    largest = components == 1
    return sitk.BinaryFillhole(sitk.Cast(largest, sitk.sitkUInt8))


def n4_bias_correct(
    image: nib.Nifti1Image,
    *,
    shrink: int = 4,
    iterations: Sequence[int] = (50, 50, 50, 50),
    mask: nib.Nifti1Image | None = None,
) -> BiasCorrection:
    """Correct the intensity non-uniformity of a T1 image with N4.

    Parameters
    ----------
    image
        The T1 image (any orientation; float voxels).
    shrink
        Shrink factor of the copy the field is fitted on (1 = full resolution).
    iterations
        Maximum iterations per fitting level (one level per entry; each level doubles the B-spline
        control-point resolution).
    mask
        Voxels to fit the field on; default: an Otsu head mask.
    """
    if shrink < 1:
        raise ValueError(f"shrink must be at least 1, not {shrink!r}")
    if not iterations or min(iterations) < 1:
        raise ValueError(f"iterations must be positive counts, one per level, not {list(iterations)!r}")
    data = np.asarray(image.dataobj, dtype=np.float32)
    # N4 works on a log scale: the image must be positive. Shift it only as much as needed, so that the
    # multiplicative model still holds for the usual T1 with a zero background.
    epsilon = 1e-3 * float(np.percentile(np.abs(data), 99)) or 1e-6
    offset = min(float(data.min()), 0.0) - epsilon
    positive = sitk_of(nib.Nifti1Image(data - offset, image.affine))
    fit_mask = head_mask(positive) if mask is None else sitk_of(mask, pixel_type=sitk.sitkUInt8) > 0
    fit_mask = sitk.Cast(fit_mask, sitk.sitkUInt8)
    small = sitk.Shrink(positive, [shrink] * 3) if shrink > 1 else positive
    small_mask = sitk.Shrink(fit_mask, [shrink] * 3) if shrink > 1 else fit_mask
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.Execute(small, small_mask)
    log_field = n4.GetLogBiasFieldAsImage(positive)
    field, _ = from_sitk(sitk.Exp(log_field))
    field = field.astype(np.float32)
    corrected = (data - offset) / field + offset
    return BiasCorrection(
        corrected=nib.Nifti1Image(corrected.astype(np.float32), image.affine),
        field=nib.Nifti1Image(field, image.affine),
    )
