"""The SECONDGRAM benchmark: every method and baseline on the same seeded splits, every metric.

Per seed: a seeded split holds out a fraction of the paired subjects as the test set (subjects
with a real follow-up); one preparation (imputation, scaling) is fitted on the training subjects
and shared by all methods; each method generates the test subjects' follow-ups from their first
visit and labels, and is scored in the scaled space with the metrics of METHODS.md
(:mod:`neurodiff.evaluation.imputation`). The downstream task trains a classifier of each named
label on the training sets of METHODS.md and reports AUROC on the test subjects; the label-leakage
variant refits SECONDGRAM without the target label in its conditioning. Every trained model is
selected on the same held-out paired subjects: the diffusion models by their early stopping, the
WGAN-GP by keeping its best generator per epoch (same patience). The case study reports the
mean change of a feature group split by a binary label, real vs generated, in original units.

Results go into results.json (:mod:`neurodiff.reporting.results`): per method, per metric, the mean,
95 % CI over seeds and per-seed values; histories (losses, skipped steps) go beside it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from neurodiff.baselines.simple_imputation import (
    LastObservationCarriedForward,
    RidgeImputation,
)
from neurodiff.baselines.wgan_gp import ConditionalWGANGP
from neurodiff.data.longitudinal_table import LongitudinalArrays
from neurodiff.evaluation.imputation import (
    TRAINING_SETS,
    case_study,
    downstream_auroc,
    downstream_test_matrix,
    downstream_training_sets,
    imputation_metrics,
)
from neurodiff.evaluation.seed_jobs import SeedJobs
from neurodiff.methods.longitudinal import PRESETS, Preparation, SecondGram
from neurodiff.methods.longitudinal.secondgram import MostlySkippedWarning, validation_split
from neurodiff.reporting.results import add_seed_metrics

DIFFUSION_METHODS = tuple(PRESETS)  # secondgram, secondgram_noised_schedule, vanilla, pretrained, no_grad, no_self
ALL_METHODS = (*DIFFUSION_METHODS, "gan", "locf", "ridge")
METHOD_INDEPENDENT_SETS = ("all_first", "paired_first", "paired_real")


@dataclass
class ImputeBenchmarkConfig:
    """What the benchmark runs (defaults: the paper's training preset)."""

    labels: Sequence[str]
    methods: Sequence[str] = ALL_METHODS
    seeds: Sequence[int] = (0, 1, 2)
    test_fraction: float = 0.2
    downstream_labels: Sequence[str] = ()
    leakage_check: bool = True
    case_feature_pattern: str | None = None
    case_label: str | None = None
    max_epochs: int = 1000
    patience: int = 50
    pretrain_epochs: int = 100
    gan_epochs: int = 500
    downstream_max_epochs: int = 200
    diffusion_params: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    progress: bool = True

    @classmethod
    def quick(cls, **overrides: Any) -> ImputeBenchmarkConfig:
        """CPU minutes per method and seed (much shorter training than the paper's)."""
        values = dict(max_epochs=40, patience=10, pretrain_epochs=10, gan_epochs=40, downstream_max_epochs=50)
        return cls(**{**values, **overrides})

    def check(self, data: LongitudinalArrays) -> None:
        unknown = sorted(set(self.methods) - set(ALL_METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {list(ALL_METHODS)}")
        for label in [*self.downstream_labels, *([self.case_label] if self.case_label else [])]:
            if label not in data.label_columns:
                raise ValueError(f"label {label!r} for the downstream task or case study is not among the "
                                 f"conditioning labels {data.label_columns}")
            values = np.unique(data.y[:, data.label_columns.index(label)])
            if not np.isin(values, (0, 1)).all():
                raise ValueError(f"label {label!r} must be binary (0/1) for the downstream task / case study")
        if self.case_feature_pattern and not [c for c in data.feature_columns if self.case_feature_pattern in c]:
            raise ValueError(f"no feature column contains {self.case_feature_pattern!r} (case study)")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")


def split_subjects(data: LongitudinalArrays, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded hold-out of `test_fraction` of the paired subjects; everyone else trains."""
    rng = np.random.default_rng(10_000 + seed)
    paired = np.flatnonzero(data.paired)
    n_test = max(2, int(round(test_fraction * len(paired))))
    if len(paired) - n_test < 4:
        raise ValueError(f"too few paired subjects ({len(paired)}) to hold out a test set and still train")
    test = np.sort(rng.choice(paired, n_test, replace=False))
    return np.setdiff1d(np.arange(len(data)), test), test


class _Prepared:
    """One seed's training and test subjects in the shared scaled space."""

    def __init__(self, data: LongitudinalArrays, train: np.ndarray, test: np.ndarray, seed: int):
        self.train_data, self.test_data = data.subset(train), data.subset(test)
        tr, te = self.train_data, self.test_data
        self.prep = Preparation.fit(tr.x1, tr.x2, tr.y, seed=seed)
        self.x1, self.y, self.paired = self.prep.features(tr.x1), self.prep.labels(tr.y), tr.paired
        self.x2 = np.full_like(self.x1, np.nan)
        self.x2[tr.paired] = self.prep.features(tr.x2[tr.paired])
        self.x1_test, self.y_test = self.prep.features(te.x1), self.prep.labels(te.y)
        self.x2_test = self.prep.features(te.x2)


def _generator_for(method: str, config: ImputeBenchmarkConfig, seed: int, p: _Prepared,
                   exclude_label: str | None = None) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], dict]:
    """Fit `method` on the training subjects; return generate(x1, y) in the scaled space and run info."""
    pairs = p.paired
    if method == "locf":
        model = LastObservationCarriedForward()
        return model.predict, {}
    if method == "ridge":
        model = RidgeImputation().fit(p.x1[pairs], p.y[pairs], p.x2[pairs])
        return model.predict, {"alpha": model.alpha_}
    if method == "gan":
        # model selection as the diffusion models': the subjects SECONDGRAM holds out (same seed, same
        # fraction) score the generator every epoch, the best is kept, `patience` epochs without gain stop it
        cond = np.hstack([p.y, p.x1])
        val_fraction = config.diffusion_params.get("val_fraction", SecondGram(labels=[]).val_fraction)
        train, val = validation_split(pairs, val_fraction, seed)
        fit_rows = train[pairs[train]]
        model = ConditionalWGANGP(epochs=config.gan_epochs, patience=config.patience, seed=seed,
                                  device=config.device, progress=config.progress)
        model.fit(p.x2[fit_rows], cond[fit_rows], validation=(cond[val], p.x2[val]))
        h = model.history_
        info = {"seconds": h["seconds"], "epochs": len(h["validation"]), "best_epoch": h["best_epoch"],
                "best_validation_pearson": h["best_score"],
                "validation": [{"epoch": epoch, "score": score} for epoch, score in enumerate(h["validation"])]}
        return (lambda x1, y: model.predict(np.hstack([y, x1]), seed=seed + 1)), info
    keep = [j for j, name in enumerate(p.train_data.label_columns) if name != exclude_label]
    model = SecondGram.preset(
        method, labels=[p.train_data.label_columns[j] for j in keep], max_epochs=config.max_epochs,
        patience=config.patience, seed=seed, device=config.device, progress=config.progress,
        **({"pretrain_epochs": config.pretrain_epochs} if method == "pretrained" else {}), **config.diffusion_params,
    )
    train = p.train_data
    subset = LongitudinalArrays(train.subject_ids, train.x1, train.x2, train.y[:, keep], train.paired,
                                train.feature_columns, [train.label_columns[j] for j in keep])
    with warnings.catch_warnings():  # the benchmark reports the skipped updates itself (runs, curves)
        warnings.simplefilter("ignore", MostlySkippedWarning)
        model.fit(subset, preparation=Preparation(p.prep.imputer, p.prep.x_min, p.prep.x_max,
                                                  p.prep.y_mean[keep], p.prep.y_std[keep]))
    h = model.history_
    info = {"skipped": h["skipped"], "clipped": h["clipped"], "epochs": len(h["epoch_loss"]),
            "steps": len(h["loss"]), "best_validation_pearson": h.get("best_score"), "seconds": h["seconds"],
            "thresholds": h["thresholds"], "epoch_loss": h["epoch_loss"], "skipped_steps": h["skipped_steps"],
            "validation": h["validation"], "steps_per_epoch": len(h["loss"]) / max(1, len(h["epoch_loss"]))}
    return (lambda x1, y: model.generate_scaled(x1, y[:, keep], seed=seed + 1)[0]), info


def run_seed(data: LongitudinalArrays, config: ImputeBenchmarkConfig, seed: int,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every method on one seed: {"metrics": method → metric → value, "runs": method → info}."""
    train, test = split_subjects(data, config.test_fraction, seed)
    p = _Prepared(data, train, test, seed)
    metrics: dict[str, dict[str, float]] = {}
    runs: dict[str, Any] = {}
    label_index = {name: j for j, name in enumerate(data.label_columns)}
    generated_train: dict[str, np.ndarray] = {}
    correlations = {"real": _correlation(p.x2_test)}
    for method in config.methods:
        log(f"  seed {seed}: {method}")
        started = time.perf_counter()
        generate, info = _generator_for(method, config, seed, p)
        generated = generate(p.x1_test, p.y_test)
        metrics[method] = imputation_metrics(p.x2_test, generated)
        correlations[method] = _correlation(generated)
        if config.downstream_labels:
            generated_train[method] = generate(p.x1, p.y)
        if config.case_label and config.case_feature_pattern:
            metrics[method].update(_case(p, generated, config, label_index))
        info["total_seconds"] = time.perf_counter() - started
        runs[method] = info
    for label in config.downstream_labels:
        j = label_index[label]
        y_train, y_test = p.train_data.y[:, j], p.test_data.y[:, j]
        for method, x2_gen in generated_train.items():
            sets = downstream_training_sets(p.x1, y_train, p.paired, p.x2, x2_gen)
            for name in TRAINING_SETS:
                if name in METHOD_INDEPENDENT_SETS and method != next(iter(generated_train)):
                    continue  # the same for every method: computed once, reported under "reference"
                X, yy = sets[name]
                auc = downstream_auroc(X, yy, downstream_test_matrix(p.x1_test, p.x2_test, name), y_test,
                                       seed=seed, max_epochs=config.downstream_max_epochs, label=label,
                                       device=config.device)
                owner = "reference" if name in METHOD_INDEPENDENT_SETS else method
                metrics.setdefault(owner, {})[f"auroc_{label}_{name}"] = auc
        if config.leakage_check and "secondgram" in config.methods:
            log(f"  seed {seed}: secondgram without {label!r} in its conditioning (label leakage check)")
            generate, info = _generator_for("secondgram", config, seed, p, exclude_label=label)
            sets = downstream_training_sets(p.x1, y_train, p.paired, p.x2, generate(p.x1, p.y))
            X, yy = sets["enriched"]
            name = f"secondgram_without_{label}"
            metrics.setdefault(name, {})[f"auroc_{label}_enriched"] = downstream_auroc(
                X, yy, downstream_test_matrix(p.x1_test, p.x2_test, "enriched"), y_test, seed=seed,
                max_epochs=config.downstream_max_epochs, label=label, device=config.device)
            runs[name] = info
    if config.case_label and config.case_feature_pattern:
        metrics.setdefault("reference", {}).update(_case(p, p.x2_test, config, label_index, prefix="real"))
    return {"metrics": metrics, "runs": runs, "n_train": int(len(train)), "n_test": int(len(test)),
            "n_train_paired": int(p.paired.sum()), "correlations": correlations}


def _correlation(x: np.ndarray) -> np.ndarray:
    """Feature–feature Pearson correlations (0 where a feature is constant), float32."""
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(x, rowvar=False)
    return np.nan_to_num(c).astype(np.float32)


def _case(p: _Prepared, x2_scaled: np.ndarray, config: ImputeBenchmarkConfig, label_index: dict[str, int],
          prefix: str = "generated") -> dict[str, float]:
    group = [j for j, c in enumerate(p.test_data.feature_columns) if config.case_feature_pattern in c]
    mask = p.test_data.y[:, label_index[config.case_label]] == 1
    result = case_study(p.x1_test, x2_scaled, mask, group, to_original=p.prep.inverse_features)
    return {f"case_{prefix}_change_{config.case_label}": result["change_positive"],
            f"case_{prefix}_change_not_{config.case_label}": result["change_negative"]}


def run_benchmark(data: LongitudinalArrays, config: ImputeBenchmarkConfig,
                  log: Callable[[str], None] = print, seed_jobs: SeedJobs | None = None) -> dict[str, Any]:
    """All seeds; per-seed values gathered per method and metric (NaN where a metric was undefined).

    `seed_jobs` runs the seeds as parallel jobs (worker processes or a Slurm array); default: one
    after the other in this process. The results are gathered in seed order either way.
    """
    config.check(data)
    per_seed: dict[str, dict[str, list[float]]] = {}
    runs, sizes = [], []
    correlations: dict[str, np.ndarray] = {}
    results = (seed_jobs or SeedJobs()).map(partial(run_seed, data, config), config.seeds, log=log)
    for index, (seed, result) in enumerate(zip(config.seeds, results)):
        if not correlations:
            correlations = result["correlations"]  # the first seed's, for the figures
        add_seed_metrics(per_seed, result["metrics"], index, len(config.seeds))
        runs.append({"seed": seed, **result["runs"]})
        sizes.append({k: result[k] for k in ("n_train", "n_test", "n_train_paired")})
    return {"per_seed": per_seed, "runs": runs, "sizes": sizes, "config": _jsonable(asdict(config)),
            "correlations": correlations}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def report_html(document: dict[str, Any], figures: str = "") -> str:
    """report.html: the paper-style tables (imputation quality, downstream AUROC, case study, training)."""
    import html

    from neurodiff.evaluation.imputation import HIGHER_IS_BETTER, METRIC_NAMES
    from neurodiff.reporting.impute_figures import (
        UNRANKED,  # the "reference" row: not a method
    )
    from neurodiff.reporting.tables import methods_table, page

    methods = document["methods"]
    config = document["data"]
    parts = [
        "<h1>Longitudinal imputation benchmark (SECONDGRAM and baselines)</h1>",
        f"<p class=note>{html.escape(str(config.get('description', '')))}; seeds {document['seeds']}; "
        "mean ± 95 % CI (1.96·sd/√n) over seeds; metrics in the scaled feature space on held-out subjects "
        "with a real follow-up. Bold: best mean per column (every tied one; none when all tie; never the "
        "method-independent reference sets).</p>",
        _merged_note(document.get("timings", {}).get("merged_from")),
        methods_table(methods, METRIC_NAMES[:4], "Similarity of generated to real follow-ups (paper Table 2)",
                      HIGHER_IS_BETTER, unranked=UNRANKED),
        methods_table(methods, METRIC_NAMES[4:], "Distribution of generated follow-ups (paper Table 3)",
                      HIGHER_IS_BETTER, unranked=UNRANKED),
    ]
    auroc = sorted({k for v in methods.values() for k in v if k.startswith("auroc_")})
    if auroc:
        parts.append(methods_table(methods, auroc, "Downstream classification AUROC by training set (paper Table 4); "
                                   "secondgram_without_<label>: the target label removed from the conditioning",
                                   {k: True for k in auroc}, unranked=UNRANKED))
    case = sorted({k for v in methods.values() for k in v if k.startswith("case_")})
    if case:
        parts.append(methods_table(methods, case, "Case study: mean change of the feature group, original units "
                                   "(paper Table 5)"))
    parts.append(_training_table(document.get("runs", [])))
    if figures:
        parts.append("<h2>Figures</h2>" + figures)
    return page("neurodiff: imputation benchmark", "".join(parts))


def _merged_note(sources: list[dict[str, Any]] | None) -> str:
    """Which folders `neurodiff impute merge` joined, with their seeds and methods ("" for a single run)."""
    import html

    if not sources:
        return ""
    items = "".join(f"<li>{html.escape(str(s.get('folder')))}: seeds {s.get('seeds')}, methods "
                    f"{html.escape(', '.join(map(str, s.get('methods', []))))}</li>" for s in sources)
    return f"<p class=note>Merged from {len(sources)} benchmark runs (neurodiff impute merge):</p><ul>{items}</ul>"


def _training_table(runs: list[dict[str, Any]]) -> str:
    import html

    rows = []
    for run in runs:
        for method, info in run.items():
            if method == "seed" or not isinstance(info, dict) or "epochs" not in info:
                continue  # LOCF, ridge: nothing trained by epochs
            best = info.get("best_validation_pearson")
            cells = [info["epochs"], *(info.get(k, "–") for k in ("steps", "skipped", "clipped")),  # GAN: no manipulation
                     "–" if best is None else f"{best:.3f}", f"{info['seconds']:.0f}"]
            rows.append(f"<tr><th>{html.escape(method)}</th><td>{run['seed']}</td>"
                        + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if not rows:
        return ""
    return ("<table><caption>Training runs: gradient manipulation counts</caption><thead><tr><th>method</th>"
            "<th>seed</th><th>epochs</th><th>steps</th><th>skipped</th><th>clipped</th>"
            "<th>best validation Pearson</th><th>seconds</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
