"""Join imputation benchmark folders into one, as if one run had made them: more seeds, more methods.

A benchmark at the paper's budget runs for hours per seed. Rather than rerun it to add seeds or methods,
run only what is missing (``neurodiff impute benchmark --first-seed N`` for the next seeds, ``--methods``
for other methods on the same seeds) and join the folders with ``neurodiff impute merge``.

What must hold, checked before anything is written:

- every folder is an imputation benchmark (results.json, runs.json, correlations.npz) of the same table:
  the same fingerprint, sizes and labels where both folders recorded a fingerprint (the table may then have
  been read from another path), else the same description, sizes and labels (folders written before the
  fingerprint was recorded);
- the same settings apart from the seeds and the methods (epochs, patience, labels, downstream task, ...);
- a value that two folders both hold (the same method, metric and seed: the method-independent
  ``reference`` rows, a method run twice) is the same in both, to 1e-4 (another number of torch threads
  moves the last bits), and so are the seed's split sizes. The benchmark is deterministic per seed, so a
  larger difference means another table, another code version or other settings, and the merge refuses
  rather than choose; within the tolerance the first folder's value is kept.

What the merged folder holds: results.json with each method's per-seed values on the union of the seeds
(null where a method was not run on a seed, which the merge reports), its mean and 95 % CI recomputed;
runs.json per seed; correlations.npz of the lowest seed (as a benchmark keeps its first seed's), from the
folders that ran that seed; report.html and the figures. ``timings.merged_from`` lists each folder with its
seeds, methods, timings and environment; ``environment`` is the first folder's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurodiff.reporting.results import results_document

TASK = "longitudinal_imputation"
FILES = ("results.json", "runs.json", "correlations.npz")
FREE_CONFIG = ("seeds", "methods")  # the settings folders may differ in
FREE_DATA = ("splits", "fingerprint")  # compared seed by seed / only where both have it
# how close two folders' values of the same method, metric and seed must be: a seed run with another number
# of torch threads can move the last bits (~1e-6 relative); another table or split moves them by far more
TOLERANCE = 1e-4


@dataclass
class BenchmarkFolder:
    """One benchmark output folder, read."""

    path: Path
    document: dict[str, Any]
    runs: list[dict[str, Any]]
    correlations: dict[str, np.ndarray]

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.document["seeds"]]


def read_benchmark_folder(path: str | Path) -> BenchmarkFolder:
    """Read an ``impute benchmark`` output folder; ValueError naming the folder and file when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder (give the --out folders of `neurodiff impute benchmark`)")
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)}; not an `impute benchmark` output folder")
    try:
        document = json.loads((path / "results.json").read_text())
        runs = json.loads((path / "runs.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: unreadable JSON ({error})") from None
    if not isinstance(document, dict) or document.get("task") != TASK:
        task = document.get("task") if isinstance(document, dict) else None
        raise ValueError(f"{path}/results.json: task {task!r}, not an imputation benchmark ({TASK!r})")
    for key in ("data", "seeds", "methods", "config"):
        if key not in document:
            raise ValueError(f"{path}/results.json: no {key!r} entry")
    seeds = document["seeds"]
    if not isinstance(runs, list) or [run.get("seed") for run in runs if isinstance(run, dict)] != seeds:
        raise ValueError(f"{path}/runs.json: its seeds do not match results.json's {seeds}")
    try:
        with np.load(path / "correlations.npz") as archive:
            correlations = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}/correlations.npz: unreadable ({error})") from None
    return BenchmarkFolder(path, document, runs, correlations)


