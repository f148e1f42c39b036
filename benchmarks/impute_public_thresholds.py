"""Does SECONDGRAM train with the public code's fixed gradient thresholds, where the paper's calibration stalls?

Usage:  python benchmarks/impute_public_thresholds.py [--out benchmarks/results/impute_public_thresholds]
        [--seeds 2] [--jobs 2] [--epochs 1000] [--patience 50] [--clip 0.3] [--skip 1.8]

The paper calibrates its thresholds on one pass at initialisation (clip = mean gradient norm, skip =
3 × the maximum); on the embedded --quick table that skips 89-92 % of the updates at the paper's budget
and training stalls (benchmarks/results/impute_paper_budget). The public code hard-codes clip 0.3 and
skip 1.8 instead. This runs SECONDGRAM with those fixed thresholds on the same table, splits, seeds and
budget as the stored paper-budget run (`neurodiff impute benchmark --quick` without --data, --epochs 1000
--patience 50 --baseline-epochs 1000; only secondgram runs here, without the label-leakage refits), and
writes results.json with its metrics and training counts beside the stored run's secondgram, no_grad,
gan and locf for comparison.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from neurodiff.atomic import write_json
from neurodiff.data.longitudinal_table import longitudinal_arrays
from neurodiff.data.synthetic_longitudinal import (
    EVALUATION_PREVALENCE,
    LABEL_COLUMNS,
    LongitudinalConfig,
    generate_longitudinal,
)
from neurodiff.evaluation.longitudinal_benchmark import ImputeBenchmarkConfig, run_benchmark
from neurodiff.evaluation.seed_jobs import SeedJobs
from neurodiff.reporting.results import environment, summarize

STORED = Path(__file__).parent / "results" / "impute_paper_budget"
METRICS = ("pearson_feature", "pearson_subject", "euclidean", "cosine_distance", "frechet", "mean_correlation",
           "corr_matrix_diff")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/impute_public_thresholds"))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=50)
    parser.add_argument("--clip", type=float, default=0.3)
    parser.add_argument("--skip", type=float, default=1.8)
    args = parser.parse_args()

    table = generate_longitudinal(LongitudinalConfig.quick(prevalence=EVALUATION_PREVALENCE))
    arrays = longitudinal_arrays(table, labels=list(LABEL_COLUMNS), exclude=["years_since_first"],
                                 source="embedded synthetic cohort")
    config = ImputeBenchmarkConfig.quick(
        labels=arrays.label_columns, methods=("secondgram",), seeds=tuple(range(args.seeds)),
        downstream_labels=("parkinsonism", "stroke"), case_feature_pattern="_snc", case_label="parkinsonism",
        max_epochs=args.epochs, patience=args.patience, leakage_check=False,
        diffusion_params={"gradient_manipulation": "fixed", "clip": args.clip, "skip": args.skip})
    started = time.perf_counter()
    jobs = SeedJobs(jobs=args.jobs)
    jobs.check()
    result = run_benchmark(arrays, config, seed_jobs=jobs)
    seconds = time.perf_counter() - started

    values = result["per_seed"]["secondgram"]
    runs = [r["secondgram"] for r in result["runs"]]
    document = {
        "benchmark": "impute_public_thresholds",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "data": "embedded synthetic cohort (neurodiff synth longitudinal --quick), parkinsonism and stroke at 15 %",
        "settings": {"clip": args.clip, "skip": args.skip, "max_epochs": args.epochs, "patience": args.patience,
                     "seeds": list(config.seeds)},
        "secondgram_public_thresholds": {m: summarize(values[m]) for m in METRICS},
        "training": [{k: r[k] for k in ("epochs", "steps", "skipped", "clipped", "best_validation_pearson",
                                        "seconds", "thresholds")} for r in runs],
        "wall_seconds": round(seconds, 1),
        "environment": environment(),
    }
    if (STORED / "results.json").is_file():
        stored = json.loads((STORED / "results.json").read_text())["methods"]
        document["stored_paper_budget_run"] = {method: {m: stored[method][m] for m in METRICS}
                                               for method in ("secondgram", "no_grad", "gan", "locf") if method in stored}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", document)
    for method, scores in [("public thresholds", document["secondgram_public_thresholds"]),
                           *document.get("stored_paper_budget_run", {}).items()]:
        r = scores["pearson_feature"]
        spread = f" ± {r['ci95']:.3f}" if r.get("ci95") is not None else " (one seed)"
        print(f"{method}: per-feature r {r['mean']:.3f}{spread}")
    for seed, run in zip(config.seeds, document["training"]):
        print(f"seed {seed}: {run['epochs']} epochs, {run['skipped']} of {run['steps']} updates skipped, "
              f"{run['clipped']} clipped")
    print(f"Wrote {args.out / 'results.json'} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
