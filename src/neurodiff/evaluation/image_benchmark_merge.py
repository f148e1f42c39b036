"""Join harmonisation or normative benchmark folders into one: ``neurodiff harmonize|normative merge``.

The checks and the merged results.json are those of :mod:`~neurodiff.evaluation.benchmark_merge`: the same
image cohort (results.json records its fingerprint, :func:`~neurodiff.data.image_manifest.cohort_fingerprint`;
when a folder has none, the same description), the same settings apart from seeds, methods and device, and
values two folders both hold within the tolerance. What this module adds:

- ``timings.training`` per seed, joined as the methods' fitting times of that seed from every folder (the
  first folder's where two fitted the same method); the harmonisation benchmark's ``timings.throughput``
  (a speed measurement, not a seed's) is the first folder's that has one;
- the normative benchmark's per-seed Cox CIs (``methods.<method>.hr_ci``), checked like the values, and
  their geometric mean recomputed over the seeds the method ran on;
- the figures: a benchmark draws its examples, latents and curves from its first seed. The merged folder
  takes those of its lowest seed from the folders that began there (the one that ran the most methods
  first, then any figure the others add, e.g. a method's latent map); the metric bars are redrawn from the
  merged values by the command.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurodiff.evaluation.benchmark_merge import (
    TOLERANCE,
    BenchmarkFolder,
    BenchmarkKind,
    check_document,
    folders_from_seed,
    merge_documents,
    put_value,
    read_results,
    seeds_run,
)

#: drawn again from the merged values, not copied
METRICS_FIGURE = "metrics.png"


def _kinds() -> dict[str, BenchmarkKind]:
    from neurodiff.evaluation import harmonization_benchmark, normative_benchmark

    return {
        "harmonize": BenchmarkKind(task="harmonization", command="harmonize", files=("results.json", "report.html"),
                                   methods=harmonization_benchmark.ALL_METHODS, timing_metrics=("images_per_second",)),
        "normative": BenchmarkKind(task="normative", command="normative", files=("results.json", "report.html"),
                                   methods=normative_benchmark.ALL_METHODS),
    }


@dataclass
class MergedImageBenchmark:
    """What `neurodiff harmonize|normative merge` writes: the document, and the figures to copy."""

    document: dict[str, Any]
    figures: list[Path]  # the figures to copy (the lowest seed's, without the metric bars), in report order


def read_image_benchmark_folder(path: str | Path, command: str) -> BenchmarkFolder:
    """Read a ``harmonize benchmark`` or ``normative benchmark`` (`command`) output folder; ValueError naming
    the folder and file when it is not one. ``extras`` holds ``hr_ci`` (normative: method → per-seed
    [lower, upper]) and ``figures`` (the PNG files its report.html shows, in that order)."""
    path = Path(path)
    kind = _kinds()[command]
    document = read_results(path, kind)
    hr_ci = _pop_hr_ci(path / "results.json", document) if command == "normative" else {}
    check_document(path / "results.json", document)
    return BenchmarkFolder(path, document, {"hr_ci": hr_ci, "figures": _report_figures(path)})


def merge_image_benchmarks(folders: Sequence[BenchmarkFolder], command: str, log: Callable[[str], None] = print,
                           tolerance: float = TOLERANCE) -> MergedImageBenchmark:
    """The merged benchmark of `folders` (read by :func:`read_image_benchmark_folder`); ValueError when they
    cannot join. Values of the same method, metric and seed must agree within `tolerance`."""
    document = merge_documents(folders, _kinds()[command], log, tolerance)
    seeds = document["seeds"]
    timings = document["timings"]
    timings["training"] = _per_seed_entries(folders, seeds)
    throughputs = [f.document["timings"]["throughput"] for f in folders
                   if isinstance((f.document.get("timings") or {}).get("throughput"), list)]
    if throughputs:  # a speed measurement, not a seed's: the first folder's that measured it
        timings["throughput"] = next((t for t in throughputs if t), [])
    if command == "normative":
        from neurodiff.evaluation.normative_benchmark import attach_hr_ci

        attach_hr_ci(document, _merge_hr_ci(folders, seeds, tolerance), document["method_seeds"])
    return MergedImageBenchmark(document, _lowest_seed_figures(folders, seeds[0], log))


def _lowest_seed_figures(folders: Sequence[BenchmarkFolder], seed: int, log: Callable[[str], None]) -> list[Path]:
    """The figures of the folders that began at `seed` (a benchmark draws its figures from its first seed): those of
    the one that ran the most methods, then any file the others add (a method's latent map); never the metric bars."""
    sources = sorted(folders_from_seed(folders, seed), key=lambda f: -len(f.document["config"]["methods"]))
    if not sources:
        log(f"note: no folder began at seed {seed}, so none kept its figures; the merged report has the metric "
            "bars only")
        return []
    chosen: dict[str, Path] = {}
    for folder in sources:
        for name in folder.extras["figures"]:
            if name != METRICS_FIGURE:
                chosen.setdefault(name, folder.path / name)
    shown = {m for f in sources for m in f.document["config"]["methods"]}
    others = {m for f in folders for m in f.document["config"]["methods"]} - shown
    if chosen and others:
        log(f"note: the figures other than the metric bars show seed {seed}, which no folder ran "
            f"{', '.join(sorted(others))} on")
    if len(sources) > 1 and chosen:
        log(f"note: the figures drawn from all methods of a run (examples, curves) show those of {sources[0].path}")
    return list(chosen.values())


def _pop_hr_ci(where: Path, document: dict[str, Any]) -> dict[str, list[Any]]:
    """Take each method's ``hr_ci`` entry out of the document (it is not a metric summary); method → per seed."""
    hr_ci = {}
    seeds = document.get("seeds")
    for method, metrics in (document.get("methods") or {}).items():
        if isinstance(metrics, dict) and "hr_ci" in metrics:
            entry = metrics.pop("hr_ci")
            per_seed = entry.get("per_seed") if isinstance(entry, dict) else None
            if not isinstance(per_seed, list) or not isinstance(seeds, list) or len(per_seed) != len(seeds) or not all(
                    isinstance(pair, list) and len(pair) == 2 and all(v is None or isinstance(v, (int, float))
                                                                      for v in pair) for pair in per_seed):
                raise ValueError(f"{where}: methods.{method}.hr_ci.per_seed must hold one [lower, upper] per seed")
            hr_ci[method] = per_seed
    return hr_ci


def _merge_hr_ci(folders: Sequence[BenchmarkFolder], seeds: list[int], tolerance: float) -> dict[str, list[Any]]:
    """method → [lower, upper] per seed ([null, null] where it was not run), checked like the values."""
    cells: dict[str, dict[int, list]] = {}
    for folder in folders:
        ran = seeds_run(folder)
        for method, per_seed in folder.extras["hr_ci"].items():
            for seed, pair in zip(folder.seeds, per_seed):
                if seed in ran.get(method, ()):
                    put_value(cells.setdefault(method, {}), method, "hr_ci", seed, pair, folder, tolerance)
    return {method: [cell[seed][0][0] if seed in cell else [None, None] for seed in seeds]
            for method, cell in cells.items()}


def _per_seed_entries(folders: Sequence[BenchmarkFolder], seeds: list[int]) -> list[dict[str, Any]]:
    """``timings.training`` per seed: every folder's methods of that seed (the first folder's where two ran one)."""
    merged: dict[int, dict[str, Any]] = {seed: {"seed": seed} for seed in seeds}
    for folder in folders:
        for entry in (folder.document.get("timings") or {}).get("training") or []:
            if isinstance(entry, dict) and entry.get("seed") in merged:
                for method, value in entry.items():
                    merged[entry["seed"]].setdefault(method, value)
    return [merged[seed] for seed in seeds]


def _report_figures(folder: Path) -> list[str]:
    """The PNG files of `folder` that its report.html shows, in the report's order."""
    try:
        report = (folder / "report.html").read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{folder}: unreadable report.html ({error})") from None
    names = dict.fromkeys(re.findall(r"<img src='([^'/\\]+\.png)'", report))
    return [name for name in names if (folder / name).is_file()]
