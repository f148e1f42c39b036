"""A plain residual MLP denoiser for low-dimensional feature vectors.

The MLP U-Net of SECONDGRAM starts with a LayerNorm over the input features; with a handful of
features that normalisation throws away most of the signal (with 2 features only the sign of their
difference survives), and such a network learns little more than a Gaussian. This network keeps the
input's scale: Linear(D → width), then `depth` pre-activation residual blocks that each add the
time (and conditioning) embedding, then Linear(width → D).
"""

from __future__ import annotations

import torch
from torch import nn

from neurodiff.nets.embeddings import TimestepEmbedding


class _ResBlock(nn.Module):
    def __init__(self, width: int, emb_dim: int):
        super().__init__()
        self.emb = nn.Linear(emb_dim, width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.act(self.fc1(self.act(h + self.emb(emb)))))


class ResidualMLP(nn.Module):
    """ε-prediction network ``net(x_t, t[, cond])`` for feature vectors of any (small) size."""

    def __init__(self, dim: int, cond_dim: int = 0, width: int = 128, depth: int = 3, emb_dim: int = 128):
        super().__init__()
        if dim < 1 or cond_dim < 0 or width < 1 or depth < 1:
            raise ValueError(f"invalid ResidualMLP sizes: dim={dim}, cond_dim={cond_dim}, width={width}, depth={depth}")
        self.dim, self.cond_dim = dim, cond_dim
        self.time_embedding = TimestepEmbedding(emb_dim)
        self.cond_embedding = (
            nn.Sequential(nn.Linear(cond_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)) if cond_dim else None
        )
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_ResBlock(width, emb_dim) for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_embedding(t)
        if self.cond_embedding is not None:
            if cond is None:
                raise ValueError(f"this network is conditional (cond_dim={self.cond_dim}) but got no conditioning")
            emb = emb + self.cond_embedding(cond)
        elif cond is not None:
            raise ValueError("this network is unconditional (cond_dim=0) but was given conditioning")
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
