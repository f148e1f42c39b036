"""Conditional VAE: DDAE's autoencoder harmonisation baseline (METHODS.md §2).

A conditional variational autoencoder (Kingma & Welling 2014; Sohn et al. 2015) whose condition
c = (age, sex, site) is given to both halves, the form used for scanner harmonisation by Moyer et
al. (2020, *Human Brain Mapping*) and by the DDAE paper as its baseline:

- encoder q(z | x, c): a conv stack, ``levels`` stages of [residual block → stride-2 conv] with
  ``base_channels · 2^i`` channels, flattened to the mean and log-variance of a ``latent_dim`` Gaussian;
- decoder p(x | z, c): a linear map of [z, c] to the coarsest feature map, then ``levels`` stages of
  [nearest ×2 upsampling + conv → residual block] and a 3×3 conv to one channel, the Gaussian mean.

Every residual block takes the condition as FiLM (adaptive group norm: scale and shift after
GroupNorm, :class:`~neurodiff.nets.diffae_blocks.ResBlock`) from an MLP embedding of c, where c is a
:class:`~neurodiff.data.covariates.CovariateEncoding` of the training covariates: age standardised,
sex 0/1, site one-hot.

Loss per image (Gaussian decoder with fixed variance, images scaled to [−1, 1]):
``Σ_pixels (x − x̂)² + β · KL(q(z | x, c) ‖ N(0, I))``, averaged over the batch; trained by neurodiff's
:class:`~neurodiff.training.Trainer` (Adam), the history recording ``recon`` and ``kl`` per step.

Harmonise: encode with the image's own c and take the posterior mean z = μ(x, c); decode with
c' = (same age, same sex, target site). Images of the target site are reconstructed too (so they
come back smoothed), as a cVAE does. Images are (N, 1, H, W) with H and W divisible by
``2 ** levels`` (e.g. any power of two ≥ 16 with the default 3 levels).

>>> cvae = ConditionalVAE(max_steps=2000).fit(images, covariates)    # images in [0, 1]
>>> harmonised = cvae.transform(images, covariates, target_site="IXI")
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from neurodiff.base import Estimator
from neurodiff.baselines.combat import (
    check_harmonisation_inputs,
    fit_site_encoding,
    site_index,
)
from neurodiff.data.covariates import CovariateEncoding
from neurodiff.nets.diffae_blocks import (
    Downsample,
    ResBlock,
    Upsample,
    conv,
    group_norm,
)
from neurodiff.training import TensorData, Trainer, resolve_device, seed_everything

_CHUNK = 256  # images per forward pass at transform


# ---------------------------------------------------------------- network


class ConditionalVAENet(nn.Module):
    """Conv encoder q(z | x, c) and decoder p(x | z, c), both FiLM-conditioned on c (see module docstring)."""

    def __init__(self, image_size: tuple[int, int], cond_dim: int, *, latent_dim: int = 32,
                 base_channels: int = 16, levels: int = 3):
        super().__init__()
        factor = 2**levels
        if any(size % factor or size < factor for size in image_size):
            raise ValueError(f"image size {tuple(image_size)} must be divisible by 2**levels = {factor}")
        self.latent_dim = latent_dim
        channels = [base_channels * 2**i for i in range(levels)]
        self.bottom = (channels[-1], image_size[0] // factor, image_size[1] // factor)
        flat = int(np.prod(self.bottom))
        emb = 4 * base_channels
        self.enc_cond = _embedding(cond_dim, emb)
        self.enc_in = conv(2, 1, channels[0])
        self.enc_blocks = nn.ModuleList()
        self.enc_down = nn.ModuleList()
        for i, ch in enumerate(channels):
            self.enc_blocks.append(ResBlock(2, channels[max(i - 1, 0)], ch, emb_dim=emb))
            self.enc_down.append(Downsample(2, ch))
        self.enc_norm = group_norm(channels[-1])
        self.to_posterior = nn.Linear(flat, 2 * latent_dim)
        self.dec_cond = _embedding(cond_dim, emb)
        self.from_latent = nn.Linear(latent_dim + cond_dim, flat)
        self.dec_up = nn.ModuleList()
        self.dec_blocks = nn.ModuleList()
        for i in reversed(range(levels)):
            self.dec_up.append(Upsample(2, channels[min(i + 1, levels - 1)]))
            self.dec_blocks.append(ResBlock(2, channels[min(i + 1, levels - 1)], channels[i], emb_dim=emb))
        self.dec_norm = group_norm(channels[0])
        self.dec_out = conv(2, channels[0], 1)

    def encode(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each (B, latent_dim)."""
        emb = self.enc_cond(c)
        h = self.enc_in(x)
        for block, down in zip(self.enc_blocks, self.enc_down):
            h = down(block(h, emb))
        mu, logvar = self.to_posterior(F.silu(self.enc_norm(h)).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Mean image (B, 1, H, W) in the [−1, 1] scale."""
        emb = self.dec_cond(c)
        h = self.from_latent(torch.cat([z, c], dim=1)).reshape(len(z), *self.bottom)
        for up, block in zip(self.dec_up, self.dec_blocks):
            h = block(up(h), emb)
        return self.dec_out(F.silu(self.dec_norm(h)))


def _embedding(cond_dim: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cond_dim, width), nn.SiLU(), nn.Linear(width, width))


def vae_loss(net: ConditionalVAENet, x: torch.Tensor, c: torch.Tensor, beta: float,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ_pixels (x − x̂)² + β·KL per image, batch mean; also the two terms for the history."""
    mu, logvar = net.encode(x, c)
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    recon = net.decode(mu + torch.exp(0.5 * logvar) * eps, c)
    rec = (recon - x).pow(2).flatten(1).sum(1).mean()
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()
    return rec + beta * kl, {"recon": rec.item(), "kl": kl.item()}


# ---------------------------------------------------------------- estimator


class ConditionalVAE(Estimator):
    """Conditional VAE harmoniser: ``fit(images, covariates)``, ``transform(images, covariates, target_site)``.

    Parameters
    ----------
    latent_dim, base_channels, levels:
        Size of z; channels of the first stage (doubling at each of the `levels` stages).
    beta:
        Weight of the KL term (1: the VAE bound).
    lr, batch_size, max_steps, seed, device, progress:
        Training by :class:`~neurodiff.training.Trainer` (Adam); "cpu" / "cuda" / "auto".

    Attributes
    ----------
    net_:
        The trained :class:`ConditionalVAENet` (eval mode).
    encoding_, sites_:
        Covariate encoding (age, sex, site) fitted on the training rows, and its sites.
    image_shape_:
        (1, H, W) of the training images.
    history_:
        The trainer's history: per-step ``loss``, ``metrics["recon"]``, ``metrics["kl"]`` (None after load).
    """

    def __init__(
        self,
        latent_dim: int = 32,
        base_channels: int = 16,
        levels: int = 3,
        beta: float = 1.0,
        lr: float = 1e-3,
        batch_size: int = 32,
        max_steps: int = 2000,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ):
        self.latent_dim = latent_dim
        self.base_channels = base_channels
        self.levels = levels
        self.beta = beta
        self.lr = lr
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.seed = seed
        self.device = device
        self.progress = progress

    def _check_hyperparameters(self) -> None:
        check_cvae_hyperparameters(self)

    def _build(self) -> ConditionalVAENet:
        return build_cvae_net(self)

    # ------------------------------------------------------------------ fit
    def fit(self, images: Any, covariates: pd.DataFrame) -> ConditionalVAE:
        """Train the encoder and decoder on images (N, 1, H, W) in [0, 1] and their covariates."""
        self._check_hyperparameters()
        x, covariates = check_harmonisation_inputs(images, covariates, spatial_dims=(2,))
        if len(x) < 2:
            raise ValueError(f"need at least two images to train on, got {len(x)}")
        self.encoding_ = fit_site_encoding(covariates)
        self.sites_ = list(self.encoding_.categories("site"))
        train_cvae(self, x, covariates)
        return self

    # ------------------------------------------------------------------ transform
    @torch.no_grad()
    def transform(self, images: Any, covariates: pd.DataFrame, target_site: str) -> np.ndarray:
        """Encode with each image's own covariates, decode as if at `target_site`: float32 in [0, 1]."""
        self._check_fitted()
        x, covariates = check_harmonisation_inputs(images, covariates, spatial_dims=(2,), shape=self.image_shape_)
        site_index(self.encoding_, target_site)  # a clear error for an unknown target
        c = torch.as_tensor(self.encoding_.transform(covariates))
        c_target = torch.as_tensor(self.encoding_.transform(self.encoding_.with_values(covariates, site=target_site)))
        device = resolve_device(self.device)
        self.net_.to(device).eval()
        out = []
        for start in range(0, len(x), _CHUNK):
            rows = slice(start, start + _CHUNK)
            mu, _ = self.net_.encode(_scaled(x[rows]).to(device), c[rows].to(device))
            out.append(self.net_.decode(mu, c_target[rows].to(device)).cpu())
        recon = torch.cat(out) if out else torch.zeros((0, *self.image_shape_))
        return ((recon.numpy() + 1.0) / 2.0).clip(0.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ saving hooks
    def _networks(self) -> dict[str, nn.Module]:
        return {"net": self.net_}

    def _fitted_statistics(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"encoding": self.encoding_.to_dict(), "image_shape": list(self.image_shape_)}, {}

    def _rebuild(self, statistics: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.encoding_ = CovariateEncoding.from_dict(statistics["encoding"])
        self.sites_ = list(self.encoding_.categories("site"))
        self.image_shape_ = tuple(int(v) for v in statistics["image_shape"])
        self.net_, self.history_ = self._build(), None


# ---------------------------------------------------------------- shared by the cVAE estimators


def check_cvae_hyperparameters(estimator) -> None:
    """ValueError naming a bad hyperparameter of a cVAE estimator (this one or the normative one)."""
    for name in ("latent_dim", "base_channels", "levels", "batch_size", "max_steps"):
        value = getattr(estimator, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not estimator.beta >= 0:
        raise ValueError(f"beta must be >= 0, got {estimator.beta!r}")
    if not estimator.lr > 0:
        raise ValueError(f"lr must be positive, got {estimator.lr!r}")


def build_cvae_net(estimator) -> ConditionalVAENet:
    """The estimator's network, from its hyperparameters, ``image_shape_`` and ``encoding_``."""
    return ConditionalVAENet(tuple(estimator.image_shape_[1:]), estimator.encoding_.width,
                             latent_dim=estimator.latent_dim, base_channels=estimator.base_channels,
                             levels=estimator.levels)


def train_cvae(estimator, x: np.ndarray, covariates: pd.DataFrame) -> None:
    """Train the estimator's cVAE on images in [0, 1] and its fitted covariate encoding; sets ``image_shape_``,
    ``net_``, ``history_`` and ``is_fitted_``."""
    estimator.image_shape_ = tuple(x.shape[1:])
    seed_everything(estimator.seed)
    net = build_cvae_net(estimator)
    data = TensorData(x=_scaled(x), c=torch.as_tensor(estimator.encoding_.transform(covariates)))
    trainer = Trainer(max_steps=estimator.max_steps, batch_size=estimator.batch_size, lr=estimator.lr,
                      seed=estimator.seed, device=estimator.device, progress=estimator.progress,
                      description=type(estimator).__name__)
    beta = float(estimator.beta)
    result = trainer.fit(net, lambda m, batch, g: vae_loss(m, batch["x"], batch["c"], beta, g), data)
    estimator.net_, estimator.history_ = result.model.eval(), result.history
    estimator.is_fitted_ = True


def _scaled(x: np.ndarray) -> torch.Tensor:
    """[0, 1] images as a float32 tensor in [−1, 1]."""
    return torch.as_tensor(x * 2.0 - 1.0, dtype=torch.float32)
