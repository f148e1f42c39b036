"""What the benchmark commands share to extend a run: `--first-seed`, `--tolerance`, and writing a merged
harmonisation or normative benchmark folder (`neurodiff harmonize|normative merge`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from neurodiff.cli.out_folder import check_out_folder


def first_seed_option(command: str):
    return typer.Option(0, "--first-seed", help="The first seed: --first-seed 3 --seeds 2 runs seeds 3 and 4, to "
                        f"extend an earlier run (join the folders with `neurodiff {command} merge`).")


TOLERANCE = typer.Option(1e-4, "--tolerance", help="How far apart two folders' values of the same method, metric "
                         "and seed may be (relative or absolute, whichever is larger); the first folder's is kept. "
                         "Runs made alike agree exactly; other threads or CPUs can move trained metrics.")


def check_first_seed(first_seed: int) -> None:
    if first_seed < 0:
        raise ValueError(f"--first-seed must be 0 or more, got {first_seed}")


def merge_image_benchmark_folders(command: str, folders: list[Path], out: Path, tolerance: float) -> dict:
    """Merge `neurodiff <command> benchmark` folders (harmonize or normative) into `out`, all or nothing: results.json,
    the metric bars drawn again, the lowest seed's other figures copied, report.html. Returns the document."""
    from neurodiff.atomic import atomic_dir, write_json, write_text
    from neurodiff.evaluation.image_benchmark_merge import merge_image_benchmarks, read_image_benchmark_folder

    if command == "harmonize":
        from neurodiff.evaluation.harmonization_benchmark import metrics_figure, report_html
    else:
        from neurodiff.reporting.normative_report import metrics_figure, report_html
    check_out_folder(out)
    merged = merge_image_benchmarks([read_image_benchmark_folder(f, command) for f in folders], command,
                                    log=typer.echo, tolerance=tolerance)
    with atomic_dir(out) as tmp:
        write_json(tmp / "results.json", merged.document)
        figures = metrics_figure(merged.document, tmp)
        for source in merged.figures:
            shutil.copy2(source, tmp / source.name)
            figures[source.stem] = source.name
        write_text(tmp / "report.html", report_html(merged.document, figures))
    typer.echo(f"Merged {len(folders)} folders: seeds {merged.document['seeds']}, methods "
               f"{', '.join(merged.document['config']['methods'])}")
    typer.echo(f"Wrote {out}/results.json, report.html and {len(figures)} figures")
    return merged.document
