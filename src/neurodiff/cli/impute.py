"""`neurodiff impute fit|predict|benchmark|merge`: SECONDGRAM longitudinal imputation."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from neurodiff.cli import seed_options
from neurodiff.cli.benchmark_merge import TOLERANCE, check_first_seed, first_seed_option
from neurodiff.cli.out_folder import check_out_folder

app = typer.Typer(
    help="SECONDGRAM: generate missing follow-up imaging features from the first visit and labels.",
    no_args_is_help=True,
    add_completion=False,
)


def _thresholds(text: str, variant: str) -> dict[str, float]:
    """--thresholds CLIP,SKIP as positive numbers with CLIP < SKIP; refused for variants without gradient
    manipulation (vanilla, pretrained, no_grad), which it would silently turn on."""
    from neurodiff.methods.longitudinal.secondgram import PRESETS

    if PRESETS.get(variant, {}).get("gradient_manipulation") == "none":
        raise ValueError(f"--thresholds sets gradient manipulation, which variant {variant!r} turns off")
    parts = [p.strip() for p in text.split(",")]
    try:
        clip, skip = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--thresholds must be CLIP,SKIP (two numbers, e.g. 0.3,1.8), got {text!r}") from None
    if not (0 < clip < skip < float("inf")):
        raise ValueError(f"--thresholds needs 0 < CLIP < SKIP (finite), got clip {clip:g} and skip {skip:g}")
    return {"clip": clip, "skip": skip}


def _columns(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _fail(error: Exception) -> None:
    typer.echo(f"neurodiff impute: {error}", err=True)
    raise typer.Exit(2) from error


@contextmanager
def _table_warnings(show: bool = True) -> Iterator[None]:
    """Print the warnings meant for the user as lines on stderr: the table reader's (rows it does not use:
    other visits, empty follow-ups; subjects without any visit-1 feature value; numeric columns a fitted
    model does not know), too few paired subjects for early stopping, and a fit that skipped most updates."""
    from neurodiff.data.longitudinal_table import TableWarning
    from neurodiff.methods.longitudinal.secondgram import FewValidationSubjectsWarning, MostlySkippedWarning

    shown = (TableWarning, FewValidationSubjectsWarning, MostlySkippedWarning)
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            for category in shown:
                warnings.simplefilter("always", category)
            yield
    finally:
        for warning in caught:
            if issubclass(warning.category, shown):
                if show:
                    typer.echo(f"neurodiff impute: warning: {warning.message}", err=True)
            else:  # any other warning goes on as usual
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


SUBJECT_HELP = "Subject id column (read as text: 007 stays 007)."
VISIT_HELP = "Visit column (1 = first visit, 2 = follow-up; rows of other visits are ignored, with a warning)."


@app.command("fit")
def fit(
    data: Path = typer.Option(..., "--data", help="Long-format table (.csv or .parquet): subject, visit, labels, features."),
    labels: str = typer.Option(..., "--labels", help="Comma-separated label columns to condition on (read at visit 1)."),
    out: Path = typer.Option(..., "--out", help="Folder for the saved model (must be absent or empty)."),
    features: str = typer.Option(None, "--features", help="Comma-separated feature columns (default: all other numeric columns)."),
    exclude: str = typer.Option(None, "--exclude", help="Comma-separated numeric columns that are neither labels nor features."),
    subject: str = typer.Option("subject_id", "--subject", help=SUBJECT_HELP),
    visit: str = typer.Option("visit", "--visit", help=VISIT_HELP),
    variant: str = typer.Option("secondgram", "--variant", help="secondgram, secondgram_noised_schedule, vanilla, pretrained, no_grad, no_self, or "
                                 "secondgram_warmup_calibration (not in the paper: thresholds calibrated after 5 epochs)."),
    quick: bool = typer.Option(False, "--quick", help="At most 50 epochs, patience 10 (CPU minutes); default: the paper's 1000 / 50."),
    epochs: int = typer.Option(None, "--epochs", help="Maximum epochs (overrides the preset)."),
    thresholds: str = typer.Option(None, "--thresholds", help="CLIP,SKIP: fixed gradient-norm thresholds instead of the "
                                   "calibrated ones, e.g. 0.3,1.8 (the public code's) or 0.45,2.1 (its paired-only "
                                   "ablation). Not with the variants that turn gradient manipulation off."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split, initialisation and noise."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 or bf16."),
) -> None:
    """Fit SECONDGRAM on a long-format table and save the model.

    Example (every numeric column that is not a label, the subject or the visit is a feature; --exclude
    the others, e.g. a follow-up interval, or they are generated too):
      neurodiff impute fit --data visits.csv --labels sex,age,stroke --exclude years_since_first --out model

    On the synthetic table (neurodiff synth longitudinal), the --labels and --exclude lists are in
    docs/longitudinal-imputation.md.

    On several processes (data-parallel; the batch of 256 is shared between them):
      torchrun --standalone --nproc_per_node 2 -m neurodiff impute fit --data visits.csv --labels sex,age --out model
    """
    from neurodiff.methods.longitudinal import SecondGram
    from neurodiff.training import resolve_device
    from neurodiff.training.distributed import is_main_process

    params = dict(labels=_columns(labels), features=_columns(features), exclude=_columns(exclude) or (),
                  subject=subject, visit=visit, seed=seed, device=device, precision=precision)
    if quick:
        params.update(max_epochs=50, patience=10)
    if epochs is not None:
        params["max_epochs"] = epochs
    try:
        if thresholds is not None:
            params.update(gradient_manipulation="fixed", **_thresholds(thresholds, variant))
        check_out_folder(out)
        resolve_device(device)  # before any work
        model = SecondGram.preset(variant, **params)
        with _table_warnings(show=is_main_process()):
            arrays = model.read(data)
            model.fit(arrays)
        if not is_main_process():  # under torchrun, rank 0 writes the model and reports
            return
        model.save(out)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        _fail(error)
    h = model.history_
    typer.echo(
        f"Fitted {variant} on {model.n_train_samples_:,} training samples ({len(model.feature_columns_)} features, "
        f"{len(model.label_columns_)} labels): {len(h['epoch_loss'])} epochs, best validation per-feature "
        f"Pearson {h.get('best_score', float('nan')):.3f}, {h['skipped']} skipped and {h['clipped']} clipped steps. "
        f"Saved to {out}"
    )


@app.command("predict")
def predict(
    model: Path = typer.Option(..., "--model", help="Folder written by `neurodiff impute fit`."),
    data: Path = typer.Option(..., "--data", help="Long-format table with the same columns as at fit time."),
    out: Path = typer.Option(..., "--out", help="Completed table to write (.csv or .parquet; never the input)."),
    samples: int = typer.Option(1, "--samples", help="Generated follow-ups per subject."),
    all_subjects: bool = typer.Option(False, "--all-subjects", help="Generate for every subject, not only those without a follow-up."),
    seed: int = typer.Option(None, "--seed", help="Sampling seed (default: the model's)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto, for sampling (whatever device the model was fitted on)."),
) -> None:
    """Write the table completed with generated follow-ups (visit 2), each flagged generated=True.

    Example:  neurodiff impute predict --model model --data table.csv --out completed.csv
    """
    from neurodiff.atomic import atomic_path
    from neurodiff.data.longitudinal_table import read_table
    from neurodiff.methods.longitudinal import SecondGram
    from neurodiff.saving import ModelFolderError

    try:
        if out.resolve() == data.resolve():
            raise ValueError(f"--out {out} is the input table; write the completed table elsewhere")
        if out.suffix.lower() not in (".csv", ".parquet"):
            raise ValueError(f"--out {out} must end in .csv or .parquet")
        if samples < 1:
            raise ValueError(f"--samples must be at least 1, got {samples}")
        estimator = SecondGram.load(model, device=device)
        with _table_warnings():
            completed = estimator.complete(read_table(data, subject=estimator.subject), n_samples=samples,
                                           all_subjects=all_subjects, seed=seed, source=str(data))
        with atomic_path(out) as tmp:
            if out.suffix.lower() == ".csv":
                completed.to_csv(tmp, index=False)
            else:
                completed.to_parquet(tmp, index=False)
    except (ValueError, FileNotFoundError, ModelFolderError) as error:
        _fail(error)
    n_generated = int(completed["generated"].sum())
    typer.echo(f"Wrote {out}: {len(completed) - n_generated:,} original rows and {n_generated:,} generated "
               f"follow-up rows (column 'generated').")


@app.command("benchmark")
def benchmark(
    out: Path = typer.Option(..., "--out", help="Output folder: results.json, runs.json, report.html (absent or empty)."),
    data: Path = typer.Option(None, "--data", help="Long-format table; default: the embedded synthetic cohort "
                              "(parkinsonism and stroke raised to 15 % so that held-out subjects hold cases)."),
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds (splits, initialisations)."),
    first_seed: int = first_seed_option("impute"),
    quick: bool = typer.Option(False, "--quick", help="Short training (CPU minutes per method and seed) and the --quick cohort."),
    labels: str = typer.Option(None, "--labels", help="Conditioning labels (default for the embedded cohort: all 14)."),
    exclude: str = typer.Option(None, "--exclude", help="Numeric columns that are neither labels nor features."),
    subject: str = typer.Option("subject_id", "--subject", help=SUBJECT_HELP),
    visit: str = typer.Option("visit", "--visit", help=VISIT_HELP),
    methods: str = typer.Option(None, "--methods", help="Comma-separated subset of: secondgram, secondgram_noised_schedule, "
                                "vanilla, pretrained, no_grad, no_self, gan, locf, ridge, secondgram_warmup_calibration "
                                "(default: all of them)."),
    downstream: str = typer.Option(None, "--downstream-labels", help="Binary labels for the downstream AUROC "
                                   "(default for the embedded cohort: parkinsonism,stroke)."),
    case_features: str = typer.Option(None, "--case-features", help="Case study feature group: columns containing this "
                                      "text (embedded cohort: _snc)."),
    case_label: str = typer.Option(None, "--case-label", help="Case study binary label (embedded cohort: parkinsonism)."),
    epochs: int = typer.Option(None, "--epochs", help="Maximum epochs of the diffusion models (overrides the preset)."),
    patience: int = typer.Option(None, "--patience", help="Early-stopping patience in epochs (overrides the preset)."),
    baseline_epochs: int = typer.Option(None, "--baseline-epochs", help="Epochs of the WGAN-GP baseline, and of the "
                                        "pretrained variant's unconditional pre-training (override the preset)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    jobs: int = seed_options.JOBS,
    launcher: str = seed_options.LAUNCHER,
    slurm_partition: str = seed_options.SLURM_PARTITION,
    slurm_time: int = seed_options.SLURM_TIME,
    slurm_cpus: int = seed_options.SLURM_CPUS,
    slurm_gpus: int = seed_options.SLURM_GPUS,
    slurm_mem: float = seed_options.SLURM_MEM,
) -> None:
    """Run SECONDGRAM, its ablations and baselines over several seeds; write results.json and report.html.

    Example:  neurodiff impute benchmark --quick --seeds 3 --out impute-benchmark

    Seeds in parallel, 2 worker processes on this machine (the same results.json as one at a time):
      neurodiff impute benchmark --quick --seeds 4 --jobs 2 --out impute-benchmark

    Seeds as a Slurm job array (from a login node; job logs end up in OUT/job-logs):
      neurodiff impute benchmark --seeds 10 --jobs 10 --launcher slurm --slurm-partition cpu --slurm-time 600 --out impute-benchmark

    Two more seeds for that first run, then one folder of all five:
      neurodiff impute benchmark --quick --first-seed 3 --seeds 2 --out impute-benchmark-more
      neurodiff impute merge impute-benchmark impute-benchmark-more --out impute-benchmark-5
    """
    import time

    from neurodiff.data.longitudinal_table import longitudinal_arrays, read_table
    from neurodiff.evaluation.longitudinal_benchmark import ALL_METHODS, ImputeBenchmarkConfig, run_benchmark
    from neurodiff.evaluation.seed_jobs import SeedJobError
    from neurodiff.reporting.results import results_document

    try:
        check_out_folder(out)
        if seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {seeds}")
        check_first_seed(first_seed)
        parallel = seed_options.seed_jobs(out, jobs, launcher, slurm_partition, slurm_time, slurm_cpus, slurm_gpus,
                                          slurm_mem)
        if data is None:
            from neurodiff.data.synthetic_longitudinal import (
                EVALUATION_PREVALENCE,
                LABEL_COLUMNS,
                LongitudinalConfig,
                generate_longitudinal,
            )

            preset = LongitudinalConfig.quick if quick else LongitudinalConfig.paper
            table_config = preset(prevalence=EVALUATION_PREVALENCE)  # cases for the downstream task and case study
            raised = ", ".join(f"{k} {v:.0%}" for k, v in EVALUATION_PREVALENCE.items())
            typer.echo(f"No --data: generating the embedded cohort ({table_config.n_subjects:,} subjects, "
                       f"{table_config.n_paired:,} paired, {table_config.n_features} features; {raised} so that "
                       "the held-out subjects hold cases)")
            table, source = generate_longitudinal(table_config), "embedded synthetic cohort"
            labels = labels or ",".join(LABEL_COLUMNS)
            exclude = exclude or "years_since_first"
            downstream = downstream or "parkinsonism,stroke"
            case_features, case_label = case_features or "_snc", case_label or "parkinsonism"
            description = (f"embedded synthetic cohort (neurodiff synth longitudinal{' --quick' if quick else ''}): "
                           f"{table_config.n_subjects} subjects, {table_config.n_paired} paired, "
                           f"{table_config.n_features} features, prevalence {raised}")
        else:
            table, source, description = read_table(data, subject=subject), str(data), f"table {data}"
        if not labels:
            raise ValueError("name the conditioning label columns with --labels")
        with _table_warnings():
            arrays = longitudinal_arrays(table, labels=_columns(labels), exclude=_columns(exclude) or (),
                                         subject=subject, visit=visit, source=source)
        factory = ImputeBenchmarkConfig.quick if quick else ImputeBenchmarkConfig
        params = dict(labels=arrays.label_columns, methods=tuple(_columns(methods) or ALL_METHODS),
                      seeds=tuple(range(first_seed, first_seed + seeds)),
                      downstream_labels=tuple(_columns(downstream) or ()),
                      case_feature_pattern=case_features, case_label=case_label, device=device)
        if epochs is not None:
            params["max_epochs"] = epochs
        if patience is not None:
            params["patience"] = patience
        if baseline_epochs is not None:
            params.update(gan_epochs=baseline_epochs, pretrain_epochs=baseline_epochs)
        config = factory(**params)
        config.check(arrays)
        started = time.perf_counter()
        result = run_benchmark(arrays, config, log=typer.echo, seed_jobs=parallel)
        document = results_document(
            task="longitudinal_imputation",
            data={"description": description, "subjects": len(arrays), "paired": int(arrays.paired.sum()),
                  "features": len(arrays.feature_columns), "labels": arrays.label_columns,
                  "fingerprint": arrays.fingerprint(), "splits": result["sizes"]},
            seeds=list(config.seeds), per_seed=result["per_seed"],
            timings={"total_seconds": time.perf_counter() - started, "seed_jobs": parallel.summary(seeds)},
            config=result["config"],
        )
        _write_benchmark_folder(out, document, result["runs"], result["correlations"], parallel)
    except (ValueError, FileNotFoundError, FileExistsError, SeedJobError) as error:
        _fail(error)
    typer.echo(f"Wrote {out}/results.json, runs.json (training histories), correlations.npz and report.html")


@app.command("merge")
def merge(
    folders: list[Path] = typer.Argument(..., help="The --out folders of `neurodiff impute benchmark` runs to join."),
    out: Path = typer.Option(..., "--out", help="Output folder: results.json, runs.json, report.html (absent or empty)."),
    tolerance: float = TOLERANCE,
) -> None:
    """Join benchmark folders of the same table and settings (other seeds, other methods) into one.

    Example: seeds 0-2, then seeds 3-4 of the same benchmark, then one report of all five:
      neurodiff impute benchmark --quick --seeds 3 --out run-a
      neurodiff impute benchmark --quick --first-seed 3 --seeds 2 --out run-b
      neurodiff impute merge run-a run-b --out run-ab

    The folders must hold the same table and the same settings apart from seeds, methods and device; a value
    two folders both hold (same method, metric and seed) must agree within --tolerance. Seeds held by one
    folder only are not cross-checked: the merge says where the folders' devices, versions, CPU features or
    threads per seed differ.
    Means and CIs are recomputed over the union of the seeds; a method not run on every seed is named, and
    its CI is over the seeds it ran on.
    """
    from neurodiff.evaluation.longitudinal_benchmark_merge import merge_benchmarks, read_benchmark_folder

    try:
        check_out_folder(out)
        document, runs, correlations = merge_benchmarks([read_benchmark_folder(f) for f in folders], log=typer.echo,
                                                        tolerance=tolerance)
        _write_benchmark_folder(out, document, runs, correlations)
    except (ValueError, OSError) as error:
        _fail(error)
    typer.echo(f"Merged {len(folders)} folders: seeds {document['seeds']}, methods "
               f"{', '.join(document['config']['methods'])}")
    typer.echo(f"Wrote {out}/results.json, runs.json (training histories), correlations.npz and report.html")


def _write_benchmark_folder(out: Path, document: dict, runs: list, correlations: dict, parallel=None) -> None:
    """results.json, runs.json, correlations.npz, the figures and report.html, all or nothing."""
    import numpy as np

    from neurodiff.atomic import atomic_dir, write_json, write_text
    from neurodiff.evaluation.longitudinal_benchmark import report_html
    from neurodiff.evaluation.seed_jobs import keep_job_logs
    from neurodiff.reporting.impute_figures import figures_html, impute_figures

    with atomic_dir(out) as tmp:
        write_json(tmp / "results.json", document)
        write_json(tmp / "runs.json", runs)
        np.savez_compressed(tmp / "correlations.npz", **correlations)
        figures = impute_figures(document, runs, correlations, tmp)
        write_text(tmp / "report.html", report_html({**document, "runs": runs}, figures_html(figures)))
        if parallel is not None:
            keep_job_logs(parallel, tmp / "job-logs")
