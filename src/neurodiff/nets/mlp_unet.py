"""The MLP "U-Net" denoiser for feature vectors (SECONDGRAM, Theodorou et al.).

Down blocks D → 512 → 256 → 128, two residual blocks at 128, up blocks 128 → 256 → 512 → D with
additive skips from the matching down block (the last one from the noisy input), then Linear(D → D).
Each block: LayerNorm on its input, Linear(in → out) plus its own Linear of the embedding, SiLU,
and a final Linear(out → out). The embedding is the timestep embedding plus, when the network is
conditional, an MLP embedding of the conditioning vector (SECONDGRAM: concat[y, x1]). No attention,
no dropout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from neurodiff.nets.embeddings import TimestepEmbedding


class _Block(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim_in)
        self.proj = nn.Linear(dim_in, dim_out)
        self.emb = nn.Linear(emb_dim, dim_out)
        self.act = nn.SiLU()
        self.out = nn.Linear(dim_out, dim_out)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.proj(self.norm(h)) + self.emb(emb)))


class _Residual(nn.Module):
    def __init__(self, dim: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.emb = nn.Linear(emb_dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        r = self.act(self.fc1(self.norm(h)) + self.emb(emb))
        return h + self.act(self.fc2(r))


class MLPUNet(nn.Module):
    """ε-prediction network for feature vectors: ``net(x_t, t)`` or ``net(x_t, t, cond)``.

    Parameters
    ----------
    dim:
        Number of features D.
    cond_dim:
        Size of the conditioning vector (0 for an unconditional network).
    hidden:
        Widths of the down blocks (the up blocks mirror them).
    residual_blocks:
        Residual blocks at the narrowest width.
    emb_dim:
        Width of the time (and conditioning) embedding.
    """

    def __init__(
        self,
        dim: int,
        cond_dim: int = 0,
        hidden: Sequence[int] = (512, 256, 128),
        residual_blocks: int = 2,
        emb_dim: int = 256,
    ):
        super().__init__()
        if dim < 1 or cond_dim < 0 or not hidden or min(hidden) < 1:
            raise ValueError(f"invalid MLPUNet sizes: dim={dim}, cond_dim={cond_dim}, hidden={tuple(hidden)}")
        self.dim, self.cond_dim = dim, cond_dim
        self.time_embedding = TimestepEmbedding(emb_dim)
        self.cond_embedding = (
            nn.Sequential(nn.Linear(cond_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)) if cond_dim else None
        )
        widths = [dim, *hidden]
        self.down = nn.ModuleList(_Block(a, b, emb_dim) for a, b in zip(widths[:-1], widths[1:]))
        self.mid = nn.ModuleList(_Residual(widths[-1], emb_dim) for _ in range(residual_blocks))
        self.up = nn.ModuleList(_Block(a, b, emb_dim) for a, b in zip(widths[:0:-1], widths[-2::-1]))
        self.head = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_embedding(t)
        if self.cond_embedding is not None:
            if cond is None:
                raise ValueError(f"this network is conditional (cond_dim={self.cond_dim}) but got no conditioning")
            if cond.shape[-1] != self.cond_dim:
                raise ValueError(f"conditioning has {cond.shape[-1]} columns, the network expects {self.cond_dim}")
            emb = emb + self.cond_embedding(cond)
        elif cond is not None:
            raise ValueError("this network is unconditional (cond_dim=0) but was given conditioning")
        skips = [x]
        h = x
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        skips.pop()  # the narrowest features feed the residual blocks, not a skip
        for block in self.mid:
            h = block(h, emb)
        for block in self.up:
            h = block(h, emb) + skips.pop()
        return self.head(h)
