"""Seeds: one call makes a CPU run reproducible."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (call before building a model)."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (third-party code may use the global generator)
    torch.manual_seed(seed)
