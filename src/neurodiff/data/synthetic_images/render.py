"""Rendering: subject anatomy + site acquisition → a T1 slice (and optionally a volume) in [0, 1].

A pixel's value is found by following its centre from scanner space to the template:

    scanner point p
      → pose        x1 = R (p − c) + c + shift              (site mean + per-image jitter)
      → head size   x2 = c + (x1 − c) / head_scale
      → anatomy     x3 = x2 + u(x2)                          (random smooth displacement field)
      → ventricles  x4 = v + (x3 − v) (1 − a(age) g(x3))     (g Gaussian around the ventricles)
      → template voxel, trilinear sampling of the template channels

then changing the tissue there (cortical grey-matter loss with age, sulcal widening, motor-cortex loss
and corticospinal signal change with disease), and finally imaging it as the site does: intensity
transfer curve, slice-thickness average, point-spread blur, bias field, Rician noise, skull stripping
by the brain mask and normalisation to [0, 1] by the 99.5th percentile inside the brain.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from neurodiff.data.synthetic_images.config import ImageCohortConfig
from neurodiff.data.synthetic_images.sites import (
    BIAS_JITTER,
    POSE_JITTER_DEG,
    POSE_JITTER_MM,
    SiteProfile,
)
from neurodiff.data.synthetic_images.template import (
    CHANNELS,
    VENTRICLE_CENTRE_MM,
    VENTRICLE_SD_MM,
    Template,
    load_template,
)

#: MNI x, y of the centre of the field of view (the centre of the brain's bounding box).
FOV_CENTRE_XY_MM = (0.0, -17.0)
#: Spacing of the control grid of the random displacement field (mm).
DEFORMATION_GRID_MM = 8.0
#: Finest spacing (mm) at which the template is sampled before averaging into a pixel.
SUPERSAMPLE_MM = 1.2
#: Spacing (mm) of the through-plane samples averaged into a slice of the site's thickness.
THICKNESS_STEP_MM = 1.25
#: Normalisation: intensities are divided by this percentile of the brain's values, then clipped.
NORMALISE_PERCENTILE = 99.5
#: Scale (mm) of the coordinates of the bias-field polynomial.
BIAS_SCALE_MM = 80.0
#: Half-width (mm) of the template slab kept around the slice when no volumes are rendered.
SLAB_HALF_WIDTH_MM = 36.0


@dataclass(frozen=True)
class Anatomy:
    """A subject's anatomy, shared by all of its images (a traveller's images at every site)."""

    age: float
    head_scale: float
    severity: float
    deformation: np.ndarray  # (3, G, G, G) displacement (mm) on the control grid

    def with_age(self, age: float) -> Anatomy:
        """The same anatomy at another age (ageing effects follow; the warp and head size stay)."""
        return dataclasses.replace(self, age=float(age))


@dataclass(frozen=True)
class Acquisition:
    """How one image was acquired: the site and this image's pose and bias-field perturbation."""

    site: SiteProfile
    pose_deg: np.ndarray
    shift_mm: np.ndarray
    bias_coeffs: np.ndarray


def draw_anatomy(
    config: ImageCohortConfig, age: float, head_scale: float, severity: float, rng: np.random.Generator
) -> Anatomy:
    """A subject's anatomy: its age, head scale, severity and a random smooth displacement field.

    The field is white noise on an 8 mm grid smoothed by a Gaussian of σ = `deformation_smoothness_mm`
    and scaled to SD `deformation_sd_mm` per component (``config.anatomy``).
    """
    n = _deformation_grid_size(config.fov_mm)
    noise = rng.normal(size=(3, n, n, n))
    sigma = config.anatomy.deformation_smoothness_mm / DEFORMATION_GRID_MM
    field = np.stack([ndimage.gaussian_filter(c, sigma, mode="reflect") for c in noise])
    field *= config.anatomy.deformation_sd_mm / field.reshape(3, -1).std(axis=1)[:, None, None, None]
    return Anatomy(
        age=float(age), head_scale=float(head_scale), severity=float(severity), deformation=field.astype(np.float32)
    )


