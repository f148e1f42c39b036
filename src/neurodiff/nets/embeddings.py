"""Embeddings shared by the networks: sinusoidal timestep embedding and its MLP."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of (possibly fractional) timesteps, shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float().reshape(-1, 1) * freqs.reshape(1, -1)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class TimestepEmbedding(nn.Module):
    """t → sinusoidal(t) → Linear → SiLU → Linear, shape (B, dim), in the dtype of the Linear weights."""

    def __init__(self, dim: int, sinusoid_dim: int | None = None):
        super().__init__()
        self.sinusoid_dim = sinusoid_dim or dim
        self.mlp = nn.Sequential(nn.Linear(self.sinusoid_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # the sinusoids are computed in float32, then given the first layer's dtype, so that a network
        # whose weights are bf16 (``net.to(torch.bfloat16)``) runs; under autocast the weights stay
        # float32 and autocast picks the matmul's dtype as before
        emb = sinusoidal_embedding(t, self.sinusoid_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
