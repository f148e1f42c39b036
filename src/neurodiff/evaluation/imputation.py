"""Evaluation of longitudinal imputation (SECONDGRAM, METHODS.md §1 "Evaluation").

Every function takes numpy arrays. ``real`` and ``generated`` are follow-ups x2 of shape
(n_subjects, D) in the scaled space ([-1, 1] per feature), rows aligned by subject.

Metrics (the names are the keys in results.json, see :data:`METRIC_NAMES`):

- ``pearson_feature``  per-feature Pearson r across subjects, averaged over features (public code);
- ``pearson_subject``  per-subject Pearson r across features, averaged over subjects (paper's text);
- ``euclidean``        mean over subjects of ‖x2 − x̂2‖₂;
- ``cosine_distance``  mean over subjects of 1 − cos(x2, x̂2);
- ``frechet``          ‖μr − μg‖² + Tr(Σr + Σg − 2 (Σr Σg)^½);
- ``mean_correlation`` Pearson r between the per-feature means of real and generated;
- ``corr_matrix_diff`` mean |Cr − Cg| over the off-diagonal entries of the feature–feature
  correlation matrices (features constant in the real x2 left out; a feature constant only in the
  generated x2 counts as correlated 0 with every other feature).

Downstream utility (:func:`downstream_auroc`): an MLP classifier trained on one of the training
sets of :func:`downstream_training_sets` and scored by AUROC on held-out subjects that have a real
follow-up. The test matrix is [x1] for the ``*_first`` sets and [x1, real x2] for the others
(:func:`downstream_test_matrix`). Label leakage: the generator conditions on labels; the benchmark
must also report with the predicted label removed from the conditioning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from neurodiff.evaluation.distributions import frechet_distance
from neurodiff.training import EarlyStopping, TensorData, Trainer

METRIC_NAMES = (
    "pearson_feature",
    "pearson_subject",
    "euclidean",
    "cosine_distance",
    "frechet",
    "mean_correlation",
    "corr_matrix_diff",
)
HIGHER_IS_BETTER = {
    "pearson_feature": True,
    "pearson_subject": True,
    "euclidean": False,
    "cosine_distance": False,
    "frechet": False,
    "mean_correlation": True,
    "corr_matrix_diff": False,
}
TRAINING_SETS = ("all_first", "paired_first", "paired_real", "enriched", "all_generated")
FIRST_VISIT_SETS = ("all_first", "paired_first")


# ---------------------------------------------------------------------------------------- checks
def _check_pair(real: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both 2-D, same shape, finite, at least 2 subjects and 2 features; returned as float64."""
    real, generated = np.asarray(real, dtype=np.float64), np.asarray(generated, dtype=np.float64)
    for name, x in (("real", real), ("generated", generated)):
        if x.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (n_subjects, D), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values ({(~np.isfinite(x)).sum()} entries)")
    if real.shape != generated.shape:
        raise ValueError(f"real and generated must have the same shape, got {real.shape} and {generated.shape}")
    if real.shape[0] < 2 or real.shape[1] < 2:
        raise ValueError(f"need at least 2 subjects and 2 features, got shape {real.shape}")
    return real, generated


