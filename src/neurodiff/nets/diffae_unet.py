"""DiffAE networks for 2D and 3D images: the latent-conditioned UNet noise predictor and the semantic
encoder (the first half of such a UNet). Blocks in :mod:`neurodiff.nets.diffae_blocks`.

Both are built level by level from ``base_channels × channel_mult[i]`` with ``num_res_blocks``
residual blocks per level, self-attention at the levels whose resolution (``image_size / 2^i``) is in
``attention_resolutions``, and a strided-conv downsampling between levels; the UNet mirrors the path
upwards with ``num_res_blocks + 1`` blocks per level and concatenated skips (as in DDPM / DiffAE).

>>> unet = DiffAEUNet(spatial_dims=2, base_channels=32, channel_mult=(1, 2, 4), image_size=64,
...                   attention_resolutions=(16,), latent_dim=512)
>>> eps = unet(x_t, t, latent)                           # (B, 1, 64, 64)
>>> encoder = SemanticEncoder(spatial_dims=2, base_channels=32, channel_mult=(1, 2, 4), image_size=64,
...                           covariate_dim=3, hierarchical=True)
>>> z = encoder(x0, covariates)                          # (B, 512)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neurodiff.nets.diffae_blocks import Attention, Downsample, ResBlock, Upsample, conv, group_norm, zero_module
from neurodiff.nets.embeddings import TimestepEmbedding


def _check_sizes(spatial_dims: int, base_channels: int, channel_mult: Sequence[int], num_res_blocks: int,
                 attention_resolutions: Sequence[int], image_size: int | None) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if base_channels < 1 or not channel_mult or min(channel_mult) < 1 or num_res_blocks < 1:
        raise ValueError(f"invalid widths: base_channels={base_channels}, channel_mult={tuple(channel_mult)}, "
                         f"num_res_blocks={num_res_blocks}")
    if attention_resolutions and image_size is None:
        raise ValueError("attention_resolutions needs image_size (the input's side length)")


def _attention_at(level: int, image_size: int | None, attention_resolutions: Sequence[int]) -> bool:
    return image_size is not None and image_size // 2**level in set(attention_resolutions)


class _Level(nn.Module):
    """One resolution level: residual blocks, each followed by attention (or nothing), then resampling."""

    def __init__(self, blocks: list[ResBlock], attention: bool, head_channels: int, resample: nn.Module | None):
        super().__init__()
        spatial_dims = blocks[0].spatial_dims
        self.blocks = nn.ModuleList(blocks)
        self.attentions = nn.ModuleList(
            Attention(spatial_dims, b.out_channels, head_channels) if attention else nn.Identity() for b in blocks
        )
        self.resample = resample


class _DownPath(nn.Module):
    """Input convolution and the downward levels, shared by the UNet and the semantic encoder."""

    def __init__(self, spatial_dims, in_channels, base_channels, channel_mult, num_res_blocks,
                 attention_resolutions, image_size, emb_dim, latent_dim, dropout, head_channels):
        super().__init__()
        self.input = conv(spatial_dims, in_channels, base_channels)
        self.skip_channels = [base_channels]
        self.levels = nn.ModuleList()
        channels = base_channels
        for i, mult in enumerate(channel_mult):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(spatial_dims, channels, base_channels * mult, emb_dim=emb_dim,
                                       latent_dim=latent_dim, dropout=dropout))
                channels = base_channels * mult
                self.skip_channels.append(channels)
            last = i == len(channel_mult) - 1
            down = None if last else Downsample(spatial_dims, channels)
            if down is not None:
                self.skip_channels.append(channels)
            self.levels.append(_Level(blocks, _attention_at(i, image_size, attention_resolutions), head_channels,
                                      down))
        self.out_channels = channels
        self.factor = 2 ** (len(channel_mult) - 1)

    def forward(self, x, emb, latent, keep: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the path; `keep` = "skips" (every block's output) or "levels" (each level's last output)."""
        if any(s % self.factor for s in x.shape[2:]):
            raise ValueError(f"image size {tuple(x.shape[2:])} must be divisible by {self.factor} "
                             f"({len(self.levels)} resolution levels)")
        h = self.input(x)
        kept = [h] if keep == "skips" else []
        for level in self.levels:
            for block, attention in zip(level.blocks, level.attentions):
                h = attention(block(h, emb, latent))
                if keep == "skips":
                    kept.append(h)
            if keep == "levels":
                kept.append(h)
            if level.resample is not None:
                h = level.resample(h)
                if keep == "skips":
                    kept.append(h)
        return h, kept


