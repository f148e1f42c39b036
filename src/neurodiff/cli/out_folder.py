"""The ``--out`` check of the commands that write a folder, made before any work."""

from __future__ import annotations

from pathlib import Path


def check_out_folder(out: Path) -> None:
    """Refuse an ``--out`` that exists as a file, or as a folder with anything in it."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} is not an empty folder; choose a new folder")
