import math

import numpy as np
import pytest
import torch

from neurodiff.diffusion import Diffusion, cosine_betas, linear_betas, make_betas


def test_secondgram_schedule_never_reaches_noise():
    betas = linear_betas(100, 0.0015, 0.02)
    assert betas.shape == (100,) and betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(0.0015) and betas[-1].item() == pytest.approx(0.02)
    alpha_bar = Diffusion(betas).alpha_bar
    expected = np.cumprod(1 - np.linspace(0.0015, 0.02, 100))
    np.testing.assert_allclose(alpha_bar.numpy(), expected, rtol=1e-12)
    # METHODS.md: with these values ᾱ_99 ≈ 0.34 (training never sees near-pure noise)
    assert alpha_bar[-1].item() == pytest.approx(0.34, abs=0.005)


def test_diffae_schedule_reaches_noise():
    alpha_bar = Diffusion(linear_betas(1000, 1e-4, 0.02)).alpha_bar
    assert alpha_bar[0].item() == pytest.approx(1 - 1e-4)
    assert alpha_bar[-1].item() == pytest.approx(4.036e-5, rel=1e-3)


def test_cosine_schedule_follows_its_formula():
    T, s = 1000, 0.008
    alpha_bar = Diffusion(cosine_betas(T, s=s)).alpha_bar
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 250, 500, 900):
        assert alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert alpha_bar[-1].item() < 1e-6


def test_make_betas_by_name_and_bad_values():
    assert torch.equal(make_betas("linear", 10, start=0.1, end=0.2), linear_betas(10, 0.1, 0.2))
    with pytest.raises(ValueError, match="unknown beta schedule 'sigmoid'"):
        make_betas("sigmoid", 10)
    with pytest.raises(ValueError, match="positive integer"):
        linear_betas(0)
    with pytest.raises(ValueError, match="start=0.5, end=0.1"):
        linear_betas(10, 0.5, 0.1)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        Diffusion([0.1, 1.0])


def test_from_config_round_trip():
    d = Diffusion.from_schedule("linear", 100, start=0.0015, end=0.02)
    again = Diffusion.from_config(d.schedule)
    assert torch.equal(d.betas, again.betas) and again.schedule == d.schedule
