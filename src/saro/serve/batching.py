"""The batching engine: one worker thread owns the model and runs waiting requests in batches.

Chat requests that share ``max_new_tokens`` and ``reasoning_budget`` run as one batch (per-row sampling lets
temperature, top_p, seed and n differ). A job with a ``task`` (a legacy completion, which scores text with the
model itself) runs alone, on the same thread, so the model is never used from two threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from saro.errors import SaroError
from saro.models.generate import Conversation, Generator, SamplingParams

log = logging.getLogger(__name__)

_ids = itertools.count()


@dataclass
class Job:
    """One request waiting for (or in) a batch; the worker posts events to its asyncio queue.

    Events: ``("text", sample, piece)`` while streaming, ``("done", result)`` and ``("error", message)``.
    ``task(generator, job)``, when set, replaces batched chat generation and returns the result.
    """

    conversation: Conversation
    params: SamplingParams
    stream: bool
    loop: asyncio.AbstractEventLoop
    task: Callable[[Generator, Job], Any] | None = None
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    uid: int = field(default_factory=lambda: next(_ids))

    @property
    def key(self) -> tuple[Any, ...]:
        if self.task is not None:
            return ("task", self.uid)  # never batched with another job
        return (self.params.max_new_tokens, self.params.reasoning_budget)

    def post(self, event: tuple[Any, ...]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is shutting down
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class BatchEngine:
    """A worker thread that owns the generator and runs waiting requests in batches.

    A batch holds requests with the same ``max_new_tokens`` and ``reasoning_budget`` (oldest request first), at
    most ``max_batch_size`` rows (a request counts ``n`` rows; a larger one runs alone). Static batches alone let
    concurrent clients drift into groups that take turns (2 + 6 instead of 8), so the worker remembers how many
    rows were active when it formed the last batch (that batch plus those left waiting) and, before the next
    batch, waits up to ``batch_wait_ms`` for that many to be queued: the clients of the last batch send their next
    request just after their answer. A lone client is never kept waiting.
    """

    def __init__(self, generator: Generator, max_batch_size: int = 8, batch_wait_ms: float = 50.0) -> None:
        if max_batch_size < 1:
            raise SaroError("max_batch_size must be at least 1")
        self.generator = generator
        self.max_batch_size = max_batch_size
        self.batch_wait = max(0.0, batch_wait_ms) / 1000.0
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # requests per recent batch (tests, stats)
        self._q: queue.Queue[Job | None] = queue.Queue()
        self._pending: deque[Job] = deque()
        self._active = 1  # rows in the last batch plus rows left waiting then: the clients expected back
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="saro-serve-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._q.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, job: Job) -> None:
        self._q.put(job)

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if batch:
                self._run(batch)
        for job in list(self._pending):
            job.post(("error", "server is shutting down"))

    def _take(self, timeout: float | None) -> bool:
        try:
            job = self._q.get(timeout=timeout) if timeout is not None else self._q.get_nowait()
        except queue.Empty:
            return False
        if job is not None:
            self._pending.append(job)
        return True

    def _rows(self) -> int:
        return sum(j.params.n for j in self._pending if not j.cancelled)

    def _collect(self) -> list[Job]:
        if not self._pending and not self._take(timeout=0.2):
            return []
        while self._take(timeout=None):
            pass
        self._pending = deque(j for j in self._pending if not j.cancelled)
        if not self._pending or self._stop.is_set():
            return []
        expected = min(self.max_batch_size, self._active)
        if expected > 1 and self.batch_wait > 0 and self._pending[0].task is None:
            deadline = time.monotonic() + self.batch_wait
            while self._rows() < expected:
                left = deadline - time.monotonic()
                if left <= 0 or not self._take(timeout=left):
                    break
        return self._split()

    def _split(self) -> list[Job]:
        """Take the oldest job and those that can share its batch; the rest stay waiting."""
        key = self._pending[0].key
        batch: list[Job] = []
        rest: deque[Job] = deque()
        rows = 0
        for job in self._pending:
            if job.cancelled:
                continue
            if job.key == key and (not batch or rows + job.params.n <= self.max_batch_size):
                batch.append(job)
                rows += job.params.n
            else:
                rest.append(job)
        self._pending = rest
        self._active = rows + sum(j.params.n for j in rest)
        return batch

    def _run(self, batch: list[Job]) -> None:
        self.batch_sizes.append(len(batch))
        t0 = time.perf_counter()
        try:
            if batch[0].task is not None:
                results = [batch[0].task(self.generator, batch[0])]
            else:
                results = self._generate(batch)
        except Exception as e:  # one bad batch must not kill the worker
            log.exception("generation failed for a batch of %d requests", len(batch))
            for job in batch:
                job.post(("error", f"generation failed ({type(e).__name__})"))
            return
        log.debug("batch of %d requests in %.2fs", len(batch), time.perf_counter() - t0)
        for job, result in zip(batch, results, strict=True):
            job.post(("done", result))

    def _generate(self, batch: list[Job]) -> list[Any]:
        def on_text(i: int, k: int, piece: str) -> None:
            job = batch[i]
            if job.stream and not job.cancelled:
                job.post(("text", k, piece))

        streaming = any(j.stream for j in batch)
        return self.generator.generate_rows(
            [j.conversation for j in batch], [j.params for j in batch], on_text if streaming else None
        )
