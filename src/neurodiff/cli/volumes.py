"""The image commands and 3D volumes: the preset --quick means for them, and where only slices go."""

from __future__ import annotations

from pathlib import Path

import typer


def quick_preset(quick: bool, manifest: Path) -> str:
    """--quick: "quick" for slices, "quick3d" for volumes (said so); otherwise the paper's recipe."""
    from neurodiff.methods.diffae import quick_preset_for

    preset = quick_preset_for(manifest) if quick else "paper"
    if preset == "quick3d":
        typer.echo("3D volumes: the quick3d preset (8 base channels, 200 steps of batch 8)")
    return preset


def slices_only(manifest: Path, group: str, baselines: str) -> None:
    """Refuse a manifest of 3D volumes in a benchmark, before any work, saying what does take them."""
    from neurodiff.data.image_manifest import manifest_spatial_dims

    if manifest_spatial_dims(manifest) == 3:
        raise ValueError(
            f"{manifest} names 3D volumes, but `{group} benchmark` compares methods on 2D slices only "
            f"({baselines} and the figures are 2D). Volumes work with `{group} fit` and the commands after "
            f"it; for the benchmark, give a manifest of slices (e.g. the manifest.csv beside manifest-3d.csv)."
        )
