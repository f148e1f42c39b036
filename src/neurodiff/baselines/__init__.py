"""Baselines the methods are compared against (conditional WGAN-GP, LOCF, ridge, ...)."""
