"""The real anatomy the cohort starts from: the MNI152 template and its tissue maps (nilearn, offline).

:func:`load_template` turns the 1 mm MNI152 T1, grey-matter, white-matter and brain-mask images into
the channels the renderer samples (see :data:`CHANNELS`), plus the anatomical regions the planted
effects act on, all defined here in MNI millimetres:

- the **lateral ventricles**, a Gaussian neighbourhood centred on :data:`VENTRICLE_CENTRE_MM`
  with SDs :data:`VENTRICLE_SD_MM` (the ageing warp expands it);
- the **precentral gyrus** (primary motor cortex), a tube of Gaussian cross-section
  (SD :data:`MOTOR_SD_MM`) along :data:`MOTOR_PATH_MM` in each hemisphere, from the face area
  (inferior, lateral) to the leg area (superior, medial);
- the **corticospinal tract**, a thinner tube (SD :data:`CST_SD_MM`) along :data:`CST_PATH_MM`
  from the cerebral peduncle through the posterior limb of the internal capsule and the corona
  radiata up to the hand knob.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

#: Channels of :attr:`Template.maps`, in order.
CHANNELS: tuple[str, ...] = ("t1", "mask", "gm_cortex", "dist_csf", "motor", "wm_cst")

#: Centre (MNI mm) of the ageing warp that enlarges the lateral ventricles.
VENTRICLE_CENTRE_MM = (0.0, -15.0, 18.0)
#: SDs (mm, x/y/z) of the Gaussian neighbourhood the ventricle warp acts on.
VENTRICLE_SD_MM = (20.0, 34.0, 18.0)

#: Precentral gyrus centre line (right hemisphere, MNI mm); the left one is its mirror image (x → −x).
MOTOR_PATH_MM = (
    (56.0, 2.0, 12.0),
    (52.0, -6.0, 28.0),
    (44.0, -12.0, 44.0),
    (36.0, -19.0, 56.0),
    (22.0, -25.0, 67.0),
    (8.0, -30.0, 74.0),
)
MOTOR_SD_MM = 8.0

#: Corticospinal tract centre line (right hemisphere, MNI mm); mirrored for the left.
CST_PATH_MM = (
    (14.0, -18.0, -18.0),
    (22.0, -14.0, 4.0),
    (26.0, -18.0, 24.0),
    (30.0, -21.0, 42.0),
    (36.0, -22.0, 56.0),
)
CST_SD_MM = 4.0

#: Grey matter deeper than this (mm from the brain surface) is not cortex (basal ganglia, thalamus).
CORTEX_DEPTH_MM = 25.0
#: Deep grey matter (basal ganglia, thalamus) is also excluded from the cortex by a Gaussian
#: neighbourhood centred here (MNI mm) with these SDs: cortex weight × (1 − exp(−d²/2)).
DEEP_GREY_CENTRE_MM = (0.0, -8.0, 6.0)
DEEP_GREY_SD_MM = (22.0, 22.0, 12.0)


@dataclass(frozen=True)
class Template:
    """Template channels on a 1 mm grid, ready for trilinear sampling.

    maps
        ``(1, C, X, Y, Z)`` float32 tensor, channels :data:`CHANNELS`.
    origin_mm
        MNI coordinates of voxel (0, 0, 0).
    tissue_means
        Median template T1 intensity of CSF, grey and white matter (voxels with probability > 0.9).
    """

    maps: torch.Tensor
    origin_mm: np.ndarray
    tissue_means: dict[str, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.maps.shape[2:])

    def channel(self, name: str) -> np.ndarray:
        return self.maps[0, CHANNELS.index(name)].numpy()


@functools.lru_cache(maxsize=2)
def load_template(z_range_mm: tuple[float, float] | None = None) -> Template:
    """Load and prepare the 1 mm MNI152 template, cropped to MNI z in `z_range_mm` if given.

    Distances are computed on the whole volume before cropping, so a slab is exact. Cached: the whole
    volume is prepared once per process, whatever slabs are asked for, and each slab is its own copy.
    The returned template is shared by every later call with the same `z_range_mm`: treat its maps as
    read-only.
    """
    template = _whole_template()
    if z_range_mm is None:
        return template
    origin = template.origin_mm
    lo = max(int(np.floor(z_range_mm[0] - origin[2])), 0)
    hi = min(int(np.ceil(z_range_mm[1] - origin[2])) + 1, template.shape[-1])
    maps = template.maps[..., lo:hi].clone()
    return Template(maps=maps, origin_mm=origin + np.array([0.0, 0.0, lo]), tissue_means=dict(template.tissue_means))


@functools.lru_cache(maxsize=1)
def _whole_template() -> Template:
    from nilearn import datasets

    t1_img = datasets.load_mni152_template(resolution=1)
    affine = t1_img.affine
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise RuntimeError("the nilearn MNI152 template is expected on a 1 mm RAS grid")
    t1 = np.asarray(t1_img.get_fdata(), dtype=np.float32)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).get_fdata(), dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata() > 0.5, dtype=np.float32)
    gm, wm = np.clip(gm, 0, 1) * mask, np.clip(wm, 0, 1) * mask
    csf = np.clip(mask - gm - wm, 0, 1)
    origin = affine[:3, 3].astype(np.float64)

    means = {
        name: float(np.median(t1[(prob > 0.9) & (mask > 0)])) for name, prob in (("csf", csf), ("gm", gm), ("wm", wm))
    }
    depth = _distance_inside(mask > 0)
    cortex = 1.0 / (1.0 + np.exp((depth - CORTEX_DEPTH_MM) / 3.0))
    cortex *= 1.0 - _gaussian_weight(t1.shape, origin, DEEP_GREY_CENTRE_MM, DEEP_GREY_SD_MM)
    dist_csf = _distance_inside((mask > 0.5) & (csf <= 0.3))
    motor = _tube_weight(t1.shape, origin, MOTOR_PATH_MM, MOTOR_SD_MM)
    cst = _tube_weight(t1.shape, origin, CST_PATH_MM, CST_SD_MM)

    channels = {
        "t1": np.clip(t1, 0, None) * mask,
        "mask": mask,
        "gm_cortex": gm * cortex,
        "dist_csf": dist_csf,
        "motor": motor * (mask > 0),
        "wm_cst": wm * cst,
    }
    stacked = np.stack([channels[name].astype(np.float32) for name in CHANNELS])
    return Template(maps=torch.from_numpy(stacked)[None], origin_mm=origin, tissue_means=means)


def _distance_inside(region: np.ndarray) -> np.ndarray:
    """Euclidean distance (voxels) from each voxel of `region` to the nearest voxel outside it; 0 outside.

    Computed on the region's bounding box grown by one voxel, which is exact: the nearest outside
    voxel, clamped onto that box, is an outside voxel at most as far away.
    """
    out = np.zeros(region.shape, dtype=np.float64)
    where = np.argwhere(region)
    if len(where) == 0:
        return out
    box = tuple(slice(max(lo - 1, 0), hi + 2) for lo, hi in zip(where.min(axis=0), where.max(axis=0)))
    out[box] = ndimage.distance_transform_edt(region[box])
    return out


def _gaussian_weight(shape, origin, centre_mm, sd_mm) -> np.ndarray:
    """exp(−½ Σ ((x − centre) / sd)²) on the template grid (separable)."""
    axes = [np.exp(-0.5 * ((np.arange(shape[i]) + origin[i] - centre_mm[i]) / sd_mm[i]) ** 2) for i in range(3)]
    return (axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]).astype(np.float32)


def _tube_weight(shape, origin, path, sd_mm) -> np.ndarray:
    """exp(−d² / 2 sd²), d the distance to the polyline `path` or to its mirror image (x → −x)."""
    points = np.asarray(path, dtype=np.float64)
    mirrored = points * np.array([-1.0, 1.0, 1.0])
    weight = np.zeros(shape, dtype=np.float32)
    reach = 4.0 * sd_mm
    for line in (points, mirrored):
        for a, b in zip(line[:-1], line[1:]):
            lo = np.floor(np.minimum(a, b) - reach - origin).astype(int).clip(0)
            hi = np.minimum(np.ceil(np.maximum(a, b) + reach - origin).astype(int) + 1, shape)
            axes = [np.arange(lo[i], hi[i]) + origin[i] for i in range(3)]
            grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
            d2 = _segment_distance_sq(grid, a, b)
            box = tuple(slice(lo[i], hi[i]) for i in range(3))
            weight[box] = np.maximum(weight[box], np.exp(-0.5 * d2 / sd_mm**2))
    return weight


def _segment_distance_sq(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((points - a) @ ab) / float(ab @ ab), 0.0, 1.0)
    nearest = a + t[..., None] * ab
    return np.sum((points - nearest) ** 2, axis=-1)
