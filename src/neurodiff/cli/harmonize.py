"""`neurodiff harmonize fit|apply|benchmark|merge`: DDAE multi-site harmonisation."""

from __future__ import annotations

from pathlib import Path

import typer

from neurodiff.cli import seed_options
from neurodiff.cli.benchmark_merge import TOLERANCE, check_first_seed, first_seed_option, merge_image_benchmark_folders
from neurodiff.cli.out_folder import check_out_folder
from neurodiff.cli.volumes import quick_preset as _preset
from neurodiff.cli.volumes import slices_only as _slices_only

app = typer.Typer(
    help="DDAE: remove scanner/site effects from brain slices while keeping anatomy, age and sex.",
    no_args_is_help=True,
    add_completion=False,
)


def _fail(error: Exception) -> None:
    typer.echo(f"neurodiff harmonize: {error}", err=True)
    raise typer.Exit(2) from error


@app.command("fit")
def fit(
    manifest: Path = typer.Option(..., "--manifest", help="Image-cohort manifest CSV (subject_id, path, age, sex, site)."),
    out: Path = typer.Option(..., "--out", help="Folder for the saved model (must be absent or empty)."),
    quick: bool = typer.Option(False, "--quick", help="The CPU-minutes preset (64×64 slices; quick3d for volumes); default: the paper's brain-slice recipe."),
    adversarial: float = typer.Option(0.0, "--adversarial", help="Weight of the adversarial site loss on z_υ (0: off, the paper)."),
    steps: int = typer.Option(None, "--steps", help="Training steps (overrides the preset)."),
    checkpoint_dir: Path = typer.Option(None, "--checkpoint-dir", help="Write resumable checkpoints here (resumes when one exists)."),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, batch order and noise."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 or bf16 (fp16 on CUDA)."),
) -> None:
    """Train the disentangled diffusion autoencoder on every image of a manifest and save it.

    At the end it prints the final loss and the last latent and site sensitivities (logged every 100
    steps): near 0 they mean the decoder ignores its latent, or the site, and harmonising changes nothing.

    Example:  neurodiff harmonize fit --manifest cohort/manifest.csv --quick --out ddae-model

    On several processes (data-parallel; the batch is shared between them):
      torchrun --standalone --nproc_per_node 2 -m neurodiff harmonize fit --manifest cohort/manifest.csv --out ddae-model
    """
    from neurodiff.methods.harmonization import DisentangledDiffAE
    from neurodiff.training.distributed import is_main_process

    params = dict(adversarial_weight=adversarial, seed=seed, device=device, precision=precision,
                  checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None)
    if steps is not None:
        params["max_steps"] = steps
    try:
        check_out_folder(out)
        model = DisentangledDiffAE.preset(_preset(quick, manifest), **params).fit(manifest)
        if not is_main_process():  # under torchrun, rank 0 writes the model and reports
            return
        model.save(out)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        _fail(error)
    last = "".join(f", {label} sensitivity {log[-1]['value']:.3g}"
                   for label, log in (("latent", model.history_["latent_sensitivity"]),
                                      ("site", model.history_["site_sensitivity"])) if log)
    typer.echo(f"Trained on {len(model.history_['loss'])} steps over sites {', '.join(model.sites)} "
               f"(final loss {model.history_['loss'][-1]:.4f}{last}). Saved to {out}")


