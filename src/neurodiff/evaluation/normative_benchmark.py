"""The normative benchmark: NDA and its generative and non-generative benchmarks, scored against survival.

Per seed, the control subjects are split (seeded, by subject) into training and held-out controls.
Every method is fitted on the training controls only, then scores the held-out controls (one image
per subject) and every patient. On the patients, :func:`~neurodiff.evaluation.survival.survival_analysis`
fits a Cox model of survival on the score (hazard ratio per unit and per SD, concordance, the
proportional-hazards check), splits the patients at the median score for Kaplan–Meier curves and a
log-rank test, and compares the survival times of the two halves with a Kolmogorov–Smirnov test.

Methods (names in results.json), each with the direction of its score:

- ``nda``: NDA's cosine similarity to the mean healthy latent (higher = more normal), the paper's score;
- ``nda_mahalanobis``: the Mahalanobis distance of the same model's latent (higher = more deviant);
- ``nda_no_age``: the same autoencoder without age conditioning, cosine similarity;
- ``cvae``: a normative conditional VAE, Mahalanobis distance of the posterior mean;
- ``regression_z``: normative regression of regional measures on age and sex, RMS of the z-scores;
- ``brain_age_gap``: age predicted from the image minus the real age, bias-corrected;
- ``oracle_severity`` (only when the manifest has ``true_severity``, as the embedded cohort does): the
  planted severity itself, the ceiling any score can reach on these patients. Not a method.

The survival metrics that are ranked know which way the score should point (HR < 1 for a similarity,
> 1 for a deviation): ``c_index_expected`` is the concordance of the score with survival in that
direction (0.5 chance; below 0.5 means the score runs the wrong way), and ``hr_ci_expected_side`` is
1 when the Cox 95 % CI lies wholly on the expected side of 1. The Cox model's own ``c_index``, its
two-sided ``p`` and the two-sided log-rank and KS tests are reported but not ranked: they are the same
for a score and its negation.

Besides the survival metrics, every method gets ``auroc_patients`` (how well its score separates
patients from held-out controls, oriented by the score's direction) and, with a ``true_severity``
column, ``spearman_severity`` (Spearman correlation of the score, oriented so that positive means
"more deviant", with the planted severity among patients).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from neurodiff.evaluation.seed_jobs import SeedJobs
from neurodiff.methods.normative import CONTROL_GROUPS
from neurodiff.reporting.results import add_seed_metrics

ALL_METHODS = ("nda", "nda_mahalanobis", "nda_no_age", "cvae", "regression_z", "brain_age_gap")
ORACLE = "oracle_severity"
SEVERITY = "true_severity"

#: Direction of each score: True when higher means more normal.
HIGHER_IS_NORMAL = {"nda": True, "nda_mahalanobis": False, "nda_no_age": True, "cvae": False,
                    "regression_z": False, "brain_age_gap": False, ORACLE: False}

#: Direction of each metric in the report (None: shown, not ranked). Only metrics that know the score's
#: expected direction are ranked: the Cox model picks the sign of its effect from the outcome, so its
#: c_index, its two-sided p and whether its CI excludes 1 come out the same for a score and its negation,
#: and so do the two-sided log-rank and KS tests of the median split. A score that runs the wrong way
#: (closer to healthy, shorter survival) would win on them.
HIGHER_IS_BETTER = {"c_index_expected": True, "hr_ci_expected_side": True, "auroc_patients": True,
                    "spearman_severity": True, "c_index": None, "p": None, "p_likelihood_ratio": None,
                    "logrank_p": None, "ks_statistic": None, "ks_p": None, "hr_per_sd": None, "hr": None,
                    "ph_p": None, "hr_ci_excludes_1": None}

#: The per-seed survival numbers kept for each method.
SURVIVAL_METRICS = ("hr", "hr_per_sd", "p", "p_likelihood_ratio", "c_index", "ph_p", "logrank_p", "ks_statistic",
                    "ks_p")


@dataclass(frozen=True)
class NormativeBenchmarkConfig:
    """What the benchmark runs. :meth:`quick` sizes it for CPU minutes per method and seed."""

    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = ALL_METHODS
    heldout_fraction: float = 0.3
    nda_preset: str = "paper"
    nda_steps: int | None = None
    cvae_steps: int = 5000
    survival_covariates: tuple[str, ...] = ("age", "sex")
    deviation_examples: int = 4
    device: str = "cpu"
    progress: bool = True

    @classmethod
    def quick(cls, **overrides: Any) -> NormativeBenchmarkConfig:
        return replace(cls(nda_preset="quick", cvae_steps=1500), **overrides)

    def check(self, frame: pd.DataFrame) -> None:
        unknown = sorted(set(self.methods) - set(ALL_METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be between 0 and 1, got {self.heldout_fraction}")
        for column in ("group", "age", "sex", "time", "event"):
            if column not in frame.columns:
                raise ValueError(f"the normative benchmark needs a {column!r} column in the manifest "
                                 "(group: control / patient; time: survival days and event: 1 = died, for patients)")
        controls, patients = groups(frame)
        if controls.sum() < 10 or patients.sum() < 3:
            raise ValueError(f"the normative benchmark needs at least 10 controls and 3 patients; the manifest has "
                             f"{int(controls.sum())} controls and {int(patients.sum())} patients")
        from neurodiff.evaluation.survival import check_survival_frame

        # the patients' times and events, checked before hours of training rather than after the first model
        check_survival_frame(frame[patients].reset_index(drop=True), min_events=0)
        subjects = frame["subject_id"].astype(str)
        twice = subjects[patients][subjects[patients].duplicated()].unique()
        if len(twice):
            raise ValueError(f"patient(s) {', '.join(twice[:5])} have several images; survival is analysed per "
                             "patient, so keep one image per patient (e.g. the baseline scan)")
        if "brain_age_gap" in self.methods:
            for seed in self.seeds:
                n_train = len(split_controls(frame.reset_index(drop=True), self.heldout_fraction, seed)[0])
                if n_train < BRAIN_AGE_MIN_TRAINING:
                    raise ValueError(
                        f"brain_age_gap needs at least {BRAIN_AGE_MIN_TRAINING} training control images for its "
                        f"5-fold cross-validation; seed {seed}'s split (heldout_fraction {self.heldout_fraction}) "
                        f"leaves {n_train}: add controls or leave brain_age_gap out")


#: Training control images the brain-age model's 5-fold cross-validation needs (BrainAgeModel: 2 × cv).
BRAIN_AGE_MIN_TRAINING = 10


def groups(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (controls, patients) from the ``group`` column; other values are an error."""
    group = frame["group"].astype("string").str.strip().str.lower()
    controls = group.isin(CONTROL_GROUPS).fillna(False).to_numpy(bool)
    patients = group.eq("patient").fillna(False).to_numpy(bool)
    other = ~(controls | patients)
    if other.any():
        values = sorted({str(v) for v in frame.loc[other, "group"]})
        raise ValueError(f"column 'group' has values {values} (subjects "
                         f"{', '.join(frame.loc[other, 'subject_id'].astype(str).head(5))}); use control or patient")
    return controls, patients


