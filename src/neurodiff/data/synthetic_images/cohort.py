"""Generate a cohort: plan it, render every image, write NIfTI files, manifest, sites and metadata.

The output folder is assembled in a temporary sibling and renamed at the end
(:func:`neurodiff.atomic.atomic_dir`): a failure or an interruption leaves nothing behind.

Layout::

    OUT/
      manifest.csv     one row per image (image-cohort contract + true_* ground-truth columns)
      manifest-3d.csv  the same rows with ``path`` naming the volumes (only with volumes=True)
      sites.csv        each site's demographics and acquisition parameters (ground truth)
      cohort.json      configuration, counts, template tissue levels, regions, affines
      images/          2D NIfTI slices, sub-NNNNN_ses-N.nii.gz
      volumes/         3D NIfTI volumes (only with volumes=True)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from neurodiff import __version__
from neurodiff.atomic import atomic_dir, write_json
from neurodiff.data.synthetic_images import template as template_module
from neurodiff.data.synthetic_images.config import ImageCohortConfig
from neurodiff.data.synthetic_images.render import (
    Acquisition,
    Anatomy,
    Renderer,
    draw_acquisition,
    draw_anatomy,
)
from neurodiff.data.synthetic_images.sites import SiteProfile, make_sites, sites_table
from neurodiff.data.synthetic_images.subjects import plan_cohort

#: The image-cohort contract's columns (ARCHITECTURE.md), first in the manifest.
CONTRACT_COLUMNS = ("subject_id", "path", "age", "sex", "site", "group", "time", "event", "session")

#: Ground truth a real study would not have, after the contract columns.
TRUTH_COLUMNS = (
    "true_severity",
    "true_traveller_id",
    "true_reference_path",
    "true_head_scale",
    "true_ventricle_magnification",
    "true_cortical_gm_loss",
    "true_sulcal_widening_mm",
    "true_pitch_deg",
    "true_roll_deg",
    "true_yaw_deg",
    "true_shift_x_mm",
    "true_shift_y_mm",
    "true_shift_z_mm",
)

# Spawn keys of the independent random streams (one per purpose, subject and image).
_SITES, _PLAN, _ANATOMY, _ACQUISITION, _VOLUME_NOISE = range(5)


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """The generator of one random stream: same seed and key → same numbers, in any order."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


@dataclasses.dataclass(frozen=True)
class RenderedImage:
    """One planned image, its ground truth and its pixels (and voxels with volumes)."""

    row: dict
    anatomy: Anatomy
    acquisition: Acquisition
    slice: np.ndarray
    volume: np.ndarray | None


def plan(config: ImageCohortConfig) -> tuple[list[SiteProfile], pd.DataFrame]:
    """The sites and the per-image plan of a validated configuration (no rendering)."""
    config.validate()
    sites = make_sites(config.n_sites, rng_for(config.seed, _SITES))
    return sites, plan_cohort(config, sites, rng_for(config.seed, _PLAN))


