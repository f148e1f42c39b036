"""Preprocessing a manifest of T1 scans: subjects in parallel, failures reported, finished ones skipped.

:func:`preprocess_manifest` reads a manifest (``subject_id, path`` and any covariate columns), runs
:func:`~neurodiff.data.preprocess.pipeline.preprocess_scan` for every subject not done yet (``jobs``
processes at once), writes each subject's folder atomically (a crash never leaves a half-written one),
and ends with ``OUT/manifest.csv`` in the image-cohort contract (one row per slice, the input's covariate
columns copied) and, when some subjects failed, ``OUT/failures.csv`` naming each with its error. A
subject that fails is reported and skipped; the others go on.

Output folders are named by ``subject_id``, or ``<subject_id>_ses-<session>`` when the manifest has a
``session`` column. A re-run skips a subject whose folder holds a result of the same input file (by
checksum) and the same settings; one made from another file or with other settings is an error for
that subject unless ``overwrite`` is given.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from neurodiff.atomic import atomic_dir, atomic_path
from neurodiff.data.image_manifest import ManifestError, read_manifest
from neurodiff.data.preprocess.pipeline import (
    PreprocessConfig,
    file_sha256,
    preprocess_scan,
    read_record,
    settings_match,
    write_scan,
)
from neurodiff.data.preprocess.skull_strip import HDBET_MISSING, hdbet_available
from neurodiff.data.preprocess.volume import PreprocessError

#: Characters allowed in a subject id (it names a folder).
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Covariates the image-cohort contract needs downstream (harmonize, normative).
CONTRACT_COVARIATES = ("age", "sex", "site")


@dataclass
class SubjectOutcome:
    """What happened to one subject: done (now), skipped (done before) or failed (with the reason)."""

    key: str
    subject_id: str
    status: str
    message: str = ""
    seconds: float = 0.0


@dataclass
class PreprocessSummary:
    """The outcome of :func:`preprocess_manifest`."""

    outcomes: list[SubjectOutcome]
    manifest_path: Path | None
    failures_path: Path | None
    warnings: list[str] = field(default_factory=list)

    def _with(self, status: str) -> list[SubjectOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def done(self) -> list[SubjectOutcome]:
        return self._with("done")

    @property
    def skipped(self) -> list[SubjectOutcome]:
        return self._with("skipped")

    @property
    def failed(self) -> list[SubjectOutcome]:
        return self._with("failed")


def read_scan_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a preprocessing manifest: ``subject_id, path`` required, any other columns kept.

    Adds ``resolved_path`` and ``output_key`` (the output folder name). Missing image files are not an
    error here (they fail their own subject); duplicate output folders are.
    """
    path = Path(path)
    frame = read_manifest(path, required=("subject_id", "path"), check_images=False)
    frame["subject_id"] = frame["subject_id"].astype(str).str.strip()
    if "session" in frame.columns:
        session = frame["session"].astype("string").str.strip().fillna("")
        frame["output_key"] = [s if not v else f"{s}_ses-{v}" for s, v in zip(frame["subject_id"], session)]
    else:
        frame["output_key"] = frame["subject_id"]
    duplicated = frame["output_key"].duplicated(keep=False)
    if duplicated.any():
        key = frame.loc[duplicated, "output_key"].iloc[0]
        rows = [int(i) + 2 for i in frame.index[frame["output_key"] == key]]
        hint = " (add a session column to tell the scans apart)" if "session" not in frame.columns else ""
        raise ManifestError(
            f"manifest {path}: rows {', '.join(map(str, rows))} all name subject {key!r}; each subject "
            f"(and session) may appear once{hint}"
        )
    return frame


def _row_problem(row: pd.Series, manifest_dir: Path) -> str | None:
    subject = row["subject_id"]
    if not _SAFE_ID.match(subject) or ".." in subject:
        return (f"subject_id {subject!r} cannot name a folder: use letters, digits, '.', '_' and '-' only, "
                "starting with a letter or digit")
    session = row.get("session")
    if session is not None and not pd.isna(session) and str(session).strip():
        session = str(session).strip()
        if not _SAFE_ID.match(session) or ".." in session:  # it names the folder too: <subject>_ses-<session>
            return (f"session {session!r} cannot name a folder: use letters, digits, '.', '_' and '-' only, "
                    "starting with a letter or digit")
    value = str(row["path"]).strip()
    given = Path(value).expanduser()
    if not given.is_absolute():
        inside = os.path.normpath(manifest_dir / given)
        if os.path.commonpath([inside, str(manifest_dir)]) != str(manifest_dir):
            return (f"path {value!r} is relative but leads outside the manifest's folder {manifest_dir}; give "
                    "an absolute path, or move the manifest up to a folder that holds the images")
    if not Path(row["resolved_path"]).is_file():
        return f"image {value!r} does not exist (looked for {row['resolved_path']})"
    return None


