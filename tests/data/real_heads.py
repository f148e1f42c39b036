"""Real heads for the preprocessing tests, all shipped offline, and known distortions of them.

- pycortex's subject S1: a real 1 mm T1 head with skull and neck, with its FreeSurfer pial and white
  surfaces (in the scanner coordinates of the T1). Its reference brain mask is built from the pial
  surfaces alone — independent of the template mask the pipeline carries — by filling each hemisphere's
  closed pial surface and closing the union by 3 mm (so sulcal CSF and the interhemispheric fissure
  count as brain, as in any brain mask).
- The pial surfaces bound the cerebrum only; the cerebellum and brainstem lie outside them. Dice is
  therefore computed over the supratentorial region: every voxel except those directly below the
  cerebrum (in the head's own superior direction).
- :func:`distort` makes a new head from S1 by a known affine (rotation, scale, shift), an optional mild
  smooth warp, a bias field, a gamma change, noise and a new voxel grid in another axis order.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

S1_FOLDER = Path(sys.prefix) / "share" / "pycortex" / "db" / "S1"


#: The distorted copies of S1 used by the tests and benchmarks/preprocess_speed.py: a known affine
#: (rotation degrees about x, y, z; scale; shift mm, about the head's centre) and the options of
#: :func:`distort`.
VARIANTS = {
    "moved": dict(rotation=(10.0, -6.0, 12.0), scale=1.08, shift=(12.0, -9.0, 7.0),
                  options=dict(spacing_mm=1.3, axcodes="PSL", bias=0.25, gamma=0.9, noise=0.01, intensity_scale=7.3)),
    "warped": dict(rotation=(-8.0, 5.0, -10.0), scale=0.93, shift=(-6.0, 10.0, -12.0),
                   options=dict(warp_mm=2.5, spacing_mm=1.5, axcodes="LIA", bias=0.3, gamma=1.15, noise=0.02,
                                intensity_scale=0.01)),
    "tilted": dict(rotation=(20.0, 8.0, -15.0), scale=1.0, shift=(5.0, 15.0, -20.0),
                   options=dict(spacing_mm=1.0, axcodes="RAS", bias=0.3, noise=0.01)),
}


def s1_folder() -> Path:
    if not (S1_FOLDER / "anatomicals" / "raw.nii.gz").is_file():
        raise FileNotFoundError(
            f"pycortex's subject S1 is not at {S1_FOLDER}; `make test` installs it (pip install --no-deps pycortex)"
        )
    return S1_FOLDER


@dataclass(frozen=True)
class Head:
    """A head image with its reference brain mask and Dice region on the same grid (RAS+ arrays)."""

    image: nib.Nifti1Image
    reference: np.ndarray
    region: np.ndarray
    white: np.ndarray  # inside the white surfaces: white matter and the deep grey nuclei


@functools.lru_cache(maxsize=1)
def s1_head() -> Head:
    """S1 (RAS+, 1 mm) with its pial-surface reference mask and supratentorial region."""
    image = nib.as_closest_canonical(nib.load(s1_folder() / "anatomicals" / "raw.nii.gz"))
    image = nib.Nifti1Image(np.asarray(image.dataobj, dtype=np.float32), image.affine)
    inverse = np.linalg.inv(image.affine)
    inside = {}
    for kind in ("pia", "wm"):
        inside[kind] = np.zeros(image.shape, dtype=bool)
        for hemisphere in ("lh", "rh"):
            surface = nib.load(s1_folder() / "surfaces" / f"{kind}_{hemisphere}.gii")
            vertices, faces = surface.darrays[0].data.astype(float), surface.darrays[1].data
            inside[kind] |= _fill_surface(nib.affines.apply_affine(inverse, vertices), faces, image.shape)
    reference = np.zeros(image.shape, dtype=bool)
    box = _bounding_box(inside["pia"], margin=4)  # the closing by 3 mm stays inside, so cropping is exact
    reference[box] = ndimage.binary_fill_holes(ndimage.binary_closing(inside["pia"][box], _ball(3)))
    return Head(image=image, reference=reference, region=~_below(reference), white=inside["wm"])


def _fill_surface(vertices: np.ndarray, faces: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Voxels inside a closed triangle mesh (voxel coordinates): a dense shell of points sampled on
    every triangle, then the enclosed volume filled."""
    triangles = vertices[faces]
    shell = np.zeros(shape, dtype=bool)
    n = 6  # triangles are ~1 mm; 28 points per triangle leave no gap in the 1 mm shell
    for a in range(n + 1):
        for b in range(n + 1 - a):
            weights = np.array([a, b, n - a - b]) / n
            points = np.rint(np.einsum("k,tkd->td", weights, triangles)).astype(int)
            points = np.clip(points, 0, np.asarray(shape) - 1)
            shell[points[:, 0], points[:, 1], points[:, 2]] = True
    box = _bounding_box(shell, margin=1)  # filling within the shell's box (plus a free border) is exact
    shell[box] = ndimage.binary_fill_holes(shell[box])
    return shell


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    where = np.argwhere(mask)
    return tuple(slice(max(lo - margin, 0), hi + 1 + margin) for lo, hi in zip(where.min(axis=0), where.max(axis=0)))


