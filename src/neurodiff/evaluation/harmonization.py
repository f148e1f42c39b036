"""Evaluation of multi-site harmonisation (DDAE, METHODS.md §2 "Evaluation").

Every function takes numpy arrays. Images are batches ``(N, 1, H, W)`` with intensities in [0, 1];
``covariates`` is a DataFrame with one row per image, in the same order, and the columns ``age``
(years), ``sex`` (``"F"`` / ``"M"``) and ``site``, plus the optional ``subject_id`` (one id per subject,
shared by all of a subject's images: slices, sessions) and ``true_traveller_id`` (str, ``""`` for subjects
that are not travelling subjects).

Feature space (the "feature space available offline")
-----------------------------------------------------
The site / age / sex probes and the Fréchet distance work on :func:`image_features`: a PCA of the
flattened images (scikit-learn, whitening off, seeded), **fitted once on the raw images of the
evaluation set** and then applied unchanged to every method's harmonised images, so that all methods
are compared in one fixed space. The PCA scores keep pixel units (no whitening), so distances in it
are Euclidean distances between the images' projections on the raw images' main modes of variation.
The Inception FID of the paper needs downloaded Inception-v3 weights and is not computed here; the
``frechet`` below is a Fréchet distance in this PCA space and is not comparable with FID values.

Metrics (the keys of :func:`evaluate_harmonization`, names in results.json, see :data:`METRIC_NAMES`):

- ``site_accuracy``  mean balanced accuracy over stratified K folds of a logistic-regression site
  classifier trained and tested on harmonised images (features centred and scaled by one common SD,
  which keeps the PCA's variance ordering, see ``_scaled``); ``site_chance`` is
  1 / number of sites (the value of a perfect harmonisation);
- ``age_mae_transfer``  mean over K folds of the MAE (years) of a ridge regression of age **fitted on
  the raw images** of the training folds and applied to the **harmonised** images of the held-out fold:
  is the age a probe reads in unharmonised anatomy still there after harmonisation?
- ``sex_auroc_transfer``  likewise for sex: mean over stratified K folds of the AUROC (``"M"`` the
  positive class) of a logistic regression fitted on raw images, applied to harmonised ones;
- ``age_mae``, ``sex_auroc``  the same probes fitted **and** tested on the harmonised images. Kept for
  reference but not ranked: a method that is given the age and sex (a conditional decoder such as the
  cVAE, or DDAE's covariate encoder) can write them into its output, and a probe trained on that output
  reads them back — a decoder that ignores the input image and renders the template of the given age
  and sex wins these two. The transfer probes credit only what a probe of raw anatomy reads, so labels
  written in any other form do not score; an image of the mean anatomy of the given age and sex still
  does (better than the raw images), which only ``within_site_variability`` and the traveller metrics
  reveal (the benchmark report's collapse rule). For ``raw`` (harmonised = raw) each transfer probe
  equals its within-image probe;
- ``frechet``        Fréchet distance between the harmonised images of the subjects **not** scanned at
  the target site and the real target-site images, in the fixed PCA space;
- ``within_site_variability``  mean pairwise Euclidean distance between the images of one site
  after / before harmonisation, averaged over sites: 1 = the spread between subjects of a site is
  kept, < 1 = subjects were made more alike (e.g. collapsed towards a template), > 1 = noise added;
- ``ssim``, ``psnr``, ``mae``  on travelling subjects: each harmonised image of a traveller scanned
  at another site against the real image of the same traveller at the target site (means over those
  images; NaN when there are none).

Probes are cross-validated with the same folds for every method (``seed``). All images of one subject
— the rows sharing a ``subject_id`` (several slices or sessions of a subject) or a ``true_traveller_id``
(a travelling subject at every site), see :func:`probe_groups` — are kept in one fold (grouped K-fold),
so that a probe is never tested on an anatomy it saw in training. Without either column every image is
taken for a different subject. To compare with the raw images (biology before
harmonisation, the site effect to remove), evaluate the raw images as a method:
``evaluate_harmonization(raw, raw, covariates, target_site, features=space)``.

>>> features, space = image_features(raw)                 # fit once on the raw images
>>> evaluate_harmonization(raw, harmonised, covariates, "IXI", features=space)
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist

from neurodiff.evaluation.distributions import frechet_distance
from neurodiff.evaluation.image_quality import SSIM_WINDOW
from neurodiff.evaluation.image_quality import mae as image_mae
from neurodiff.evaluation.image_quality import psnr as image_psnr
from neurodiff.evaluation.image_quality import ssim as image_ssim

METRIC_NAMES = (
    "site_accuracy",
    "site_chance",
    "age_mae_transfer",
    "sex_auroc_transfer",
    "age_mae",
    "sex_auroc",
    "frechet",
    "within_site_variability",
    "ssim",
    "psnr",
    "mae",
)
#: True: higher is better; False: lower is better; None: closest to :data:`REFERENCE_VALUES` is best
#: (site accuracy at chance; variability ratio at 1). ``site_chance`` is a reference, not a score.
#: ``age_mae`` / ``sex_auroc`` (probes fitted on the harmonised images) are None without a reference:
#: not ranked, since a method conditioned on age and sex can write them into its output; the
#: ``*_transfer`` probes (fitted on raw images) are ranked instead.
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "site_accuracy": None,
    "age_mae_transfer": False,
    "sex_auroc_transfer": True,
    "age_mae": None,
    "sex_auroc": None,
    "frechet": False,
    "within_site_variability": None,
    "ssim": True,
    "psnr": True,
    "mae": False,
    "age_injection": None,  # the label-swap control (:mod:`neurodiff.evaluation.label_injection`): best near 0
    "sex_injection": None,
}
#: The ideal value of the metrics with ``HIGHER_IS_BETTER[metric] is None``: a number, or the name of
#: another metric of the same method holding it.
REFERENCE_VALUES: dict[str, float | str] = {"site_accuracy": "site_chance", "within_site_variability": 1.0,
                                            "age_injection": 0.0, "sex_injection": 0.0}
REQUIRED_COLUMNS = ("age", "sex", "site")
TRAVELLER_COLUMN = "true_traveller_id"
SUBJECT_COLUMN = "subject_id"
DEFAULT_COMPONENTS = 64


# ---------------------------------------------------------------------------------------- checks
def _images(name: str, images: Any) -> np.ndarray:
    """A finite float64 batch (N, 1, H, W) with N ≥ 1."""
    if hasattr(images, "detach"):  # a torch tensor
        images = images.detach().cpu().numpy()
    array = np.asarray(images, dtype=np.float64)
    if array.ndim != 4 or array.shape[1] != 1:
        raise ValueError(f"{name} must be a batch of images (N, 1, H, W), got shape {array.shape}")
    if array.shape[0] == 0 or min(array.shape[2:]) < 1:
        raise ValueError(f"{name} is empty: shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values ({(~np.isfinite(array)).sum()} entries)")
    return array


def _features(name: str, features: Any, n: int | None = None) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D array (n_images, n_features), got shape {array.shape}")
    if n is not None and array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} rows but there are {n} labels")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _labels(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=object).ravel()
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in array):
        raise ValueError(f"{name} has missing values")
    return array


def _groups(groups: Any, n: int) -> np.ndarray | None:
    """Fold groups: rows with the same non-empty id share a group; every other row is its own group."""
    if groups is None:
        return None
    ids = np.asarray(groups, dtype=object).ravel()
    if len(ids) != n:
        raise ValueError(f"groups has {len(ids)} entries for {n} rows")
    keyed = [f"g:{g}" if isinstance(g, str) and g != "" else f"row:{i}" for i, g in enumerate(ids)]
    if len(set(keyed)) == n:
        return None  # no group holds more than one row: plain (stratified) K-fold
    return np.unique(keyed, return_inverse=True)[1]


def check_covariates(covariates: pd.DataFrame, n: int | None = None) -> None:
    """ValueError naming what is wrong: not a DataFrame, missing columns, wrong length, sex values, NaN."""
    if not isinstance(covariates, pd.DataFrame):
        raise ValueError(f"covariates must be a pandas DataFrame, got {type(covariates).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in covariates.columns]
    if missing:
        raise ValueError(f"covariates lack the column(s) {', '.join(missing)} "
                         f"(needed: {', '.join(REQUIRED_COLUMNS)}; optional: {SUBJECT_COLUMN}, {TRAVELLER_COLUMN})")
    if n is not None and len(covariates) != n:
        raise ValueError(f"covariates have {len(covariates)} rows but there are {n} images")
    age = pd.to_numeric(covariates["age"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(age).all():
        raise ValueError("covariates column age has missing or non-numeric values")
    bad = sorted({str(v) for v in covariates["sex"] if v not in ("F", "M")})
    if bad:
        raise ValueError(f"covariates column sex must hold 'F' or 'M', found {', '.join(bad[:5])}")
    if covariates["site"].isna().any():
        raise ValueError("covariates column site has missing values")


# ---------------------------------------------------------------------------------------- features
@dataclass(frozen=True)
class FeatureSpace:
    """A PCA of flattened images fitted once (on the raw images); :meth:`transform` applies it unchanged."""

    pca: Any  # sklearn.decomposition.PCA
    image_shape: tuple[int, ...]  # (1, H, W)

    @property
    def components(self) -> int:
        return int(self.pca.n_components_)

    def transform(self, images: Any) -> np.ndarray:
        array = _images("images", images)
        if tuple(array.shape[1:]) != self.image_shape:
            raise ValueError(f"images have shape {tuple(array.shape[1:])} per image but the feature space was "
                             f"fitted on {self.image_shape}")
        return self.pca.transform(array.reshape(len(array), -1))


def image_features(images: Any, *, components: int = DEFAULT_COMPONENTS, fitted: FeatureSpace | None = None,
                   seed: int = 0) -> tuple[np.ndarray, FeatureSpace]:
    """``(features (N, k), space)``: PCA scores of the flattened images, and the fitted PCA.

    With ``fitted=None`` a PCA (whitening off, ``random_state=seed``) with ``k = min(components, N,
    H·W)`` components is fitted on `images` — call it on the **raw** images of the evaluation set.
    Pass the returned `space` as ``fitted`` to project every method's harmonised images into the same
    space (``components`` is then ignored). This is the offline feature space of the module docstring;
    Inception FID (downloaded weights) is not used.
    """
    if fitted is not None:
        return fitted.transform(images), fitted
    array = _images("images", images)
    components = int(components)
    if components < 1:
        raise ValueError(f"components must be at least 1, got {components}")
    flat = array.reshape(len(array), -1)
    k = min(components, flat.shape[0], flat.shape[1])
    from sklearn.decomposition import PCA

    pca = PCA(n_components=k, whiten=False, random_state=seed).fit(flat)
    space = FeatureSpace(pca=pca, image_shape=tuple(array.shape[1:]))
    return pca.transform(flat), space


# ---------------------------------------------------------------------------------------- probes
def _folds(y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int, *, stratify: bool) -> list:
    """Train/test index pairs: (stratified) (group) K-fold, shuffled with `seed`; folds clipped to the data."""
    from sklearn.model_selection import (
        GroupKFold,
        KFold,
        StratifiedGroupKFold,
        StratifiedKFold,
    )

    folds = int(folds)
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    units = len(y) if groups is None else len(np.unique(groups))
    if stratify:
        _, counts = np.unique(y, return_counts=True)
        limit = int(counts.min())
        if groups is not None:  # a class's rows can be split among at most that many groups
            limit = min(int(len(np.unique(groups[y == c]))) for c in np.unique(y))
        folds = min(folds, limit)
        if folds < 2:
            raise ValueError(f"every class needs at least 2 {'subjects' if groups is not None else 'images'} "
                             f"for cross-validation; the smallest has {limit}")
        if groups is None:
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            return list(splitter.split(np.zeros(len(y)), y))
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y, groups))
    folds = min(folds, units)
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 subjects, got {units}")
    if groups is None:
        return list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y))))
    return list(GroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))


#: Ridge penalties tried by the age probe (chosen by efficient leave-one-out inside each training fold).
RIDGE_ALPHAS = np.logspace(-2, 4, 13)


def _scaled(x: np.ndarray, train: np.ndarray, also: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centre on the training fold and divide by ONE common scale (its overall SD) for all features.

    Returns ``(x scaled, also scaled)``: `also` (features of other images in the same space, e.g. the
    harmonised images a probe fitted on raw ones is applied to) gets the same centre and scale, fitted on
    ``x[train]``; ``also=None`` returns scaled `x` twice.

    Deliberately not per-feature standardisation: the PCA components are ordered by variance, and
    giving the low-variance (mostly noise) components the same weight as the main modes makes a
    probe fit noise when images are few (with 90 images and 64 components, per-feature
    standardisation read a blatant site offset at 0.44 balanced accuracy instead of 1.0). One common
    scale keeps the PCA geometry and still makes the penalties independent of image size and units.
    """
    centre = x[train].mean(axis=0)
    scale = float((x[train] - centre).std())
    scale = scale if scale > 0 else 1.0
    scaled = (x - centre) / scale
    return scaled, (scaled if also is None else (also - centre) / scale)


