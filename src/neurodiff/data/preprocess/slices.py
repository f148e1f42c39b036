"""Axial slices in template space, on the synthetic cohorts' grid.

A slice is sampled straight from the native image through the registration (one interpolation, no
detour through the resampled volume) on a square field of view in MNI space: ``size × size`` pixels over
`fov_mm`, centred at MNI (x, y) = (0, −17) (the centre of the brain's bounding box) and at the slice's
MNI z. The defaults, 128 pixels over 200 mm at z = 22 mm (the middle of the MNI152 grid), are those of
``neurodiff synth images``, so preprocessed scans and the embedded cohorts share one geometry and one
array orientation (first axis left → right, second posterior → anterior).
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np

from neurodiff.data.preprocess.registration import BRAIN_CENTRE_XY_MM, AffineRegistration, to_template

#: MNI z (mm) of the medial axial slice: the middle of the MNI152 grid, as in the synthetic cohorts.
MEDIAL_SLICE_Z_MM = 22.0


def slice_positions(count: int = 1, *, centre_mm: float = MEDIAL_SLICE_Z_MM, spacing_mm: float = 4.0) -> list[float]:
    """MNI z of `count` slices `spacing_mm` apart, centred on `centre_mm`."""
    if count < 1:
        raise ValueError(f"the number of slices must be at least 1, not {count!r}")
    if count > 1 and not spacing_mm > 0:
        raise ValueError(f"slice spacing must be positive, not {spacing_mm!r}")
    return [float(centre_mm + (k - (count - 1) / 2.0) * spacing_mm) for k in range(count)]


def slice_affine(z_mm: float, *, size: int = 128, fov_mm: float = 200.0) -> np.ndarray:
    """Pixel (i, j, 0) → MNI mm of the axial slice at `z_mm` (the synthetic cohorts' convention)."""
    pixel = fov_mm / size
    affine = np.diag([pixel, pixel, pixel, 1.0])
    affine[:3, 3] = [BRAIN_CENTRE_XY_MM[0] - (size // 2) * pixel, BRAIN_CENTRE_XY_MM[1] - (size // 2) * pixel, z_mm]
    return affine


def axial_slices(
    image: nib.Nifti1Image,
    registration: AffineRegistration,
    z_mm: Sequence[float],
    *,
    size: int = 128,
    fov_mm: float = 200.0,
    interpolation: str = "linear",
) -> list[nib.Nifti1Image]:
    """Axial template-space slices of a native image, each a ``(size, size, 1)`` image with its affine."""
    if size < 8:
        raise ValueError(f"slice size must be at least 8 pixels, not {size!r}")
    if not fov_mm > 0:
        raise ValueError(f"the field of view must be positive, not {fov_mm!r}")
    slices = []
    for z in z_mm:
        affine = slice_affine(z, size=size, fov_mm=fov_mm)
        out = to_template(image, registration, (size, size, 1), affine, interpolation=interpolation)
        slices.append(nib.Nifti1Image(np.asarray(out.dataobj, dtype=np.float32), affine))
    return slices
