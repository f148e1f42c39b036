"""Longitudinal imputation of imaging features (SECONDGRAM)."""

from neurodiff.methods.longitudinal.preparation import ChainedImputer, Preparation
from neurodiff.methods.longitudinal.secondgram import PRESETS, SecondGram

__all__ = ["PRESETS", "ChainedImputer", "Preparation", "SecondGram"]
