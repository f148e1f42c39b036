"""Image quality of reconstructions: PSNR, SSIM and MAE per image, for 2D slices and 3D volumes.

Every function takes two arrays of the same shape, either a batch ``(N, 1, *spatial)`` (as the image
methods use: ``(N, 1, H, W)`` or ``(N, 1, D, H, W)``) or one image, and returns a float64 numpy
array with one value per image (length 1 for a single image). A single image is ``(H, W)``,
``(1, H, W)``, ``(D, H, W)`` or ``(1, D, H, W)``; an array of 3 dimensions whose first is 1 is read
as one 2D image with its channel, not as a volume of depth 1.

- :func:`psnr`  ``10 · log10(data_range² / MSE)`` in dB (``inf`` for identical images);
- :func:`ssim`  structural similarity (Wang et al. 2004): Gaussian-weighted local statistics (σ 1.5,
  window 11 per axis), K1 = 0.01, K2 = 0.03, population (not sample) covariances, averaged over the
  pixels whose window lies inside the image (the "valid" region; each side must be ≥ 11). Matches
  ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=...)``;
- :func:`mae`   mean absolute difference.

>>> ssim(reconstructions, images)            # (N,) values in [-1, 1]
>>> psnr(reconstructions, images).mean()
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

#: SSIM constants of Wang et al. (2004).
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# scipy's window radius is int(truncate · σ + 0.5): 3.5 · 1.5 + 0.5 = 5.75 → 5, a window of 11
_TRUNCATE = 3.5


def _as_batch(x: Any, name: str) -> np.ndarray:
    """An image or batch as float64 (N, *spatial)."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    array = np.asarray(x, dtype=np.float64)
    shape = array.shape
    if array.ndim == 2:  # (H, W)
        return array[None]
    if array.ndim == 3:  # (1, H, W) one image with its channel, or (D, H, W) one volume
        return array if shape[0] == 1 else array[None]
    if array.ndim in (4, 5) and shape[1] == 1:  # (N, 1, H, W) or (N, 1, D, H, W)
        return array[:, 0]
    if array.ndim == 4 and shape[0] == 1:  # (1, D, H, W) one volume with its channel
        return array
    raise ValueError(f"{name} must be a batch (N, 1, H, W) / (N, 1, D, H, W) or one image (H, W) / (1, H, W) / "
                     f"(D, H, W) / (1, D, H, W); got shape {shape}")


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a_shape = np.shape(a.detach().cpu() if hasattr(a, "detach") else a)
    b_shape = np.shape(b.detach().cpu() if hasattr(b, "detach") else b)
    if tuple(a_shape) != tuple(b_shape):
        raise ValueError(f"the two image arrays differ in shape: {tuple(a_shape)} vs {tuple(b_shape)}")
    x, y = _as_batch(a, "a"), _as_batch(b, "b")
    if x.shape[0] == 0:
        raise ValueError("no images to compare (empty batch)")
    if min(x.shape[1:]) < 1:
        raise ValueError(f"images have an empty spatial axis: shape {tuple(a_shape)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("images contain NaN or infinite values")
    return x, y


def _check_range(data_range: float) -> float:
    data_range = float(data_range)
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    return data_range


def mae(a: Any, b: Any) -> np.ndarray:
    """Mean absolute difference per image, shape (N,)."""
    x, y = _pair(a, b)
    return np.abs(x - y).reshape(len(x), -1).mean(axis=1)


def psnr(a: Any, b: Any, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio per image in dB, shape (N,); ``inf`` where the images are identical."""
    data_range = _check_range(data_range)
    x, y = _pair(a, b)
    mse = ((x - y) ** 2).reshape(len(x), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def ssim(a: Any, b: Any, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity (Wang et al. 2004) per image, shape (N,); see the module docstring."""
    data_range = _check_range(data_range)
    x, y = _pair(a, b)
    spatial = x.shape[1:]
    if min(spatial) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs every spatial side to be at least {SSIM_WINDOW} (its window), "
                         f"got {tuple(spatial)}")
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    sigma = (0.0, *([SSIM_SIGMA] * len(spatial)))  # no smoothing across the batch axis

    def blur(v: np.ndarray) -> np.ndarray:
        return gaussian_filter(v, sigma=sigma, truncate=_TRUNCATE, mode="reflect")

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    pad = (SSIM_WINDOW - 1) // 2
    valid = s[(slice(None), *([slice(pad, -pad)] * len(spatial)))]
    return valid.reshape(len(x), -1).mean(axis=1)
