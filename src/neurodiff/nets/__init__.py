"""Networks (nn.Modules only, no schedule maths)."""

from neurodiff.nets.embeddings import TimestepEmbedding, sinusoidal_embedding
from neurodiff.nets.mlp_unet import MLPUNet
from neurodiff.nets.residual_mlp import ResidualMLP

__all__ = ["MLPUNet", "ResidualMLP", "TimestepEmbedding", "sinusoidal_embedding"]
