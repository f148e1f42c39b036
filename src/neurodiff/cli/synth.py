"""`neurodiff synth images|longitudinal`: the embedded synthetic cohorts."""

from __future__ import annotations

import typer

from neurodiff.cli.synth_images import images
from neurodiff.cli.synth_longitudinal import longitudinal

app = typer.Typer(
    help="Embedded synthetic cohorts with known ground truth (images; longitudinal feature table).",
    no_args_is_help=True,
    add_completion=False,
)
app.command("images")(images)
app.command("longitudinal")(longitudinal)
