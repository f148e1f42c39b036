"""The options of the three `benchmark` commands that run the seeds as parallel jobs (--jobs, --launcher,
--slurm-*), and the :class:`~neurodiff.evaluation.seed_jobs.SeedJobs` they describe."""

from __future__ import annotations

from pathlib import Path

import typer

from neurodiff.evaluation.seed_jobs import LAUNCHERS, SeedJobs, SlurmSettings

JOBS = typer.Option(1, "--jobs", help="Seeds run at the same time: K worker processes on this machine (each with "
                    "cpu_count/K torch threads), or at most K Slurm array tasks at once. More than --seeds is capped.")
LAUNCHER = typer.Option("local", "--launcher", help="local: worker processes on this machine; slurm: one Slurm job "
                        "array through submitit (run it on a login node); submitit-local, debug: the Slurm code path "
                        "without Slurm (submitit's local and in-process executors), to try it out.")
SLURM_PARTITION = typer.Option(None, "--slurm-partition", help="Slurm partition (default: the cluster's default).")
SLURM_TIME = typer.Option(240, "--slurm-time", help="Slurm time limit of one seed's job, in minutes.")
SLURM_CPUS = typer.Option(4, "--slurm-cpus", help="CPUs of one seed's Slurm job (also its torch threads).")
SLURM_GPUS = typer.Option(0, "--slurm-gpus", help="GPUs of one seed's Slurm job (with --device cuda).")
SLURM_MEM = typer.Option(None, "--slurm-mem", help="Memory of one seed's Slurm job in GB (default: the partition's).")


def job_folder(out: Path) -> Path:
    """Where the submitit launchers keep job files and logs while they run: beside --out, since --out is
    written in one piece at the end. The logs then move to OUT/job-logs."""
    return out.parent / f"{out.name}.jobs"


def seed_jobs(out: Path, jobs: int, launcher: str, partition: str | None, time_min: int, cpus: int, gpus: int,
              mem_gb: float | None) -> SeedJobs:
    """The checked SeedJobs of the command line (ValueError before any work when it cannot run here)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    options = SeedJobs(jobs=jobs, launcher=launcher, folder=job_folder(out),
                       slurm=SlurmSettings(partition=partition, time_min=time_min, cpus_per_task=cpus,
                                           gpus_per_task=gpus, mem_gb=mem_gb))
    options.check()
    return options