@app.command("apply")
def apply(
    model: Path = typer.Option(..., "--model", help="Folder written by `neurodiff harmonize fit`."),
    manifest: Path = typer.Option(..., "--manifest", help="Manifest of the images to harmonise (age, sex, site needed)."),
    target_site: str = typer.Option(..., "--target-site", help="Site to map every image to (one seen in training)."),
    out: Path = typer.Option(..., "--out", help="Output folder (absent or empty): harmonised NIfTI files and manifest.csv."),
    inversion_steps: int = typer.Option(None, "--inversion-steps", help="DDIM inversion steps (default: the model's; unset, 50 or T if fewer)."),
    render_steps: int = typer.Option(None, "--render-steps", help="DDIM rendering steps (default: the model's; unset, 50 or T if fewer)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto (whatever the model was trained on)."),
) -> None:
    """Write one harmonised NIfTI per input (same affine and header) and an output manifest.

    Inputs are never modified. OUT/manifest.csv is the input manifest, one row per image, with `path`
    pointing at the harmonised image, `harmonized_from` = the input image it was made from (absolute),
    `harmonized_to` = the target site, and `source_path` = the original scan: kept as it is where the
    input manifest has one (`neurodiff preprocess` puts the raw T1 there), otherwise the input image.
    Other relative paths (columns ending in `_path`, e.g. preprocess's volume_path and brain_mask_path)
    are made absolute: they still name the input's files, not harmonised ones.

    Example:  neurodiff harmonize apply --model ddae-model --manifest cohort/manifest.csv --target-site site0 --out harmonised
    """
    from neurodiff.atomic import atomic_dir
    from neurodiff.data.covariates import category_key
    from neurodiff.data.image_manifest import image_stem, load_images, read_manifest, resolve_paths, save_like
    from neurodiff.methods.harmonization import DisentangledDiffAE

    try:
        check_out_folder(out)  # before any work, not after it
        ddae = DisentangledDiffAE.load(model, device=device)  # a cuda that is not there fails here
        for name, value in (("inversion_steps", inversion_steps), ("render_steps", render_steps)):
            if value is not None:
                if value < 1:
                    raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
                setattr(ddae, name, value)
        frame = read_manifest(manifest, required=("subject_id", "path", *ddae.covariates))
        if category_key(target_site) not in ddae.sites:  # as the model compares sites (" 1 " is "1")
            raise ValueError(f"--target-site {target_site!r} was not seen in training; known sites: "
                             f"{', '.join(ddae.sites)}")
        images, _ = load_images(frame, progress=True)
        typer.echo(f"Harmonising {len(images)} images to {target_site} ...")
        harmonised = ddae.transform(images, frame, target_site)
        with atomic_dir(out) as tmp:
            rows = frame.drop(columns=["resolved_path"])
            for column in [c for c in rows.columns if str(c).endswith("_path")]:  # still the input's files
                rows[column] = resolve_paths(rows, column, manifest)
            # the original scan: the input manifest's where it names one (preprocess: the raw T1), else the input
            rows["source_path"] = (rows["source_path"].fillna(frame["resolved_path"]) if "source_path" in rows.columns
                                   else frame["resolved_path"])
            rows["harmonized_from"] = frame["resolved_path"]
            names = []
            for i, source in enumerate(frame["resolved_path"]):
                name = f"images/{i:05d}_{image_stem(source)}_harmonized.nii.gz"
                (tmp / "images").mkdir(exist_ok=True)
                save_like(harmonised[i], source, tmp / name)
                names.append(name)
            rows["path"] = names
            rows["harmonized_to"] = target_site
            rows.to_csv(tmp / "manifest.csv", index=False)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        _fail(error)
    typer.echo(f"Wrote {len(images)} harmonised images and manifest.csv to {out}")


