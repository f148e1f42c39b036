"""The demo's summary: DIR/results.json (every stage's results) and DIR/report.html (one page).

The page has, per method, the headline table (the method against its baselines, mean ± 95 % CI over
seeds, best mean in bold), a plain-words reading of it computed from the numbers, the figures people
would rather look at than read, the command that reproduces the stage, and a link to its full report.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurodiff.atomic import write_json, write_text
from neurodiff.demo.budget import Budget
from neurodiff.reporting.results import environment
from neurodiff.reporting.tables import format_cell, methods_table, metric_losses, page


@dataclass(frozen=True)
class Headline:
    """What the summary shows of one stage."""

    title: str
    method: str  # the method the stage is about
    metrics: dict[str, bool | None]  # metric → higher is better (None: not ranked)
    figures: dict[str, str]  # file in the stage folder → caption
    not_baselines: tuple[str, ...] = ()  # rows that are references, not competitors
    note: str = ""
    unranked: tuple[str, ...] = ()  # rows that are not methods at all: never bold
    references: dict[str, str] = field(default_factory=dict)  # metric → the metric it is best near
    p_values: tuple[str, ...] = ()
    # metric → {row: why} for the rows that game that metric in this result (e.g. harmonisers that
    # collapsed their images): never bold there, never "the best baseline"; the stage's own method is
    # flagged in the reading
    gamed: Callable[[dict[str, Any]], dict[str, dict[str, str]]] | None = None

    def gamed_rows(self, methods: dict[str, Any]) -> dict[str, dict[str, str]]:
        return self.gamed(methods) if self.gamed else {}


def _gamed_harmonisation(methods: dict[str, Any]) -> dict[str, dict[str, str]]:
    from neurodiff.evaluation.harmonization_benchmark import (
        COLLAPSE_THRESHOLD,
        INJECTION_THRESHOLD,
        collapsed_methods,
        gamed_per_metric,
    )

    collapsed, gamed = collapsed_methods(methods), gamed_per_metric(methods)
    why = {m: (f"collapsed its images (within-site variability below {COLLAPSE_THRESHOLD})" if m in collapsed else
               f"writes the age / sex it is given into its output (label-swap control above {INJECTION_THRESHOLD})")
           for rows in gamed.values() for m in rows}
    return {metric: {m: why[m] for m in rows} for metric, rows in gamed.items()}


HEADLINES = {
    "engine": Headline(
        "The shared diffusion engine on a toy distribution", "diffusion_ddpm100",
        {"energy_distance": False, "frechet": False, "ring_error": False},
        {"engine_ring.png": "1,000 samples of each method against held-out ring points"},
        not_baselines=("diffusion_ddim20", "real_data_floor"), unranked=("real_data_floor",),
        note="A 2-D ring: a fitted Gaussian matches its mean and covariance (so Fréchet cannot tell them apart) "
             "but not its shape; the ring error (mean |‖x‖ − 1|) can. real_data_floor is a second real sample.",
    ),
    "impute": Headline(
        "Longitudinal imputation (SECONDGRAM)", "secondgram",
        {"pearson_feature": True, "pearson_subject": True, "euclidean": False, "cosine_distance": False,
         "frechet": False, "corr_matrix_diff": False},
        {"metric_bars.png": "every method and metric, mean ± 95 % CI",
         "correlations.png": "feature–feature correlations of real and generated follow-ups",
},
        not_baselines=("secondgram_noised_schedule", "reference", "secondgram_without_parkinsonism",
                       "secondgram_without_stroke"), unranked=("reference",),
        note="Generated follow-up visits of held-out subjects against their real follow-ups, in the scaled "
             "feature space. LOCF copies the first visit; ridge regresses the follow-up on the first visit and labels.",
    ),
    "harmonize": Headline(
        "Multi-site harmonisation (DDAE)", "ddae",
        {"site_accuracy": None, "ssim": True, "psnr": True, "age_mae_transfer": False, "sex_auroc_transfer": True,
         "frechet": False},
        {"examples.png": "held-out images harmonised to the target site by each method",
         "umap_ddae.png": "UMAP of DDAE's latents, coloured by site",
         "metrics.png": "every method and metric, mean ± 95 % CI"},
        not_baselines=("ddae_adversarial",), unranked=("raw",), references={"site_accuracy": "site_chance"},
        gamed=_gamed_harmonisation,
        note="Every held-out image is mapped to site0. site_accuracy: a classifier's accuracy at telling the site "
             "after harmonisation (best near chance, 1/7: below chance is site information too); ssim/psnr: against the same travelling "
             "subject's real site0 image; age_mae_transfer/sex_auroc_transfer: age and sex probes fitted on the raw images and "
             "applied to the harmonised ones, biology kept (probes fitted on the harmonised images would reward a method like "
             "the cVAE for rendering the age and sex it is given); raw: no harmonisation.",
    ),
    "normative": Headline(
        "Normative modelling and survival (NDA)", "nda",
        {"auroc_patients": True, "spearman_severity": True, "c_index_expected": True, "hr_per_sd": None,
         "logrank_p": None},
        {"kaplan_meier.png": "Kaplan–Meier curves of patients split at the median score",
         "score_distributions.png": "scores of held-out controls and patients",
         "deviation_maps.png": "where patients deviate from the healthy model"},
        not_baselines=("nda_mahalanobis", "nda_no_age", "oracle_severity"), unranked=("oracle_severity",),
        p_values=("logrank_p",),
        note="Trained on controls only. auroc_patients: patients vs held-out controls; spearman_severity: "
             "against the planted disease severity; c_index_expected: concordance of the score with survival in "
             "its expected direction (0.5 chance); hr_per_sd, logrank_p: Cox model and two-sided log-rank test "
             "of survival on the score; oracle_severity: the planted severity itself, the best any score can do.",
    ),
}

TASKS = {"cohorts": "cohorts", "engine": "engine", "impute": "longitudinal_imputation",
         "harmonize": "harmonization", "normative": "normative"}


def reading(methods: dict[str, dict[str, Any]], headline: Headline) -> str:
    """One honest sentence per ranked metric: does the stage's method beat the best baseline?"""
    import math

    lines = []
    main = methods.get(headline.method, {})
    gamed_by_metric = headline.gamed_rows(methods)
    for metric, higher in headline.metrics.items():
        reference = headline.references.get(metric)
        if (higher is None and reference is None) or main.get(metric, {}).get("mean") is None:
            continue
        gamed = gamed_by_metric.get(metric, {})
        if headline.method in gamed:
            lines.append(f"<li><b>{html.escape(metric)}</b>: {html.escape(headline.method)} "
                         f"{html.escape(gamed[headline.method])}: its value here is not evidence for it.</li>")
            continue
        contenders = [m for m, v in methods.items() if m == headline.method or (
            m not in headline.not_baselines and m not in headline.unranked and m not in gamed
            and v.get(metric, {}).get("mean") is not None)]
        losses = metric_losses(methods, contenders, metric, higher, reference)  # lower is better
        rivals = [m for m in losses if m != headline.method]
        if headline.method not in losses or not rivals:
            continue
        best_name = min(rivals, key=losses.get)
        ours, best = main[metric], methods[best_name][metric]
        gap = losses[best_name] - losses[headline.method]  # > 0: ours is better
        spread = math.hypot(ours.get("ci95") or 0.0, best.get("ci95") or 0.0)
        if abs(gap) <= spread:
            verdict = "within the seeds' uncertainty of"
        else:
            verdict = "better than" if gap > 0 else "worse than"
        p_value = metric in headline.p_values
        lines.append(f"<li><b>{html.escape(metric)}</b>: {html.escape(headline.method)} "
                     f"{html.escape(format_cell(ours, p_value=p_value))} is {verdict} the best baseline, "
                     f"{html.escape(best_name)} {html.escape(format_cell(best, p_value=p_value))}.</li>")
    return f"<ul>{''.join(lines)}</ul>" if lines else ""


