"""Progress off a terminal: periodic log lines naming what runs, done/total, rate and ETA."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest

from saro.progress import LogProgress, format_line, progress_interval


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "saro.progress"]


def test_interval_zero_logs_every_step(caplog):
    caplog.set_level(logging.INFO, logger="saro.progress")
    with LogProgress(interval=0) as prog:
        task = prog.add_task("generating (base)", total=4)
        for _ in range(4):
            prog.advance(task)
    lines = _lines(caplog)
    assert lines[0] == "generating (base): 0/4, started"
    assert [re.match(r"generating \(base\): (\d)/4 ", x).group(1) for x in lines[1:]] == ["1", "2", "3", "4"]
    assert "ETA" in lines[-1] and "/s" in lines[-1]


def test_long_interval_logs_start_and_end_only(caplog):
    caplog.set_level(logging.INFO, logger="saro.progress")
    with LogProgress(interval=3600) as prog:
        task = prog.add_task("judging", total=10)
        prog.advance(task, 3)
        prog.update(task, advance=7, description="judging (refusal)")
    lines = _lines(caplog)
    assert len(lines) == 2
    assert lines[1].startswith("judging (refusal): 10/10 (100%)")


def test_disabled_logs_nothing(caplog):
    caplog.set_level(logging.INFO, logger="saro.progress")
    with LogProgress(interval=0, disable=True) as prog:
        prog.advance(prog.add_task("x", total=2), 2)
    assert _lines(caplog) == []


def test_format_line_unknown_total_and_eta():
    from saro.progress import _Task

    t = _Task("sampling (rw)", None, completed=5, start=0.0)
    assert format_line(t, 10.0) == "sampling (rw): 5 done, 0.50/s, 10s elapsed"
    t = _Task("sampling (rw)", 100, completed=25, start=0.0)
    assert format_line(t, 50.0) == "sampling (rw): 25/100 (25%), 0.50/s, ETA 2m30s"


@pytest.mark.parametrize(("raw", "want"), [("", 30.0), ("2.5", 2.5), ("soon", 30.0), ("-1", 0.0)])
def test_interval_from_environment(monkeypatch, raw, want):
    monkeypatch.setenv("SARO_PROGRESS_INTERVAL", raw)
    assert progress_interval() == want


def test_make_progress_off_terminal_is_log_progress(monkeypatch):
    from saro.console import make_progress

    monkeypatch.delenv("SARO_NO_PROGRESS", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    prog = make_progress()
    assert isinstance(prog, LogProgress) and not prog.disable


def test_eval_to_a_log_file_reports_generation_progress(tiny_model_dir, tmp_path):
    """`saro eval ... 2> log`: the log holds progress lines naming the generation and its model, done/16."""
    env = {k: v for k, v in os.environ.items() if k != "SARO_NO_PROGRESS"}
    env.update(SARO_PROGRESS_INTERVAL="0", OMP_NUM_THREADS="1")
    log_path = tmp_path / "log"
    cmd = [sys.executable, "-m", "saro", "eval", "-m", f"base={tiny_model_dir}", "--suite", "harmbench"]
    cmd += ["--n", "16", "--max-new-tokens", "8", "--out", str(tmp_path / "run")]
    with log_path.open("w") as err:
        proc = subprocess.run(cmd, stderr=err, stdout=subprocess.DEVNULL, env=env, timeout=240)
    log = log_path.read_text()
    assert proc.returncode == 0, log[-2000:]
    progress = [
        x for x in log.splitlines() if re.search(r"eval base \(.*\): \d+/16 \(\d+%\), [\d.]+/s, ETA", x)
    ]
    assert len(progress) >= 2, log[-2000:]
    assert progress[-1].split("): ")[1].startswith("16/16")
    assert "\x1b[" not in log  # no terminal escape codes in a file
