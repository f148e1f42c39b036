"""Networks of the conditional WGAN-GP baseline of SECONDGRAM (networks only; the training maths
lives in :mod:`neurodiff.baselines.wgan_gp`).

Generator: [noise (100), cond-embedding (256)] → 128 → 256 → 512 → 1024 → D, tanh output (the
data are scaled to [-1, 1]). Critic: [x, cond-embedding (256)] → 512 → 512 (dropout 0.4) → 1, no
output activation and no batch normalisation (the gradient penalty is per sample). Each network
embeds the conditioning vector with its own Linear(C → 256) + LeakyReLU; every hidden layer is
Linear + LeakyReLU(0.2). The widths are arguments so that tests can use tiny ones; the defaults
are the paper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

GENERATOR_HIDDEN = (128, 256, 512, 1024)
CRITIC_HIDDEN = (512, 512)


def _check_sizes(name: str, **sizes: int) -> None:
    bad = {k: v for k, v in sizes.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"{name} sizes must be positive integers, got {bad}")


class ConditionEmbedding(nn.Module):
    """Linear(C → emb_dim) + LeakyReLU: one per network."""

    def __init__(self, cond_dim: int, emb_dim: int = 256, negative_slope: float = 0.2):
        super().__init__()
        self.proj = nn.Linear(cond_dim, emb_dim)
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(cond))


class ConditionalGenerator(nn.Module):
    """``G(noise, cond) → x`` in [-1, 1]^D."""

    def __init__(
        self,
        dim: int,
        cond_dim: int,
        *,
        noise_dim: int = 100,
        cond_emb_dim: int = 256,
        hidden: Sequence[int] = GENERATOR_HIDDEN,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        _check_sizes("generator", dim=dim, cond_dim=cond_dim, noise_dim=noise_dim, cond_emb_dim=cond_emb_dim,
                     **{f"hidden[{i}]": h for i, h in enumerate(hidden)})
        if not hidden:
            raise ValueError("the generator needs at least one hidden layer")
        self.dim, self.cond_dim, self.noise_dim = dim, cond_dim, noise_dim
        self.cond_embedding = ConditionEmbedding(cond_dim, cond_emb_dim, negative_slope)
        layers: list[nn.Module] = []
        width = noise_dim + cond_emb_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(negative_slope)]
            width = h
        layers += [nn.Linear(width, dim), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([noise, self.cond_embedding(cond)], dim=1))


class ConditionalCritic(nn.Module):
    """``D(x, cond) → score`` of shape (n,); dropout after every hidden layer but the first."""

    def __init__(
        self,
        dim: int,
        cond_dim: int,
        *,
        cond_emb_dim: int = 256,
        hidden: Sequence[int] = CRITIC_HIDDEN,
        dropout: float = 0.4,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        _check_sizes("critic", dim=dim, cond_dim=cond_dim, cond_emb_dim=cond_emb_dim,
                     **{f"hidden[{i}]": h for i, h in enumerate(hidden)})
        if not hidden:
            raise ValueError("the critic needs at least one hidden layer")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dim, self.cond_dim = dim, cond_dim
        self.cond_embedding = ConditionEmbedding(cond_dim, cond_emb_dim, negative_slope)
        layers: list[nn.Module] = [nn.Linear(dim + cond_emb_dim, hidden[0]), nn.LeakyReLU(negative_slope)]
        for width_in, width_out in pairwise(hidden):
            layers += [nn.Linear(width_in, width_out), nn.Dropout(dropout), nn.LeakyReLU(negative_slope)]
        layers.append(nn.Linear(hidden[-1], 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([x, self.cond_embedding(cond)], dim=1)).squeeze(-1)
