"""Seeds as parallel jobs: real worker processes, submitit's local and debug executors, the Slurm checks."""

import multiprocessing
import os
import stat
import sys
import time

import cloudpickle
import pytest
from typer.testing import CliRunner

from neurodiff.cli import app
from neurodiff.evaluation.seed_jobs import (
    SeedJobError,
    SeedJobs,
    SlurmSettings,
    keep_job_logs,
    map_seeds,
)

# the workers load these functions by value: this test module is not importable in a fresh process
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(seed, log=print):
    log(f"squaring {seed}")
    if seed == 2:
        time.sleep(0.5)  # finishes last although it is started first
    return {"seed": seed, "square": seed * seed + 0.5}


def threads(seed, log=print):
    # torch is not loaded here (a second or more per worker): its threads come from OMP_NUM_THREADS when it loads
    return {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def fail_on_one(seed, log=print):
    if seed == 1:
        raise ValueError("planted failure")
    log("sleeping")
    time.sleep(0 if seed == 0 else 60)  # seed 3 would hold the test a minute were it not terminated
    return seed


def die_on_one(seed, log=print):
    if seed == 1:
        os._exit(3)  # as a worker killed for memory would: no traceback, no result
    return seed


def sleep_after_starting(seed, log=print):
    log("started")
    time.sleep(60)


@pytest.fixture(autouse=True)
def _no_workers_left():
    yield
    assert not multiprocessing.active_children(), "worker processes were left running"


def test_two_worker_processes_give_the_results_of_one_process_in_seed_order():
    lines = []
    one = map_seeds(square, [2, 0, 1], jobs=1, log=lines.append)
    assert lines == ["squaring 2", "squaring 0", "squaring 1"]  # in process: the lines exactly as logged
    lines.clear()
    assert map_seeds(square, [2, 0, 1], jobs=2, log=lines.append) == one
    assert {"[seed 2] squaring 2", "[seed 0] squaring 0", "[seed 1] squaring 1"} <= set(lines)


def test_each_worker_limits_torch_and_blas_to_its_share_of_the_cores(monkeypatch):
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "99")  # what the workers inherit must not be what they report
    share = str(max(1, os.cpu_count() // 2))
    for result in map_seeds(threads, [0, 1], jobs=2, log=lambda _: None):
        assert set(result.values()) == {share}


def test_more_jobs_than_seeds_is_capped_with_a_note():
    lines = []
    assert map_seeds(square, [0, 1], jobs=5, log=lines.append) == [square(0), square(1)]
    assert lines[0] == "Note: 5 jobs for 2 seeds: running 2 at a time"
    lines.clear()
    assert map_seeds(square, [4], jobs=3, log=lines.append) == [square(4)]  # one seed: in this process
    assert lines == ["Note: 3 jobs for 1 seed: running 1 at a time", "squaring 4"]


def test_a_failed_seed_names_the_seed_shows_its_error_and_stops_the_others():
    started = time.perf_counter()
    with pytest.raises(SeedJobError, match="seed 1 failed") as caught:
        map_seeds(fail_on_one, [0, 1, 3], jobs=3, log=lambda _: None)
    assert caught.value.seed == 1
    assert "ValueError: planted failure" in str(caught.value) and "Traceback" in str(caught.value)
    assert time.perf_counter() - started < 30  # seed 3's worker was terminated, not waited for


def test_a_worker_that_dies_is_reported_with_its_seed_and_exit_code():
    with pytest.raises(SeedJobError, match=r"seed 1 failed: its worker process ended \(exit code 3\)"):
        map_seeds(die_on_one, [0, 1], jobs=2, log=lambda _: None)


def test_interrupting_the_parent_terminates_the_workers():
    def interrupt(line):
        if "started" in line:
            raise KeyboardInterrupt  # as Ctrl-C would, while the workers run

    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        map_seeds(sleep_after_starting, [0, 1], jobs=2, log=interrupt)
    assert time.perf_counter() - started < 30  # (the fixture checks that no worker is left)


def test_submitit_debug_and_local_executors_give_the_same_results(tmp_path):
    expected = map_seeds(square, [2, 0, 1], log=lambda _: None)
    assert map_seeds(square, [2, 0, 1], jobs=2, launcher="debug", folder=tmp_path / "debug", log=print) == expected
    lines = []
    options = SeedJobs(jobs=2, launcher="submitit-local", folder=tmp_path / "local")
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "99_0_log.err").write_text("a failed earlier run")  # not this run's: not kept
    assert options.map(square, [2, 0, 1], log=lines.append) == expected
    assert (tmp_path / "local.previous" / "99_0_log.err").exists()
    assert "[seed 0] squaring 0" in lines  # relayed from the job's log while it ran
    kept = keep_job_logs(options, tmp_path / "out" / "job-logs")
    assert {p.suffix for p in kept} == {".out", ".err"} and len(kept) == 6 and not (tmp_path / "local").exists()


def test_submitit_failed_seed_names_the_seed_and_shows_the_job_error(tmp_path):
    with pytest.raises(SeedJobError, match="seed 1 failed") as caught:
        map_seeds(fail_on_one, [0, 1], launcher="debug", folder=tmp_path, log=lambda _: None)
    assert caught.value.seed == 1 and "ValueError: planted failure" in str(caught.value)
    with pytest.raises(SeedJobError, match="seed 1 failed") as caught:
        map_seeds(fail_on_one, [0, 1], jobs=2, launcher="submitit-local", folder=tmp_path, log=lambda _: None)
    assert "planted failure" in str(caught.value) and "_log.err" in str(caught.value)


def test_wrong_settings_are_refused_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="at least 1, got 0"):
        SeedJobs(jobs=0).check()
    with pytest.raises(ValueError, match="unknown launcher 'pbs'"):
        SeedJobs(launcher="pbs").check()
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    with pytest.raises(ValueError, match="Slurm was not found"):
        SeedJobs(launcher="slurm", folder=tmp_path / "jobs").check()
    assert not (tmp_path / "jobs").exists()


