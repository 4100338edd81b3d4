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
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
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
    return os.environ.get("SARO_NO_PROGRESS", "") == "" and sys.stderr.isatty()


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on a terminal (and a plain start/end log line otherwise)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not progress_enabled():
        yield from items
        return
    with make_progress() as prog:
        task = prog.add_task(description, total=total)
        for item in items:
            yield item
            prog.advance(task)


def make_progress() -> Progress:
    """A rich Progress with the columns every stage uses."""
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
