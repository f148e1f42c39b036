"""HTML tables of results.json for report.html: methods × metrics, "mean ± CI (n)"."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any


def format_cell(summary: dict[str, Any] | None, digits: int = 3) -> str:
    if not summary or summary.get("mean") is None:
        return "–"
    text = f"{summary['mean']:.{digits}f}"
    if summary.get("ci95") is not None:
        text += f" ± {summary['ci95']:.{digits}f}"
    return text


def methods_table(methods: dict[str, dict[str, Any]], metrics: Sequence[str], caption: str,
                  higher_is_better: dict[str, bool | None] | None = None,
                  references: dict[str, float | str] | None = None) -> str:
    """One HTML table, a row per method that has any of `metrics`; the best mean per column in bold.

    `higher_is_better` gives each metric's direction. A metric whose direction is None and that has a
    reference (a number, or the name of another metric of the same method holding it, e.g. site
    accuracy → ``"site_chance"``) is best closest to that reference; other metrics are not ranked.
    """
    rows = [m for m, values in methods.items() if any(k in values for k in metrics)]
    if not rows:
        return ""
    directions, references = higher_is_better or {}, references or {}
    best: dict[str, str] = {}
    for metric in metrics:
        direction = directions.get(metric)
        scored = [(methods[m][metric]["mean"], m) for m in rows
                  if metric in methods[m] and methods[m][metric].get("mean") is not None]
        if direction is not None and scored:
            best[metric] = (max(scored) if direction else min(scored))[1]
        elif metric in references:
            gaps = [(abs(mean - target), m) for mean, m in scored
                    if (target := _reference(methods[m], references[metric])) is not None]
            if gaps:
                best[metric] = min(gaps)[1]
    head = "".join(f"<th>{html.escape(m)}{_marker(directions.get(m), references.get(m))}</th>" for m in metrics)
    body = []
    for method in rows:
        cells = []
        for metric in metrics:
            text = html.escape(format_cell(methods[method].get(metric)))
            cells.append(f"<td><b>{text}</b></td>" if best.get(metric) == method else f"<td>{text}</td>")
        body.append(f"<tr><th>{html.escape(method)}</th>{''.join(cells)}</tr>")
    return (f"<table><caption>{html.escape(caption)}</caption><thead><tr><th>method</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


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