def _rowwise_pearson(real: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """Pearson r between real[i] and generated[i] for every row i.

    NaN where the real row is constant (no method can be scored on it); 0 where only the generated row
    is constant: the generator carries no information there (e.g. a feature it saturates at the clamp),
    and leaving such rows out would reward the collapse.
    """
    ac, bc = real - real.mean(axis=1, keepdims=True), generated - generated.mean(axis=1, keepdims=True)
    denom = np.sqrt((ac**2).sum(axis=1) * (bc**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ac * bc).sum(axis=1) / denom
    r[np.ptp(generated, axis=1) == 0] = 0.0
    r[np.ptp(real, axis=1) == 0] = np.nan
    return np.clip(r, -1.0, 1.0)


def _mean_of_defined(values: np.ndarray, what: str) -> float:
    """Mean over the finite entries; NaN with a warning when there are none."""
    defined = values[np.isfinite(values)]
    if defined.size == 0:
        warnings.warn(f"{what}: undefined for every entry (all constant), returning NaN", RuntimeWarning, stacklevel=3)
        return math.nan
    return float(defined.mean())


# ---------------------------------------------------------------------------------------- metrics
def pearson_feature(real: np.ndarray, generated: np.ndarray) -> float:
    """Mean over features j of r_j = corr(real[:, j], generated[:, j]) across subjects.

    What SECONDGRAM's public code computes. Features constant (zero variance) in the real x2 have no r
    and are left out of the mean (NaN only when every feature is); a feature constant only in the
    generated x2 counts as r = 0.
    """
    real, generated = _check_pair(real, generated)
    return _mean_of_defined(_rowwise_pearson(real.T, generated.T), "pearson_feature")


def pearson_subject(real: np.ndarray, generated: np.ndarray) -> float:
    """Mean over subjects i of r_i = corr(real[i], generated[i]) across features.

    What the SECONDGRAM paper's text describes. Subjects whose real row is constant are left out of the
    mean (NaN only when every subject is); a subject whose generated row is constant counts as r = 0.
    """
    real, generated = _check_pair(real, generated)
    return _mean_of_defined(_rowwise_pearson(real, generated), "pearson_subject")


def euclidean(real: np.ndarray, generated: np.ndarray) -> float:
    """Mean over subjects of ‖real[i] − generated[i]‖₂."""
    real, generated = _check_pair(real, generated)
    return float(np.linalg.norm(real - generated, axis=1).mean())


def cosine_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """Mean over subjects of 1 − ⟨r_i, g_i⟩ / (‖r_i‖ ‖g_i‖) (0 = same direction, 2 = opposite).

    Subjects with an all-zero row (no direction) are left out; NaN only when all are.
    """
    real, generated = _check_pair(real, generated)
    norms = np.linalg.norm(real, axis=1) * np.linalg.norm(generated, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.clip((real * generated).sum(axis=1) / norms, -1.0, 1.0)
    cosine[norms == 0] = np.nan
    return _mean_of_defined(1.0 - cosine, "cosine_distance")


def frechet(real: np.ndarray, generated: np.ndarray) -> float:
    """‖μr − μg‖² + Tr(Σr + Σg − 2 (Σr Σg)^½), exact for singular covariances (n < D).

    See :func:`neurodiff.evaluation.distributions.frechet_distance`.
    """
    real, generated = _check_pair(real, generated)
    return frechet_distance(real, generated)


def mean_correlation(real: np.ndarray, generated: np.ndarray) -> float:
    """Pearson r between the per-feature means real.mean(0) and generated.mean(0) (NaN if the real means
    are all equal, 0 if only the generated ones are)."""
    real, generated = _check_pair(real, generated)
    r = _rowwise_pearson(real.mean(axis=0)[None], generated.mean(axis=0)[None])[0]
    return float(r)


def corr_matrix_diff(real: np.ndarray, generated: np.ndarray) -> float:
    """Mean over feature pairs j < k of |corr_real(j, k) − corr_generated(j, k)|.

    Features constant in the real x2 have no correlations and are left out (with their pairs); NaN
    when fewer than 2 features remain. A feature constant only in the generated x2 (e.g. saturated at
    the clamp) counts as correlated 0 with every other feature, as the Pearson metrics count it as
    r = 0: leaving it out would reward a generator that collapses features.
    """
    real, generated = _check_pair(real, generated)
    keep = np.ptp(real, axis=0) > 0
    if keep.sum() < 2:
        warnings.warn("corr_matrix_diff: fewer than 2 features that are not constant in the real data, "
                      "returning NaN", RuntimeWarning, stacklevel=2)
        return math.nan
    c_real = np.corrcoef(real[:, keep], rowvar=False)
    generated = generated[:, keep]
    flat = np.ptp(generated, axis=0) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        c_gen = np.corrcoef(generated, rowvar=False)
    c_gen[flat, :] = 0.0
    c_gen[:, flat] = 0.0
    upper = np.triu_indices(int(keep.sum()), k=1)
    return float(np.abs(c_real[upper] - c_gen[upper]).mean())


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "pearson_feature": pearson_feature,
    "pearson_subject": pearson_subject,
    "euclidean": euclidean,
    "cosine_distance": cosine_distance,
    "frechet": frechet,
    "mean_correlation": mean_correlation,
    "corr_matrix_diff": corr_matrix_diff,
}


def imputation_metrics(real: np.ndarray, generated: np.ndarray) -> dict[str, float]:
    """All seven metrics of :data:`METRIC_NAMES`, in that order."""
    real, generated = _check_pair(real, generated)
    return {name: METRICS[name](real, generated) for name in METRIC_NAMES}


# ---------------------------------------------------------------------------------------- downstream sets
def _as_2d(name: str, x: np.ndarray, n: int | None = None, d: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_subjects, D), got shape {x.shape}")
    if (n is not None and x.shape[0] != n) or (d is not None and x.shape[1] != d):
        raise ValueError(f"{name} must have shape ({n}, {d}), got {x.shape}")
    return x


def _check_finite_rows(name: str, x: np.ndarray) -> None:
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} has NaN or infinite values in {bad.sum()} rows (first: row {np.flatnonzero(bad)[0]})")


def downstream_training_sets(
    x1_all: np.ndarray,
    y_label_all: np.ndarray,
    paired: np.ndarray,
    x2_real: np.ndarray,
    x2_generated: np.ndarray,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The downstream training sets of METHODS.md, name → (X, y), from the TRAINING subjects.

    x1_all (n, D) first visits; y_label_all (n,) the label; paired (n,) bool, True where a real
    follow-up exists; x2_real (n, D) real follow-ups (rows of unpaired subjects are ignored, NaN
    is expected there); x2_generated (n, D) generated follow-ups for every training subject.

    - ``all_first``     all subjects, [x1]
    - ``paired_first``  paired subjects, [x1]
    - ``paired_real``   paired subjects, [x1, real x2]
    - ``enriched``      all subjects, [x1, real x2 where paired else generated x2]
    - ``all_generated`` all subjects, [x1, generated x2]

    The matching test matrix (held-out subjects with a real x2) is :func:`downstream_test_matrix`.
    """
    x1 = _as_2d("x1_all", x1_all)
    n, d = x1.shape
    y = np.asarray(y_label_all)
    paired = np.asarray(paired)
    if y.shape != (n,):
        raise ValueError(f"y_label_all must have shape ({n},), got {y.shape}")
    if paired.shape != (n,) or paired.dtype != bool:
        raise ValueError(f"paired must be a boolean array of shape ({n},), got {paired.dtype} {paired.shape}")
    x2r = _as_2d("x2_real", x2_real, n, d)
    x2g = _as_2d("x2_generated", x2_generated, n, d)
    _check_finite_rows("x1_all", x1)
    _check_finite_rows("x2_real (paired rows)", x2r[paired])
    _check_finite_rows("x2_generated", x2g)
    enriched_x2 = np.where(paired[:, None], x2r, x2g)
    return {
        "all_first": (x1, y),
        "paired_first": (x1[paired], y[paired]),
        "paired_real": (np.hstack([x1[paired], x2r[paired]]), y[paired]),
        "enriched": (np.hstack([x1, enriched_x2]), y),
        "all_generated": (np.hstack([x1, x2g]), y),
    }


def downstream_test_matrix(x1: np.ndarray, x2: np.ndarray, set_name: str) -> np.ndarray:
    """Test features for held-out subjects with a real follow-up: [x1] for the ``*_first`` sets,
    [x1, x2] for the others (x2 being the real follow-up)."""
    if set_name not in TRAINING_SETS:
        raise ValueError(f"unknown training set {set_name!r}; expected one of {TRAINING_SETS}")
    x1 = _as_2d("x1", x1)
    _check_finite_rows("x1", x1)
    if set_name in FIRST_VISIT_SETS:
        return x1
    x2 = _as_2d("x2", x2, *x1.shape)
    _check_finite_rows("x2", x2)
    return np.hstack([x1, x2])


# ---------------------------------------------------------------------------------------- downstream AUROC
def mlp_classifier(in_dim: int, hidden: Sequence[int] = (256, 256)) -> nn.Sequential:
    """Linear-ReLU-…-Linear(1): one logit per row (3 linear layers for two hidden sizes)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, 1))
    return nn.Sequential(*layers)


