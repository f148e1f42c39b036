"""Run the seeds of a benchmark as parallel jobs: worker processes on this machine, or a Slurm job array.

A benchmark hands :meth:`SeedJobs.map` a per-seed callable ``fn(seed, log=...)`` (for example
``functools.partial(run_seed, data, config)``) and gets the per-seed results back **in seed order**,
whatever order the jobs finished in, so results.json is the same however the seeds ran.

Launchers:

- ``local`` with ``jobs=1`` (the default): every seed in this process, one after the other, exactly as
  a plain loop would;
- ``local`` with ``jobs=K > 1``: at most K worker processes at a time, one per seed, started with the
  ``spawn`` method; each limits torch (and BLAS) to ``cpu_count // K`` threads, sends its log lines back
  while it runs (prefixed ``[seed N]``) and its result at the end. A failed seed stops the others and
  raises :class:`SeedJobError` with the worker's traceback; Ctrl-C terminates every worker;
- ``slurm``: one Slurm job array through submitit (at most K array tasks at a time), with the
  partition, time limit, CPUs, GPUs and memory of :class:`SlurmSettings`; the jobs' log lines are
  relayed while they run, and a failed job raises :class:`SeedJobError` with its error output;
- ``submitit-local`` and ``debug``: the same submitit code path without Slurm (submitit's
  LocalExecutor, which runs every seed at once in its own process, and its in-process
  DebugExecutor), to try the cluster path on a laptop.

The submitit launchers keep their job files (pickled inputs, logs) in :attr:`SeedJobs.folder`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pickle
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LAUNCHERS = ("local", "slurm", "submitit-local", "debug")
_SUBMITIT_CLUSTER = {"slurm": "slurm", "submitit-local": "local", "debug": "debug"}

Log = Callable[[str], None]
SeedFunction = Callable[..., Any]  # fn(seed, log=...) -> result


class SeedJobError(RuntimeError):
    """A seed's job failed (``seed`` names it; the message carries the worker's error), or the jobs could
    not be submitted (``seed`` is None)."""

    def __init__(self, seed: int | None, detail: str):
        self.seed, self.detail = seed, detail
        super().__init__(f"seed {seed} failed: {detail.rstrip()}" if seed is not None else detail.rstrip())


@dataclass(frozen=True)
class SlurmSettings:
    """What each Slurm array task asks for (``--launcher slurm``)."""

    partition: str | None = None  # None: the cluster's default partition
    time_min: int = 240  # wall-time limit of one seed, minutes
    cpus_per_task: int = 4  # also the torch threads of the job
    gpus_per_task: int = 0
    mem_gb: float | None = None  # None: the partition's default


@dataclass(frozen=True)
class SeedJobs:
    """How the seeds of a benchmark run: ``jobs`` at a time, through ``launcher`` (see the module doc).

    ``folder`` is where the submitit launchers keep their job files and logs (required for them,
    unused by ``local``).
    """

    jobs: int = 1
    launcher: str = "local"
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    folder: Path | None = None

    @property
    def uses_submitit(self) -> bool:
        return self.launcher in _SUBMITIT_CLUSTER

    def check(self) -> None:
        """Raise ValueError for settings that cannot run here (before any work is done)."""
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"unknown launcher {self.launcher!r}; choose from {', '.join(LAUNCHERS)}")
        if not isinstance(self.jobs, int) or self.jobs < 1:
            raise ValueError(f"jobs (--jobs) must be at least 1, got {self.jobs}")
        if not self.uses_submitit:
            return
        if importlib.util.find_spec("submitit") is None:
            raise ValueError(f"launcher {self.launcher!r} needs submitit: pip install 'submitit>=1.5'")
        if self.folder is None:
            raise ValueError(f"launcher {self.launcher!r} needs a folder for its job files and logs")
        if self.launcher == "slurm":
            if shutil.which("sbatch") is None:
                raise ValueError("--launcher slurm: Slurm was not found (no `sbatch` on PATH). Run the command on "
                                 "a Slurm login node, or use --launcher local (with --jobs K) on this machine")
            s = self.slurm
            if s.time_min < 1 or s.cpus_per_task < 1 or s.gpus_per_task < 0 or (s.mem_gb is not None and s.mem_gb <= 0):
                raise ValueError(f"Slurm settings out of range: {s} (time and CPUs at least 1, GPUs at least 0, "
                                 "memory positive)")

    def summary(self, n_seeds: int) -> dict[str, Any]:
        """How the seeds ran, for the timings of results.json."""
        out: dict[str, Any] = {"launcher": self.launcher, "jobs": min(self.jobs, max(1, n_seeds))}
        if self.launcher == "slurm":
            out["slurm"] = asdict(self.slurm)
        return out

    def map(self, fn: SeedFunction, seeds: Sequence[int], log: Log = print) -> list[Any]:
        """``[fn(seed, log=...) for seed in seeds]``, run as configured; results in seed order."""
        self.check()
        seeds = list(seeds)
        if not seeds:
            return []
        jobs = self.jobs
        if jobs > len(seeds):
            log(f"Note: {jobs} jobs for {len(seeds)} seed{'s' if len(seeds) > 1 else ''}: running {len(seeds)} "
                "at a time")
            jobs = len(seeds)
        if self.launcher == "local":
            if jobs == 1:  # one after the other, in this process
                return [fn(seed, log=log) for seed in seeds]
            return _map_processes(fn, seeds, jobs, log)
        return _map_submitit(fn, seeds, jobs, self, log)


def map_seeds(fn: SeedFunction, seeds: Sequence[int], *, jobs: int = 1, launcher: str = "local",
              slurm: SlurmSettings | None = None, folder: str | os.PathLike | None = None,
              log: Log = print) -> list[Any]:
    """Map ``fn(seed, log=...)`` over `seeds`; the results come back in seed order. See :class:`SeedJobs`."""
    options = SeedJobs(jobs=jobs, launcher=launcher, slurm=slurm or SlurmSettings(),
                       folder=Path(folder) if folder is not None else None)
    return options.map(fn, seeds, log)


def threads_per_job(jobs: int) -> int:
    """torch / BLAS threads for each of `jobs` concurrent workers on this machine."""
    return max(1, (os.cpu_count() or 1) // jobs)


# ---------------------------------------------------------------- log lines


def _names_seed(line: str, seed: int | None = None) -> bool:
    """Whether a log line already says which seed it is about ("[seed 2] ..." or "  seed 2: ...")."""
    match = re.match(r"\s*\[?seed (\d+)\b", line)
    return match is not None and (seed is None or int(match.group(1)) == seed)


def _with_seed(seed: int, line: str) -> str:
    return line if _names_seed(line, seed) else f"[seed {seed}] {line}"


def _limit_threads(threads: int) -> Any:
    """Limit torch and the BLAS / OpenMP pools of this process to `threads`; returns a context manager.

    The environment variables cover libraries loaded later (torch reads OMP_NUM_THREADS when it loads),
    torch.set_num_threads and threadpoolctl those already loaded.
    """
    from threadpoolctl import threadpool_limits

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threadpool_limits(limits=threads)


# ---------------------------------------------------------------- local worker processes


def _map_processes(fn: SeedFunction, seeds: list[int], jobs: int, log: Log) -> list[Any]:
    import multiprocessing
    from multiprocessing.connection import wait

    import cloudpickle

    context = multiprocessing.get_context("spawn")
    payload = cloudpickle.dumps(fn)
    threads = threads_per_job(jobs)
    log(f"Running {len(seeds)} seeds in {jobs} worker processes at a time ({threads} thread"
        f"{'s' if threads > 1 else ''} each)")
    todo = list(enumerate(seeds))
    running: dict[Any, tuple[int, int, Any]] = {}  # connection -> (index, seed, process)
    results: dict[int, Any] = {}
    try:
        while todo or running:
            while todo and len(running) < jobs:
                index, seed = todo.pop(0)
                ours, theirs = context.Pipe(duplex=True)
                process = context.Process(target=_worker, args=(seed, threads, theirs, os.getpid()),
                                          name=f"neurodiff-seed-{seed}", daemon=False)
                process.start()
                theirs.close()  # the worker holds that end now: EOF on ours means it has gone
                running[ours] = (index, seed, process)
                # the work goes through the pipe, not the start-up pickle: a worker that dies while starting
                # then gives a broken pipe here (and EOF below), where Process.start() would wait forever
                with contextlib.suppress(OSError):
                    ours.send_bytes(payload)
            for connection in wait(list(running)):
                index, seed, process = running[connection]
                try:
                    kind, value = connection.recv()
                except EOFError:
                    process.join()
                    del running[connection]
                    connection.close()
                    if index not in results:
                        raise SeedJobError(seed, f"its worker process ended (exit code {process.exitcode}) without "
                                                 "returning a result; its error output is above (a script that "
                                                 "starts jobs needs `if __name__ == '__main__':`), or it ran out "
                                                 "of memory") from None
                    continue
                if kind == "log":
                    log(_with_seed(seed, value))
                elif kind == "result":
                    results[index] = pickle.loads(value)
                else:  # "error"
                    raise SeedJobError(seed, f"{value}(in its worker process)")
    except BaseException:
        _terminate([process for _, _, process in running.values()])
        raise
    finally:
        for connection in running:
            connection.close()
    return [results[index] for index in range(len(seeds))]


def _terminate(processes: list[Any]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()


def _worker(seed: int, threads: int, connection: Any, parent: int) -> None:
    """One seed in a spawned process: the work comes through `connection`, log lines and the result go back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it terminates us
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    try:
        _limit_threads(threads)  # before the payload loads torch: the environment variables
        fn = pickle.loads(connection.recv_bytes())
        with _limit_threads(threads):  # after: torch.set_num_threads and the loaded BLAS
            result = fn(seed, log=lambda line: connection.send(("log", str(line))))
        connection.send(("result", pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)))
    except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent
        text = "".join(traceback.format_exception(error))
        connection.send(("error", text))
    finally:
        connection.close()


