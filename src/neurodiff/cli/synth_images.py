"""`neurodiff synth images` (placeholder until the image cohort generator lands)."""

import typer


def images() -> None:
    """Not built yet (multi-site image cohort, issue #3)."""
    typer.echo("neurodiff synth images: not built yet (issue #3). Nothing was written.", err=True)
    raise typer.Exit(3)
