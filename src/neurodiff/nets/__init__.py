"""Networks (nn.Modules only, no schedule maths)."""

from neurodiff.nets.embeddings import TimestepEmbedding, sinusoidal_embedding
from neurodiff.nets.mlp_unet import MLPUNet

__all__ = ["MLPUNet", "TimestepEmbedding", "sinusoidal_embedding"]