def test_slurm_array_is_submitted_with_the_settings(tmp_path, monkeypatch):
    """A fake sbatch / srun on PATH: the submission file carries the array, partition, time and resources."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sbatch", 'echo "Submitted batch job 4242"'), ("srun", "exit 0")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    lines = []

    def stop_after_submitting(line):
        lines.append(line)
        raise KeyboardInterrupt  # the fake cluster never runs the jobs

    options = SeedJobs(jobs=2, launcher="slurm", folder=tmp_path / "jobs",
                       slurm=SlurmSettings(partition="short", time_min=7, cpus_per_task=3, gpus_per_task=1, mem_gb=2))
    with pytest.raises(KeyboardInterrupt):
        options.map(square, [0, 1, 2], log=stop_after_submitting)
    assert lines == [f"Submitted 3 seeds as Slurm job array 4242 (2 at a time); job files and logs in {tmp_path / 'jobs'}"]
    script = next((tmp_path / "jobs").glob("*_submission.sh")).read_text()
    for flag in ("--array=0-2%2", "--partition=short", "--time=7", "--cpus-per-task=3", "--gpus-per-task=1",
                 "--mem=2GB"):
        assert f"#SBATCH {flag}" in script


def test_cli_slurm_launcher_without_slurm_exits_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["impute", "benchmark", "--out", str(out), "--launcher", "slurm", "--jobs", "2",
                                      "--data", str(tmp_path / "table.csv"), "--labels", "sex"])
    assert result.exit_code == 2 and "Slurm was not found (no `sbatch` on PATH)" in result.output
    assert not out.exists() and not (tmp_path / "bench.jobs").exists()
    result = CliRunner().invoke(app, ["normative", "benchmark", "--out", str(out), "--jobs", "0"])
    assert result.exit_code == 2 and "--jobs) must be at least 1, got 0" in result.output and not out.exists()
