"""Time `make demo` on a fresh clone, install included, and record its peak memory.

    python benchmarks/demo_fresh_clone.py --out benchmarks/results/demo

Clones the repository's committed HEAD into a temporary folder, runs `make demo` there under GNU time
(`/usr/bin/time -v`), and writes results.json: wall-clock seconds of the whole command and of each demo
stage (from the demo's own results.json), and the peak resident memory of the largest single process
(GNU time's "Maximum resident set size", which covers the demo's child processes). It also copies the
demo's report.html, results.json and figures next to the results, so they can be looked at.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "demo")
    parser.add_argument("--python", default=sys.executable, help="the Python that creates the clone's .venv")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="neurodiff-fresh-") as scratch:
        clone = Path(scratch) / "neurodiff"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-v", "make", "demo", f"PYTHON={args.python}"], cwd=clone,
                              stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
        peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
        if done.returncode != 0:
            sys.exit(f"make demo failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        demo = json.loads((clone / "demo-output" / "results.json").read_text())
        results = {
            "task": "make demo on a fresh clone (install included)",
            "commit": commit,
            "timings": {"make_demo_seconds": round(seconds, 1),
                        "demo_stage_seconds": demo["timings"]["stage_seconds"],
                        "install_and_other_seconds": round(seconds - sum(demo["timings"]["stage_seconds"].values()), 1)},
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "targets": {"make_demo_seconds": 1200, "peak_rss_mb": 6144},
            "budget": demo["budget"],
            "environment": demo["environment"],
        }
        (args.out / "demo-output").mkdir(parents=True, exist_ok=True)
        for item in (clone / "demo-output").iterdir():
            if item.name in ("report.html", "results.json") or item.is_dir() and item.name != "cohorts":
                target = args.out / "demo-output" / item.name
                shutil.rmtree(target, ignore_errors=True)
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, target)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["timings"], indent=2), f"\npeak memory {results['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
