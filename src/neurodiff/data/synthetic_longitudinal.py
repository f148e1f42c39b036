"""Embedded UK-Biobank-like longitudinal table of regional brain features (SECONDGRAM's data).

Long format (ARCHITECTURE.md "Longitudinal table"): one row per subject and visit with
``subject_id, visit`` (1 = first, 2 = follow-up), ``years_since_first`` (0 at visit 1), the 14 label
columns of :data:`LABEL_COLUMNS` and the feature columns (:func:`feature_columns`). The default is the
UK Biobank size (41,706 subjects, 4,997 with a second visit, 769 features). Full description with
measured statistics: ``docs/synthetic-longitudinal.md``.

Generative model (every planted number lives in a constant below; :func:`planted_truth` exports them):

* **Subjects.** sex ~ Bernoulli(0.48) (1 = male); first-visit age ~ N(63.5, 7.5²) truncated to
  [45, 82]; Townsend-like deprivation = -6.3 + Gamma(2.7, 1.7) capped at 11 (mean ≈ -1.7);
  ``pgs_dementia``, ``pgs_parkinsonism`` ~ N(0, 1). Latent, not written: head size
  h = 1.2·(sex - 0.48) + 0.8·N(0, 1); brain reserve g ~ N(0, 1); atrophy-rate trait
  ξ = -0.3·g + 0.95·N(0, 1).
* **Diagnoses** (0/1, lifetime): logistic in age, sex, Townsend and the PGSs (:data:`RISK_MODEL`),
  intercepts solved so the cohort prevalence equals :data:`DEFAULT_PREVALENCE` (stroke 2 %,
  parkinsonism 0.3 %, dementia 0.6 %, MS 0.4 %, epilepsy 0.8 %, migraine 5 %, sleep disorder 4 %,
  other movement disorder 1 %, died 2.5 %). Death also depends on the diagnoses, on g (-0.3) and ξ (+0.4).
* **Who returns** (exactly ``n_paired`` subjects): weighted sampling without replacement, log-weights
  :data:`RETURN_LOG_WEIGHTS` (those who died, with dementia, older or deprived return less).
  Follow-up = 1 + 4·Beta(2, 4.5) years (1–5, mean ≈ 2.2).
* **Features** (log scale): log x = log(median) + σ·(z + sex effect + disease shifts) + r·A(age), where
  z is a unit-variance factor model (head size, brain reserve, measure type, one of 15 systems, a region
  factor shared by both hemispheres and all measures of the region, unique noise; loadings in
  :data:`LOADINGS`), r the signed annual log-change at age 63.5 (tissue < 0, CSF spaces and white-matter
  hypointensities > 0) and A(a) = (exp(0.045·(a - 63.5)) - 1)/0.045 an accelerating age curve, so the
  cross-sectional age effect and the within-subject change agree. Cortical volume is not drawn on its
  own: volume = 1.1 · area · thickness · exp(0.03·u). Units: mm³, mm², mm.
* **Change** between visits: Δlog x = r · m · (A(age₂) - A(age₁)) with the subject's multiplier
  m = (1 + Σ disease extra rates) · exp(0.35·ξ_system - 0.35²/2) · exp(0.15·ζ - 0.15²/2),
  ξ_system = 0.6·ξ + 0.8·N(0, 1) per system, ζ ~ N(0, 1) per feature.
* **Disease effects** (:data:`EFFECTS`; baseline shift in SD of the feature towards atrophy, i.e. larger
  for CSF / lesion features, and extra atrophy rate as a fraction of the normal rate):
  parkinsonism: SNc and SNr 0.5 SD, +25 %; putamen, pallidum, GPe, GPi 0.2 SD, +20 % (calibrated so that the
  expected SNc change over the follow-up with vs without parkinsonism is close to the paper's real
  -2.36 vs -1.76 mm³: -2.41 vs -1.73 over 200 seeds, benchmarks/results/synth_longitudinal_properties;
  one table has few cases, so its own means are noisy; parkinsonism cases are also older). dementia: medial temporal system 0.7 SD, +150 %; temporal
  cortex 0.3 SD, +80 %; CSF spaces 0.4 SD, +80 %; every other tissue feature 0.1 SD, +30 %.
  stroke: WM hypointensities 0.5 SD, +50 %; CSF spaces 0.2 SD, +30 %; all 0.1 SD, +20 %.
  MS: WM hypointensities 1.5 SD, +50 %; corpus callosum 0.8 SD, +100 %; diencephalon 0.5 SD, +100 %;
  cortical thickness 0.2 SD, +30 %.
  epilepsy: left hippocampus and subfields 0.5 SD, right 0.2 SD, diencephalon 0.2 SD (no rate effect).
  migraine: WM hypointensities 0.2 SD. other movement disorder: cerebellum 0.3 SD, +30 %; caudate and
  putamen 0.3 SD. sleep disorder and died: none (negative controls). pgs_dementia: medial temporal
  0.05 SD per SD; pgs_parkinsonism: SNc/SNr 0.05 SD per SD. Male sex (beyond head size): thickness
  -0.1 SD, CSF spaces +0.25 SD.
* **Measurement** at each visit: log x_obs = log x + q·η + s·ε with ε ~ N(0, 1) per cell (s per feature:
  ≈ 0.015–0.2, larger for small structures), η ~ N(0, 1) a per-scan quality factor (q = -0.015 for
  thickness, -0.01 for cortical volume). The resulting test-retest correlation between visits is
  0.64–0.99 per feature (median 0.93; thickness 0.87, areas and volumes 0.95: the default table, seed 0). Values are
  rounded (thickness 0.001 mm, others 0.1) and a fraction ``missing_fraction`` of feature cells
  (default 0.5 %) is set to NaN completely at random; ids, time and labels are never missing.

Determinism: a seed gives the same table on a given installation (NumPy does not promise the same
streams across its versions); a table with fewer features is exactly a column subset of the
769-feature table drawn with the same seed and sizes.

:mod:`neurodiff.data.synthetic_longitudinal_expectation` (the expected change of a feature group with vs
without a diagnosis, by Monte Carlo) repeats this module's private steps (``_model``,
``_subjects_and_pairs``, ``_simulate_chunk``); change them together, its test guards it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from neurodiff.atomic import atomic_path
from neurodiff.data.longitudinal_catalogue import (
    MIN_FEATURES,
    _SYSTEMS,
    _catalogue,
    _selected,
    _selector_mask,
    feature_catalogue,
)

ID_COLUMNS = ("subject_id", "visit")
TIME_COLUMN = "years_since_first"
DIAGNOSIS_COLUMNS = (
    "stroke", "parkinsonism", "dementia", "multiple_sclerosis", "epilepsy", "migraine",
    "sleep_disorder", "other_movement_disorder",
)
LABEL_COLUMNS = ("sex", "age", "townsend", "pgs_dementia", "pgs_parkinsonism", *DIAGNOSIS_COLUMNS, "died")
NON_FEATURE_COLUMNS = (*ID_COLUMNS, TIME_COLUMN, *LABEL_COLUMNS)
TABLE_SUFFIXES = (".csv", ".parquet")

DEFAULT_PREVALENCE = {
    "stroke": 0.02, "parkinsonism": 0.003, "dementia": 0.006, "multiple_sclerosis": 0.004,
    "epilepsy": 0.008, "migraine": 0.05, "sleep_disorder": 0.04, "other_movement_disorder": 0.01,
    "died": 0.025,
}
#: The prevalences the imputation benchmark's embedded cohort (`neurodiff impute benchmark` without
#: --data) raises for its downstream task and case study: at the defaults the 120 held-out subjects of
#: a --quick seed held no parkinsonism case and 0–1 strokes (seeds 0–4, counted by hand), and the
#: AUROCs and the case study came out empty; at 15 %: 9–18 and 10–22.
EVALUATION_PREVALENCE = {"parkinsonism": 0.15, "stroke": 0.15}
# log-odds per unit: age per 7.5 years from 63.5, sex = male, townsend per index point, PGS per SD;
# brain_reserve (g) and atrophy_rate (ξ) are latent per-subject traits (not in the table).
RISK_MODEL = {
    "stroke": {"age": 0.6, "sex": 0.4, "townsend": 0.08},
    "parkinsonism": {"age": 0.6, "sex": 0.5, "pgs_parkinsonism": 0.5},
    "dementia": {"age": 1.2, "pgs_dementia": 0.6, "townsend": 0.05},
    "multiple_sclerosis": {"age": -0.2, "sex": -0.9},
    "epilepsy": {"age": 0.1, "townsend": 0.08},
    "migraine": {"age": -0.4, "sex": -1.0},
    "sleep_disorder": {"age": 0.2, "sex": 0.5, "townsend": 0.05},
    "other_movement_disorder": {"age": 0.5},
    "died": {"age": 1.0, "sex": 0.4, "townsend": 0.1, "stroke": 1.0, "dementia": 1.5, "parkinsonism": 1.0,
             "multiple_sclerosis": 0.5, "brain_reserve": -0.3, "atrophy_rate": 0.4},
}
RETURN_LOG_WEIGHTS = {"died": -0.9, "dementia": -0.7, "stroke": -0.2, "parkinsonism": -0.2,
                      "multiple_sclerosis": -0.2, "age": -0.15, "townsend": -0.05}
REFERENCE_AGE, AGE_SD, AGE_RANGE = 63.5, 7.5, (45.0, 82.0)
RATE_ACCELERATION = 0.045  # per year: the atrophy rate doubles every ~15 years
FOLLOWUP_RANGE, FOLLOWUP_BETA = (1.0, 5.0), (2.0, 4.5)
RATE_SYSTEM_SD, RATE_FEATURE_SD, RATE_TRAIT_SHARE = 0.35, 0.15, 0.6
QC_LOADING = {"thick": -0.015, "vol_cortical": -0.01}
SEX_EFFECT = {"thick": -0.10, "csf": 0.25}  # SD units, male vs female, beyond head size
# loadings of z on (head size, brain reserve, measure type, system, region, unique), normalised to var 1
LOADINGS = {
    "area": (0.60, 0.25, 0.30, 0.30, 0.45, 0.40),
    "thick": (0.05, 0.30, 0.55, 0.35, 0.40, 0.45),
    "tissue": (0.50, 0.40, 0.25, 0.40, 0.45, 0.40),
    "csf": (0.30, -0.40, 0.25, 0.60, 0.40, 0.35),
    "etiv": (1.0, 0.0, 0.0, 0.0, 0.0, 0.0),
}
_EXPAND = ("csf",)  # kinds that grow with age and disease
# (label, target description, selector, baseline shift in SD towards atrophy, extra rate fraction)
EFFECTS = (
    ("parkinsonism", "substantia nigra (SNc, SNr)", {"regions": ("snc", "snr")}, 0.5, 0.25),
    ("parkinsonism", "putamen, pallidum, GPe, GPi", {"regions": ("putamen", "pallidum", "gpe", "gpi")}, 0.2, 0.2),
    ("dementia", "medial temporal system", {"systems": ("medial_temporal",)}, 0.7, 1.5),
    ("dementia", "temporal cortex", {"systems": ("temporal",)}, 0.3, 0.8),
    ("dementia", "CSF spaces", {"systems": ("ventricles",)}, 0.4, 0.8),
    ("dementia", "all other tissue", {"exclude_systems": ("medial_temporal", "temporal", "ventricles",
                                                          "white_matter_lesions")}, 0.1, 0.3),
    ("stroke", "WM hypointensities", {"regions": ("wm_hypointensities",)}, 0.5, 0.5),
    ("stroke", "CSF spaces", {"systems": ("ventricles",)}, 0.2, 0.3),
    ("stroke", "all other tissue", {"exclude_systems": ("ventricles", "white_matter_lesions")}, 0.1, 0.2),
    ("multiple_sclerosis", "WM hypointensities", {"regions": ("wm_hypointensities",)}, 1.5, 0.5),
    ("multiple_sclerosis", "corpus callosum", {"prefix": "cc_"}, 0.8, 1.0),
    ("multiple_sclerosis", "diencephalon (thalamus, nuclei)", {"systems": ("diencephalon",)}, 0.5, 1.0),
    ("multiple_sclerosis", "cortical thickness", {"measure": "thick"}, 0.2, 0.3),
    ("epilepsy", "left hippocampus and subfields", {"prefix": "hp_", "regions": ("hippocampus",), "hemi": "lh"},
     0.5, 0.0),
    ("epilepsy", "right hippocampus and subfields", {"prefix": "hp_", "regions": ("hippocampus",), "hemi": "rh"},
     0.2, 0.0),
    ("epilepsy", "diencephalon", {"systems": ("diencephalon",)}, 0.2, 0.0),
    ("migraine", "WM hypointensities", {"regions": ("wm_hypointensities",)}, 0.2, 0.0),
    ("other_movement_disorder", "cerebellum", {"systems": ("cerebellum",)}, 0.3, 0.3),
    ("other_movement_disorder", "caudate, putamen", {"regions": ("caudate", "putamen")}, 0.3, 0.0),
    ("pgs_dementia", "medial temporal system (per SD)", {"systems": ("medial_temporal",)}, 0.05, 0.0),
    ("pgs_parkinsonism", "substantia nigra (per SD)", {"regions": ("snc", "snr")}, 0.05, 0.0),
)
_EFFECT_SOURCES = (*DIAGNOSIS_COLUMNS, "pgs_dementia", "pgs_parkinsonism")

# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LongitudinalConfig:
    """Sizes, seed and knobs of the synthetic longitudinal table (defaults: the UK Biobank sizes)."""

    n_subjects: int = 41_706
    n_paired: int = 4_997
    n_features: int = 769
    seed: int = 0
    missing_fraction: float = 0.005
    prevalence: Mapping[str, float] = field(default_factory=dict)  # overrides of DEFAULT_PREVALENCE

    @classmethod
    def paper(cls, **changes: Any) -> LongitudinalConfig:
        """UK Biobank sizes: 41,706 subjects, 4,997 with a follow-up, 769 features."""
        return cls(**changes)

    @classmethod
    def quick(cls, **changes: Any) -> LongitudinalConfig:
        """CPU-minutes size: 3,000 subjects, 600 with a follow-up, 128 features."""
        return cls(**{"n_subjects": 3_000, "n_paired": 600, "n_features": 128, **changes})

    @property
    def prevalences(self) -> dict[str, float]:
        return {**DEFAULT_PREVALENCE, **self.prevalence}

    def validate(self) -> LongitudinalConfig:
        """Raise ValueError naming the bad value; return self when all is well."""
        for name in ("n_subjects", "n_paired", "n_features", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.n_subjects < 1:
            raise ValueError(f"n_subjects (--subjects) must be at least 1, got {self.n_subjects}")
        if self.n_paired < 1:
            raise ValueError(f"n_paired (--paired) must be at least 1, got {self.n_paired}")
        if self.n_paired > self.n_subjects:
            raise ValueError(f"n_paired (--paired) = {self.n_paired} is more than n_subjects (--subjects) = "
                             f"{self.n_subjects}: a follow-up needs a first visit")
        n_max = len(_catalogue())
        if not MIN_FEATURES <= self.n_features <= n_max:
            raise ValueError(f"n_features (--features) must be between {MIN_FEATURES} and {n_max}, "
                             f"got {self.n_features}")
        if self.seed < 0:
            raise ValueError(f"seed (--seed) must be 0 or positive, got {self.seed}")
        if not 0.0 <= float(self.missing_fraction) < 0.5:
            raise ValueError(f"missing_fraction (--missing) must be in [0, 0.5), got {self.missing_fraction}")
        for label, p in self.prevalence.items():
            if label not in DEFAULT_PREVALENCE:
                raise ValueError(f"unknown prevalence label {label!r}; known: {', '.join(DEFAULT_PREVALENCE)}")
            if not 0.0 < float(p) < 1.0:
                raise ValueError(f"prevalence of {label!r} must be in (0, 1), got {p}")
        return self


# ---------------------------------------------------------------------------------------------------
def _age_curve(age: np.ndarray) -> np.ndarray:
    """A(a): cumulative years of change at the reference rate, accelerating with age (0 at 63.5)."""
    return np.expm1(RATE_ACCELERATION * (age - REFERENCE_AGE)) / RATE_ACCELERATION


def _truncated_normal(rng: np.random.Generator, n: int, mean: float, sd: float,
                      low: float, high: float) -> np.ndarray:
    out = rng.normal(mean, sd, n)
    bad = (out < low) | (out > high)
    while bad.any():
        out[bad] = rng.normal(mean, sd, int(bad.sum()))
        bad = (out < low) | (out > high)
    return out


def _calibrated_draw(rng: np.random.Generator, linear: np.ndarray, prevalence: float) -> np.ndarray:
    """0/1 draws whose mean probability over the cohort equals `prevalence` (intercept by bisection)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.mean(1.0 / (1.0 + np.exp(-(mid + linear)))) < prevalence:
            lo = mid
        else:
            hi = mid
    p = 1.0 / (1.0 + np.exp(-(0.5 * (lo + hi) + linear)))
    return (rng.random(len(linear)) < p).astype(np.int64)


