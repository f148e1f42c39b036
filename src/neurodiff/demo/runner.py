"""Run the demo's stages in order into one folder, resumably, with a remaining-time estimate.

Layout of the output folder::

    demo.json              the settings of this demo run (a resumed run must match them)
    cohorts/               the embedded cohorts (images/manifest.csv, longitudinal.csv, a figure)
    engine/                the shared engine on a toy ring vs a fitted Gaussian
    impute/ harmonize/ normative/
                           each method's benchmark (results.json, report.html, figures), written by the
                           `neurodiff <group> benchmark` command shown in the summary
    logs/<stage>.log       what each benchmark command printed
    results.json           every stage's results in one document
    report.html            the summary page, linking to the three full reports

A stage is done when its folder holds results.json; every stage folder is written atomically, so an
interrupted run leaves only finished stages and re-running the same command continues from the first
unfinished one. The method stages run as separate processes (`python -m neurodiff ...`), so each
starts with fresh memory and the summary can show the exact command that reproduces it.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurodiff import __version__
from neurodiff.atomic import atomic_dir, write_json
from neurodiff.demo.budget import DEMO, SMOKE, Budget
from neurodiff.demo.cohorts import IMAGES, TABLE, cohorts_stage
from neurodiff.reporting.results import results_document

STATE = "demo.json"
#: Free space the demo wants on the output's disk before it starts (it writes about 30 MB, and its
#: benchmark commands keep their outputs in temporary folders beside the final ones).
MIN_FREE_BYTES = 300 * 1024**2
#: Seconds of "as expected" assumed before any stage has run, so that one short stage that ran slow or
#: fast does not swing the estimate for the whole demo.
PACE_PRIOR = 120.0


class DemoError(Exception):
    """A problem the user can act on; the message says what to do next. `exit_code`: 2 for a bad request
    (folder, disk space), 1 for a stage that failed, 130 for an interruption."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Stage:
    name: str
    title: str


STAGES = (
    Stage("cohorts", "embedded cohorts: multi-site images with travellers and patients, a two-visit table"),
    Stage("engine", "shared diffusion engine on a toy ring vs a fitted Gaussian"),
    Stage("impute", "longitudinal imputation: SECONDGRAM, its ablations, WGAN-GP, LOCF, ridge"),
    Stage("harmonize", "harmonisation: DDAE, ComBat, cVAE, style-GAN, raw"),
    Stage("normative", "normative modelling and survival: NDA (two scores), cVAE, regression, brain age"),
)

METHOD_STAGES = ("impute", "harmonize", "normative")
#: SECONDGRAM's benchmark methods as its paper and issue #4 name them (the benchmark also knows an
#: experimental calibration variant, left out of the demo).
IMPUTE_METHODS = ("secondgram", "secondgram_noised_schedule", "vanilla", "pretrained", "no_grad", "no_self",
                  "gan", "locf", "ridge")
#: Each image method against every baseline; the variants of the method itself (DDAE's adversarial
#: head, NDA without age) are left to the full benchmarks, to spend the demo's minutes on training.
HARMONIZE_METHODS = ("ddae", "combat", "cvae", "style_gan", "raw")
NORMATIVE_METHODS = ("nda", "nda_mahalanobis", "cvae", "regression_z", "brain_age_gap")


def stage_command(stage: str, out: Path, budget: Budget) -> list[str]:
    """The `neurodiff` arguments that run a method stage (its --out is added by the caller)."""
    seeds = ["--seeds", str(budget.seeds)]
    images = str(out / "cohorts" / IMAGES / "manifest.csv")
    if stage == "impute":
        from neurodiff.data.synthetic_longitudinal import LABEL_COLUMNS

        return ["impute", "benchmark", "--data", str(out / "cohorts" / TABLE), "--quick", *seeds,
                "--labels", ",".join(LABEL_COLUMNS), "--exclude", "years_since_first",
                "--methods", ",".join(IMPUTE_METHODS), "--downstream-labels", "parkinsonism",
                "--case-features", "_snc", "--case-label", "parkinsonism",
                "--epochs", str(budget.impute_epochs), "--patience", str(budget.impute_patience),
                "--baseline-epochs", str(budget.impute_baseline_epochs)]
    if stage == "harmonize":
        return ["harmonize", "benchmark", "--manifest", images, "--quick", *seeds, "--no-timing",
                "--methods", ",".join(HARMONIZE_METHODS),
                "--steps", str(budget.ddae_steps), "--baseline-steps", str(budget.harmonize_baseline_steps),
                "--gan-steps", str(budget.gan_steps)]
    if stage == "normative":
        return ["normative", "benchmark", "--manifest", images, "--quick", *seeds,
                "--methods", ",".join(NORMATIVE_METHODS),
                "--steps", str(budget.nda_steps), "--baseline-steps", str(budget.normative_baseline_steps)]
    raise ValueError(f"{stage} is not a method stage")


