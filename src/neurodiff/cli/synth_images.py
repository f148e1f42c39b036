"""`neurodiff synth images`: the embedded multi-site synthetic T1 cohort with known ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

# Config fields → the options that set them, so that error messages name what the user typed.
_OPTION_NAMES = {
    "n_sites": "--sites",
    "n_controls": "--controls",
    "n_travellers": "--travellers",
    "n_patients": "--patients",
    "size": "--size",
    "seed": "--seed",
}


def images(
    out: Path = typer.Option(..., "--out", help="Output folder (created; must be absent or empty unless --overwrite)."),
    quick: bool = typer.Option(
        False, "--quick", help="CPU-minutes cohort: 150 controls, 4 travellers, 40 patients at 64×64."
    ),
    size: int | None = typer.Option(
        None, "--size", help="Slice size in pixels: 32, 64, 128, 256 or 512 (default 128; 64 with --quick)."
    ),
    sites: int | None = typer.Option(None, "--sites", help="Number of sites, site0 the reference (default 7)."),
    controls: int | None = typer.Option(
        None, "--controls", help="Healthy controls imaged once (default 4050; 150 with --quick)."
    ),
    travellers: int | None = typer.Option(
        None, "--travellers", help="Travelling controls imaged at every site (default 10; 4 with --quick)."
    ),
    patients: int | None = typer.Option(
        None, "--patients", help="ALS-like patients with severity and survival (default 200; 40 with --quick)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed and options give identical files."),
    volumes: bool = typer.Option(False, "--volumes", help="Also write the 3D volumes (size³; large) and manifest-3d.csv, whose path column names them."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a non-empty --out once the new cohort is complete."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr."),
) -> None:
    """Generate a multi-site cohort of brain T1 slices from the MNI152 template, with ground truth.

    Subjects: random smooth deformation, sex-dependent head size, ageing atrophy.
    Sites: intensity curve, contrast, bias field, Rician noise, blur, pose;
    each site has its own age and sex mix (site and biology are confounded).
    Travellers: the same subject imaged at every site (harmonisation truth).
    Patients: ALS-like motor-cortex and corticospinal changes from a latent
    severity that also sets survival (Weibull proportional hazards, censored).

    Writes OUT/manifest.csv (image-cohort contract + true_* columns),
    sites.csv, cohort.json and images/*.nii.gz (2D NIfTI, values in [0, 1]).
    Effect sizes: docs/synthetic-images.md

    Example:  neurodiff synth images --quick --out synthetic-images
    """
    from neurodiff.data.synthetic_images import ImageCohortConfig, generate_image_cohort

    overrides = {
        "size": size,
        "n_sites": sites,
        "n_controls": controls,
        "n_travellers": travellers,
        "n_patients": patients,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    preset = ImageCohortConfig.quick if quick else ImageCohortConfig.paper
    try:
        config = preset(seed=seed, volumes=volumes, **overrides)
        config.validate()
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"--out {out} is a file, not a folder; choose a folder (--overwrite replaces "
                                  "a folder's contents, never a file)")
        if out.exists() and any(out.iterdir()) and not overwrite:
            raise FileExistsError(
                f"--out {out} exists and is not an empty folder; choose another folder or pass --overwrite"
            )
        manifest = generate_image_cohort(config, out, progress=progress, overwrite=overwrite)
    except (ValueError, FileExistsError) as error:
        typer.echo(f"neurodiff synth images: error: {_with_option_names(str(error))}. Nothing was written.", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"Wrote {len(manifest)} images of {manifest['subject_id'].nunique()} subjects from {config.n_sites} sites "
        f"({config.size}×{config.size}) to {out}; manifest: {out / 'manifest.csv'}"
    )


def _with_option_names(message: str) -> str:
    for field, option in _OPTION_NAMES.items():
        message = message.replace(f"{field}=", f"{option}=")
    return message.rstrip(".")
