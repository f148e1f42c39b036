"""DDAE (Ijishakin et al.): multi-site harmonisation with a disentangled diffusion autoencoder.

Built on the DiffAE core (:class:`~neurodiff.methods.diffae.DiffusionAutoencoder`):

- unknown-variance encoder s_φ(x0) → z_υ (the semantic encoder: anatomy and whatever else the
  covariates do not explain);
- known-variance encoder f_ψ(age, sex, site) → z_κ (the covariate encoder);
- the UNet with adaptive group norm on z = [z_υ, z_κ].

Harmonise an image to a target site: z_υ = s_φ(x0); x_T = DDIM inversion of x0 under
[z_υ, f_ψ(age, sex, site)]; render x_T under [z_υ, f_ψ(age, sex, target site)].

Disentanglement is not assumed: nothing in the objective stops z_υ from carrying the site, in which
case changing z_κ does little. :meth:`DisentangledDiffAE.unknown_latents` gives z_υ so a classifier
can measure how well the site is predicted from it, and ``adversarial_weight > 0`` adds what
removes it: a site classifier on z_υ trained through a gradient-reversal layer (Ganin & Lempitsky,
2015), so the encoder is pushed to make the site unpredictable while the head tries to predict it.

Harmonisation works only if the decoder uses the site. Besides DiffAE's whole-latent sensitivity,
training logs every `sensitivity_every` steps, on the same probe batch and noise:

- ``history_["site_sensitivity"]``: ‖ε(x_t, t, z) − ε(x_t, t, z')‖ / ‖ε(x_t, t, z)‖ with z' the latent
  recomputed as :meth:`~DisentangledDiffAE.transform` does, each image's site replaced by the next
  training site (the last by the first), everything else (image, age, sex) kept. 0: the decoder
  ignores the site, and harmonising would change nothing.
- ``history_["semantic_sensitivity"]``: the same with only z_υ swapped between the images (z_κ kept).

Both are saved with the model (its training summary) like ``latent_sensitivity``.

>>> model = DisentangledDiffAE.preset("quick").fit("cohort/manifest.csv")
>>> harmonised = model.transform(images, covariates, target_site="site0")
"""

from __future__ import annotations

import math
import numbers

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from neurodiff.data.covariates import CovariateEncoding, category_key
from neurodiff.methods.diffae import PRESETS as DIFFAE_PRESETS
from neurodiff.methods.diffae import SENSITIVITY, DiffusionAutoencoder
from neurodiff.nets.diffusion_autoencoder import DiffusionAutoencoderNet, latent_sensitivity, prediction_change

#: DDAE's covariates: what the known-variance encoder sees.
COVARIATES = ("age", "sex", "site")

#: Keys in ``history_`` (beside ``latent_sensitivity``): the sensitivity to the site, and to z_υ alone.
SITE_SENSITIVITY = "site_sensitivity"
SEMANTIC_SENSITIVITY = "semantic_sensitivity"

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {**DIFFAE_PRESETS["paper"], "covariate_latent_dim": 64},
    "quick": {**DIFFAE_PRESETS["quick"], "covariate_latent_dim": 16},
    "quick3d": {**DIFFAE_PRESETS["quick3d"], "covariate_latent_dim": 16},
}


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


class DisentangledNet(DiffusionAutoencoderNet):
    """The autoencoder plus a site classifier on z_υ (used only for the adversarial loss)."""

    def __init__(self, encoder, unet, covariate_encoder, n_sites: int):
        super().__init__(encoder, unet, covariate_encoder)
        width = encoder.latent_dim
        self.site_head = nn.Sequential(nn.Linear(width, 128), nn.SiLU(), nn.Linear(128, n_sites))

    def site_logits(self, z_unknown: torch.Tensor, reversal: float) -> torch.Tensor:
        return self.site_head(_GradientReversal.apply(z_unknown, reversal))