def merge_benchmarks(folders: Sequence[BenchmarkFolder],
                     log: Callable[[str], None] = print) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                                   dict[str, np.ndarray]]:
    """The merged (results.json document, runs, correlations) of `folders`; ValueError when they cannot join."""
    if len(folders) < 2:
        raise ValueError("give at least two benchmark folders to merge")
    paths = [f.path.resolve() for f in folders]
    twice = sorted({str(f.path) for f, p in zip(folders, paths) if paths.count(p) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)}: given more than once")
    first = folders[0]
    for folder in folders[1:]:
        _check_same_benchmark(first, folder)
    seeds = sorted({s for folder in folders for s in folder.seeds})
    cells: dict[str, dict[str, dict[int, tuple[float | None, Path]]]] = {}
    covered: dict[str, set[int]] = {}
    splits: dict[int, tuple[Any, Path]] = {}
    for folder in folders:
        sizes = list(folder.document["data"].get("splits") or [])
        sizes += [None] * (len(folder.seeds) - len(sizes))
        for seed, size in zip(folder.seeds, sizes):
            if seed in splits and splits[seed][0] != size:
                raise ValueError(f"{folder.path}: seed {seed}'s split is {size}, but {splits[seed][1]} has "
                                 f"{splits[seed][0]}; the folders did not split the same table alike")
            splits.setdefault(seed, (size, folder.path))
        for method, metrics in folder.document["methods"].items():
            covered.setdefault(method, set()).update(folder.seeds)
            for metric, summary in metrics.items():
                for seed, value in zip(folder.seeds, summary["values"]):
                    _put(cells.setdefault(method, {}).setdefault(metric, {}), method, metric, seed, value, folder.path)
    per_seed = {method: {metric: [_nan(values[seed][0]) if seed in values else math.nan for seed in seeds]
                         for metric, values in cells[method].items()}
                for method in _method_order(cells)}
    for method in per_seed:
        lacking = [s for s in seeds if s not in covered[method]]
        if lacking:
            ran = len(seeds) - len(lacking)
            log(f"note: {method} was not run on seed{'s' if len(lacking) > 1 else ''} "
                f"{', '.join(map(str, lacking))}: its mean and CI are over {ran} seed{'s' if ran > 1 else ''}")
    config = dict(first.document["config"])
    config.update(seeds=seeds, methods=_method_order({m: None for f in folders for m in f.document["config"]["methods"]}))
    data = {k: v for k, v in first.document["data"].items() if k != "splits"}
    data["splits"] = [splits[s][0] for s in seeds]
    merged_from = [{"folder": str(f.path), "seeds": f.seeds, "methods": list(f.document["config"]["methods"]),
                    "timings": f.document.get("timings", {}), "environment": f.document.get("environment", {})}
                   for f in folders]
    total = sum(float(f.document.get("timings", {}).get("total_seconds") or 0.0) for f in folders)
    document = results_document(task=TASK, data=data, seeds=seeds, per_seed=per_seed,
                                timings={"total_seconds": total, "merged_from": merged_from}, config=config)
    document["environment"] = first.document.get("environment", document["environment"])
    return document, _merge_runs(folders, seeds), _lowest_seed_correlations(folders, seeds[0], log)


def _check_same_benchmark(first: BenchmarkFolder, other: BenchmarkFolder) -> None:
    a, b = first.document, other.document
    prints = a["data"].get("fingerprint"), b["data"].get("fingerprint")
    if None not in prints and prints[0] != prints[1]:
        raise ValueError(f"{other.path}: another table than {first.path} (the tables' fingerprints differ)")
    free = (*FREE_DATA, "description") if None not in prints else FREE_DATA  # the same table under another path
    data_a = {k: v for k, v in a["data"].items() if k not in free}
    data_b = {k: v for k, v in b["data"].items() if k not in free}
    for key in sorted(set(data_a) | set(data_b)):
        if data_a.get(key) != data_b.get(key):
            raise ValueError(f"{other.path}: another table than {first.path} (data {key!r}: "
                             f"{_short(data_b.get(key))} against {_short(data_a.get(key))})")
    for key in sorted(set(a["config"]) | set(b["config"])):
        if key not in FREE_CONFIG and a["config"].get(key) != b["config"].get(key):
            raise ValueError(f"{other.path}: other settings than {first.path} ({key} = "
                             f"{_short(b['config'].get(key))} against {_short(a['config'].get(key))}); only the "
                             "seeds and the methods may differ")


def _put(cell: dict[int, tuple[float | None, Path]], method: str, metric: str, seed: int, value: float | None,
         path: Path) -> None:
    if seed not in cell:
        cell[seed] = (value, path)
        return
    known, where = cell[seed]
    same = (known is None and value is None) or (
        known is not None and value is not None and math.isclose(known, value, rel_tol=TOLERANCE, abs_tol=TOLERANCE))
    if not same:
        raise ValueError(f"{path}: {method} {metric} at seed {seed} is {value}, but {where} has {known}; the same "
                         "seed should give the same value (another table, code version or settings?)")


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _method_order(methods: dict[str, Any]) -> list[str]:
    """The benchmark's method order first (secondgram, ..., ridge), then the rest as they came
    (reference, secondgram_without_<label>)."""
    from neurodiff.evaluation.longitudinal_benchmark import ALL_METHODS

    return [m for m in ALL_METHODS if m in methods] + [m for m in methods if m not in ALL_METHODS]


def _merge_runs(folders: Sequence[BenchmarkFolder], seeds: list[int]) -> list[dict[str, Any]]:
    """runs.json per seed: every folder's training histories of that seed (the first folder's where two
    trained the same method on it, whose values were checked equal)."""
    merged: dict[int, dict[str, Any]] = {seed: {"seed": seed} for seed in seeds}
    for folder in folders:
        for run in folder.runs:
            for method, info in run.items():
                merged[int(run["seed"])].setdefault(method, info)
    return [merged[seed] for seed in seeds]


def _lowest_seed_correlations(folders: Sequence[BenchmarkFolder], seed: int,
                              log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """The correlation matrices of `seed` (a folder keeps its first seed's), from the folders that began there."""
    correlations: dict[str, np.ndarray] = {}
    for folder in folders:
        if folder.seeds and folder.seeds[0] == seed:
            for name, matrix in folder.correlations.items():
                correlations.setdefault(name, matrix)
    absent = [m for f in folders for m in f.correlations if m not in correlations]
    if absent:
        log(f"note: the correlation figure shows seed {seed}; {', '.join(dict.fromkeys(absent))} "
            f"{'was' if len(set(absent)) == 1 else 'were'} not run on it")
    return correlations


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
