"""`neurodiff demo`: the main job on the embedded default."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Output folder (created; an earlier demo output is replaced)."),
    quick: bool = typer.Option(False, "--quick", help="One seed and fewer epochs (a smoke test, about a minute)."),
) -> None:
    """Run everything that is built, end to end, on embedded data; write results.json and figures.

    Example:  neurodiff demo --out demo-output
    """
    from neurodiff.demo import run_demo

    try:
        run_demo(out, quick=quick, log=typer.echo)
    except FileExistsError as error:
        typer.echo(f"neurodiff demo: {error}", err=True)
        raise typer.Exit(2) from error
