"""results.json: what a benchmark or the main job measured, in one machine-readable file.

Layout (ARCHITECTURE.md): ``task``, ``data`` (a description), ``seeds``, ``methods`` → method →
metric → ``{"mean", "ci95", "values"}`` (one value per seed), ``timings``, ``environment``.
The 95 % interval is mean ± 1.96 · sd / √n over seeds (METHODS.md), null for one seed.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurodiff import __version__
from neurodiff.atomic import write_json


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, half-width of the 95 % interval (1.96 · sd / √n) and the per-seed values.

    Undefined values (NaN, e.g. an AUROC with one class in a test set) are written as null and left
    out of the mean and interval; ``n`` counts the values that entered them.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("no values to summarize")
    finite = array[np.isfinite(array)]
    mean = float(finite.mean()) if finite.size else None
    ci95 = float(1.96 * finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else None
    return {"mean": mean, "ci95": ci95, "n": int(finite.size),
            "values": [float(v) if np.isfinite(v) else None for v in array]}


def add_seed_metrics(per_seed: dict[str, dict[str, list[float]]], metrics: dict[str, dict[str, float]],
                     index: int, n_seeds: int) -> None:
    """Put one seed's method → metric → value at position `index` of the per-seed lists (of `n_seeds`).

    A metric that another seed has and this one lacks stays NaN at this seed's position (null in
    results.json), so every list lines up with ``seeds``.
    """
    for method, values in metrics.items():
        for metric, value in values.items():
            per_seed.setdefault(method, {}).setdefault(metric, [math.nan] * n_seeds)[index] = float(value)


def environment() -> dict[str, Any]:
    """The software and hardware a result was measured on."""
    import torch

    from neurodiff.training import cpu_allocator
    from neurodiff.training.trainer import cpu_flags

    env = {
        "neurodiff": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # the ISA torch's own kernels use, and the vector and bf16 features the CPU reports: this VM has
        # been seen both with and without AVX-512, which changes fp32 and above all bf16 speeds
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_features": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # glibc's mmap / trim thresholds change CPU training speed by up to ~10 % (training/cpu_allocator.py)
        "malloc": cpu_allocator.describe(),
    }
    return env


def results_document(
    task: str,
    data: dict[str, Any],
    seeds: Sequence[int],
    per_seed: dict[str, dict[str, Sequence[float]]],
    timings: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble the results.json document from per-seed metric values."""
    methods = {
        method: {metric: summarize(values) for metric, values in metrics.items()}
        for method, metrics in per_seed.items()
    }
    return {
        "task": task,
        "data": data,
        "seeds": list(seeds),
        "methods": methods,
        "timings": timings or {},
        "environment": environment(),
        **extra,
    }


def write_results(path: str | Path, document: dict[str, Any]) -> Path:
    path = Path(path)
    write_json(path, document)
    return path
