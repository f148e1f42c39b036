"""Voxel-wise ComBat: DDAE's statistical harmonisation baseline (METHODS.md §2).

ComBat (Johnson, Li & Rabinovic 2007, *Biostatistics*) as adapted to neuroimaging by Fortin et al.
(2017 DTI, 2018 cortical thickness; the ``neuroCombat`` package) and Pomponio et al. (2020,
``neuroHarmonize``). Each voxel v inside a brain mask is one feature, the site is the batch, and age
(linear) and sex are kept in the design so that their effects survive harmonisation:

    y_sv = α_v + X_s β_v + γ_{site(s),v} + δ_{site(s),v} · ε_sv,    ε_sv ~ N(0, σ_v²)

*Implemented here with numpy* instead of wrapping neuroHarmonize, which ARCHITECTURE.md suggests:
neuroHarmonize 2.5.2 pins numpy < 2, and on this environment's numpy 2.4 its reference-batch mode
(the one DDAE's baseline needs) crashes in ``harmonizationLearn(..., ref_batch=...)`` with
``TypeError: only 0-dimensional arrays can be converted to Python scalars`` (``int()`` of a
one-element array); neuroCombat 0.2.12's reference-batch path calls the removed ``np.int``. The
estimates follow neuroCombat's code step by step (checked against neuroCombat 0.2.12 without a
reference batch: σ², γ̂, γ* and δ* agree to within 1e-5, parametric and non-parametric):

1. Least squares of the in-mask voxels on the design [site one-hot, age, sex] (age standardised,
   sex 0/1): site coefficients b_i, covariate coefficients β.
2. Grand mean α = Σ_i (n_i / n) b_i; pooled variance σ² = mean over all images of the squared
   residuals; standardised data s = (y − α − Xβ) / σ.
3. Per site i: γ̂_i = mean of s over the site's images, δ̂_i = their variance (ddof 1).
4. Empirical Bayes (``eb=True``), separately for each site over all voxels:
   parametric (default): γ ~ N(γ̄_i, τ²_i), δ ~ InvGamma(a_i, b_i) with method-of-moments
   hyper-parameters, posterior means by the fixed-point iteration of neuroCombat's ``it_sol``
   (γ* = (n τ² γ̂ + δ* γ̄) / (n τ² + δ*), δ* = (½ Σ (s − γ*)² + b) / (n/2 + a − 1)) until the largest
   relative change is below 1e-4; non-parametric (``parametric=False``): neuroCombat's
   ``int_eprior``, the other voxels' (γ̂, δ̂) as a discrete prior weighted by the voxel's likelihood
   (computed in log space here, so it does not underflow, and from sufficient statistics).
   ``eb=False`` keeps γ* = γ̂ and δ* = δ̂.

**Reference site.** neuroHarmonize's ``ref_batch`` fixes the reference at fit time. Here the target
site is chosen at :meth:`ComBat.transform`, so :meth:`ComBat.fit` estimates (γ*_i, δ*_i) for every
site in the pooled standardised space, and an image of site s is mapped to target site t by removing
its own site effect and adding the target's:

    s   = (y − α − Xβ) / σ                             (standardised, pooled)
    z   = (s − γ*_s) / √δ*_s                            (ComBat-adjusted: no site)
    y_t = σ · (√δ̂_t · z + γ̂_t) + α + Xβ                 (as if imaged at site t)

i.e. y_t = α + Xβ + σ·(γ̂_t + (s − γ*_s)·√(δ̂_t / δ*_s)). The source site's effect is the shrunk one
(γ*, δ*), the target's is its own images' (γ̂_t, δ̂_t), unshrunk, as reference-batch ComBat leaves the
reference batch unshrunk (γ*_ref = 0, δ*_ref = 1 there). Images of the target site itself come back
unchanged (s = t), and the other sites take on the mean and variance the target's own images have at
every voxel, while age and sex effects (Xβ) and each image's own residual are kept. (Mapping to the
shrunk γ*_t instead, as this class did before, left a small target site off its own mean: with 4
target images against 40, the mean |difference| of voxel means was 0.006; now 0.002, against 0.001 for
neuroCombat's reference-batch mode, the rest being the source site's shrinkage.) Against neuroHarmonize's ``ref_batch`` the difference is
only the standardisation: the pooled fit here, the reference's own rows there.

**Design.** A covariate determined by the site (e.g. every woman at one site) is refused at
:meth:`ComBat.fit` with its name: least squares would otherwise split the site effect between β and γ
silently (measured: a 0.10 site gap made 0.30 by "harmonising"). A covariate with one value in every
training image (e.g. only men) has no estimable effect: it is left out of the design (β = 0), and
:meth:`ComBat.transform` refuses an image with another value (that effect was never estimated).

**Mask.** Voxels outside the brain are left as they are (zero-variance background would break the
variance estimates). Default: voxels whose mean over the training images exceeds 0.05
(:data:`MASK_THRESHOLD`); or pass a boolean array shaped like one image's spatial grid.

>>> combat = ComBat().fit(images, covariates)          # images (N, 1, H, W) in [0, 1]
>>> harmonised = combat.transform(images, covariates, target_site="IXI")

The image and covariate checks shared by the image-harmonisation baselines live here
(:func:`check_images`, :func:`check_harmonisation_inputs`, :func:`fit_site_encoding`,
:func:`site_index`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from neurodiff.base import NotFittedError
from neurodiff.data.covariates import CovariateEncoding, CovariateError

#: Default brain mask: voxels whose mean intensity over the training images exceeds this.
MASK_THRESHOLD = 0.05
#: Convergence tolerance (largest relative change) and iteration cap of the parametric EB solution.
EB_TOLERANCE = 1e-4
EB_MAX_ITER = 1000
_TINY = 1e-12
_NONPARAMETRIC_CHUNK = 2**22  # voxel pairs per block of the non-parametric prior


# ---------------------------------------------------------------- input checks (shared by the baselines)


def check_images(images: Any, *, spatial_dims: tuple[int, ...] = (2, 3), shape: tuple[int, ...] | None = None,
                 offset: int = 0) -> np.ndarray:
    """Images as a float64 array (N, 1, *spatial), finite, with intensities in [0, 1]; clear errors otherwise.

    `shape` is the (1, *spatial) shape the model was fitted on, when there is one. An error names the
    first bad image by its position plus `offset` (for a chunk of a larger set).
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim - 2 not in spatial_dims or x.shape[1] != 1:
        wanted = " or ".join(f"(N, 1{', D' if d == 3 else ''}, H, W)" for d in spatial_dims)
        raise ValueError(f"images must be shaped {wanted}, got {x.shape}")
    if shape is not None and x.shape[1:] != tuple(shape):
        raise ValueError(f"images are {x.shape[1:]}, the model was fitted on {tuple(shape)}")
    if len(x) and not np.isfinite(x).all():
        first = offset + int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
        raise ValueError(f"images contain NaN or infinite values (first: image {first}, counting from 0)")
    if len(x) and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
        flat = x.reshape(len(x), -1)
        first = offset + int(np.flatnonzero((flat.min(axis=1) < -1e-6) | (flat.max(axis=1) > 1 + 1e-6))[0])
        raise ValueError(f"image intensities must lie in [0, 1] (found {x.min():.3g} to {x.max():.3g}; first "
                         f"outside: image {first}, counting from 0)")
    return x


