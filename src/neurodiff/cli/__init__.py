"""The `neurodiff` command line: thin typer commands over the library.

One sub-command (group) per concern (see ARCHITECTURE.md).
"""

from __future__ import annotations

import errno

import typer

from neurodiff import __version__
from neurodiff.cli import demo as demo_cmd
from neurodiff.cli import harmonize, impute, normative
from neurodiff.cli import preprocess as preprocess_cmd
from neurodiff.cli import synth

app = typer.Typer(
    name="neurodiff",
    help=(
        "Diffusion models for brain MRI: longitudinal imputation (SECONDGRAM), multi-site "
        "harmonisation (DDAE), normative modelling and survival (NDA).\n\n"
        "Example:  neurodiff demo --out demo-output"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"neurodiff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """neurodiff command line."""


app.add_typer(synth.app, name="synth")
app.command("preprocess")(preprocess_cmd.preprocess)
app.add_typer(impute.app, name="impute")
app.add_typer(harmonize.app, name="harmonize")
app.add_typer(normative.app, name="normative")
app.command("demo")(demo_cmd.demo)


def main() -> None:
    try:
        app()
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        where = f" writing {error.filename}" if error.filename else ""
        typer.echo(f"neurodiff: the disk is full{where}. Outputs are written atomically, so nothing half-written "
                   "was left; free some space (or give --out on another disk) and run the same command again.",
                   err=True)
        raise SystemExit(1) from None
