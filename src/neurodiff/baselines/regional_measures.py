"""Regional measures of MNI-space images through the template's tissue maps (NDA's non-generative benchmarks).

The regression normative model (:mod:`~neurodiff.baselines.normative_regression`) needs a handful of
regional measures per image, as classical normative models use regional volumes or thicknesses. The
images here are already registered to MNI152 (synthetic cohort, or the shared preprocessing of real
scans), so the regions come from the template and no per-subject segmentation is run:

1. the MNI152 grey-matter (GM) and white-matter (WM) probability maps shipped by nilearn
   (:func:`nilearn.datasets.load_mni152_gm_template` / ``load_mni152_wm_template``: packaged files,
   no download) are sampled (trilinear) at the world coordinates of every pixel / voxel, given by the
   image's 4×4 affine; a 2D image's pixel (i, j) lies at ``affine @ (i, j, 0, 1)``. Each pixel's
   probability is averaged over a regular sub-grid of its in-plane (2D) or 3D footprint at ~1 mm
   spacing (at most :data:`MAX_SUPERSAMPLE` points per axis), so coarse images are not point-sampled;
2. pixels are split into sectors by the MNI position of their centre: hemisphere (x < 0 left,
   x ≥ 0 right) × anterior–posterior band (:data:`BANDS`: frontal y > 10, central −25 < y ≤ 10,
   parietal −60 < y ≤ −25, occipital y ≤ −60 mm);
3. the measure of a tissue and a sector is the probability-weighted mean intensity of the image,
   ``Σ p·I / Σ p`` over the sector's pixels; columns are named ``{tissue}_{hemisphere}_{band}``
   (e.g. ``gm_left_central``), GM ones first.

On a skull-stripped, intensity-normalised T1, a lower GM measure means less grey matter where the
template has it (atrophy turned to CSF) or a changed contrast; WM measures track WM signal (e.g. the
corticospinal tract's contrast loss in ALS). Sectors whose total template weight on this grid is below
:data:`MIN_WEIGHT_PIXELS` pixels' worth are dropped; the choice depends on the affine and the image
grid only, so every image on the same grid gets the same columns.

>>> measures = regional_measures(images, affine)        # images (N, 1, H, W) in MNI space
>>> measures["gm_left_central"]
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from neurodiff.baselines.combat import check_images

#: Tissues sampled from the template, in column order.
TISSUES: tuple[str, ...] = ("gm", "wm")
#: Hemispheres by MNI x (mm): left x < 0, right x ≥ 0.
HEMISPHERES: tuple[str, ...] = ("left", "right")
#: Anterior–posterior bands: name and (lower, upper] limits of MNI y (mm).
BANDS: tuple[tuple[str, float, float], ...] = (
    ("frontal", 10.0, np.inf),
    ("central", -25.0, 10.0),
    ("parietal", -60.0, -25.0),
    ("occipital", -np.inf, -60.0),
)
#: A sector is kept when its template weight Σ p over the grid is at least this many pixels' worth.
MIN_WEIGHT_PIXELS = 5.0
#: Most sub-samples per axis when averaging the template over a pixel's footprint.
MAX_SUPERSAMPLE = 4
_CHUNK = 256  # images checked and measured at a time


def regional_measures(images: Any, affine: Any) -> pd.DataFrame:
    """Template-weighted mean intensity per tissue and sector: a frame (N, n_measures), columns like ``gm_left_central``.

    Parameters
    ----------
    images:
        Float array (N, 1, H, W) or (N, 1, D, H, W), intensities in [0, 1], in MNI space.
    affine:
        4×4 voxel → MNI mm affine of the images' grid (for 2D, that of the 2D NIfTI).

    Raises
    ------
    ValueError
        The images are malformed, the affine is not a finite 4×4 matrix, or no sector has enough
        template tissue on this grid (the images are not in MNI space, or the affine is wrong).
    """
    x = images if isinstance(images, np.ndarray) else np.asarray(images)
    check_images(x[:1])  # shape (and the first image) now, the rest chunk by chunk below
    names, weights = sector_weights(x.shape[2:], affine)
    values = np.zeros((len(x), len(names)))
    for start in range(0, len(x), _CHUNK):  # bounded memory for large cohorts of volumes
        chunk = check_images(x[start:start + _CHUNK], offset=start)
        values[start:start + len(chunk)] = chunk.reshape(len(chunk), -1) @ weights.T
    return pd.DataFrame(values, columns=names)


def sector_weights(shape: tuple[int, ...], affine: Any) -> tuple[list[str], np.ndarray]:
    """The measures' names and normalised weights (n_measures, n_pixels) for a grid; rows sum to 1."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"the image grid must be 2D or 3D, got spatial shape {shape}")
    matrix = check_affine(affine)
    names, weights = _sector_weights(shape, tuple(matrix.ravel().tolist()))
    return list(names), weights


