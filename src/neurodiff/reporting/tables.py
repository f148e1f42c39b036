"""HTML tables of results.json for report.html: methods × metrics.

A cell is "mean ± CI" over seeds (the 95 % interval of :func:`neurodiff.reporting.results.summarize`; the
mean alone for one value), followed by "(n=k of N)" when only k of the N seeds gave a finite value;
"–" when none did. p-values are printed to 3 significant digits, in scientific notation below 10⁻³.
"""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

#: Two losses tie for "best" when within this relative tolerance, or within the absolute one near zero
#: (small enough not to merge p-values: 1e-10 and 5e-10 do not tie).
TIE_RELATIVE, TIE_ABSOLUTE = 1e-9, 1e-15


def format_number(value: float, digits: int = 3) -> str:
    """`value` with `digits` decimals."""
    return f"{value:.{digits}f}"


def format_p(value: float, digits: int = 3) -> str:
    """A p-value to `digits` significant digits, in scientific notation below 10⁻³ (``2.00e-06``)."""
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.{digits - 1}e}"
    return f"{value:#.{digits}g}"  # "#": keep trailing zeros (0.0500, not 0.05)


def format_cell(summary: dict[str, Any] | None, digits: int = 3, *, p_value: bool = False) -> str:
    """"mean ± ci95", plus "(n=k of N)" when only k of the N per-seed values are finite; "–" when none is.

    `p_value` formats the numbers with :func:`format_p` instead of fixed decimals.
    """
    if not summary or summary.get("mean") is None:
        return "–"
    number = format_p if p_value else format_number
    text = number(summary["mean"], digits)
    if summary.get("ci95") is not None:
        text += f" ± {number(summary['ci95'], digits)}"
    n, seeds = summary.get("n"), len(summary.get("values") or ())
    if n is not None and n < seeds:
        text += f" (n={n} of {seeds})"
    return text


def best_methods(losses: Mapping[str, float | None], unranked: Collection[str] = ()) -> set[str]:
    """The methods of least loss (lower = better, e.g. −mean for a higher-is-better metric).

    Every method within :data:`TIE_RELATIVE` (or :data:`TIE_ABSOLUTE`) of the least loss is best.
    Methods in `unranked` (rows shown for comparison that are not methods, e.g. the unharmonised images)
    and missing or non-finite losses take no part; when every remaining method ties (or only one
    remains), none is best.
    """
    ranked = {m: v for m, v in losses.items() if m not in unranked and v is not None and math.isfinite(v)}
    if not ranked:
        return set()
    least = min(ranked.values())
    best = {m for m, v in ranked.items() if _tied(v, least)}
    return set() if len(best) == len(ranked) else best


def _tied(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TIE_RELATIVE, abs_tol=TIE_ABSOLUTE)


def ranking_losses(means: Mapping[str, float], higher_is_better: bool | None,
                   targets: Mapping[str, float | None] | None = None) -> dict[str, float]:
    """Each method's loss for :func:`best_methods`: −mean when higher is better, the mean when lower is,
    else (direction None) the distance to the method's ideal value in `targets` (methods without one are
    left out). Empty when the metric is not ranked (no direction and no `targets`)."""
    if higher_is_better is not None:
        return {m: -mean if higher_is_better else mean for m, mean in means.items()}
    targets = targets or {}
    return {m: abs(mean - target) for m, mean in means.items() if (target := targets.get(m)) is not None}


def methods_table(methods: dict[str, dict[str, Any]], metrics: Sequence[str], caption: str,
                  higher_is_better: dict[str, bool | None] | None = None,
                  references: dict[str, float | str] | None = None, *,
                  unranked: Collection[str] = (), p_values: Collection[str] = (),
                  unranked_per_metric: Mapping[str, Collection[str]] | None = None) -> str:
    """One HTML table, a row per method that has any of `metrics`; the best means per column in bold.

    `higher_is_better` gives each metric's direction. A metric whose direction is None and that has a
    reference (a number, or the name of another metric of the same method holding it, e.g. site
    accuracy → ``"site_chance"``) is best closest to that reference; other metrics are not ranked.
    Ties are all bold, and a column where every ranked method ties has no bold (:func:`best_methods`).
    Rows in `unranked` (e.g. the unchanged images, or a planted truth) are shown but never bold;
    `unranked_per_metric` adds, per metric, rows never bold in that column only.
    Metrics in `p_values` are printed with :func:`format_p`.
    """
    rows = [m for m, values in methods.items() if any(k in values for k in metrics)]
    if not rows:
        return ""
    directions, references = higher_is_better or {}, references or {}
    left_out = unranked_per_metric or {}
    best = {metric: best_methods(metric_losses(methods, rows, metric, directions.get(metric), references.get(metric)),
                                 {*unranked, *left_out.get(metric, ())}) for metric in metrics}
    head = "".join(f"<th>{html.escape(m)}{_marker(directions.get(m), references.get(m))}</th>" for m in metrics)
    body = []
    for method in rows:
        cells = []
        for metric in metrics:
            text = html.escape(format_cell(methods[method].get(metric), p_value=metric in p_values))
            cells.append(f"<td><b>{text}</b></td>" if method in best[metric] else f"<td>{text}</td>")
        body.append(f"<tr><th>{html.escape(method)}</th>{''.join(cells)}</tr>")
    return (f"<table><caption>{html.escape(caption)}</caption><thead><tr><th>method</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def metric_losses(methods: Mapping[str, Mapping[str, Any]], rows: Sequence[str], metric: str,
                  direction: bool | None, reference: float | str | None = None) -> dict[str, float]:
    """:func:`ranking_losses` of `metric` for the methods `rows` of a results.json ``methods`` mapping (those
    with a mean); `reference` a number, or the name of the metric holding each method's own ideal value."""
    means = {m: mean for m in rows if (mean := (methods[m].get(metric) or {}).get("mean")) is not None}
    targets = {m: _reference(methods[m], reference) for m in means} if reference is not None else None
    return ranking_losses(means, direction, targets)


def _reference(values: dict[str, Any], reference: float | str) -> float | None:
    if isinstance(reference, str):
        return (values.get(reference) or {}).get("mean")
    return float(reference)


def _marker(direction: bool | None, reference: float | str | None) -> str:
    if direction is not None:
        return " ↑" if direction else " ↓"
    return f" (best near {reference})" if reference is not None else ""


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0 2em;font-size:0.9em}}caption{{text-align:left;font-weight:600;padding:0.3em 0}}
th,td{{border:1px solid #ccc;padding:0.3em 0.6em;text-align:right}}thead th{{background:#f2f2f2}}tbody th{{text-align:left}}
.note{{color:#555;font-size:0.9em}}
.figures{{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}}figure{{margin:0.5em 0}}.figures figure{{flex:1 1 30em;max-width:100%}}figure img{{max-width:100%}}figcaption{{color:#555;font-size:0.85em}}code{{background:#f4f4f4;padding:0 0.2em;word-break:break-all}}</style></head><body>{body}</body></html>
"""


def page(title: str, body: str) -> str:
    return PAGE.format(title=html.escape(title), body=body)
