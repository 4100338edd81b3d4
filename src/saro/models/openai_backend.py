"""The ``openai`` backend: any OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, ``saro serve``).

Requests go out over raw httpx (a core dependency, so no extra install is needed) from one asyncio event loop per
call, run in a worker thread; at most ``concurrency`` are in flight. Each of the ``n`` samples of a conversation is
its own request with its own sample index, so each is cached separately (see :mod:`saro.models.cache`).

Faults: 429, 5xx, connection errors and timeouts (also HTTP 408) are retried with exponential backoff and jitter; other 4xx raise a
:class:`SaroError` (bad key, wrong model or URL) unless ``record_bad_requests`` turns 400/413/422 into a per-sample
error. An answer that ``validate`` rejects is asked again under the next sample index, up to ``malformed_retries``
times, then returned with status "rejected" and the reason. The API key is read from the environment variable named
by ``api_key_env`` and never logged, stored or put in an error message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from saro.console import make_progress
from saro.errors import SaroError
from saro.models.cache import RequestCache, request_key
from saro.models.generate import Conversation, Generation, Generator, SamplingParams, register_backend
from saro.reasoning import THINK_CLOSE, THINK_OPEN, parse

log = logging.getLogger(__name__)

Validator = Callable[[str], str | None]

RECORDABLE_4XX = (400, 413, 422)  # request-specific rejections (content filter, context too long)


def require_reasoning(text: str) -> str | None:
    """Validator for teachers: the rejection reason when ``text`` has no closed, non-empty reasoning + answer."""
    p = parse(text)
    if not p.has_reasoning:
        return "no parseable reasoning (no <think> block)"
    if p.status == "unclosed":
        return "reasoning never closed (no </think>)"
    if not p.answer:
        return "empty answer after the reasoning"
    return None


def join_reasoning(content: str | None, reasoning: str | None) -> str:
    """Put a separately returned reasoning (``reasoning_content``) back in front of the answer as a think block."""
    content = content or ""
    if not reasoning or not reasoning.strip():
        return content
    return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n{content.strip()}"


class _Secret:
    """Holds the API key; its repr never shows it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"


class _Retryable(Exception):
    """A transient failure worth another attempt (429, 5xx, connection error, timeout, garbled body)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _GaveUp(Exception):
    """A sample that ends as an error (retries exhausted, or a recorded bad request)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_STOP = object()


