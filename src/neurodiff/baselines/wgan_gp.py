"""Conditional WGAN-GP: SECONDGRAM's GAN baseline for longitudinal imputation, x2 ~ G(z, [y, x1]).

Trained on the paired subjects only. Networks (:mod:`neurodiff.nets.gan`): generator
[noise 100, cond-embedding 256] → 128 → 256 → 512 → 1024 → D with tanh; critic [x, cond-embedding]
→ 512 → 512 (dropout 0.4) → 1. Loss (Gulrajani et al. 2017): the critic minimises
D(fake) − D(real) + λ·(‖∇D(x̂)‖ − 1)² on random interpolates x̂ (λ = 10); the generator minimises
−D(fake). Every training batch is one critic step; the generator steps after every `n_critic`-th
critic step (counted across epochs, so tiny data sets still train the generator). Adam with
lr 1e-4 and betas (0.5, 0.9), the WGAN-GP authors' code for MLP critics; their Algorithm 1 uses
(0, 0.9), reachable through `betas`.

Why this has its own loop: a GAN alternates two networks with two optimisers and two losses at
different rates, which the shared single-loss :class:`neurodiff.training.Trainer` does not do. The
loop below reuses the shared pieces instead: :func:`seed_everything`, :class:`TensorData`,
:func:`epoch_order` / :func:`iterate_batches` (seeded batch order), :func:`resolve_device`,
:class:`EarlyStopping` (best generator by validation Pearson r) and a tqdm progress bar. It keeps
no mid-run checkpoints.

>>> gan = ConditionalWGANGP(epochs=500).fit(x2_train, cond_train, validation=(cond_val, x2_val))
>>> x2_hat = gan.predict(cond_test)                       # (n, D) in [-1, 1]
>>> gan.save("gan-dir"); ConditionalWGANGP.load("gan-dir").predict(cond_test, seed=0)
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from neurodiff.base import Estimator
from neurodiff.checks import as_matrix
from neurodiff.evaluation.imputation import pearson_feature
from neurodiff.nets.gan import CRITIC_HIDDEN, GENERATOR_HIDDEN, ConditionalCritic, ConditionalGenerator
from neurodiff.training import EarlyStopping, TensorData, resolve_device, seed_everything
from neurodiff.training.data import epoch_order, iterate_batches

Critic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_PREDICT_CHUNK = 8192


def gradient_penalty(
    critic: Critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    cond: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean of (‖∇ₓ critic(x̂, cond)‖₂ − 1)² over x̂ = ε·real + (1 − ε)·fake, ε ~ U(0, 1) per row.

    The condition is not interpolated and the gradient is taken with respect to x only. The graph
    is kept (``create_graph``) so that the penalty can be back-propagated into the critic.
    """
    eps = torch.rand(real.shape[0], 1, generator=generator, device=real.device, dtype=real.dtype)
    mixed = (eps * real + (1.0 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(mixed, cond)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


class ConditionalWGANGP(Estimator):
    """Conditional WGAN-GP of x2 (n, D) in [-1, 1] given cond (n, C) = concat[y, x1], both scaled.

    Parameters
    ----------
    epochs, batch_size:
        Passes over the paired training data; rows per critic step.
    lr, betas:
        Adam, the same for both networks (default 1e-4, (0.5, 0.9); see the module docstring).
    n_critic, gp_weight:
        Critic steps per generator step (5) and gradient-penalty weight λ (10).
    noise_dim, cond_emb_dim, generator_hidden, critic_hidden, dropout:
        Architecture; the defaults are the paper's (100, 256, (128, 256, 512, 1024), (512, 512), 0.4).
    patience:
        With ``fit(..., validation=...)`` the generator is scored every epoch (mean per-feature
        Pearson r of one generated sample against the real validation x2) and the best one kept;
        training stops after `patience` epochs without improvement (None: never stops early).
    seed, device, progress:
        Seeds weights, batch order, noise and dropout (CPU runs are exactly reproducible);
        "cpu" / "cuda" / "auto"; a progress bar over epochs.

    Attributes
    ----------
    generator_, critic_:
        The trained networks (only the generator is saved; a loaded model has ``critic_ = None``).
    n_features_, n_cond_:
        D and C, from which :meth:`load` rebuilds the architecture.
    history_:
        Per-epoch means ``critic_loss``, ``generator_loss`` (None in an epoch without a generator
        step), ``wasserstein`` (D(real) − D(fake)), ``gradient_penalty``; ``validation`` scores,
        ``best_epoch`` (0-based) and ``best_score``; ``critic_steps``, ``generator_steps``,
        ``seconds``. Not saved (None after :meth:`load`).
    """

    def __init__(
        self,
        *,
        epochs: int = 500,
        batch_size: int = 64,
        lr: float = 1e-4,
        betas: Sequence[float] = (0.5, 0.9),
        n_critic: int = 5,
        gp_weight: float = 10.0,
        noise_dim: int = 100,
        cond_emb_dim: int = 256,
        generator_hidden: Sequence[int] = GENERATOR_HIDDEN,
        critic_hidden: Sequence[int] = CRITIC_HIDDEN,
        dropout: float = 0.4,
        patience: int | None = None,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.betas = betas
        self.n_critic = n_critic
        self.gp_weight = gp_weight
        self.noise_dim = noise_dim
        self.cond_emb_dim = cond_emb_dim
        self.generator_hidden = generator_hidden
        self.critic_hidden = critic_hidden
        self.dropout = dropout
        self.patience = patience
        self.seed = seed
        self.device = device
        self.progress = progress

    # ------------------------------------------------------------------ building blocks
    def _make_generator(self) -> ConditionalGenerator:
        return ConditionalGenerator(
            self.n_features_, self.n_cond_, noise_dim=self.noise_dim, cond_emb_dim=self.cond_emb_dim,
            hidden=tuple(self.generator_hidden),
        )

    def _make_critic(self) -> ConditionalCritic:
        return ConditionalCritic(
            self.n_features_, self.n_cond_, cond_emb_dim=self.cond_emb_dim, hidden=tuple(self.critic_hidden),
            dropout=self.dropout,
        )

    def _make_optimizer(self, net: nn.Module) -> torch.optim.Adam:
        return torch.optim.Adam(net.parameters(), lr=self.lr, betas=(float(self.betas[0]), float(self.betas[1])))

    def _check_hyperparameters(self) -> None:
        for name in ("epochs", "batch_size", "n_critic", "noise_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"patience must be a positive integer or None, got {self.patience!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.gp_weight < 0:
            raise ValueError(f"gp_weight must be >= 0, got {self.gp_weight!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")

    # ------------------------------------------------------------------ fit
    def fit(self, x2: Any, cond: Any, validation: tuple[Any, Any] | None = None) -> ConditionalWGANGP:
        """Learn p(x2 | cond) from paired rows; `validation` = (cond_val, x2_val) keeps the best generator."""
        self._check_hyperparameters()
        X, C = _check_pair(x2, cond, "x2", "cond")
        if len(X) < 2:
            raise ValueError(f"need at least 2 paired training rows, got {len(X)}")
        if np.abs(X).max() > 1.0 + 1e-6:
            warnings.warn(
                f"x2 has values outside [-1, 1] (max |x2| = {np.abs(X).max():.3g}); the tanh generator cannot "
                "produce them: scale the follow-ups to [-1, 1]", UserWarning, stacklevel=2,
            )
        val = None
        if validation is not None:
            C_val, X_val = _check_validation(validation, X.shape[1], C.shape[1])
            val = (C_val, X_val)
        self.n_features_, self.n_cond_ = X.shape[1], C.shape[1]
        device = resolve_device(self.device)
        seed_everything(self.seed)
        self.generator_ = self._make_generator().to(device).train()
        self.critic_ = self._make_critic().to(device).train()
        data = TensorData(  # small tables: kept on the device for the whole run
            x=torch.as_tensor(X, dtype=torch.float32, device=device),
            cond=torch.as_tensor(C, dtype=torch.float32, device=device),
        )
        self.history_ = self._train(data, val, device)
        self.generator_.eval()
        self.critic_.eval()
        self.is_fitted_ = True
        return self

    def _train(self, data: TensorData, val: tuple[np.ndarray, np.ndarray] | None, device: torch.device) -> dict:
        gen, critic = self.generator_, self.critic_
        opt_g, opt_c = self._make_optimizer(gen), self._make_optimizer(critic)
        rng = torch.Generator(device).manual_seed(self.seed)
        stopper = None if val is None else EarlyStopping(self._validation_score(*val), patience=self.patience)
        history = _new_history()
        critic_steps, started = 0, time.perf_counter()
        bar = tqdm(range(self.epochs), desc="ConditionalWGANGP", disable=not self.progress, leave=False)
        for epoch in bar:
            sums: dict[str, list[float]] = {key: [] for key in _EPOCH_KEYS}
            for batch in iterate_batches(data, epoch_order(len(data), self.seed, epoch), self.batch_size):
                for key, value in self._critic_step(opt_c, batch["x"], batch["cond"], rng).items():
                    sums[key].append(value)
                critic_steps += 1
                if critic_steps % self.n_critic == 0:
                    sums["generator_loss"].append(self._generator_step(opt_g, batch["cond"], rng))
            _record_epoch(history, sums)
            bar.set_postfix(W=f"{history['wasserstein'][-1]:.3f}", gp=f"{history['gradient_penalty'][-1]:.3f}")
            if stopper is not None and self._validate(stopper, epoch, history):
                break
        bar.close()
        history["critic_steps"], history["generator_steps"] = critic_steps, critic_steps // self.n_critic
        history["seconds"] = time.perf_counter() - started
        if stopper is not None and stopper.best_state is not None:
            gen.load_state_dict(stopper.best_state, strict=True)
            history["best_epoch"], history["best_score"] = stopper.best_step, stopper.best_score
        return history

    def _noise(self, n: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
        return torch.randn(n, self.noise_dim, generator=rng, device=device)

    def _critic_step(
        self, opt: torch.optim.Optimizer, real: torch.Tensor, cond: torch.Tensor, rng: torch.Generator
    ) -> dict[str, float]:
        """One critic update: D(fake) − D(real) + λ·GP."""
        with torch.no_grad():
            fake = self.generator_(self._noise(len(real), rng, real.device), cond)
        wasserstein = self.critic_(real, cond).mean() - self.critic_(fake, cond).mean()
        penalty = gradient_penalty(self.critic_, real, fake, cond, rng)
        loss = -wasserstein + self.gp_weight * penalty
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"critic_loss": loss.item(), "wasserstein": wasserstein.item(), "gradient_penalty": penalty.item()}

    def _generator_step(self, opt: torch.optim.Optimizer, cond: torch.Tensor, rng: torch.Generator) -> float:
        """One generator update: −D(G(z, cond)); the critic's weights are frozen meanwhile."""
        self.critic_.requires_grad_(False)
        loss = -self.critic_(self.generator_(self._noise(len(cond), rng, cond.device), cond), cond).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.critic_.requires_grad_(True)
        return loss.item()

    def _validation_score(self, cond_val: np.ndarray, x2_val: np.ndarray) -> Callable[[nn.Module], float]:
        """Mean per-feature Pearson r of one sample (same noise every epoch) against the real x2, as
        SECONDGRAM's early stopping scores it (:func:`~neurodiff.evaluation.imputation.pearson_feature`)."""

        def score(generator: nn.Module) -> float:
            sample = self._generate(generator, cond_val, 1, self.seed + 1)[0]
            if not np.isfinite(sample).all():  # a diverged generator: no score (early stopping passes it over)
                return math.nan
            return pearson_feature(x2_val, sample)

        return score

    def _validate(self, stopper: EarlyStopping, epoch: int, history: dict) -> bool:
        self.generator_.eval()
        score = stopper.score(self.generator_)
        self.generator_.train()
        history["validation"].append(score)
        return stopper.update(score, epoch, self.generator_)

    # ------------------------------------------------------------------ predict
    def predict(self, cond: Any, n_samples: int = 1, seed: int | None = None) -> np.ndarray:
        """Generated x2 in [-1, 1]: (n, D), or (n_samples, n, D) when n_samples > 1."""
        self._check_fitted()
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        C = as_matrix(cond, "cond")
        if C.shape[1] != self.n_cond_:
            raise ValueError(f"cond has {C.shape[1]} columns, the model was fitted with {self.n_cond_}")
        self.generator_.to(resolve_device(self.device)).eval()
        samples = self._generate(self.generator_, C, n_samples, self.seed if seed is None else seed)
        return samples[0] if n_samples == 1 else samples

    @torch.no_grad()
    def _generate(self, generator: nn.Module, C: np.ndarray, n_samples: int, seed: int) -> np.ndarray:
        device = next(generator.parameters()).device
        rng = torch.Generator(device).manual_seed(seed)
        cond = torch.as_tensor(C, dtype=torch.float32, device=device)
        out = np.empty((n_samples, len(C), self.n_features_))
        for k in range(n_samples):
            noise = self._noise(len(C), rng, device)
            for start in range(0, len(C), _PREDICT_CHUNK):
                end = start + _PREDICT_CHUNK
                out[k, start:end] = generator(noise[start:end], cond[start:end]).cpu().numpy()
        return out

    # ------------------------------------------------------------------ saving hooks
    def _networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator_}

    def _fitted_statistics(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        stats = {"n_features": self.n_features_, "n_cond": self.n_cond_}
        if self.history_ is not None:
            stats["best_epoch"] = self.history_.get("best_epoch")
            stats["best_score"] = self.history_.get("best_score")
        return stats, {}

    def _rebuild(self, statistics: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.n_features_, self.n_cond_ = int(statistics["n_features"]), int(statistics["n_cond"])
        self.generator_ = self._make_generator()  # moved to `device` by predict (set_params(device=...) works)
        self.critic_ = None  # needed for training only; not saved
        self.history_ = None


# ---------------------------------------------------------------------- helpers
_EPOCH_KEYS = ("critic_loss", "generator_loss", "wasserstein", "gradient_penalty")


def _new_history() -> dict[str, Any]:
    return {**{key: [] for key in _EPOCH_KEYS}, "validation": [], "best_epoch": None, "best_score": None}


def _record_epoch(history: dict[str, Any], sums: dict[str, list[float]]) -> None:
    """Append each quantity's epoch mean (None for the generator loss in an epoch without its step)."""
    for key in _EPOCH_KEYS:
        history[key].append(float(np.mean(sums[key])) if sums[key] else None)


def _check_pair(x: Any, cond: Any, x_name: str, cond_name: str) -> tuple[np.ndarray, np.ndarray]:
    X, C = as_matrix(x, x_name), as_matrix(cond, cond_name)
    if len(X) != len(C):
        raise ValueError(f"{x_name} has {len(X)} rows but {cond_name} has {len(C)}")
    return X, C


def _check_validation(validation: Any, n_features: int, n_cond: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise ValueError("validation must be a pair (cond_val, x2_val)")
    X_val, C_val = _check_pair(validation[1], validation[0], "x2_val", "cond_val")
    if X_val.shape[1] != n_features or C_val.shape[1] != n_cond:
        raise ValueError(
            f"validation has {X_val.shape[1]} x2 and {C_val.shape[1]} cond columns; "
            f"the training data have {n_features} and {n_cond}"
        )
    if len(X_val) < 2:
        raise ValueError(f"validation needs at least 2 rows to compute a Pearson r, got {len(X_val)}")
    return C_val, X_val
