"""Atomic writes: a reader (or a crash) never sees a half-written file or folder.

Files are written to a temporary sibling and moved into place with :func:`os.replace`, which is
atomic on POSIX file systems. Folders are assembled in a temporary sibling and renamed at the end.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success move it onto `path`, on error remove it.

    Use it with any writer that takes a file name::

        with atomic_path(out / "table.csv") as tmp:
            frame.to_csv(tmp, index=False)

    A `path` that is a symbolic link is written through: the file it points to is replaced, the link stays.
    """
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, paths
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success rename it to `path`, on error delete it.

    If `path` exists and is not empty, raise FileExistsError unless `overwrite` is true, in which
    case the old folder is replaced only after the new one is complete. A `path` that is a symbolic
    link (``out -> /scratch/run1``) is written through: the folder it points to gets the results, the
    link stays.
    """
    given, path = path, Path(os.path.realpath(path))  # messages name the path as the caller gave it
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{given} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{given} exists and is not empty; choose another folder or allow overwriting")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if path.exists():
            _swap_in(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the new folder on error, the old one after a swap


def _swap_in(new: Path, path: Path) -> None:
    """Put the folder `new` at `path`, which holds an old folder; the old one ends up at `new`.

    On Linux one atomic exchange (renameat2 RENAME_EXCHANGE): at every moment `path` holds the old
    or the new folder. Elsewhere two renames, undone if the second fails; a crash between them
    leaves the old folder beside `path` under a name ending in ``.partial.old``.
    """
    if _exchange(new, path):
        return
    old = new.with_name(new.name + ".old")  # free: `new` has a name no other save uses (mkdtemp)
    os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)
        raise
    os.replace(old, new)  # so that the caller's clean-up removes it


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths with Linux's renameat2; False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without it (glibc < 2.28, musl)
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system or kernel without it
        return False
    raise OSError(code, os.strerror(code), str(b))
