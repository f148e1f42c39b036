"""`neurodiff synth longitudinal` (placeholder until the table generator lands)."""

import typer


def longitudinal() -> None:
    """Not built yet (longitudinal feature table, issue #3)."""
    typer.echo("neurodiff synth longitudinal: not built yet (issue #3). Nothing was written.", err=True)
    raise typer.Exit(3)
