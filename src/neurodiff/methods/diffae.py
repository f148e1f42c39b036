"""The diffusion autoencoder (DiffAE, Preechakul et al.) for 2D and 3D brain images: the core both
image methods (DDAE harmonisation, NDA normative modelling) are built on.

A semantic encoder maps an image (optionally with covariates such as age) to a latent z; a UNet
with adaptive group norm predicts noise given z; the shared engine (:class:`~neurodiff.diffusion.Diffusion`)
gives the verbs:

>>> model = DiffusionAutoencoder.preset("quick").fit("cohort/manifest.csv")
>>> z = model.encode(images)                         # (N, latent_dim)
>>> x_T = model.encode_stochastic(images, z)          # deterministic DDIM inversion (min(250, T) steps)
>>> again = model.render(x_T, z)                      # ≈ images (min(20, T) steps)
>>> model.reconstruct(images)                         # encode → invert → render
>>> model.save("model-dir"); DiffusionAutoencoder.load("model-dir")

Images are arrays (N, 1, H, W) or (N, 1, D, H, W) with intensities in [0, 1] (as ``neurodiff synth
images`` and ``neurodiff preprocess`` write them), scaled to [-1, 1] inside. Covariates are the
manifest's columns (a DataFrame with one row per image), encoded by a
:class:`~neurodiff.data.covariates.CovariateEncoding` fitted on the training rows.

The verbs' step counts default to None: min(250, T) for the inversion, min(20, T) for the rendering
(reconstruct: min(100, T) and min(20, T)), so that a model trained with few diffusion steps T works with
the defaults; an explicit count above T is an error.

Training logs, every `sensitivity_every` steps, how much the noise prediction depends on the
latent (:func:`~neurodiff.nets.diffusion_autoencoder.latent_sensitivity`, in
``history_["latent_sensitivity"]``): the guard against the known failure in which the decoder learns
to ignore its latent. Models built on this core may log more (DDAE: the sensitivity to the site and to
z_υ alone). The log is kept in the trainer's checkpointed history (its ``step_log``), so a run resumed
from a checkpoint keeps the entries from before the interruption.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from neurodiff.base import Estimator
from neurodiff.data.covariates import CovariateEncoding
from neurodiff.data.image_manifest import load_images, manifest_spatial_dims, read_manifest
from neurodiff.diffusion import Diffusion
from neurodiff.nets.diffae_unet import CovariateEncoder, DiffAEUNet, SemanticEncoder
from neurodiff.nets.diffusion_autoencoder import DiffusionAutoencoderNet, latent_sensitivity
from neurodiff.training import TensorData, Trainer, resolve_device, seed_everything

#: The key of the latent sensitivity in the trainer's ``history["step_log"]``.
SENSITIVITY = "latent_sensitivity"
#: The brain-slice recipe of METHODS.md §2 ("paper"), a CPU-minutes size for 64×64 slices ("quick")
#: and one for small volumes, e.g. 32³ ("quick3d": about 2 s per step on 2 CPU cores, 8 min in all;
#: the papers' stated future work, no published recipe).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(base_channels=64, channel_mult=(1, 1, 2, 3, 4), num_res_blocks=2, attention_resolutions=(16,),
                  dropout=0.1, latent_dim=512, timesteps=1000, beta_start=1e-4, beta_end=0.02, lr=1e-4,
                  ema_decay=0.9999, batch_size=32, max_steps=100_000),
    "quick": dict(base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1, attention_resolutions=(16,),
                  dropout=0.0, latent_dim=128, timesteps=1000, beta_start=1e-4, beta_end=0.02, lr=5e-4,
                  ema_decay=0.995, batch_size=16, max_steps=1000),
    "quick3d": dict(base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(),
                    dropout=0.0, latent_dim=64, timesteps=1000, beta_start=1e-4, beta_end=0.02, lr=5e-4,
                    ema_decay=0.99, batch_size=8, max_steps=200),
}

_BINARY = {"sex"}
_CONTINUOUS = {"age"}
_CATEGORICAL = {"site"}  # site codes are labels even when they are numbers


def quick_preset_for(manifest: str | Path) -> str:
    """The CPU-minutes preset for a manifest's images: "quick3d" for volumes, "quick" for slices."""
    return "quick3d" if manifest_spatial_dims(manifest) == 3 else "quick"


