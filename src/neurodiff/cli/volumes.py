"""What the commands say about 3D volumes where only 2D slices are supported."""

from __future__ import annotations

from pathlib import Path


def slices_only(manifest: Path, group: str, baselines: str) -> None:
    """Refuse a manifest of 3D volumes in a benchmark, before any work, saying what does take them."""
    from neurodiff.data.image_manifest import manifest_spatial_dims

    if manifest_spatial_dims(manifest) == 3:
        raise ValueError(
            f"{manifest} names 3D volumes, but `{group} benchmark` compares methods on 2D slices only "
            f"({baselines} and the figures are 2D). Volumes work with `{group} fit` and the commands after "
            f"it; for the benchmark, give a manifest of slices (e.g. the manifest.csv beside manifest-3d.csv)."
        )
