"""Networks (nn.Modules only, no schedule maths)."""

from neurodiff.nets.diffae_unet import CovariateEncoder, DiffAEUNet, SemanticEncoder
from neurodiff.nets.diffusion_autoencoder import (
    DiffusionAutoencoderNet,
    latent_sensitivity,
    prediction_change,
)
from neurodiff.nets.embeddings import TimestepEmbedding, sinusoidal_embedding
from neurodiff.nets.mlp_unet import ConditionedMLPUNet, MLPUNet
from neurodiff.nets.residual_mlp import ResidualMLP

__all__ = [
    "ConditionedMLPUNet",
    "CovariateEncoder",
    "DiffAEUNet",
    "DiffusionAutoencoderNet",
    "MLPUNet",
    "ResidualMLP",
    "SemanticEncoder",
    "TimestepEmbedding",
    "latent_sensitivity",
    "prediction_change",
    "sinusoidal_embedding",
]
