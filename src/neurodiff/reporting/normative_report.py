"""The normative benchmark's and the survival command's figures and report.html."""

from __future__ import annotations

import html
import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from neurodiff.reporting.tables import methods_table, page

#: Methods' score directions, for the figures' axis labels.
DIRECTION = {True: "higher = more normal", False: "higher = more deviant"}
#: The report's metrics that are p-values (printed to 3 significant digits, not 3 decimals).
P_VALUES = ("p", "p_likelihood_ratio", "p_adjusted", "ph_p", "logrank_p", "ks_p")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int, max_cols: int = 4, size: tuple[float, float] = (4.0, 3.3)):
    plt = _pyplot()
    cols = min(max_cols, max(n, 1))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def normative_figures(document: dict[str, Any], first: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """PNG figures into `out_dir` (name → file): metric bars, Kaplan–Meier per method, score
    distributions of controls vs patients, scores vs planted severity, NDA deviation maps."""
    from neurodiff.evaluation.normative_benchmark import HIGHER_IS_NORMAL, SEVERITY
    from neurodiff.reporting.figure_guard import draw_or_warn
    from neurodiff.reporting.survival_figures import (
        plot_kaplan_meier,
        plot_score_distributions,
    )

    plt = _pyplot()
    out_dir = Path(out_dir)
    files = metrics_figure(document, out_dir)

    def save(fig, name: str) -> None:
        fig.savefig(out_dir / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        files[name.removesuffix(".png")] = name

    methods = list(first.get("analyses", {}))

    def kaplan_meier() -> None:
        fig, axes = _grid(len(methods), max_cols=3, size=(5.6, 4.2))
        for ax, method in zip(axes, methods):
            plot_kaplan_meier(first["analyses"][method]["km"], ax=ax, title=f"{method} (seed {document['seeds'][0]})")
        fig.tight_layout()
        save(fig, "kaplan_meier.png")

    def score_distributions() -> None:
        is_patient = first["is_patient"]
        fig, axes = _grid(len(methods))
        for ax, method in zip(axes, methods):
            values = first["scores"][method]
            plot_score_distributions({"held-out controls": values[~is_patient], "patients": values[is_patient]},
                                     ax=ax, title=method, xlabel=f"score ({DIRECTION[HIGHER_IS_NORMAL[method]]})")
        fig.tight_layout()
        save(fig, "score_distributions.png")

    def score_vs_severity() -> None:
        is_patient = first["is_patient"]
        severity = first["scored_frame"][SEVERITY].astype(float).to_numpy()[is_patient]
        fig, axes = _grid(len(methods))
        for ax, method in zip(axes, methods):
            ax.scatter(severity, first["scores"][method][is_patient], s=8, alpha=0.6)
            ax.set(title=method, xlabel="planted severity", ylabel=f"score ({DIRECTION[HIGHER_IS_NORMAL[method]]})")
        fig.tight_layout()
        save(fig, "score_vs_severity.png")

    draw_or_warn("kaplan_meier.png", kaplan_meier)
    draw_or_warn("score_distributions.png", score_distributions)
    if "scored_frame" in first and SEVERITY in first["scored_frame"].columns:
        draw_or_warn("score_vs_severity.png", score_vs_severity)
    if first.get("deviation"):
        draw_or_warn("deviation_maps.png", lambda: save(deviation_figure(first["deviation"]), "deviation_maps.png"))
    return files


def metrics_figure(document: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """metrics.png into `out_dir`: bars of the main metrics, mean ± CI per method ({"metrics": file}, or {}
    when it could not be drawn)."""
    from neurodiff.evaluation.normative_benchmark import HIGHER_IS_BETTER, ORACLE
    from neurodiff.reporting.figure_guard import draw_or_warn
    from neurodiff.reporting.harmonization_figures import metric_bars

    plt = _pyplot()
    files: dict[str, str] = {}
    metrics = [m for m in ("c_index_expected", "hr_per_sd", "auroc_patients", "spearman_severity")
               if any(m in v for v in document["methods"].values())]

    def draw() -> None:
        fig = metric_bars(document, metrics, higher_is_better=HIGHER_IS_BETTER, unranked=(ORACLE,))
        fig.savefig(Path(out_dir) / "metrics.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        files["metrics"] = "metrics.png"

    draw_or_warn("metrics.png", draw)
    return files


def deviation_figure(examples: dict[str, Any]):
    """Rows: example patients (highest NDA similarity first); columns: image, healthy reconstruction, map."""
    plt = _pyplot()
    n = len(examples["images"])
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.3 * n), squeeze=False)
    vmax = float(np.percentile(examples["maps"], 99.5)) or 1.0
    for i in range(n):
        row = examples["frame"].iloc[i]
        label = f"{row['subject_id']}, sim {examples['similarity'][i]:.3f}"
        if "true_severity" in row:
            label += f", sev {float(row['true_severity']):.2f}"
        for j, (image, cmap, top) in enumerate(((examples["images"][i], "gray", 1.0),
                                                (examples["healthy"][i], "gray", 1.0),
                                                (examples["maps"][i], "magma", vmax))):
            ax = axes[i, j]
            ax.imshow(np.squeeze(image).T, cmap=cmap, vmin=0.0, vmax=top, origin="lower")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(("image", "healthy reconstruction", "|deviation|")[j], fontsize=9)
        axes[i, 0].set_ylabel(label, fontsize=7)
    fig.tight_layout()
    return fig


def report_html(document: dict[str, Any], figures: dict[str, str]) -> str:
    """report.html of the normative benchmark: Cox table, survival splits, severity recovery, figures."""
    from neurodiff.evaluation.normative_benchmark import HIGHER_IS_BETTER, ORACLE

    methods = document["methods"]
    # the oracle is the planted truth, not a method: shown, never bold
    table = partial(methods_table, higher_is_better=HIGHER_IS_BETTER, unranked=(ORACLE,), p_values=P_VALUES)
    parts = [
        "<h1>Normative benchmark (NDA and benchmarks)</h1>",
        f"<p class=note>{html.escape(str(document['data'].get('description', '')))}; seeds {document['seeds']}; "
        "mean ± 95 % CI (1.96·sd/√n) over seeds. Each method is fitted on the training controls of a seed and "
        "scores held-out controls and every patient; survival models are fitted on the patients. Score "
        "directions: nda and nda_no_age are similarities (higher = more normal, so HR &lt; 1 is the paper's "
        "direction); the others are deviations (higher = more deviant, HR &gt; 1 expected). oracle_severity is "
        "the planted severity itself: the ceiling, not a method (never bold). Bold: best mean per column (every "
        "tied one; none when all tie).</p>",
        table(methods, ["c_index_expected", "hr_ci_expected_side", "hr_per_sd", "hr_per_sd_ci_low",
                        "hr_per_sd_ci_high", "p", "p_likelihood_ratio", "hr_ci_excludes_1", "c_index", "ph_p"],
              "Cox proportional hazards of survival on the score (per SD of the score). Ranked: c_index_expected = "
              "concordance of the score with survival in its expected direction (below 0.5: it runs the wrong way); "
              "hr_ci_expected_side = share of seeds whose 95 % CI lies wholly on the expected side of 1. Not ranked, "
              "because a score and its negation get the same: the model's c_index, the two-sided p (Wald) and "
              "p_likelihood_ratio, hr_ci_excludes_1; ph_p = proportional-hazards test, small = violated"),
        table(methods, ["hr_per_sd_adjusted", "p_adjusted"], "Cox model adjusted for age and sex"),
        table(methods, ["logrank_p", "ks_statistic", "ks_p"], "Patients split at the median score: "
              "log-rank test of the Kaplan–Meier curves, Kolmogorov–Smirnov test of the times of death (both "
              "two-sided, so not ranked: see the Kaplan–Meier figure for which half lives longer)"),
        table(methods, ["spearman_severity", "auroc_patients"], "Recovery of the planted severity "
              "(Spearman, patients, oriented so positive = more deviant) and separation of patients from "
              "held-out controls (AUROC)"),
    ]
    parts.append(_hr_per_unit_table(methods))
    training = document.get("timings", {}).get("training", [])
    if training:
        # a merged benchmark may have run a method on some seeds only
        timed = dict.fromkeys(m for t in training for m in t if m != "seed")
        rows = "".join(f"<tr><th>{html.escape(m)}</th><td>"
                       f"{np.mean([t[m]['fit_seconds'] for t in training if m in t]):.1f}</td></tr>" for m in timed)
        parts.append("<table><caption>Training seconds (mean over seeds; nda_mahalanobis reuses nda's model)"
                     f"</caption><thead><tr><th>method</th><th>fit s</th></tr></thead><tbody>{rows}</tbody></table>")
    parts.append(_figures_html(figures))
    return page("neurodiff: normative benchmark", "".join(parts))


def _hr_per_unit_table(methods: dict[str, Any]) -> str:
    rows = []
    for method, values in methods.items():
        if "hr" not in values or "hr_ci" not in values:
            continue
        intervals = "; ".join(f"{_fmt(lo)}–{_fmt(hi)}" for lo, hi in values["hr_ci"]["per_seed"])
        per_seed = ", ".join(f"{v:.3g}" for v in values["hr"]["values"] if v is not None)
        rows.append(f"<tr><th>{html.escape(method)}</th><td>{per_seed}</td><td>{intervals}</td></tr>")
    return ("<table><caption>Hazard ratio per unit of the score (the paper's unit; for a cosine similarity one "
            "unit is the whole range) per seed, with its 95 % CI</caption><thead><tr><th>method</th><th>HR per unit"
            f"</th><th>95 % CI</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _figures_html(figures: dict[str, str]) -> str:
    if not figures:
        return ""
    return "<h2>Figures</h2>" + "".join(
        f"<figure><img src='{html.escape(f)}' style='max-width:100%'><figcaption>{html.escape(n)}</figcaption>"
        "</figure>" for n, f in figures.items())


def survival_report_html(document: dict[str, Any], out_dir: Path) -> str:
    """report.html of `neurodiff normative survival`; writes km.png into `out_dir`."""
    from neurodiff.reporting.survival_figures import plot_kaplan_meier

    plt = _pyplot()
    result, data = document["result"], document["data"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    plot_kaplan_meier(result["km"], ax=ax, title=f"split at the median {data['score_column']}")
    fig.savefig(Path(out_dir) / "km.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    def row(name: str, cox: dict[str, Any]) -> str:
        lo, hi = cox["hr_per_sd_ci"]
        ulo, uhi = cox["hr_ci"]
        return (f"<tr><th>{html.escape(name)}</th><td>{_fmt(cox['hr'])} ({_fmt(ulo)}–{_fmt(uhi)})</td>"
                f"<td>{cox['hr_per_sd']:.3f} ({lo:.3f}–{hi:.3f})</td><td>{cox['p']:.3g}</td>"
                f"<td>{_fmt(cox.get('p_likelihood_ratio')) if 'p_likelihood_ratio' in cox else '–'}</td>"
                f"<td>{cox['c_index']:.3f}</td><td>{_fmt(cox.get('ph_p'))}</td></tr>")

    rows = [row(f"{data['score_column']} (unadjusted)", result)]
    if result.get("adjusted"):
        rows.append(row(f"{data['score_column']} adjusted for {', '.join(data['covariates'])}", result["adjusted"]))
    warnings = "".join(f"<p class=note>Warning: {html.escape(w)}</p>" for w in document.get("warnings", []))
    body = (
        f"<h1>Survival on {html.escape(data['score_column'])}</h1>{warnings}"
        f"<p class=note>{result['n']} patients, {result['events']} events. Scores: {html.escape(data['scores'])}"
        f"{'; manifest: ' + html.escape(data['manifest']) if data.get('manifest') else ''}.</p>"
        "<table><caption>Cox proportional hazards</caption><thead><tr><th>model</th><th>HR per unit (95 % CI)</th>"
        "<th>HR per SD (95 % CI)</th><th>p (Wald)</th><th>p (likelihood ratio)</th><th>C-index</th><th>PH test p</th>"
        "</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        "<table><caption>Split at the median score</caption><thead><tr><th>threshold</th><th>log-rank p</th>"
        "<th>KS statistic (times of death)</th><th>KS p</th></tr></thead><tbody><tr>"
        f"<td>{_fmt(result.get('threshold'))}</td><td>{_fmt(result.get('logrank_p'))}</td>"
        f"<td>{_fmt(result.get('ks_statistic'))}</td><td>{_fmt(result.get('ks_p'))}</td></tr></tbody></table>"
        "<figure><img src='km.png' style='max-width:100%'><figcaption>Kaplan–Meier curves</figcaption></figure>"
    )
    return page("neurodiff: survival", body)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a (overflow)" if value is not None and not math.isnan(value) else "n/a"
    return f"{value:.3g}"
