"""`neurodiff normative fit|score|survival|benchmark|merge`: NDA normative modelling and survival analysis."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from neurodiff.cli import seed_options
from neurodiff.cli.benchmark_merge import TOLERANCE, check_first_seed, first_seed_option, merge_image_benchmark_folders
from neurodiff.cli.out_folder import check_out_folder
from neurodiff.cli.volumes import quick_preset as _preset
from neurodiff.cli.volumes import slices_only as _slices_only

app = typer.Typer(
    help="NDA: learn what healthy brains look like, score how far a patient is from it, relate the score to survival.",
    no_args_is_help=True,
    add_completion=False,
)

#: The embedded cohort of `benchmark --quick`: the quick cohort at 32×32 with 200 patients (enough
#: deaths for a Cox model to have power; the 40 of the quick preset give ~25).
QUICK_COHORT = dict(size=32, n_patients=200)


def _fail(error: Exception) -> None:
    typer.echo(f"neurodiff normative: {error}", err=True)
    raise typer.Exit(2) from error


@app.command("fit")
def fit(
    manifest: Path = typer.Option(..., "--manifest", help="Manifest CSV of healthy controls (subject_id, path, age; "
                                  "a group column may only say control)."),
    out: Path = typer.Option(..., "--out", help="Folder for the saved model (must be absent or empty)."),
    quick: bool = typer.Option(False, "--quick", help="The CPU-minutes preset (64×64 slices; quick3d for volumes); default: the brain-slice recipe."),
    controls_only: bool = typer.Option(False, "--controls-only", help="Train on the rows whose group is control and "
                                       "ignore the others (without it, patients in the manifest are an error)."),
    no_age: bool = typer.Option(False, "--no-age", help="Do not condition the encoder on age (the ablation)."),
    calibration_fraction: float = typer.Option(0.2, "--calibration-fraction", help="Share of control subjects held "
                                               "out of training to calibrate the scores (percentile, z)."),
    steps: int = typer.Option(None, "--steps", help="Training steps (overrides the preset)."),
    checkpoint_dir: Path = typer.Option(None, "--checkpoint-dir", help="Write resumable checkpoints here (resumes "
                                        "when one exists)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the calibration split, initialisation, batches and noise."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 or bf16 (fp16 on CUDA)."),
) -> None:
    """Train the normative diffusion autoencoder on healthy controls, compute the healthy latent
    distribution and calibrate the scores on held-out controls; save the model.

    Example:  neurodiff normative fit --manifest cohort/manifest.csv --controls-only --quick --out nda-model

    On several processes (data-parallel training; the calibration afterwards runs on each):
      torchrun --standalone --nproc_per_node 2 -m neurodiff normative fit --manifest m.csv --controls-only --out nda-model
    """
    from neurodiff.data.image_manifest import read_manifest
    from neurodiff.methods.normative import CONTROL_GROUPS, NormativeDiffAE
    from neurodiff.training.distributed import is_main_process

    params = dict(seed=seed, device=device, precision=precision, calibration_fraction=calibration_fraction,
                  checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None)
    if no_age:
        params["encoder_covariates"] = ()
    if steps is not None:
        params["max_steps"] = steps
    try:
        check_out_folder(out)
        model = NormativeDiffAE.preset(_preset(quick, manifest), **params)
        frame = read_manifest(manifest, required=("subject_id", "path", *model.encoder_covariates))
        if controls_only and "group" in frame.columns:
            keep = frame["group"].astype("string").str.strip().str.lower().isin(CONTROL_GROUPS).fillna(False)
            if is_main_process():
                typer.echo(f"--controls-only: training on {int(keep.sum())} control rows, "
                           f"ignoring {int((~keep).sum())}")
            frame = frame[keep.to_numpy(bool)].reset_index(drop=True)
        model.fit(frame)
        if not is_main_process():  # under torchrun, rank 0 writes the model and reports
            return
        model.save(out)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        _fail(error)
    typer.echo(f"Trained on {model.n_controls_} control images for {len(model.history_['loss'])} steps (final loss "
               f"{model.history_['loss'][-1]:.4f}); calibrated on "
               f"{0 if model.calibration_ is None else len(model.calibration_['similarity'])} held-out controls. "
               f"Saved to {out}")


@app.command("score")
def score(
    model: Path = typer.Option(..., "--model", help="Folder written by `neurodiff normative fit`."),
    manifest: Path = typer.Option(..., "--manifest", help="Manifest of the images to score (subject_id, path, age)."),
    out: Path = typer.Option(..., "--out", help="Output folder (absent or empty): scores.csv, and maps/ with --maps."),
    maps: bool = typer.Option(False, "--maps", help="Also write a deviation map |image − healthy reconstruction| "
                              "per image as NIfTI (same affine as the input)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto (whatever the model was trained on)."),
) -> None:
    """Score every image: similarity to the healthy mean latent (calibrated as a percentile and z-score
    against held-out controls) and the Mahalanobis distance; optionally deviation maps.

    OUT/scores.csv is the manifest (without resolved paths) plus the score columns, a `normative_role`
    column (training: a control the model was fitted on, in-sample; calibration: a held-out control of
    the calibrated scores; new: anyone else), and with --maps a `deviation_path` column pointing at
    OUT/maps/*.nii.gz.

    Example:  neurodiff normative score --model nda-model --manifest cohort/manifest.csv --out nda-scores --maps
    """
    from neurodiff.atomic import atomic_dir
    from neurodiff.data.image_manifest import image_stem, load_images, read_manifest, save_like
    from neurodiff.methods.normative import NormativeDiffAE

    try:
        check_out_folder(out)  # before any work, not after it
        nda = NormativeDiffAE.load(model, device=device)  # a cuda that is not there fails here
        frame = read_manifest(manifest, required=("subject_id", "path", *nda.encoder_covariates))
        images, _ = load_images(frame, progress=True)
        typer.echo(f"Scoring {len(images)} images ...")
        scores = nda.score(images, frame)
        table = frame.drop(columns=["resolved_path"]).reset_index(drop=True)
        table = table.drop(columns=[c for c in scores.columns if c in table.columns]).join(scores)
        roles = nda.roles(table)
        if roles is not None:  # training controls are in-sample: never a reference for the others
            table["normative_role"] = roles.to_numpy()
        with atomic_dir(out) as tmp:
            if maps:
                typer.echo("Deviation maps (healthy reconstruction by partial DDIM denoising) ...")
                deviation, _ = nda.deviation_maps(images, frame)
                (tmp / "maps").mkdir()
                names = []
                for i, source in enumerate(frame["resolved_path"]):
                    name = f"maps/{i:05d}_{image_stem(source)}_deviation.nii.gz"
                    save_like(deviation[i], source, tmp / name)
                    names.append(name)
                table["deviation_path"] = names
            table.to_csv(tmp / "scores.csv", index=False)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        _fail(error)
    typer.echo(f"Wrote {out}/scores.csv ({len(table)} rows{', and deviation maps' if maps else ''})")


@app.command("survival")
def survival(
    scores: Path = typer.Option(..., "--scores", help="CSV with subject_id and a score column (e.g. scores.csv of "
                                "`neurodiff normative score`, or any score you bring)."),
    out: Path = typer.Option(..., "--out", help="Output folder (absent or empty): results.json, report.html, km.png."),
    manifest: Path = typer.Option(None, "--manifest", help="Manifest with time (days), event (1 = died) and covariates, "
                                  "joined on subject_id; default: take them from --scores."),
    score_column: str = typer.Option("similarity", "--score-column", help="The score to analyse."),
    covariates: str = typer.Option("", "--covariates", help="Comma-separated covariates of an adjusted Cox model "
                                   "(e.g. age,sex,site)."),
    time_column: str = typer.Option("time", "--time-column", help="Survival time column (days, > 0)."),
    event_column: str = typer.Option("event", "--event-column", help="Event column (1 = died, 0 = censored)."),
    min_events: int = typer.Option(10, "--min-events", help="Warn below this many events."),
) -> None:
    """Cox proportional hazards of survival on a score (HR per unit and per SD, 95 % CI, p, concordance,
    proportional-hazards check), Kaplan–Meier curves split at the median score with a log-rank test, and a
    Kolmogorov–Smirnov test of the survival times of the two halves. Only patients are analysed (rows whose
    group is patient when a group column exists).

    Example:  neurodiff normative survival --scores nda-scores/scores.csv --manifest cohort/manifest.csv --out survival
    """
    from neurodiff.atomic import atomic_dir, write_json, write_text
    from neurodiff.evaluation.survival import SurvivalWarning, survival_analysis
    from neurodiff.reporting.normative_report import survival_report_html
    from neurodiff.reporting.results import environment

    names = [c.strip() for c in covariates.split(",") if c.strip()]
    try:
        check_out_folder(out)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SurvivalWarning)
            frame = _survival_table(scores, manifest, score_column)
            result = survival_analysis(frame, score_column, names, time=time_column, event=event_column,
                                       min_events=min_events)
        for warning in caught:
            typer.echo(f"warning: {warning.message}", err=True)
        document = {"task": "survival", "data": {"scores": str(scores), "manifest": str(manifest) if manifest else None,
                                                  "score_column": score_column, "covariates": names},
                    "result": result, "warnings": [str(w.message) for w in caught], "environment": environment()}
        with atomic_dir(out) as tmp:
            write_json(tmp / "results.json", document)
            write_text(tmp / "report.html", survival_report_html(document, tmp))
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as error:
        _fail(error)
    typer.echo(f"{score_column}: HR per SD {result['hr_per_sd']:.3f} (95 % CI {result['hr_per_sd_ci'][0]:.3f}–"
               f"{result['hr_per_sd_ci'][1]:.3f}), p = {result['p']:.3g} (likelihood ratio {_p_text(result['p_likelihood_ratio'])}), C-index {result['c_index']:.3f}, "
               f"log-rank p = {result['logrank_p']:.3g}; {result['n']} patients, {result['events']} events. Wrote {out}")


def _survival_table(scores_path: Path, manifest_path: Path | None, score_column: str):
    """The patients' rows: scores joined to the manifest on subject_id (checked).

    Only the analysed rows (group = patient, where a group column exists) must be one per subject: a
    control scanned twice (travelling subjects, extra sessions) is not analysed and is no error.
    """
    import pandas as pd

    from neurodiff.evaluation.survival import SurvivalWarning

    if not scores_path.is_file():
        raise FileNotFoundError(f"--scores {scores_path} does not exist")
    scores = pd.read_csv(scores_path, dtype={"subject_id": str})  # ids as written: "007" stays "007"
    for column in ("subject_id", score_column):
        if column not in scores.columns:
            raise ValueError(f"--scores {scores_path} has no column {column!r} (columns: {', '.join(scores.columns)})")
    _no_blank_ids(scores, f"--scores {scores_path}")
    if manifest_path is not None:
        if not manifest_path.is_file():
            raise FileNotFoundError(f"--manifest {manifest_path} does not exist")
        manifest = pd.read_csv(manifest_path, dtype={"subject_id": str})
        if "subject_id" not in manifest.columns:
            raise ValueError(f"--manifest {manifest_path} has no column 'subject_id'")
        _no_blank_ids(manifest, f"--manifest {manifest_path}")
        missing = sorted(set(scores["subject_id"]) - set(manifest["subject_id"]))
        if missing:
            raise ValueError(f"subject(s) {', '.join(missing[:5])} of --scores are not in --manifest {manifest_path}")
        unscored: list[str] = []
        if "group" in manifest.columns:  # columns in both files come from the manifest, the group too
            manifest = _patient_rows(manifest)
            # the manifest's patients without a score (only it says who is a patient then)
            unscored = sorted(set(manifest["subject_id"]) - set(scores["subject_id"]))
            scores = scores[scores["subject_id"].isin(manifest["subject_id"]).to_numpy(bool)]
        else:
            scores = _patient_rows(scores)
        if unscored:  # e.g. scoring failed or ran on a subset: the analysis would quietly use the rest
            warnings.warn(f"{len(unscored)} patient(s) of --manifest {manifest_path} have no score in --scores "
                          f"{scores_path} and are left out of the analysis: {', '.join(unscored[:5])}"
                          f"{' …' if len(unscored) > 5 else ''}", SurvivalWarning, stacklevel=2)
        _one_row_per_subject(scores, f"--scores {scores_path}")
        _one_row_per_subject(manifest[manifest["subject_id"].isin(scores["subject_id"])], f"--manifest {manifest_path}")
        keep = [c for c in scores.columns if c not in manifest.columns or c == "subject_id"]
        scores = _patient_rows(scores[keep].merge(manifest, on="subject_id"))
    else:
        scores = _patient_rows(scores)
    if scores.empty:
        raise ValueError("no row has group = patient: survival is analysed on patients")
    _one_row_per_subject(scores, f"--scores {scores_path}")  # the analysed rows, also without --manifest
    return scores.reset_index(drop=True)


def _p_text(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _no_blank_ids(table, name: str) -> None:
    ids = table["subject_id"]
    blank = (ids.isna() | ids.astype("string").str.strip().eq("")).fillna(True).to_numpy(bool)
    if blank.any():
        rows = ", ".join(str(i + 2) for i in blank.nonzero()[0][:5])  # spreadsheet rows: the header is row 1
        raise ValueError(f"{name} has {int(blank.sum())} row(s) without a subject_id (row {rows}); every score "
                         "must name its subject")


def _patient_rows(table):
    """The rows with group = patient, or every row when there is no group column."""
    if "group" not in table.columns:
        return table
    return table[table["group"].astype("string").str.strip().str.lower().eq("patient").fillna(False).to_numpy(bool)]


def _one_row_per_subject(table, name: str) -> None:
    twice = ", ".join(map(str, table["subject_id"][table["subject_id"].duplicated()].unique()[:5]))
    if twice:
        raise ValueError(f"{name} has several rows for patient(s) {twice}; survival needs one score per patient "
                         "(one image per patient, e.g. the baseline scan)")


@app.command("benchmark")
def benchmark(
    out: Path = typer.Option(..., "--out", help="Output folder: results.json, report.html, figures (absent or empty)."),
    manifest: Path = typer.Option(None, "--manifest", help="Image-cohort manifest with controls and patients "
                                  "(group, age, sex, time, event); default: the embedded synthetic cohort."),
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds (control splits, initialisations)."),
    first_seed: int = first_seed_option("normative"),
    quick: bool = typer.Option(False, "--quick", help="The quick NDA preset, short cVAE training and (without "
                               "--manifest) the quick cohort at 32×32 with 200 patients: CPU minutes per seed."),
    methods: str = typer.Option(None, "--methods", help="Comma-separated subset of: nda, nda_mahalanobis, "
                                "nda_no_age, cvae, regression_z, brain_age_gap."),
    steps: int = typer.Option(None, "--steps", help="NDA training steps (overrides the preset)."),
    baseline_steps: int = typer.Option(None, "--baseline-steps", help="cVAE training steps."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    jobs: int = seed_options.JOBS,
    launcher: str = seed_options.LAUNCHER,
    slurm_partition: str = seed_options.SLURM_PARTITION,
    slurm_time: int = seed_options.SLURM_TIME,
    slurm_cpus: int = seed_options.SLURM_CPUS,
    slurm_gpus: int = seed_options.SLURM_GPUS,
    slurm_mem: float = seed_options.SLURM_MEM,
) -> None:
    """Train NDA and its benchmarks on controls, score patients, fit the survival models; write results.json
    (per method: hr, hr_ci, p, c_index, ks_statistic, ks_p, logrank_p, ...) and report.html.

    Example:  neurodiff normative benchmark --quick --seeds 2 --out normative-benchmark

    Seeds in parallel, 2 worker processes on this machine (the same results.json as one at a time):
      neurodiff normative benchmark --quick --seeds 2 --jobs 2 --out normative-benchmark

    Seeds as a Slurm job array (from a login node; job logs end up in OUT/job-logs):
      neurodiff normative benchmark --seeds 5 --jobs 5 --launcher slurm --slurm-gpus 1 --device cuda --out normative-benchmark

    Two more seeds later, joined with the first run:
      neurodiff normative benchmark --quick --first-seed 2 --seeds 2 --out normative-benchmark-more
      neurodiff normative merge normative-benchmark normative-benchmark-more --out normative-benchmark-4
    """
    import tempfile
    import time

    from neurodiff.atomic import atomic_dir, write_json, write_text
    from neurodiff.data.image_manifest import cohort_fingerprint, load_images, read_manifest
    from neurodiff.evaluation.normative_benchmark import (
        ALL_METHODS,
        NormativeBenchmarkConfig,
        attach_hr_ci,
        run_benchmark,
    )
    from neurodiff.evaluation.seed_jobs import SeedJobError, keep_job_logs
    from neurodiff.reporting.normative_report import normative_figures, report_html
    from neurodiff.reporting.results import results_document

    try:
        check_out_folder(out)
        if seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {seeds}")
        check_first_seed(first_seed)
        parallel = seed_options.seed_jobs(out, jobs, launcher, slurm_partition, slurm_time, slurm_cpus, slurm_gpus,
                                          slurm_mem)
        with tempfile.TemporaryDirectory(prefix="neurodiff-normative-") as scratch:
            if manifest is None:
                from neurodiff.data.synthetic_images import (
                    ImageCohortConfig,
                    generate_image_cohort,
                )

                cohort = ImageCohortConfig.quick(**QUICK_COHORT) if quick else ImageCohortConfig()
                typer.echo(f"No --manifest: generating the embedded cohort ({cohort.n_sites} sites, "
                           f"{cohort.n_controls} controls, {cohort.n_patients} patients, {cohort.size}×{cohort.size})")
                generate_image_cohort(cohort, Path(scratch) / "cohort")
                manifest_path = Path(scratch) / "cohort" / "manifest.csv"
                description = (f"embedded synthetic cohort (neurodiff synth images): {cohort.n_sites} sites, "
                               f"{cohort.n_controls} controls + {cohort.n_travellers} travellers × {cohort.n_sites} "
                               f"sites, {cohort.n_patients} ALS-like patients with planted severity, "
                               f"{cohort.size}×{cohort.size}")
            else:
                manifest_path, description = manifest, f"manifest {manifest}"
            frame = read_manifest(manifest_path)
            _slices_only(manifest_path, "normative", "the cVAE baseline")
            images, affines = load_images(frame, progress=True)
        factory = NormativeBenchmarkConfig.quick if quick else NormativeBenchmarkConfig
        params = dict(seeds=tuple(range(first_seed, first_seed + seeds)), device=device,
                      methods=tuple(m.strip() for m in methods.split(",")) if methods else ALL_METHODS)
        if steps is not None:
            params["nda_steps"] = steps
        if baseline_steps is not None:
            params["cvae_steps"] = baseline_steps
        config = factory(**params)
        config.check(frame)
        started = time.perf_counter()
        result = run_benchmark(frame, images, affines[0], config, log=typer.echo, seed_jobs=parallel)
        document = results_document(
            task="normative",
            data={"description": description, "images": len(frame), "image_shape": list(images.shape[1:]),
                  "fingerprint": cohort_fingerprint(frame, images), "splits": result["sizes"]},
            seeds=list(config.seeds), per_seed=result["per_seed"],
            timings={"total_seconds": time.perf_counter() - started, "training": result["training"],
                     "seed_jobs": parallel.summary(seeds)},
            config=result["config"],
        )
        attach_hr_ci(document, result["hr_ci"])
        with atomic_dir(out) as tmp:
            write_json(tmp / "results.json", document)
            figures = normative_figures(document, result["first"], tmp)
            write_text(tmp / "report.html", report_html(document, figures))
            keep_job_logs(parallel, tmp / "job-logs")
    except (ValueError, FileNotFoundError, FileExistsError, SeedJobError) as error:
        _fail(error)
    typer.echo(f"Wrote {out}/results.json, report.html and {len(figures)} figures")


@app.command("merge")
def merge(
    folders: list[Path] = typer.Argument(..., help="The --out folders of `neurodiff normative benchmark` runs to join."),
    out: Path = typer.Option(..., "--out", help="Output folder: results.json, report.html, figures (absent or empty)."),
    tolerance: float = TOLERANCE,
) -> None:
    """Join benchmark folders of the same cohort and settings (other seeds, other methods) into one.

    Example: seeds 0-2, then seeds 3-4 of the same benchmark, then one report of all five:
      neurodiff normative benchmark --quick --seeds 3 --out run-a
      neurodiff normative benchmark --quick --first-seed 3 --seeds 2 --out run-b
      neurodiff normative merge run-a run-b --out run-ab

    The folders must hold the same cohort (the same images and manifest values, from any folder) and the same
    settings apart from seeds, methods and device; a value two folders both hold (same method, metric and seed,
    and each seed's Cox CI) must agree within --tolerance. Seeds held by one folder only are not cross-checked:
    the merge says where the folders' devices, versions, CPU features or threads per seed differ. Means and CIs
    are recomputed over the union of the seeds; a method not run on every seed is named, and its CI is over the
    seeds it ran on. The metric bars are drawn again; the other figures show the lowest seed, from the folder
    that began there.
    """
    try:
        merge_image_benchmark_folders("normative", folders, out, tolerance)
    except (ValueError, OSError) as error:
        _fail(error)
