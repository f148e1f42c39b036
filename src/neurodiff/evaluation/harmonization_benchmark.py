"""The harmonisation benchmark: DDAE and its baselines on an image cohort, over several seeds.

Per seed: control subjects are split (seeded, by subject) into training and test; travelling
subjects (the same anatomy imaged at every site) are all kept for testing, since they give the
ground truth. Patients, when the manifest has a ``group`` column, are left out. Every method is
fitted on the training images and maps every test image to the target site; the metrics of
:func:`~neurodiff.evaluation.harmonization.evaluate_harmonization` are computed on the test set,
in one PCA feature space fitted on the raw test images.

Methods (names in results.json): ``ddae`` (the paper's model), ``ddae_adversarial`` (with the
adversarial site head on z_υ), ``combat``, ``cvae``, ``style_gan`` and ``raw`` (no harmonisation).
For the DDAE variants also ``latent_site_accuracy`` (how well the site is predicted from z_υ of the
test images; chance = 1 / sites), ``images_per_second`` and the traveller SSIM / PSNR with half the
inversion and rendering steps (``ssim_half_steps``, ``psnr_half_steps``).

Ranking in report.html (:data:`HIGHER_IS_BETTER`): biology kept is ranked by the transfer probes
(``age_mae_transfer``, ``sex_auroc_transfer``: fitted on raw images, applied to harmonised ones);
``age_mae`` / ``sex_auroc`` (fitted on the harmonised images) are shown but not ranked, since a method
given the age and sex can write them into its output. A method whose ``within_site_variability`` is
below :data:`COLLAPSE_THRESHOLD` (its images collapsed towards a template) is marked and not ranked in
the site-removal and distribution tables: a template has chance site accuracy and a small Fréchet
distance without harmonising anything.

The label-swap control (:mod:`~neurodiff.evaluation.label_injection`): every method harmonises the test
images a second time given age and sex of other images; ``age_injection`` / ``sex_injection`` say how far a
probe fitted on raw anatomy follows the labels given instead of the images (0: not at all, 1: as far as raw
anatomy follows the true labels). A method above :data:`INJECTION_THRESHOLD` on either is marked (‡) and not
ranked on the transfer probes, whose score it partly gets from the labels it was given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neurodiff.evaluation.harmonization import (
    REFERENCE_VALUES,
    REQUIRED_COLUMNS,
    evaluate_harmonization,
    image_features,
    probe_groups,
    site_accuracy,
    traveller_pairs,
)
from neurodiff.evaluation.label_injection import INJECTION_THRESHOLD, label_injection, swapped_covariates
from neurodiff.evaluation.image_quality import psnr, ssim
from neurodiff.evaluation.seed_jobs import SeedJobs
from neurodiff.reporting.results import add_seed_metrics

ALL_METHODS = ("ddae", "ddae_adversarial", "combat", "cvae", "style_gan", "raw")
TRAVELLER = "true_traveller_id"

#: Direction of each metric (None: closest to its reference in :data:`REFERENCES` is best; None without a
#: reference: shown, not ranked). A site accuracy below chance is as much a sign of site information as one
#: above it. ``age_mae`` / ``sex_auroc`` probe the harmonised images with probes trained on them, which a
#: method conditioned on age and sex wins by writing them into its output: not ranked; the transfer probes
#: (trained on raw images) are.
HIGHER_IS_BETTER = {"site_accuracy": None, "age_mae_transfer": False, "sex_auroc_transfer": True,
                    "age_mae": None, "sex_auroc": None, "frechet": False,
                    "within_site_variability": None, "ssim": True, "psnr": True, "mae": False,
                    "latent_site_accuracy": None, "ssim_half_steps": True, "psnr_half_steps": True,
                    "images_per_second": True, "age_injection": None, "sex_injection": None,
                    "age_injection_years": None, "sex_injection_probability": None}  # shown, not ranked
REFERENCES = {**REFERENCE_VALUES, "latent_site_accuracy": "site_chance"}
#: A method whose mean ``within_site_variability`` (within-site spread after / before) is below this has
#: collapsed its images towards a template: the report marks it (†) and does not rank it on the metrics a
#: template wins without harmonising (:data:`COLLAPSE_GAMED`): a single template has chance site accuracy
#: and a small Fréchet distance; a template of the given age and sex (a decoder that ignores the input
#: image and renders the mean image of those covariates) also beats the raw images on the transfer probes,
#: since a probe fitted on raw images reads that mean image without the subjects' individual anatomy.
COLLAPSE_THRESHOLD = 0.5
COLLAPSE_GAMED = ("site_accuracy", "frechet", "age_mae_transfer", "sex_auroc_transfer")
COLLAPSE_MARK = " †"
#: The metrics a method that writes the given labels into its output wins without keeping anatomy.
INJECTION_GAMED = ("age_mae_transfer", "sex_auroc_transfer")
INJECTION_MARK = " ‡"


@dataclass(frozen=True)
class HarmonizeBenchmarkConfig:
    """What the benchmark runs. :meth:`quick` sizes it for CPU minutes per method and seed.

    `target_site` None: the site with the most images of the manifest (:func:`default_target_site`;
    site0, the reference, in the embedded synthetic cohorts); :meth:`with_target` fills it in.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = ALL_METHODS
    target_site: str | None = None
    test_fraction: float = 0.3
    ddae_preset: str = "paper"
    ddae_steps: int | None = None
    adversarial_weight: float = 1.0
    inversion_steps: int = 50
    render_steps: int = 50
    cvae_steps: int = 5000
    gan_steps: int = 5000
    timing: tuple[tuple[int, str], ...] = ((64, "quick"), (64, "paper"), (128, "paper"))
    device: str = "cpu"
    progress: bool = True

    @classmethod
    def quick(cls, **overrides: Any) -> HarmonizeBenchmarkConfig:
        base = cls(ddae_preset="quick", ddae_steps=None, cvae_steps=1500, gan_steps=800, inversion_steps=20,
                   render_steps=20)
        return replace(base, **overrides)

    def check(self, frame: pd.DataFrame | None = None) -> None:
        """ValueError naming what is wrong, before any image is loaded or model trained: the options and, given
        the manifest `frame`, the covariates the evaluation needs (:func:`check_covariates`), the sites and
        the target site (when set)."""
        unknown = sorted(set(self.methods) - set(ALL_METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be between 0 and 1, got {self.test_fraction}")
        if frame is None:
            return
        check_covariates(frame)
        sites = sorted(frame["site"].astype(str).unique())
        if len(sites) < 2:
            raise ValueError(f"harmonisation needs at least two sites; the manifest has only {sites}")
        if self.target_site is not None and str(self.target_site) not in sites:
            raise ValueError(f"target site {self.target_site!r} is not in the manifest (sites: {', '.join(sites)})")
        self._check_training_sites(frame)

    def _check_training_sites(self, frame: pd.DataFrame) -> None:
        """Every site of each seed's test split must have training images: the methods are fitted on the
        training split and cannot map images of a site they never saw (DDAE and the baselines refuse them,
        after the earlier methods have trained). The split (:func:`split_cohort`) is left as it is."""
        sites = frame["site"].astype(str).to_numpy()
        for seed in self.seeds:
            train, test = split_cohort(frame, self.test_fraction, seed)
            missing = sorted(set(sites[test]) - set(sites[train]))
            if missing:
                controls = {s: len(_control_subjects(frame, s)) for s in missing}
                counts = ", ".join(f"{s}: {n} control subject(s)" for s, n in controls.items())
                raise ValueError(
                    f"seed {seed}: site(s) {', '.join(missing)} have test images but no training images (the "
                    f"seeded split by subject holds out every control subject there; {counts}; travelling "
                    f"subjects are always held out). Add control subjects at {'that site' if len(missing) == 1 else 'those sites'}, "
                    f"or leave {'it' if len(missing) == 1 else 'them'} out of the manifest")

    def with_target(self, frame: pd.DataFrame) -> HarmonizeBenchmarkConfig:
        """This config with an unset `target_site` set to :func:`default_target_site` of `frame`."""
        return self if self.target_site is not None else replace(self, target_site=default_target_site(frame))


def default_target_site(frame: pd.DataFrame) -> str:
    """The site with the most images in `frame` (ties: the first in sorted order), the benchmark's target
    when none is given. In the embedded synthetic cohorts that is the reference site, site0."""
    counts = frame["site"].astype(str).value_counts()
    return min(counts.index[counts == counts.max()])


def _used_rows(frame: pd.DataFrame) -> np.ndarray:
    """Mask of the rows the benchmark uses: every row but the patients (``group`` = patient)."""
    keep = np.ones(len(frame), bool)
    if "group" in frame.columns:
        keep &= frame["group"].fillna("control").astype(str).str.lower().ne("patient").to_numpy()
    return keep


def check_covariates(frame: pd.DataFrame) -> None:
    """What the evaluation needs of the rows the benchmark uses (patients are left out), checked up front:
    ``age`` a number, ``sex`` exactly F or M (the sex probe), ``site`` given. A ValueError names the column,
    the bad values and the first subject with one."""
    missing = [c for c in ("subject_id", *REQUIRED_COLUMNS) if c not in frame.columns]
    if missing:
        raise ValueError(f"the manifest lacks the column(s) {', '.join(missing)} (the benchmark needs subject_id, "
                         f"{', '.join(REQUIRED_COLUMNS)})")
    rows = frame[_used_rows(frame)]
    bad = {
        "age": ~np.isfinite(pd.to_numeric(rows["age"], errors="coerce").to_numpy(dtype=float)),
        "sex": ~rows["sex"].isin(["F", "M"]).to_numpy(),
        "site": rows["site"].isna().to_numpy() | rows["site"].astype(str).str.strip().eq("").to_numpy(),
    }
    needed = {"age": "a number (years)", "sex": "'F' or 'M' (the evaluation's sex probe needs exactly these)",
              "site": "a site name"}
    for column, wrong in bad.items():
        if wrong.any():
            values = sorted({repr(v.item() if isinstance(v, np.generic) else v) for v in rows[column][wrong]})
            shown = ", ".join(values[:5]) + (", ..." if len(values) > 5 else "")
            raise ValueError(f"manifest column {column!r} must hold {needed[column]}; found {shown} in "
                             f"{int(wrong.sum())} row(s), the first for subject {rows['subject_id'][wrong].iloc[0]!r}")


def _control_subjects(frame: pd.DataFrame, site: str) -> np.ndarray:
    """The subjects of `site` that :func:`split_cohort` may put in training (used rows, not travellers)."""
    keep = _used_rows(frame) & frame["site"].astype(str).eq(site).to_numpy()
    if TRAVELLER in frame.columns:
        keep &= frame[TRAVELLER].fillna("").astype(str).eq("").to_numpy()
    return np.unique(frame["subject_id"].astype(str).to_numpy()[keep])


def split_cohort(frame: pd.DataFrame, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test): controls split by subject, every traveller row in test, patients out."""
    keep = _used_rows(frame)
    traveller = (frame[TRAVELLER].fillna("").astype(str).ne("").to_numpy() if TRAVELLER in frame.columns
                 else np.zeros(len(frame), bool))
    subjects = frame["subject_id"].astype(str).to_numpy()
    singles = np.unique(subjects[keep & ~traveller])
    rng = np.random.default_rng(seed)
    test_subjects = set(rng.choice(singles, int(round(test_fraction * len(singles))), replace=False))
    test = keep & (traveller | np.isin(subjects, list(test_subjects)))
    train = keep & ~test
    return np.flatnonzero(train), np.flatnonzero(test)


def _harmonizer(method: str, config: HarmonizeBenchmarkConfig, seed: int):
    if method.startswith("ddae"):
        from neurodiff.methods.harmonization import DisentangledDiffAE

        params = dict(seed=seed, device=config.device, progress=config.progress,
                      inversion_steps=config.inversion_steps, render_steps=config.render_steps,
                      adversarial_weight=config.adversarial_weight if method == "ddae_adversarial" else 0.0)
        if config.ddae_steps is not None:
            params["max_steps"] = config.ddae_steps
        return DisentangledDiffAE.preset(config.ddae_preset, **params)
    if method == "combat":
        from neurodiff.baselines.combat import ComBat

        return ComBat()
    if method == "cvae":
        from neurodiff.baselines.cvae import ConditionalVAE

        return ConditionalVAE(max_steps=config.cvae_steps, seed=seed, device=config.device, progress=config.progress)
    if method == "style_gan":
        from neurodiff.baselines.style_gan import StyleEncodingGAN

        return StyleEncodingGAN(max_steps=config.gan_steps, seed=seed, device=config.device, progress=config.progress)
    raise ValueError(f"unknown method {method!r}")


def run_seed(frame: pd.DataFrame, images: np.ndarray, config: HarmonizeBenchmarkConfig, seed: int,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """One seed: fit every method, harmonise the test set, evaluate. Returns metrics and artefacts."""
    train, test = split_cohort(frame, config.test_fraction, seed)
    train_frame, test_frame = frame.iloc[train].reset_index(drop=True), frame.iloc[test].reset_index(drop=True)
    x_train, x_test = images[train], images[test]
    _, space = image_features(x_test, seed=seed)
    metrics: dict[str, dict[str, float]] = {}
    harmonised: dict[str, np.ndarray] = {}
    extras: dict[str, Any] = {"latents": {}, "training": {}}
    swapped = swapped_covariates(test_frame, seed)  # the label-swap control: age and sex of other images
    groups = probe_groups(test_frame)
    for method in config.methods:
        log(f"[seed {seed}] {method}: fitting on {len(train)} images, harmonising {len(test)} to {config.target_site}")
        started = time.perf_counter()
        if method == "raw":
            out, fit_seconds = x_test.copy(), 0.0
            out_swapped = out
        else:
            model = _harmonizer(method, config, seed)
            # DDAE takes a manifest first (images optional), the baselines (images, covariates)
            model.fit(train_frame, x_train) if method.startswith("ddae") else model.fit(x_train, train_frame)
            fit_seconds = time.perf_counter() - started
            started = time.perf_counter()
            out = model.transform(x_test, test_frame, config.target_site)
        apply_seconds = time.perf_counter() - started
        if method != "raw":
            out_swapped = model.transform(x_test, swapped, config.target_site)
        values = evaluate_harmonization(x_test, out, test_frame, config.target_site, features=space, seed=seed)
        values.update(label_injection(space.transform(x_test), space.transform(out), space.transform(out_swapped),
                                      test_frame, swapped, seed=seed, groups=groups))
        if method.startswith("ddae"):
            values.update(_ddae_extras(model, x_test, test_frame, config, seed, extras, method))
            values["images_per_second"] = len(x_test) / apply_seconds
        metrics[method] = values
        harmonised[method] = out
        extras["training"][method] = {"fit_seconds": fit_seconds, "apply_seconds": apply_seconds}
        log(f"[seed {seed}] {method}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()
                                                   if isinstance(v, float) and k in HIGHER_IS_BETTER))
    return {"metrics": metrics, "harmonised": harmonised, "test_frame": test_frame, "test_images": x_test,
            "extras": extras, "n_train": len(train), "n_test": len(test)}


def _ddae_extras(model, x_test, test_frame, config, seed, extras, method) -> dict[str, float]:
    """Site predictability from z_υ, joint latents for the figure, and the cost of halving the steps."""
    z = model.encode(x_test, test_frame)
    extras["latents"][method] = z
    accuracy, _ = site_accuracy(z[:, : model.latent_dim], test_frame["site"].astype(str).to_numpy(), seed=seed,
                                groups=probe_groups(test_frame))  # as for the images: each subject in one fold
    rows, reference_rows = traveller_pairs(test_frame, config.target_site)
    out = {"latent_site_accuracy": accuracy}
    if len(rows):
        half = replace_steps(model, max(1, config.inversion_steps // 2), max(1, config.render_steps // 2))
        moved = half.transform(x_test[rows], test_frame.iloc[rows], config.target_site)
        out["ssim_half_steps"] = float(ssim(moved, x_test[reference_rows]).mean())
        out["psnr_half_steps"] = float(psnr(moved, x_test[reference_rows]).mean())
        replace_steps(model, config.inversion_steps, config.render_steps)
    return out


def replace_steps(model, inversion_steps: int, render_steps: int):
    model.inversion_steps, model.render_steps = inversion_steps, render_steps
    return model


def seed_job(frame: pd.DataFrame, images: np.ndarray, config: HarmonizeBenchmarkConfig, seed: int,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """:func:`run_seed` as one job of :func:`run_benchmark`: the first seed keeps its artefacts (images,
    latents) for the figures, the others only what the tables need."""
    result = run_seed(frame, images, config, seed, log=log)
    if seed == config.seeds[0]:
        return result
    return {"metrics": result["metrics"], "extras": {"training": result["extras"]["training"]},
            "n_train": result["n_train"], "n_test": result["n_test"]}


def run_benchmark(frame: pd.DataFrame, images: np.ndarray, config: HarmonizeBenchmarkConfig,
                  log: Callable[[str], None] = print, seed_jobs: SeedJobs | None = None) -> dict[str, Any]:
    """Every seed; per-seed values gathered per method and metric, and the first seed's artefacts.

    `seed_jobs` runs the seeds as parallel jobs (worker processes or a Slurm array); default: one
    after the other in this process. The results are gathered in seed order either way.
    """
    config.check(frame)
    config = config.with_target(frame)
    per_seed: dict[str, dict[str, list[float]]] = {}
    first: dict[str, Any] | None = None
    sizes, training = [], []
    results = (seed_jobs or SeedJobs()).map(partial(seed_job, frame, images, config), config.seeds, log=log)
    for index, (seed, result) in enumerate(zip(config.seeds, results)):
        first = first or result
        add_seed_metrics(per_seed, result["metrics"], index, len(config.seeds))
        sizes.append({"seed": seed, "n_train": result["n_train"], "n_test": result["n_test"]})
        training.append({"seed": seed, **result["extras"]["training"]})
    return {"per_seed": per_seed, "first": first, "sizes": sizes, "training": training,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}}


def throughput(size: int, preset: str, *, steps: tuple[int, int] = (50, 50), n: int = 4, seed: int = 0,
               device: str = "cpu") -> dict[str, float]:
    """Harmonised images per second of a DDAE of `preset` at size×size with (inversion, render) steps.

    The cost does not depend on the weights, so the model is trained for one step on random images.
    """
    from neurodiff.methods.harmonization import DisentangledDiffAE

    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (n, 1, size, size)).astype(np.float32)
    frame = pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "age": np.linspace(30, 70, n),
                          "sex": ["F", "M"] * (n // 2), "site": ["a", "b"] * (n // 2)})
    model = DisentangledDiffAE.preset(preset, max_steps=1, batch_size=n, progress=False, sensitivity_every=0,
                                      inversion_steps=steps[0], render_steps=steps[1], device=device)
    model.fit(frame, images)
    started = time.perf_counter()
    model.transform(images, frame, "a")
    seconds = time.perf_counter() - started
    return {"size": size, "preset": preset, "inversion_steps": steps[0], "render_steps": steps[1],
            "images": n, "seconds": seconds, "images_per_second": n / seconds}


def harmonize_figures(document: dict[str, Any], first: dict[str, Any], out_dir) -> dict[str, str]:
    """PNG figures into `out_dir`: metric bars, UMAP of DDAE's joint latents, image grid. name → file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurodiff.reporting.figure_guard import draw_or_warn
    from neurodiff.reporting.harmonization_figures import image_grid, latent_umap

    files = metrics_figure(document, out_dir)

    def save(fig, name: str) -> None:
        fig.savefig(out_dir / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        files[name.removesuffix(".png")] = name

    def umap(method: str, latents: np.ndarray, sites: np.ndarray) -> None:
        fig, ax = plt.subplots(figsize=(5, 4.5))
        latent_umap(latents, sites, ax=ax, title=f"{method}: joint latents [z_υ, z_κ] of the test images")
        save(fig, f"umap_{method}.png")

    def examples(sites: np.ndarray) -> None:
        rows = {site: int(np.flatnonzero(sites == site)[0]) for site in sorted(set(sites))}
        originals = {site: first["test_images"][i] for site, i in rows.items()}
        harmonised = {m: {site: out[i] for site, i in rows.items()} for m, out in first["harmonised"].items()
                      if m != "raw"}
        save(image_grid(originals, harmonised, target_site=document["config"]["target_site"]), "examples.png")

    sites = first["test_frame"]["site"].astype(str).to_numpy() if "test_frame" in first else None
    for method, latents in (first.get("extras") or {}).get("latents", {}).items():
        draw_or_warn(f"umap_{method}.png", partial(umap, method, latents, sites))
    draw_or_warn("examples.png", partial(examples, sites))
    return files


def metrics_figure(document: dict[str, Any], out_dir) -> dict[str, str]:
    """metrics.png into `out_dir`: bars of the main metrics, mean ± CI per method ({"metrics": file}, or {}
    when it could not be drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurodiff.reporting.figure_guard import draw_or_warn
    from neurodiff.reporting.harmonization_figures import metric_bars

    files: dict[str, str] = {}
    metrics = [m for m in ("site_accuracy", "age_mae_transfer", "sex_auroc_transfer", "age_mae", "sex_auroc",
                           "age_injection", "sex_injection", "frechet", "within_site_variability", "ssim", "psnr",
                           "mae")
               if any(m in v for v in document["methods"].values())]

    def draw() -> None:
        fig = metric_bars(document, metrics, unranked=("raw",),  # raw: not a method
                          unranked_per_metric=gamed_per_metric(document["methods"]))
        fig.savefig(Path(out_dir) / "metrics.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        files["metrics"] = "metrics.png"

    draw_or_warn("metrics.png", draw)
    return files


def injecting_methods(methods: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The methods (never ``raw``) whose mean ``age_injection`` or ``sex_injection`` is above
    :data:`INJECTION_THRESHOLD`: they write the labels they are given into their output."""
    return tuple(m for m, values in methods.items() if m != "raw" and any(
        (mean := (values.get(k) or {}).get("mean")) is not None and mean > INJECTION_THRESHOLD
        for k in ("age_injection", "sex_injection")))


def gamed_per_metric(methods: dict[str, dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """metric → the methods not ranked on it: collapsed ones (:data:`COLLAPSE_GAMED`) and label-writing ones
    (:data:`INJECTION_GAMED`)."""
    collapsed, injecting = collapsed_methods(methods), injecting_methods(methods)
    return {m: tuple(dict.fromkeys((*(collapsed if m in COLLAPSE_GAMED else ()),
                                    *(injecting if m in INJECTION_GAMED else ()))))
            for m in {*COLLAPSE_GAMED, *INJECTION_GAMED}}


def collapsed_methods(methods: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The methods (never ``raw``) whose mean ``within_site_variability`` is below :data:`COLLAPSE_THRESHOLD`."""
    return tuple(m for m, values in methods.items() if m != "raw"
                 and (mean := (values.get("within_site_variability") or {}).get("mean")) is not None
                 and mean < COLLAPSE_THRESHOLD)


def report_html(document: dict[str, Any], figures: dict[str, str]) -> str:
    """report.html: tables of every metric group, the timings and the figures."""
    import html

    from neurodiff.reporting.tables import methods_table, page

    methods = document["methods"]
    config = document["config"]
    table = partial(methods_table, higher_is_better=HIGHER_IS_BETTER, references=REFERENCES,
                    unranked=("raw",))  # raw: the images unchanged (variability ratio 1), not a method
    collapsed, injecting = collapsed_methods(methods), injecting_methods(methods)
    # every table but the travellers' and the cost: methods marked † (collapsed) / ‡ (writes the labels given)
    label = {m: m + (COLLAPSE_MARK if m in collapsed else "") + (INJECTION_MARK if m in injecting else "")
             for m in methods}
    marked = {label[m]: v for m, v in methods.items()}

    left_out = {metric: tuple(label[m] for m in rows) for metric, rows in gamed_per_metric(methods).items()}

    def gamed(metrics: list[str], caption: str) -> str:
        return methods_table(marked, metrics, caption, HIGHER_IS_BETTER, REFERENCES, unranked=("raw",),
                             unranked_per_metric=left_out)

    collapse_note = (f" †: within-site variability below {COLLAPSE_THRESHOLD}, images collapsed towards a "
                     "template (which gets chance site accuracy, a small Fréchet distance and clean age / sex "
                     "probes without harmonising any subject's anatomy): not bolded on those columns.")
    injection_note = (f" ‡: age_injection or sex_injection above {INJECTION_THRESHOLD} (label-swap control): the "
                      "method writes the age / sex it is given into its output, so the transfer probes partly read "
                      "those labels: not bolded on the transfer probes.")
    parts = [
        "<h1>Harmonisation benchmark (DDAE and baselines)</h1>",
        f"<p class=note>{html.escape(str(document['data'].get('description', '')))}; target site "
        f"{html.escape(config['target_site'])}; seeds {document['seeds']}; mean ± 95 % CI (1.96·sd/√n) over seeds, "
        "on the held-out test images. Feature space of the probes and the Fréchet distance: a PCA of the raw test "
        "images (Inception FID needs downloaded weights). Bold: best mean per column (every tied one; none when "
        "all tie; never raw, the unharmonised images).</p>",
        table(methods, ["ssim", "psnr", "mae"], "Travelling subjects: harmonised image vs the same "
              "subject's real target-site image"),
        gamed(["site_accuracy", "site_chance", "latent_site_accuracy"],
              "Site removal: cross-validated site classifier on the harmonised images (chance = 1/sites), "
              "and on DDAE's z_υ." + collapse_note),
        gamed(["age_mae_transfer", "sex_auroc_transfer", "age_mae", "sex_auroc"],
              "Biology kept: age and sex probes fitted on the raw images and applied to the harmonised images "
              "(*_transfer, ranked; for raw they equal the within-raw probes), and probes fitted and tested on "
              "the harmonised images (age_mae, sex_auroc; not ranked: a method conditioned on age and sex, like "
              "the cVAE or DDAE's covariate encoder, can write them into its output and win these without "
              "keeping any anatomy)." + collapse_note + injection_note),
        gamed(["age_injection", "sex_injection", "age_injection_years", "sex_injection_probability"],
              "Label-swap control: the test images harmonised again given the age and sex of other images; how "
              "far a probe fitted on raw anatomy follows the labels given instead of the image (0: not at all, "
              "the ideal; 1: as far as raw anatomy follows the true labels). A method that draws the anatomy "
              "typical of the labels it is given scores high. Unnormalised forms, not ranked: years of predicted "
              "age per year of age given, and change of P(male) towards the sex given; defined where the "
              "normalised ones are NaN (the raw probe reads nothing), but no more sensitive than the probe."),
        gamed(["frechet", "within_site_variability"], "Distribution: Fréchet distance to real "
              "target-site images; within-site variability after / before (1 = kept)." + collapse_note),
        table(methods, ["images_per_second", "ssim_half_steps", "psnr_half_steps"],
              "DDAE cost: harmonised images per second at the benchmark's size, and traveller quality "
              "with half the inversion and rendering steps"),
    ]
    speed = document.get("timings", {}).get("throughput", [])
    if speed:
        rows = "".join(f"<tr><td>{s['size']}×{s['size']}</td><td>{html.escape(s['preset'])}</td>"
                       f"<td>{s['inversion_steps']} + {s['render_steps']}</td><td>{s['images_per_second']:.3f}</td></tr>"
                       for s in speed)
        parts.append("<table><caption>DDAE harmonisation speed on this machine</caption><thead><tr><th>size</th>"
                     "<th>preset</th><th>DDIM steps (inversion + render)</th><th>images/s</th></tr></thead>"
                     f"<tbody>{rows}</tbody></table>")
    if figures:
        parts.append("<h2>Figures</h2>" + "".join(
            f"<figure><img src='{html.escape(f)}' style='max-width:100%'><figcaption>{html.escape(n)}</figcaption>"
            "</figure>" for n, f in figures.items()))
    return page("neurodiff: harmonisation benchmark", "".join(parts))
