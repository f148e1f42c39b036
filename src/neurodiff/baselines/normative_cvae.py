"""Normative conditional VAE: NDA's generative non-diffusion benchmark (METHODS.md §3).

A conditional VAE trained on healthy controls only, conditioned on age and sex, as in the normative
cVAE of Pinaya et al. (2019, *NeuroImage: Clinical*) and Lawry Aguila et al. (2022): what a healthy
brain of that age and sex looks like is learnt, and a patient's deviation is measured against it.

Network and loss are those of DDAE's harmonisation baseline
(:class:`~neurodiff.baselines.cvae.ConditionalVAENet`, :func:`~neurodiff.baselines.cvae.vae_loss`:
FiLM-conditioned conv encoder q(z | x, c) and decoder p(x | z, c), loss Σ_pixels (x − x̂)² + β·KL with
images in [−1, 1]), trained by the shared :class:`~neurodiff.training.Trainer` exactly as
:meth:`ConditionalVAE.fit <neurodiff.baselines.cvae.ConditionalVAE.fit>` does. Here c encodes the
``covariates`` columns (default age and sex) as :class:`~neurodiff.methods.normative.NormativeDiffAE`
encode them: age standardised on the controls, sex 0/1, text columns (e.g. site) one-hot.

Deviation scores (higher = further from normal):

- :meth:`NormativeCVAE.score`: the Mahalanobis distance of the posterior mean μ(x, c), encoded with the
  image's own covariates, from the training controls' posterior means: their mean and a Ledoit–Wolf
  shrinkage covariance (:class:`sklearn.covariance.LedoitWolf`; well conditioned even with fewer
  controls than latent dimensions). ``√((μ − m)ᵀ Σ⁻¹ (μ − m))``;
- :meth:`NormativeCVAE.reconstruction_error`: the mean squared error per pixel, in [0, 1] intensity
  units, between the image and its reconstruction from (μ(x, c), c).

2D images (N, 1, H, W) only, H and W divisible by ``2 ** levels``.

>>> cvae = NormativeCVAE(max_steps=2000).fit(controls, control_covariates)
>>> distance = cvae.score(images, covariates)
>>> cvae.save("cvae"); NormativeCVAE.load("cvae")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.covariance import LedoitWolf
from torch import nn

from neurodiff.base import Estimator
from neurodiff.baselines.combat import check_harmonisation_inputs
from neurodiff.baselines.cvae import (
    ConditionalVAENet,
    _scaled,
    build_cvae_net,
    check_cvae_hyperparameters,
    train_cvae,
)
from neurodiff.data.covariates import CovariateEncoding
from neurodiff.methods.diffae import _fit_encoding
from neurodiff.training import resolve_device

_CHUNK = 256  # images per forward pass when scoring


class NormativeCVAE(Estimator):
    """Conditional VAE of healthy controls; deviation = Mahalanobis distance of μ(x, c) (or reconstruction error).

    Parameters
    ----------
    covariates:
        Columns of the covariate frame the cVAE is conditioned on (at least one).
    latent_dim, base_channels, levels, beta:
        As in :class:`~neurodiff.baselines.cvae.ConditionalVAE`.
    lr, batch_size, max_steps, seed, device, progress:
        Training by :class:`~neurodiff.training.Trainer` (Adam); "cpu" / "cuda" / "auto".

    Attributes
    ----------
    net_:
        The trained :class:`ConditionalVAENet` (eval mode).
    encoding_:
        :class:`CovariateEncoding` of the covariates, fitted on the controls.
    image_shape_:
        (1, H, W) of the training images.
    latent_mean_, latent_covariance_, latent_precision_, shrinkage_:
        Mean, Ledoit–Wolf covariance, its inverse and shrinkage of the controls' posterior means.
    history_:
        The trainer's history (per-step ``loss``, ``metrics["recon"]``, ``metrics["kl"]``; None after load).
    """

    score_name = "cvae"
    higher_is_normal = False

    def __init__(
        self,
        covariates: Sequence[str] = ("age", "sex"),
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
        self.covariates = covariates
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
        if not _names(self.covariates):
            raise ValueError("covariates must name at least one column (e.g. ('age', 'sex')): the cVAE is conditional")

    def _build(self) -> ConditionalVAENet:
        return build_cvae_net(self)

    # ------------------------------------------------------------------ fit
    def fit(self, images: Any, covariates: pd.DataFrame) -> NormativeCVAE:
        """Train on the healthy controls' images (N, 1, H, W) in [0, 1]; then their latent mean and covariance."""
        self._check_hyperparameters()
        x, covariates = _check_inputs(images, covariates)
        if len(x) < 2:
            raise ValueError(f"need at least two control images to train on, got {len(x)}")
        self.encoding_ = _fit_encoding(covariates, _names(self.covariates))
        train_cvae(self, x, covariates)

        latents = self._posterior_means(x, covariates)
        shrunk = LedoitWolf().fit(latents)
        self.latent_mean_ = latents.mean(axis=0)
        self.latent_covariance_ = shrunk.covariance_
        self.latent_precision_ = shrunk.precision_
        self.shrinkage_ = float(shrunk.shrinkage_)
        return self

    # ------------------------------------------------------------------ deviations
    def encode(self, images: Any, covariates: pd.DataFrame) -> np.ndarray:
        """Posterior means μ(x, c), each image encoded with its own covariates: (N, latent_dim)."""
        self._check_fitted()
        x, covariates = _check_inputs(images, covariates, shape=self.image_shape_)
        return self._posterior_means(x, covariates)

    def score(self, images: Any, covariates: pd.DataFrame) -> np.ndarray:
        """Mahalanobis distance of μ(x, c) from the controls' latents (N,); higher = more deviant."""
        centred = self.encode(images, covariates) - self.latent_mean_
        return np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", centred, self.latent_precision_, centred), 0.0))

    @torch.no_grad()
    def reconstruction_error(self, images: Any, covariates: pd.DataFrame) -> np.ndarray:
        """Mean squared error per pixel, in [0, 1] units, of the reconstruction from (μ(x, c), c) (N,)."""
        self._check_fitted()
        x, covariates = _check_inputs(images, covariates, shape=self.image_shape_)
        c = torch.as_tensor(self.encoding_.transform(covariates))
        device = resolve_device(self.device)
        self.net_.to(device).eval()
        errors = []
        for start in range(0, len(x), _CHUNK):
            rows = slice(start, start + _CHUNK)
            x_scaled, c_rows = _scaled(x[rows]).to(device), c[rows].to(device)
            mu, _ = self.net_.encode(x_scaled, c_rows)
            recon = self.net_.decode(mu, c_rows).clamp(-1.0, 1.0)
            errors.append(((recon - x_scaled) / 2.0).pow(2).flatten(1).mean(1).double().cpu())
        return torch.cat(errors).numpy() if errors else np.zeros(0)

    @torch.no_grad()
    def _posterior_means(self, x: np.ndarray, covariates: pd.DataFrame) -> np.ndarray:
        c = torch.as_tensor(self.encoding_.transform(covariates))
        device = resolve_device(self.device)
        self.net_.to(device).eval()
        out = [np.zeros((0, self.latent_dim))]
        for start in range(0, len(x), _CHUNK):
            rows = slice(start, start + _CHUNK)
            mu, _ = self.net_.encode(_scaled(x[rows]).to(device), c[rows].to(device))
            out.append(mu.double().cpu().numpy())
        return np.concatenate(out)

    # ------------------------------------------------------------------ saving hooks
    def _networks(self) -> dict[str, nn.Module]:
        return {"net": self.net_}

    def _fitted_statistics(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        statistics = {"encoding": self.encoding_.to_dict(), "image_shape": list(self.image_shape_),
                      "shrinkage": self.shrinkage_}
        arrays = {"latent_mean": self.latent_mean_, "latent_covariance": self.latent_covariance_,
                  "latent_precision": self.latent_precision_}
        return statistics, arrays

    def _rebuild(self, statistics: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.encoding_ = CovariateEncoding.from_dict(statistics["encoding"])
        self.image_shape_ = tuple(int(v) for v in statistics["image_shape"])
        self.shrinkage_ = float(statistics["shrinkage"])
        for name in ("latent_mean", "latent_covariance", "latent_precision"):
            if name not in arrays:
                raise ValueError(f"the saved NormativeCVAE has no array {name!r}; it was not saved by this class")
            setattr(self, f"{name}_", np.asarray(arrays[name], dtype=np.float64))
        self.net_, self.history_ = self._build(), None


def _names(columns: Sequence[str] | str | None) -> list[str]:
    if columns is None:
        return []
    return [columns] if isinstance(columns, str) else list(columns)


def _check_inputs(images: Any, covariates: pd.DataFrame, shape: tuple[int, ...] | None = None
                  ) -> tuple[np.ndarray, pd.DataFrame]:
    if np.ndim(images) == 5:
        raise ValueError(f"NormativeCVAE handles 2D images (N, 1, H, W) only; got 3D images shaped "
                         f"{np.shape(images)}: score a 2D slice instead")
    return check_harmonisation_inputs(images, covariates, spatial_dims=(2,), shape=shape)