def check_harmonisation_inputs(images: Any, covariates: Any, **image_checks: Any) -> tuple[np.ndarray, pd.DataFrame]:
    """Check images (see :func:`check_images`) and a covariate frame with one row per image."""
    x = check_images(images, **image_checks)
    if not isinstance(covariates, pd.DataFrame):
        raise TypeError(f"covariates must be a pandas DataFrame (one row per image), got {type(covariates).__name__}")
    if len(covariates) != len(x):
        raise ValueError(f"{len(x)} images but {len(covariates)} covariate rows; give one row per image")
    return x, covariates.reset_index(drop=True)


def fit_site_encoding(covariates: pd.DataFrame) -> CovariateEncoding:
    """Encoding of age (standardised), sex (0/1) and site (one-hot); needs at least two sites."""
    encoding = CovariateEncoding.fit(covariates, continuous=("age",), binary=("sex",), categorical=("site",))
    sites = encoding.categories("site")
    if len(sites) < 2:
        raise ValueError(f"harmonisation needs images from at least two sites; column 'site' has only {sites}")
    return encoding


def site_index(encoding: CovariateEncoding, site: Any) -> int:
    """Index of `site` among the encoding's sites; ValueError naming it and listing the known ones."""
    sites = encoding.categories("site")
    try:  # the site alone: a made-up row of other covariates would be checked too (an age of 0 warns)
        return int(encoding.category_indices(pd.DataFrame({"site": [site]}), "site")[0])
    except CovariateError:
        raise ValueError(f"target site {site!r} was not seen in training; known sites: "
                         f"{', '.join(map(repr, sites))}") from None


