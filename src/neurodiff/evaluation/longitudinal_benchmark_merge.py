"""Join imputation benchmark folders into one, as if one run had made them: more seeds, more methods.

A benchmark at the paper's budget runs for hours per seed. Rather than rerun it to add seeds or methods,
run only what is missing (``neurodiff impute benchmark --first-seed N`` for the next seeds, ``--methods``
for other methods on the same seeds) and join the folders with ``neurodiff impute merge``.

The checks and the merged results.json are those of :mod:`~neurodiff.evaluation.benchmark_merge`: the same
table (results.json records its SHA-256 fingerprint; when a folder has none, the same description), the
same settings apart from seeds, methods and device, and values two folders both hold (the method-independent
``reference`` rows, a method run twice) within the tolerance. This module adds the imputation benchmark's
other files: runs.json per seed (every folder's training histories of that seed, the first folder's where
two trained the same method), and correlations.npz of the lowest seed (as a benchmark keeps its first
seed's), from the folders that ran that seed. The CLI then draws the figures and report.html.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurodiff.evaluation.benchmark_merge import (
    TOLERANCE,
    BenchmarkFolder,
    BenchmarkKind,
    check_document,
    folders_from_seed,
    merge_documents,
    read_results,
)
from neurodiff.evaluation.longitudinal_benchmark import ALL_METHODS

KIND = BenchmarkKind(task="longitudinal_imputation", command="impute",
                     files=("results.json", "runs.json", "correlations.npz"), methods=ALL_METHODS)


def read_benchmark_folder(path: str | Path) -> BenchmarkFolder:
    """Read an ``impute benchmark`` output folder; ValueError naming the folder and file when it is not one.

    ``extras`` holds ``runs`` (runs.json) and ``correlations`` (correlations.npz).
    """
    path = Path(path)
    document = read_results(path, KIND)
    check_document(path / "results.json", document)
    try:
        runs = json.loads((path / "runs.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: unreadable runs.json ({error})") from None
    seeds = document["seeds"]
    if not isinstance(runs, list) or [run.get("seed") if isinstance(run, dict) else None for run in runs] != seeds:
        raise ValueError(f"{path}/runs.json: its seeds do not match results.json's {seeds}")
    try:
        with np.load(path / "correlations.npz") as archive:
            correlations = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{path}/correlations.npz: unreadable ({error})") from None
    return BenchmarkFolder(path, document, {"runs": runs, "correlations": correlations})


def merge_benchmarks(folders: Sequence[BenchmarkFolder], log: Callable[[str], None] = print,
                     tolerance: float = TOLERANCE) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                            dict[str, np.ndarray]]:
    """The merged (results.json document, runs, correlations) of `folders`; ValueError when they cannot join.

    Values of the same method, metric and seed must agree within `tolerance` (relative or absolute, whichever
    is larger: ``math.isclose``), every two folders; the first folder's is kept.
    """
    document = merge_documents(folders, KIND, log, tolerance)
    seeds = document["seeds"]
    return document, _merge_runs(folders, seeds), _lowest_seed_correlations(folders, seeds[0], log)


def _merge_runs(folders: Sequence[BenchmarkFolder], seeds: list[int]) -> list[dict[str, Any]]:
    """runs.json per seed: every folder's training histories of that seed (the first folder's where two
    trained the same method on it, whose values were checked to agree within the tolerance)."""
    merged: dict[int, dict[str, Any]] = {seed: {"seed": seed} for seed in seeds}
    for folder in folders:
        for run in folder.extras["runs"]:
            for method, info in run.items():
                merged[int(run["seed"])].setdefault(method, info)
    return [merged[seed] for seed in seeds]


def _lowest_seed_correlations(folders: Sequence[BenchmarkFolder], seed: int,
                              log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """The correlation matrices of `seed` (a folder keeps its first seed's), from the folders that began there."""
    correlations: dict[str, np.ndarray] = {}
    for folder in folders_from_seed(folders, seed):
        for name, matrix in folder.extras["correlations"].items():
            correlations.setdefault(name, matrix)
    absent = [m for f in folders for m in f.extras["correlations"] if m not in correlations]
    if absent:
        log(f"note: the correlation figure shows seed {seed}; no folder kept that seed's matrix of "
            f"{', '.join(dict.fromkeys(absent))} (a folder keeps its first seed's)")
    return correlations
