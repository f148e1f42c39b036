"""Speed of the embedded longitudinal table: generation and writing at the quick and the paper size.

Usage:  python benchmarks/synth_longitudinal_speed.py [--out benchmarks/results/synth_longitudinal] [--repeats 3]

Writes results.json (seconds and rows/s per size and step, best of `repeats`, and the environment).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from neurodiff import __version__
from neurodiff.atomic import write_json
from neurodiff.data.synthetic_longitudinal import LongitudinalConfig, generate_longitudinal, write_table


def _best_of(repeats: int, step) -> tuple[float, object]:
    """Smallest wall time of `repeats` calls of `step()`, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - start)
    return min(times), result


def measure(name: str, config: LongitudinalConfig, repeats: int) -> dict:
    seconds, frame = _best_of(repeats, lambda: generate_longitudinal(config))
    rows = len(frame)
    entry = {"config": {"n_subjects": config.n_subjects, "n_paired": config.n_paired,
                        "n_features": config.n_features, "seed": config.seed},
             "rows": rows, "columns": frame.shape[1], "memory_mb": round(frame.memory_usage().sum() / 1e6, 1),
             "generate": {"seconds": round(seconds, 3), "rows_per_s": round(rows / seconds)}}
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".csv", ".parquet"):
            path = Path(tmp) / f"long{suffix}"
            seconds, _ = _best_of(repeats, lambda: write_table(frame, path))
            entry[f"write{suffix.replace('.', '_')}"] = {
                "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds),
                "megabytes": round(path.stat().st_size / 1e6, 1)}
    print(f"{name}: {rows:,} rows x {config.n_features} features: generate {entry['generate']['seconds']} s, "
          f"csv {entry['write_csv']['seconds']} s, parquet {entry['write_parquet']['seconds']} s", flush=True)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/synth_longitudinal"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    sizes = {"quick": LongitudinalConfig.quick(), "paper": LongitudinalConfig.paper()}
    results = {
        "task": "synth_longitudinal_speed",
        "data": "neurodiff synth longitudinal (embedded UK-Biobank-like table), seed 0",
        "repeats": args.repeats, "timing": "best wall-clock seconds of the repeats",
        "sizes": {name: measure(name, config, args.repeats) for name, config in sizes.items()},
        "environment": {"neurodiff": __version__, "python": platform.python_version(), "numpy": np.__version__,
                        "pandas": pd.__version__, "platform": platform.platform(),
                        "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()},
    }
    write_json(args.out / "results.json", results)
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