class _Middle(nn.Module):
    def __init__(self, spatial_dims, channels, emb_dim, latent_dim, dropout, head_channels):
        super().__init__()
        self.block1 = ResBlock(spatial_dims, channels, channels, emb_dim=emb_dim, latent_dim=latent_dim,
                               dropout=dropout)
        self.attention = Attention(spatial_dims, channels, head_channels)
        self.block2 = ResBlock(spatial_dims, channels, channels, emb_dim=emb_dim, latent_dim=latent_dim,
                               dropout=dropout)

    def forward(self, h, emb, latent):
        return self.block2(self.attention(self.block1(h, emb, latent)), emb, latent)


class DiffAEUNet(nn.Module):
    """ε-prediction UNet ``unet(x_t, t, latent)`` with adaptive group norm (see module docstring).

    Parameters
    ----------
    spatial_dims:
        2 (images) or 3 (volumes).
    in_channels, out_channels:
        Image channels (out defaults to in).
    base_channels, channel_mult, num_res_blocks:
        Widths ``base_channels × channel_mult[i]`` of the levels and residual blocks per level.
    attention_resolutions, image_size:
        Self-attention at the levels whose side length is listed (needs the input's `image_size`).
    latent_dim:
        Size of the latent every residual block is scaled by (0: an unconditional DDPM UNet).
    dropout, head_channels:
        Dropout in the residual blocks; channels per attention head.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int | None = None,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        image_size: int | None = None,
        latent_dim: int = 512,
        dropout: float = 0.1,
        head_channels: int = 64,
    ):
        super().__init__()
        _check_sizes(spatial_dims, base_channels, channel_mult, num_res_blocks, attention_resolutions, image_size)
        self.spatial_dims, self.latent_dim = spatial_dims, latent_dim
        emb_dim = 4 * base_channels
        self.time_embedding = TimestepEmbedding(emb_dim, sinusoid_dim=base_channels)
        common = dict(emb_dim=emb_dim, latent_dim=latent_dim, dropout=dropout)
        self.down = _DownPath(spatial_dims, in_channels, base_channels, channel_mult, num_res_blocks,
                              attention_resolutions, image_size, head_channels=head_channels, **common)
        channels = self.down.out_channels
        self.middle = _Middle(spatial_dims, channels, head_channels=head_channels, **common)
        skips = list(self.down.skip_channels)
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mult))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(spatial_dims, channels + skips.pop(), base_channels * mult, **common))
                channels = base_channels * mult
            up = Upsample(spatial_dims, channels) if i > 0 else None
            self.up.append(_Level(blocks, _attention_at(i, image_size, attention_resolutions), head_channels, up))
        self.out = nn.Sequential(group_norm(channels), nn.SiLU(),
                                 zero_module(conv(spatial_dims, channels, out_channels or in_channels)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected a ({'B, C, H, W' if self.spatial_dims == 2 else 'B, C, D, H, W'}) batch, "
                             f"got shape {tuple(x.shape)}")
        if self.latent_dim and (latent is None or latent.shape != (x.shape[0], self.latent_dim)):
            got = None if latent is None else tuple(latent.shape)
            raise ValueError(f"this UNet is conditioned on a ({x.shape[0]}, {self.latent_dim}) latent, got {got}")
        if not self.latent_dim:
            latent = None
        emb = self.time_embedding(t.expand(x.shape[0]) if t.ndim == 0 else t)
        h, skips = self.down(x, emb, latent, keep="skips")
        h = self.middle(h, emb, latent)
        for level in self.up:
            for block, attention in zip(level.blocks, level.attentions):
                h = attention(block(torch.cat([h, skips.pop()], dim=1), emb, latent))
            if level.resample is not None:
                h = level.resample(h)
        return self.out(h)


class SemanticEncoder(nn.Module):
    """Image (and optionally covariates) → latent: the first half of a UNet, then global pooling.

    Parameters
    ----------
    latent_dim:
        Size of the latent (512 in DiffAE).
    covariate_dim, covariate_emb_dim:
        With `covariate_dim` > 0 the encoder takes a (B, covariate_dim) covariate vector (e.g.
        standardised age, sex, site one-hot); a registered MLP embeds it and every residual block
        scales and shifts its features by it (adaptive group norm, as time does in the UNet).
    hierarchical:
        Pool each level's output and the middle's (coarse to fine and back) into separate heads and
        join them: the latent is the concatenation, `latent_dim` split over the depths.
    Other parameters as :class:`DiffAEUNet`.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        image_size: int | None = None,
        latent_dim: int = 512,
        covariate_dim: int = 0,
        covariate_emb_dim: int | None = None,
        hierarchical: bool = False,
        dropout: float = 0.0,
        head_channels: int = 64,
    ):
        super().__init__()
        _check_sizes(spatial_dims, base_channels, channel_mult, num_res_blocks, attention_resolutions, image_size)
        depths = len(channel_mult) + 1 if hierarchical else 1
        if latent_dim < depths:
            raise ValueError(f"latent_dim={latent_dim} is too small for {depths} hierarchical depths")
        self.spatial_dims, self.latent_dim, self.covariate_dim = spatial_dims, latent_dim, covariate_dim
        self.hierarchical = hierarchical
        emb_dim = (covariate_emb_dim or 4 * base_channels) if covariate_dim else 0
        self.covariate_embedding = (
            nn.Sequential(nn.Linear(covariate_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            if covariate_dim else None
        )
        self.down = _DownPath(spatial_dims, in_channels, base_channels, channel_mult, num_res_blocks,
                              attention_resolutions, image_size, emb_dim, 0, dropout, head_channels)
        self.middle = _Middle(spatial_dims, self.down.out_channels, emb_dim, 0, dropout, head_channels)
        widths = [base_channels * m for m in channel_mult] + [self.down.out_channels]
        widths = widths if hierarchical else widths[-1:]
        sizes = [latent_dim // depths] * depths
        sizes[-1] += latent_dim - sum(sizes)
        # DiffAE's head: GroupNorm and SiLU on the feature map, global average pooling, a linear map
        self.head_norms = nn.ModuleList(group_norm(w) for w in widths)
        self.heads = nn.ModuleList(nn.Linear(w, s) for w, s in zip(widths, sizes))

    def forward(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected a batch of {self.spatial_dims}D images with channels, got shape "
                             f"{tuple(x.shape)}")
        emb = None
        if self.covariate_embedding is not None:
            if covariates is None or covariates.shape != (x.shape[0], self.covariate_dim):
                got = None if covariates is None else tuple(covariates.shape)
                raise ValueError(f"this encoder takes ({x.shape[0]}, {self.covariate_dim}) covariates, got {got}")
            emb = self.covariate_embedding(covariates)
        elif covariates is not None:
            raise ValueError("this encoder takes no covariates (covariate_dim=0)")
        h, levels = self.down(x, emb, None, keep="levels")
        h = self.middle(h, emb, None)
        features = [*levels, h] if self.hierarchical else [h]
        pooled = [F.silu(norm(f)).flatten(2).mean(dim=2) for norm, f in zip(self.head_norms, features)]
        return torch.cat([head(p) for head, p in zip(self.heads, pooled)], dim=1)


class CovariateEncoder(nn.Module):
    """Covariates (B, covariate_dim) → latent (B, latent_dim): a small MLP (DDAE's f_ψ)."""

    def __init__(self, covariate_dim: int, latent_dim: int = 512, hidden: int = 256, depth: int = 2):
        super().__init__()
        if covariate_dim < 1 or latent_dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"invalid CovariateEncoder sizes: covariate_dim={covariate_dim}, latent_dim={latent_dim}")
        self.covariate_dim, self.latent_dim = covariate_dim, latent_dim
        layers: list[nn.Module] = []
        width = covariate_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, latent_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, covariates: torch.Tensor) -> torch.Tensor:
        if covariates.ndim != 2 or covariates.shape[1] != self.covariate_dim:
            raise ValueError(f"expected (B, {self.covariate_dim}) covariates, got shape {tuple(covariates.shape)}")
        return self.mlp(covariates)