def write_summary(out: Path, stages: Sequence[str], budget: Budget, commands: dict[str, str],
                  wall_seconds: dict[str, float], this_run_seconds: float) -> dict[str, Any]:
    """Gather the stages' results.json into DIR/results.json and write DIR/report.html."""
    import json

    documents = {name: json.loads((out / name / "results.json").read_text()) for name in stages}
    stage_seconds = {name: wall_seconds.get(name) for name in stages}
    document = {
        "task": "demo",
        "budget": budget.settings(),
        "stages": {name: {"task": TASKS[name], "results": f"{name}/results.json",
                          "report": f"{name}/report.html" if (out / name / "report.html").exists() else None,
                          "command": commands.get(name), "wall_seconds": stage_seconds[name]} for name in stages},
        "tasks": {TASKS[name]: documents[name] for name in stages},
        "timings": {"stage_wall_seconds": stage_seconds, "this_run_seconds": this_run_seconds},
        "environment": environment(),
    }
    write_json(out / "results.json", document)
    write_text(out / "report.html", report_html(document, documents, out))
    return document


def report_html(document: dict[str, Any], documents: dict[str, dict[str, Any]], out: Path) -> str:
    budget = document["budget"]
    cohorts = documents["cohorts"]["data"]
    total = sum(v for v in document["timings"]["stage_wall_seconds"].values() if v)
    parts = [
        "<h1>neurodiff demo</h1>",
        f"<p>Three diffusion methods for brain MRI, each against the baselines its paper compared with and strong "
        f"simple ones, on the embedded synthetic cohorts, {budget['seeds']} seed(s) each; "
        f"{total / 60:.0f} min of computing in all. Tables: mean ± 95 % CI (1.96·sd/√n) over seeds; ↑ / ↓: higher / "
        f"lower is better; bold: the best mean. Under each table, a reading of it computed from the numbers.</p>",
        "<p class=note><b>Training budget.</b> This demo trains every model far less than the papers did (and less "
        "than the <code>--quick</code> benchmarks): "
        f"SECONDGRAM up to {budget['impute_epochs']} epochs, DDAE {budget['ddae_steps']} steps, "
        f"NDA {budget['nda_steps']} steps. It shows the whole workflow and an honest comparison at this budget; "
        "where a diffusion model loses to a simple baseline here, that is what was measured. The full reports "
        "and the commands below rerun any stage with more training (e.g. drop <code>--steps</code> / "
        "<code>--epochs</code> for the --quick presets, or <code>--quick</code> for the papers' presets).</p>",
        "<h2>Data</h2>",
        f"<p>Image cohort: {cohorts['images']} synthetic T1 slices at {cohorts['image_size']}×{cohorts['image_size']} "
        f"built from the MNI152 template, {cohorts['image_sites']} sites with their own intensity and noise, "
        f"{cohorts['controls']} controls, {cohorts['travellers']} travelling subjects imaged at every site, "
        f"{cohorts['patients']} ALS-like patients with planted severity and survival. Longitudinal table: "
        f"{cohorts['table_subjects']:,} subjects, {cohorts['table_paired']:,} with a follow-up visit, "
        f"{cohorts['table_features']} regional features and 14 labels.</p>",
        _figure("cohorts/cohort_traveller.png", "one travelling subject at every site", out),
    ]
    for name in ("impute", "harmonize", "normative", "engine"):
        parts.append(_section(name, document["stages"][name], documents[name], out))
    parts.append(_timing_table(document))
    env = document["environment"]
    parts.append(f"<p class=note>neurodiff {html.escape(str(env['neurodiff']))}, torch {html.escape(str(env['torch']))}, "
                 f"Python {html.escape(str(env['python']))}, {env['cpu_count']} CPU cores, "
                 f"{html.escape(str(env['cuda'] or 'no GPU'))}. All numbers: results.json beside this page.</p>")
    return page("neurodiff demo", "".join(parts))