def split_design(encoding: CovariateEncoding, covariates: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(covariates (n, 2) = [standardised age, sex], site index (n,)) from the encoding."""
    encoded = encoding.transform(covariates).astype(np.float64)
    n_sites = len(encoding.categories("site"))
    return encoded[:, :-n_sites], encoded[:, -n_sites:].argmax(axis=1)


# ---------------------------------------------------------------- ComBat estimates (numpy)


def location_scale(y: np.ndarray, sites: np.ndarray, n_sites: int, cov: np.ndarray) -> dict[str, np.ndarray]:
    """Steps 1–3 of the module docstring: α (p,), β (q, p), σ² (p,), γ̂ and δ̂ (k, p)."""
    onehot = np.eye(n_sites)[sites]
    coef = np.linalg.lstsq(np.hstack([onehot, cov]), y, rcond=None)[0]  # full rank: see check_design
    counts = onehot.sum(axis=0)
    alpha = (counts / len(y)) @ coef[:n_sites]
    beta = coef[n_sites:]
    residual = y - onehot @ coef[:n_sites] - cov @ beta
    var_pooled = np.maximum((residual**2).mean(axis=0), _TINY)
    s = (y - alpha - cov @ beta) / np.sqrt(var_pooled)
    gamma = np.stack([s[sites == i].mean(axis=0) for i in range(n_sites)])
    delta = np.stack([np.maximum(s[sites == i].var(axis=0, ddof=1), _TINY) for i in range(n_sites)])
    return {"alpha": alpha, "beta": beta, "var_pooled": var_pooled, "gamma_hat": gamma, "delta_hat": delta}


def check_design(sites: np.ndarray, n_sites: int, cov: np.ndarray, names: list[str]) -> list[int]:
    """The covariates (columns of `cov`) with one value in every image, whose effect cannot be estimated and
    which the design leaves out; a ValueError naming any other covariate that the site (with the
    covariates before it) determines, whose effect cannot be told from the site's."""
    onehot = np.eye(n_sites)[sites]
    constant = [j for j in range(cov.shape[1]) if np.ptp(cov[:, j]) == 0]
    kept = [j for j in range(cov.shape[1]) if j not in constant]
    for k, j in enumerate(kept):
        if np.linalg.matrix_rank(np.hstack([onehot, cov[:, kept[: k + 1]]])) < n_sites + k + 1:
            raise ValueError(f"ComBat: covariate {names[j]!r} is determined by the site (together with the "
                             "covariates before it), so its effect cannot be told from the site effect; ComBat "
                             "needs each site to have a mix of its values")
    return constant


def inverse_gamma_prior(delta_hat: np.ndarray) -> tuple[float, float]:
    """Method-of-moments (a, b) of an inverse-gamma prior on one site's δ̂ over voxels (neuroCombat)."""
    m, s2 = float(delta_hat.mean()), float(delta_hat.var(ddof=1))
    s2 = max(s2, _TINY)
    return (2 * s2 + m**2) / s2, (m * s2 + m**3) / s2


def parametric_eb(gamma_hat: np.ndarray, delta_hat: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One site's (γ*, δ*) by neuroCombat's ``it_sol`` fixed point; also the iterations used.

    Σ_k (s_k − γ)² over the site's n images is (n − 1)·δ̂ + n·(γ̂ − γ)², so only γ̂ and δ̂ are needed.
    """
    g_bar, t2 = float(gamma_hat.mean()), max(float(gamma_hat.var(ddof=1)), _TINY)
    a, b = inverse_gamma_prior(delta_hat)
    g_old, d_old = gamma_hat.copy(), delta_hat.copy()
    for iteration in range(1, EB_MAX_ITER + 1):
        g_new = (t2 * n * gamma_hat + d_old * g_bar) / (t2 * n + d_old)
        sum2 = (n - 1) * delta_hat + n * (gamma_hat - g_new) ** 2
        d_new = (0.5 * sum2 + b) / (n / 2.0 + a - 1.0)
        change = max(_relative_change(g_new, g_old), _relative_change(d_new, d_old))
        g_old, d_old = g_new, d_new
        if change < EB_TOLERANCE:
            break
    return g_old, d_old, iteration


def _relative_change(new: np.ndarray, old: np.ndarray) -> float:
    return float((np.abs(new - old) / np.maximum(np.abs(old), _TINY)).max())


def nonparametric_eb(gamma_hat: np.ndarray, delta_hat: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """One site's (γ*, δ*) by neuroCombat's ``int_eprior``: a discrete prior over the other voxels.

    For voxel v, candidate j ≠ v has log-likelihood −n/2·log(2π δ̂_j) − Σ_k (s_kv − γ̂_j)² / (2 δ̂_j)
    with Σ_k (s_kv − γ̂_j)² = (n − 1)·δ̂_v + n·(γ̂_v − γ̂_j)²; γ*_v and δ*_v are the likelihood-weighted
    means of γ̂_j and δ̂_j (softmax in log space). Costs O(p²) per site, in blocks.
    """
    p = len(gamma_hat)
    gamma_star, delta_star = np.empty(p), np.empty(p)
    rows = max(1, _NONPARAMETRIC_CHUNK // p)
    for start in range(0, p, rows):
        v = np.arange(start, min(p, start + rows))
        sum2 = (n - 1) * delta_hat[v, None] + n * (gamma_hat[v, None] - gamma_hat[None, :]) ** 2
        log_lh = -0.5 * n * np.log(2 * np.pi * delta_hat)[None, :] - sum2 / (2 * delta_hat[None, :])
        log_lh[np.arange(len(v)), v] = -np.inf  # a voxel is not its own prior
        weights = np.exp(log_lh - log_lh.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        gamma_star[v], delta_star[v] = weights @ gamma_hat, weights @ delta_hat
    return gamma_star, delta_star


def default_mask(images: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """Voxels whose mean over `images` (N, 1, ...) exceeds `threshold`: a boolean array of one image's grid."""
    return images.mean(axis=(0, 1)) > threshold


# ---------------------------------------------------------------- the estimator


class ComBat:
    """Voxel-wise ComBat harmonisation to a target site chosen at transform (see module docstring).

    Parameters
    ----------
    mask:
        Boolean array of one image's spatial shape (H, W) marking the voxels to harmonise; None: voxels
        whose training mean exceeds :data:`MASK_THRESHOLD` (0.05).
    parametric:
        Parametric empirical-Bayes priors (neuroCombat's default) or the non-parametric ones.
    eb:
        Empirical-Bayes shrinkage of the site effects; False keeps the per-site estimates γ̂, δ̂.

    Attributes
    ----------
    mask_:
        The boolean mask used (H, W); ``n_features_`` voxels inside.
    encoding_:
        :class:`~neurodiff.data.covariates.CovariateEncoding` of age, sex and site; ``sites_`` the sites.
    alpha_, beta_, var_pooled_:
        Grand mean (p,), age and sex coefficients (2, p), pooled residual variance (p,).
    gamma_hat_, delta_hat_, gamma_star_, delta_star_:
        Per-site additive and multiplicative effects in standardised units (k, p), before and after
        empirical Bayes (equal when ``eb=False``).
    eb_iterations_:
        Iterations of the parametric solution per site (None otherwise).
    """

    def __init__(self, mask: Any = None, parametric: bool = True, eb: bool = True):
        self.mask = mask
        self.parametric = parametric
        self.eb = eb

    def __repr__(self) -> str:
        mask = None if self.mask is None else f"<{np.shape(self.mask)} mask>"
        return f"ComBat(mask={mask}, parametric={self.parametric}, eb={self.eb})"

    # ------------------------------------------------------------------ fit
    def fit(self, images: Any, covariates: pd.DataFrame) -> ComBat:
        """Estimate the design coefficients and every site's (shrunk) location and scale effects."""
        x, covariates = check_harmonisation_inputs(images, covariates)
        self.encoding_ = fit_site_encoding(covariates)
        self.sites_ = list(self.encoding_.categories("site"))
        cov, sites = split_design(self.encoding_, covariates)
        _check_site_sizes(sites, self.sites_)
        names = self.encoding_.columns[: cov.shape[1]]
        constant = check_design(sites, len(self.sites_), cov, names)
        # left out of the design (β = 0); transform refuses another value
        self.constant_covariates_ = {names[j]: float(cov[0, j]) for j in constant}
        cov = self._without_constant(cov)
        self.image_shape_ = x.shape[1:]
        self.mask_ = self._resolve_mask(x)
        y = x[:, 0][:, self.mask_]
        self.n_features_ = y.shape[1]
        estimates = location_scale(y, sites, len(self.sites_), cov)
        self.alpha_, self.beta_ = estimates["alpha"], estimates["beta"]
        self.var_pooled_ = estimates["var_pooled"]
        self.gamma_hat_, self.delta_hat_ = estimates["gamma_hat"], estimates["delta_hat"]
        self.n_per_site_ = np.bincount(sites, minlength=len(self.sites_))
        self._shrink()
        return self

    def _resolve_mask(self, x: np.ndarray) -> np.ndarray:
        spatial = x.shape[2:]
        if self.mask is None:
            mask = default_mask(x)
        else:
            mask = np.asarray(self.mask)
            if mask.shape != spatial:
                raise ValueError(f"mask has shape {mask.shape}, but the images are {spatial}")
            if mask.dtype != bool:
                raise ValueError(f"mask must be a boolean array, got dtype {mask.dtype}")
        if mask.sum() < 2:
            source = "the mask given" if self.mask is not None else f"the default mask (mean > {MASK_THRESHOLD})"
            raise ValueError(f"{source} holds {int(mask.sum())} voxels; ComBat's priors need at least 2")
        return mask

    def _shrink(self) -> None:
        """Fill gamma_star_, delta_star_ (and eb_iterations_) from the per-site estimates."""
        self.eb_iterations_ = None
        if not self.eb:
            self.gamma_star_, self.delta_star_ = self.gamma_hat_.copy(), self.delta_hat_.copy()
            return
        gammas, deltas, iterations = [], [], []
        for g, d, n in zip(self.gamma_hat_, self.delta_hat_, self.n_per_site_):
            if self.parametric:
                g_star, d_star, used = parametric_eb(g, d, int(n))
                iterations.append(used)
            else:
                g_star, d_star = nonparametric_eb(g, d, int(n))
            gammas.append(g_star)
            deltas.append(d_star)
        self.gamma_star_, self.delta_star_ = np.stack(gammas), np.stack(deltas)
        self.eb_iterations_ = iterations if self.parametric else None

    # ------------------------------------------------------------------ transform
    def transform(self, images: Any, covariates: pd.DataFrame, target_site: str) -> np.ndarray:
        """Map every image from its own site to `target_site`: float32, same shape, values in [0, 1]."""
        if not hasattr(self, "gamma_star_"):
            raise NotFittedError("this ComBat is not fitted yet: call fit() first")
        x, covariates = check_harmonisation_inputs(images, covariates, shape=self.image_shape_)
        target = site_index(self.encoding_, target_site)
        cov, sites = split_design(self.encoding_, covariates)
        cov = self._without_constant(cov, covariates)
        y = x[:, 0][:, self.mask_]
        out = x.copy()
        out[:, 0][:, self.mask_] = self._to_site(y, cov, sites, target)
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def _without_constant(self, cov: np.ndarray, covariates: pd.DataFrame | None = None) -> np.ndarray:
        """`cov` with the covariates constant at fit zeroed; at transform (`covariates` given), an image
        with another value of one is a ValueError naming it."""
        constant = getattr(self, "constant_covariates_", {})  # none in models fitted before it existed
        names = self.encoding_.columns[: cov.shape[1]]
        cov = cov.copy()
        for j, name in enumerate(names):
            if name not in constant:
                continue
            if covariates is not None and not np.allclose(cov[:, j], constant[name]):
                first = int(np.flatnonzero(~np.isclose(cov[:, j], constant[name]))[0])
                raise ValueError(f"ComBat was fitted on images that all had the same {name!r}, so its effect was "
                                 f"never estimated; image {first} has {name!r} = {covariates[name].iloc[first]!r}")
            cov[:, j] = 0.0
        return cov

    def _to_site(self, y: np.ndarray, cov: np.ndarray, sites: np.ndarray, target: int) -> np.ndarray:
        """y_t = α + Xβ + σ·(γ̂_t + (s − γ*_s)·√(δ̂_t / δ*_s)) for in-mask voxels y (n, p)."""
        mean = self.alpha_ + cov @ self.beta_
        sd = np.sqrt(self.var_pooled_)
        s = (y - mean) / sd
        ratio = np.sqrt(self.delta_hat_[target] / self.delta_star_[sites])
        harmonised = self.gamma_hat_[target] + (s - self.gamma_star_[sites]) * ratio
        same = sites == target
        harmonised[same] = s[same]  # the target's own images, exactly
        return harmonised * sd + mean

    @property
    def summary(self) -> pd.DataFrame:
        """Per site: images, and the mean over voxels of γ̂, γ*, δ̂, δ* (standardised units)."""
        if not hasattr(self, "gamma_star_"):
            raise NotFittedError("this ComBat is not fitted yet: call fit() first")
        return pd.DataFrame({
            "images": self.n_per_site_,
            "gamma_hat": self.gamma_hat_.mean(axis=1), "gamma_star": self.gamma_star_.mean(axis=1),
            "delta_hat": self.delta_hat_.mean(axis=1), "delta_star": self.delta_star_.mean(axis=1),
        }, index=pd.Index(self.sites_, name="site"))


def _check_site_sizes(sites: np.ndarray, names: list[str]) -> None:
    counts = np.bincount(sites, minlength=len(names))
    small = [f"{name!r} ({count})" for name, count in zip(names, counts) if count < 2]
    if small:
        raise ValueError(f"ComBat needs at least 2 images per site to estimate its variance; too few in {', '.join(small)}")
