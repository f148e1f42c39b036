"""One scan through the whole preprocessing, and its files on disk.

:func:`preprocess_scan` runs the steps of METHODS.md "Shared preprocessing" in order on one T1 file —
load and reorient to RAS, N4, affine registration to MNI152, skull stripping, normalisation to [0, 1],
resampling to the template grid, axial slices — and returns everything in memory.
:func:`write_scan` writes the fixed output layout of one subject (see :data:`OUTPUT_FILES`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from neurodiff import __version__
from neurodiff.atomic import write_bytes, write_json
from neurodiff.data.preprocess.bias import BiasCorrection, n4_bias_correct
from neurodiff.data.preprocess.intensity import normalise_intensity
from neurodiff.data.preprocess.qc import qc_png
from neurodiff.data.preprocess.registration import (
    AffineRegistration,
    Template,
    check_seed,
    load_template,
    register_to_template,
    resample,
    template_grid,
    to_template,
)
from neurodiff.data.preprocess.skull_strip import SKULL_STRIP_METHODS, hdbet_brain_mask, template_brain_mask
from neurodiff.data.preprocess.slices import axial_slices, slice_positions
from neurodiff.data.preprocess.volume import PreprocessError, load_t1, reorient_like

#: The files of one subject's output folder (slice.nii.gz becomes slice_<k>.nii.gz for several slices).
OUTPUT_FILES = {
    "brain.nii.gz": "skull-stripped T1 in template space, intensities in [0, 1]",
    "brain_mask.nii.gz": "brain mask in template space",
    "native_brain_mask.nii.gz": "brain mask on the input image's own grid and affine",
    "slice.nii.gz": "axial template-space slice(s), (size, size, 1), intensities in [0, 1]",
    "template_to_native.tfm": "the affine registration as an ITK transform (template → native, LPS mm)",
    "native_to_template.txt": "the same registration as a 4×4 matrix, native → template, RAS mm",
    "qc.png": "quality-control picture: mask outline, bias correction, registration",
    "preprocess.json": "provenance: input, settings, timings, registration metric, brain volume",
}


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of the preprocessing (the defaults are the papers' where they say, see METHODS.md).

    Attributes
    ----------
    n4, n4_shrink, n4_iterations
        Run N4 bias-field correction, fitted on a copy shrunk by `n4_shrink`, with these iterations per level.
    registration_shrink, registration_sampling
        Resolution levels and metric sampling share of the final affine registration stage.
    grid_shape, grid_spacing_mm
        The template-space grid of brain.nii.gz: `grid_shape`³ voxels of `grid_spacing_mm` (130³ in the papers).
    skull_strip, refine_mask, mask_band_mm
        Skull-stripping backend ("template" or "hd-bet"), and for "template" whether and how far (mm) the
        carried mask's border is refined on the image.
    percentiles
        Brain intensity percentiles mapped to 0 and 1.
    slices, slice_z_mm, slice_spacing_mm, slice_size, slice_fov_mm
        Number of axial slices, the MNI z of their centre, their spacing, pixels per side and field of view.
    qc
        Write the QC picture.
    seed
        Seed of the registration metric's sampling.
    """

    n4: bool = True
    n4_shrink: int = 4
    n4_iterations: tuple[int, ...] = (50, 50, 50, 50)
    registration_shrink: tuple[int, ...] = (4, 2, 1)
    registration_sampling: float = 0.05
    grid_shape: int = 130
    grid_spacing_mm: float = 1.5
    skull_strip: str = "template"
    refine_mask: bool = True
    mask_band_mm: float = 4.0
    percentiles: tuple[float, float] = (0.5, 99.5)
    slices: int = 1
    slice_z_mm: float = 22.0
    slice_spacing_mm: float = 4.0
    slice_size: int = 128
    slice_fov_mm: float = 200.0
    qc: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n4_iterations", "registration_shrink", "percentiles"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.skull_strip not in SKULL_STRIP_METHODS:
            raise ValueError(f"skull_strip must be one of {', '.join(SKULL_STRIP_METHODS)}, not {self.skull_strip!r}")
        if self.n4_shrink < 1 or not self.n4_iterations or min(self.n4_iterations) < 1:
            raise ValueError("n4_shrink and n4_iterations must be positive")
        if not self.registration_shrink or min(self.registration_shrink) < 1:
            raise ValueError(f"registration_shrink must be positive, not {self.registration_shrink!r}")
        if not 0.0 < self.registration_sampling <= 1.0:
            raise ValueError(f"registration_sampling must be in (0, 1], not {self.registration_sampling!r}")
        if self.grid_shape < 2 or not self.grid_spacing_mm > 0:
            raise ValueError(f"the template grid needs grid_shape >= 2 and a positive spacing, not "
                             f"{self.grid_shape!r} × {self.grid_spacing_mm!r} mm")
        if self.mask_band_mm < 0:
            raise ValueError(f"mask_band_mm must be >= 0, not {self.mask_band_mm!r}")
        low, high = self.percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, not {self.percentiles!r}")
        slice_positions(self.slices, centre_mm=self.slice_z_mm, spacing_mm=self.slice_spacing_mm)
        check_seed(self.seed)
        if self.slice_size < 8 or not self.slice_fov_mm > 0:
            raise ValueError(f"slice_size must be >= 8 and slice_fov_mm positive, not {self.slice_size!r}, "
                             f"{self.slice_fov_mm!r}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> PreprocessConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing setting(s): {', '.join(unknown)}")
        return cls(**values)

    def slice_names(self) -> list[str]:
        """The slice file names: slice.nii.gz, or slice_0.nii.gz … for several."""
        return ["slice.nii.gz"] if self.slices == 1 else [f"slice_{k}.nii.gz" for k in range(self.slices)]


