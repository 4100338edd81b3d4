"""Processes for the rehearsal of the paper recipe (tests/test_rehearsal.py): ``saro serve`` servers that can be
stopped and started again on the same port, and ``saro run`` as a separate process that can be SIGKILLed.

Everything here is a real process running saro's own command line; nothing answers on saro's behalf. Logs hold
sizes, ids and timings only (the servers never log request or answer text).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def line_count(path: Path) -> int:
    """Complete lines in a file (0 when it does not exist)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for(what: str, ready: Callable[[], bool], timeout: float, alive: Callable[[], bool]) -> None:
    """Poll ``ready`` until it holds; fail when ``alive`` stops holding or the time is up."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert alive(), f"gave up waiting for {what}: the process ended"
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {timeout:.0f} s"
        time.sleep(0.2)


class ServedModel:
    """``saro serve MODEL`` in its own process on a fixed port; each start writes its own log file."""

    def __init__(
        self,
        model: str,
        name: str,
        log_dir: Path,
        threads: int = 1,
        api_key: str | None = None,
        batch_dir: Path | None = None,
    ) -> None:
        self.model, self.name, self.log_dir, self.threads = model, name, log_dir, threads
        self.api_key, self.batch_dir = api_key, batch_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ServedModel:
        cmd = [
            sys.executable,
            "-m",
            "saro",
            "serve",
            self.model,
            "--port",
            str(self.port),
            "--model-name",
            self.name,
        ]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        if self.batch_dir is not None:
            cmd += ["--batch-dir", str(self.batch_dir)]
        log = self.log_dir / f"serve-{self.name}-{len(self.logs) + 1}.log"
        self.logs.append(log)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        return self

    def healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 600) -> ServedModel:
        proc = self.proc
        assert proc is not None
        wait_for(f"saro serve {self.name}", self.healthy, timeout, lambda: proc.poll() is None)
        return self

    def stop(self, grace: float = 10) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (a server in the middle of a batch may not stop sooner)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())


class SaroRun:
    """``saro run RECIPE`` with fixed ``--set`` overrides, as a process of its own (its own process group)."""

    def __init__(self, recipe: Path, sets: dict[str, str], cwd: Path, env: dict[str, str]) -> None:
        self.recipe, self.sets, self.cwd, self.env = recipe, sets, cwd, env
        self.calls = 0

    def command(self, extra: Sequence[str] = ()) -> list[str]:
        cmd = [sys.executable, "-m", "saro", "run", str(self.recipe), *extra]
        for k, v in self.sets.items():
            cmd += ["--set", f"{k}={v}"]
        return cmd

    def start(self, extra: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], Path]:
        self.calls += 1
        log = self.cwd / f"saro-run-{self.calls}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                self.command(extra), cwd=self.cwd, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return proc, log

    def finish(self, extra: Sequence[str] = (), timeout: float = 3600) -> Path:
        """Run to the end; fail with the log's tail when it does not exit 0."""
        proc, log = self.start(extra)
        rc = proc.wait(timeout)
        assert rc == 0, f"saro run exited {rc}:\n{log.read_text(errors='replace')[-4000:]}"
        return log


def sigkill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started with its own session, children included (nothing gets to clean up)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(60)
