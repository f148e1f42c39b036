"""Input checks shared by the estimators: clear errors that name the argument and column."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_matrix(values: Any, name: str) -> np.ndarray:
    """A finite 2-D float array, or an error naming the first bad column."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D table (rows × columns), got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        column = int(np.argwhere(bad.any(axis=0))[0, 0])
        label = getattr(values, "columns", None)
        column_name = label[column] if label is not None else column
        raise ValueError(f"{name} has missing or non-finite values in column {column_name!r}; impute them first")
    return array
