"""The Gaussian diffusion process: forward noising, the ε-prediction loss and the samplers.

Weight-free and shape-agnostic: ``x`` is any tensor whose first dimension is the batch (feature
vectors ``(B, D)``, 2D images ``(B, C, H, W)``, 3D volumes ``(B, C, D, H, W)``).

The network is any callable ``net(x_t, t)`` or, when a conditioning object is given,
``net(x_t, t, cond)``; ``t`` is a ``(B,)`` long tensor of step indices in ``[0, T)``, and the network
returns the predicted noise ε with the shape of ``x_t``. The conditioning is passed through
untouched: a tensor, a tuple or a dict, whatever the network expects.

Schedule constants are kept in float64 and cast, on use, to the device and dtype of the tensor they
multiply, so the engine follows the network wherever it is (CPU, CUDA, float32, bfloat16).

Samplers:

- :meth:`Diffusion.ddpm_sample`: ancestral sampling, σ_t² = β_t or the posterior variance β̃_t;
- :meth:`Diffusion.ddim_sample`: DDIM with any number of steps and η (η = 0 deterministic; with all
  T steps and η = 1 it is exactly DDPM with the posterior variance);
- :meth:`Diffusion.ddim_invert` / :meth:`Diffusion.render`: the deterministic DDIM pair that maps an
  image to its noise x_T and back (DiffAE's ``encode_stochastic`` and ``render``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from neurodiff.diffusion.schedules import make_betas

Network = Callable[..., torch.Tensor]
Range = tuple[float, float]


class Diffusion:
    """A discrete-time Gaussian diffusion with T steps, defined by its β schedule.

    Parameters
    ----------
    betas:
        The noise schedule, shape ``(T,)``, values in (0, 1).
    schedule:
        Optional description of how `betas` were made (e.g. ``{"name": "linear", "timesteps": 100,
        "start": 0.0015, "end": 0.02}``); kept so that a saved model can rebuild its diffusion.

    Examples
    --------
    >>> diffusion = Diffusion.from_schedule("linear", timesteps=100, start=0.0015, end=0.02)
    >>> loss = diffusion.loss(net, x0, cond)                      # training
    >>> x = diffusion.ddpm_sample(net, (16, 769), cond)          # generation
    >>> x_T = diffusion.ddim_invert(net, images, latent, steps=100)
    >>> recon = diffusion.render(net, x_T, latent, steps=100)
    """

    def __init__(self, betas: torch.Tensor | Sequence[float], schedule: dict[str, Any] | None = None):
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError(f"betas must be a non-empty 1-D sequence, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every beta must lie in (0, 1)")
        alpha_bar = torch.cumprod(1.0 - betas, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        self.betas = betas
        self.alpha_bar = alpha_bar
        self.alpha_bar_prev = alpha_bar_prev
        self.schedule = dict(schedule) if schedule else {"name": "custom", "timesteps": len(betas)}
        self._tables = {
            "sqrt_alpha_bar": alpha_bar.sqrt(),
            "sqrt_one_minus_alpha_bar": (1.0 - alpha_bar).sqrt(),
            "sqrt_recip_alpha_bar": (1.0 / alpha_bar).sqrt(),
            "sqrt_recipm1_alpha_bar": (1.0 / alpha_bar - 1.0).sqrt(),
            "betas": betas,
            "posterior_variance": betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar),
            "posterior_coef_x0": betas * alpha_bar_prev.sqrt() / (1.0 - alpha_bar),
            "posterior_coef_xt": (1.0 - alpha_bar_prev) * (1.0 - betas).sqrt() / (1.0 - alpha_bar),
        }
        self._cast: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}
        # python floats for the samplers, where every sample of a batch is at the same step
        self._scalars = {name: table.tolist() for name, table in self._tables.items()}
        self._scalars["alpha_bar"] = alpha_bar.tolist()

    @classmethod
    def from_schedule(cls, name: str, timesteps: int, **kwargs: float) -> Diffusion:
        """Build from a named schedule: ``Diffusion.from_schedule("linear", 1000, start=1e-4, end=0.02)``."""
        betas = make_betas(name, timesteps, **kwargs)
        return cls(betas, schedule={"name": name, "timesteps": timesteps, **kwargs})

    @classmethod
    def from_hyperparameters(cls, schedule: str, timesteps: int, beta_start: float, beta_end: float) -> Diffusion:
        """What estimators' hyperparameters describe: "linear" uses start/end, "cosine" ignores them."""
        if schedule == "linear":
            return cls.from_schedule("linear", timesteps, start=beta_start, end=beta_end)
        if schedule == "cosine":
            return cls.from_schedule("cosine", timesteps)
        raise ValueError(f"schedule must be 'linear' or 'cosine', got {schedule!r}")

    @classmethod
    def from_config(cls, schedule: dict[str, Any]) -> Diffusion:
        """Inverse of :attr:`schedule` for named schedules (what saved models store)."""
        schedule = dict(schedule)
        name = schedule.pop("name")
        timesteps = schedule.pop("timesteps")
        return cls.from_schedule(name, timesteps, **schedule)

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    def __repr__(self) -> str:
        return f"Diffusion({self.schedule})"

    # ------------------------------------------------------------------ constants
    def coef(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Schedule constant `name` at steps `t` (B,), broadcastable against `like` (B, ...)."""
        key = (name, like.device, like.dtype)
        table = self._cast.get(key)
        if table is None:
            table = self._tables[name].to(device=like.device, dtype=like.dtype)
            self._cast[key] = table
        return table[t.to(like.device)].reshape(-1, *([1] * (like.ndim - 1)))

    def _alpha_bar_at(self, index: int) -> float:
        """ᾱ at one step index, with ᾱ_{-1} = 1 (the clean data)."""
        return 1.0 if index < 0 else self._scalars["alpha_bar"][index]

    # ------------------------------------------------------------------ forward process and loss
    def sample_timesteps(
        self, batch: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """t ~ Uniform{0, …, T-1}, shape (batch,)."""
        return torch.randint(0, self.num_timesteps, (batch,), device=device, generator=generator)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t · x0 + √(1-ᾱ_t) · ε, a draw from q(x_t | x0)."""
        return self.coef("sqrt_alpha_bar", t, x0) * x0 + self.coef("sqrt_one_minus_alpha_bar", t, x0) * noise

    def loss(
        self,
        net: Network,
        x0: torch.Tensor,
        cond: Any = None,
        *,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        reduction: Literal["mean", "none"] = "mean",
    ) -> torch.Tensor:
        """The ε-prediction loss ‖ε − ε_θ(x_t, t, cond)‖² with t drawn uniformly and ε ~ N(0, I).

        ``reduction="none"`` returns one value per sample (the mean over its elements).
        """
        if t is None:
            t = self.sample_timesteps(x0.shape[0], x0.device, generator)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.q_sample(x0, t, noise)
        eps = self.predict_noise(net, x_t, t, cond)
        per_element = (eps.float() - noise.float()) ** 2
        per_sample = per_element.reshape(per_element.shape[0], -1).mean(dim=1)
        if reduction == "none":
            return per_sample
        if reduction == "mean":
            return per_sample.mean()
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")

    # ------------------------------------------------------------------ network and predictions
    def predict_noise(self, net: Network, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """ε_θ(x_t, t[, cond]), checked to have the shape of x_t."""
        eps = net(x_t, t) if cond is None else net(x_t, t, cond)
        if eps.shape != x_t.shape:
            raise ValueError(
                f"the network returned shape {tuple(eps.shape)} for an input of shape {tuple(x_t.shape)}; "
                "an ε-prediction network must return the shape of its input"
            )
        return eps

    # ------------------------------------------------------------------ samplers
    def ddim_timesteps(self, steps: int) -> list[int]:
        """The `steps` step indices DDIM visits, ascending: evenly spaced, always 0 and T-1 (steps ≥ 2).

        `steps` is any integer (Python or NumPy, not a bool) in [1, T]; anything else is a ValueError.
        """
        T = self.num_timesteps
        if not _is_integer(steps) or not 1 <= steps <= T:
            raise ValueError(f"DDIM steps must be an integer in [1, {T}], got {steps!r}")
        steps = int(steps)
        if steps == 1:
            return [T - 1]
        return sorted({int(round(v)) for v in np.linspace(0, T - 1, steps)})

    @torch.no_grad()
    def ddpm_sample(
        self,
        net: Network,
        shape: Sequence[int] | None = None,
        cond: Any = None,
        *,
        x_T: torch.Tensor | None = None,
        variance: Literal["beta", "posterior"] = "beta",
        clip_x0: Range | None = None,
        clamp: Range | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """DDPM ancestral sampling over all T steps, from x_T ~ N(0, I) (or the given `x_T`).

        x_{t-1} = μ_θ(x_t, t) + σ_t z, z ~ N(0, I) for t > 0 and no noise at t = 0, where μ_θ is the
        posterior mean given the predicted x0, and σ_t² = β_t (``variance="beta"``, SECONDGRAM) or
        β̃_t = β_t (1-ᾱ_{t-1}) / (1-ᾱ_t) (``variance="posterior"``). `clip_x0` clamps each
        predicted x0 to a range; `clamp` clamps the final sample (SECONDGRAM: (-1, 1)).
        """
        if variance not in ("beta", "posterior"):
            raise ValueError(f"variance must be 'beta' or 'posterior', got {variance!r}")
        x = self._initial_noise(net, shape, x_T, generator, device, dtype)
        tables = self._scalars
        variances = tables["betas"] if variance == "beta" else tables["posterior_variance"]
        for step in tqdm(range(self.num_timesteps - 1, -1, -1), desc="DDPM", disable=not progress, leave=False):
            t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
            eps = self.predict_noise(net, x, t, cond)
            x0 = tables["sqrt_recip_alpha_bar"][step] * x - tables["sqrt_recipm1_alpha_bar"][step] * eps
            if clip_x0 is not None:
                x0 = x0.clamp(*clip_x0)
            mean = tables["posterior_coef_x0"][step] * x0 + tables["posterior_coef_xt"][step] * x
            if step > 0:
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = mean + math.sqrt(variances[step]) * noise
            else:
                x = mean
        return x.clamp(*clamp) if clamp is not None else x

    @torch.no_grad()
    def ddim_sample(
        self,
        net: Network,
        shape: Sequence[int] | None = None,
        cond: Any = None,
        *,
        steps: int | None = None,
        eta: float = 0.0,
        x_T: torch.Tensor | None = None,
        start: int | None = None,
        clip_x0: Range | None = None,
        clamp: Range | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """DDIM sampling with `steps` network evaluations and stochasticity `eta` (0 = deterministic).

        `steps` defaults to min(20, T); an explicit value outside [1, T] is a ValueError.

        `start` (default T − 1): the step `x_T` is at, e.g. an image noised to step `start` by
        :meth:`q_sample` (SDEdit-style partial denoising); only the visited steps below it follow.

        Each step from τ_i to the previous visited step τ_{i-1} (ᾱ = 1 after the last):
        x = √ᾱ_prev · x0̂ + √(1 − ᾱ_prev − σ²) · ε̂ + σ z,
        σ = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev).
        """
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        x = self._initial_noise(net, shape, x_T, generator, device, dtype)
        steps = self.default_steps(steps, 20)
        taus = self.ddim_timesteps(steps)
        if start is not None:
            if not _is_integer(start) or not 0 <= start < self.num_timesteps:
                raise ValueError(f"start must be an integer step in [0, {self.num_timesteps - 1}], got {start!r}")
            start = int(start)
            taus = sorted({tau for tau in taus if tau < start} | {start})
        for i in tqdm(range(len(taus) - 1, -1, -1), desc=f"DDIM-{steps}", disable=not progress, leave=False):
            t = torch.full((x.shape[0],), taus[i], device=x.device, dtype=torch.long)
            eps = self.predict_noise(net, x, t, cond)
            a_t, a_prev = self._alpha_bar_at(taus[i]), self._alpha_bar_at(taus[i - 1] if i > 0 else -1)
            x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            if clip_x0 is not None:
                x0 = x0.clamp(*clip_x0)
                eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
            sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
            x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
            if i > 0 and eta > 0:
                x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x.clamp(*clamp) if clamp is not None else x

    @torch.no_grad()
    def ddim_invert(
        self,
        net: Network,
        x0: torch.Tensor,
        cond: Any = None,
        *,
        steps: int | None = None,
        refine: int = 0,
        progress: bool = False,
    ) -> torch.Tensor:
        """Deterministic DDIM inversion x0 → x_T (DiffAE's ``encode_stochastic``).

        Runs the η = 0 DDIM update forwards over the same visited steps that :meth:`render` walks
        backwards, so ``render(net, ddim_invert(net, x0, c, steps=S), c, steps=S) ≈ x0``.

        Each step evaluates ε at the point it leaves (as DiffAE does), while :meth:`render` evaluates
        it at the point it arrives from; the mismatch is small with many steps (default, ``None``: all
        T; an explicit value must lie in [1, T], so 0 is a ValueError) and grows with few. ``refine=k`` corrects each step with k fixed-point iterations that
        re-evaluate ε at the arrival point, making the inversion the exact inverse of the
        rendering (k more network calls per step; 2–5 suffice for a smooth network).
        """
        if refine < 0:
            raise ValueError(f"refine must be >= 0, got {refine}")
        taus = self.ddim_timesteps(self.num_timesteps if steps is None else steps)
        x = x0
        for i in tqdm(range(len(taus)), desc="DDIM inversion", disable=not progress, leave=False):
            a_from = self._alpha_bar_at(taus[i - 1] if i > 0 else -1)
            a_to = self._alpha_bar_at(taus[i])
            t_from = torch.full((x.shape[0],), taus[max(i - 1, 0)], device=x.device, dtype=torch.long)
            eps = self.predict_noise(net, x, t_from, cond)
            x_next = self._ddim_step(x, eps, a_from, a_to)
            t_to = torch.full_like(t_from, taus[i])
            for _ in range(refine):
                x_next = self._ddim_step(x, self.predict_noise(net, x_next, t_to, cond), a_from, a_to)
            x = x_next
        return x

    @staticmethod
    def _ddim_step(x: torch.Tensor, eps: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
        """The η = 0 DDIM move from ᾱ = a_from to ᾱ = a_to with noise estimate eps."""
        x0_hat = (x - math.sqrt(1 - a_from) * eps) / math.sqrt(a_from)
        return math.sqrt(a_to) * x0_hat + math.sqrt(1 - a_to) * eps

    def render(
        self, net: Network, x_T: torch.Tensor, cond: Any = None, *, steps: int | None = None, progress: bool = False
    ) -> torch.Tensor:
        """Deterministic decoding x_T → x0 (DiffAE's ``render``): DDIM with η = 0 from the given x_T.

        `steps` defaults to min(20, T).
        """
        return self.ddim_sample(net, cond=cond, steps=steps, eta=0.0, x_T=x_T, progress=progress)

    # ------------------------------------------------------------------ helpers
    def default_steps(self, steps: int | None, default: int) -> int:
        """`steps`, or when it is None the default capped at T: min(default, T).

        Only the default is capped: an explicit count above T stays an error (of :meth:`ddim_timesteps`).
        """
        return min(default, self.num_timesteps) if steps is None else steps

    @staticmethod
    def _initial_noise(
        net: Network,
        shape: Sequence[int] | None,
        x_T: torch.Tensor | None,
        generator: torch.Generator | None,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> torch.Tensor:
        if x_T is not None:
            return x_T
        if shape is None:
            raise ValueError("give either the sample shape or the starting noise x_T")
        net_device, net_dtype = _device_and_dtype(net)
        device = device if device is not None else net_device
        dtype = dtype if dtype is not None else net_dtype
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def _device_and_dtype(net: Network) -> tuple[torch.device, torch.dtype]:
    """Where the network's weights live (CPU float32 for a weight-free callable)."""
    if isinstance(net, torch.nn.Module):
        for p in net.parameters():
            return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _is_integer(value: Any) -> bool:
    """An integer, Python's or NumPy's (numbers.Integral), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