def iter_images(
    config: ImageCohortConfig, *, progress: bool = False, renderer: Renderer | None = None
) -> Iterator[RenderedImage]:
    """Render the cohort image by image, in plan order, without writing anything."""
    sites, rows = plan(config)
    by_name = {site.name: site for site in sites}
    renderer = renderer or Renderer(config, volumes=config.volumes)
    cached: tuple[int, Anatomy] | None = None
    bar = tqdm(total=len(rows), desc="synth images", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for row in rows.to_dict("records"):
            index, session = int(row["subject_index"]), int(row["session"])
            if cached is None or cached[0] != index:
                anatomy_rng = rng_for(config.seed, _ANATOMY, index)
                cached = (index, draw_anatomy(config, row["age"], row["head_scale"], row["severity"], anatomy_rng))
            anatomy = cached[1]
            acquisition_rng = rng_for(config.seed, _ACQUISITION, index, session)
            acquisition = draw_acquisition(by_name[row["site"]], acquisition_rng)
            image = renderer.render_slice(anatomy, acquisition, acquisition_rng)
            volume = None
            if config.volumes:
                volume = renderer.render_volume(
                    anatomy, acquisition, rng_for(config.seed, _VOLUME_NOISE, index, session)
                )
            bar.update(1)
            yield RenderedImage(row=row, anatomy=anatomy, acquisition=acquisition, slice=image, volume=volume)
    finally:
        bar.close()


def generate_image_cohort(
    config: ImageCohortConfig,
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Generate the cohort into `out_dir` and return its manifest (paths relative to `out_dir`).

    Parameters
    ----------
    config
        What to generate; validated first (ValueError naming the bad value, nothing written).
    out_dir
        Output folder; must be absent or empty unless `overwrite`. Written atomically.
    progress
        Show a progress bar (stderr).
    overwrite
        Replace an existing non-empty folder (only once the new one is complete).
    """
    config.validate()
    out_dir = Path(out_dir)
    sites, _ = plan(config)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        renderer = Renderer(config, volumes=config.volumes)
        (tmp / "images").mkdir()
        if config.volumes:
            (tmp / "volumes").mkdir()
        records = []
        for item in iter_images(config, progress=progress, renderer=renderer):
            records.append(_write_image(tmp, item, renderer, config))
        manifest = _manifest(records, config)
        manifest.to_csv(tmp / "manifest.csv", index=False)
        if config.volumes:
            volume_manifest(manifest).to_csv(tmp / "manifest-3d.csv", index=False)
        sites_table(sites).to_csv(tmp / "sites.csv", index=False)
        write_json(tmp / "cohort.json", _metadata(config, renderer, manifest))
    return manifest


def volume_manifest(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest of the 3D volumes: ``path`` (and the travellers' reference) names the volumes."""
    to_volume = dict(zip(manifest["path"], manifest["volume_path"]))
    volumes = manifest.drop(columns=["volume_path"]).assign(path=manifest["volume_path"])
    volumes["true_reference_path"] = [to_volume.get(p, "") for p in manifest["true_reference_path"]]
    return volumes


def _write_image(folder: Path, item: RenderedImage, renderer: Renderer, config: ImageCohortConfig) -> dict:
    row = item.row
    stem = f"{row['subject_id']}_ses-{int(row['session'])}"
    path = f"images/{stem}.nii.gz"
    _save_nifti(item.slice, renderer.slice_affine(), folder / path)
    record = {**row, "path": path, "acquisition": item.acquisition}  # no anatomy: its warp is large
    if item.volume is not None:
        record["volume_path"] = f"volumes/{stem}.nii.gz"
        _save_nifti(item.volume, renderer.volume_affine(), folder / record["volume_path"])
    return record


def _save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(data.astype(np.float32), affine)
    image.header.set_xyzt_units("mm")
    image.set_sform(affine, code="mni")
    image.set_qform(affine, code="mni")
    nib.save(image, path)


def _manifest(records: list[dict], config: ImageCohortConfig) -> pd.DataFrame:
    ageing = config.ageing
    rows = []
    reference = {
        r["traveller_id"]: r["path"] for r in records if r["traveller_id"] and r["site"] == config.reference_site
    }
    for r in records:
        years = max(r["age"] - ageing.reference_age, 0.0)
        acq: Acquisition = r["acquisition"]
        row = {
            "subject_id": r["subject_id"],
            "path": r["path"],
            "age": round(float(r["age"]), 2),
            "sex": r["sex"],
            "site": r["site"],
            "group": r["group"],
            "time": r["time"],
            "event": r["event"],
            "session": int(r["session"]),
            "true_severity": round(float(r["severity"]), 6),
            "true_traveller_id": r["traveller_id"],
            "true_reference_path": reference.get(r["traveller_id"], ""),
            "true_head_scale": round(float(r["head_scale"]), 6),
            "true_ventricle_magnification": round(1.0 / (1.0 - ageing.ventricle_expansion_per_year * years), 6),
            "true_cortical_gm_loss": round(ageing.cortical_gm_loss_per_year * years, 6),
            "true_sulcal_widening_mm": round(ageing.sulcal_widening_mm_per_year * years, 6),
        }
        for name, value in zip(("pitch", "roll", "yaw"), acq.pose_deg):
            row[f"true_{name}_deg"] = round(float(value), 4)
        for name, value in zip("xyz", acq.shift_mm):
            row[f"true_shift_{name}_mm"] = round(float(value), 4)
        if "volume_path" in r:
            row["volume_path"] = r["volume_path"]
        rows.append(row)
    columns = list(CONTRACT_COLUMNS) + list(TRUTH_COLUMNS) + (["volume_path"] if config.volumes else [])
    manifest = pd.DataFrame(rows, columns=columns)
    manifest["event"] = manifest["event"].astype("Int64")
    return manifest


def _metadata(config: ImageCohortConfig, renderer: Renderer, manifest: pd.DataFrame) -> dict:
    groups = manifest["group"].value_counts().to_dict()
    return {
        "generator": "neurodiff.data.synthetic_images",
        "neurodiff_version": __version__,
        "config": dataclasses.asdict(config),
        "reference_site": config.reference_site,
        "counts": {
            "images": len(manifest),
            "subjects": int(manifest["subject_id"].nunique()),
            # images, not subjects: a travelling control is counted at every site that imaged them
            "control_images": int(groups.get("control", 0)),
            "patient_images": int(groups.get("patient", 0)),
            "traveller_images": int((manifest["true_traveller_id"] != "").sum()),
            "per_site": manifest["site"].value_counts().sort_index().to_dict(),
            "events": int(manifest["event"].fillna(0).sum()),
        },
        "template": {
            "source": "MNI152 (nilearn.datasets.load_mni152_template and tissue maps, 1 mm)",
            "tissue_means": renderer.template.tissue_means,
            "ventricle_centre_mm": template_module.VENTRICLE_CENTRE_MM,
            "ventricle_sd_mm": template_module.VENTRICLE_SD_MM,
            "motor_path_mm": template_module.MOTOR_PATH_MM,
            "motor_sd_mm": template_module.MOTOR_SD_MM,
            "cst_path_mm": template_module.CST_PATH_MM,
            "cst_sd_mm": template_module.CST_SD_MM,
        },
        "slice_affine": renderer.slice_affine(),
        "volume_affine": renderer.volume_affine() if config.volumes else None,
        "pixel_mm": renderer.pixel_mm,
    }
