"""A diffusion model of feature vectors, optionally conditional: the engine and trainer as an estimator.

This is the plain building block (and the "vanilla diffusion" of SECONDGRAM's comparison): an
ε-prediction model with the MLP U-Net denoiser, features min–max scaled to [-1, 1], conditioning
standardised, trained with the shared trainer and sampled with DDPM or DDIM.

>>> model = FeatureDiffusion(max_epochs=100).fit(X, cond)
>>> samples = model.sample(cond=new_cond)          # one sample per conditioning row
>>> model.save("model-dir"); FeatureDiffusion.load("model-dir").sample(cond=new_cond, seed=0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from neurodiff.base import Estimator
from neurodiff.checks import as_matrix
from neurodiff.diffusion import Diffusion
from neurodiff.nets import MLPUNet, ResidualMLP
from neurodiff.training import GradientManipulation, TensorData, Trainer, resolve_device, seed_everything


class FeatureDiffusion(Estimator):
    """Diffusion model of feature vectors x ∈ R^D, optionally conditioned on c ∈ R^C.

    Parameters
    ----------
    network:
        "mlp_unet" (SECONDGRAM's denoiser, for tables of tens to hundreds of features) or
        "residual_mlp" (for a handful of features, where the MLP U-Net's input LayerNorm discards
        the signal: width = max(hidden), depth = len(hidden)).
    hidden, residual_blocks, emb_dim:
        The MLP U-Net's widths (SECONDGRAM: (512, 256, 128), 2, 256).
    schedule, timesteps, beta_start, beta_end:
        The β schedule ("linear" uses start/end; "cosine" ignores them).
    sampler, variance, ddim_steps, ddim_eta:
        "ddpm" (all T steps, σ² = β or the posterior variance) or "ddim" (`ddim_steps`, `ddim_eta`).
    clip_denoised:
        Clamp every predicted x0 to the scaled data range [-1, 1] while sampling (stabilises DDIM
        with few steps). Off by default, as in SECONDGRAM, which clamps only the final sample.
    max_epochs, batch_size, lr, ema_decay:
        Training (Adam).
    gradient_manipulation, clip, skip:
        "none", "calibrated" (clip = mean, skip = 3 × max of a preliminary pass) or "fixed"
        (the given `clip` and `skip`).
    seed, device, progress:
        Reproducibility, "cpu" / "cuda" / "auto", progress bars.
    """

    def __init__(
        self,
        *,
        network: Literal["mlp_unet", "residual_mlp"] = "mlp_unet",
        hidden: Sequence[int] = (512, 256, 128),
        residual_blocks: int = 2,
        emb_dim: int = 256,
        schedule: Literal["linear", "cosine"] = "linear",
        timesteps: int = 100,
        beta_start: float = 0.0015,
        beta_end: float = 0.02,
        sampler: Literal["ddpm", "ddim"] = "ddpm",
        variance: Literal["beta", "posterior"] = "beta",
        ddim_steps: int = 20,
        ddim_eta: float = 0.0,
        clip_denoised: bool = False,
        max_epochs: int = 200,
        batch_size: int = 256,
        lr: float = 1e-3,
        ema_decay: float | None = None,
        gradient_manipulation: Literal["none", "calibrated", "fixed"] = "none",
        clip: float = 0.3,
        skip: float = 1.8,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ):
        self.network = network
        self.hidden = hidden
        self.residual_blocks = residual_blocks
        self.emb_dim = emb_dim
        self.schedule = schedule
        self.timesteps = timesteps
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.sampler = sampler
        self.variance = variance
        self.ddim_steps = ddim_steps
        self.ddim_eta = ddim_eta
        self.clip_denoised = clip_denoised
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.ema_decay = ema_decay
        self.gradient_manipulation = gradient_manipulation
        self.clip = clip
        self.skip = skip
        self.seed = seed
        self.device = device
        self.progress = progress

    # ------------------------------------------------------------------ building blocks
    def make_diffusion(self) -> Diffusion:
        return Diffusion.from_hyperparameters(self.schedule, self.timesteps, self.beta_start, self.beta_end)

    def _make_net(self, dim: int, cond_dim: int) -> MLPUNet | ResidualMLP:
        if self.network == "mlp_unet":
            return MLPUNet(dim, cond_dim, hidden=self.hidden, residual_blocks=self.residual_blocks, emb_dim=self.emb_dim)
        if self.network == "residual_mlp":
            return ResidualMLP(dim, cond_dim, width=max(self.hidden), depth=len(self.hidden), emb_dim=self.emb_dim)
        raise ValueError(f"network must be 'mlp_unet' or 'residual_mlp', got {self.network!r}")

    # ------------------------------------------------------------------ fit / sample
    def fit(self, X: Any, cond: Any = None) -> FeatureDiffusion:
        """Learn p(x | cond) (or p(x) without `cond`) from rows of `X` (n, D) and `cond` (n, C)."""
        X = as_matrix(X, "X")
        C = None if cond is None else as_matrix(cond, "cond")
        if C is not None and len(C) != len(X):
            raise ValueError(f"X has {len(X)} rows but cond has {len(C)}")
        if len(X) < 2:
            raise ValueError(f"need at least 2 training rows, got {len(X)}")
        self.diffusion_ = self.make_diffusion()
        policy = GradientManipulation.from_mode(self.gradient_manipulation, self.clip, self.skip)
        self.x_min_, self.x_max_ = X.min(axis=0), X.max(axis=0)
        self.n_features_, self.n_cond_ = X.shape[1], 0 if C is None else C.shape[1]
        if C is not None:
            self.c_mean_, self.c_std_ = C.mean(axis=0), C.std(axis=0)
        seed_everything(self.seed)
        net = self._make_net(self.n_features_, self.n_cond_)
        tensors = {"x": torch.as_tensor(self._scale(X), dtype=torch.float32)}
        if C is not None:
            tensors["cond"] = torch.as_tensor(self._standardise(C), dtype=torch.float32)
        diffusion = self.diffusion_

        def loss(model, batch, generator):
            return diffusion.loss(model, batch["x"], batch.get("cond"), generator=generator)

        trainer = Trainer(
            max_epochs=self.max_epochs, batch_size=self.batch_size, lr=self.lr, ema_decay=self.ema_decay,
            gradient_manipulation=policy, seed=self.seed, device=self.device, progress=self.progress,
            description="FeatureDiffusion",
        )
        result = trainer.fit(net, loss, TensorData(**tensors))
        self.net_, self.history_ = result.model, result.history
        self.is_fitted_ = True
        return self

    def sample(self, n: int | None = None, cond: Any = None, *, seed: int | None = None) -> np.ndarray:
        """Draw samples in original units: `n` of them, or one per row of `cond` for a conditional model."""
        self._check_fitted()
        if self.n_cond_:
            if cond is None:
                raise ValueError(f"this model is conditional on {self.n_cond_} columns: pass cond")
            C = as_matrix(cond, "cond")
            if C.shape[1] != self.n_cond_:
                raise ValueError(f"cond has {C.shape[1]} columns, the model was fitted with {self.n_cond_}")
            n, c = len(C), self._standardise(C)
        else:
            if cond is not None:
                raise ValueError("this model is unconditional: do not pass cond")
            if n is None or n < 1:
                raise ValueError(f"give the number of samples n >= 1, got {n!r}")
            c = None
        device = resolve_device(self.device)
        net = self.net_.to(device).eval()
        generator = torch.Generator(device).manual_seed(self.seed if seed is None else seed)
        cond_t = None if c is None else torch.as_tensor(c, dtype=torch.float32, device=device)
        common = dict(
            cond=cond_t, clamp=(-1.0, 1.0), clip_x0=(-1.0, 1.0) if self.clip_denoised else None,
            generator=generator, device=device, dtype=torch.float32,
        )
        shape = (n, self.n_features_)
        if self.sampler == "ddpm":
            x = self.diffusion_.ddpm_sample(net, shape, variance=self.variance, **common)
        elif self.sampler == "ddim":
            x = self.diffusion_.ddim_sample(net, shape, steps=self.ddim_steps, eta=self.ddim_eta, **common)
        else:
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {self.sampler!r}")
        return self._unscale(x.cpu().numpy().astype(np.float64))

    # ------------------------------------------------------------------ scaling
    def _scale(self, X: np.ndarray) -> np.ndarray:
        span = np.where(self.x_max_ > self.x_min_, self.x_max_ - self.x_min_, 1.0)
        return 2.0 * (X - self.x_min_) / span - 1.0

    def _unscale(self, Z: np.ndarray) -> np.ndarray:
        span = np.where(self.x_max_ > self.x_min_, self.x_max_ - self.x_min_, 1.0)
        return (Z + 1.0) / 2.0 * span + self.x_min_

    def _standardise(self, C: np.ndarray) -> np.ndarray:
        return (C - self.c_mean_) / np.where(self.c_std_ > 0, self.c_std_, 1.0)

    # ------------------------------------------------------------------ saving hooks
    def _networks(self):
        return {"denoiser": self.net_}

    def _fitted_statistics(self):
        stats = {"n_features": self.n_features_, "n_cond": self.n_cond_, "schedule": self.diffusion_.schedule}
        arrays = {"x_min": self.x_min_, "x_max": self.x_max_}
        if self.n_cond_:
            arrays.update(c_mean=self.c_mean_, c_std=self.c_std_)
        return stats, arrays

    def _rebuild(self, statistics, arrays):
        self.n_features_, self.n_cond_ = statistics["n_features"], statistics["n_cond"]
        self.diffusion_ = Diffusion.from_config(statistics["schedule"])
        self.x_min_, self.x_max_ = arrays["x_min"], arrays["x_max"]
        if self.n_cond_:
            self.c_mean_, self.c_std_ = arrays["c_mean"], arrays["c_std"]
        self.net_ = self._make_net(self.n_features_, self.n_cond_)
        self.history_ = None
