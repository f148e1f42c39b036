"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of `model` whose weights track θ_ema ← d·θ_ema + (1 − d)·θ after every step.
    Buffers (e.g. normalisation statistics) are copied, not averaged.

    With `bias_correction` (the default) the average leaves the initial weights out, as Adam's moment
    estimates do: after t updates the weights are Σᵢ (1 − d)·d^(t−i)·θᵢ / (1 − d^t), computed by
    using d_t = d·(1 − d^(t−1)) / (1 − d^t) at step t. Over a long run this is the plain EMA (after
    100k steps at d = 0.9999 the initial weights' share would be 5e-5); over a short one it keeps the
    random initialisation out of the model used for sampling (after 200 steps at d = 0.995 a plain EMA
    is still 37 % initial weights, and a diffusion model sampled from it renders noise).
    """

    def __init__(self, model: nn.Module, decay: float, bias_correction: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.bias_correction = bias_correction
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        d, t = self.decay, self.updates + 1
        return d * (1.0 - d ** (t - 1)) / (1.0 - d**t) if self.bias_correction else d

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        self.updates += 1
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), weight)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state, strict=True)
