"""Intensity normalisation of a skull-stripped T1 to [0, 1] by robust percentiles of the brain."""

from __future__ import annotations

import numpy as np

from neurodiff.data.preprocess.volume import PreprocessError


def normalise_intensity(
    data: np.ndarray, mask: np.ndarray, *, percentiles: tuple[float, float] = (0.5, 99.5)
) -> np.ndarray:
    """Map the brain's intensities to [0, 1]: the lower percentile of the voxels in `mask` to 0, the
    upper to 1, clipped; voxels outside `mask` become 0. Returns float32."""
    low_pct, high_pct = percentiles
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, not {percentiles!r}")
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise PreprocessError("the brain mask is empty; nothing to normalise")
    low, high = np.percentile(np.asarray(data)[mask], [low_pct, high_pct])
    if not high > low:
        raise PreprocessError(
            f"the brain has no intensity contrast (percentiles {low_pct} and {high_pct} are both {low:g})"
        )
    out = np.clip((np.asarray(data, dtype=np.float32) - low) / (high - low), 0.0, 1.0)
    out[~mask] = 0.0
    return out.astype(np.float32)