def preprocess_manifest(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    config: PreprocessConfig = PreprocessConfig(),
    *,
    jobs: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> PreprocessSummary:
    """Preprocess every subject of `manifest` into `out` (see the module text for the layout and rules).

    Parameters
    ----------
    manifest
        CSV with ``subject_id, path`` (NIfTI, relative to the manifest's folder or absolute) and any
        covariate columns (``age, sex, site, group, time, event, ...``), which are copied to the output
        manifest.
    out
        Output folder (created if needed; existing subject folders there are reused or refused as above).
    config
        The preprocessing settings.
    jobs
        Subjects processed at once, each in its own process (SimpleITK's threads are shared out).
    overwrite
        Redo subjects whose folder holds a result from another input file or other settings.
    progress
        Show a progress bar and one line per failed subject.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs!r}")
    if config.skull_strip == "hd-bet" and hdbet_available() is None:  # before any subject, not after N4 and registration
        raise ValueError(HDBET_MISSING)
    manifest = Path(manifest)
    frame = read_scan_manifest(manifest)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    _remove_partial_folders(out, frame["output_key"])
    manifest_dir = Path(os.path.normpath(manifest.resolve().parent))

    outcomes: dict[str, SubjectOutcome] = {}
    todo: list[tuple[str, str, str]] = []
    for _, row in frame.iterrows():
        key, subject = row["output_key"], row["subject_id"]
        problem = _row_problem(row, manifest_dir)
        if problem is None and (out / key).exists():
            problem, skip = _existing(out / key, row["resolved_path"], config, overwrite)
            if skip:
                outcomes[key] = SubjectOutcome(key, subject, "skipped", "done before with the same input and settings")
                continue
        if problem is not None:
            outcomes[key] = SubjectOutcome(key, subject, "failed", problem)
            continue
        todo.append((key, subject, row["resolved_path"]))

    bar = tqdm(total=len(frame), desc="preprocess", unit="subject", disable=not progress, dynamic_ncols=True)
    bar.update(len(outcomes))
    for outcome in outcomes.values():
        if outcome.status == "failed" and progress:
            tqdm.write(f"  failed {outcome.key}: {outcome.message}")

    def record(outcome: SubjectOutcome) -> None:
        outcomes[outcome.key] = outcome
        bar.update(1)
        if outcome.status == "failed" and progress:
            tqdm.write(f"  failed {outcome.key}: {outcome.message}")
        bar.set_postfix(done=sum(o.status == "done" for o in outcomes.values()),
                        failed=sum(o.status == "failed" for o in outcomes.values()))

    try:
        if jobs == 1 or len(todo) <= 1:
            for key, subject, path in todo:
                record(_process_subject(key, subject, path, str(out), config))
        else:
            _in_processes(todo, jobs, out, config, record)
    finally:
        bar.close()

    ordered = [outcomes[key] for key in frame["output_key"] if key in outcomes]
    manifest_path = _write_output_manifest(frame, ordered, out)
    failures_path = _write_failures(ordered, out)
    warnings = []
    missing = [c for c in CONTRACT_COVARIATES if c not in frame.columns]
    if missing and manifest_path is not None:
        warnings.append(
            f"the input manifest has no {', '.join(missing)} column(s), so {manifest_path} lacks them too; "
            "neurodiff harmonize and normative need age, sex and site: add them to the input manifest"
        )
    return PreprocessSummary(outcomes=ordered, manifest_path=manifest_path, failures_path=failures_path,
                             warnings=warnings)


def _in_processes(todo: list[tuple[str, str, str]], jobs: int, out: Path, config: PreprocessConfig,
                  record: Callable[[SubjectOutcome], None]) -> None:
    """Process the subjects in `jobs` worker processes.

    A worker that dies (killed, e.g. out of memory, or a crash in native code) takes the pool down with
    every subject not yet finished. Those are redone one per fresh process, so only a subject that
    kills its own process fails, with a message that says so.
    """
    threads = max(1, (os.cpu_count() or 1) // jobs)
    interrupted: list[tuple[str, str, str]] = []
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(_process_subject, key, subject, path, str(out), config): (key, subject, path)
                   for key, subject, path in todo}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    record(future.result())
                except BrokenProcessPool:
                    interrupted.append(futures[future])
    _remove_partial_folders(out, [key for key, _, _ in interrupted])
    for key, subject, path in interrupted:
        with ProcessPoolExecutor(max_workers=1, initializer=_init_worker, initargs=(os.cpu_count() or 1,)) as solo:
            try:
                record(solo.submit(_process_subject, key, subject, path, str(out), config).result())
            except BrokenProcessPool:
                record(SubjectOutcome(key, subject, "failed", f"{path}: the process preprocessing it died (killed, "
                                      "e.g. out of memory: a 256³ head needs about 3 GB; or a crash in native code)"))
        _remove_partial_folders(out, [key])


def _remove_partial_folders(out: Path, keys) -> None:
    """Remove the temporary folders a killed run left for these subjects (complete ones are renamed)."""
    for key in keys:
        for partial in out.glob(f".{key}.*.partial"):
            shutil.rmtree(partial, ignore_errors=True)


def _existing(folder: Path, source: str, config: PreprocessConfig, overwrite: bool) -> tuple[str | None, bool]:
    """(problem, skip) for a subject whose output folder exists already: a result from the same file
    and settings is skipped, also with `overwrite`, which redoes only the other folders."""
    record = read_record(folder)
    if record is None:
        problem = (f"{folder} exists but holds no preprocessing result (no readable preprocess.json); remove it "
                   "or pass --overwrite")
    elif not settings_match(record, config):
        problem = (f"{folder} holds a result made with other settings; pass --overwrite to redo it, or choose "
                   "another --out")
    elif record.get("source_sha256") != file_sha256(source):
        problem = (f"{folder} holds a result made from another file than {source} (or the file changed since); "
                   "pass --overwrite to redo it")
    else:
        return None, True
    return (None if overwrite else problem), False


def _init_worker(threads: int) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _process_subject(key: str, subject: str, path: str, out: str, config: PreprocessConfig) -> SubjectOutcome:
    start = time.perf_counter()
    try:
        scan = preprocess_scan(path, config)
        with atomic_dir(Path(out) / key, overwrite=True) as folder:
            write_scan(scan, folder, config, subject_id=subject)
    except PreprocessError as error:
        return SubjectOutcome(key, subject, "failed", str(error), time.perf_counter() - start)
    except Exception as error:  # one subject's unexpected failure must not stop the others
        return SubjectOutcome(key, subject, "failed", f"{path}: unexpected {type(error).__name__}: {error}",
                              time.perf_counter() - start)
    return SubjectOutcome(key, subject, "done", "", time.perf_counter() - start)


def _write_output_manifest(frame: pd.DataFrame, outcomes: list[SubjectOutcome], out: Path) -> Path | None:
    ready = {o.key for o in outcomes if o.status in ("done", "skipped")}
    rows = []
    covariates = [c for c in frame.columns if c not in ("subject_id", "path", "resolved_path", "output_key")]
    for _, row in frame.iterrows():
        key = row["output_key"]
        if key not in ready:
            continue
        record = read_record(out / key) or {}
        names, z_mm = record.get("slices", ["slice.nii.gz"]), record.get("slice_z_mm", [None])
        for index, (name, z) in enumerate(zip(names, z_mm)):
            entry = {"subject_id": row["subject_id"], "path": f"{key}/{name}"}
            entry.update({column: row[column] for column in covariates})
            entry.update({"volume_path": f"{key}/brain.nii.gz", "brain_mask_path": f"{key}/brain_mask.nii.gz",
                          "source_path": row["resolved_path"]})
            if len(names) > 1:
                entry.update({"slice": index, "slice_z_mm": z})
            rows.append(entry)
    path = out / "manifest.csv"
    if not rows:
        path.unlink(missing_ok=True)
        return None
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return path


def _write_failures(outcomes: list[SubjectOutcome], out: Path) -> Path | None:
    path = out / "failures.csv"
    failed = [o for o in outcomes if o.status == "failed"]
    if not failed:
        path.unlink(missing_ok=True)
        return None
    with atomic_path(path) as tmp:
        pd.DataFrame([{"subject_id": o.subject_id, "folder": o.key, "error": o.message} for o in failed]).to_csv(
            tmp, index=False)
    return path