class DiffusionAutoencoder(Estimator):
    """Diffusion autoencoder trained on an image cohort (see module docstring).

    Parameters
    ----------
    base_channels, channel_mult, num_res_blocks, attention_resolutions, dropout, head_channels:
        UNet and encoder widths (the encoder mirrors the UNet's down path, without dropout).
    latent_dim:
        Size of the semantic latent (512 in DiffAE).
    encoder_covariates:
        Manifest columns the semantic encoder also sees (e.g. ``("age",)`` for the normative model).
    latent_covariates, covariate_latent_dim:
        Manifest columns mapped by a covariate encoder to a second latent of this size, joined to the
        semantic one (DDAE's z_κ from age, sex and site); empty: none.
    hierarchical:
        Latent from several encoder depths joined into one (the normative model).
    timesteps, beta_start, beta_end:
        Linear β schedule (DiffAE: 1000, 1e-4, 0.02).
    lr, ema_decay, batch_size, max_steps:
        Training (Adam).
    augment:
        Random left–right flips during training (off by default): each image is mirrored, with
        probability 1/2, along its first spatial axis (array dimension 2 of (N, 1, H, W) and
        (N, 1, D, H, W)), which holds left → right in the project's images.
    sensitivity_every:
        Log the latent sensitivity every this many steps (0: never).
    checkpoint_dir, checkpoint_every, resume:
        Atomic checkpoints and resuming (see :class:`~neurodiff.training.Trainer`).
    precision, device, seed, progress:
        "fp32" / "bf16" / "fp16"; "cpu" / "cuda" / "auto"; reproducibility; progress bars.
    """

    def __init__(
        self,
        *,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 1, 2, 3, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        head_channels: int = 64,
        latent_dim: int = 512,
        encoder_covariates: Sequence[str] = (),
        latent_covariates: Sequence[str] = (),
        covariate_latent_dim: int = 64,
        hierarchical: bool = False,
        timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        lr: float = 1e-4,
        ema_decay: float | None = 0.9999,
        batch_size: int = 32,
        max_steps: int = 100_000,
        augment: bool = False,
        sensitivity_every: int = 100,
        checkpoint_dir: str | None = None,
        checkpoint_every: int | None = None,
        resume: bool = True,
        precision: Literal["fp32", "bf16", "fp16"] = "fp32",
        device: str = "cpu",
        seed: int = 0,
        progress: bool = True,
    ):
        self.base_channels = base_channels
        self.channel_mult = channel_mult
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = attention_resolutions
        self.dropout = dropout
        self.head_channels = head_channels
        self.latent_dim = latent_dim
        self.encoder_covariates = encoder_covariates
        self.latent_covariates = latent_covariates
        self.covariate_latent_dim = covariate_latent_dim
        self.hierarchical = hierarchical
        self.timesteps = timesteps
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.lr = lr
        self.ema_decay = ema_decay
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.augment = augment
        self.sensitivity_every = sensitivity_every
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.precision = precision
        self.device = device
        self.seed = seed
        self.progress = progress

    @classmethod
    def preset(cls, name: str, **params: Any) -> DiffusionAutoencoder:
        """``"paper"`` (the brain-slice recipe), ``"quick"`` (CPU minutes at 64×64) or ``"quick3d"`` (CPU
        minutes for 32³ volumes), with overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **params})

    # ------------------------------------------------------------------ data
    def _manifest_and_images(self, manifest: pd.DataFrame | str | Path, images: Any = None
                             ) -> tuple[pd.DataFrame, Any]:
        """What `fit` takes, as (manifest rows, images): a manifest file alone (its images loaded), a frame
        with its images, or a manifest file with its images already in memory (the file's rows, read and
        checked as :meth:`_read` does, are the images' rows)."""
        if images is None:
            return self._read(manifest)
        if isinstance(manifest, (str, Path)):
            frame = read_manifest(manifest, required=self._needed_columns(), check_images=False)
        elif isinstance(manifest, pd.DataFrame):
            frame = manifest
        else:
            raise TypeError(f"the manifest must be a CSV path or a DataFrame, got {type(manifest).__name__}")
        n = len(images)
        if len(frame) != n:
            raise ValueError(f"{n} images but {len(frame)} manifest rows: give one row per image")
        return frame, images

    def _needed_columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(("subject_id", "path", *self.encoder_covariates, *self.latent_covariates)))

    def _read(self, manifest: pd.DataFrame | str | Path) -> tuple[pd.DataFrame, np.ndarray]:
        """The manifest (checked) and its images (N, 1, *spatial) in [0, 1]."""
        if isinstance(manifest, (str, Path)):
            frame = read_manifest(manifest, required=self._needed_columns())
        else:
            frame = manifest
            if "resolved_path" not in frame.columns:
                raise ValueError("pass a manifest file, or a frame returned by neurodiff.data.read_manifest")
        images, _ = load_images(frame, progress=self.progress)
        return frame, images

    def _check_images(self, images: Any, *, fitted: bool = True, frame: pd.DataFrame | None = None) -> torch.Tensor:
        """`images` as a float tensor, checked; `frame` (the images' manifest rows) names a bad image's file."""
        x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images, dtype=torch.float32)
        if x.ndim not in (4, 5) or x.shape[1] != 1:
            raise ValueError(f"images must be shaped (N, 1, H, W) or (N, 1, D, H, W), got {tuple(x.shape)}")
        if fitted and tuple(x.shape[1:]) != tuple(self.image_shape_):
            raise ValueError(f"images are {tuple(x.shape[1:])}, the model was trained on {tuple(self.image_shape_)}")
        if not torch.isfinite(x).all():
            raise ValueError("images contain NaN or infinite values")
        lo, hi = x.flatten(1).min(dim=1).values, x.flatten(1).max(dim=1).values
        outside = torch.nonzero((lo < -1e-3) | (hi > 1 + 1e-3)).flatten()
        if len(outside):
            i = int(outside[0])
            raise ValueError(f"image intensities must lie in [0, 1]: {_image_name(frame, i)} has {float(lo[i]):.3g} "
                             f"to {float(hi[i]):.3g} ({len(outside)} of {len(x)} images outside); normalise them "
                             "first (neurodiff preprocess does)")
        return x

    def _covariates(self, frame: pd.DataFrame | None, n: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(encoder covariates, latent covariates) for the rows of `frame`, or (None, None)."""
        out = []
        for encoding in (self.encoder_encoding_, self.latent_encoding_):
            if encoding is None:
                out.append(None)
                continue
            if frame is None:
                raise ValueError(f"this model needs the covariates {encoding.names}: pass covariates=<DataFrame>")
            if len(frame) != n:
                raise ValueError(f"{len(frame)} covariate rows for {n} images")
            out.append(torch.as_tensor(encoding.transform(frame)))
        return out[0], out[1]

    # ------------------------------------------------------------------ fit
    def fit(self, manifest: pd.DataFrame | str | Path, images: Any = None) -> DiffusionAutoencoder:
        """Train on every image of `manifest`: a CSV path (its images are loaded, or given as `images`,
        one per row), or a frame with its `images` given."""
        frame, images = self._manifest_and_images(manifest, images)
        x = self._check_images(images, fitted=False, frame=frame)
        if len(x) < 2:
            raise ValueError(f"need at least two images to train on, got {len(x)}")
        self.image_shape_ = tuple(x.shape[1:])
        self.encoder_encoding_ = _fit_encoding(frame, self.encoder_covariates)
        self.latent_encoding_ = _fit_encoding(frame, self.latent_covariates)
        enc_cov, lat_cov = self._covariates(frame, len(x))
        self.diffusion_ = Diffusion.from_hyperparameters("linear", self.timesteps, self.beta_start, self.beta_end)
        seed_everything(self.seed)
        net = self._build()
        tensors = {"x": x * 2 - 1, **self._extra_training_tensors(frame)}
        if enc_cov is not None:
            tensors["enc_cov"] = enc_cov
        if lat_cov is not None:
            tensors["lat_cov"] = lat_cov
        data = TensorData(**tensors)
        probe = {k: v[: min(8, len(x))] for k, v in tensors.items()}
        trainer = Trainer(
            max_steps=self.max_steps, batch_size=min(self.batch_size, len(x)), lr=self.lr, ema_decay=self.ema_decay,
            checkpoint_dir=self.checkpoint_dir, checkpoint_every=self.checkpoint_every, resume=self.resume,
            seed=self.seed, device=self.device, precision=self.precision, progress=self.progress,
            description="DiffAE", step_log=self._sensitivity_logger(net, probe),
        )
        result = trainer.fit(net, self._loss, data)
        self.net_, self.history_ = result.model.eval(), result.history
        for key in self._sensitivity_keys:  # e.g. history_["latent_sensitivity"]: [{"step", "value"}, ...]
            self.history_[key] = _logged(self.history_["step_log"], key)
        self.is_fitted_ = True
        return self

    def _build(self) -> DiffusionAutoencoderNet:
        spatial_dims, size = len(self.image_shape_) - 1, min(self.image_shape_[1:])
        shape = dict(spatial_dims=spatial_dims, in_channels=1, base_channels=self.base_channels,
                     channel_mult=tuple(self.channel_mult), num_res_blocks=self.num_res_blocks,
                     attention_resolutions=tuple(self.attention_resolutions), image_size=size,
                     head_channels=self.head_channels)
        encoder = SemanticEncoder(**shape, latent_dim=self.latent_dim, hierarchical=self.hierarchical,
                                  covariate_dim=self.encoder_encoding_.width if self.encoder_encoding_ else 0)
        covariate_encoder = (CovariateEncoder(self.latent_encoding_.width, self.covariate_latent_dim)
                             if self.latent_encoding_ else None)
        latent = self.latent_dim + (self.covariate_latent_dim if covariate_encoder is not None else 0)
        unet = DiffAEUNet(**shape, latent_dim=latent, dropout=self.dropout)
        return self._assemble(encoder, unet, covariate_encoder)

    # extension points for models built on this core (e.g. DDAE's adversarial site head)
    def _assemble(self, encoder, unet, covariate_encoder) -> DiffusionAutoencoderNet:
        return DiffusionAutoencoderNet(encoder, unet, covariate_encoder)

    def _extra_training_tensors(self, frame: pd.DataFrame) -> dict[str, torch.Tensor]:
        return {}

    def _loss(self, net: DiffusionAutoencoderNet, batch: dict[str, torch.Tensor], generator: torch.Generator):
        x0 = batch["x"]
        if self.augment:
            flip = torch.rand(len(x0), generator=generator, device=x0.device) < 0.5
            # the first spatial axis (dim 2) holds left → right: a left–right mirror image
            x0 = torch.where(_per_image(flip, x0), x0.flip(2), x0)
        z = net.latent(x0, batch.get("enc_cov"), batch.get("lat_cov"))
        return self._latent_loss(net, batch, z, self.diffusion_.loss(net, x0, z, generator=generator))

    def _latent_loss(self, net, batch, latent, diffusion_loss):
        """The training loss given the diffusion loss (extension point: add terms on the latent)."""
        return diffusion_loss

    def _sensitivity_logger(self, net, probe):
        """The trainer's `step_log`: every `sensitivity_every` steps, the latent sensitivity on a fixed probe
        batch (None: not logged)."""
        if not self.sensitivity_every or len(probe["x"]) < 2:
            return None
        noise = torch.randn(probe["x"].shape, generator=torch.Generator().manual_seed(self.seed + 7))
        t = torch.full((len(probe["x"]),), self.diffusion_.num_timesteps // 2, dtype=torch.long)

        def log(step: int) -> dict[str, float] | None:
            if step % self.sensitivity_every:
                return None
            device = next(net.parameters()).device
            p = {k: v.to(device) for k, v in probe.items()}
            with torch.no_grad():
                z = net.latent(p["x"], p.get("enc_cov"), p.get("lat_cov"))
                x_t = self.diffusion_.q_sample(p["x"], t.to(device), noise.to(device))
                return self._sensitivities(net, p, x_t, t.to(device), z)

        return log

    #: The keys :meth:`_sensitivities` returns, each kept in ``history_`` and the saved training summary.
    _sensitivity_keys: tuple[str, ...] = (SENSITIVITY,)

    def _sensitivities(self, net, probe, x_t, t, latent) -> dict[str, float]:
        """What the `step_log` logs on the probe batch (its tensors `probe`, noisy images `x_t` at
        timesteps `t`, their `latent`): here the whole-latent sensitivity (extension point: DDAE adds
        the site's)."""
        return {SENSITIVITY: latent_sensitivity(net, x_t, t, latent)}

    # ------------------------------------------------------------------ the DiffAE verbs
    @torch.no_grad()
    def encode(self, images: Any, covariates: pd.DataFrame | None = None) -> np.ndarray:
        """Semantic latents (N, latent size) of images in [0, 1]."""
        self._check_fitted()
        x = self._check_images(images, frame=covariates)
        enc_cov, lat_cov = self._covariates(covariates, len(x))
        return self._batched(lambda s, d: self.net_.latent(x[s].to(d) * 2 - 1, _at(enc_cov, s, d), _at(lat_cov, s, d)),
                             len(x))

    @torch.no_grad()
    def encode_stochastic(self, images: Any, latent: Any, *, steps: int | None = None) -> np.ndarray:
        """x_T by deterministic DDIM inversion of images in [0, 1] under their latents (one per image).

        `steps`: DDIM steps, by default (None) min(250, T); an explicit value must lie in [1, T].
        """
        self._check_fitted()
        x, z = self._check_images(images), _tensor(latent)
        if z.ndim != 2 or len(z) != len(x):
            raise ValueError(f"give one latent per image: {len(x)} images but latents shaped {tuple(z.shape)} "
                             f"(expected ({len(x)}, latent size))")
        steps = self.diffusion_.default_steps(steps, 250)
        return self._batched(
            lambda s, d: self.diffusion_.ddim_invert(self.net_, x[s].to(d) * 2 - 1, z[s].to(d), steps=steps), len(x))

    @torch.no_grad()
    def render(self, x_T: Any, latent: Any, *, steps: int | None = None) -> np.ndarray:
        """Decode x_T (N, *image shape) under the latents with deterministic DDIM; images in [0, 1].

        `steps`: DDIM steps, by default (None) min(20, T); an explicit value must lie in [1, T].
        """
        self._check_fitted()
        x_T, z = _tensor(x_T), _tensor(latent)
        if x_T.ndim < 1 or tuple(x_T.shape[1:]) != tuple(self.image_shape_):
            raise ValueError(f"x_T must be shaped (N, {', '.join(map(str, self.image_shape_))}) like the model's "
                             f"images, got {tuple(x_T.shape)}")
        if z.ndim != 2 or len(x_T) != len(z):
            raise ValueError(f"{len(x_T)} noise maps but latents shaped {tuple(z.shape)}: give one latent per map")
        steps = self.diffusion_.default_steps(steps, 20)
        out = self._batched(lambda s, d: self.diffusion_.render(self.net_, x_T[s].to(d), z[s].to(d), steps=steps),
                            len(x_T))
        return np.clip((out + 1) / 2, 0.0, 1.0)

    def reconstruct(self, images: Any, covariates: pd.DataFrame | None = None, *, inversion_steps: int | None = None,
                    render_steps: int | None = None) -> np.ndarray:
        """encode → encode_stochastic → render: the autoencoder's reconstruction, in [0, 1].

        Steps by default (None): min(100, T) for the inversion, min(20, T) for the rendering.
        """
        self._check_fitted()
        inversion_steps = self.diffusion_.default_steps(inversion_steps, 100)
        z = self.encode(images, covariates)
        return self.render(self.encode_stochastic(images, z, steps=inversion_steps), z, steps=render_steps)

    def _batched(self, fn, n: int) -> np.ndarray:
        device = resolve_device(self.device)
        self.net_.to(device).eval()
        parts = []
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            for start in range(0, n, self.batch_size):
                parts.append(fn(slice(start, start + self.batch_size), device).float().cpu())
        return torch.cat(parts).numpy()

    # ------------------------------------------------------------------ saving hooks
    def _networks(self):
        return {"autoencoder": self.net_}

    def _fitted_statistics(self):
        history = self.history_ or {}
        training = ({"steps": len(history.get("loss", [])), "seconds": history.get("seconds"),
                     **{key: history.get(key) for key in self._sensitivity_keys}}
                    if self.history_ is not None
                    # a loaded model saved again (no new training): the summary it was loaded with
                    else getattr(self, "training_summary_", None))
        stats = {
            "image_shape": list(self.image_shape_),
            "encoder_covariates": self.encoder_encoding_.to_dict() if self.encoder_encoding_ else None,
            "latent_covariates": self.latent_encoding_.to_dict() if self.latent_encoding_ else None,
            "schedule": self.diffusion_.schedule,
            "training": training,
        }
        return stats, {}

    def _rebuild(self, statistics, arrays):
        self.image_shape_ = tuple(statistics["image_shape"])
        self.encoder_encoding_ = _encoding_from(statistics["encoder_covariates"])
        self.latent_encoding_ = _encoding_from(statistics["latent_covariates"])
        self.diffusion_ = Diffusion.from_config(statistics["schedule"])
        self.net_ = self._build()
        self.history_ = None
        self.training_summary_ = statistics["training"]


def _logged(step_log: list[dict[str, float]], key: str) -> list[dict[str, float]]:
    """The trainer's `step_log` entries that hold `key`, as ``[{"step": s, "value": v}, ...]``."""
    return [{"step": entry["step"], "value": entry[key]} for entry in step_log if key in entry]


def _fit_encoding(frame: pd.DataFrame, columns: Sequence[str]) -> CovariateEncoding | None:
    """Age and other numeric columns standardised, sex as 0/1, site (even as numbers) and other text one-hot."""
    if not columns:
        return None
    continuous, binary, categorical = [], [], []
    for name in columns:
        if name not in frame.columns:
            raise ValueError(f"covariate column {name!r} is not in the manifest")
        if name in _BINARY:
            binary.append(name)
        elif name in _CATEGORICAL:
            categorical.append(name)
        elif name in _CONTINUOUS or pd.api.types.is_numeric_dtype(frame[name]):
            continuous.append(name)
        else:
            categorical.append(name)
    return CovariateEncoding.fit(frame, continuous=continuous, binary=binary, categorical=categorical)


def _image_name(frame: pd.DataFrame | None, i: int) -> str:
    """Image `i` named by its file when its manifest rows are known, else by its position."""
    if isinstance(frame, pd.DataFrame) and len(frame) > i:
        for column in ("resolved_path", "path"):
            if column in frame.columns:
                subject = f" (subject {frame['subject_id'].iloc[i]})" if "subject_id" in frame.columns else ""
                return f"image {frame[column].iloc[i]}{subject}"
    return f"image {i} (counting from 0)"


def _encoding_from(data: dict | None) -> CovariateEncoding | None:
    return CovariateEncoding.from_dict(data) if data else None


def _tensor(values: Any) -> torch.Tensor:
    return values.float() if torch.is_tensor(values) else torch.as_tensor(np.asarray(values), dtype=torch.float32)


def _at(values: torch.Tensor | None, rows: slice, device) -> torch.Tensor | None:
    return None if values is None else values[rows].to(device)


def _per_image(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape(-1, *([1] * (like.ndim - 1)))
