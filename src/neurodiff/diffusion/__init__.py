"""The diffusion engine shared by every method: schedules, forward noising, loss, samplers.

Weight-free and shape-agnostic; see :class:`Diffusion`.
"""

from neurodiff.diffusion.process import Diffusion
from neurodiff.diffusion.schedules import cosine_betas, linear_betas, make_betas

__all__ = ["Diffusion", "linear_betas", "cosine_betas", "make_betas"]
