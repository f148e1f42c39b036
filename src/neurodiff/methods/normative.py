"""NDA (Ijishakin et al.): a normative diffusion autoencoder that scores how far a brain is from healthy.

Built on the DiffAE core (:class:`~neurodiff.methods.diffae.DiffusionAutoencoder`), trained on
healthy controls only:

- the semantic encoder s_φ(x0, age) sees the image and the age through registered embedding layers
  that scale and shift its features (trained with everything else, unlike the precursor code that
  built them inside ``forward()``), and is *hierarchical*: its latent joins heads at every depth;
- the UNet with adaptive group norm on that latent.

After training, the controls' latents (each encoded with its own age) give the healthy distribution:
its mean μ_HC, a Ledoit–Wolf covariance, and the principal subspace holding `healthy_variance` of
its variance. A subject (encoded with its own age) is scored by

- ``similarity`` = cos(μ_HC, z) (the paper's score: higher = closer to healthy);
- ``similarity_percentile`` and ``similarity_z``: the similarity calibrated against held-out controls
  (the percentage of those controls with a lower similarity, and the z-score against them);
- ``mahalanobis``: the Mahalanobis distance of z from the controls' latents (higher = further), with
  ``mahalanobis_z`` calibrated like the similarity.

Held-out calibration controls: `calibration_fraction` of the control subjects (seeded, by subject)
are kept out of training and used only for calibration, or call :meth:`NormativeDiffAE.calibrate`
with controls of your own.

Deviation maps (:meth:`NormativeDiffAE.deviation_maps`): |image − healthy reconstruction|, where
the healthy reconstruction keeps what the controls' latents can express and lets the diffusion
redraw the rest: the image is noised to step ``deviation_noise · T`` (SDEdit; T is the fitted
model's number of diffusion steps), then denoised with DDIM under the latent projected onto the
controls' principal subspace (μ_HC + P Pᵀ (z − μ_HC)).

>>> model = NormativeDiffAE.preset("quick").fit("controls/manifest.csv")
>>> scores = model.score(images, covariates)            # DataFrame, one row per image
>>> maps, healthy = model.deviation_maps(images, covariates)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from neurodiff.methods.diffae import PRESETS as DIFFAE_PRESETS
from neurodiff.methods.diffae import DiffusionAutoencoder

#: Values of a manifest's ``group`` column that mean a healthy control (any case).
CONTROL_GROUPS = frozenset({"control", "controls", "hc", "healthy"})

#: The score columns :meth:`NormativeDiffAE.score` returns.
SCORE_COLUMNS = ("similarity", "similarity_percentile", "similarity_z", "mahalanobis", "mahalanobis_z")

PRESETS: dict[str, dict[str, Any]] = {
    name: {**values, "hierarchical": True, "encoder_covariates": ("age",)} for name, values in DIFFAE_PRESETS.items()
}

#: Fewest held-out controls for a calibration.
MIN_CALIBRATION = 5


class NormativeDiffAE(DiffusionAutoencoder):
    """Normative diffusion autoencoder (see module docstring).

    Parameters (beyond :class:`DiffusionAutoencoder`'s, whose defaults here are ``hierarchical=True``
    and ``encoder_covariates=("age",)``; ``encoder_covariates=()`` is the model without age)
    ----------
    calibration_fraction:
        Fraction of the control subjects held out of training to calibrate the scores (0: none; then
        call :meth:`calibrate`, or the calibrated columns are NaN).
    healthy_variance:
        Share of the controls' latent variance kept by the projection of the deviation maps.
    deviation_noise, deviation_steps:
        Noise level (fraction of T) the image is taken to for its healthy reconstruction, and the DDIM
        steps of the full schedule (about ``deviation_noise · deviation_steps`` are run); None (the
        default): min(50, T). An explicit value above T is an error.
    """

    def __init__(
        self,
        *,
        calibration_fraction: float = 0.2,
        healthy_variance: float = 0.95,
        deviation_noise: float = 0.5,
        deviation_steps: int | None = None,
        **params: Any,
    ):
        params.setdefault("hierarchical", True)
        params.setdefault("encoder_covariates", ("age",))
        super().__init__(**params)
        self.calibration_fraction = calibration_fraction
        self.healthy_variance = healthy_variance
        self.deviation_noise = deviation_noise
        self.deviation_steps = deviation_steps

    @classmethod
    def _param_names(cls) -> list[str]:
        return sorted({*DiffusionAutoencoder._param_names(), "calibration_fraction", "healthy_variance",
                       "deviation_noise", "deviation_steps"})

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    @classmethod
    def preset(cls, name: str, **params: Any) -> NormativeDiffAE:
        """``"paper"`` (the brain-slice recipe), ``"quick"`` (CPU minutes at 64×64) or ``"quick3d"`` (CPU
        minutes for 32³ volumes), with overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **params})

    # ------------------------------------------------------------------ fit
    def fit(self, manifest, images: Any = None) -> NormativeDiffAE:
        """Train on the healthy controls of `manifest` (a CSV path, its images loaded or given as
        `images`, one per row; or a frame with its `images` given).

        Every row must be a control: a ``group`` column, when present, may only hold control values
        (``control``, ``hc``, ``healthy``); patients are an error, not silently dropped.
        """
        self._check_hyperparameters()
        manifest, images = self._manifest_and_images(manifest, images)
        frame = manifest.reset_index(drop=True)
        check_controls(frame)
        x = np.asarray(images, dtype=np.float32)
        if len(x) != len(frame):
            raise ValueError(f"{len(x)} images but {len(frame)} manifest rows")
        train, calibration = calibration_split(frame, self.calibration_fraction, self.seed)
        super().fit(frame.iloc[train].reset_index(drop=True), x[train])
        self._fit_healthy_distribution(x[train], frame.iloc[train].reset_index(drop=True))
        # None without subject ids: roles() must not call in-sample controls "new"
        self.training_subjects_ = _subjects(frame.iloc[train]) if "subject_id" in frame.columns else None
        self.calibration_, self.calibration_subjects_ = None, []
        if len(calibration):
            self.calibrate(x[calibration], frame.iloc[calibration].reset_index(drop=True))
        return self

    def _check_hyperparameters(self) -> None:
        if not 0 <= self.calibration_fraction < 1:
            raise ValueError(f"calibration_fraction must be in [0, 1), got {self.calibration_fraction!r}")
        if not 0 < self.healthy_variance <= 1:
            raise ValueError(f"healthy_variance must be in (0, 1], got {self.healthy_variance!r}")
        if not 0 < self.deviation_noise <= 1:
            raise ValueError(f"deviation_noise must be in (0, 1], got {self.deviation_noise!r}")

    def _fit_healthy_distribution(self, images: np.ndarray, covariates: pd.DataFrame) -> None:
        from sklearn.covariance import LedoitWolf

        z = self.encode(images, covariates).astype(np.float64)
        self.healthy_mean_ = z.mean(axis=0)
        self.healthy_precision_ = LedoitWolf().fit(z).precision_
        centred = z - self.healthy_mean_
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        share = np.cumsum(singular**2) / max(float(np.sum(singular**2)), 1e-300)
        k = int(np.searchsorted(share, self.healthy_variance - 1e-12) + 1)
        self.healthy_components_ = vt[: min(k, len(vt))]
        self.n_controls_ = len(z)

    def calibrate(self, images: Any, covariates: pd.DataFrame) -> NormativeDiffAE:
        """Calibrate the scores against these held-out healthy controls (at least 5)."""
        self._check_fitted()
        check_controls(covariates)
        if len(covariates) < MIN_CALIBRATION:
            raise ValueError(f"calibration needs at least {MIN_CALIBRATION} held-out controls, got {len(covariates)}")
        similarity, distance = self._raw_scores(images, covariates)
        self.calibration_ = {"similarity": np.sort(similarity), "mahalanobis": np.sort(distance)}
        self.calibration_subjects_ = _subjects(covariates)
        return self

    def roles(self, frame: pd.DataFrame) -> pd.Series | None:
        """Each row's part in this model, by ``subject_id``: ``training`` (its latents made the healthy
        distribution: in-sample, scored closer to healthy than it would be held out), ``calibration`` (a
        held-out control the calibrated scores compare against) or ``new``. None for a model saved before
        the subjects were kept, or a frame without ``subject_id``."""
        known = getattr(self, "training_subjects_", None)
        if known is None or "subject_id" not in frame.columns:
            return None
        ids = frame["subject_id"].map(_subject_key)
        roles = np.where(ids.isin(set(known)), "training",
                         np.where(ids.isin(set(self.calibration_subjects_)), "calibration", "new"))
        return pd.Series(roles, index=frame.index, name="normative_role")

    # ------------------------------------------------------------------ score
    def _raw_scores(self, images: Any, covariates: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        z = self.encode(images, covariates).astype(np.float64)
        mu = self.healthy_mean_
        similarity = z @ mu / np.maximum(np.linalg.norm(z, axis=1) * np.linalg.norm(mu), 1e-300)
        centred = z - mu
        distance = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, self.healthy_precision_, centred), 0.0))
        return similarity, distance

    def score(self, images: Any, covariates: pd.DataFrame) -> pd.DataFrame:
        """One row per image: the columns of :data:`SCORE_COLUMNS` (see module docstring)."""
        self._check_fitted()
        similarity, distance = self._raw_scores(images, covariates)
        out = pd.DataFrame({"similarity": similarity})
        calibration = self.calibration_
        if calibration is None:
            out["similarity_percentile"] = np.nan
            out["similarity_z"] = np.nan
            out["mahalanobis"] = distance
            out["mahalanobis_z"] = np.nan
            return out[list(SCORE_COLUMNS)]
        reference = calibration["similarity"]
        out["similarity_percentile"] = 100.0 * np.searchsorted(reference, similarity, side="left") / len(reference)
        out["similarity_z"] = _z(similarity, reference)
        out["mahalanobis"] = distance
        out["mahalanobis_z"] = _z(distance, calibration["mahalanobis"])
        return out[list(SCORE_COLUMNS)]

    # ------------------------------------------------------------------ deviation maps
    def healthy_latents(self, latents: Any) -> np.ndarray:
        """Latents projected onto the controls' principal subspace: μ_HC + P Pᵀ (z − μ_HC)."""
        self._check_fitted()
        z = np.asarray(latents, dtype=np.float64)
        centred = z - self.healthy_mean_
        return (self.healthy_mean_ + centred @ self.healthy_components_.T @ self.healthy_components_).astype(np.float32)

    @torch.no_grad()
    def deviation_maps(self, images: Any, covariates: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(|image − healthy reconstruction|, healthy reconstruction), both shaped like `images`, in [0, 1]."""
        self._check_fitted()
        x = self._check_images(images)
        z = torch.as_tensor(self.healthy_latents(self.encode(x.numpy(), covariates)))
        # the fitted schedule's T, not the `timesteps` hyperparameter (which set_params may have changed)
        T = self.diffusion_.num_timesteps
        start = min(T - 1, max(1, int(round(self.deviation_noise * T)) - 1))
        steps = self.diffusion_.default_steps(self.deviation_steps, 50)
        generator = torch.Generator().manual_seed(self.seed + 11)
        noise = torch.randn(x.shape, generator=generator)
        t = torch.full((len(x),), start, dtype=torch.long)
        noised = self.diffusion_.q_sample(x * 2 - 1, t, noise)
        healthy = self._batched(
            lambda s, d: self.diffusion_.ddim_sample(self.net_, cond=z[s].to(d), steps=steps,
                                                     x_T=noised[s].to(d), start=start), len(x))
        healthy = np.clip((healthy + 1) / 2, 0.0, 1.0)
        return np.abs(x.numpy() - healthy), healthy

    # ------------------------------------------------------------------ saving hooks
    def _fitted_statistics(self):
        stats, arrays = super()._fitted_statistics()
        stats["n_controls"] = self.n_controls_
        if getattr(self, "training_subjects_", None) is not None:
            stats["training_subjects"] = self.training_subjects_
            stats["calibration_subjects"] = self.calibration_subjects_
        arrays = {**arrays, "healthy_mean": self.healthy_mean_, "healthy_precision": self.healthy_precision_,
                  "healthy_components": self.healthy_components_}
        if self.calibration_ is not None:
            arrays["calibration_similarity"] = self.calibration_["similarity"]
            arrays["calibration_mahalanobis"] = self.calibration_["mahalanobis"]
        return stats, arrays

    def _rebuild(self, statistics, arrays):
        super()._rebuild(statistics, arrays)
        self.n_controls_ = statistics["n_controls"]
        self.training_subjects_ = statistics.get("training_subjects")  # None: saved before they were kept
        self.calibration_subjects_ = statistics.get("calibration_subjects", [])
        self.healthy_mean_ = arrays["healthy_mean"]
        self.healthy_precision_ = arrays["healthy_precision"]
        self.healthy_components_ = arrays["healthy_components"]
        self.calibration_ = ({"similarity": arrays["calibration_similarity"],
                              "mahalanobis": arrays["calibration_mahalanobis"]}
                             if "calibration_similarity" in arrays else None)


def _subject_key(value: Any) -> str:
    return str(value).strip()


def _subjects(frame: pd.DataFrame) -> list[str]:
    """The distinct subject ids of `frame` (sorted text), [] when it has no subject_id column."""
    if "subject_id" not in frame.columns:
        return []
    return sorted({_subject_key(v) for v in frame["subject_id"] if not pd.isna(v)})


def check_controls(frame: pd.DataFrame) -> None:
    """ValueError naming the subjects when a ``group`` column holds anything but controls."""
    if "group" not in frame.columns:
        return
    groups = frame["group"].astype("string").str.strip().str.lower()
    bad = groups.isna() | ~groups.isin(CONTROL_GROUPS)
    if bad.any():
        rows = frame.loc[bad]
        who = rows["subject_id"].astype(str).tolist() if "subject_id" in rows.columns else rows.index.astype(str).tolist()
        values = sorted({str(v) for v in frame.loc[bad, "group"]})
        raise ValueError(
            f"the normative model is fitted on healthy controls only, but {int(bad.sum())} row(s) have group "
            f"{', '.join(map(repr, values))} (subjects {', '.join(who[:5])}{' …' if len(who) > 5 else ''}); "
            f"keep only the rows whose group is one of {sorted(CONTROL_GROUPS)}"
        )


def calibration_split(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, calibration): `fraction` of the subjects (seeded) held out for calibration."""
    if fraction <= 0:
        return np.arange(len(frame)), np.arange(0)
    subjects = frame["subject_id"].astype(str).to_numpy() if "subject_id" in frame.columns else np.arange(len(frame))
    unique = np.unique(subjects)
    n_held = int(round(fraction * len(unique)))
    if n_held < MIN_CALIBRATION or len(unique) - n_held < 2:
        raise ValueError(f"calibration_fraction={fraction} of {len(unique)} control subjects leaves {n_held} for "
                         f"calibration (need at least {MIN_CALIBRATION}) and {len(unique) - n_held} for training; "
                         "use more controls, a larger fraction, or calibration_fraction=0 and calibrate() later")
    held = np.random.default_rng(seed).choice(unique, n_held, replace=False)
    mask = np.isin(subjects, held)
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _z(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    sd = float(np.std(reference, ddof=1))
    return (values - float(np.mean(reference))) / max(sd, 1e-300)
