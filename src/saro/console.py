"""Logging and progress bars shared by every stage (rich on a terminal, plain lines otherwise)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from saro.progress import LogProgress

T = TypeVar("T")

console = Console(stderr=True)
_configured = False


def setup_logging(verbose: bool = False) -> None:
    """Route the `saro` loggers to stderr; quiet the chatty libraries."""
    global _configured
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger("saro")
    root.setLevel(level)
    if not _configured:
        handler: logging.Handler
        if sys.stderr.isatty() or console.is_jupyter:
            handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
            handler.setFormatter(logging.Formatter("%(message)s"))
        else:  # a log file / CI / nohup: one unwrapped line per record, grep-able
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.propagate = False
        _configured = True
    for name in ("transformers", "datasets", "accelerate", "httpx", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.WARNING if not verbose else logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries()


def quiet_libraries() -> None:
    """Turn off the per-file progress bars of transformers/datasets (our own bars show stage progress)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def progress_enabled() -> bool:
    """Rich bars: on a terminal or in a notebook, unless SARO_NO_PROGRESS is set."""
    return os.environ.get("SARO_NO_PROGRESS", "") == "" and (sys.stderr.isatty() or console.is_jupyter)


def progress_silenced() -> bool:
    """SARO_NO_PROGRESS set: neither bars nor periodic progress lines."""
    return os.environ.get("SARO_NO_PROGRESS", "") != ""


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on a terminal (periodic log lines otherwise)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as prog:
        task = prog.add_task(description, total=total)
        for item in items:
            yield item
            prog.advance(task)


def make_progress() -> Progress | LogProgress:
    """Rich bars on a terminal or notebook; otherwise a line every SARO_PROGRESS_INTERVAL seconds."""
    if not progress_enabled():
        return LogProgress(disable=progress_silenced())
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not progress_enabled(),
    )