@app.command("benchmark")
def benchmark(
    out: Path = typer.Option(..., "--out", help="Output folder: results.json, report.html, figures (absent or empty)."),
    manifest: Path = typer.Option(None, "--manifest", help="Image-cohort manifest; default: the embedded synthetic "
                                  "cohort with travelling subjects."),
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds (splits, initialisations)."),
    first_seed: int = first_seed_option("harmonize"),
    quick: bool = typer.Option(False, "--quick", help="The quick DDAE preset, short baseline training and (without "
                               "--manifest) the quick cohort at 32×32: CPU minutes per method and seed."),
    methods: str = typer.Option(None, "--methods", help="Comma-separated subset of: ddae, ddae_adversarial, combat, "
                                "cvae, style_gan, raw."),
    target_site: str = typer.Option(None, "--target-site", help="Site every image is mapped to; default: the "
                                    "site with the most images (ties: the first in sorted order), site0 in the "
                                    "embedded cohort."),
    steps: int = typer.Option(None, "--steps", help="DDAE training steps (overrides the preset)."),
    baseline_steps: int = typer.Option(None, "--baseline-steps", help="cVAE and style-GAN training steps."),
    gan_steps: int = typer.Option(None, "--gan-steps", help="Style-GAN training steps (overrides --baseline-steps; "
                                  "a step costs about 0.5 s at 32×32 on a 2-core CPU)."),
    timing: bool = typer.Option(True, "--timing/--no-timing", help="Also time DDAE harmonisation at 64×64 and "
                                "128×128 (untrained networks of the quick and paper presets)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    jobs: int = seed_options.JOBS,
    launcher: str = seed_options.LAUNCHER,
    slurm_partition: str = seed_options.SLURM_PARTITION,
    slurm_time: int = seed_options.SLURM_TIME,
    slurm_cpus: int = seed_options.SLURM_CPUS,
    slurm_gpus: int = seed_options.SLURM_GPUS,
    slurm_mem: float = seed_options.SLURM_MEM,
) -> None:
    """Train every method, harmonise held-out images to one site, evaluate; write results.json and report.html.

    Example:  neurodiff harmonize benchmark --quick --seeds 2 --out harmonize-benchmark

    Seeds in parallel, 2 worker processes on this machine (the same results.json as one at a time):
      neurodiff harmonize benchmark --quick --seeds 2 --jobs 2 --out harmonize-benchmark

    Seeds as a Slurm job array (from a login node; job logs end up in OUT/job-logs):
      neurodiff harmonize benchmark --seeds 5 --jobs 5 --launcher slurm --slurm-gpus 1 --device cuda --out harmonize-benchmark

    Two more seeds later, joined with the first run:
      neurodiff harmonize benchmark --quick --first-seed 2 --seeds 2 --out harmonize-benchmark-more
      neurodiff harmonize merge harmonize-benchmark harmonize-benchmark-more --out harmonize-benchmark-4
    """
    import tempfile
    import time

    from neurodiff.atomic import atomic_dir, write_json, write_text
    from neurodiff.data.image_manifest import cohort_fingerprint, load_images, read_manifest
    from neurodiff.evaluation.harmonization_benchmark import (
        ALL_METHODS,
        HarmonizeBenchmarkConfig,
        harmonize_figures,
        report_html,
        run_benchmark,
        throughput,
    )
    from neurodiff.evaluation.seed_jobs import SeedJobError, keep_job_logs
    from neurodiff.reporting.results import results_document

    try:
        check_out_folder(out)
        if seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {seeds}")
        check_first_seed(first_seed)
        parallel = seed_options.seed_jobs(out, jobs, launcher, slurm_partition, slurm_time, slurm_cpus, slurm_gpus,
                                          slurm_mem)
        factory = HarmonizeBenchmarkConfig.quick if quick else HarmonizeBenchmarkConfig
        params = dict(seeds=tuple(range(first_seed, first_seed + seeds)), target_site=target_site, device=device,
                      methods=tuple(m.strip() for m in methods.split(",")) if methods else ALL_METHODS)
        if steps is not None:
            params["ddae_steps"] = steps
        if baseline_steps is not None:
            params.update(cvae_steps=baseline_steps, gan_steps=baseline_steps)
        if gan_steps is not None:
            params["gan_steps"] = gan_steps
        config = factory(**params)
        config.check()  # the options, before a cohort is generated or read
        with tempfile.TemporaryDirectory(prefix="neurodiff-harmonize-") as scratch:
            if manifest is None:
                from neurodiff.data.synthetic_images import ImageCohortConfig, generate_image_cohort

                # --quick: the quick cohort at 32×32, so that every method trains in CPU minutes
                cohort = ImageCohortConfig.quick(size=32) if quick else ImageCohortConfig()
                typer.echo(f"No --manifest: generating the embedded cohort ({cohort.n_sites} sites, "
                           f"{cohort.n_controls} controls, {cohort.n_travellers} travellers, {cohort.size}×{cohort.size})")
                generate_image_cohort(cohort, Path(scratch) / "cohort")
                manifest_path = Path(scratch) / "cohort" / "manifest.csv"
                description = (f"embedded synthetic cohort (neurodiff synth images{' --quick' if quick else ''}): "
                               f"{cohort.n_sites} sites, {cohort.n_controls} controls, {cohort.n_travellers} "
                               f"travellers imaged at every site, {cohort.size}×{cohort.size}")
            else:
                manifest_path, description = manifest, f"manifest {manifest}"
            frame = read_manifest(manifest_path)
            _slices_only(manifest_path, "harmonize", "the cVAE and style-GAN baselines")
            config.check(frame)  # covariates, sites and --target-site, before any image is loaded
            if target_site is None:
                config = config.with_target(frame)
                count = int((frame["site"].astype(str) == config.target_site).sum())
                typer.echo(f"Target site: {config.target_site} (the site with the most images, {count} of "
                           f"{len(frame)}; --target-site chooses another)")
            images, _ = load_images(frame, progress=True)
        started = time.perf_counter()
        result = run_benchmark(frame, images, config, log=typer.echo, seed_jobs=parallel)
        speed = []
        if timing and any(m.startswith("ddae") for m in config.methods):
            steps_used = (config.inversion_steps, config.render_steps)
            for size, preset in config.timing:
                typer.echo(f"Timing DDAE harmonisation at {size}×{size} ({preset} preset) ...")
                speed.append(throughput(size, preset, steps=steps_used, device=device))
        document = results_document(
            task="harmonization",
            data={"description": description, "images": len(frame), "sites": sorted(frame["site"].astype(str).unique()),
                  "image_shape": list(images.shape[1:]), "fingerprint": cohort_fingerprint(frame, images),
                  "splits": result["sizes"]},
            seeds=list(config.seeds), per_seed=result["per_seed"],
            timings={"total_seconds": time.perf_counter() - started, "training": result["training"],
                     "throughput": speed, "seed_jobs": parallel.summary(seeds)},
            config=result["config"],
        )
        with atomic_dir(out) as tmp:
            write_json(tmp / "results.json", document)
            figures = harmonize_figures(document, result["first"], tmp)
            write_text(tmp / "report.html", report_html(document, figures))
            keep_job_logs(parallel, tmp / "job-logs")
    except (ValueError, FileNotFoundError, FileExistsError, SeedJobError) as error:
        _fail(error)
    typer.echo(f"Wrote {out}/results.json, report.html and {len(figures)} figures")


@app.command("merge")
def merge(
    folders: list[Path] = typer.Argument(..., help="The --out folders of `neurodiff harmonize benchmark` runs to join."),
    out: Path = typer.Option(..., "--out", help="Output folder: results.json, report.html, figures (absent or empty)."),
    tolerance: float = TOLERANCE,
) -> None:
    """Join benchmark folders of the same cohort and settings (other seeds, other methods) into one.

    Example: seeds 0-2, then seeds 3-4 of the same benchmark, then one report of all five:
      neurodiff harmonize benchmark --quick --seeds 3 --out run-a
      neurodiff harmonize benchmark --quick --first-seed 3 --seeds 2 --out run-b
      neurodiff harmonize merge run-a run-b --out run-ab

    The folders must hold the same cohort (the same images and manifest values, from any folder) and the same
    settings apart from seeds, methods and device; a value two folders both hold (same method, metric and seed)
    must agree within --tolerance. Seeds held by one folder only are not cross-checked: the merge says where the
    folders' devices, versions, CPU features or threads per seed differ. Means and CIs are recomputed over the
    union of the seeds; a method not run on every seed is named, and its CI is over the seeds it ran on. The
    metric bars are drawn again; the other figures show the lowest seed, from the folder that began there.
    """
    try:
        merge_image_benchmark_folders("harmonize", folders, out, tolerance)
    except (ValueError, OSError) as error:
        _fail(error)
