"""Affine registration of a T1 head to the MNI152 template that nilearn ships, and resampling.

The template (nilearn's 1 mm ICBM152 2009a T1, skull-stripped, and its brain mask) is the fixed image;
the subject's head, with skull, is the moving one. The mutual-information metric is evaluated only in
the template's brain mask dilated by a few millimetres, so the skull, neck and face of the subject do
not pull the fit. Three stages, each multi-resolution (SimpleITK's registration framework):

1. an exhaustive search of translations on a 10 mm grid, from the centres of mass aligned (8 mm images);
2. a similarity transform (rotation, translation, one scale) by gradient descent from twelve starts
   (scales 0.8, 0.9, 1.0, 1.1 × head tilts −10°, 0°, +10°) on the 8 mm images, the best refined at 4 mm;
3. a full affine (12 parameters) from there, finishing at full resolution.

The result maps template points to native points (ITK's convention, saved as an ITK ``.tfm``) and, in
RAS millimetres, native points to template points (:attr:`AffineRegistration.native_to_template`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from neurodiff.atomic import atomic_path
from neurodiff.data.preprocess.volume import RAS_TO_LPS, from_sitk, sitk_of, to_sitk

#: MNI x, y of the centre of the brain's bounding box (the synthetic cohorts' field-of-view centre).
BRAIN_CENTRE_XY_MM = (0.0, -17.0)
#: Dilation (mm) of the template brain mask that limits where the metric is evaluated.
METRIC_MASK_DILATION_MM = 4.0
#: Largest registration seed: ITK's seeds are 32-bit and SimpleITK reads 0 as "seed from the clock",
#: so seed s goes to ITK as s + 1.
MAX_SEED = 2**32 - 2


@dataclass(frozen=True)
class Template:
    """The MNI152 T1 template (skull-stripped) and its brain mask, as nibabel images (RAS, 1 mm)."""

    t1: nib.Nifti1Image
    brain_mask: nib.Nifti1Image

    @functools.cached_property
    def brain_centre_mm(self) -> np.ndarray:
        """MNI mm of the centre of the brain mask's bounding box."""
        mask = np.asarray(self.brain_mask.dataobj) > 0
        corners = np.array([[ix.min(), ix.max()] for ix in np.nonzero(mask)], dtype=float)
        return nib.affines.apply_affine(self.brain_mask.affine, corners.mean(axis=1))


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """nilearn's MNI152 template and brain mask at 1 mm (shipped with nilearn; nothing is downloaded)."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    mask = datasets.load_mni152_brain_mask(resolution=1)
    return Template(
        t1=nib.Nifti1Image(np.asarray(t1.get_fdata(), dtype=np.float32), t1.affine),
        brain_mask=nib.Nifti1Image((np.asarray(mask.get_fdata()) > 0).astype(np.uint8), mask.affine),
    )


def check_seed(seed: object) -> None:
    """Refuse a registration seed that is not an integer from 0 to :data:`MAX_SEED`."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer from 0 to {MAX_SEED}, not {seed!r}")


@dataclass(frozen=True)
class AffineRegistration:
    """An affine registration to the template.

    Attributes
    ----------
    transform
        SimpleITK affine mapping template points to native points (LPS mm), as ITK resamplers want.
    metric
        Final Mattes mutual information (negative; lower is a better match).
    """

    transform: sitk.AffineTransform
    metric: float

    @property
    def template_to_native(self) -> np.ndarray:
        """4×4 matrix mapping template RAS mm to native RAS mm."""
        return RAS_TO_LPS @ _homogeneous(self.transform) @ RAS_TO_LPS

    @property
    def native_to_template(self) -> np.ndarray:
        """4×4 matrix mapping native RAS mm to template (MNI) RAS mm."""
        return np.linalg.inv(self.template_to_native)

    @classmethod
    def from_native_to_template(cls, matrix: np.ndarray, metric: float = float("nan")) -> AffineRegistration:
        """The registration whose :attr:`native_to_template` is `matrix` (4×4, RAS mm)."""
        lps = RAS_TO_LPS @ np.linalg.inv(np.asarray(matrix, dtype=float)) @ RAS_TO_LPS
        transform = sitk.AffineTransform(3)
        transform.SetMatrix([float(v) for v in lps[:3, :3].ravel()])
        transform.SetTranslation([float(v) for v in lps[:3, 3]])
        return cls(transform=transform, metric=metric)

    def save(self, tfm_path: str | Path, matrix_path: str | Path) -> None:
        """Write the ITK transform (template → native, LPS; readable by SimpleITK and ANTs) and the
        4×4 native → template matrix in RAS mm as text, both atomically."""
        with atomic_path(tfm_path) as tmp:
            sitk.WriteTransform(self.transform, str(tmp.with_suffix(".tfm")))
            tmp.with_suffix(".tfm").replace(tmp)
        with atomic_path(matrix_path) as tmp:
            np.savetxt(tmp, self.native_to_template, fmt="%.8f",
                       header="native RAS mm -> template (MNI152) RAS mm, 4x4 homogeneous")


