"""`neurodiff demo`: the main job on the embedded default."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Output folder. An interrupted demo in it is "
                             "resumed from its first unfinished stage."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again in a folder that holds an earlier demo "
                                   "(only a demo output folder is ever cleared)."),
    smoke: bool = typer.Option(False, "--smoke", help="Tiny cohorts, 1 seed and a few training steps per model: "
                               "checks that everything runs (a few minutes); the numbers mean nothing."),
) -> None:
    """Run the three methods against their baselines on the embedded cohorts (2 seeds; 13 minutes measured on
    a 2-core CPU, benchmarks/results/demo); write DIR/report.html (the summary page, linking to each method's full report) and
    DIR/results.json.

    Example:  neurodiff demo --out demo-output
    """
    from neurodiff.demo import DemoError, run_demo

    try:
        run_demo(out, smoke=smoke, overwrite=overwrite, log=typer.echo)
    except DemoError as error:
        typer.echo(f"neurodiff demo: {error}", err=True)
        raise typer.Exit(error.exit_code) from error
