"""Distances between two samples of feature vectors (real vs generated)."""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.spatial.distance import cdist


def frechet_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """‖μr − μg‖² + Tr(Σr + Σg − 2 (Σr Σg)^½): compares means and covariances only."""
    mu_r, mu_g = real.mean(axis=0), generated.mean(axis=0)
    cov_r = np.atleast_2d(np.cov(real, rowvar=False))
    cov_g = np.atleast_2d(np.cov(generated, rowvar=False))
    covmean = linalg.sqrtm(cov_r @ cov_g)
    covmean = np.real(covmean)
    return float(((mu_r - mu_g) ** 2).sum() + np.trace(cov_r + cov_g - 2.0 * covmean))


def energy_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ (0 iff the distributions are equal): sees the whole shape."""
    xy = cdist(real, generated).mean()
    xx = cdist(real, real).mean()
    yy = cdist(generated, generated).mean()
    return float(2 * xy - xx - yy)
