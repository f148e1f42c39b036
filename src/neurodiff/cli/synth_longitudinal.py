"""`neurodiff synth longitudinal`: the embedded UK-Biobank-like longitudinal feature table."""

from __future__ import annotations

import time
from pathlib import Path

import typer

BAD_INPUT_EXIT_CODE = 2


def longitudinal(
    out: Path = typer.Option(..., "--out", metavar="FILE",
                             help="Table to write: .csv or .parquet (chosen by the extension)."),
    quick: bool = typer.Option(False, "--quick",
                               help="CPU-minutes size: 3,000 subjects, 600 with a follow-up, 128 features."),
    subjects: int | None = typer.Option(None, "--subjects", metavar="N",
                                        help="Subjects with a first visit (default 41,706; 3,000 with --quick)."),
    paired: int | None = typer.Option(None, "--paired", metavar="N",
                                      help="Subjects with a follow-up visit (default 4,997; 600 with --quick; with --subjects alone, "
                                           "the preset's share: 12 %, 20 % with --quick)."),
    features: int | None = typer.Option(None, "--features", metavar="N",
                                        help="Feature columns, 8 to 769 (default 769; 128 with --quick)."),
    missing: float | None = typer.Option(None, "--missing", metavar="FRACTION",
                                         help="Fraction of feature cells set to NaN (default 0.005)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same table."),
    truth: bool = typer.Option(True, "--truth/--no-truth",
                               help="Also write the planted ground truth as FILE.truth.json (long.csv → long.csv.truth.json)."),
) -> None:
    """Generate the synthetic longitudinal table of regional brain features (SECONDGRAM's data).

    One row per subject and visit: subject_id, visit (1, 2), years_since_first, 14 labels (sex, age, townsend, two polygenic scores, eight diagnoses, died) and the features (regional volumes, areas, thicknesses). Generative model and planted effects: docs/synthetic-longitudinal.md.

    Example:  neurodiff synth longitudinal --quick --out long.csv
    """  # noqa: E501 (typer keeps the docstring's line breaks)
    from neurodiff.data import synthetic_longitudinal as sl

    try:
        config = _config(quick, subjects, paired, features, missing, seed).validate()
        path = sl.check_table_path(out)
    except ValueError as error:
        typer.echo(f"Error: {error}. Nothing was written.", err=True)
        raise typer.Exit(BAD_INPUT_EXIT_CODE) from None
    start = time.perf_counter()
    typer.echo(f"Generating {config.n_subjects:,} subjects ({config.n_paired:,} with a follow-up), "
               f"{config.n_features} features, seed {config.seed} ...", err=True)
    frame = sl.generate_longitudinal(config, progress=True)
    typer.echo(f"Writing {path} ...", err=True)
    try:
        sl.write_table(frame, path, truth=sl.planted_truth(config) if truth else None)
    except OSError as error:
        typer.echo(f"Error: could not write {path}: {error}. Nothing was written.", err=True)
        raise typer.Exit(1) from None
    extra = f"; ground truth: {sl.truth_path(path)}" if truth else ""
    typer.echo(f"Wrote {len(frame):,} rows: {config.n_subjects:,} subjects, {config.n_paired:,} paired, "
               f"{config.n_features} features to {path} in {time.perf_counter() - start:.1f} s{extra}")


def _config(quick: bool, subjects: int | None, paired: int | None, features: int | None,
            missing: float | None, seed: int):
    """The preset (paper or quick) with the options given on the command line."""
    from neurodiff.data.synthetic_longitudinal import LongitudinalConfig

    preset = LongitudinalConfig.quick if quick else LongitudinalConfig.paper
    if subjects is not None and paired is None and subjects > 0:  # keep the preset's share with a follow-up
        base = preset(seed=seed)
        paired = max(1, round(subjects * base.n_paired / base.n_subjects))
    changes = {"n_subjects": subjects, "n_paired": paired, "n_features": features, "missing_fraction": missing}
    changes = {key: value for key, value in changes.items() if value is not None}
    return preset(seed=seed, **changes)