def _homogeneous(transform: sitk.AffineTransform) -> np.ndarray:
    """The 4×4 matrix of an ITK affine (with its centre folded into the translation)."""
    matrix = np.asarray(transform.GetMatrix()).reshape(3, 3)
    centre = np.asarray(transform.GetCenter())
    out = np.eye(4)
    out[:3, :3] = matrix
    out[:3, 3] = np.asarray(transform.GetTranslation()) + centre - matrix @ centre
    return out


def register_to_template(
    image: nib.Nifti1Image,
    *,
    template: Template | None = None,
    shrink_factors: Sequence[int] = (4, 2, 1),
    sampling: float = 0.05,
    iterations: int = 200,
    seed: int = 0,
) -> AffineRegistration:
    """Affinely register a T1 head (with or without skull) to the MNI152 template.

    Parameters
    ----------
    image
        The subject's T1 (bias-corrected is best), any orientation.
    template
        The fixed image; default :func:`load_template`.
    shrink_factors
        Resolution levels of the final affine stage (the last one is the finest; 1 = full resolution).
        The similarity stages run on 8 mm and 4 mm copies.
    sampling
        Share of the masked template voxels sampled by the metric at each iteration.
    iterations
        Maximum gradient-descent iterations per level.
    seed
        Seed of the metric's random sampling, 0 to 2³² − 2. In one thread, the same seed and image give
        the same transform bit for bit. In more threads, ITK's parallel sums round differently from run
        to run: measured on S1 in two threads, brain points move by at most 0.003 mm.
    """
    check_seed(seed)
    if not shrink_factors or min(shrink_factors) < 1:
        raise ValueError(f"shrink_factors must be positive integers, not {list(shrink_factors)!r}")
    if not 0.0 < sampling <= 1.0:
        raise ValueError(f"sampling must be in (0, 1], not {sampling!r}")
    template = template or load_template()
    fixed = sitk_of(template.t1)
    metric_mask = _metric_mask(template)
    moving = sitk_of(image)

    # stages 1–2 run on an 8 mm copy of both images, made once: the starts below are cheap there
    coarse_fixed, coarse_mask = _coarse(fixed, 8.0), _coarse(metric_mask, 8.0, smooth=False)
    coarse_moving = _coarse(moving, 8.0)
    start = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Similarity3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    similarity = sitk.Similarity3DTransform(start)
    # 1. translations on a 9×9×9 grid of 10 mm steps around the aligned centres of mass
    _run(coarse_fixed, coarse_moving, coarse_mask, similarity, shrink=[1], smooth=[0.0], sampling=1.0, seed=seed,
         exhaustive=([0, 0, 0, 4, 4, 4, 0], 10.0, [1, 1, 1, 1, 1, 1, 1]))
    # 2. similarity from several scales and head tilts; the best match goes on (a single start can
    #    settle with the template brain stretched over the skull)
    similarity = _best_start(coarse_fixed, coarse_moving, coarse_mask, similarity, seed=seed, iterations=iterations)
    _run(fixed, moving, metric_mask, similarity, shrink=[4], smooth=[2.0], sampling=0.2, seed=seed,
         iterations=iterations)
    # 3. affine
    affine = sitk.AffineTransform(3)
    affine.SetCenter(similarity.GetCenter())
    affine.SetMatrix(similarity.GetMatrix())
    affine.SetTranslation(similarity.GetTranslation())
    smooth = [max(0.0, (s - 1) / 2.0) for s in shrink_factors]
    metric = _run(fixed, moving, metric_mask, affine, shrink=list(shrink_factors), smooth=smooth,
                  sampling=sampling, seed=seed, iterations=iterations)
    return AffineRegistration(transform=affine, metric=metric)


#: Starting scales and head tilts (pitch, degrees about the left–right axis) of the similarity stage.
START_SCALES = (0.8, 0.9, 1.0, 1.1)
START_PITCH_DEG = (-10.0, 0.0, 10.0)