def draw_acquisition(site: SiteProfile, rng: np.random.Generator) -> Acquisition:
    """The site's mean pose and bias pattern plus this image's jitter."""
    pose = site.pose_deg + rng.normal(0.0, POSE_JITTER_DEG, size=3)
    shift = site.shift_mm + rng.normal(0.0, POSE_JITTER_MM, size=3)
    coeffs = np.asarray(site.bias_pattern) + rng.normal(0.0, BIAS_JITTER / 3.0, size=len(site.bias_pattern))
    return Acquisition(site=site, pose_deg=pose, shift_mm=shift, bias_coeffs=coeffs)


class Renderer:
    """Renders slices (and volumes) of one cohort configuration; holds the prepared template."""

    def __init__(self, config: ImageCohortConfig, *, volumes: bool = False) -> None:
        self.config = config
        self.volumes = volumes
        z = config.slice_z_mm
        self.template: Template = load_template(None if volumes else (z - SLAB_HALF_WIDTH_MM, z + SLAB_HALF_WIDTH_MM))
        self.centre = np.array([*FOV_CENTRE_XY_MM, z])
        self.pixel_mm = config.fov_mm / config.size
        self.supersample = max(1, int(np.ceil(self.pixel_mm / SUPERSAMPLE_MM)))
        self._means = self.template.tissue_means

    # ------------------------------------------------------------------ geometry
    def slice_affine(self) -> np.ndarray:
        """Voxel (i, j, 0) → MNI mm of the axial slice (2D NIfTI)."""
        return self.volume_affine() @ _translation(0, 0, self.config.size // 2)

    def volume_affine(self) -> np.ndarray:
        """Voxel (i, j, k) → MNI mm; voxel (S/2, S/2, S/2) is the FOV centre on the slice."""
        px, half = self.pixel_mm, self.config.size // 2
        affine = np.diag([px, px, px, 1.0])
        affine[:3, 3] = self.centre - half * px
        return affine

    def _slice_points(self, site: SiteProfile) -> np.ndarray:
        """Scanner-space sample points (nz, M, M, 3) of the supersampled slice of the site's thickness."""
        size, ss, px = self.config.size, self.supersample, self.pixel_mm
        m = size * ss
        offsets = (np.arange(m) + 0.5) * (px / ss) - (size // 2 + 0.5) * px
        nz = max(1, int(np.ceil(site.slice_thickness_mm / THICKNESS_STEP_MM)))
        dz = ((np.arange(nz) + 0.5) / nz - 0.5) * (site.slice_thickness_mm if nz > 1 else 0.0)
        x, y = np.meshgrid(offsets + self.centre[0], offsets + self.centre[1], indexing="ij")
        points = np.empty((nz, m, m, 3), dtype=np.float32)
        points[..., 0], points[..., 1] = x, y
        points[..., 2] = (self.centre[2] + dz)[:, None, None]
        return points

    def _pixel_centres(self) -> np.ndarray:
        """Scanner-space centres (size, size, 3) of the slice's pixels."""
        size, px = self.config.size, self.pixel_mm
        x, y = [self.centre[i] + (np.arange(size) - size // 2) * px for i in range(2)]
        grid = np.stack([*np.meshgrid(x, y, indexing="ij"), np.full((size, size), self.centre[2])], axis=-1)
        return grid.astype(np.float32)

    def _volume_points(self) -> np.ndarray:
        size, px = self.config.size, self.pixel_mm
        axes = [self.centre[i] + (np.arange(size) - size // 2) * px for i in range(3)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)

    def to_template(self, points: np.ndarray, anatomy: Anatomy, acquisition: Acquisition) -> np.ndarray:
        """Map scanner points (..., 3) to template MNI mm through pose, head size, warp, ventricles."""
        c = self.centre.astype(np.float32)
        rotation = _rotation(acquisition.pose_deg).astype(np.float32)
        x = (points - c) @ rotation.T + c + acquisition.shift_mm.astype(np.float32)
        x = c + (x - c) / np.float32(anatomy.head_scale)
        x = x + self._displacement(x, anatomy)
        return _expand_ventricles(x, self._ventricle_a(anatomy.age))

    def _displacement(self, x: np.ndarray, anatomy: Anatomy) -> np.ndarray:
        n = anatomy.deformation.shape[-1]
        origin = self.centre - DEFORMATION_GRID_MM * (n - 1) / 2
        idx = (x - origin.astype(np.float32)) / np.float32(DEFORMATION_GRID_MM)
        field = torch.from_numpy(anatomy.deformation)[None]
        return np.moveaxis(_trilinear(field, idx), 0, -1)

    def _ventricle_a(self, age: float) -> float:
        ageing = self.config.ageing
        return ageing.ventricle_expansion_per_year * max(age - ageing.reference_age, 0.0)

    # ------------------------------------------------------------------ tissue
    def tissue(self, template_mm: np.ndarray, anatomy: Anatomy) -> tuple[np.ndarray, np.ndarray]:
        """Template T1 signal with age and disease changes, and the brain mask, at `template_mm`."""
        idx = template_mm - self.template.origin_mm.astype(np.float32)
        names = CHANNELS if anatomy.severity > 0 else CHANNELS[:4]
        ch = dict(zip(names, _trilinear(self.template.maps, idx, [CHANNELS.index(n) for n in names])))
        ageing, disease = self.config.ageing, self.config.disease
        years = max(anatomy.age - ageing.reference_age, 0.0)
        widening = ageing.sulcal_widening_mm_per_year * years
        loss = ageing.cortical_gm_loss_per_year * years + np.clip(widening - ch["dist_csf"] + 1.0, 0.0, 1.0)
        if anatomy.severity > 0:
            loss = loss + anatomy.severity * disease.motor_gm_loss * ch["motor"]
        gm_lost = ch["gm_cortex"] * np.clip(loss, 0.0, 1.0)
        m = self._means
        signal = ch["t1"] + gm_lost * (m["csf"] - m["gm"])
        if anatomy.severity > 0:
            signal = signal + anatomy.severity * disease.cst_contrast_loss * ch["wm_cst"] * (m["gm"] - m["wm"])
        return signal * (ch["mask"] > 0), ch["mask"]

    # ------------------------------------------------------------------ images
    def render_slice(self, anatomy: Anatomy, acquisition: Acquisition, rng: np.random.Generator) -> np.ndarray:
        """The medial axial slice, (size, size) float32 in [0, 1]."""
        site, ss = acquisition.site, self.supersample
        points = self._slice_points(site)
        signal, mask = self.tissue(self.to_template(points, anatomy, acquisition), anatomy)
        signal = site.transfer_curve(self._means)(signal).astype(np.float32).mean(axis=0)
        mask = mask.mean(axis=0)
        sigma = site.fwhm_mm / 2.3548 / (self.pixel_mm / ss)
        signal = ndimage.gaussian_filter(signal, sigma, mode="constant")
        signal, mask = _block_mean(signal, ss), _block_mean(mask, ss)
        return self._acquire(signal, mask > 0.5, self._pixel_centres(), acquisition, rng)

    def render_volume(self, anatomy: Anatomy, acquisition: Acquisition, rng: np.random.Generator) -> np.ndarray:
        """The whole volume, (size, size, size) float32 in [0, 1]."""
        if not self.volumes:
            raise RuntimeError("this Renderer holds a template slab for slices only; build it with volumes=True")
        site, px = acquisition.site, self.pixel_mm
        points = self._volume_points()
        signal, mask = self.tissue(self.to_template(points, anatomy, acquisition), anatomy)
        signal = site.transfer_curve(self._means)(signal).astype(np.float32)
        sigma_xy = site.fwhm_mm / 2.3548 / px
        sigma_z = np.hypot(sigma_xy, site.slice_thickness_mm / np.sqrt(12.0) / px)
        signal = ndimage.gaussian_filter(signal, (sigma_xy, sigma_xy, sigma_z), mode="constant")
        return self._acquire(signal, mask > 0.5, points, acquisition, rng)

    def _acquire(self, signal, brain, scanner_mm, acquisition: Acquisition, rng) -> np.ndarray:
        """Bias field, Rician noise, skull stripping, normalisation to [0, 1]."""
        site = acquisition.site
        signal = signal * _bias_field(
            scanner_mm - self.centre.astype(np.float32), acquisition.bias_coeffs, site.bias_strength
        )
        sigma = site.noise_sigma
        real = signal + rng.normal(0.0, sigma, size=signal.shape).astype(np.float32)
        imag = rng.normal(0.0, sigma, size=signal.shape).astype(np.float32)
        image = np.sqrt(real * real + imag * imag) * brain
        inside = image[brain]
        scale = np.percentile(inside, NORMALISE_PERCENTILE) if inside.size else 1.0
        return np.clip(image / max(scale, 1e-6), 0.0, 1.0).astype(np.float32)


def _deformation_grid_size(fov_mm: float) -> int:
    return int(np.ceil(fov_mm * 1.3 / DEFORMATION_GRID_MM)) + 1


def _expand_ventricles(x: np.ndarray, a: float) -> np.ndarray:
    """x ↦ v + (x − v)(1 − a g(x)): magnifies the ventricles by 1/(1 − a) at their centre."""
    if a <= 0:
        return x
    v = np.asarray(VENTRICLE_CENTRE_MM, dtype=np.float32)
    d = x - v
    g = np.exp(-0.5 * np.sum((d / np.asarray(VENTRICLE_SD_MM, dtype=np.float32)) ** 2, axis=-1))
    return v + d * (1.0 - np.float32(a) * g)[..., None]


def _trilinear(volume: torch.Tensor, idx: np.ndarray, channels: list[int] | None = None) -> np.ndarray:
    """Sample a (1, C, X, Y, Z) tensor at voxel indices `idx` (..., 3); zero outside. Returns (C', ...).

    Channels are sampled one at a time: torch's single-channel path is several times faster per
    channel than its multi-channel one on CPU.
    """
    channels = list(range(volume.shape[1])) if channels is None else channels
    shape = np.asarray(volume.shape[2:], dtype=np.float32)
    flat = idx.reshape(-1, 3)
    grid = (2.0 * flat / (shape - 1.0) - 1.0)[:, ::-1].astype(np.float32)
    grid_t = torch.from_numpy(np.ascontiguousarray(grid)).view(1, 1, 1, -1, 3)
    out = np.empty((len(channels), flat.shape[0]), dtype=np.float32)
    with torch.no_grad():
        for i, c in enumerate(channels):
            sampled = torch.nn.functional.grid_sample(
                volume[:, c : c + 1], grid_t, mode="bilinear", padding_mode="zeros", align_corners=True
            )
            out[i] = sampled.reshape(-1).numpy()
    return out.reshape(len(channels), *idx.shape[:-1])


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    """Rotation matrix R = Rz(yaw) Ry(roll) Rx(pitch)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _bias_field(offset_mm: np.ndarray, coeffs: np.ndarray, strength: float) -> np.ndarray:
    """exp(strength · p(u)), p a quadratic polynomial in u = offset / BIAS_SCALE_MM (9 terms)."""
    u = offset_mm / np.float32(BIAS_SCALE_MM)
    x, y, z = u[..., 0], u[..., 1], u[..., 2]
    terms = (x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
    log_field = sum(np.float32(c) * t for c, t in zip(coeffs, terms))
    return np.exp(np.float32(strength) * log_field).astype(np.float32)


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    m = image.shape[0] // factor
    return image.reshape(m, factor, m, factor).mean(axis=(1, 3))


def _translation(x: float, y: float, z: float) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = (x, y, z)
    return t