@dataclass
class PreprocessedScan:
    """Everything one scan's preprocessing produced (RAS-oriented images unless stated)."""

    source: Path
    original_affine: np.ndarray
    original_shape: tuple[int, ...]
    t1: nib.Nifti1Image
    bias: BiasCorrection | None
    registration: AffineRegistration
    native_mask: nib.Nifti1Image
    brain: nib.Nifti1Image
    brain_mask: nib.Nifti1Image
    slices: list[nib.Nifti1Image]
    slice_z_mm: list[float]
    timings: dict[str, float] = field(default_factory=dict)

    def native_mask_on_input_grid(self) -> nib.Nifti1Image:
        """The brain mask in the input file's own axis order, grid and affine."""
        mask = reorient_like(self.native_mask, self.original_affine)
        out = nib.Nifti1Image(np.asarray(mask.dataobj, dtype=np.uint8), self.original_affine)
        if out.shape != self.original_shape[:3]:
            raise RuntimeError(f"native mask shape {out.shape} differs from the input's {self.original_shape}")
        return out

    @property
    def brain_volume_ml(self) -> float:
        voxel_ml = abs(float(np.linalg.det(self.native_mask.affine[:3, :3]))) / 1000.0
        return float(np.count_nonzero(np.asarray(self.native_mask.dataobj))) * voxel_ml


def preprocess_scan(
    path: str | Path, config: PreprocessConfig = PreprocessConfig(), *, template: Template | None = None
) -> PreprocessedScan:
    """Run the whole preprocessing on one T1 NIfTI file (nothing is written).

    Raises
    ------
    PreprocessError
        The file is unusable, or a step failed (the message names the file and the step).
    """
    path = Path(path)
    template = template or load_template()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    t1 = load_t1(path)  # checks the file; after it, reading the original header cannot fail
    original = nib.load(path)
    original_shape, original_affine = tuple(int(n) for n in original.shape), np.asarray(original.affine, dtype=float)
    lap("load")
    try:
        bias = n4_bias_correct(t1, shrink=config.n4_shrink, iterations=config.n4_iterations) if config.n4 else None
        corrected = t1 if bias is None else bias.corrected
        lap("n4")
        registration = register_to_template(
            corrected, template=template, shrink_factors=config.registration_shrink,
            sampling=config.registration_sampling, seed=config.seed,
        )
        lap("registration")
        if config.skull_strip == "hd-bet":
            native_mask = hdbet_brain_mask(corrected)
        else:
            native_mask = template_brain_mask(corrected, registration, template=template,
                                              refine=config.refine_mask, band_mm=config.mask_band_mm)
        lap("skull_strip")
        mask = np.asarray(native_mask.dataobj) > 0
        normalised = normalise_intensity(np.asarray(corrected.dataobj), mask, percentiles=config.percentiles)
        native_brain = nib.Nifti1Image(normalised, t1.affine)
        lap("normalise")
        shape, grid_affine = template_grid(config.grid_shape, config.grid_spacing_mm, template)
        brain = to_template(native_brain, registration, shape, grid_affine)
        brain_mask = to_template(native_mask, registration, shape, grid_affine)
        brain_mask = nib.Nifti1Image((np.asarray(brain_mask.dataobj) > 0.5).astype(np.uint8), grid_affine)
        z_mm = slice_positions(config.slices, centre_mm=config.slice_z_mm, spacing_mm=config.slice_spacing_mm)
        slices = axial_slices(native_brain, registration, z_mm, size=config.slice_size, fov_mm=config.slice_fov_mm)
        lap("resample")
    except PreprocessError as error:
        raise PreprocessError(f"{path}: {error}") from error
    except RuntimeError as error:  # SimpleITK reports failures (e.g. a registration that diverged) this way
        raise PreprocessError(f"{path}: {str(error).strip().splitlines()[-1]}") from error
    return PreprocessedScan(
        source=path, original_affine=original_affine, original_shape=original_shape, t1=t1, bias=bias,
        registration=registration, native_mask=native_mask, brain=brain, brain_mask=brain_mask,
        slices=slices, slice_z_mm=z_mm, timings=timings,
    )


