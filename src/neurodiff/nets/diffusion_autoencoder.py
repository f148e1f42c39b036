"""The diffusion autoencoder as one module: semantic encoder, optional covariate encoder, and the
latent-conditioned UNet. One module so that the trainer, EMA and checkpoints treat it as a whole.

The latent the UNet sees is ``concat[s_φ(x0[, encoder covariates]), f_ψ(latent covariates)]`` (the
second part only when there is a covariate encoder, as in DDAE's z_υ and z_κ).
"""

from __future__ import annotations

import torch
from torch import nn

from neurodiff.nets.diffae_unet import CovariateEncoder, DiffAEUNet, SemanticEncoder


class DiffusionAutoencoderNet(nn.Module):
    """``latent(x0, ...)`` → z; ``forward(x_t, t, z)`` → ε (the UNet)."""

    def __init__(self, encoder: SemanticEncoder, unet: DiffAEUNet, covariate_encoder: CovariateEncoder | None = None):
        super().__init__()
        expected = encoder.latent_dim + (covariate_encoder.latent_dim if covariate_encoder is not None else 0)
        if unet.latent_dim != expected:
            raise ValueError(f"the UNet takes a {unet.latent_dim}-d latent but the encoders give {expected}")
        self.encoder, self.unet, self.covariate_encoder = encoder, unet, covariate_encoder

    def latent(self, x0: torch.Tensor, encoder_covariates: torch.Tensor | None = None,
               latent_covariates: torch.Tensor | None = None) -> torch.Tensor:
        z = self.encoder(x0, encoder_covariates)
        if self.covariate_encoder is None:
            if latent_covariates is not None:
                raise ValueError("this autoencoder has no covariate encoder but was given latent covariates")
            return z
        if latent_covariates is None:
            raise ValueError("this autoencoder's latent includes a covariate part: give latent_covariates")
        return torch.cat([z, self.covariate_encoder(latent_covariates)], dim=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, t, latent)


@torch.no_grad()
def latent_sensitivity(net: DiffusionAutoencoderNet, x_t: torch.Tensor, t: torch.Tensor,
                       latent: torch.Tensor) -> float:
    """How much the noise prediction depends on the latent: ‖ε(z) − ε(z')‖ / ‖ε(z)‖ with z' the
    latents of the batch rolled by one (each image paired with another image's latent).

    0 means the decoder ignores its latent (the known DiffAE failure); it grows as the latent
    steers the denoising. Needs a batch of at least two different images.
    """
    if len(latent) < 2:
        raise ValueError("latent sensitivity needs at least two images")
    was_training = net.training
    net.eval()
    try:
        eps = net(x_t, t, latent)
        eps_swapped = net(x_t, t, latent.roll(1, dims=0))
    finally:
        net.train(was_training)
    return float((eps - eps_swapped).norm() / eps.norm().clamp_min(1e-12))
