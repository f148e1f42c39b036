"""The diffusion autoencoder as one module: semantic encoder, optional covariate encoder, and the
latent-conditioned UNet. One module so that the trainer, EMA and checkpoints treat it as a whole.

The latent the UNet sees is ``concat[s_φ(x0[, encoder covariates]), f_ψ(latent covariates)]`` (the
second part only when there is a covariate encoder, as in DDAE's z_υ and z_κ):
:attr:`DiffusionAutoencoderNet.semantic_part` and :attr:`~DiffusionAutoencoderNet.covariate_part` are
their columns. :func:`latent_sensitivity` measures how much the noise prediction depends on the whole
latent or on a slice of it.
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

    @property
    def semantic_part(self) -> slice:
        """The latent's columns from the semantic encoder (DDAE's z_υ)."""
        return slice(0, self.encoder.latent_dim)

    @property
    def covariate_part(self) -> slice | None:
        """The latent's columns from the covariate encoder (DDAE's z_κ); None without one."""
        if self.covariate_encoder is None:
            return None
        return slice(self.encoder.latent_dim, self.encoder.latent_dim + self.covariate_encoder.latent_dim)

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
                       latent: torch.Tensor, part: slice | None = None) -> float:
    """How much the noise prediction depends on the latent: ‖ε(z) − ε(z')‖ / ‖ε(z)‖ with z' the
    latents of the batch rolled by one (each image paired with another image's latent).

    0 means the decoder ignores its latent (the known DiffAE failure); it grows as the latent
    steers the denoising. Needs a batch of at least two different images.

    Parameters
    ----------
    net, x_t, t:
        The autoencoder, noisy images (B, 1, ...) and their timesteps (B,).
    latent:
        The images' latents (B, latent size).
    part:
        Latent columns to swap, e.g. ``slice(0, 16)`` for DDAE's z_υ; the others keep each image's
        own values. None (the default): the whole latent, as logged under ``latent_sensitivity``.

    Raises
    ------
    ValueError
        Fewer than two images, or `part` is not a contiguous, non-empty slice of the latent's columns.
    """
    if len(latent) < 2:
        raise ValueError("latent sensitivity needs at least two images")
    if part is None:
        return prediction_change(net, x_t, t, latent, latent.roll(1, dims=0))
    columns = _columns(part, latent.shape[1])
    swapped = latent.clone()
    swapped[:, columns] = latent[:, columns].roll(1, dims=0)
    return prediction_change(net, x_t, t, latent, swapped)


@torch.no_grad()
def prediction_change(net: DiffusionAutoencoderNet, x_t: torch.Tensor, t: torch.Tensor,
                      latent: torch.Tensor, changed: torch.Tensor) -> float:
    """‖ε(x_t, t, latent) − ε(x_t, t, changed)‖ / ‖ε(x_t, t, latent)‖ over the batch, the net in eval mode.

    The measure behind :func:`latent_sensitivity`; `changed` may be any other latent of the same shape
    (e.g. DDAE's latent recomputed with another site).
    """
    if changed.shape != latent.shape:
        raise ValueError(f"the changed latent is shaped {tuple(changed.shape)}, the latent {tuple(latent.shape)}")
    was_training = net.training
    net.eval()
    try:
        eps = net(x_t, t, latent)
        eps_changed = net(x_t, t, changed)
    finally:
        net.train(was_training)
    return float((eps - eps_changed).norm() / eps.norm().clamp_min(1e-12))


def _columns(part: slice, width: int) -> slice:
    """`part` checked as a contiguous, non-empty slice of a `width`-column latent."""
    if not isinstance(part, slice):
        raise ValueError(f"part must be a slice of latent columns, e.g. slice(0, 16), got {part!r}")
    start, stop, step = part.indices(width)
    if step != 1:
        raise ValueError(f"part must be a contiguous slice (step 1), got {part!r}")
    if stop <= start:
        raise ValueError(f"part {part!r} selects no column of the {width}-column latent")
    return slice(start, stop)