def _exit_with_parent(parent: int) -> None:
    """Leave no orphan: end this worker when the parent process is gone (killed without cleaning up)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


# ---------------------------------------------------------------- submitit: Slurm, local, debug


class _SubmititTask:
    """What a submitit job runs: ``fn(seed)`` with its threads limited and log lines printed with the seed."""

    def __init__(self, fn: SeedFunction, threads: int | None):
        self.fn, self.threads = fn, threads

    def __call__(self, seed: int) -> Any:
        def log(line: str) -> None:
            print(_with_seed(seed, str(line)), flush=True)

        if self.threads is None:  # the debug launcher: in this process, leave its threads alone
            return self.fn(seed, log=log)
        with _limit_threads(self.threads):
            return self.fn(seed, log=log)


def _map_submitit(fn: SeedFunction, seeds: list[int], jobs: int, options: SeedJobs, log: Log) -> list[Any]:
    import submitit

    cluster = _SUBMITIT_CLUSTER[options.launcher]
    folder = Path(options.folder)
    slurm = options.slurm
    threads: int | None = {"slurm": slurm.cpus_per_task, "local": threads_per_job(len(seeds))}.get(cluster)
    if folder.is_dir() and any(folder.iterdir()):  # a failed run's files: kept apart, not mixed with these
        previous = folder.with_name(folder.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        folder.rename(previous)
        log(f"Moved the job files of an earlier run from {folder} to {previous}")
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        if cluster == "slurm":
            executor.update_parameters(name="neurodiff-seeds", timeout_min=slurm.time_min,
                                       cpus_per_task=slurm.cpus_per_task, mem_gb=slurm.mem_gb,
                                       slurm_partition=slurm.partition, slurm_array_parallelism=jobs,
                                       slurm_gpus_per_task=slurm.gpus_per_task or None)
        elif cluster == "local":  # submitit's LocalExecutor starts every seed at once
            executor.update_parameters(timeout_min=slurm.time_min)
        submitted = executor.map_array(_SubmititTask(fn, threads), seeds)
    except Exception as error:  # no srun, sbatch refused the array (partition, limits), inputs too large, ...
        raise SeedJobError(None, f"submitting the seeds with submitit ({options.launcher}) failed: {error}") from error
    if cluster == "slurm":
        log(f"Submitted {len(seeds)} seeds as Slurm job array {submitted[0].job_id.split('_')[0]} "
            f"({jobs} at a time); job files and logs in {folder}")
    elif cluster == "local":
        log(f"Started {len(seeds)} seeds with submitit's LocalExecutor (all at once); job files and logs in {folder}")
    try:
        if cluster != "debug":
            _wait_and_relay(submitted, seeds, log, poll_s=5.0 if cluster == "slurm" else 0.25)
        results = []
        for seed, job in zip(seeds, submitted):
            error = job.exception()  # (for the debug executor this runs the seed, here)
            if error is not None:
                detail = error if cluster != "debug" else "".join(traceback.format_exception(error))
                raise SeedJobError(seed, f"job {job.job_id}:\n{detail}")
            results.append(job.result())
    except BaseException:
        if cluster != "debug":  # (a debug job's done() would run it)
            _cancel(submitted)
        raise
    return results


def _cancel(submitted: list[Any]) -> None:
    """Cancel the jobs still queued or running (scancel; SIGINT for the local executor), best effort."""
    for job in submitted:
        with contextlib.suppress(Exception):  # the error that brought us here is the one to report
            if not job.done():
                job.cancel(check=False)


def _wait_and_relay(submitted: list[Any], seeds: list[int], log: Log, poll_s: float) -> None:
    """Wait for every job, relaying the seed-tagged lines of their stdout; stop at the first failure."""
    offsets: dict[Path, int] = {}
    checked: set[int] = set()
    while True:
        done = [job.done() for job in submitted]
        for job in submitted:
            _relay_new_lines(job.paths.stdout, offsets, log)
        for index, (seed, job) in enumerate(zip(seeds, submitted)):
            if done[index] and index not in checked:
                checked.add(index)
                error = job.exception()
                if error is not None:
                    raise SeedJobError(seed, f"job {job.job_id}:\n{error}")
        if all(done):
            return
        time.sleep(poll_s)


def _relay_new_lines(path: Path, offsets: dict[Path, int], log: Log) -> None:
    try:
        with open(path, "rb") as stream:
            stream.seek(offsets.get(path, 0))
            chunk = stream.read()
    except FileNotFoundError:
        return
    end = chunk.rfind(b"\n") + 1
    offsets[path] = offsets.get(path, 0) + end
    for line in chunk[:end].decode("utf-8", "replace").splitlines():
        if _names_seed(line):
            log(line)


def keep_job_logs(options: SeedJobs, destination: str | os.PathLike) -> list[Path]:
    """Copy the submitit jobs' stdout / stderr logs into `destination` and delete the job folder.

    Call it once the results are safe; the job files (pickled inputs and results) go with the folder.
    Nothing to do for the local launcher.
    """
    if not options.uses_submitit or options.folder is None or not Path(options.folder).is_dir():
        return []
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    kept = []
    for path in sorted(Path(options.folder).rglob("*")):
        if path.is_file() and path.suffix in (".out", ".err"):
            target = destination / path.name
            shutil.copyfile(path, target)
            kept.append(target)
    shutil.rmtree(options.folder, ignore_errors=True)
    return kept