def _best_start(fixed, moving, mask, similarity, *, seed, iterations) -> sitk.Similarity3DTransform:
    best, best_metric = similarity, np.inf
    for scale in START_SCALES:
        for pitch in START_PITCH_DEG:
            candidate = sitk.Similarity3DTransform(similarity)
            candidate.SetScale(scale)
            candidate.SetRotation((1.0, 0.0, 0.0), float(np.deg2rad(pitch)))
            metric = _run(fixed, moving, mask, candidate, shrink=[1], smooth=[0.0], sampling=1.0, seed=seed,
                          iterations=min(iterations, 100))
            if metric < best_metric:
                best, best_metric = candidate, metric
    return best


def _coarse(image: sitk.Image, spacing_mm: float, *, smooth: bool = True) -> sitk.Image:
    """A copy of `image` at about `spacing_mm` voxels (Gaussian-smoothed first unless `smooth` is off)."""
    factors = [max(1, int(round(spacing_mm / s))) for s in image.GetSpacing()]
    if smooth:
        image = sitk.SmoothingRecursiveGaussian(image, spacing_mm / 2.0)
    return sitk.Shrink(image, factors)


@functools.lru_cache(maxsize=2)
def _metric_mask(template: Template) -> sitk.Image:
    mask = sitk_of(template.brain_mask, pixel_type=sitk.sitkUInt8)
    radius = int(round(METRIC_MASK_DILATION_MM / min(mask.GetSpacing())))
    return sitk.BinaryDilate(mask, [radius] * 3)


def _run(fixed, moving, mask, transform, *, shrink, smooth, sampling, seed, iterations=200, exhaustive=None) -> float:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, int(seed) + 1)  # never sitkWallClock (0): reproducible
    method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    if exhaustive is not None:
        steps, step_length, scales = exhaustive
        method.SetOptimizerAsExhaustive(steps, step_length)
        method.SetOptimizerScales(scales)
    else:
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=2.0, minStep=1e-4, numberOfIterations=iterations, relaxationFactor=0.5,
            gradientMagnitudeTolerance=1e-6,
        )
        method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(smooth)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return float(method.GetMetricValue())


# ---------------------------------------------------------------- resampling


def template_grid(shape: int | Sequence[int] = 130, spacing_mm: float = 1.5,
                  template: Template | None = None) -> tuple[tuple[int, int, int], np.ndarray]:
    """A template-space grid of `shape` voxels of `spacing_mm`, centred on the template brain.

    The default, 130³ voxels of 1.5 mm (195 mm a side), holds the whole MNI152 brain mask; the papers
    resample to 130³. Returns the shape and the RAS affine.
    """
    shape = (int(shape),) * 3 if np.isscalar(shape) else tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 2:
        raise ValueError(f"the template grid needs three sizes of at least 2 voxels, not {shape!r}")
    if not spacing_mm > 0:
        raise ValueError(f"spacing_mm must be positive, not {spacing_mm!r}")
    centre = (template or load_template()).brain_centre_mm
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = centre - spacing_mm * (np.asarray(shape) - 1) / 2.0
    return shape, affine


def resample(
    image: nib.Nifti1Image,
    transform: sitk.Transform,
    shape: Sequence[int],
    affine: np.ndarray,
    *,
    interpolation: str = "linear",
) -> nib.Nifti1Image:
    """Resample `image` onto the grid (`shape`, `affine`) where `transform` maps grid points to points of
    `image` (LPS mm). Outside the image the value is 0. `interpolation`: linear, nearest or bspline."""
    kinds = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}
    if interpolation not in kinds:
        raise ValueError(f"interpolation must be one of {', '.join(kinds)}, not {interpolation!r}")
    reference = to_sitk(np.zeros(tuple(shape), dtype=np.uint8), affine, pixel_type=sitk.sitkUInt8)
    out = sitk.Resample(sitk_of(image), reference, transform, kinds[interpolation], 0.0, sitk.sitkFloat32)
    data, out_affine = from_sitk(out)
    return nib.Nifti1Image(data.astype(np.float32), out_affine)


def to_template(image: nib.Nifti1Image, registration: AffineRegistration, shape: Sequence[int],
                affine: np.ndarray, *, interpolation: str = "linear") -> nib.Nifti1Image:
    """A native image resampled onto a template-space grid."""
    return resample(image, registration.transform, shape, affine, interpolation=interpolation)


def to_native(image: nib.Nifti1Image, registration: AffineRegistration, native: nib.Nifti1Image,
              *, interpolation: str = "linear") -> nib.Nifti1Image:
    """A template-space image resampled onto the grid of the native image `native`."""
    return resample(image, registration.transform.GetInverse(), native.shape, native.affine,
                    interpolation=interpolation)