class DisentangledDiffAE(DiffusionAutoencoder):
    """Disentangled diffusion autoencoder for harmonisation (see module docstring).

    Parameters (beyond :class:`DiffusionAutoencoder`'s)
    ----------
    covariates:
        Manifest columns of the known-variance encoder (age, sex, site); must include ``site``.
    adversarial_weight:
        Weight of the adversarial site loss on z_υ (0: none, the paper's model).
    inversion_steps, render_steps:
        DDIM steps of the inversion and of the rendering in :meth:`transform` (None: 50, or T when the
        model has fewer diffusion steps).
    """

    def __init__(
        self,
        *,
        covariates: Sequence[str] = COVARIATES,
        adversarial_weight: float = 0.0,
        inversion_steps: int | None = None,
        render_steps: int | None = None,
        **params: Any,
    ):
        params.setdefault("latent_covariates", tuple(covariates))
        super().__init__(**params)
        self.covariates = covariates
        self.adversarial_weight = adversarial_weight
        self.inversion_steps = inversion_steps
        self.render_steps = render_steps

    @classmethod
    def _param_names(cls) -> list[str]:
        return sorted({*DiffusionAutoencoder._param_names(), "covariates", "adversarial_weight", "inversion_steps",
                       "render_steps"} - {"latent_covariates"})

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    @classmethod
    def preset(cls, name: str, **params: Any) -> DisentangledDiffAE:
        """``"paper"`` (the brain-slice recipe) or ``"quick"`` (CPU minutes at 64×64), with overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **params})

    # ------------------------------------------------------------------ fit
    def fit(self, manifest, images: Any = None) -> DisentangledDiffAE:
        """Train on every image of `manifest` (a CSV path, or a frame with its `images` given)."""
        if "site" not in self.covariates:
            raise ValueError(f"DDAE's known-variance covariates must include 'site', got {list(self.covariates)}")
        weight = self.adversarial_weight
        if isinstance(weight, bool) or not (isinstance(weight, numbers.Real) and math.isfinite(weight) and weight >= 0):
            # a negative weight trains the encoder to *encode* the site, and the loss is unbounded below
            raise ValueError(f"adversarial_weight must be a finite number ≥ 0 (0: off), got {weight!r}")
        self.latent_covariates = tuple(self.covariates)
        manifest, images = self._manifest_and_images(manifest, images)
        sites = manifest["site"].map(category_key)  # as the encoding will see them: " a" is "a"
        if sites.nunique() < 2:
            raise ValueError(f"harmonisation needs images from at least two sites; the manifest has only "
                             f"{sites.iloc[0]!r}")
        return super().fit(manifest, images)

    def _assemble(self, encoder, unet, covariate_encoder) -> DiffusionAutoencoderNet:
        net = DisentangledNet(encoder, unet, covariate_encoder, len(self.sites))
        # without the adversarial loss the site head sits training out; frozen, it is no parameter
        # that torchrun's DDP would wait for a gradient of
        net.site_head.requires_grad_(bool(self.adversarial_weight))
        return net

    @property
    def sites(self) -> list[str]:
        """The sites seen in training (the possible targets)."""
        return [str(s) for s in self.latent_encoding_.categories("site")]

    def _extra_training_tensors(self, frame: pd.DataFrame) -> dict[str, torch.Tensor]:
        return {"site": torch.as_tensor(self.latent_encoding_.category_indices(frame, "site"), dtype=torch.long)}

    _sensitivity_keys = (SENSITIVITY, SITE_SENSITIVITY, SEMANTIC_SENSITIVITY)

    def _sensitivities(self, net, probe, x_t, t, latent) -> dict[str, float]:
        """The whole-latent sensitivity, the site's and z_υ's (see the module docstring)."""
        values = super()._sensitivities(net, probe, x_t, t, latent)
        elsewhere = net.latent(probe["x"], next_site(probe.get("enc_cov"), self.encoder_encoding_),
                               next_site(probe.get("lat_cov"), self.latent_encoding_))
        values[SITE_SENSITIVITY] = prediction_change(net, x_t, t, latent, elsewhere)
        values[SEMANTIC_SENSITIVITY] = latent_sensitivity(net, x_t, t, latent, part=net.semantic_part)
        return values

    def _latent_loss(self, net, batch, latent, diffusion_loss):
        if not self.adversarial_weight:
            return diffusion_loss
        logits = net.site_logits(latent[:, : self.latent_dim], 1.0)
        site_loss = F.cross_entropy(logits, batch["site"])
        return diffusion_loss + self.adversarial_weight * site_loss, {"site_loss": float(site_loss.detach())}

    # ------------------------------------------------------------------ harmonise
    def unknown_latents(self, images: Any, covariates: pd.DataFrame) -> np.ndarray:
        """z_υ, the part of the latent the site should not be predictable from."""
        return self.encode(images, covariates)[:, : self.latent_dim]

    def transform(self, images: Any, covariates: pd.DataFrame, target_site: str) -> np.ndarray:
        """Images (N, 1, …) in [0, 1] as if acquired at `target_site` (a site seen in training)."""
        self._check_fitted()
        target_site = category_key(target_site)  # as the encoding compares sites: 1 and 1.0 alike
        if target_site not in self.sites:
            raise ValueError(f"target site {target_site!r} was not seen in training; known sites: "
                             f"{', '.join(self.sites)}")
        z = self.encode(images, covariates)
        z_target = self.encode(images, self.latent_encoding_.with_values(covariates, site=target_site))
        x_T = self.encode_stochastic(images, z, steps=self.diffusion_.default_steps(self.inversion_steps, 50))
        return self.render(x_T, z_target, steps=self.diffusion_.default_steps(self.render_steps, 50))

    def _rebuild(self, statistics, arrays):
        self.latent_covariates = tuple(self.covariates)
        super()._rebuild(statistics, arrays)


def next_site(covariates: torch.Tensor | None, encoding: CovariateEncoding | None) -> torch.Tensor | None:
    """Encoded covariates with each row's site replaced by the next site of the encoding (the last by
    the first), the other columns kept; unchanged when there are none or the encoding has no site.

    Every row changes site (unlike pairing the rows of a batch, which may all come from one site).
    """
    if covariates is None or encoding is None or "site" not in encoding.names:
        return covariates
    columns = _site_columns(encoding)
    if covariates.ndim != 2 or covariates.shape[1] != encoding.width:
        raise ValueError(f"expected encoded covariates shaped (N, {encoding.width}), got {tuple(covariates.shape)}")
    out = covariates.clone()
    out[:, columns] = covariates[:, columns].roll(1, dims=1)  # one-hot: category i → i + 1
    return out


def _site_columns(encoding: CovariateEncoding) -> slice:
    """The columns of the site's one-hot group in `encoding`'s output."""
    names, columns = [f"site={site}" for site in encoding.categories("site")], encoding.columns
    start = columns.index(names[0]) if names[0] in columns else None
    if start is None or columns[start: start + len(names)] != names:
        raise ValueError(f"the covariate encoding has no one-hot site group (its columns: {encoding.columns})")
    return slice(start, start + len(names))