def check_affine(affine: Any) -> np.ndarray:
    """The affine as a float64 4×4 array; ValueError if it is not a finite, invertible 4×4 matrix."""
    try:
        matrix = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"the affine must be a 4×4 array of numbers, got {type(affine).__name__}") from None
    if matrix.shape != (4, 4):
        raise ValueError(f"the affine must be 4×4, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("the affine has NaN or infinite entries")
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise ValueError("the affine's 3×3 part is singular: it does not map voxels to millimetres")
    return matrix


@functools.lru_cache(maxsize=1)
def _tissue_maps() -> tuple[np.ndarray, np.ndarray]:
    """(maps (2, X, Y, Z) float32 of GM and WM probability in [0, 1], world → template voxel 4×4). Cached."""
    from nilearn import datasets  # packaged with nilearn: no download

    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    if not np.allclose(gm.affine, wm.affine) or gm.shape != wm.shape:
        raise RuntimeError("nilearn's MNI152 GM and WM templates are expected on the same grid")
    maps = np.stack([np.clip(np.asarray(img.get_fdata(), dtype=np.float32), 0.0, 1.0) for img in (gm, wm)])
    return maps, np.linalg.inv(gm.affine)


@functools.lru_cache(maxsize=8)
def _sector_weights(shape: tuple[int, ...], affine_flat: tuple[float, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and row-normalised weights of the kept sectors for one grid (cached; read-only array)."""
    affine = np.asarray(affine_flat, dtype=np.float64).reshape(4, 4)
    maps, world_to_template = _tissue_maps()
    n_dims = len(shape)
    # pixel centres and their footprint's sub-grid, as voxel coordinates (i, j[, k]) of the image
    centres = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"), -1)
    centres = centres.reshape(-1, n_dims)
    spacing = np.linalg.norm(affine[:3, :n_dims], axis=0)  # mm per voxel along each image axis
    factors = [int(np.clip(np.ceil(s), 1, MAX_SUPERSAMPLE)) for s in spacing]
    offsets = np.stack(np.meshgrid(*[(np.arange(f) + 0.5) / f - 0.5 for f in factors], indexing="ij"), -1)
    offsets = offsets.reshape(-1, n_dims)

    probability = np.zeros((len(TISSUES), len(centres)), dtype=np.float64)
    for offset in offsets:
        points = _to_world(affine, centres + offset)
        template_voxels = points @ world_to_template[:3, :3].T + world_to_template[:3, 3]
        for t in range(len(TISSUES)):
            probability[t] += ndimage.map_coordinates(maps[t], template_voxels.T, order=1, mode="constant", cval=0.0)
    probability /= len(offsets)

    world = _to_world(affine, centres)
    hemispheres = {"left": world[:, 0] < 0, "right": world[:, 0] >= 0}
    names, rows = [], []
    for t, tissue in enumerate(TISSUES):
        for hemisphere in HEMISPHERES:
            for band, low, high in BANDS:
                inside = hemispheres[hemisphere] & (world[:, 1] > low) & (world[:, 1] <= high)
                weight = probability[t] * inside
                if weight.sum() >= MIN_WEIGHT_PIXELS:
                    names.append(f"{tissue}_{hemisphere}_{band}")
                    rows.append(weight / weight.sum())
    if not rows:
        raise ValueError(
            f"no template tissue sector has at least {MIN_WEIGHT_PIXELS:g} pixels' worth of weight on this "
            f"{'×'.join(map(str, shape))} grid: the images do not look registered to MNI152 space (check the "
            f"affine, which should map voxels to MNI millimetres)"
        )
    weights = np.stack(rows)
    weights.setflags(write=False)
    return tuple(names), weights


def _to_world(affine: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """MNI mm (n, 3) of voxel coordinates (n, 2 or 3); a 2D image's pixels lie at k = 0."""
    if voxels.shape[1] == 2:
        voxels = np.concatenate([voxels, np.zeros((len(voxels), 1))], axis=1)
    return voxels @ affine[:3, :3].T + affine[:3, 3]
