"""`neurodiff demo`: the main job on the embedded default."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Output folder (created; must be empty or absent)."),
) -> None:
    """Run the main job end to end on the embedded default data.

    Example:  neurodiff demo --out demo-output
    """
    typer.echo("demo: not written yet")
    raise typer.Exit(3)