class OpenAIGenerator(Generator):
    """Chat completions from an OpenAI-compatible server, with bounded concurrency, retries and a request cache.

    ``cache``: a :class:`RequestCache`, a folder, True (``$SARO_CACHE/requests``) or False/None (off, the
    default); ``cache_dir`` is the same as passing a folder (the name recipes use).
    ``extra_body`` is merged into every request (a None value removes a default field, e.g.
    ``{"max_tokens": None, "max_completion_tokens": 512}`` for endpoints that want the newer name).
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str = "",
        api_key_env: str | None = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        validate: Validator | None = None,
        malformed_retries: int = 2,
        cache: RequestCache | str | Path | bool | None = None,
        cache_dir: str | Path | None = None,
        extra_body: dict[str, Any] | None = None,
        record_bad_requests: bool = False,
        max_consecutive_failures: int | None = 50,
        chunk_size: int | None = None,
        label: str | None = None,
    ) -> None:
        if not model:
            raise SaroError("openai backend: a model name is required")
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise SaroError(f"openai backend: base_url must be an http(s) URL, got {base_url!r}")
        if concurrency < 1 or max_retries < 0 or malformed_retries < 0 or timeout <= 0:
            raise SaroError(
                "openai backend: concurrency >= 1, max_retries >= 0, malformed_retries >= 0 and timeout > 0"
            )
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self._key: _Secret | None = None
        if api_key_env is not None:
            value = os.environ.get(api_key_env, "").strip()
            if not value:
                raise SaroError(
                    f"environment variable {api_key_env} is not set; it must hold the API key for "
                    f"{self.base_url} (or set api_key_env to null for a local server without a key)"
                )
            self._key = _Secret(value)
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.validate = validate
        self.malformed_retries = malformed_retries
        if cache_dir is not None:
            if cache not in (None, False, True):
                raise SaroError("openai backend: pass either cache or cache_dir, not both")
            cache = cache_dir
        self.cache = _make_cache(cache)
        self.extra_body = dict(extra_body or {})
        self.record_bad_requests = record_bad_requests
        self.max_consecutive_failures = max_consecutive_failures
        self.chunk_size = chunk_size or concurrency
        self.label = label or model
        self.stats: Counter[str] = Counter()  # of the last call: requests, retries, cache_hits, redos, ...
        self._rng = random.Random()
        self._warned_budget = False

    def __repr__(self) -> str:
        return f"OpenAIGenerator(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    # ------------------------------------------------------------------------------------------- requests

    def _body(self, conv: Conversation, params: SamplingParams, index: int) -> dict[str, Any]:
        """The request body of sample ``index``; its seed is ``params.seed + index`` so samples differ."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in conv],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": params.seed + index,
            "n": 1,
        }
        body.update(self.extra_body)
        return {k: v for k, v in body.items() if v is not None}

    def _key_of(self, body: dict[str, Any], index: int) -> str:
        params = {k: v for k, v in body.items() if k not in ("model", "messages")}
        return request_key(self.model, body["messages"], params, index)

    def _redact(self, text: str) -> str:
        if self._key is not None and self._key.value:
            text = text.replace(self._key.value, "***")
        return text

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "saro"}
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._key.value}"
        return headers

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with equal jitter; a server's Retry-After is honoured (up to ``backoff_max``)."""
        cap = min(self.backoff_max, self.backoff_base * (2**attempt))
        delay = cap / 2 + self._rng.uniform(0, cap / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    async def _attempt(self, client: Any, body: dict[str, Any]) -> tuple[str, bool, int]:
        """One HTTP request: (text, finished, completion tokens), or _Retryable / _GaveUp / SaroError."""
        import httpx

        url = f"{self.base_url}/chat/completions"
        try:
            resp = await asyncio.wait_for(client.post(url, json=body), self.timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise _Retryable(f"timeout after {self.timeout:g}s") from None
        except httpx.TransportError as e:
            raise _Retryable(f"connection error ({type(e).__name__}: {self._redact(str(e))[:200]})") from None
        code = resp.status_code
        if code in (408, 429) or code >= 500:
            raise _Retryable(f"HTTP {code}", _retry_after(resp.headers.get("retry-after")))
        if code >= 400:
            msg = self._redact(_error_message(resp))
            if self.record_bad_requests and code in RECORDABLE_4XX:
                raise _GaveUp(f"HTTP {code}: {msg}")
            raise SaroError(
                f"openai backend: HTTP {code} from {url} (model '{self.model}'): {msg}{self._hint(code)}"
            )
        try:
            data = resp.json()
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Retryable(f"unreadable response body (HTTP {code})") from None
        content = message.get("content")
        if content is None:
            content = message.get("refusal") or ""  # OpenAI puts a model refusal here instead of in content
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        text = join_reasoning(content, reasoning if isinstance(reasoning, str) else None)
        finished = choice.get("finish_reason") in ("stop", "eos", None)
        usage = data.get("usage") or {}
        tokens = usage.get("completion_tokens")
        if not isinstance(tokens, int):
            tokens = len(text.split())
        return text, finished, tokens

    def _hint(self, code: int) -> str:
        if code in (401, 403):
            if self._key is None:
                return "; no API key was sent: set api_key_env to the name of the environment variable holding it"
            return f"; check the API key in ${self.api_key_env}"
        if code == 404:
            return "; check base_url (it usually ends in /v1) and the model name"
        return ""

    async def _request(self, client: Any, body: dict[str, Any], run: _Run) -> tuple[str, bool, int]:
        """One request with retries; raises _GaveUp when they are exhausted."""
        reason = ""
        for attempt in range(self.max_retries + 1):
            run.stats["requests"] += 1
            try:
                out = await self._attempt(client, body)
            except _Retryable as e:
                reason = e.reason
                if attempt == self.max_retries:
                    break
                delay = self._backoff(attempt, e.retry_after)
                run.stats["retries"] += 1
                log.debug("%s; retry %d/%d in %.2fs", reason, attempt + 1, self.max_retries, delay)
                await asyncio.sleep(delay)
                continue
            run.consecutive_failures = 0
            return out
        raise _GaveUp(f"gave up after {self.max_retries + 1} attempts: {reason}")

    def _check(self, text: str) -> str | None:
        return self.validate(text) if self.validate is not None else None

    async def _sample(
        self, client: Any, conv: Conversation, params: SamplingParams, sample: int, run: _Run
    ) -> Generation:
        """Sample ``sample`` of one conversation: cached, fresh, re-asked when malformed, or rejected/error."""
        tries = [sample + r * params.n for r in range(self.malformed_retries + 1)]
        bodies = [self._body(conv, params, i) for i in tries]
        keys = [self._key_of(b, i) for b, i in zip(bodies, tries, strict=True)]
        if self.cache.enabled:
            for key in keys:  # a re-run reuses whichever try was accepted last time
                entry = await asyncio.to_thread(self.cache.get, key)
                if (
                    entry is not None
                    and isinstance(entry.get("text"), str)
                    and self._check(entry["text"]) is None
                ):
                    run.stats["cache_hits"] += 1
                    return Generation(
                        entry["text"],
                        bool(entry.get("finished", True)),
                        int(entry.get("tokens", 0)),
                        cached=True,
                    )
        text, finished, tokens, reason = "", False, 0, ""
        for r, (body, key) in enumerate(zip(bodies, keys, strict=True)):
            try:
                text, finished, tokens = await self._request(client, body, run)
            except _GaveUp as e:
                run.stats["errors"] += 1
                run.consecutive_failures += 1
                limit = self.max_consecutive_failures
                if limit is not None and run.consecutive_failures >= limit:
                    raise SaroError(
                        f"openai backend: {run.consecutive_failures} requests in a row failed ({e.reason}); "
                        f"is the server at {self.base_url} up?"
                    ) from None
                return Generation("", False, 0, status="error", error=e.reason)
            found = self._check(text)
            if found is None:
                entry = {
                    "text": text,
                    "finished": finished,
                    "tokens": tokens,
                    "model": self.model,
                    "request": body,
                }
                await asyncio.to_thread(self.cache.put, key, entry)
                return Generation(text, finished, tokens)
            reason = found
            if r < self.malformed_retries:
                run.stats["redos"] += 1
                log.debug("malformed answer (%s); asking again", reason)
        run.stats["rejected"] += 1
        return Generation(
            text,
            finished,
            tokens,
            status="rejected",
            error=f"{reason} (asked {self.malformed_retries + 1} times)",
        )

    # ------------------------------------------------------------------------------------------- the run

    async def _produce(
        self,
        convs: list[Conversation],
        params: SamplingParams,
        emit: Callable[[Any], None],
        stop: threading.Event,
    ) -> None:
        """Run every (conversation, sample) through ``concurrency`` workers; emit each finished conversation."""
        import httpx

        run = _Run()
        self.stats = run.stats
        pending = [params.n] * len(convs)
        done: dict[int, list[Generation | None]] = {}
        jobs = iter([(i, s) for i in range(len(convs)) for s in range(params.n)])
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(
            headers=self._headers(), timeout=httpx.Timeout(self.timeout), limits=limits
        ) as client:

            async def worker() -> None:
                for i, s in jobs:  # one shared iterator: each job is taken by exactly one worker
                    gen = await self._sample(client, convs[i], params, s, run)
                    slot = done.setdefault(i, [None] * params.n)
                    slot[s] = gen
                    pending[i] -= 1
                    if pending[i] == 0:
                        emit((i, done.pop(i)))

            async def watch() -> None:
                while not stop.is_set():
                    await asyncio.sleep(0.05)

            workers = [
                asyncio.create_task(worker()) for _ in range(min(self.concurrency, len(convs) * params.n))
            ]
            watcher = asyncio.create_task(watch())
            try:
                all_done: asyncio.Future[Any] = asyncio.gather(*workers)
                finished, _ = await asyncio.wait({all_done, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if all_done in finished:
                    all_done.result()  # re-raise a worker's error
            finally:
                for t in [*workers, watcher]:
                    t.cancel()
                await asyncio.gather(*workers, watcher, return_exceptions=True)

    def generate_batches(
        self, conversations: Sequence[Conversation], params: SamplingParams, description: str = "generating"
    ) -> Iterator[tuple[list[int], list[list[Generation]]]]:
        """Yield (indices, generations) chunks as conversations complete (completion order, not input order)."""
        if params.reasoning_budget and not self._warned_budget:
            log.warning("the openai backend cannot cap reasoning tokens; reasoning_budget is ignored")
            self._warned_budget = True
        convs = [list(c) for c in conversations]
        if not convs:
            return
        out: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()

        def target() -> None:
            try:
                asyncio.run(self._produce(convs, params, out.put, stop))
            except BaseException as e:  # handed to the consuming thread
                out.put((_STOP, e))
            else:
                out.put((_STOP, None))

        # a thread of its own: works when the caller already runs an event loop, and requests keep flowing
        # while the caller writes the results it was given
        worker = threading.Thread(target=target, name="saro-openai", daemon=True)
        t0 = time.monotonic()
        worker.start()
        n_done = 0
        try:
            with make_progress() as prog:
                task = prog.add_task(f"{description} ({self.label})", total=len(convs))
                finished = False
                while not finished:
                    items = [out.get()]
                    while len(items) < self.chunk_size:
                        try:
                            items.append(out.get_nowait())
                        except queue.Empty:
                            break
                    idx: list[int] = []
                    gens: list[list[Generation]] = []
                    for tag, val in items:
                        if tag is _STOP:
                            if val is not None:
                                raise val
                            finished = True
                        else:
                            idx.append(tag)
                            gens.append(val)
                    if idx:
                        n_done += len(idx)
                        prog.advance(task, len(idx))
                        yield idx, gens
        finally:
            stop.set()
            worker.join()
        s = self.stats
        log.info(
            "%s: %d conversations x %d in %.1fs: %d requests (%d retries), %d cached, %d re-asked, "
            "%d rejected, %d errors",
            self.label,
            n_done,
            params.n,
            time.monotonic() - t0,
            s["requests"],
            s["retries"],
            s["cache_hits"],
            s["redos"],
            s["rejected"],
            s["errors"],
        )


class _Run:
    """Mutable state of one call (lives on its event loop)."""

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()
        self.consecutive_failures = 0


def _make_cache(cache: RequestCache | str | Path | bool | None) -> RequestCache:
    if isinstance(cache, RequestCache):
        return cache
    if cache is None or cache is False:
        return RequestCache(Path(os.devnull), enabled=False)
    if cache is True:
        from saro.paths import cache_dir

        return RequestCache(cache_dir() / "requests")
    return RequestCache(cache)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: use our own backoff


def _error_message(resp: Any) -> str:
    """The server's error message (OpenAI: {"error": {"message"}}; FastAPI: {"detail"}), else the raw text."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        for k in ("error", "detail", "message"):
            if isinstance(data.get(k), str):
                return str(data[k])[:500]
    return (resp.text or resp.reason_phrase or "").strip()[:500]


@register_backend("openai")
def _openai(model: str, base_url: str = "", **kw: Any) -> Generator:
    return OpenAIGenerator(model=model, base_url=base_url, **kw)