def _draw_subjects(config: LongitudinalConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Subject-level labels and latent traits (head size, brain reserve, atrophy-rate trait)."""
    n = config.n_subjects
    s: dict[str, np.ndarray] = {"sex": (rng.random(n) < 0.48).astype(np.int64)}
    s["age"] = np.round(_truncated_normal(rng, n, REFERENCE_AGE, AGE_SD, *AGE_RANGE), 2)
    s["townsend"] = np.round(np.minimum(-6.3 + rng.gamma(2.7, 1.7, n), 11.0), 2)
    s["pgs_dementia"] = np.round(rng.standard_normal(n), 3)
    s["pgs_parkinsonism"] = np.round(rng.standard_normal(n), 3)
    s["head_size"] = 1.2 * (s["sex"] - 0.48) + 0.8 * rng.standard_normal(n)
    s["brain_reserve"] = rng.standard_normal(n)
    s["atrophy_rate"] = -0.3 * s["brain_reserve"] + np.sqrt(1 - 0.09) * rng.standard_normal(n)
    for label in (*DIAGNOSIS_COLUMNS, "died"):
        linear = np.zeros(n)
        for cov, beta in RISK_MODEL[label].items():
            x = (s["age"] - REFERENCE_AGE) / AGE_SD if cov == "age" else s[cov]
            linear += beta * x
        s[label] = _calibrated_draw(rng, linear, config.prevalences[label])
    s["followup"] = FOLLOWUP_RANGE[0] + (FOLLOWUP_RANGE[1] - FOLLOWUP_RANGE[0]) * rng.beta(*FOLLOWUP_BETA, n)
    s["followup"] = np.round(s["followup"], 2)
    return s


def _choose_paired(s: dict[str, np.ndarray], k: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly k subjects, drawn without replacement with weights exp(RETURN_LOG_WEIGHTS · x)."""
    logw = np.zeros(len(s["age"]))
    for cov, beta in RETURN_LOG_WEIGHTS.items():
        logw += beta * ((s["age"] - REFERENCE_AGE) / AGE_SD if cov == "age" else s[cov])
    keys = logw + rng.gumbel(size=len(logw))
    paired = np.zeros(len(logw), bool)
    paired[np.argpartition(-keys, k - 1)[:k]] = True
    return paired


def generate_subjects(config: LongitudinalConfig) -> pd.DataFrame:
    """Subject-level table (cheap, no features): id, ``paired``, ``followup_years`` (NaN if unpaired)
    and the labels at the first visit. The same subjects as :func:`generate_longitudinal`."""
    s, paired = _subjects_and_pairs(config.validate())
    frame = pd.DataFrame({"subject_id": _subject_ids(config.n_subjects), "paired": paired.astype(np.int64),
                          "followup_years": np.where(paired, s["followup"], np.nan)})
    for col in LABEL_COLUMNS:
        frame[col] = s[col]
    return frame


def _subjects_and_pairs(config: LongitudinalConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    subj_ss, pair_ss, _ = np.random.SeedSequence(config.seed).spawn(3)
    s = _draw_subjects(config, np.random.default_rng(subj_ss))
    return s, _choose_paired(s, config.n_paired, np.random.default_rng(pair_ss))


def _subject_ids(n: int) -> list[str]:
    return [f"sub-{i:06d}" for i in range(1, n + 1)]


# ---------------------------------------------------------------------------------------------------
@dataclass
class _Model:
    """Per-feature constants of the full catalogue as arrays (length D) and matrices."""

    log_median: np.ndarray
    sigma: np.ndarray
    rate: np.ndarray
    noise: np.ndarray
    qc: np.ndarray
    sex: np.ndarray
    load_head: np.ndarray
    load_reserve: np.ndarray
    load_unique: np.ndarray
    loadings: np.ndarray  # (types + systems + regions) × D
    system: np.ndarray  # system index per feature
    base_shift: np.ndarray  # effect sources × D, in log units (σ · SD shift · direction)
    extra_rate: np.ndarray  # diagnoses × D
    derived: np.ndarray
    area_of: np.ndarray
    thick_of: np.ndarray
    decimals: np.ndarray


@functools.lru_cache(maxsize=1)
def _model() -> _Model:
    cat = _catalogue()
    d = len(cat)
    kinds = cat["kind"].to_numpy()
    derived = cat["derived"].to_numpy()
    direction = np.where(cat["expanding"].to_numpy(), 1.0, -1.0)
    sigma = cat["sigma_log"].to_numpy(float)
    lo = np.array([LOADINGS.get(k, (0, 0, 0, 0, 0, 1)) for k in kinds], float)
    lo /= np.sqrt((lo**2).sum(axis=1, keepdims=True))
    types = ["area", "thick", "tissue", "csf"]
    regions = sorted(set(cat["region"]))
    loadings = np.zeros((len(types) + len(_SYSTEMS) + len(regions), d))
    cols = np.arange(d)
    type_row = np.array([types.index(k) if k in types else 0 for k in kinds])
    system = np.array([_SYSTEMS.index(s) for s in cat["system"]])
    region_row = np.array([regions.index(r) for r in cat["region"]])
    loadings[type_row, cols] = lo[:, 2]
    loadings[len(types) + system, cols] = lo[:, 3]
    loadings[len(types) + len(_SYSTEMS) + region_row, cols] = lo[:, 4]
    base_shift = np.zeros((len(_EFFECT_SOURCES), d))
    extra_rate = np.zeros((len(DIAGNOSIS_COLUMNS), d))
    for label, _, sel, shift, rate in EFFECTS:
        mask = _selector_mask(cat, sel)
        base_shift[_EFFECT_SOURCES.index(label), mask] += shift * direction[mask] * sigma[mask]
        if rate:
            extra_rate[DIAGNOSIS_COLUMNS.index(label), mask] += rate
    index = {(m, h, r): i for i, (m, h, r) in enumerate(zip(cat["measure"], cat["hemisphere"], cat["region"]))}
    area_of = np.array([index.get(("area", h, r), -1) for h, r in zip(cat["hemisphere"], cat["region"])])
    thick_of = np.array([index.get(("thick", h, r), -1) for h, r in zip(cat["hemisphere"], cat["region"])])
    log_median = np.log(cat["median"].to_numpy(float))
    # a cortical volume's own median is the factor ≈1.1 left after its area and thickness medians
    log_median[derived] -= log_median[area_of[derived]] + log_median[thick_of[derived]]
    return _Model(
        log_median=log_median, sigma=sigma, rate=cat["annual_log_rate"].to_numpy(float),
        noise=cat["noise_sd_log"].to_numpy(float), qc=np.array([QC_LOADING.get(k, 0.0) for k in kinds]),
        sex=np.array([SEX_EFFECT.get(k, 0.0) for k in kinds]) * sigma, load_head=lo[:, 0],
        load_reserve=lo[:, 1], load_unique=lo[:, 5], loadings=loadings, system=system,
        base_shift=base_shift, extra_rate=extra_rate, derived=derived, area_of=area_of, thick_of=thick_of,
        decimals=np.where(cat["measure"].to_numpy() == "thick", 3, 1),
    )


def _add_derived(logx: np.ndarray, m: _Model) -> np.ndarray:
    """Cortical volume = 1.1 · area · thickness · exp(0.03 u): add the true log area and thickness."""
    logx[:, m.derived] += logx[:, m.area_of[m.derived]] + logx[:, m.thick_of[m.derived]]
    return logx


def _observe(rng: np.random.Generator, logx: np.ndarray, m: _Model, missing: float) -> np.ndarray:
    """Measurement at one visit: per-scan quality factor, per-cell noise, rounding, missing cells."""
    n, d = logx.shape
    quality = rng.standard_normal((n, 1))
    obs = np.exp(logx + quality * m.qc + rng.standard_normal((n, d)) * m.noise)
    for decimals in (1, 3):
        cols = m.decimals == decimals
        obs[:, cols] = np.maximum(np.round(obs[:, cols], decimals), 10.0**-decimals)
    obs[rng.random((n, d)) < missing] = np.nan
    return obs


def _simulate_chunk(rng: np.random.Generator, s: dict[str, np.ndarray], idx: np.ndarray, paired: np.ndarray,
                    m: _Model, missing: float) -> tuple[np.ndarray, np.ndarray]:
    """Observed features at visit 1 for subjects `idx` and at visit 2 for those of them that are paired."""
    c, d = len(idx), len(m.sigma)
    sources = np.column_stack([s[k][idx] for k in _EFFECT_SOURCES]).astype(float)
    z = (s["head_size"][idx, None] * m.load_head + s["brain_reserve"][idx, None] * m.load_reserve
         + rng.standard_normal((c, m.loadings.shape[0])) @ m.loadings
         + rng.standard_normal((c, d)) * m.load_unique)
    own = (m.log_median + m.sigma * z + (s["sex"][idx, None] - 0.48) * m.sex + sources @ m.base_shift
           + m.rate * _age_curve(s["age"][idx])[:, None])
    x1 = _observe(rng, _add_derived(own.copy(), m), m, missing)
    p = np.flatnonzero(paired[idx])
    trait = s["atrophy_rate"][idx[p], None]
    system_rate = RATE_TRAIT_SHARE * trait + np.sqrt(1 - RATE_TRAIT_SHARE**2) * rng.standard_normal(
        (len(p), len(_SYSTEMS)))
    multiplier = ((1.0 + sources[p, : len(DIAGNOSIS_COLUMNS)] @ m.extra_rate)
                  * np.exp(RATE_SYSTEM_SD * system_rate[:, m.system] - RATE_SYSTEM_SD**2 / 2)
                  * np.exp(RATE_FEATURE_SD * rng.standard_normal((len(p), d)) - RATE_FEATURE_SD**2 / 2))
    age1 = s["age"][idx[p]]
    span = _age_curve(np.round(age1 + s["followup"][idx[p]], 2)) - _age_curve(age1)
    own2 = own[p] + m.rate * multiplier * span[:, None]
    x2 = _observe(rng, _add_derived(own2, m), m, missing)
    return x1, x2


def generate_longitudinal(config: LongitudinalConfig | None = None, *, progress: bool = False,
                          chunk_size: int = 2048) -> pd.DataFrame:
    """Draw the long-format table: visit-1 rows for every subject, visit-2 rows for the paired ones,
    sorted by subject then visit. `progress` shows a bar on stderr.

    Each chunk of `chunk_size` subjects draws its features from its own random stream, so the table is
    a function of the seed *and* `chunk_size`: keep the default (2,048, what the CLI uses) to get the
    documented tables."""
    config = (config or LongitudinalConfig()).validate()
    s, paired = _subjects_and_pairs(config)
    m, cols = _model(), _selected(config.n_features)
    n = config.n_subjects
    pos1 = np.arange(n) + np.concatenate([[0], np.cumsum(paired)[:-1]])  # row of each subject's visit 1
    values = np.empty((n + config.n_paired, len(cols)))
    feature_ss = np.random.SeedSequence(config.seed).spawn(3)[2]
    starts = range(0, n, chunk_size)
    with tqdm(total=n, desc="features", unit="subject", disable=not progress, file=sys.stderr) as bar:
        for start, ss in zip(starts, feature_ss.spawn(len(starts))):
            idx = np.arange(start, min(start + chunk_size, n))
            x1, x2 = _simulate_chunk(np.random.default_rng(ss), s, idx, paired, m, config.missing_fraction)
            values[pos1[idx]] = x1[:, cols]
            values[pos1[idx[paired[idx]]] + 1] = x2[:, cols]
            bar.update(len(idx))
    subject = np.repeat(np.arange(n), 1 + paired)
    visit = np.ones(len(subject), np.int64)
    visit[pos1[paired] + 1] = 2
    years = np.where(visit == 2, s["followup"][subject], 0.0)
    meta = {"subject_id": np.array(_subject_ids(n), dtype=object)[subject], "visit": visit, TIME_COLUMN: years}
    for col in LABEL_COLUMNS:
        meta[col] = s[col][subject]
    meta["age"] = np.round(meta["age"] + years, 2)
    names = _catalogue()["name"].to_numpy()[cols]
    return pd.concat([pd.DataFrame(meta), pd.DataFrame(values, columns=names)], axis=1)


# ---------------------------------------------------------------------------------------------------
def feature_columns(frame: pd.DataFrame | Iterable[str]) -> list[str]:
    """The feature columns of a table (all numeric columns that are not id, time or label columns)."""
    if isinstance(frame, pd.DataFrame):
        return [c for c in frame.columns if c not in NON_FEATURE_COLUMNS and pd.api.types.is_numeric_dtype(frame[c])]
    return [c for c in frame if c not in NON_FEATURE_COLUMNS]


def feature_groups(frame: pd.DataFrame | Iterable[str]) -> dict[str, list[str]]:
    """Named groups of the catalogue features present: ``snc`` (the case-study group),
    ``substantia_nigra``, ``hippocampus``, each system, each measure (``vol``/``area``/``thick``),
    ``lh``/``rh``. Empty groups are left out."""
    present = set(feature_columns(frame))
    cat = _catalogue()[_catalogue()["name"].isin(present)]
    groups = {
        "snc": cat["region"] == "snc",
        "substantia_nigra": cat["region"].isin(("snc", "snr")),
        "hippocampus": (cat["region"] == "hippocampus") | (cat["region"].str.startswith("hp_")
                                                             & (cat["region"] != "hp_fissure")),
    }
    groups |= {system: cat["system"] == system for system in _SYSTEMS}
    groups |= {measure: cat["measure"] == measure for measure in ("vol", "area", "thick")}
    groups |= {hemi: cat["hemisphere"] == hemi for hemi in ("lh", "rh")}
    return {name: cat.loc[mask, "name"].tolist() for name, mask in groups.items() if mask.any()}


def hemisphere_pairs(frame: pd.DataFrame | Iterable[str]) -> list[tuple[str, str]]:
    """(left, right) feature pairs present in the table."""
    present = set(feature_columns(frame))
    return [(n, n.replace("_lh_", "_rh_", 1)) for n in sorted(present)
            if "_lh_" in n and n.replace("_lh_", "_rh_", 1) in present]


def planted_truth(config: LongitudinalConfig) -> dict[str, Any]:
    """The ground truth a real study would not have: every planted coefficient and per-feature constant."""
    config = config.validate()
    cat = feature_catalogue(config.n_features)
    effects = []
    for label, target, sel, shift, rate in EFFECTS:
        names = [n for n in _catalogue()["name"][_selector_mask(_catalogue(), sel)] if n in set(cat["name"])]
        effects.append({"label": label, "target": target, "baseline_shift_sd_towards_atrophy": shift,
                        "extra_rate_fraction": rate, "features": names})
    return {
        "generator": __name__, "config": {**dataclasses.asdict(config), "prevalence": config.prevalences},
        "reference_age": REFERENCE_AGE, "age_sd": AGE_SD, "age_range": AGE_RANGE,
        "rate_acceleration_per_year": RATE_ACCELERATION,
        "followup_years": {"range": FOLLOWUP_RANGE, "beta": FOLLOWUP_BETA},
        "risk_model_log_odds": RISK_MODEL, "return_log_weights": RETURN_LOG_WEIGHTS,
        "factor_loadings": {k: dict(zip(("head_size", "brain_reserve", "measure_type", "system", "region",
                                         "unique"), v)) for k, v in LOADINGS.items()},
        "sex_effect_sd": SEX_EFFECT, "scan_quality_loading_log": QC_LOADING,
        "rate_variation": {"system_sd": RATE_SYSTEM_SD, "feature_sd": RATE_FEATURE_SD,
                           "trait_share": RATE_TRAIT_SHARE},
        "effects": effects, "features": cat.to_dict(orient="records"),
    }


def check_table_path(path: str | Path) -> Path:
    """The path if its extension is .csv or .parquet and it is not a folder; ValueError otherwise."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"unknown table extension {path.suffix or '(none)'!r} in {str(path)!r}; "
                         f"use one of {', '.join(TABLE_SUFFIXES)}")
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder; give a file name ending in .csv or .parquet")
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: {str(existing)!r} is a file, not a folder")
    return path


def truth_path(path: str | Path) -> Path:
    """Where the ground-truth sidecar of a table goes: ``long.csv`` → ``long.csv.truth.json`` (the whole file
    name, so ``long.csv`` and ``long.parquet`` beside it keep their own)."""
    path = Path(path)
    return path.with_name(path.name + ".truth.json")


def write_table(frame: pd.DataFrame, path: str | Path, truth: Mapping[str, Any] | None = None) -> Path:
    """Write the table atomically as CSV or Parquet (by extension); with `truth`, also the sidecar JSON
    (:func:`truth_path`, which names the table it describes under ``"table"``); without, an earlier
    sidecar of this file is removed. Both files are written in full before either replaces what was
    there; then the old sidecar goes, the table moves in and the new sidecar last, so an interruption
    can leave a table without its sidecar but never beside another table's. Nothing is left behind
    if writing fails."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = check_table_path(path)
    sidecar = truth_path(path)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with contextlib.ExitStack() as stack:
        tmp_truth = stack.enter_context(atomic_path(sidecar)) if truth is not None else None
        with atomic_path(path) as tmp:  # moved in before the sidecar (the outer context)
            if path.suffix.lower() == ".csv":
                pacsv.write_csv(table, tmp, pacsv.WriteOptions(quoting_style="needed"))
            else:
                pq.write_table(table, tmp)
            _readable(tmp)
            if tmp_truth is not None:
                tmp_truth.write_text(json.dumps({"table": path.name, **truth}, indent=1, default=_to_json) + "\n")
                _readable(tmp_truth)
            sidecar.unlink(missing_ok=True)  # an earlier table's ground truth must not stay beside this one
            for legacy in _legacy_sidecars(path):
                legacy.unlink(missing_ok=True)
    return path


def _legacy_sidecars(path: Path) -> list[Path]:
    """The sidecar that versions before the whole-name ones wrote for this table (``long.truth.json``),
    unless another table of the same stem is beside it (the sidecar may be that table's)."""
    if any(path.with_suffix(suffix).exists() for suffix in TABLE_SUFFIXES if suffix != path.suffix.lower()):
        return []
    return [path.with_suffix(".truth.json")]


def _readable(path: Path) -> None:
    """Give a temporary file (mode 0600) the mode a new file would get under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _to_json(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_table` (CSV or Parquet, by extension)."""
    path = check_table_path(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path, dtype={"subject_id": str})
    return pd.read_parquet(path)
