"""The `neurodiff` command line: thin typer commands over the library.

One sub-command (group) per concern (see ARCHITECTURE.md).
"""

from __future__ import annotations

import errno
import os
import sys

import typer

from neurodiff import __version__
from neurodiff.cli import demo as demo_cmd
from neurodiff.cli import harmonize, impute, normative
from neurodiff.cli import preprocess as preprocess_cmd
from neurodiff.cli import synth
from neurodiff.training.cpu_allocator import keep_freed_memory

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


# the commands that train one model, which torchrun can run data-parallel; every other command
# would only repeat its work (and its writes) in each process
TORCHRUN_COMMANDS = (("impute", "fit"), ("harmonize", "fit"), ("normative", "fit"))


def _check_torchrun(argv: list[str]) -> None:
    """Under torchrun, refuse the commands that do not train."""
    # read from the environment, not through torch, so that --help stays fast
    if os.environ.get("WORLD_SIZE", "1") in ("", "1") or tuple(argv[:2]) in TORCHRUN_COMMANDS:
        return
    typer.echo(f"neurodiff: `{' '.join(argv[:2]) or 'neurodiff'}` runs in one process; under torchrun only "
               f"{', '.join(' '.join(c) for c in TORCHRUN_COMMANDS)} train data-parallel. Run the benchmarks' "
               "seeds in parallel with --jobs instead.", err=True)
    raise SystemExit(2)


def main() -> None:
    _check_torchrun(sys.argv[1:])
    keep_freed_memory()  # CPU training: no page faults on every step's activations (training/cpu_allocator.py)
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
