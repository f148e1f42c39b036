"""Distances between two samples of feature vectors (real vs generated)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def frechet_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """‖μr − μg‖² + Tr(Σr + Σg − 2 (Σr Σg)^½): compares means and covariances only.

    Tr((Σr Σg)^½) is computed as Σ √λ(Σr^½ Σg Σr^½): that matrix is similar to Σr Σg but symmetric
    and PSD, so its eigenvalues are real even when the covariances are singular (fewer samples than
    features), where a general matrix square root (scipy's ``sqrtm``) gives complex parts or NaN.
    The result is clipped at 0 against rounding.
    """
    mu = ((real.mean(axis=0) - generated.mean(axis=0)) ** 2).sum()
    cov_r = np.atleast_2d(np.cov(real, rowvar=False))
    cov_g = np.atleast_2d(np.cov(generated, rowvar=False))
    w, v = np.linalg.eigh(cov_r)
    sqrt_r = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    middle = sqrt_r @ cov_g @ sqrt_r
    eig = np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)
    return max(float(mu + np.trace(cov_r) + np.trace(cov_g) - 2.0 * np.sqrt(eig).sum()), 0.0)


def energy_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ (0 iff the distributions are equal): sees the whole shape."""
    xy = cdist(real, generated).mean()
    xx = cdist(real, real).mean()
    yy = cdist(generated, generated).mean()
    return float(2 * xy - xx - yy)
