"""Join benchmark output folders into one, as if one run had made them: more seeds, more methods.

A benchmark at full size runs for hours per seed. Rather than rerun it to add seeds or methods, run only
what is missing (``neurodiff <command> benchmark --first-seed N`` for the next seeds, ``--methods`` for
other methods on the same seeds) and join the folders with ``neurodiff <command> merge``. This module is
what the three benchmarks share: reading and checking results.json, and merging the documents. What
else a folder holds is merged by the benchmark's own module (:mod:`~neurodiff.evaluation.
longitudinal_benchmark_merge`, :mod:`~neurodiff.evaluation.image_benchmark_merge`).

What must hold, checked before anything is written:

- every folder is a benchmark of the same kind (results.json's ``task``) on the same data: one
  fingerprint among the folders that recorded one (the data may then have been read from another path);
  when a folder has none (written before the fingerprint was recorded), the same description for all;
  the same sizes (and labels, sites, ...) for all;
- the same settings apart from the seeds, the methods and the device; a device that differs is noted,
  recorded per folder, and the merged ``config.device`` reads ``mixed (...)``;
- a value that two folders both hold (the same method, metric and seed: the method-independent rows, a
  method run twice) agrees within a tolerance (by default 1e-4 relative or absolute, whichever is larger,
  between every two folders; the first folder's value is kept), and so does the seed's split. Runs made
  alike agree bit for bit, so a larger difference means other data, code version or settings, and the
  merge refuses rather than choose. Another thread count or CPU can also move a trained model's metrics;
  a larger tolerance then accepts that knowingly.

What is not checked: seeds that only one folder holds share no value with the others, so the merge cannot
tell whether another code version made them. It says where the folders' environments differ (neurodiff,
python, torch and numpy versions, CPU capability and features, GPU, torch threads per seed).

The merged document holds each method's per-seed values on the union of the seeds (null where a method was
not run on a seed, which the merge reports), its mean and 95 % CI recomputed, and ``method_seeds``: the seeds
each method ran on, so that a later merge can fill those gaps from another folder. A wall-clock metric
(``BenchmarkKind.timing_metrics``, e.g. harmonisation's ``images_per_second``) is never the same twice and
is not checked; the first folder's is kept. ``timings.merged_from`` lists
each folder with its seeds, methods, device, threads per seed, timings and environment;
``timings.threads_per_seed`` is their common value (a list when they differ); ``environment`` is the first
folder's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurodiff.reporting.results import results_document

# the settings folders may differ in: what ran, and how (the device and thread count change the last bits of
# training, which the value check's tolerance allows; environment differences are reported)
FREE_CONFIG = ("seeds", "methods", "device", "progress")
FREE_DATA = ("splits", "fingerprint", "description")  # compared seed by seed / across all folders / see below
ENVIRONMENT_NOTED = ("neurodiff", "python", "torch", "numpy", "cpu_capability", "cpu_features", "cuda")
# how close two folders' values of the same method, metric and seed must be by default: runs made alike agree
# bit for bit; other data or splits move values by far more; another thread count or CPU can move a trained
# model's metrics by more than this, and then --tolerance lets the user accept it knowingly
TOLERANCE = 1e-4


@dataclass(frozen=True)
class BenchmarkKind:
    """What tells one benchmark's output folders apart from another's."""

    task: str  # results.json's "task"
    command: str  # the CLI group: `neurodiff <command> benchmark`
    files: tuple[str, ...]  # the files every output folder holds
    methods: tuple[str, ...]  # the benchmark's method order; other rows follow as they came
    # wall-clock measurements among the metrics: never the same twice, so not checked; the first folder's is kept
    timing_metrics: tuple[str, ...] = ()


@dataclass
class BenchmarkFolder:
    """One benchmark output folder, read: its results.json and what else its benchmark needs (``extras``)."""

    path: Path
    document: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.document["seeds"]]


def read_results(path: str | Path, kind: BenchmarkKind) -> dict[str, Any]:
    """results.json of a `kind` output folder (ValueError naming the folder and file when it is not one).

    Only the folder, its files and the task are checked here; :func:`check_document` checks the entries.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder (give the --out folders of `neurodiff {kind.command} benchmark`)")
    missing = [name for name in kind.files if not (path / name).is_file()]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)}; not an output folder of `neurodiff {kind.command} benchmark`")
    try:
        document = json.loads((path / "results.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: unreadable results.json ({error})") from None
    if not isinstance(document, dict) or document.get("task") != kind.task:
        task = document.get("task") if isinstance(document, dict) else None
        raise ValueError(f"{path}/results.json: task {task!r}, not {kind.task!r}: not an output folder of "
                         f"`neurodiff {kind.command} benchmark`")
    return document


def check_document(where: Path, document: dict[str, Any]) -> None:
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
    recorded = document.get("method_seeds")
    if recorded is not None and not (isinstance(recorded, dict) and all(
            isinstance(v, list) and set(v) <= set(seeds) for v in recorded.values())):
        raise ValueError(f"{where}: 'method_seeds' must map each method to some of the seeds {seeds}")
    for method, metrics in document["methods"].items():
        for metric, summary in (metrics.items() if isinstance(metrics, dict) else [(None, None)]):
            values = summary.get("values") if isinstance(summary, dict) else None
            if not isinstance(values, list) or len(values) != len(seeds) or not all(
                    v is None or isinstance(v, (int, float)) for v in values):
                raise ValueError(f"{where}: methods.{method}.{metric}.values must hold one number or null per "
                                 f"seed ({len(seeds)})")


def merge_documents(folders: Sequence[BenchmarkFolder], kind: BenchmarkKind, log: Callable[[str], None] = print,
                    tolerance: float = TOLERANCE) -> dict[str, Any]:
    """The merged results.json document of `folders`; ValueError when they cannot join.

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
    _check_same_data(folders)
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
                                 f"{splits[seed][0]}; the folders did not split the same data alike")
            splits.setdefault(seed, (size, folder.path))
        ran = seeds_run(folder)
        for method, metrics in folder.document["methods"].items():
            covered.setdefault(method, set()).update(ran[method])
            for metric, summary in metrics.items():
                cell = cells.setdefault(method, {}).setdefault(metric, {})
                for seed, value in zip(folder.seeds, summary["values"]):
                    if seed not in ran[method]:
                        continue
                    if metric in kind.timing_metrics:  # not checked
                        cell.setdefault(seed, []).append((value, folder))
                    else:
                        put_value(cell, method, metric, seed, value, folder, tolerance)
    per_seed = {method: {metric: [_nan(values[seed][0][0]) if seed in values else math.nan for seed in seeds]
                         for metric, values in cells[method].items()}
                for method in method_order(kind, cells)}
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
    config.update(seeds=seeds, methods=method_order(kind, {m: None for f in folders
                                                           for m in f.document["config"]["methods"]}))
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
        if seed_threads(folder) not in threads:  # a merged folder's may be a list: no set, no dict keys
            threads.append(seed_threads(folder))
    merged_from = [{"folder": str(f.path), "seeds": f.seeds, "methods": list(f.document["config"]["methods"]),
                    "device": f.document["config"].get("device"), "threads_per_seed": seed_threads(f),
                    "timings": _timings(f), "environment": _environment(f)}
                   for f in folders]
    total = sum(float(_timings(f).get("total_seconds") or 0.0) for f in folders)
    timings = {"total_seconds": total, "threads_per_seed": threads[0] if len(threads) == 1 else threads,
               "merged_from": merged_from}
    document = results_document(task=kind.task, data=data, seeds=seeds, per_seed=per_seed, timings=timings,
                                config=config, method_seeds={m: sorted(covered[m]) for m in per_seed})
    document["environment"] = _environment(first) or document["environment"]
    return document


def seeds_run(folder: BenchmarkFolder) -> dict[str, set[int]]:
    """method → the seeds `folder` ran it on: all its seeds, except in a merged folder (``method_seeds``), whose
    nulls where a method was not run are gaps, not values, and can be filled by another folder."""
    recorded = folder.document.get("method_seeds") or {}
    return {method: set(recorded[method]) if method in recorded else set(folder.seeds)
            for method in folder.document["methods"]}


def method_order(kind: BenchmarkKind, methods: dict[str, Any]) -> list[str]:
    """The benchmark's method order first, then the rest as they came (reference rows, variants)."""
    return [m for m in kind.methods if m in methods] + [m for m in methods if m not in kind.methods]


def folders_from_seed(folders: Sequence[BenchmarkFolder], seed: int) -> list[BenchmarkFolder]:
    """The folders whose first seed is `seed`: a benchmark keeps its first seed's artefacts (figures, matrices)."""
    return [f for f in folders if f.seeds and f.seeds[0] == seed]


def _check_same_data(folders: Sequence[BenchmarkFolder]) -> None:
    """One dataset for all: one fingerprint among the folders that recorded one; when any folder did not
    (written before the fingerprint was recorded), one description for all too; the same sizes and labels."""
    prints: dict[str, Path] = {}
    for folder in folders:
        fingerprint = folder.document["data"].get("fingerprint")
        if fingerprint and prints and fingerprint not in prints:
            other = next(iter(prints.values()))
            raise ValueError(f"{folder.path}: other data than {other} (the fingerprints differ)")
        if fingerprint:
            prints.setdefault(fingerprint, folder.path)
    every_print = all(f.document["data"].get("fingerprint") for f in folders)
    first = folders[0]
    for folder in folders[1:]:
        a, b = first.document["data"], folder.document["data"]
        free = FREE_DATA if every_print else tuple(k for k in FREE_DATA if k != "description")
        for key in sorted((set(a) | set(b)) - set(free)):
            if a.get(key) != b.get(key):
                raise ValueError(f"{folder.path}: other data than {first.path} (data {key!r}: "
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
        seen = {str(f.path): seed_threads(f) if key.endswith("per seed") else _environment(f).get(key) for f in folders}
        if len({repr(v) for v in seen.values()}) > 1:
            log(f"note: the folders ran with different {key}: "
                + "; ".join(f"{path}: {value}" for path, value in seen.items()))


def seed_threads(folder: BenchmarkFolder) -> int | list | None:
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


def put_value(cell: dict[int, list[tuple[Any, BenchmarkFolder]]], method: str, metric: str, seed: int,
              value: Any, folder: BenchmarkFolder, tolerance: float) -> None:
    """Add a folder's value of (method, metric, seed): a number, null, or a list of them; it must agree with
    every value already there (each pair, so that the order of the folders does not matter). The first
    folder's value is the one kept."""
    for known, where in cell.get(seed, []):
        if not _agree(known, value, tolerance):
            env = [{**{k: _environment(f).get(k) for k in ("torch", "cpu_capability")},
                    "threads per seed": seed_threads(f)} for f in (where, folder)]
            raise ValueError(f"{folder.path}: {method} {metric} at seed {seed} is {value}, but {where.path} has "
                             f"{known} (more than the tolerance {tolerance:g} apart). The same seed run alike gives "
                             f"the same value: other data, code version or settings? Their environments: {env[1]} "
                             f"against {env[0]}; if only threads or CPU differ, a larger --tolerance keeps the first "
                             "folder's value")
    cell.setdefault(seed, []).append((value, folder))


def _agree(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, list) or isinstance(b, list):
        return (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)
                and all(_agree(x, y, tolerance) for x, y in zip(a, b)))
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
