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


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_atomic_dir_overwrite_swaps_in_the_new_folder_and_leaves_nothing_else(tmp_path, monkeypatch, exchange):
    import neurodiff.atomic as atomic

    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    else:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").write_text("b")
        if not atomic._exchange(tmp_path / "a", tmp_path / "b"):
            pytest.skip("no renameat2 exchange on this system")
        assert (tmp_path / "a").read_text() == "b" and (tmp_path / "b").is_dir()  # swapped
        (tmp_path / "a").unlink()
        (tmp_path / "b").rmdir()
        calls = []
        real = atomic._exchange
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: calls.append(1) or real(a, b))
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "v").write_text("old")
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "v").write_text("new")
    assert (out / "v").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["model"]
    if exchange:
        assert calls == [1]  # the swap was the exchange, not the fallback


def test_atomic_dir_overwrite_keeps_the_old_folder_when_the_swap_fails(tmp_path, monkeypatch):
    import neurodiff.atomic as atomic

    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "v").write_text("old")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    real_replace = os.replace

    def failing(src, dst):
        if str(src).endswith(".partial"):
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    with pytest.raises(OSError, match="disk gone"):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "v").write_text("new")
    assert (out / "v").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_symlinked_output_folder_is_written_through(tmp_path, overwrite):
    """``out -> scratch/run1``: the results land in run1, the link stays, nothing is left beside it."""
    target = tmp_path / "scratch" / "run1"
    target.mkdir(parents=True)
    if overwrite:
        (target / "old.txt").write_text("old")
    link = tmp_path / "out"
    link.symlink_to(target, target_is_directory=True)
    with atomic_dir(link, overwrite=overwrite) as tmp:
        (tmp / "results.json").write_text("{}")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert sorted(p.name for p in target.iterdir()) == ["results.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "scratch"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["run1"]


def test_a_symlinked_output_file_is_written_through(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "results.json"
    link.symlink_to(target)
    write_json(link, {"a": 1})
    assert link.is_symlink() and target.read_text().startswith("{")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real.json", "results.json"]