def _one_blas_thread():
    """Single-threaded BLAS for the probes: their problems are small (≤ 64 features), and threaded
    BLAS only adds overhead there (10× slower when the cores are shared with other work)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a scikit-learn dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _logistic():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=2000)


def _cross_validate(x: np.ndarray, y: np.ndarray, groups: Any, folds: int, seed: int,
                    score: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], float], *, stratify: bool,
                    test_features: np.ndarray | None = None) -> float:
    """Mean over the folds of ``score(fit features, test features, train, test)`` (NaN folds left out;
    NaN if all): the probe is fitted on ``fit[train]`` and scored on ``test_features[test]`` — `x` itself
    when `test_features` is None —, both scaled with the training fold of `x` (:func:`_scaled`)."""
    values = []
    with _one_blas_thread():
        for train, test in _folds(y, _groups(groups, len(y)), folds, seed, stratify=stratify):
            values.append(float(score(*_scaled(x, train, test_features), train, test)))
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _ids(covariates: pd.DataFrame, column: str) -> np.ndarray:
    if column not in covariates.columns:
        return np.full(len(covariates), "", dtype=object)
    return covariates[column].fillna("").astype(str).str.strip().to_numpy(dtype=object)


def probe_groups(covariates: pd.DataFrame) -> np.ndarray | None:
    """The cross-validation groups of every probe: one id per subject, so that all of a subject's images
    stay in one fold. Rows that share a non-empty ``true_traveller_id`` (a travelling subject imaged at
    every site) or a non-empty ``subject_id`` (several slices or sessions of one subject) are one group —
    joined transitively, so a traveller's rows stay together whatever their subject ids. Rows with
    neither id get ``""`` (each its own group). None when no two rows share a group (plain K-fold).
    A group is named by its travelling subject's id when it has one (the fold groups of earlier versions,
    which grouped by that id only: same folds where every other subject has one image), else
    ``"subject:"`` + its subject id.
    """
    travellers, subjects = _ids(covariates, TRAVELLER_COLUMN), _ids(covariates, SUBJECT_COLUMN)
    n = len(covariates)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for ids in (travellers, subjects):
        first: dict[str, int] = {}
        for i, key in enumerate(ids):
            if key:
                parent[root(i)] = root(first.setdefault(key, i))
    roots = [root(i) for i in range(n)]
    sizes = pd.Series(roots).value_counts()
    if (sizes <= 1).all():
        return None
    names: dict[int, str] = {}
    for i in np.argsort([travellers[i] == "" for i in range(n)], kind="stable"):  # travellers' rows first
        names.setdefault(roots[i], travellers[i] or f"subject:{subjects[i]}")
    return np.asarray([names[r] if sizes[r] > 1 else "" for r in roots], dtype=object)


def site_accuracy(features: Any, sites: Sequence[Hashable], *, folds: int = 5, seed: int = 0,
                  groups: Sequence[str] | None = None) -> tuple[float, float]:
    """``(balanced accuracy, chance)`` of a site classifier; chance = 1 / number of sites.

    Logistic regression (L2, C = 1) on the features centred and divided by one common scale (see
    :func:`_scaled`: not per-feature standardisation), balanced accuracy on the held-out fold,
    mean over stratified K folds (shuffled with `seed`; fewer folds when a site has fewer images).
    `groups` (one id per subject, ``""`` for an image of its own, e.g. :func:`probe_groups`) keeps each
    group's rows in one fold.
    """
    from sklearn.metrics import balanced_accuracy_score

    y = _labels("sites", sites).astype(str)
    x = _features("features", features, len(y))
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"site accuracy needs at least 2 sites, got {len(classes)} ({', '.join(classes)})")

    def score(xs: np.ndarray, xt: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
        if len(np.unique(y[train])) < 2:
            return math.nan
        model = _logistic().fit(xs[train], y[train])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a site absent from a test fold
            return balanced_accuracy_score(y[test], model.predict(xt[test]))

    return _cross_validate(x, y, groups, folds, seed, score, stratify=True), 1.0 / len(classes)


def _test_features(test_features: Any, x: np.ndarray) -> np.ndarray | None:
    if test_features is None:
        return None
    array = _features("test_features", test_features, len(x))
    if array.shape[1] != x.shape[1]:
        raise ValueError(f"test_features has {array.shape[1]} features but features has {x.shape[1]}; "
                         "project both with the same feature space")
    return array


def age_mae(features: Any, ages: Sequence[float], *, folds: int = 5, seed: int = 0,
            groups: Sequence[str] | None = None, test_features: Any = None) -> float:
    """Mean over K folds of the MAE (years) of a ridge regression of age (features scaled as in
    :func:`_scaled`; K-fold shuffled with `seed`, grouped by `groups` when given).

    The ridge penalty is chosen inside each training fold by efficient leave-one-out
    (``RidgeCV``, α in 10^-2 … 10^4), so the held-out fold is never used to tune it.
    `test_features` (same rows and width as `features`, e.g. the harmonised images' features when
    `features` are the raw images'): the probe fitted on ``features[train]`` predicts from
    ``test_features[test]`` (the transfer probe ``age_mae_transfer``); None: from ``features[test]``.
    """
    from sklearn.linear_model import RidgeCV

    y = np.asarray(ages, dtype=np.float64).ravel()
    if not np.isfinite(y).all():
        raise ValueError("ages contain NaN or infinite values")
    x = _features("features", features, len(y))
    other = _test_features(test_features, x)

    def score(xs: np.ndarray, xt: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
        model = RidgeCV(alphas=RIDGE_ALPHAS).fit(xs[train], y[train])
        return float(np.abs(model.predict(xt[test]) - y[test]).mean())

    return _cross_validate(x, y, groups, folds, seed, score, stratify=False, test_features=other)


def sex_auroc(features: Any, sex: Sequence[str], *, folds: int = 5, seed: int = 0,
              groups: Sequence[str] | None = None, test_features: Any = None) -> float:
    """Mean over stratified K folds of the AUROC of a logistic regression of sex ("M" positive).

    `sex` holds "F" / "M" (or any two labels: the later one in sorted order is positive).
    `test_features`: as for :func:`age_mae` (fit on `features`, score on `test_features`: the transfer
    probe ``sex_auroc_transfer``).
    """
    from sklearn.metrics import roc_auc_score

    y_raw = _labels("sex", sex).astype(str)
    classes = np.unique(y_raw)
    if len(classes) != 2:
        raise ValueError(f"sex AUROC needs exactly 2 classes, got {len(classes)} ({', '.join(classes)})")
    y = (y_raw == classes[1]).astype(int)
    x = _features("features", features, len(y))
    other = _test_features(test_features, x)

    def score(xs: np.ndarray, xt: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
        if len(np.unique(y[train])) < 2 or len(np.unique(y[test])) < 2:
            return math.nan  # AUROC undefined with one class
        model = _logistic().fit(xs[train], y[train])
        return roc_auc_score(y[test], model.predict_proba(xt[test])[:, 1])

    return _cross_validate(x, y, groups, folds, seed, score, stratify=True, test_features=other)


# ---------------------------------------------------------------------------------------- distributions
def frechet_to_target(features_harmonised: Any, features_target_real: Any) -> float:
    """Fréchet distance between harmonised images' features and real target-site images' features.

    Exact for singular covariances (fewer images than features), see
    :func:`neurodiff.evaluation.distributions.frechet_distance`.
    """
    harmonised = _features("features_harmonised", features_harmonised)
    real = _features("features_target_real", features_target_real)
    if harmonised.shape[1] != real.shape[1]:
        raise ValueError(f"the two feature arrays differ in width: {harmonised.shape[1]} vs {real.shape[1]}")
    if len(harmonised) < 2 or len(real) < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 images on each side, got {len(harmonised)} "
                         f"harmonised and {len(real)} target-site images")
    return frechet_distance(real, harmonised)


def within_site_variability(images_before: Any, images_after: Any, sites: Sequence[Hashable]) -> float:
    """Mean over sites of D_after / D_before, D = mean pairwise Euclidean distance between a site's images.

    1 = within-site variability kept; < 1 reduced (subjects made alike); > 1 increased. Sites with
    fewer than 2 images, or whose images are all identical before, are left out; NaN when all are.
    """
    before, after = _images("images_before", images_before), _images("images_after", images_after)
    if before.shape != after.shape:
        raise ValueError(f"images_before and images_after differ in shape: {before.shape} vs {after.shape}")
    site = _labels("sites", sites).astype(str)
    if len(site) != len(before):
        raise ValueError(f"sites has {len(site)} entries for {len(before)} images")
    ratios = []
    for name in np.unique(site):
        rows = np.flatnonzero(site == name)
        if len(rows) < 2:
            continue
        d_before = pdist(before[rows].reshape(len(rows), -1)).mean()
        if d_before <= 0:
            continue
        ratios.append(pdist(after[rows].reshape(len(rows), -1)).mean() / d_before)
    return float(np.mean(ratios)) if ratios else math.nan


# ---------------------------------------------------------------------------------------- travellers
def traveller_pairs(covariates: pd.DataFrame, target_site: Hashable) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, reference_rows)``: each travelling-subject image not at the target site, and the row of
    the same traveller's image at the target site (the first such row). Travellers without a
    target-site image are left out; empty arrays without a ``true_traveller_id`` column."""
    empty = np.zeros(0, dtype=int)
    if TRAVELLER_COLUMN not in covariates.columns:
        return empty, empty
    ids = covariates[TRAVELLER_COLUMN].fillna("").astype(str).to_numpy()
    site = covariates["site"].astype(str).to_numpy()
    at_target = site == str(target_site)
    reference: dict[str, int] = {}
    for i in np.flatnonzero(at_target & (ids != "")):
        reference.setdefault(ids[i], int(i))
    rows = [i for i in range(len(ids)) if ids[i] != "" and not at_target[i] and ids[i] in reference]
    return np.asarray(rows, dtype=int), np.asarray([reference[ids[i]] for i in rows], dtype=int)


def traveller_scores(harmonised: Any, references: Any) -> dict[str, Any]:
    """SSIM / PSNR / MAE of harmonised traveller images against the same travellers' real target-site
    images (row-aligned, e.g. from :func:`traveller_pairs`): ``{"ssim", "psnr", "mae"}`` means and
    ``"per_image"`` → the three (n,) arrays. Intensity range 1 (images in [0, 1]); PSNR is ``inf`` for
    identical images (and so is its mean); SSIM is NaN when an image side is below its 11-px window.
    With no pairs every mean is NaN.
    """
    if np.shape(harmonised)[:1] == (0,) and np.shape(references)[:1] == (0,):
        nothing = np.zeros(0)
        return {"ssim": math.nan, "psnr": math.nan, "mae": math.nan,
                "per_image": {"ssim": nothing, "psnr": nothing, "mae": nothing}}
    x, y = _images("harmonised", harmonised), _images("references", references)
    if x.shape != y.shape:
        raise ValueError(f"harmonised and references differ in shape: {x.shape} vs {y.shape}")
    per_image = {
        "ssim": image_ssim(x, y) if min(x.shape[2:]) >= SSIM_WINDOW else np.full(len(x), np.nan),
        "psnr": image_psnr(x, y, data_range=1.0),
        "mae": image_mae(x, y),
    }
    return {**{k: float(v.mean()) for k, v in per_image.items()}, "per_image": per_image}


# ---------------------------------------------------------------------------------------- all metrics
def evaluate_harmonization(raw_images: Any, harmonised_images: Any, covariates: pd.DataFrame,
                           target_site: Hashable, *, features: FeatureSpace | None = None, seed: int = 0,
                           folds: int = 5) -> dict[str, float]:
    """All metrics of :data:`METRIC_NAMES` for one method, as ``{name: float}`` in that order.

    Parameters
    ----------
    raw_images, harmonised_images:
        ``(N, 1, H, W)`` in [0, 1], row i the same image before and after harmonisation (target-site
        images are harmonised too, and count as harmonised images in every metric).
    covariates:
        one row per image: ``age``, ``sex`` ("F"/"M"), ``site``, optional ``subject_id`` and
        ``true_traveller_id`` (the probes' fold groups, :func:`probe_groups`).
    target_site:
        the reference site every image was mapped to.
    features:
        the :class:`FeatureSpace` fitted on the raw images (:func:`image_features`); pass the same one
        for every method. ``None`` fits it here on `raw_images` (same result for the same raw images).
    seed, folds:
        PCA seed (when fitted here) and the cross-validation folds of the probes.

    ``frechet`` compares the harmonised images of the subjects not scanned at the target site with the
    real (raw) target-site images; ``ssim``/``psnr``/``mae`` are NaN without travelling subjects.
    ``age_mae_transfer`` / ``sex_auroc_transfer`` fit their probes on the raw images' features of the
    training folds and test them on the harmonised images' features (same folds as ``age_mae`` /
    ``sex_auroc``, which fit and test on the harmonised images).
    """
    raw, harmonised = _images("raw_images", raw_images), _images("harmonised_images", harmonised_images)
    if raw.shape != harmonised.shape:
        raise ValueError(f"raw_images and harmonised_images differ in shape: {raw.shape} vs {harmonised.shape}")
    check_covariates(covariates, len(raw))
    site = covariates["site"].astype(str).to_numpy()
    if len(np.unique(site)) < 2:
        raise ValueError(f"harmonisation needs images from at least 2 sites, got only {np.unique(site)[0]!r}")
    at_target = site == str(target_site)
    if not at_target.any():
        raise ValueError(f"target site {target_site!r} has no images (sites: {', '.join(np.unique(site))})")
    if features is None:
        _, features = image_features(raw, seed=seed)
    h = features.transform(harmonised)
    r = features.transform(raw)
    groups = probe_groups(covariates)
    accuracy, chance = site_accuracy(h, site, folds=folds, seed=seed, groups=groups)
    ages = pd.to_numeric(covariates["age"]).to_numpy(dtype=np.float64)
    sex = covariates["sex"].to_numpy()
    rows, reference_rows = traveller_pairs(covariates, target_site)
    travellers = traveller_scores(harmonised[rows], raw[reference_rows])
    moved = ~at_target
    frechet = (frechet_to_target(h[moved], r[at_target]) if moved.sum() >= 2 and at_target.sum() >= 2
               else math.nan)
    return {
        "site_accuracy": accuracy,
        "site_chance": chance,
        "age_mae_transfer": age_mae(r, ages, folds=folds, seed=seed, groups=groups, test_features=h),
        "sex_auroc_transfer": sex_auroc(r, sex, folds=folds, seed=seed, groups=groups, test_features=h),
        "age_mae": age_mae(h, ages, folds=folds, seed=seed, groups=groups),
        "sex_auroc": sex_auroc(h, sex, folds=folds, seed=seed, groups=groups),
        "frechet": frechet,
        "within_site_variability": within_site_variability(raw, harmonised, site),
        "ssim": travellers["ssim"],
        "psnr": travellers["psnr"],
        "mae": travellers["mae"],
    }
