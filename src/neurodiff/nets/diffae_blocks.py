"""Building blocks of the DiffAE networks, for 2D and 3D images (``spatial_dims``).

- :class:`ResBlock`: GroupNorm → SiLU → conv, then *adaptive group norm* (DiffAE, Preechakul et al.):
  ``GN(h) · (1 + s_t) + b_t`` from an embedding (the time embedding in the denoiser, the covariate
  embedding in the semantic encoder), multiplied by ``(1 + s_z)`` from a latent vector when the block
  takes one, → SiLU → dropout → conv (zero-initialised), plus a skip (identity or 1×1 conv).
- :class:`Attention`: multi-head self-attention over all pixels / voxels of a feature map
  (``scaled_dot_product_attention``; plain matrix products for short bf16 sequences on CPU,
  see :func:`attend`), output projection zero-initialised.
- :class:`Downsample` (3×3 conv, stride 2) and :class:`Upsample` (nearest ×2, 3×3 conv).

Every layer is created in ``__init__``; nothing is built inside ``forward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Module:
    """A 'same'-padded Conv2d or Conv3d."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    layer = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return layer(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count ≤ `max_groups` that divides `channels`."""
    groups = next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters (residual branches start as the identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _per_channel(v: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """(B, C) → (B, C, 1, 1[, 1]) to broadcast over the spatial axes."""
    return v.reshape(*v.shape, *([1] * spatial_dims))


class ResBlock(nn.Module):
    """Residual block with adaptive group norm (see module docstring).

    Parameters
    ----------
    emb_dim:
        Width of the embedding that gives scale and shift after the second GroupNorm (0: none).
    latent_dim:
        Width of the latent that gives a multiplicative scale (0: the block takes no latent).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *, emb_dim: int = 0,
                 latent_dim: int = 0, dropout: float = 0.0):
        super().__init__()
        self.spatial_dims, self.out_channels = spatial_dims, out_channels
        self.norm1 = group_norm(in_channels)
        self.conv1 = conv(spatial_dims, in_channels, out_channels)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels) if emb_dim else None
        self.latent_proj = nn.Linear(latent_dim, out_channels) if latent_dim else None
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(conv(spatial_dims, out_channels, out_channels))
        self.skip = nn.Identity() if in_channels == out_channels else conv(spatial_dims, in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, latent: torch.Tensor | None = None
                ) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self._modulation(emb, latent)
        # GN(h)·γ + β, then ·(1 + s_t) + b_t, then ·(1 + s_z), folded into one multiply-add of the
        # normalised features (same result, one pass over the feature map instead of three)
        normalised = F.group_norm(h, self.norm2.num_groups, None, None, self.norm2.eps)
        # in the feature map's dtype: under bf16 autocast the fp32 GroupNorm weights would otherwise
        # promote every full-resolution map that follows to fp32 (casts and fp32 SiLU, seen in a profile)
        scale, shift = (_per_channel(v, self.spatial_dims).to(normalised.dtype) for v in (scale, shift))
        h = torch.addcmul(shift, normalised, scale)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h

    def _modulation(self, emb: torch.Tensor | None, latent: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample, per-channel (scale, shift) applied to the normalised features."""
        scale, shift = self.norm2.weight[None], self.norm2.bias[None]
        if self.emb_proj is not None:
            if emb is None:
                raise ValueError("this block is conditioned on an embedding but got none")
            s_t, b_t = self.emb_proj(F.silu(emb)).chunk(2, dim=1)
            scale, shift = scale * (1 + s_t), shift * (1 + s_t) + b_t
        if self.latent_proj is not None:
            if latent is None:
                raise ValueError("this block is conditioned on a latent but got none")
            s_z = 1 + self.latent_proj(F.silu(latent))
            scale, shift = scale * s_z, shift * s_z
        return scale, shift


# Up to this many positions, bf16 attention on CPU is computed as softmax(QKᵀ/√d)·V with plain
# matrix products, as MONAI's UNet does: PyTorch's fused CPU kernel is slower there. Measured by hand
# (batch 16, 16 heads of 8 channels): forward + backward alone, 64 positions 20.6 ms fused against
# 4.4 ms; inside a training step of the 128×128 UNet of benchmarks/diffae_speed.py (256 positions)
# 4.6 images/s fused against 5.0. The score matrix grows with the square of the positions, so longer
# sequences keep the fused kernel, which needs less memory.
SHORT_ATTENTION_POSITIONS = 256


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Multi-head attention of (B, heads, N, d) queries, keys and values (no mask, no dropout)."""
    if q.shape[-2] <= SHORT_ATTENTION_POSITIONS and q.device.type == "cpu" and q.dtype == torch.bfloat16:
        # the scores are bf16 products (the fused kernel keeps them in fp32); PyTorch's CPU softmax
        # accumulates bf16 input in fp32 and rounds only its output
        return torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2), dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v)


class Attention(nn.Module):
    """Self-attention over the spatial positions of a feature map, with a residual connection."""

    def __init__(self, spatial_dims: int, channels: int, head_channels: int = 64):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        if channels % self.heads:
            raise ValueError(f"{channels} channels cannot be split into {self.heads} attention heads")
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        h = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # (B, N, C)
        q, k, v = self.qkv(h).reshape(b, -1, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        h = attend(q, k, v).transpose(1, 2).reshape(b, -1, c)
        return x + self.out(h).transpose(1, 2).reshape(b, c, *spatial)


class Downsample(nn.Module):
    """Halve every spatial size with a strided 3×3 convolution."""

    def __init__(self, spatial_dims: int, channels: int):
        super().__init__()
        self.conv = conv(spatial_dims, channels, channels, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double every spatial size: nearest-neighbour interpolation, then a 3×3 convolution."""

    def __init__(self, spatial_dims: int, channels: int):
        super().__init__()
        self.conv = conv(spatial_dims, channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