def _below(mask: np.ndarray) -> np.ndarray:
    """Voxels below the lowest mask voxel of their (x, y) column (RAS+: axis 2 points up)."""
    z = np.arange(mask.shape[2])
    lowest = np.where(mask.any(axis=2), np.argmax(mask, axis=2), -1)
    return z[None, None, :] < lowest[:, :, None]


def _ball(radius: int) -> np.ndarray:
    grid = np.mgrid[(slice(-radius, radius + 1),) * 3]
    return (grid**2).sum(axis=0) <= radius**2


def dice(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    a, b = a & region, b & region
    return float(2.0 * (a & b).sum() / (a.sum() + b.sum()))


def affine_matrix(rotation_deg=(0.0, 0.0, 0.0), scale=1.0, shift_mm=(0.0, 0.0, 0.0), centre_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A 4×4 world-space affine: rotation (x, y, z Euler degrees) and isotropic scale about `centre_mm`,
    then a shift."""
    linear = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix() * scale
    centre = np.asarray(centre_mm, dtype=float)
    out = np.eye(4)
    out[:3, :3] = linear
    out[:3, 3] = centre - linear @ centre + np.asarray(shift_mm, dtype=float)
    return out


def grid_affine(axcodes: str, spacing_mm: float, shape: tuple[int, int, int], centre_mm: np.ndarray) -> np.ndarray:
    """The affine of a grid with axes along `axcodes` (e.g. "PSL"), centred on `centre_mm`."""
    directions = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for axis, code in enumerate(axcodes):
        world, sign = directions[code]
        affine[world, axis] = sign * spacing_mm
    affine[:3, 3] = np.asarray(centre_mm) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def distort(
    head: Head,
    *,
    transform: np.ndarray,
    warp_mm: float = 0.0,
    spacing_mm: float = 1.0,
    axcodes: str = "RAS",
    bias: float = 0.0,
    gamma: float = 1.0,
    noise: float = 0.0,
    intensity_scale: float = 1.0,
    seed: int = 0,
) -> tuple[nib.Nifti1Image, np.ndarray, np.ndarray, np.ndarray]:
    """A new head: S1 moved by `transform` (world mm, original → new), then warped by a smooth field of
    amplitude `warp_mm`, sampled on a grid of `spacing_mm` in `axcodes` order; intensities multiplied by
    a smooth bias field of ±`bias` (log scale), raised to `gamma`, with Gaussian noise of SD
    `noise` × the 99th percentile, and scaled. Returns (image, reference mask, Dice region, white) on
    the new grid (the image in the new axis order; the masks as arrays on that same grid)."""
    rng = np.random.default_rng(seed)
    source = head.image
    extent = np.asarray(source.shape) * np.sqrt((source.affine[:3, :3] ** 2).sum(axis=0))
    shape = tuple(int(np.ceil(e / spacing_mm)) for e in extent)
    centre = nib.affines.apply_affine(transform, nib.affines.apply_affine(source.affine, (np.asarray(source.shape) - 1) / 2))
    new_affine = grid_affine(axcodes, spacing_mm, shape, centre)
    voxels = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), axis=-1)
    world = nib.affines.apply_affine(new_affine, voxels.reshape(-1, 3))
    original = nib.affines.apply_affine(np.linalg.inv(transform), world)
    if warp_mm:
        original = original + _smooth_warp(original, warp_mm, rng)
    index = nib.affines.apply_affine(np.linalg.inv(source.affine), original).T

    def sample(volume: np.ndarray, order: int) -> np.ndarray:
        return ndimage.map_coordinates(volume.astype(np.float32), index, order=order, mode="constant").reshape(shape)

    data = np.clip(sample(np.asarray(source.dataobj), 1), 0.0, None)
    reference = sample(head.reference, 1) > 0.5
    region = sample(head.region, 0) > 0.5
    white = sample(head.white, 1) > 0.5
    if bias:
        centred = (world - world.mean(axis=0)) / 80.0
        coeffs = rng.uniform(-1, 1, size=6)
        log_field = centred @ coeffs[:3] + (centred**2) @ coeffs[3:] * 0.5
        log_field = bias * log_field / np.abs(log_field).max()
        data = data * np.exp(log_field).reshape(shape)
    top = np.percentile(data, 99)
    data = top * (data / top) ** gamma
    if noise:
        data = np.clip(data + rng.normal(0.0, noise * top, size=shape), 0.0, None)
    image = nib.Nifti1Image((data * intensity_scale).astype(np.float32), new_affine)
    return image, reference, region, white


def _smooth_warp(points: np.ndarray, amplitude_mm: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth displacement (mm) at `points`: three random plane waves of 60–120 mm wavelength per axis."""
    out = np.zeros_like(points)
    for axis in range(3):
        for _ in range(3):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            wavelength = rng.uniform(60.0, 120.0)
            phase = rng.uniform(0, 2 * np.pi)
            out[:, axis] += np.sin(points @ direction * (2 * np.pi / wavelength) + phase)
    return amplitude_mm * out / 3.0
