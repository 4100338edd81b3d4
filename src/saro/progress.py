"""Progress for logs that are not a terminal: one line every SARO_PROGRESS_INTERVAL seconds per task.

Cluster logs, nohup, CI and files get no rich bars (they would be garbage or nothing), so long loops
report ``what (model): done/total, rate, ETA`` as plain log lines instead, with the same API subset
(``add_task`` / ``advance`` / ``update``) the rich ``Progress`` gives the callers.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from types import TracebackType

from rich.progress import TaskID

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 30.0


def progress_interval() -> float:
    """Seconds between two progress lines (SARO_PROGRESS_INTERVAL, default 30)."""
    raw = os.environ.get("SARO_PROGRESS_INTERVAL", "")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        log.warning("SARO_PROGRESS_INTERVAL=%r is not a number; using %.0f s", raw, DEFAULT_INTERVAL_S)
        return DEFAULT_INTERVAL_S
    return max(0.0, value)


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    start: float = field(default_factory=time.monotonic)
    last_report: float = field(default_factory=time.monotonic)
    reported: float = 0.0  # ``completed`` at the last line, so the closing line is not a duplicate


def format_line(task: _Task, now: float) -> str:
    """``what: done/total (pct) rate/s, ETA`` for one task."""
    elapsed = max(now - task.start, 1e-9)
    rate = task.completed / elapsed
    done = f"{task.completed:g}"
    if task.total:
        pct = 100.0 * task.completed / task.total
        eta = (task.total - task.completed) / rate if rate > 0 else float("inf")
        eta_s = _duration(eta) if eta != float("inf") else "?"
        return f"{task.description}: {done}/{task.total:g} ({pct:.0f}%), {rate:.2f}/s, ETA {eta_s}"
    return f"{task.description}: {done} done, {rate:.2f}/s, {_duration(elapsed)} elapsed"


def _duration(seconds: float) -> str:
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class LogProgress:
    """Drop-in for rich ``Progress`` that logs a line per task every ``interval`` seconds and at the end."""

    def __init__(
        self, interval: float | None = None, logger: logging.Logger | None = None, disable: bool = False
    ) -> None:
        self.interval = progress_interval() if interval is None else interval
        self.log = logger or log
        self.disable = disable
        self.tasks: dict[TaskID, _Task] = {}

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None and not self.disable:
            now = time.monotonic()
            for task in self.tasks.values():
                if task.completed != task.reported:
                    self.log.info("%s", format_line(task, now))

    def add_task(self, description: str, total: float | None = None, **_: object) -> TaskID:
        """Start a task; logs that it started (with its total)."""
        tid = TaskID(len(self.tasks))
        self.tasks[tid] = _Task(description, total)
        if not self.disable:
            # done/total from the first line on, so even a run shorter than the interval logs two counted lines
            self.log.info("%s: 0/%s, started", description, f"{total:g}" if total is not None else "?")
        return tid

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        """Count ``advance`` more items done; log when the interval has passed."""
        self.update(task_id, advance=advance)

    def update(
        self,
        task_id: TaskID,
        *,
        advance: float | None = None,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
        **_: object,
    ) -> None:
        """Same keywords as rich's ``Progress.update`` (the ones saro uses)."""
        task = self.tasks[task_id]
        if total is not None:
            task.total = total
        if description is not None:
            task.description = description
        if completed is not None:
            task.completed = completed
        if advance:
            task.completed += advance
        now = time.monotonic()
        if not self.disable and now - task.last_report >= self.interval:
            task.last_report, task.reported = now, task.completed
            self.log.info("%s", format_line(task, now))
