"""Gradient manipulation (SECONDGRAM): skip updates whose gradient is huge, clip the rest.

Each step the global L2 norm G of all gradients is computed. If G exceeds the skip threshold (or is
not finite) the update is skipped entirely; otherwise the gradients are clipped to norm at most the
clip threshold and the optimiser steps.

Thresholds are either fixed (the public code: skip 1.8, clip 0.3) or calibrated (the paper): one
preliminary pass over the training data records the norms, then clip = their mean and skip =
3 × their maximum.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

Action = Literal["step", "clipped", "skipped"]


def global_grad_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """The L2 norm of all gradients taken together (0 when there are none)."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0).float()


@dataclass
class GradientManipulation:
    """Skip-and-clip policy on the global gradient norm.

    Use :meth:`calibrated` (the paper's default) or :meth:`fixed`; a calibrated policy has no
    thresholds until :meth:`calibrate` has seen the preliminary pass's norms.
    """

    clip: float | None = None
    skip: float | None = None
    mode: Literal["calibrated", "fixed"] = "calibrated"
    skip_factor: float = 3.0

    @classmethod
    def calibrated(cls, skip_factor: float = 3.0) -> GradientManipulation:
        return cls(mode="calibrated", skip_factor=skip_factor)

    @classmethod
    def fixed(cls, clip: float, skip: float) -> GradientManipulation:
        if not 0 < clip <= skip:
            raise ValueError(f"fixed thresholds need 0 < clip <= skip, got clip={clip}, skip={skip}")
        return cls(clip=clip, skip=skip, mode="fixed")

    @classmethod
    def from_mode(cls, mode: str, clip: float = 0.3, skip: float = 1.8) -> GradientManipulation | None:
        """"calibrated", "fixed" (with `clip`, `skip`) or "none" (None: plain updates)."""
        if mode == "calibrated":
            return cls.calibrated()
        if mode == "fixed":
            return cls.fixed(clip, skip)
        if mode == "none":
            return None
        raise ValueError(f"gradient_manipulation must be 'calibrated', 'fixed' or 'none', got {mode!r}")

    @property
    def ready(self) -> bool:
        return self.clip is not None and self.skip is not None

    def calibrate(self, norms: Sequence[float]) -> None:
        """Set clip = mean(norms) and skip = skip_factor × max(norms)."""
        values = torch.as_tensor(list(norms), dtype=torch.float64)
        values = values[torch.isfinite(values)]
        if len(values) == 0:
            raise ValueError("cannot calibrate gradient thresholds: no finite gradient norm was observed")
        self.clip = float(values.mean())
        self.skip = float(self.skip_factor * values.max())

    def apply(self, parameters: Sequence[torch.nn.Parameter], norm: torch.Tensor | None = None) -> tuple[Action, float]:
        """Decide on and apply the manipulation to the gradients in place; return (action, G).

        "skipped" means the caller must not step the optimiser (the gradients are zeroed).
        """
        if not self.ready:
            raise RuntimeError("gradient thresholds are not set: calibrate() first or use fixed thresholds")
        params = [p for p in parameters if p.grad is not None]
        g = global_grad_norm(params) if norm is None else norm
        value = float(g)
        if not torch.isfinite(g) or value > self.skip:
            for p in params:
                p.grad = None
            return "skipped", value
        if value > self.clip:
            scale = self.clip / (value + 1e-12)
            for p in params:
                p.grad.mul_(scale)
            return "clipped", value
        return "step", value

    def to_dict(self) -> dict:
        return {"mode": self.mode, "clip": self.clip, "skip": self.skip, "skip_factor": self.skip_factor}
