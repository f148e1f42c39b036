import os
import stat

import pytest

from neurodiff.atomic import atomic_dir, atomic_path, write_json


def test_atomic_file_has_ordinary_permissions_and_no_leftovers(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_atomic_dir_all_or_nothing(tmp_path):
    out = tmp_path / "cohort"
    with pytest.raises(ValueError):
        with atomic_dir(out) as tmp:
            (tmp / "a.nii.gz").write_bytes(b"x")
            raise ValueError("bad subject")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(out) as tmp:
        (tmp / "a.nii.gz").write_bytes(b"x")
    assert (out / "a.nii.gz").exists()
    with pytest.raises(FileExistsError, match="not empty"):
        with atomic_dir(out):
            pass
