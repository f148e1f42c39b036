"""`neurodiff synth images|longitudinal`: the embedded synthetic cohorts."""

from __future__ import annotations

import typer

from neurodiff.cli.not_built import NOT_BUILT_EXIT_CODE

app = typer.Typer(
    help="Embedded synthetic cohorts with known ground truth (images; longitudinal feature table).",
    no_args_is_help=True,
    add_completion=False,
)

_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command("images", context_settings=_SETTINGS)
def images(ctx: typer.Context) -> None:
    """Not built yet (multi-site image cohort, issue #3)."""
    typer.echo("neurodiff synth images: not built yet (issue #3). Nothing was written.", err=True)
    raise typer.Exit(NOT_BUILT_EXIT_CODE)


@app.command("longitudinal", context_settings=_SETTINGS)
def longitudinal(ctx: typer.Context) -> None:
    """Not built yet (longitudinal feature table, issue #3)."""
    typer.echo("neurodiff synth longitudinal: not built yet (issue #3). Nothing was written.", err=True)
    raise typer.Exit(NOT_BUILT_EXIT_CODE)
