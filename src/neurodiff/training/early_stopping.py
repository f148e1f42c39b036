"""Early stopping on a validation score, remembering the best model's weights."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn


@dataclass
class EarlyStopping:
    """Stop after `patience` validations without improvement; keep the best weights.

    Parameters
    ----------
    score:
        ``score(model) -> float``, evaluated on the model used for inference (the EMA copy when
        the trainer keeps one). SECONDGRAM: mean per-feature Pearson r of generated validation
        follow-ups.
    patience:
        Number of validations without improvement before stopping (None: never stop early, but
        still keep the best weights).
    mode:
        "max" when a higher score is better, "min" otherwise.
    min_delta:
        How much better a score must be to count as an improvement.
    """

    score: Callable[[nn.Module], float]
    patience: int | None = 50
    mode: Literal["max", "min"] = "max"
    min_delta: float = 0.0
    best_score: float = field(default=math.nan, init=False)
    best_step: int = field(default=-1, init=False)
    bad_validations: int = field(default=0, init=False)
    best_state: dict[str, torch.Tensor] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")

    def improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if math.isnan(self.best_score):
            return True
        delta = value - self.best_score if self.mode == "max" else self.best_score - value
        return delta > self.min_delta

    def update(self, value: float, step: int, model: nn.Module) -> bool:
        """Record a validation score; return True when training should stop."""
        if self.improved(value):
            self.best_score, self.best_step, self.bad_validations = float(value), step, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.bad_validations += 1
        return self.patience is not None and self.bad_validations >= self.patience

    def state_dict(self) -> dict:
        return {
            "best_score": self.best_score,
            "best_step": self.best_step,
            "bad_validations": self.bad_validations,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best_score = state["best_score"]
        self.best_step = state["best_step"]
        self.bad_validations = state["bad_validations"]
        self.best_state = copy.copy(state["best_state"])
