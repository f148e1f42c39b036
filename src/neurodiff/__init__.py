"""neurodiff: diffusion models for brain MRI.

Three published methods on one diffusion engine:

- longitudinal imputation of follow-up imaging features (SECONDGRAM),
- multi-site harmonisation of T1 images (disentangled diffusion autoencoder, DDAE),
- normative modelling with survival analysis (normative diffusion autoencoder, NDA).

The engine (:mod:`neurodiff.diffusion`) is weight-free; networks live in :mod:`neurodiff.nets`;
one trainer (:mod:`neurodiff.training`) trains every model.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("neurodiff")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