def write_scan(scan: PreprocessedScan, folder: str | Path, config: PreprocessConfig, *, subject_id: str,
               template: Template | None = None) -> None:
    """Write one subject's output files (:data:`OUTPUT_FILES`) into `folder` (which should be a fresh
    temporary folder that the caller renames into place)."""
    folder = Path(folder)
    start = time.perf_counter()
    _save(scan.brain, folder / "brain.nii.gz", space="mni")
    _save(scan.brain_mask, folder / "brain_mask.nii.gz", space="mni")
    _save(scan.native_mask_on_input_grid(), folder / "native_brain_mask.nii.gz", space="scanner")
    for name, image in zip(config.slice_names(), scan.slices):
        _save(image, folder / name, space="mni")
    scan.registration.save(folder / "template_to_native.tfm", folder / "native_to_template.txt")
    if config.qc:
        template = template or load_template()
        reference = resample(template.brain_mask, sitk.Transform(), scan.brain.shape, scan.brain.affine)
        middle = scan.slices[len(scan.slices) // 2]
        write_bytes(folder / "qc.png", qc_png(scan.t1, scan.bias, scan.native_mask, scan.brain, reference, middle,
                                              title=f"{subject_id}: {scan.source.name}"))
    timings = {**scan.timings, "write": round(time.perf_counter() - start, 3)}
    write_json(folder / "preprocess.json", {
        "subject_id": subject_id,
        "source": str(scan.source),
        "source_sha256": file_sha256(scan.source),
        "neurodiff_version": __version__,
        "settings": config.to_dict(),
        "slice_z_mm": scan.slice_z_mm,
        "slices": config.slice_names(),
        "registration_metric": scan.registration.metric,
        "native_to_template": scan.registration.native_to_template,
        "brain_volume_ml": round(scan.brain_volume_ml, 1),
        "seconds": {**timings, "total": round(sum(timings.values()), 3)},
    })


def _save(image: nib.Nifti1Image, path: Path, *, space: str) -> None:
    """Write atomically, with the space named in the header ("mni" for template-space files, "scanner"
    for native ones, as other tools read it) and millimetre units."""
    data = np.asarray(image.dataobj)
    kind = np.uint8 if data.dtype in (np.uint8, np.bool_) else np.float32
    out = nib.Nifti1Image(data.astype(kind), image.affine)
    out.header.set_xyzt_units("mm")
    out.set_qform(image.affine, code=space)
    out.set_sform(image.affine, code=space)
    payload = out.to_bytes()
    write_bytes(path, payload if path.suffix == ".nii" else gzip.compress(payload, compresslevel=6, mtime=0))


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_record(folder: str | Path) -> dict | None:
    """The preprocess.json of a finished subject folder, or None if there is none (or it is unreadable)."""
    try:
        return json.loads((Path(folder) / "preprocess.json").read_text())
    except (OSError, ValueError):
        return None


def settings_match(record: dict, config: PreprocessConfig) -> bool:
    return record.get("settings") == json.loads(json.dumps(config.to_dict()))
