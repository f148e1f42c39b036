from typer.testing import CliRunner

from neurodiff import __version__
from neurodiff.cli import app

runner = CliRunner()


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"neurodiff {__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("synth", "preprocess", "impute", "harmonize", "normative", "demo"):
        assert group in result.output
    assert "not built yet" not in runner.invoke(app, ["synth", "--help"]).output