def run_demo(out: str | Path, *, smoke: bool = False, overwrite: bool = False,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every stage into `out`, then write results.json and report.html there."""
    from neurodiff.demo.summary import write_summary

    out = Path(out).absolute()
    budget = SMOKE if smoke else DEMO
    _check_free_space(out)  # before anything is written
    _prepare_folder(out, budget, overwrite)
    started = time.perf_counter()
    spent: dict[str, float] = {}
    ran_expected = ran_actual = 0.0
    todo = [s for s in STAGES if not (out / s.name / "results.json").exists()]
    if len(todo) < len(STAGES):
        log(f"Resuming the demo in {out}: {len(STAGES) - len(todo)} of {len(STAGES)} stages are done and kept.")
    for number, stage in enumerate(STAGES, 1):
        folder = out / stage.name
        if (folder / "results.json").exists():
            continue
        expected = budget.expected_seconds[stage.name]
        pace = (ran_actual + PACE_PRIOR) / (ran_expected + PACE_PRIOR)  # this machine vs the reference CPU
        left = pace * sum(budget.expected_seconds[s.name] for s in todo)
        log(f"[{number}/{len(STAGES)}] {stage.title}\n      expected about {_duration(pace * expected)}; "
            f"about {_duration(left)} left for the whole demo")
        _remove_partial(folder)
        clock = time.perf_counter()
        try:
            _run_stage(stage, out, budget, log)
        except KeyboardInterrupt:
            raise DemoError(f"interrupted during the {stage.name} stage; the finished stages are kept in {out}. "
                            "Run the same command again to continue from this stage.", exit_code=130) from None
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise DemoError(_disk_full_message(out, stage.name)) from error
            raise
        spent[stage.name] = time.perf_counter() - clock
        _record_wall_time(out, stage.name, spent[stage.name])
        ran_expected, ran_actual = ran_expected + expected, ran_actual + spent[stage.name]
        todo.remove(stage)
        log(f"      done in {_duration(spent[stage.name])}")
    commands = {name: _command_text(name, out, budget) for name in METHOD_STAGES}
    wall_seconds = json.loads((out / STATE).read_text()).get("stage_wall_seconds", {})
    document = write_summary(out, [s.name for s in STAGES], budget, commands, wall_seconds,
                             this_run_seconds=time.perf_counter() - started)
    log(f"Wrote {out / 'report.html'} (open it in a browser) and {out / 'results.json'}.")
    return document


def _run_stage(stage: Stage, out: Path, budget: Budget, log: Callable[[str], None]) -> None:
    folder = out / stage.name
    if stage.name == "cohorts":
        with atomic_dir(folder) as tmp:
            info = cohorts_stage(tmp, smoke=budget.smoke_cohorts, log=log)
            write_json(tmp / "results.json", results_document(task="cohorts", data=info, seeds=[], per_seed={},
                                                               timings={"total_seconds": info["seconds"]}))
    elif stage.name == "engine":
        from neurodiff.demo.ring import RING_DATA, engine_stage

        seeds = tuple(range(budget.seeds))
        with atomic_dir(folder) as tmp:
            result = engine_stage(tmp, seeds=seeds, epochs=budget.ring_epochs, log=log)
            write_json(tmp / "results.json", results_document(
                task="engine", data={"description": RING_DATA}, seeds=list(seeds), per_seed=result["per_seed"],
                timings=result["timings"], checks=result["checks"]))
    else:
        _run_command(stage.name, out, budget, log)


def _run_command(name: str, out: Path, budget: Budget, log: Callable[[str], None]) -> None:
    """Run one benchmark command as a child process, echoing and logging what it prints."""
    args = [sys.executable, "-m", "neurodiff", *stage_command(name, out, budget), "--out", str(out / name)]
    log_path = out / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "2"}
    with open(log_path, "wb") as record:
        record.write(("$ " + _command_text(name, out, budget) + "\n").encode())
        child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        try:
            assert child.stdout is not None
            while chunk := child.stdout.read1(65536):
                record.write(chunk)
                sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                sys.stdout.flush()
            code = child.wait()
        except BaseException:
            child.kill()
            child.wait()
            raise
    if code != 0:
        lines = log_path.read_text(errors="replace").replace("\r", "\n").splitlines()
        tail = [line.strip() for line in lines if line.strip() and "it/s" not in line and "%|" not in line][-3:]
        if _free_bytes(out) < MIN_FREE_BYTES or any("No space left" in line for line in tail):
            raise DemoError(_disk_full_message(out, name))
        raise DemoError(f"the {name} stage failed (exit code {code}): " + " / ".join(tail) +
                        f"\nIts full output is in {log_path}. The finished stages are kept; after fixing the "
                        "cause, run the same command again to continue from this stage.", exit_code=1)


def _command_text(name: str, out: Path, budget: Budget) -> str:
    return shlex.join(["neurodiff", *stage_command(name, out, budget), "--out", str(out / name)])


def _record_wall_time(out: Path, stage: str, seconds: float) -> None:
    """Keep each stage's wall-clock time in demo.json (a resumed run reports the earlier stages' too)."""
    state = json.loads((out / STATE).read_text())
    state.setdefault("stage_wall_seconds", {})[stage] = round(seconds, 1)
    write_json(out / STATE, state)


def _prepare_folder(out: Path, budget: Budget, overwrite: bool) -> None:
    """Start a demo folder, or check that `out` holds a demo this run may resume (or, with
    `overwrite`, clear). Anything that is not a demo folder is refused untouched."""
    state = out / STATE
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()):
        old = not state.exists() and _is_old_demo(out)  # written by the demo before it could resume
        if not state.exists() and not old:
            raise DemoError(f"--out {out} is not empty and is not a demo output folder (it has no {STATE}); "
                            "choose another --out folder (nothing was changed)")
        if not overwrite:
            try:
                earlier = {} if old else json.loads(state.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise DemoError(f"{state} cannot be read ({error}); add --overwrite to start again there, or "
                                "choose another --out folder") from error
            if earlier.get("settings") == budget.settings():
                return
            settings = earlier.get("settings", {})
            what = ("an earlier demo's output" if old else
                    "a demo run of an earlier neurodiff version (other cohorts or stages)"
                    if settings.get("revision") != budget.revision else
                    f"a demo run with other settings ({settings.get('name')} budget)")
            again = shlex.join(["neurodiff", "demo", "--out", str(out), *(["--smoke"] if budget is SMOKE else []),
                                "--overwrite"])
            raise DemoError(f"{out} holds {what}; to start again there run `{again}`, or choose another --out folder")
        for item in out.iterdir():
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_json(state, {"neurodiff": __version__, "settings": budget.settings()})


def _is_old_demo(out: Path) -> bool:
    try:
        return json.loads((out / "results.json").read_text()).get("task") == "demo"
    except (OSError, ValueError, AttributeError):
        return False


def _remove_partial(folder: Path) -> None:
    """An unfinished stage's remains: the temporary folders of a stage killed outright (atomic_dir
    names them .<name>.*.partial), or a stage folder that lost its results.json."""
    for leftover in [*folder.parent.glob(f".{folder.name}.*.partial"), *([folder] if folder.exists() else [])]:
        shutil.rmtree(leftover, ignore_errors=True)


def _free_bytes(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _check_free_space(out: Path) -> None:
    if _free_bytes(out) < MIN_FREE_BYTES:
        raise DemoError(_disk_full_message(out, None))


def _disk_full_message(out: Path, stage: str | None) -> str:
    free = _free_bytes(out) / 1024**2
    where = f"during the {stage} stage" if stage else "before starting"
    return (f"not enough disk space {where}: {free:.0f} MB free where {out} lives, the demo needs about "
            f"{MIN_FREE_BYTES / 1024**2:.0f} MB. Free some space (or choose --out on another disk) and run "
            "the same command again; finished stages are kept.")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
