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
    from saro import stages

    names = {" ".join(c) for c in COMMANDS}
    assert {" ".join(s.command) for s in stages.TABLE} <= names  # the stage commands come from the table
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
        "label",
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


def _leaf_commands() -> list[tuple[tuple[str, ...], bool]]:
    """Every runnable (sub)command of the typer app, with whether it has a required argument/option."""
    out: list[tuple[tuple[str, ...], bool]] = []

    def walk(cmd, path: tuple[str, ...]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, (*path, name))
        else:
            out.append((path, any(p.required for p in cmd.params)))

    walk(typer.main.get_command(app), ())
    return out


LEAVES = _leaf_commands()


def _run_main(argv: list[str], capsys) -> tuple[int, str]:
    from saro.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    cap = capsys.readouterr()
    return exc.value.code, cap.out + cap.err


def test_leaf_commands_found():
    paths = {p for p, _ in LEAVES}
    assert ("eval",) in paths and ("train", "sft") in paths and len(paths) >= 10


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=" ".join)
def test_bogus_option_is_usage_error(path, capsys):
    code, text = _run_main([*path, "--no-such-option-xyz"], capsys)
    assert code == 2
    assert f"Usage: saro {' '.join(path)}" in text
    assert "--no-such-option-xyz" in text.splitlines()[-1]
    assert "Traceback" not in text


@pytest.mark.parametrize("path", [p for p, req in LEAVES if req], ids=" ".join)
def test_missing_argument_is_usage_error(path, capsys):
    code, text = _run_main(list(path), capsys)
    assert code == 2
    assert f"Usage: saro {' '.join(path)}" in text
    assert text.splitlines()[-1].startswith("error: Missing")
    assert "Traceback" not in text


def test_bad_value_is_usage_error(capsys):
    code, text = _run_main(["eval", "--n", "many"], capsys)
    assert code == 2 and "Usage: saro eval" in text and "'--n'" in text and "Traceback" not in text