def _section(name: str, stage: dict[str, Any], result: dict[str, Any], out: Path) -> str:
    headline = HEADLINES[name]
    methods = result["methods"]
    parts = [f"<h2>{html.escape(headline.title)}</h2>", f"<p class=note>{html.escape(headline.note)}</p>",
             methods_table(methods, list(headline.metrics), f"{headline.title}: headline metrics", headline.metrics,
                           headline.references, unranked=headline.unranked, p_values=headline.p_values,
                           unranked_per_metric={m: tuple(rows) for m, rows in headline.gamed_rows(methods).items()}),
             reading(methods, headline)]
    figures = "".join(_figure(f"{name}/{file}", caption, out) for file, caption in headline.figures.items())
    if figures:
        parts.append(f"<div class=figures>{figures}</div>")
    links = []
    if stage.get("report"):
        links.append(f"<a href='{html.escape(stage['report'])}'>full report</a> (every metric and figure)")
    links.append(f"<a href='{html.escape(stage['results'])}'>results.json</a>")
    parts.append(f"<p>{' · '.join(links)}</p>")
    if stage.get("command"):
        parts.append(f"<p class=note>Reproduce: <code>{html.escape(stage['command'])}</code></p>")
    return "".join(parts)


def _figure(path: str, caption: str, out: Path) -> str:
    if not (out / path).exists():
        return ""
    return (f"<figure><a href='{html.escape(path)}'><img src='{html.escape(path)}' alt='{html.escape(caption)}'></a>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _timing_table(document: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(name)}</th><td>{'–' if s is None else f'{s / 60:.1f}'}</td></tr>"
                   for name, s in document["timings"]["stage_wall_seconds"].items())
    return ("<table><caption>Minutes per stage (wall clock, including starting its process and writing its "
            "report)</caption><thead><tr><th>stage</th><th>minutes</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>")
