"""Slow: `saro eval` (the real command) on three tiny model folders, then report.html rendered by headless
Chromium (Debian's `chromium` package) to a PNG, with no console errors and no network access attempted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("SARO_CHROMIUM", "/usr/bin/chromium")

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    not (Path(CHROMIUM).exists() or shutil.which("chromium")),
    reason="chromium not installed (apt-get install chromium)",
)
def test_report_renders_in_headless_chromium(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import build_tiny_model

    models = [build_tiny_model(tmp_path / f"m{seed}", seed=seed) for seed in range(3)]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "saro", "eval", "--out", str(out)]
    for name, m in zip(("base", "rw", "saro"), models, strict=True):
        cmd += ["--model", f"{name}={m}"]
    cmd += ["--suite", "demo", "--n", "2", "--max-new-tokens", "8", "--bootstrap", "200", "--threads", "1"]
    cmd += [
        "--judge",
        "refusal",
        "--judge",
        "plain=refusal",
        "--judge-option",
        "plain.offtopic_is_refusal=false",
    ]
    cmd += ["--set", "prompts.categorize=keyword"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SARO_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    html = out / "report.html"
    assert html.is_file()

    png = tmp_path / "report.png"
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    chrome = [
        str(exe),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={png}",
        "--window-size=1280,6000",
        "--enable-logging=stderr",
        "--v=0",
        html.resolve().as_uri(),
    ]
    r = subprocess.run(chrome, capture_output=True, text=True, timeout=180)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    console = [ln for ln in log.splitlines() if ":CONSOLE" in ln]
    assert not console, console  # console messages (JS errors, blocked or failed loads) would show here
    assert "net::ERR" not in log, [ln for ln in log.splitlines() if "net::ERR" in ln]
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 50_000
