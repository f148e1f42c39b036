import math

import numpy as np
import pytest
import torch

from neurodiff.evaluation.image_quality import mae, psnr, ssim


def smooth_images(n, size=32, seed=0, dims=2):
    """Images in [0, 1] with structure at several scales (like blurred brain slices)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    raw = rng.random((n, 1, *([size] * dims)))
    smooth = gaussian_filter(raw, sigma=(0, 0, *([1.5] * dims)))
    lo = smooth.min(axis=tuple(range(1, smooth.ndim)), keepdims=True)
    hi = smooth.max(axis=tuple(range(1, smooth.ndim)), keepdims=True)
    return (smooth - lo) / (hi - lo)


def gaussian_window(dims):
    g = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)
    w = g
    for _ in range(dims - 1):
        w = np.multiply.outer(w, g)
    return w / w.sum()


def ssim_at_centre(x, y, data_range=1.0):
    """SSIM of an 11×11 (or 11³) pair, written out from Wang et al.: the valid region is one pixel."""
    w = gaussian_window(x.ndim)
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
    cxy = (w * (x - mx) * (y - my)).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_identical_images():
    x = smooth_images(3)
    assert ssim(x, x.copy()) == pytest.approx(np.ones(3), abs=1e-12)
    assert np.all(np.isinf(psnr(x, x.copy())))
    assert np.all(mae(x, x.copy()) == 0)


def test_outputs_are_per_image_float64_arrays():
    x, y = smooth_images(4, seed=0), smooth_images(4, seed=1)
    for metric in (psnr, ssim, mae):
        values = metric(x, y)
        assert values.shape == (4,) and values.dtype == np.float64
        # each image scored on its own, whatever else is in the batch
        singles = np.array([metric(x[i], y[i])[0] for i in range(4)])
        assert values == pytest.approx(singles, rel=1e-12)
        assert metric(x[0, 0], y[0, 0]).shape == (1,)  # (H, W)
        assert metric(x[0], y[0]).shape == (1,)  # (1, H, W)
        assert metric(torch.as_tensor(x), torch.as_tensor(y)) == pytest.approx(values)


def test_psnr_and_mae_of_a_constant_offset():
    x = smooth_images(2) * 0.8
    assert psnr(x + 0.1, x) == pytest.approx([20.0, 20.0])
    assert psnr(x + 0.1, x, data_range=2.0) == pytest.approx([20 + 20 * math.log10(2)] * 2)
    assert mae(x + 0.1, x) == pytest.approx([0.1, 0.1])


def test_ssim_matches_the_formula_written_out():
    rng = np.random.default_rng(3)
    for dims in (2, 3):
        x = rng.random((11,) * dims)
        y = np.clip(x + 0.2 * rng.normal(size=x.shape), 0, 1)
        assert ssim(x, y)[0] == pytest.approx(ssim_at_centre(x, y), rel=1e-10)
        assert ssim(x, y, data_range=2.0)[0] == pytest.approx(ssim_at_centre(x, y, 2.0), rel=1e-10)


def test_ssim_of_a_negated_image_is_negative():
    x = smooth_images(2)
    values = ssim(x, 1 - x)  # same local brightness range, structure (covariance) reversed
    assert np.all(values < 0) and np.all(values > -1)


def test_noise_lowers_ssim_and_psnr_monotonically():
    x = smooth_images(2, size=48)
    noise = np.random.default_rng(1).normal(size=x.shape)
    levels = [0.0, 0.01, 0.05, 0.1, 0.2, 0.4]
    s = np.array([ssim(x + sd * noise, x) for sd in levels])  # (levels, N)
    p = np.array([psnr(x + sd * noise, x) for sd in levels])
    assert np.all(np.diff(s, axis=0) < 0) and np.all(np.diff(p, axis=0) < 0)
    assert np.all(s[1] > 0.95) and np.all(s[-1] < 0.5)


def test_volumes():
    v = smooth_images(2, size=16, dims=3)  # (2, 1, 16, 16, 16)
    noisy = np.clip(v + 0.1 * np.random.default_rng(0).normal(size=v.shape), 0, 1)
    assert ssim(v, v) == pytest.approx([1.0, 1.0])
    values = ssim(noisy, v)
    assert values.shape == (2,) and np.all(values < 0.95) and np.all(values > 0)
    assert ssim(noisy[0], v[0]) == pytest.approx(values[:1])  # (1, D, H, W)
    assert ssim(noisy[0, 0], v[0, 0]) == pytest.approx(values[:1])  # (D, H, W)
    assert psnr(v + 0.1, v) == pytest.approx([20.0, 20.0])


def test_symmetric():
    x, y = smooth_images(3, seed=0), smooth_images(3, seed=1)
    for metric in (psnr, ssim, mae):
        assert metric(x, y) == pytest.approx(metric(y, x), rel=1e-12)
    assert ssim(x, y).max() < 0.9


def test_errors():
    x = smooth_images(2)
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(x, x[:1])
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(x, x[..., :16])
    with pytest.raises(ValueError, match="at least 11"):
        ssim(x[..., :10, :], x[..., :10, :])
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0)
    with pytest.raises(ValueError, match="NaN"):
        mae(np.full_like(x, np.nan), x)
    with pytest.raises(ValueError, match="must be a batch"):
        mae(np.zeros((2, 3, 16, 16)), np.zeros((2, 3, 16, 16)))
