"""The root CLI: groups mounted, help everywhere, errors become exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from indexnet_cli import app

runner = CliRunner()


def _commands(group) -> list[list[str]]:
    """Every command path under a click group, e.g. [['pipeline', 'sample-data'], ...]."""
    paths = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a group
            paths += [[name, *sub] for sub in _commands(cmd)]
        else:
            paths.append([name])
    return paths


def test_every_command_has_help():
    import typer.main

    root = typer.main.get_command(app)
    paths = _commands(root)
    assert ["pipeline", "sample-data"] in paths and ["config", "show"] in paths
    assert ["train"] in paths and ["model", "import-official"] in paths
    assert ["evaluate", "score"] in paths
    for path in [[]] + [p[:1] for p in paths] + paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
        help_text = result.output.split("Options:")[0]
        assert len(help_text.split()) > 4, f"{path} needs a real description"


def test_no_arguments_shows_help_and_fails():
    result = runner.invoke(app, [])
    assert result.exit_code == 2 and "pipeline" in result.output


def test_unknown_command_and_option_exit_2():
    assert runner.invoke(app, ["nope"]).exit_code == 2
    assert runner.invoke(app, ["pipeline", "sample-data", "x", "--bogus"]).exit_code == 2


def test_sample_data_command(tmp_path):
    result = runner.invoke(app, ["pipeline", "sample-data", str(tmp_path), "-n", "2", "-m", "3"])
    assert result.exit_code == 0, result.output
    assert "2 foregrounds" in result.output and "3 backgrounds" in result.output
    again = runner.invoke(app, ["pipeline", "sample-data", str(tmp_path)])
    assert again.exit_code == 2 and "pass --overwrite" in again.output
    bad = runner.invoke(app, ["pipeline", "sample-data", str(tmp_path / "x"), "-n", "1"])
    assert bad.exit_code == 2 and "--foregrounds must be >= 2" in bad.output


def test_config_show_resolves_overrides(yaml_file):
    path = yaml_file("train:\n  epochs: 4\n")
    result = runner.invoke(
        app, ["config", "show", "--config", str(path), "--set", "model.indexnet.loss.eps=1e-3"]
    )
    assert result.exit_code == 0, result.output
    assert "epochs: 4" in result.output and "eps: 0.001" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "train.epochz=1"], "train.epochz: unknown key"),
        (["--set", "train.epochs=-1"], "train.epochs: must be >= 1"),
        (["--config", "/nonexistent/x.yaml"], "cannot read config file"),
    ],
)
def test_config_errors_exit_2_with_message(args, message):
    result = runner.invoke(app, ["config", "show", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_python_dash_m_pipeline_runs_the_group():
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "Usage: python -m pipeline" in out and "sample-data" in out
