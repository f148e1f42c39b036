"""SECONDGRAM (Theodorou et al.): longitudinal imputation of imaging features with a conditional
diffusion model trained on few paired and many unpaired subjects.

Generates a subject's follow-up x2 ~ p(x2 | x1, y) from the first-visit features x1 and labels y.

- Denoiser: the MLP U-Net (:class:`neurodiff.nets.MLPUNet`), conditioned on concat[y, x1].
- Diffusion: T = 100, β linear 0.0015 → 0.02 (the ``paper`` preset; ᾱ_99 ≈ 0.34, so training never
  sees pure noise although sampling starts from it); ``schedule="cosine"`` reaches pure noise.
  Sampling: DDPM ancestral with σ² = β, clamped to [-1, 1] at the end, conditioned on the clean x1.
- Self-conditioning (contribution 1): every training subject also contributes (y, c → x1) with
  c = x1 or, with probability 0.5, x1 lightly noised (√ᾱ_6·x1 + √(1−ᾱ_6)·ε ≈ 0.993·x1 + 0.120·ε
  under the paper schedule), redrawn every batch; paired subjects add (y, x1 → x2); all shuffled
  together without weighting.
- Gradient manipulation (contribution 2): global gradient norm; updates above the skip threshold are
  skipped, the rest clipped. Calibrated by default (clip = mean, skip = 3 × max of a preliminary
  pass); ``gradient_manipulation="fixed"`` uses the public code's constants (clip 0.3, skip 1.8).
- Training: Adam 1e-3, batch 256, up to 1000 epochs, early stopping with patience 50 on the mean
  per-feature Pearson r between real and generated x2 of held-out paired validation subjects.

Variants used by the benchmark (:data:`PRESETS`): secondgram, secondgram_noised_schedule, vanilla,
pretrained, no_grad, no_self, and secondgram_warmup_calibration (not in the paper: thresholds
calibrated after 5 epochs of plain updates).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from neurodiff.base import Estimator
from neurodiff.data.longitudinal_table import (
    LongitudinalArrays,
    UnusedColumnsWarning,
    keep_integer_columns,
    longitudinal_arrays,
    read_table,
)
from neurodiff.diffusion import Diffusion, linear_betas
from neurodiff.evaluation.imputation import pearson_feature
from neurodiff.methods.longitudinal.preparation import Preparation
from neurodiff.nets import MLPUNet
from neurodiff.training import EarlyStopping, GradientManipulation, TensorData, Trainer, resolve_device, seed_everything

PRESETS: dict[str, dict[str, Any]] = {
    "secondgram": {},
    "secondgram_noised_schedule": {"schedule": "cosine"},
    "vanilla": {"self_conditioning": False, "gradient_manipulation": "none"},
    "pretrained": {"self_conditioning": False, "gradient_manipulation": "none", "pretrain_epochs": 100},
    "no_grad": {"gradient_manipulation": "none"},
    "no_self": {"self_conditioning": False},
    # not in the paper: the calibration pass after 5 epochs of plain updates instead of at initialisation
    "secondgram_warmup_calibration": {"calibration_warmup_epochs": 5},
}

#: Fewer paired validation subjects than this draw a warning: early stopping on their Pearson r is noise.
MIN_RELIABLE_VALIDATION = 10


class FewValidationSubjectsWarning(UserWarning):
    """Early stopping validates on fewer than :data:`MIN_RELIABLE_VALIDATION` paired subjects."""


#: More than this fraction of the updates skipped draws a warning (a run that trains skips none; the paper's
#: recipe on the embedded table skips 40-92 %).
STALL_FRACTION = 0.3


class MostlySkippedWarning(UserWarning):
    """More than :data:`STALL_FRACTION` of the updates were skipped (gradient norm above the skip threshold,
    or not finite): the model barely trained. The paper's recipe does this on the embedded table
    (thresholds calibrated at initialisation)."""

# The noised-self perturbation is defined on the paper schedule, whatever schedule the model uses.
_PAPER_ALPHA_BAR = torch.cumprod(1 - linear_betas(100, 0.0015, 0.02), 0)


class SecondGram(Estimator):
    """Conditional diffusion imputation of follow-up imaging features (see module docstring).

    Parameters
    ----------
    labels:
        Label (covariate) columns the generator conditions on, read at visit 1.
    features:
        Feature columns (default: every numeric column that is not an id, label or excluded).
    exclude:
        Numeric columns that are neither labels nor features (e.g. ``years_since_first``).
    subject, visit:
        Id columns of the long-format table.
    self_conditioning, noised_self_prob, noised_self_step:
        Contribution 1 (off: train on paired subjects only).
    gradient_manipulation, clip, skip:
        Contribution 2: "calibrated", "fixed" (clip, skip) or "none".
    calibration_warmup_epochs:
        With "calibrated": plain updates for this many epochs, then the calibration pass (0: before
        training, the paper). Thresholds taken at initialisation can stall training when gradient
        norms grow, as they do on the embedded cohort.
    pretrain_epochs:
        Unconditional pre-training on every subject's x1 before conditional training
        (the "pretrained diffusion" baseline); 0 = none.
    schedule, timesteps, beta_start, beta_end:
        "linear" (paper: 100, 0.0015, 0.02) or "cosine" (reaches pure noise).
    hidden, residual_blocks, emb_dim:
        MLP U-Net widths.
    max_epochs, patience, batch_size, lr, val_fraction:
        Training; `val_fraction` of the paired subjects are held out for early stopping.
    imputer_neighbours, imputer_max_iter:
        Iterative imputation of missing feature values.
    precision, seed, device, progress:
        "fp32" or "bf16"; reproducibility; "cpu" / "cuda" / "auto"; progress bars.
    """

    def __init__(
        self,
        *,
        labels: Sequence[str] = (),
        features: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        subject: str = "subject_id",
        visit: str = "visit",
        self_conditioning: bool = True,
        noised_self_prob: float = 0.5,
        noised_self_step: int = 6,
        gradient_manipulation: Literal["calibrated", "fixed", "none"] = "calibrated",
        clip: float = 0.3,
        skip: float = 1.8,
        calibration_warmup_epochs: int = 0,
        pretrain_epochs: int = 0,
        schedule: Literal["linear", "cosine"] = "linear",
        timesteps: int = 100,
        beta_start: float = 0.0015,
        beta_end: float = 0.02,
        hidden: Sequence[int] = (512, 256, 128),
        residual_blocks: int = 2,
        emb_dim: int = 256,
        max_epochs: int = 1000,
        patience: int | None = 50,
        batch_size: int = 256,
        lr: float = 1e-3,
        val_fraction: float = 0.1,
        imputer_neighbours: int = 20,
        imputer_max_iter: int = 5,
        precision: Literal["fp32", "bf16"] = "fp32",
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ):
        self.labels = labels
        self.features = features
        self.exclude = exclude
        self.subject = subject
        self.visit = visit
        self.self_conditioning = self_conditioning
        self.noised_self_prob = noised_self_prob
        self.noised_self_step = noised_self_step
        self.gradient_manipulation = gradient_manipulation
        self.clip = clip
        self.skip = skip
        self.calibration_warmup_epochs = calibration_warmup_epochs
        self.pretrain_epochs = pretrain_epochs
        self.schedule = schedule
        self.timesteps = timesteps
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.hidden = hidden
        self.residual_blocks = residual_blocks
        self.emb_dim = emb_dim
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.lr = lr
        self.val_fraction = val_fraction
        self.imputer_neighbours = imputer_neighbours
        self.imputer_max_iter = imputer_max_iter
        self.precision = precision
        self.seed = seed
        self.device = device
        self.progress = progress

    @classmethod
    def preset(cls, name: str, **params: Any) -> SecondGram:
        """One of the benchmark's variants (:data:`PRESETS`), with further hyperparameters."""
        if name not in PRESETS:
            raise ValueError(f"unknown SECONDGRAM variant {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **params})

    # ------------------------------------------------------------------ data
    def read(self, table: pd.DataFrame | str | Path, *, source: str | None = None) -> LongitudinalArrays:
        """The table (or the file) as per-subject arrays, with the columns this model uses.

        Fitted with features detected (no `features`), numeric columns the fit table did not have draw an
        :class:`~neurodiff.data.longitudinal_table.UnusedColumnsWarning`: they are no features of the model.
        """
        if isinstance(table, (str, Path)):
            source, table = str(table), read_table(table, subject=self.subject)
        features = self.feature_columns_ if getattr(self, "is_fitted_", False) else self.features
        role_source = source or "table"
        if getattr(self, "is_fitted_", False):
            missing = [c for c in self.feature_columns_ if c not in table.columns]
            if missing:
                raise ValueError(
                    f"{role_source}: feature column {missing[0]!r} used when the model was fitted is not in the table"
                    + (f" ({len(missing)} missing)" if len(missing) > 1 else "")
                )
            if not self.features:  # features detected at fit: a new numeric column is no feature of this model
                known = {self.subject, self.visit, *self.labels, *self.exclude, *self.feature_columns_, "generated",
                         "sample"}
                extra = [c for c in table.columns if c not in known and pd.api.types.is_numeric_dtype(table[c])]
                if extra:
                    shown = ", ".join(repr(c) for c in extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5
                                                                     else "")
                    warnings.warn(
                        f"{role_source}: numeric column(s) {shown} are not features of the model (it took its "
                        f"features from the numeric columns of the fit table, and these were not among them): they "
                        f"are not generated and stay empty in generated rows (refit on a table with them to generate "
                        f"them)",
                        UnusedColumnsWarning, stacklevel=2,
                    )
        if not self.labels:
            raise ValueError("name the label columns the model conditions on (labels=[...])")
        return longitudinal_arrays(table, labels=self.labels, features=features, subject=self.subject,
                                   visit=self.visit, exclude=self.exclude, source=role_source)

    # ------------------------------------------------------------------ fit
    def fit(self, table: pd.DataFrame | str | Path | LongitudinalArrays,
            preparation: Preparation | None = None) -> SecondGram:
        """Fit preparation and diffusion model on every subject of `table` (paired and unpaired).

        The preparation is fitted on the training subjects, without the paired subjects held out for
        early stopping. A `preparation` already fitted may be passed instead (the benchmark shares one
        between methods, fitted on all its training subjects; its test subjects are never seen).
        """
        data = table if isinstance(table, LongitudinalArrays) else self.read(table)
        n_paired = int(data.paired.sum())
        if n_paired < 4:
            raise ValueError(
                f"SECONDGRAM needs subjects with a follow-up (visit 2) to learn from; found {n_paired} (at least 4)"
            )
        self.feature_columns_, self.label_columns_ = data.feature_columns, data.label_columns
        train, val = self._split(data.paired)
        # fitted without the early-stopping subjects, so that model selection sees them as new data
        self.preparation_ = preparation or Preparation.fit(
            data.x1[train], data.x2[train], data.y[train], seed=self.seed, neighbours=self.imputer_neighbours,
            max_iter=self.imputer_max_iter,
        )
        x1, y = self.preparation_.features(data.x1), self.preparation_.labels(data.y)
        x2 = np.full_like(x1, np.nan)
        x2[data.paired] = self.preparation_.features(data.x2[data.paired])
        self.diffusion_ = Diffusion.from_hyperparameters(self.schedule, self.timesteps, self.beta_start, self.beta_end)
        seed_everything(self.seed)
        net = MLPUNet(x1.shape[1], y.shape[1] + x1.shape[1], hidden=self.hidden,
                      residual_blocks=self.residual_blocks, emb_dim=self.emb_dim)
        self.pretrain_history_ = None
        if self.pretrain_epochs:
            self.pretrain_history_ = self._pretrain(net, x1[train], y.shape[1])
        samples = self._training_samples(x1, x2, y, train, data.paired)
        score = self._validation_score(x1[val], x2[val], y[val])
        trainer = Trainer(
            max_epochs=self.max_epochs, batch_size=self.batch_size, lr=self.lr,
            gradient_manipulation=GradientManipulation.from_mode(self.gradient_manipulation, self.clip, self.skip),
            calibration_warmup=self.calibration_warmup_epochs * math.ceil(len(samples) / self.batch_size),
            early_stopping=EarlyStopping(score, patience=self.patience, mode="max"),
            seed=self.seed, device=self.device, precision=self.precision, progress=self.progress,
            description="SECONDGRAM",
        )
        result = trainer.fit(net, self._loss, samples)
        self.net_, self.history_ = result.model, result.history
        self.n_train_samples_ = len(samples)
        self.is_fitted_ = True
        self._warn_if_stalled()
        return self

    def _warn_if_stalled(self) -> None:
        """:class:`MostlySkippedWarning` when most updates were skipped (see :data:`STALL_FRACTION`)."""
        h = self.history_
        steps, skipped = len(h["loss"]), h["skipped"]
        if not steps or skipped <= STALL_FRACTION * steps:
            return
        if self.gradient_manipulation == "none":  # no threshold: only non-finite gradients are skipped
            why, advice = "their gradient was not finite (the training diverged)", "try a lower learning rate or fp32"
        else:
            if self.gradient_manipulation == "fixed":
                threshold = f"the fixed skip threshold {self.skip:g}"
            elif self.calibration_warmup_epochs:
                threshold = f"the skip threshold calibrated after {self.calibration_warmup_epochs} epochs"
            else:
                threshold = "the skip threshold calibrated at initialisation"
            why = f"their gradient norm was above {threshold} (or not finite)"
            others = [v for v in ("secondgram_warmup_calibration", "no_grad")
                      if not (v == "secondgram_warmup_calibration" and self.calibration_warmup_epochs)]
            advice = (f"on the embedded synthetic table the paper's recipe (thresholds calibrated at initialisation) "
                      f"stalls like this while {' and '.join(others)} {'train' if len(others) > 1 else 'trains'} "
                      "(docs/longitudinal-imputation.md)")
        warnings.warn(
            f"{skipped:,} of {steps:,} updates ({skipped / steps:.0%}) were skipped: {why}, so the model barely "
            f"trained (best validation per-feature Pearson {h.get('best_score', float('nan')):.3f}); {advice}",
            MostlySkippedWarning, stacklevel=3,
        )

    def _split(self, paired: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`validation_split` with this model's `val_fraction` and seed."""
        return validation_split(paired, self.val_fraction, self.seed)

    def _training_samples(self, x1, x2, y, train, paired) -> TensorData:
        """(target, condition x1, labels, is-self) rows: paired x1 → x2, and x1 → x1 when self-conditioning."""
        pairs = train[paired[train]]
        parts = [(x2[pairs], x1[pairs], y[pairs], np.zeros(len(pairs), bool))]
        if self.self_conditioning:
            parts.append((x1[train], x1[train], y[train], np.ones(len(train), bool)))
        target, cond, labels, is_self = (np.concatenate(p) for p in zip(*parts))
        f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        return TensorData(x=f32(target), c=f32(cond), y=f32(labels), self_sample=torch.as_tensor(is_self))

    def _loss(self, net, batch, generator):
        c = batch["c"]
        if self.self_conditioning and self.noised_self_prob > 0:
            a = _PAPER_ALPHA_BAR[self.noised_self_step].item()
            u = torch.rand(len(c), generator=generator, device=c.device)
            noisy = batch["self_sample"] & (u < self.noised_self_prob)
            eps = torch.randn(c.shape, generator=generator, device=c.device, dtype=c.dtype)
            c = torch.where(noisy[:, None], a**0.5 * c + (1 - a) ** 0.5 * eps, c)
        return self.diffusion_.loss(net, batch["x"], torch.cat([batch["y"], c], dim=1), generator=generator)

    def _pretrain(self, net, x1_train: np.ndarray, n_labels: int) -> dict:
        """Unconditional pre-training on every training subject's x1 (the conditioning is zero)."""
        zeros = torch.zeros(len(x1_train), n_labels + x1_train.shape[1])
        data = TensorData(x=torch.as_tensor(x1_train, dtype=torch.float32), cond=zeros)
        diffusion = self.diffusion_
        trainer = Trainer(max_epochs=self.pretrain_epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                          device=self.device, precision=self.precision, progress=self.progress,
                          description="pre-training (unconditional)")
        return trainer.fit(net, lambda m, b, g: diffusion.loss(m, b["x"], b["cond"], generator=g), data).history

    def _validation_score(self, x1_val, x2_val, y_val):
        def score(model) -> float:
            generated = self._sample(model, x1_val, y_val, seed=self.seed + 12345)
            return pearson_feature(x2_val, generated)

        return score

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def _sample(self, net, x1: np.ndarray, y: np.ndarray, seed: int, chunk: int = 4096) -> np.ndarray:
        """DDPM ancestral sampling (σ² = β), clamped to [-1, 1]; scaled space in and out.

        The conditioning's share of every step is computed once (:meth:`MLPUNet.conditioned`).
        """
        device = resolve_device(self.device)
        net = net.to(device).eval()
        generator = torch.Generator(device).manual_seed(seed)
        out = []
        for start in range(0, len(x1), chunk):
            cond = torch.as_tensor(np.hstack([y[start:start + chunk], x1[start:start + chunk]]),
                                   dtype=torch.float32, device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                x = self.diffusion_.ddpm_sample(net.conditioned(cond), (len(cond), x1.shape[1]), variance="beta",
                                                clamp=(-1.0, 1.0), generator=generator, device=device,
                                                dtype=torch.float32)
            out.append(x.float().cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def generate_scaled(self, x1: np.ndarray, y: np.ndarray, *, n_samples: int = 1, seed: int | None = None) -> np.ndarray:
        """Follow-ups in the scaled space for already prepared x1 (n, D) and y (n, L): (n_samples, n, D)."""
        self._check_fitted()
        seed = self.seed if seed is None else seed
        return np.stack([self._sample(self.net_, x1, y, seed=seed + k) for k in range(n_samples)])

    def generate(self, data: LongitudinalArrays, *, n_samples: int = 1, seed: int | None = None) -> np.ndarray:
        """Follow-ups in original units for every subject of `data`: (n_samples, n, D)."""
        x1, y = self.preparation_.features(data.x1), self.preparation_.labels(data.y)
        return self.preparation_.inverse_features(self.generate_scaled(x1, y, n_samples=n_samples, seed=seed))

    def predict(self, table: pd.DataFrame | str | Path, *, n_samples: int = 1, all_subjects: bool = False,
                seed: int | None = None, source: str | None = None) -> pd.DataFrame:
        """Generated follow-up rows (visit 2) for subjects without one (or every subject).

        Returns a long-format frame: subject, visit = 2, the labels (from visit 1, with the table's
        dtypes), the features in original units, ``generated`` = True and, with several samples,
        ``sample`` (0, 1, …). `source` names a frame's file in errors (a path names itself).
        """
        self._check_fitted()
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if isinstance(table, (str, Path)):
            source, table = str(table), read_table(table, subject=self.subject)
        data = self.read(table, source=source)
        keep = np.ones(len(data), bool) if all_subjects else ~data.paired
        data = data.subset(np.flatnonzero(keep))
        if len(data) == 0:
            return pd.DataFrame(columns=[self.subject, self.visit, *self.label_columns_, *self.feature_columns_,
                                         "generated"])
        x2 = self.generate(data, n_samples=n_samples, seed=seed)
        frames = []
        for k in range(n_samples):
            frame = pd.DataFrame(x2[k], columns=self.feature_columns_)
            frame.insert(0, self.subject, data.subject_ids)
            frame.insert(1, self.visit, 2)
            for j, label in enumerate(self.label_columns_):
                frame.insert(2 + j, label, data.y[:, j])
            frame["generated"] = True
            if n_samples > 1:
                frame["sample"] = k
            frames.append(frame)
        return keep_integer_columns(pd.concat(frames, ignore_index=True), table)

    def complete(self, table: pd.DataFrame | str | Path, *, n_samples: int = 1, all_subjects: bool = False,
                 seed: int | None = None, source: str | None = None) -> pd.DataFrame:
        """The table with generated follow-ups appended (see :meth:`predict`), flagged ``generated``.
        A visit-2 row without any feature value is replaced by the subject's generated one.

        Integer columns stay integer where the generated rows need no fraction (labels, visit, columns
        left empty: nullable ``Int64``); generated feature values make a feature column float.
        """
        if isinstance(table, (str, Path)):
            source, table = str(table), read_table(table, subject=self.subject)
        frame = table
        generated = self.predict(frame, n_samples=n_samples, all_subjects=all_subjects, seed=seed, source=source)
        original = frame.copy()
        original["generated"] = False
        if generated.empty:
            return original
        # a visit-2 row without any feature value is no follow-up (the reader ignores it, with a warning):
        # the generated row takes its place, so that each subject keeps one visit 2
        blank = (pd.to_numeric(original[self.visit], errors="coerce").eq(2)
                 & original[self.feature_columns_].isna().all(axis=1)
                 & original[self.subject].isin(generated[self.subject]))
        original = original[~blank.to_numpy(bool)]
        completed = pd.concat([original, generated], ignore_index=True)
        if "sample" in generated.columns and "sample" not in frame.columns:
            completed["sample"] = completed["sample"].astype("Int64")
        return keep_integer_columns(completed, frame)

    # ------------------------------------------------------------------ saving hooks
    def _networks(self):
        return {"denoiser": self.net_}

    def _fitted_statistics(self):
        history = self.history_ or {}
        stats = {
            "feature_columns": self.feature_columns_,
            "label_columns": self.label_columns_,
            "schedule": self.diffusion_.schedule,
            "training": {k: history.get(k) for k in ("skipped", "clipped", "best_score", "best_step", "thresholds")},
        }
        return stats, self.preparation_.to_arrays()

    def _rebuild(self, statistics, arrays):
        self.feature_columns_ = statistics["feature_columns"]
        self.label_columns_ = statistics["label_columns"]
        self.diffusion_ = Diffusion.from_config(statistics["schedule"])
        self.preparation_ = Preparation.from_arrays(arrays)
        D, L = len(self.feature_columns_), len(self.label_columns_)
        self.net_ = MLPUNet(D, L + D, hidden=self.hidden, residual_blocks=self.residual_blocks, emb_dim=self.emb_dim)
        self.history_ = None
        self.training_summary_ = statistics["training"]


def validation_split(paired: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded hold-out of `val_fraction` of the paired subjects (at least 2) for early stopping.

    Returns (train, val) row indices: `val` paired subjects only, `train` every other row (paired or
    not). SECONDGRAM's early stopping uses it, and the benchmark gives the WGAN-GP the same subjects.
    """
    rng = np.random.default_rng(seed)
    paired_idx = np.flatnonzero(paired)
    n_val = min(max(2, int(round(val_fraction * len(paired_idx)))), len(paired_idx) - 2)
    if n_val < MIN_RELIABLE_VALIDATION:
        warnings.warn(
            f"early stopping validates on {n_val} paired subjects ({len(paired_idx)} paired × val_fraction "
            f"{val_fraction}): a per-feature Pearson r across so few subjects is mostly noise (across 2 "
            f"subjects it is always ±1), so the kept epoch is close to arbitrary; give more paired subjects or a "
            f"larger val_fraction", FewValidationSubjectsWarning, stacklevel=4,
        )
    val = np.sort(rng.choice(paired_idx, n_val, replace=False))
    train = np.setdiff1d(np.arange(len(paired)), val)
    return train, val
