"""The errors a newcomer hits first say what to do next, exit non-zero, and write nothing."""

import pytest
from typer.testing import CliRunner

from neurodiff.cli import app

cli = CliRunner()


@pytest.mark.parametrize("command", [
    ["harmonize", "fit", "--quick"], ["normative", "fit", "--quick"], ["preprocess"],
])
def test_no_data_folder(tmp_path, command):
    out = tmp_path / "out"
    missing = cli.invoke(app, [*command, "--manifest", str(tmp_path / "study" / "manifest.csv"), "--out", str(out)])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert "neurodiff synth images --quick" in missing.output and "docs/workflow-" in missing.output
    folder = tmp_path / "study"
    folder.mkdir()
    given_folder = cli.invoke(app, [*command, "--manifest", str(folder), "--out", str(out)])
    assert given_folder.exit_code == 2 and "is a folder" in given_folder.output
    (folder / "manifest.csv").write_text("subject_id,path\n")
    given_folder = cli.invoke(app, [*command, "--manifest", str(folder), "--out", str(out)])
    assert f"give the manifest file inside it: {folder / 'manifest.csv'}" in given_folder.output
    assert not out.exists()


def test_no_table(tmp_path):
    result = cli.invoke(app, ["impute", "fit", "--data", str(tmp_path), "--labels", "age", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "is a folder, not a table file" in result.output
    assert "neurodiff synth longitudinal" in result.output and not (tmp_path / "m").exists()


@pytest.mark.parametrize("command", [
    ["harmonize", "apply", "--target-site", "site0"], ["normative", "score"],
])
def test_a_used_output_folder_is_refused_before_any_work(tmp_path, command):
    out = tmp_path / "results"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    # the model and manifest do not exist either: the output folder is checked first, before hours of work
    result = cli.invoke(app, [*command, "--model", str(tmp_path / "model"), "--manifest", str(tmp_path / "m.csv"),
                              "--out", str(out)])
    assert result.exit_code == 2 and "not an empty folder" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("command", [
    ["harmonize", "fit", "--manifest", "m.csv"], ["harmonize", "benchmark"],
    ["impute", "fit", "--data", "t.csv", "--labels", "age"], ["impute", "benchmark"],
    ["normative", "fit", "--manifest", "m.csv"], ["normative", "benchmark"],
])
def test_an_output_path_that_is_a_file_is_refused_before_any_work(tmp_path, command):
    out = tmp_path / "results"
    out.write_text("mine")
    result = cli.invoke(app, [*command, "--out", str(out)])
    assert result.exit_code == 2 and "not an empty folder" in result.output, result.output
    assert out.read_text() == "mine"


def test_a_full_disk_says_what_to_do(monkeypatch, capsys):
    import errno

    import neurodiff.cli as cli_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/.results.json.tmp")

    monkeypatch.setattr(cli_module, "app", full)
    with pytest.raises(SystemExit) as exited:
        cli_module.main()
    assert exited.value.code == 1
    message = capsys.readouterr().err
    assert "the disk is full writing /data/out/.results.json.tmp" in message and "run the same command again" in message
