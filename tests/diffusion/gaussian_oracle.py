"""An exact ε-oracle: the Bayes-optimal noise predictor when the data are N(μ, s² I).

Then x_t ~ N(√ᾱ μ, (ᾱ s² + 1 − ᾱ) I) and E[ε | x_t] = √(1−ᾱ) (x_t − √ᾱ μ) / (ᾱ s² + 1 − ᾱ), so the
diffusion model is known in closed form and the samplers can be checked against exact answers.
"""

import torch

from neurodiff.diffusion import Diffusion


class GaussianOracle:
    def __init__(self, diffusion: Diffusion, mu: float, s: float):
        self.diffusion, self.mu, self.s = diffusion, mu, s
        self.calls: list[tuple[torch.Tensor, object]] = []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: object = None) -> torch.Tensor:
        self.calls.append((t.clone(), cond))
        a = self.diffusion.alpha_bar.to(x_t.device, x_t.dtype)[t].reshape(-1, *([1] * (x_t.ndim - 1)))
        return (1 - a).sqrt() * (x_t - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)
