"""Skull stripping that works offline: the template's brain mask carried to the subject and refined.

The default backend (:func:`template_brain_mask`) resamples the MNI152 brain mask into the subject's
native space through the inverse of the affine registration, then refines its border on the image:

1. the *core* (the carried mask eroded by `band_mm`) is kept as brain;
2. in the band within `band_mm` of the carried border, voxels whose intensity is brain tissue (above the
   lower of two Otsu thresholds of the core's intensities, i.e. brighter than CSF, and not far above
   the brightest white matter) join it;
3. a 1-voxel opening cuts thin bridges to scalp or dura, the largest connected piece is kept, and a
   closing by `band_mm` with holes filled puts back sulcal and ventricular CSF.

So the mask follows the subject's own cortical border where the affine fit left it a few millimetres
off, and never strays further than `band_mm` from the registered template mask.

HD-BET (:func:`hdbet_brain_mask`) is an optional backend: it needs the ``hd-bet`` command and its
network weights, which it downloads on first use; neurodiff never downloads anything, so it is used only
when the user has installed both.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from neurodiff.data.preprocess.registration import AffineRegistration, Template, load_template, to_native
from neurodiff.data.preprocess.volume import PreprocessError

#: The skull-stripping backends.
SKULL_STRIP_METHODS = ("template", "hd-bet")


def template_brain_mask(
    image: nib.Nifti1Image,
    registration: AffineRegistration,
    *,
    template: Template | None = None,
    refine: bool = True,
    band_mm: float = 4.0,
) -> nib.Nifti1Image:
    """The brain mask of `image` (native grid, uint8) from the template mask carried by `registration`.

    `refine` adapts the border to the image within `band_mm` of the carried mask (see the module text);
    without it the carried mask is returned as is.
    """
    template = template or load_template()
    carried_prob = to_native(template.brain_mask, registration, image, interpolation="linear")
    carried = np.asarray(carried_prob.dataobj) > 0.5
    if not carried.any():
        raise PreprocessError("the registered template brain mask misses the image entirely; registration failed")
    if refine:
        spacing = np.sqrt((np.asarray(image.affine)[:3, :3] ** 2).sum(axis=0))
        carried = refine_brain_mask(np.asarray(image.dataobj, dtype=np.float32), carried, spacing, band_mm=band_mm)
    return nib.Nifti1Image(carried.astype(np.uint8), image.affine)


def refine_brain_mask(data: np.ndarray, carried: np.ndarray, spacing: np.ndarray, *, band_mm: float = 4.0) -> np.ndarray:
    """Refine a registered brain mask on the image's intensities (steps 1–3 of the module text)."""
    if band_mm <= 0:
        return carried.copy()
    box = _bounding_box(carried, margin=int(np.ceil(2 * band_mm / spacing.min())) + 2)
    sub, mask = data[box], carried[box]
    ball = _ellipsoid(band_mm, spacing)
    core = ndimage.binary_erosion(mask, ball)
    outer = ndimage.binary_dilation(mask, ball)
    if core.sum() < 100:
        return carried.copy()
    low, high = _tissue_range(sub[core])
    refined = core | (outer & (sub >= low) & (sub <= high))
    # a 1-voxel opening (face neighbours), also on anisotropic voxels, where a ball of the largest spacing
    # would span several voxels in-plane
    refined = ndimage.binary_opening(refined, ndimage.generate_binary_structure(3, 1))
    labels, count = ndimage.label(refined)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        refined = labels == int(np.argmax(sizes))
    refined = (ndimage.binary_closing(refined, ball) & outer) | core
    refined = ndimage.binary_fill_holes(refined)
    out = np.zeros_like(carried)
    out[box] = refined
    return out


def _tissue_range(values: np.ndarray) -> tuple[float, float]:
    """Intensities of brain tissue in the core: above the CSF/grey-matter Otsu threshold, and below
    1.05 × the 99.9th percentile (brighter is fat or vessel)."""
    otsu = sitk.OtsuMultipleThresholdsImageFilter()
    otsu.SetNumberOfThresholds(2)
    otsu.Execute(sitk.GetImageFromArray(values.reshape(1, 1, -1).astype(np.float32)))
    return float(otsu.GetThresholds()[0]), 1.05 * float(np.percentile(values, 99.9))


def _ellipsoid(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """A ball of `radius_mm` as a boolean structuring element on voxels of `spacing` mm."""
    half = np.maximum(1, np.floor(radius_mm / np.asarray(spacing)).astype(int))
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2 + 1e-6


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    index = np.nonzero(mask)
    return tuple(slice(max(0, int(i.min()) - margin), min(n, int(i.max()) + margin + 1))
                 for i, n in zip(index, mask.shape))


# ---------------------------------------------------------------- HD-BET (optional)


#: What to do when HD-BET was asked for and is not installed.
HDBET_MISSING = ("skull stripping with HD-BET was asked for, but the hd-bet command is not installed. Install it "
                 "(pip install hd-bet) and let it fetch its weights once on a machine with internet access, or "
                 "use the offline default: --skull-strip template")


def hdbet_available() -> str | None:
    """The path of the ``hd-bet`` command, or None when it is not installed."""
    return shutil.which("hd-bet")


def hdbet_brain_mask(image: nib.Nifti1Image, *, device: str = "cpu") -> nib.Nifti1Image:
    """Brain mask by HD-BET (optional backend): runs the user's ``hd-bet`` command on `image`.

    Raises
    ------
    PreprocessError
        ``hd-bet`` is not installed, or it failed (e.g. its weights are missing and cannot be
        downloaded); the message says what to do instead.
    """
    command = hdbet_available()
    if command is None:
        raise PreprocessError(HDBET_MISSING)
    with tempfile.TemporaryDirectory(prefix="neurodiff-hdbet-") as folder:
        source, target = Path(folder) / "t1.nii.gz", Path(folder) / "brain.nii.gz"
        nib.save(image, source)
        args = [command, "-i", str(source), "-o", str(target), "-device", device, "--save_bet_mask"]
        run = subprocess.run(args, capture_output=True, text=True)
        # HD-BET 2 writes the mask as <output>_bet.nii.gz; version 1 named it <output>_mask.nii.gz
        masks = [p for p in (Path(folder) / "brain_bet.nii.gz", Path(folder) / "brain_mask.nii.gz") if p.is_file()]
        if run.returncode != 0:
            tail = (run.stderr or run.stdout or "").strip().splitlines()[-5:]
            raise PreprocessError(
                f"hd-bet failed (exit {run.returncode}): {' | '.join(tail) or 'no message'}. If its weights "
                "are missing, run hd-bet once where it can download them; HD-BET 2 is needed (it has "
                "--save_bet_mask); or use --skull-strip template"
            )
        if not masks:
            written = ", ".join(sorted(p.name for p in Path(folder).iterdir()))
            raise PreprocessError(f"hd-bet finished but wrote no brain mask (it wrote: {written}); expected "
                                  "brain_bet.nii.gz as HD-BET 2 writes it. Use --skull-strip template")
        mask = nib.load(masks[0])
        data = np.asarray(mask.dataobj) > 0
    return nib.Nifti1Image(data.astype(np.uint8), image.affine)
