"""`neurodiff preprocess`: raw T1 NIfTI files → registered, bias-corrected, skull-stripped slices."""

from __future__ import annotations

from pathlib import Path

import typer

#: Exit status when the run finished but some subjects failed (2 is a usage or manifest error).
SOME_FAILED_EXIT_CODE = 1


def preprocess(
    manifest: Path = typer.Option(..., "--manifest", help="CSV with subject_id, path (T1 NIfTI, relative to the "
                                  "manifest's folder or absolute) and any covariates (age, sex, site, group, "
                                  "time, event, ...), which are copied to OUT/manifest.csv."),
    out: Path = typer.Option(..., "--out", help="Output folder: OUT/<subject_id>/... and OUT/manifest.csv."),
    jobs: int = typer.Option(1, "--jobs", help="Subjects processed at once, each in its own process."),
    slices: int = typer.Option(1, "--slices", help="Axial slices per subject (slice_<k>.nii.gz when more than 1)."),
    slice_z: float = typer.Option(22.0, "--slice-z", help="MNI z (mm) of the (middle) slice; 22 is the medial "
                                  "axial slice of the MNI152 grid, as in the embedded cohorts."),
    slice_spacing: float = typer.Option(4.0, "--slice-spacing", help="Spacing (mm) between several slices."),
    size: int = typer.Option(128, "--size", help="Slice size in pixels (size × size over a 200 mm field of view)."),
    grid: int = typer.Option(130, "--grid", help="Template-space volume: GRID³ voxels (the papers: 130)."),
    spacing: float = typer.Option(1.5, "--spacing", help="Voxel size (mm) of the template-space volume."),
    skull_strip: str = typer.Option("template", "--skull-strip", help="template (offline: the MNI152 brain mask "
                                    "carried through the registration and refined) or hd-bet (needs the hd-bet "
                                    "command and its weights)."),
    no_n4: bool = typer.Option(False, "--no-n4", help="Skip N4 bias-field correction."),
    no_refine: bool = typer.Option(False, "--no-refine", help="Use the carried template mask as is."),
    no_qc: bool = typer.Option(False, "--no-qc", help="Do not draw the QC picture."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo subjects whose folder holds a result from "
                                   "another input file or other settings (finished ones are skipped otherwise)."),
) -> None:
    """Preprocess raw T1 scans: reorient to RAS, N4 bias correction, affine registration to the MNI152
    template, skull stripping, normalisation to [0, 1], resampling to the template grid and axial slices.

    Writes OUT/<subject_id>/ with brain.nii.gz, brain_mask.nii.gz (template space),
    native_brain_mask.nii.gz (input grid), slice.nii.gz, the transform (template_to_native.tfm,
    native_to_template.txt), qc.png and preprocess.json; and OUT/manifest.csv, which neurodiff harmonize
    and normative read directly. A failed subject is reported (OUT/failures.csv) and skipped; the others
    go on, and the exit status is 1. A re-run skips subjects already done. About 35–55 s per 1 mm head on
    2 CPU cores.

    Example:  neurodiff preprocess --manifest scans/manifest.csv --out prepared --jobs 2
    """
    from neurodiff.data.preprocess import PreprocessConfig, preprocess_manifest

    try:
        config = PreprocessConfig(
            n4=not no_n4, grid_shape=grid, grid_spacing_mm=spacing, skull_strip=skull_strip,
            refine_mask=not no_refine, slices=slices, slice_z_mm=slice_z, slice_spacing_mm=slice_spacing,
            slice_size=size, qc=not no_qc,
        )
        summary = preprocess_manifest(manifest, out, config, jobs=jobs, overwrite=overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        typer.echo(f"neurodiff preprocess: {error}", err=True)
        raise typer.Exit(2) from error
    except OSError as error:  # e.g. the disk is full: the subject folders written so far are complete
        typer.echo(f"neurodiff preprocess: cannot write to {out}: {error}. Free some space and run the same "
                   "command again; finished subjects are skipped.", err=True)
        raise typer.Exit(2) from error
    done, skipped, failed = summary.done, summary.skipped, summary.failed
    typer.echo(f"{len(done)} subject(s) preprocessed, {len(skipped)} already done (skipped), {len(failed)} failed.")
    if summary.manifest_path is not None:
        typer.echo(f"Output manifest: {summary.manifest_path}")
    for warning in summary.warnings:
        typer.echo(f"Warning: {warning}", err=True)
    if failed:  # each was printed as it failed; the file keeps them
        typer.echo(f"The failures and their reasons are listed in {summary.failures_path}.", err=True)
        raise typer.Exit(SOME_FAILED_EXIT_CODE)
