"""The command line: --help on every command, one-line errors with exit code 2 for user mistakes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from saro.cli import app

runner = CliRunner()


def _commands(group: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    cmd = typer.main.get_command(group)
    for name, sub in getattr(cmd, "commands", {}).items():
        path = (*prefix, name)
        out.append(path)
        out.extend((*path, n) for n in getattr(sub, "commands", {}))
    return out


COMMANDS = _commands(app)


def test_every_stage_has_a_command():
    names = {" ".join(c) for c in COMMANDS}
    assert {
        "demo",
        "run",
        "synth rw",
        "synth srpo",
        "train sft",
        "train dpo",
        "eval",
        "report",
        "judge",
        "serve",
        "chat",
        "analyze overlap",
        "prompts",
        "sources",
    } <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p))
def test_help(path):
    res = runner.invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_user_error_is_one_line_exit_2(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "saro", "run", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "recipe not found" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = subprocess.run(
        [sys.executable, "-m", "saro", "judge", "refusl", str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
