"""Join imputation benchmark folders into one, as if one run had made them: more seeds, more methods.

A benchmark at the paper's budget runs for hours per seed. Rather than rerun it to add seeds or methods,
run only what is missing (``neurodiff impute benchmark --first-seed N`` for the next seeds, ``--methods``
for other methods on the same seeds) and join the folders with ``neurodiff impute merge``.

What must hold, checked before anything is written:

- every folder is an imputation benchmark (results.json, runs.json, correlations.npz) of the same table:
  one fingerprint among the folders that recorded one (the table may then have been read from another
  path); when a folder has none (written before the fingerprint was recorded), the same description for
  all; the same sizes and labels for all;
- the same settings apart from the seeds, the methods and the device (epochs, patience, labels,
  downstream task, ...); a device that differs is noted, recorded per folder, and the merged
  ``config.device`` reads ``mixed (...)``;
- a value that two folders both hold (the same method, metric and seed: the method-independent
  ``reference`` rows, a method run twice) agrees within a tolerance (by default 1e-4 relative or
  absolute, whichever is larger, between every two folders; the first folder's value is kept), and so do
  the seed's split sizes. Runs made alike agree bit for bit, so a larger difference means another table,
  code version or settings, and the merge refuses rather than choose. Another thread count or CPU can also move a trained model's metrics;
  a larger tolerance then accepts that knowingly.

What is not checked: seeds that only one folder holds share no value with the others, so the merge cannot
tell whether another code version made them. It says where the folders' environments differ (neurodiff,
python, torch and numpy versions, CPU capability and features, GPU, torch threads per seed).

What the merged folder holds: results.json with each method's per-seed values on the union of the seeds
(null where a method was not run on a seed, which the merge reports), its mean and 95 % CI recomputed;
runs.json per seed; correlations.npz of the lowest seed (as a benchmark keeps its first seed's), from the
folders that ran that seed; report.html and the figures. ``timings.merged_from`` lists each folder with its
seeds, methods, device, threads per seed, timings and environment; ``timings.threads_per_seed`` is their
common value (a list when they differ); ``environment`` is the first folder's.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurodiff.reporting.results import results_document

TASK = "longitudinal_imputation"
FILES = ("results.json", "runs.json", "correlations.npz")
# the settings folders may differ in: what ran, and how (the device and thread count change the last bits of
# training, which the value check's tolerance allows; environment differences are reported)
FREE_CONFIG = ("seeds", "methods", "device", "progress")
FREE_DATA = ("splits", "fingerprint", "description")  # compared seed by seed / across all folders / see below
ENVIRONMENT_NOTED = ("neurodiff", "python", "torch", "numpy", "cpu_capability", "cpu_features", "cuda")
# how close two folders' values of the same method, metric and seed must be by default: runs made alike agree
# bit for bit; another table or split moves values by far more; another thread count or CPU can move a
# trained model's metrics by more than this, and then --tolerance lets the user accept it knowingly
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
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: unreadable results.json or runs.json ({error})") from None
    if not isinstance(document, dict) or document.get("task") != TASK:
        task = document.get("task") if isinstance(document, dict) else None
        raise ValueError(f"{path}/results.json: task {task!r}, not an imputation benchmark ({TASK!r})")
    _check_document(path / "results.json", document)
    seeds = document["seeds"]
    if not isinstance(runs, list) or [run.get("seed") if isinstance(run, dict) else None for run in runs] != seeds:
        raise ValueError(f"{path}/runs.json: its seeds do not match results.json's {seeds}")
    try:
        with np.load(path / "correlations.npz") as archive:
            correlations = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{path}/correlations.npz: unreadable ({error})") from None
    return BenchmarkFolder(path, document, runs, correlations)


def _check_document(where: Path, document: dict[str, Any]) -> None:
    """The entries the merge reads, with the shapes it needs (ValueError naming the file and entry)."""
    for key, kind in (("data", dict), ("seeds", list), ("methods", dict), ("config", dict)):
        if not isinstance(document.get(key), kind):
            raise ValueError(f"{where}: no {key!r} entry (a {kind.__name__})")
    for key in ("timings", "environment"):
        if not isinstance(document.get(key) or {}, dict):
            raise ValueError(f"{where}: {key!r} must be an object")
    total = (document.get("timings") or {}).get("total_seconds")
    if total is not None and not isinstance(total, (int, float)):
        raise ValueError(f"{where}: timings.total_seconds must be a number, got {total!r}")
    seeds = document["seeds"]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or len(set(seeds)) < len(seeds):
        raise ValueError(f"{where}: 'seeds' must be distinct integers, got {seeds}")
    if not isinstance(document["config"].get("methods"), list):
        raise ValueError(f"{where}: no 'config.methods' list")
    for method, metrics in document["methods"].items():
        for metric, summary in (metrics.items() if isinstance(metrics, dict) else [(None, None)]):
            values = summary.get("values") if isinstance(summary, dict) else None
            if not isinstance(values, list) or len(values) != len(seeds) or not all(
                    v is None or isinstance(v, (int, float)) for v in values):
                raise ValueError(f"{where}: methods.{method}.{metric}.values must hold one number or null per "
                                 f"seed ({len(seeds)})")


def merge_benchmarks(folders: Sequence[BenchmarkFolder], log: Callable[[str], None] = print,
                     tolerance: float = TOLERANCE) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                            dict[str, np.ndarray]]:
    """The merged (results.json document, runs, correlations) of `folders`; ValueError when they cannot join.

    Values of the same method, metric and seed must agree within `tolerance` (relative or absolute, whichever
    is larger: ``math.isclose``), every two folders; the first folder's is kept.
    """
    if len(folders) < 2:
        raise ValueError("give at least two benchmark folders to merge")
    if not tolerance >= 0:
        raise ValueError(f"the tolerance must be 0 or more, got {tolerance}")
    paths = [f.path.resolve() for f in folders]
    twice = sorted({str(f.path) for f, p in zip(folders, paths) if paths.count(p) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)}: given more than once")
    _check_same_table(folders)
    first = folders[0]
    for folder in folders[1:]:
        _check_same_settings(first, folder)
    _note_environments(folders, log)
    seeds = sorted({s for folder in folders for s in folder.seeds})
    cells: dict[str, dict[str, dict[int, list[tuple[float | None, BenchmarkFolder]]]]] = {}
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
                    cell = cells.setdefault(method, {}).setdefault(metric, {})
                    _put(cell, method, metric, seed, value, folder, tolerance)
    per_seed = {method: {metric: [_nan(values[seed][0][0]) if seed in values else math.nan for seed in seeds]
                         for metric, values in cells[method].items()}
                for method in _method_order(cells)}
    for method in per_seed:
        lacking = [s for s in seeds if s not in covered[method]]
        if lacking:
            ran = len(seeds) - len(lacking)
            log(f"note: {method} was not run on seed{'s' if len(lacking) > 1 else ''} "
                f"{', '.join(map(str, lacking))}: its mean and CI are over {ran} seed{'s' if ran > 1 else ''}")
        for metric, values in cells[method].items():
            gaps = sorted(covered[method] - set(values))
            if gaps:
                log(f"note: {method} has no {metric} on seed{'s' if len(gaps) > 1 else ''} "
                    f"{', '.join(map(str, gaps))} (a folder that ran it there did not report it)")
    config = dict(first.document["config"])
    config.update(seeds=seeds, methods=_method_order({m: None for f in folders for m in f.document["config"]["methods"]}))
    data = {k: v for k, v in first.document["data"].items() if k not in ("splits", "fingerprint")}
    fingerprint = next((f.document["data"]["fingerprint"] for f in folders if f.document["data"].get("fingerprint")), None)
    data.update({"fingerprint": fingerprint} if fingerprint else {}, splits=[splits[s][0] for s in seeds])
    devices = list(dict.fromkeys(str(f.document["config"].get("device")) for f in folders))
    if len(devices) > 1:
        log("note: the folders ran on different devices: "
            + "; ".join(f"{f.path}: {f.document['config'].get('device')}" for f in folders))
        config["device"] = f"mixed ({', '.join(devices)})"
    threads: list[Any] = []
    for folder in folders:
        if _seed_threads(folder) not in threads:  # a merged folder's may be a list: no set, no dict keys
            threads.append(_seed_threads(folder))
    merged_from = [{"folder": str(f.path), "seeds": f.seeds, "methods": list(f.document["config"]["methods"]),
                    "device": f.document["config"].get("device"), "threads_per_seed": _seed_threads(f),
                    "timings": _timings(f), "environment": _environment(f)}
                   for f in folders]
    total = sum(float(_timings(f).get("total_seconds") or 0.0) for f in folders)
    timings = {"total_seconds": total, "threads_per_seed": threads[0] if len(threads) == 1 else threads,
               "merged_from": merged_from}
    document = results_document(task=TASK, data=data, seeds=seeds, per_seed=per_seed, timings=timings, config=config)
    document["environment"] = _environment(first) or document["environment"]
    return document, _merge_runs(folders, seeds), _lowest_seed_correlations(folders, seeds[0], log)


def _check_same_table(folders: Sequence[BenchmarkFolder]) -> None:
    """One table for all: one fingerprint among the folders that recorded one; when any folder did not (written
    before the fingerprint was recorded), one description for all too; the same sizes and labels."""
    prints: dict[str, Path] = {}
    for folder in folders:
        fingerprint = folder.document["data"].get("fingerprint")
        if fingerprint and prints and fingerprint not in prints:
            other = next(iter(prints.values()))
            raise ValueError(f"{folder.path}: another table than {other} (the tables' fingerprints differ)")
        if fingerprint:
            prints.setdefault(fingerprint, folder.path)
    every_print = all(f.document["data"].get("fingerprint") for f in folders)
    first = folders[0]
    for folder in folders[1:]:
        a, b = first.document["data"], folder.document["data"]
        free = FREE_DATA if every_print else tuple(k for k in FREE_DATA if k != "description")
        for key in sorted((set(a) | set(b)) - set(free)):
            if a.get(key) != b.get(key):
                raise ValueError(f"{folder.path}: another table than {first.path} (data {key!r}: "
                                 f"{_short(b.get(key))} against {_short(a.get(key))})")


def _check_same_settings(first: BenchmarkFolder, other: BenchmarkFolder) -> None:
    a, b = first.document["config"], other.document["config"]
    for key in sorted(set(a) | set(b)):
        if key not in FREE_CONFIG and a.get(key) != b.get(key):
            raise ValueError(f"{other.path}: other settings than {first.path} ({key} = "
                             f"{_short(b.get(key))} against {_short(a.get(key))}); only the seeds, the methods "
                             "and the device may differ")


def _note_environments(folders: Sequence[BenchmarkFolder], log: Callable[[str], None]) -> None:
    """Say where the folders ran differently (versions, CPU, threads, GPU): the merge cannot check that seeds in
    only one folder would come out the same elsewhere."""
    for key in (*ENVIRONMENT_NOTED, "torch threads per seed"):
        seen = {str(f.path): _seed_threads(f) if key.endswith("per seed") else _environment(f).get(key) for f in folders}
        if len({repr(v) for v in seen.values()}) > 1:
            log(f"note: the folders ran with different {key}: "
                + "; ".join(f"{path}: {value}" for path, value in seen.items()))


def _seed_threads(folder: BenchmarkFolder) -> int | list | None:
    """The torch threads each seed trained with: what a merged folder recorded; the worker processes' (--jobs K:
    cpu_count // K; Slurm: the CPUs per task; submitit-local: cpu_count // the number of seeds); else the
    process's own (environment.torch_threads)."""
    env, timings = _environment(folder), _timings(folder)
    if "threads_per_seed" in timings:
        return timings["threads_per_seed"]
    jobs = timings.get("seed_jobs") if isinstance(timings.get("seed_jobs"), dict) else {}
    launcher, cpus = jobs.get("launcher"), env.get("cpu_count")
    if launcher == "local" and (jobs.get("jobs") or 1) > 1 and cpus:
        return max(1, int(cpus) // int(jobs["jobs"]))
    if launcher == "slurm":
        return (jobs.get("slurm") or {}).get("cpus_per_task")
    if launcher == "submitit-local" and cpus:
        return max(1, int(cpus) // len(folder.seeds))
    return env.get("torch_threads")


def _environment(folder: BenchmarkFolder) -> dict[str, Any]:
    return folder.document.get("environment") or {}


def _timings(folder: BenchmarkFolder) -> dict[str, Any]:
    return folder.document.get("timings") or {}


def _put(cell: dict[int, list[tuple[float | None, BenchmarkFolder]]], method: str, metric: str, seed: int,
         value: float | None, folder: BenchmarkFolder, tolerance: float) -> None:
    """Add a folder's value of (method, metric, seed); it must agree with every value already there (each pair,
    so that the order of the folders does not matter). The first folder's value is the one kept."""
    for known, where in cell.get(seed, []):
        same = (known is None and value is None) or (
            known is not None and value is not None
            and math.isclose(known, value, rel_tol=tolerance, abs_tol=tolerance))
        if not same:
            env = [{**{k: _environment(f).get(k) for k in ("torch", "cpu_capability")},
                    "threads per seed": _seed_threads(f)} for f in (where, folder)]
            raise ValueError(f"{folder.path}: {method} {metric} at seed {seed} is {value}, but {where.path} has "
                             f"{known} (more than the tolerance {tolerance:g} apart). The same seed run alike gives "
                             f"the same value: another table, code version or settings? Their environments: {env[1]} "
                             f"against {env[0]}; if only threads or CPU differ, a larger --tolerance keeps the first "
                             "folder's value")
    cell.setdefault(seed, []).append((value, folder))


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _method_order(methods: dict[str, Any]) -> list[str]:
    """The benchmark's method order first (secondgram, ..., ridge), then the rest as they came
    (reference, secondgram_without_<label>)."""
    from neurodiff.evaluation.longitudinal_benchmark import ALL_METHODS

    return [m for m in ALL_METHODS if m in methods] + [m for m in methods if m not in ALL_METHODS]


def _merge_runs(folders: Sequence[BenchmarkFolder], seeds: list[int]) -> list[dict[str, Any]]:
    """runs.json per seed: every folder's training histories of that seed (the first folder's where two
    trained the same method on it, whose values were checked to agree within the tolerance)."""
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
        log(f"note: the correlation figure shows seed {seed}; no folder kept that seed's matrix of "
            f"{', '.join(dict.fromkeys(absent))} (a folder keeps its first seed's)")
    return correlations


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