def _binary_labels(name: str, y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match its features, got {y.shape}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{name} must hold only 0/1 (or booleans); found {np.unique(y[~np.isin(y, (0.0, 1.0))])[:5]}")
    return y


def _stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split keeping the class ratio; each class gives at least one row to each side."""
    rng = np.random.default_rng(seed)
    fit, val = [], []
    for cls in (0.0, 1.0):
        rows = rng.permutation(np.flatnonzero(y == cls))
        k = min(max(round(val_fraction * len(rows)), 1), len(rows) - 1)
        val.append(rows[:k])
        fit.append(rows[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))


def _predict_logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        device = next(model.parameters()).device
        return model(x.to(device)).squeeze(-1).float().cpu().numpy()


def downstream_auroc(
    train_X: np.ndarray,
    train_y: np.ndarray,
    test_X: np.ndarray,
    test_y: np.ndarray,
    *,
    seed: int,
    hidden: Sequence[int] = (256, 256),
    batch_size: int = 128,
    lr: float = 1e-3,
    patience: int = 5,
    max_epochs: int = 200,
    val_fraction: float = 0.2,
    balance: bool = True,
    label: str = "label",
    device: str = "cpu",
) -> float:
    """Test AUROC of an MLP classifier (METHODS.md downstream utility) trained on (train_X, train_y).

    Inputs are standardised with the training set's mean and sd (sd 0 → 1). A seeded stratified
    ``val_fraction`` of the training set is held out; the rest trains Linear-ReLU-Linear-ReLU-Linear
    with BCE-with-logits through :class:`~neurodiff.training.Trainer` (Adam, ``lr``, ``batch_size``),
    keeping the epoch with the best validation AUROC (early stopping, ``patience`` epochs).

    ``balance`` (default): BCE ``pos_weight`` = n_negative / n_positive of the fitting rows, so a
    rare label (parkinsonism ≈ 0.3 %) is not learnt as "always negative" before early stopping
    triggers; AUROC is rank-based, so the weighting does not bias the score. ``balance=False`` is
    the unweighted loss.

    Returns NaN with a warning naming ``label`` when the test set has one class only, or the
    training set has fewer than 2 subjects of a class (no stratified validation is possible).
    """
    train_X, test_X = _as_2d("train_X", train_X), _as_2d("test_X", test_X)
    if train_X.shape[1] != test_X.shape[1]:
        raise ValueError(f"train_X and test_X must have the same number of features, got {train_X.shape[1]} "
                         f"and {test_X.shape[1]}")
    _check_finite_rows("train_X", train_X)
    _check_finite_rows("test_X", test_X)
    train_y = _binary_labels("train_y", train_y, len(train_X))
    test_y = _binary_labels("test_y", test_y, len(test_X))
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(np.unique(test_y)) < 2:
        warnings.warn(f"downstream AUROC for {label!r}: the test set has one class only, returning NaN",
                      RuntimeWarning, stacklevel=2)
        return math.nan
    counts = np.bincount(train_y.astype(int), minlength=2)
    if counts.min() < 2:
        warnings.warn(f"downstream AUROC for {label!r}: the training set has {counts[0]} negatives and "
                      f"{counts[1]} positives (need >= 2 of each), returning NaN", RuntimeWarning, stacklevel=2)
        return math.nan

    mean, sd = train_X.mean(axis=0), train_X.std(axis=0)
    sd[sd == 0] = 1.0
    x_train = torch.as_tensor((train_X - mean) / sd, dtype=torch.float32)
    x_test = torch.as_tensor((test_X - mean) / sd, dtype=torch.float32)
    y_train = torch.as_tensor(train_y, dtype=torch.float32)
    fit_rows, val_rows = _stratified_split(train_y, val_fraction, seed)
    x_val, y_val = x_train[val_rows], train_y[val_rows]

    n_pos = float(train_y[fit_rows].sum())
    pos_weight = torch.tensor((len(fit_rows) - n_pos) / n_pos if balance else 1.0)

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        logits = model(batch["x"]).squeeze(-1)
        return F.binary_cross_entropy_with_logits(logits, batch["y"], pos_weight=pos_weight.to(logits.device))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = mlp_classifier(train_X.shape[1], hidden)
    stopping = EarlyStopping(score=lambda m: roc_auc_score(y_val, _predict_logits(m, x_val)),
                             patience=patience, mode="max")
    trainer = Trainer(max_epochs=max_epochs, batch_size=batch_size, lr=lr, early_stopping=stopping, seed=seed,
                      device=device, progress=False, description=f"downstream classifier ({label})")
    result = trainer.fit(model, loss_fn, TensorData(x=x_train[fit_rows], y=y_train[fit_rows]))
    return float(roc_auc_score(test_y, _predict_logits(result.model, x_test)))


# ---------------------------------------------------------------------------------------- case study
def case_study(
    x1: np.ndarray,
    x2: np.ndarray,
    group_mask: np.ndarray,
    feature_index: int | Sequence[int] | np.ndarray,
    *,
    to_original: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, float | int]:
    """Mean change of a feature group between visits, split by a binary label.

    Per subject: change_i = mean over j ∈ group of (x2[i, j] − x1[i, j]), the group's mean change (as
    METHODS.md and the paper's public code: left and right SNc changing by −2 each give −2, not −4);
    then the mean of change_i over the subjects with ``group_mask`` True (``change_positive``, e.g.
    parkinsonism) and False (``change_negative``), with their counts. ``feature_index`` is one column index, a list of them
    (e.g. left and right SNc volume) or a boolean mask over features. The change is in ORIGINAL
    units: pass unscaled x1, x2, or give ``to_original`` (e.g. ``scaler.inverse_transform``), which
    is applied to both. Called once with the real x2 and once with the generated x2. A group with no
    subject gets NaN.
    """
    x1 = _as_2d("x1", x1)
    x2 = _as_2d("x2", x2, *x1.shape)
    if to_original is not None:
        shape = x1.shape
        x1 = _as_2d("to_original(x1)", to_original(x1), *shape)
        x2 = _as_2d("to_original(x2)", to_original(x2), *shape)
    mask = np.asarray(group_mask)
    if mask.shape != (len(x1),) or mask.dtype != bool:
        raise ValueError(f"group_mask must be a boolean array of shape ({len(x1)},), got {mask.dtype} {mask.shape}")
    try:
        columns = np.atleast_1d(np.arange(x1.shape[1])[feature_index])
    except IndexError as error:
        raise ValueError(f"feature_index {feature_index!r} does not fit {x1.shape[1]} features: {error}") from error
    if columns.size == 0:
        raise ValueError("feature_index selects no feature")
    change = (x2[:, columns] - x1[:, columns]).mean(axis=1)
    if not np.isfinite(change).all():
        bad = int((~np.isfinite(change)).sum())
        raise ValueError(f"x1 or x2 has NaN or infinite values in the feature group for {bad} subjects")
    positive, negative = change[mask], change[~mask]
    return {
        "change_positive": float(positive.mean()) if positive.size else math.nan,
        "change_negative": float(negative.mean()) if negative.size else math.nan,
        "n_positive": int(positive.size),
        "n_negative": int(negative.size),
    }
