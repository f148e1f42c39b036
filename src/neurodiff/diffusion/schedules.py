"""β schedules: the noise added at each of the T forward steps.

All schedules are returned as float64 tensors of shape (T,) with values in (0, 1). Two presets used
by the methods of neurodiff:

- SECONDGRAM (public code): ``linear_betas(100, 0.0015, 0.02)``. Note that ᾱ_99 ≈ 0.34 there, so
  training never sees near-pure noise while sampling starts from N(0, I);
- DiffAE on brain slices: ``linear_betas(1000, 1e-4, 0.02)``.
"""

from __future__ import annotations

import math

import torch


def linear_betas(timesteps: int, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """β_t linear from `start` (t = 0) to `end` (t = T - 1), as in DDPM."""
    _check_steps(timesteps)
    if not 0.0 < start <= end < 1.0:
        raise ValueError(f"linear schedule needs 0 < start <= end < 1, got start={start}, end={end}")
    return torch.linspace(start, end, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """The cosine schedule of Nichol & Dhariwal (2021): ᾱ(t) = cos²(((t/T) + s) / (1 + s) · π/2).

    β is clipped at `max_beta` to avoid a singularity at t = T; ᾱ_{T-1} is then ≈ 0 (pure noise).
    """
    _check_steps(timesteps)
    if not 0.0 < max_beta < 1.0:
        raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}


def make_betas(name: str, timesteps: int, **kwargs: float) -> torch.Tensor:
    """A schedule by name: ``make_betas("linear", 100, start=0.0015, end=0.02)``."""
    try:
        factory = SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown beta schedule {name!r}; choose one of {sorted(SCHEDULES)}") from None
    return factory(timesteps, **kwargs)


def _check_steps(timesteps: int) -> None:
    if not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"the number of diffusion steps T must be a positive integer, got {timesteps!r}")