def split_controls(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (training controls, held-out controls: one image per subject), seeded by subject."""
    controls, _ = groups(frame)
    subjects = frame["subject_id"].astype(str).to_numpy()
    unique = np.unique(subjects[controls])
    held = set(np.random.default_rng(seed).choice(unique, int(round(fraction * len(unique))), replace=False))
    in_held = controls & np.isin(subjects, list(held))
    train = np.flatnonzero(controls & ~in_held)
    held_rows = np.flatnonzero(in_held)
    _, first_image = np.unique(subjects[held_rows], return_index=True)
    return train, np.sort(held_rows[first_image])


# ---------------------------------------------------------------- scorers behind one interface


#: The NDA scores: method → (the model it comes from, the score column of NormativeDiffAE.score).
NDA_SCORES = {"nda": ("nda", "similarity"), "nda_mahalanobis": ("nda", "mahalanobis"),
              "nda_no_age": ("nda_no_age", "similarity")}


def make_scorer(method: str, config: NormativeBenchmarkConfig, seed: int, affine: np.ndarray):
    """An object with ``fit(images, covariates)`` and ``score(images, covariates)`` (for the NDA models a
    NormativeDiffAE, whose ``fit`` takes the manifest rows first and whose ``score`` returns a frame)."""
    if method in ("nda", "nda_no_age"):
        from neurodiff.methods.normative import NormativeDiffAE

        params = dict(seed=seed, device=config.device, progress=config.progress, calibration_fraction=0.0)
        if method == "nda_no_age":
            params["encoder_covariates"] = ()
        if config.nda_steps is not None:
            params["max_steps"] = config.nda_steps
        return NormativeDiffAE.preset(config.nda_preset, **params)
    if method == "cvae":
        from neurodiff.baselines.normative_cvae import NormativeCVAE

        return NormativeCVAE(max_steps=config.cvae_steps, seed=seed, device=config.device, progress=config.progress)
    if method == "regression_z":
        from neurodiff.baselines.normative_regression import NormativeRegression

        return NormativeRegression(affine)
    if method == "brain_age_gap":
        from neurodiff.baselines.brain_age import BrainAgeModel

        return BrainAgeModel(seed=seed)
    raise ValueError(f"unknown method {method!r}")


# ---------------------------------------------------------------- one seed


def run_seed(frame: pd.DataFrame, images: np.ndarray, affine: np.ndarray, config: NormativeBenchmarkConfig,
             seed: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit every method on this seed's training controls, score, and analyse survival on the patients."""
    from neurodiff.evaluation.survival import survival_analysis

    frame = frame.reset_index(drop=True)
    train, heldout = split_controls(frame, config.heldout_fraction, seed)
    _, patients_mask = groups(frame)
    patients = np.flatnonzero(patients_mask)
    train_frame = frame.iloc[train].reset_index(drop=True)
    scored = np.concatenate([heldout, patients])
    scored_frame = frame.iloc[scored].reset_index(drop=True)
    is_patient = np.r_[np.zeros(len(heldout), bool), np.ones(len(patients), bool)]
    metrics: dict[str, dict[str, float]] = {}
    scores: dict[str, np.ndarray] = {}
    analyses: dict[str, dict[str, Any]] = {}
    training: dict[str, dict[str, float]] = {}
    models: dict[str, Any] = {}
    for method in config.methods:
        started = time.perf_counter()
        key, column = NDA_SCORES.get(method, (method, None))
        if key not in models:
            log(f"[seed {seed}] {key}: fitting on {len(train)} control images")
            model = make_scorer(key, config, seed, affine)
            model.fit(train_frame, images[train]) if column else model.fit(images[train], train_frame)
            models[key] = model
        fit_seconds = time.perf_counter() - started
        raw = models[key].score(images[scored], scored_frame)
        values = np.asarray(raw[column] if column else raw, dtype=np.float64)
        training[method] = {"fit_seconds": fit_seconds, "score_seconds": time.perf_counter() - started - fit_seconds}
        scores[method] = values
        metrics[method], analyses[method] = _evaluate(method, values, scored_frame, is_patient, config,
                                                      survival_analysis)
        log(f"[seed {seed}] {method}: " + ", ".join(f"{k} {v:.3g}" for k, v in metrics[method].items()
                                                   if k in ("hr_per_sd", "c_index_expected", "logrank_p",
                                                            "spearman_severity")))
    if SEVERITY in frame.columns:
        values = scored_frame[SEVERITY].astype(float).fillna(0.0).to_numpy()
        scores[ORACLE] = values
        metrics[ORACLE], analyses[ORACLE] = _evaluate(ORACLE, values, scored_frame, is_patient, config,
                                                      survival_analysis)
    return {"metrics": metrics, "scores": scores, "analyses": analyses, "scored_frame": scored_frame,
            "is_patient": is_patient, "training": training, "nda": models.get("nda"),
            "n_train": len(train), "n_heldout": len(heldout), "n_patients": len(patients),
            "scored_images": images[scored]}


def _evaluate(method, values, scored_frame, is_patient, config, survival_analysis) -> tuple[dict, dict]:
    from lifelines.utils import concordance_index
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from neurodiff.evaluation.survival import check_survival_frame

    deviance = -values if HIGHER_IS_NORMAL[method] else values
    out: dict[str, float] = {"auroc_patients": float(roc_auc_score(is_patient, deviance))}
    patients = scored_frame[is_patient].assign(score=values[is_patient]).reset_index(drop=True)
    if SEVERITY in patients.columns:
        out["spearman_severity"] = float(spearmanr(deviance[is_patient], patients[SEVERITY].astype(float))[0])
    # covariates that vary among the patients (a single site or sex cannot enter a Cox model)
    covariates = [c for c in config.survival_covariates if c in patients.columns and patients[c].nunique() > 1]
    analysis = survival_analysis(patients, "score", covariates)
    for key in SURVIVAL_METRICS:
        out[key] = _number(analysis.get(key))
    low, high = analysis["hr_per_sd_ci"]
    out["hr_per_sd_ci_low"], out["hr_per_sd_ci_high"] = float(low), float(high)
    out["hr_ci_excludes_1"] = float(high < 1 or low > 1)
    # the score's own direction, fixed before seeing the outcome: normality should mean longer survival
    checked = check_survival_frame(patients, "score", min_events=0)
    normality = checked["score"].to_numpy() * (1.0 if HIGHER_IS_NORMAL[method] else -1.0)
    out["c_index_expected"] = float(concordance_index(checked["time"], normality, checked["event"]))
    out["hr_ci_expected_side"] = float(high < 1 if HIGHER_IS_NORMAL[method] else low > 1)
    if "adjusted" in analysis:
        out["hr_per_sd_adjusted"] = _number(analysis["adjusted"].get("hr_per_sd"))
        out["p_adjusted"] = _number(analysis["adjusted"].get("p"))
    return out, analysis


def _number(value) -> float:
    return float("nan") if value is None else float(value)


# ---------------------------------------------------------------- all seeds


def seed_job(frame: pd.DataFrame, images: np.ndarray, affine: np.ndarray, config: NormativeBenchmarkConfig,
             seed: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """:func:`run_seed` as one job of :func:`run_benchmark`: the first seed also draws NDA's deviation maps
    and keeps its artefacts for the figures (not the model itself); the others only what the tables need."""
    result = run_seed(frame, images, affine, config, seed, log=log)
    if seed == config.seeds[0]:
        result["deviation"] = _deviation_examples(result, config)
        result.pop("nda", None)
        return result
    return {"metrics": result["metrics"], "analyses": {m: {"hr_ci": a["hr_ci"]} for m, a in result["analyses"].items()},
            "training": result["training"], "n_train": result["n_train"], "n_heldout": result["n_heldout"],
            "n_patients": result["n_patients"]}


def run_benchmark(frame: pd.DataFrame, images: np.ndarray, affine: np.ndarray, config: NormativeBenchmarkConfig,
                  log: Callable[[str], None] = print, seed_jobs: SeedJobs | None = None) -> dict[str, Any]:
    """Every seed; per-seed values gathered per method and metric, the Cox CIs, and the first seed's artefacts.

    `seed_jobs` runs the seeds as parallel jobs (worker processes or a Slurm array); default: one
    after the other in this process. The results are gathered in seed order either way.
    """
    config.check(frame)
    per_seed: dict[str, dict[str, list[float]]] = {}
    hr_ci: dict[str, list[list[float]]] = {}
    first: dict[str, Any] | None = None
    sizes, training = [], []
    results = (seed_jobs or SeedJobs()).map(partial(seed_job, frame, images, affine, config), config.seeds, log=log)
    for index, (seed, result) in enumerate(zip(config.seeds, results)):
        if first is None:
            first = result
        add_seed_metrics(per_seed, result["metrics"], index, len(config.seeds))
        for method in result["metrics"]:
            hr_ci.setdefault(method, []).append(list(result["analyses"][method]["hr_ci"]))
        sizes.append({"seed": seed, "n_train_controls": result["n_train"], "n_heldout_controls": result["n_heldout"],
                      "n_patients": result["n_patients"]})
        training.append({"seed": seed, **result["training"]})
    return {"per_seed": per_seed, "hr_ci": hr_ci, "first": first, "sizes": sizes, "training": training,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}}


def attach_hr_ci(document: dict[str, Any], hr_ci: dict[str, list[list[float]]],
                 method_seeds: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """Add each method's per-seed Cox 95 % CI of the HR per unit (``hr_ci``) to a results document.

    The geometric mean is over the seeds of ``method_seeds[method]`` when given (a merged benchmark whose
    method was not run on every seed), else over all seeds; null when a seed's bound is null (a failed fit).
    """
    for method, intervals in hr_ci.items():
        ran = [pair for seed, pair in zip(document["seeds"], intervals)
               if method_seeds is None or method not in method_seeds or seed in method_seeds[method]]
        logs = np.log(np.asarray([[np.nan if v is None else v for v in pair] for pair in ran], dtype=np.float64))
        document["methods"][method]["hr_ci"] = {
            "per_seed": intervals, "geometric_mean": [_finite_or_none(np.exp(logs[:, 0].mean())),
                                                      _finite_or_none(np.exp(logs[:, 1].mean()))]}
    return document


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _deviation_examples(result: dict[str, Any], config: NormativeBenchmarkConfig) -> dict[str, Any] | None:
    """NDA's deviation maps for the patients of lowest and highest similarity (first seed)."""
    model = result.get("nda")
    if model is None or not config.deviation_examples:
        return None
    rows = np.flatnonzero(result["is_patient"])
    order = rows[np.argsort(result["scores"]["nda"][rows])]
    k = max(1, config.deviation_examples // 2)
    chosen = np.r_[order[-k:][::-1], order[:k]]
    images = result["scored_images"][chosen]
    frame = result["scored_frame"].iloc[chosen].reset_index(drop=True)
    maps, healthy = model.deviation_maps(images, frame)
    return {"images": images, "healthy": healthy, "maps": maps, "frame": frame,
            "similarity": result["scores"]["nda"][chosen]}
