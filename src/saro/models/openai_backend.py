"""The ``openai`` backend: any OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, ``saro serve``).

Requests go out over raw httpx (a core dependency, so no extra install is needed) from one asyncio event loop per
call, run in a worker thread; at most ``concurrency`` are in flight. The ``n`` samples of a conversation go out as
one request with ``n`` in the body (the prompt is sent and billed once), and each returned choice is cached under
its own sample index (see :mod:`saro.models.cache`). A server that answers fewer choices than asked, or rejects
``n > 1`` with HTTP 400/422, is asked again sample by sample, each with its own seed ``seed + index``; so is every
sample with ``n_per_request=False``. Either way the ``n`` samples are ``n`` different draws.

Faults: 429, 5xx, connection errors and timeouts (also HTTP 408) are retried with exponential backoff and jitter; other 4xx raise a
:class:`SaroError` (bad key, wrong model or URL) unless ``record_bad_requests`` turns 400/413/422 into a per-sample
error. An answer that ``validate`` rejects is asked again on its own under the next sample index (``index + n``),
up to ``malformed_retries`` times, then returned with status "rejected" and the reason. The API key is read from the environment variable named
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


class _NoN(Exception):
    """The server rejected a request with ``n > 1`` (HTTP 400/422): ask its samples one by one."""


_STOP = object()

Choice = tuple[str, bool, int]  # text, finished, completion tokens


class OpenAIGenerator(Generator):
    """Chat completions from an OpenAI-compatible server, with bounded concurrency, retries and a request cache.

    ``cache``: a :class:`RequestCache`, a folder, True (``$SARO_CACHE/requests``) or False/None (off, the
    default); ``cache_dir`` is the same as passing a folder (the name recipes use).
    ``extra_body`` is merged into every request (a None value removes a default field, e.g.
    ``{"max_tokens": None, "max_completion_tokens": 512}`` for endpoints that want the newer name).
    ``n_per_request``: ask the ``n`` samples of a conversation in one request (default); False sends one request
    per sample.
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
        n_per_request: bool = True,
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
        self.n_per_request = n_per_request  # set to False once a server shows it lacks ``n``
        self.stats: Counter[str] = Counter()  # of the last call: requests, retries, cache_hits, redos, ...
        self._rng = random.Random()
        self._warned_budget = False

    def __repr__(self) -> str:
        return f"OpenAIGenerator(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    # ------------------------------------------------------------------------------------------- requests

    def _body(self, conv: Conversation, params: SamplingParams, index: int, n: int = 1) -> dict[str, Any]:
        """The request body of sample ``index`` asked on its own (seed ``params.seed + index``, so samples differ),
        or, with ``n > 1``, of all ``n`` samples in one request (index 0: seed ``params.seed``)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in conv],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": params.seed + index,
            "n": n,
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

    async def _attempt(self, client: Any, body: dict[str, Any]) -> list[Choice]:
        """One HTTP request: its choices (text, finished, completion tokens), or _Retryable / _GaveUp / _NoN /
        SaroError."""
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
            if code in (400, 422) and body.get("n", 1) > 1:
                raise _NoN(f"HTTP {code}: {msg}")
            if self.record_bad_requests and code in RECORDABLE_4XX:
                raise _GaveUp(f"HTTP {code}: {msg}")
            raise SaroError(
                f"openai backend: HTTP {code} from {url} (model '{self.model}'): {msg}{self._hint(code)}"
            )
        try:
            data = resp.json()
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            texts = [_choice_text(c) for c in choices]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Retryable(f"unreadable response body (HTTP {code})") from None
        if not choices:
            raise _Retryable(f"no choices in the response (HTTP {code})")
        usage = data.get("usage") or {}
        total = usage.get("completion_tokens")
        chars = sum(len(t) for t in texts) or 1
        out = []
        for c, text in zip(choices, texts, strict=True):
            finished = c.get("finish_reason") in ("stop", "eos", None)
            if not isinstance(total, int):
                tokens = len(text.split())
            elif len(texts) == 1:
                tokens = total
            else:  # usage counts every choice together: share it out by length
                tokens = round(total * len(text) / chars)
            out.append((text, finished, tokens))
        return out

    def _hint(self, code: int) -> str:
        if code in (401, 403):
            if self._key is None:
                return "; no API key was sent: set api_key_env to the name of the environment variable holding it"
            return f"; check the API key in ${self.api_key_env}"
        if code == 404:
            return "; check base_url (it usually ends in /v1) and the model name"
        return ""

    async def _request(self, client: Any, body: dict[str, Any], run: _Run) -> list[Choice]:
        """One request with retries: its choices; raises _GaveUp when the retries are exhausted."""
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

    def _tries(
        self, conv: Conversation, params: SamplingParams, sample: int
    ) -> list[tuple[dict[str, Any], str]]:
        """(body, cache key) of each try of one sample asked on its own: sample index ``sample + r * n``."""
        out = []
        for r in range(self.malformed_retries + 1):
            body = self._body(conv, params, sample + r * params.n)
            out.append((body, self._key_of(body, sample + r * params.n)))
        return out

    async def _cached(self, keys: list[str], run: _Run) -> Generation | None:
        """The cached answer under the first of ``keys`` that holds a valid one (a re-run reuses whichever try
        was accepted last time)."""
        if not self.cache.enabled:
            return None
        for key in keys:
            entry = await asyncio.to_thread(self.cache.get, key)
            if (
                entry is not None
                and isinstance(entry.get("text"), str)
                and self._check(entry["text"]) is None
            ):
                run.stats["cache_hits"] += 1
                return Generation(
                    entry["text"], bool(entry.get("finished", True)), int(entry.get("tokens", 0)), cached=True
                )
        return None

    async def _store(self, key: str, body: dict[str, Any], choice: Choice) -> Generation:
        text, finished, tokens = choice
        entry = {"text": text, "finished": finished, "tokens": tokens, "model": self.model, "request": body}
        await asyncio.to_thread(self.cache.put, key, entry)
        return Generation(text, finished, tokens)

    def _gave_up(self, e: _GaveUp, run: _Run) -> Generation:
        """The error generation of a request whose retries ran out; a run of such failures stops the run."""
        run.stats["errors"] += 1
        run.consecutive_failures += 1
        limit = self.max_consecutive_failures
        if limit is not None and run.consecutive_failures >= limit:
            raise SaroError(
                f"openai backend: {run.consecutive_failures} requests in a row failed ({e.reason}); "
                f"is the server at {self.base_url} up?"
            ) from None
        return Generation("", False, 0, status="error", error=e.reason)

    async def _sample(
        self,
        client: Any,
        tries: list[tuple[dict[str, Any], str]],
        run: _Run,
        last: tuple[Choice, str] | None = None,
    ) -> Generation:
        """One sample asked on its own through ``tries`` (re-asked when malformed), or rejected/error. ``last``:
        the malformed answer and reason of an earlier try (from a request with ``n``)."""
        asked = self.malformed_retries + 1
        choice, reason = last if last is not None else (("", False, 0), "")
        for r, (body, key) in enumerate(tries):
            if r or last is not None:
                run.stats["redos"] += 1
                log.debug("malformed answer (%s); asking again", reason)
            try:
                choice = (await self._request(client, body, run))[0]
            except _GaveUp as e:
                return self._gave_up(e, run)
            found = self._check(choice[0])
            if found is None:
                return await self._store(key, body, choice)
            reason = found
        run.stats["rejected"] += 1
        text, finished, tokens = choice
        return Generation(text, finished, tokens, status="rejected", error=f"{reason} (asked {asked} times)")

    async def _conversation(
        self, client: Any, conv: Conversation, params: SamplingParams, run: _Run
    ) -> list[Generation]:
        """The ``n`` samples of one conversation: cached, from one request with ``n`` (falling back to one request
        per sample where the server lacks ``n``), malformed ones re-asked on their own."""
        n = params.n
        tries = [self._tries(conv, params, s) for s in range(n)]
        nbody = self._body(conv, params, 0, n=n) if n > 1 and self.n_per_request else None
        out: list[Generation | None] = []
        for s in range(n):
            keys = ([self._key_of(nbody, s)] if nbody is not None else []) + [k for _, k in tries[s]]
            out.append(await self._cached(keys, run))
        todo = [s for s in range(n) if out[s] is None]
        first: dict[int, tuple[Choice, str]] = {}
        if todo and nbody is not None and self.n_per_request:
            try:
                choices = await self._request(client, nbody, run)
            except _GaveUp as e:
                err = self._gave_up(e, run)
                return [g if g is not None else err for g in out]
            except _NoN as e:
                choices = []
                self._lacks_n(e.args[0])
            if 0 < len(choices) < n:
                self._lacks_n(f"{len(choices)} choices for n={n}")
            for s in todo:
                if s >= len(choices):
                    continue
                found = self._check(choices[s][0])
                if found is None:
                    out[s] = await self._store(self._key_of(nbody, s), nbody, choices[s])
                else:
                    first[s] = (choices[s], found)
        for s in todo:
            if out[s] is None:
                # a sample whose choice came back malformed goes on with its next try; a missing one from its first
                last = first.get(s)
                out[s] = await self._sample(client, tries[s][1:] if last else tries[s], run, last)
        return [g for g in out if g is not None]

    def _lacks_n(self, why: str) -> None:
        if self.n_per_request:
            log.warning(
                "%s: the server does not honour n (%s); asking each sample on its own", self.label, why
            )
        self.n_per_request = False

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
        whole = params.n > 1 and self.n_per_request  # one job per conversation, else one per sample
        jobs = iter(
            [(i, -1) for i in range(len(convs))]
            if whole
            else [(i, s) for i in range(len(convs)) for s in range(params.n)]
        )
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(
            headers=self._headers(), timeout=httpx.Timeout(self.timeout), limits=limits
        ) as client:

            async def worker() -> None:
                for i, s in jobs:  # one shared iterator: each job is taken by exactly one worker
                    if s < 0:
                        emit((i, await self._conversation(client, convs[i], params, run)))
                        continue
                    slot = done.setdefault(i, [None] * params.n)
                    slot[s] = await self._sample(client, self._tries(convs[i], params, s), run)
                    pending[i] -= 1
                    if pending[i] == 0:
                        emit((i, done.pop(i)))

            async def watch() -> None:
                while not stop.is_set():
                    await asyncio.sleep(0.05)

            n_jobs = len(convs) if whole else len(convs) * params.n
            workers = [asyncio.create_task(worker()) for _ in range(min(self.concurrency, n_jobs))]
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


def _choice_text(choice: dict[str, Any]) -> str:
    """The text of one response choice, a separately returned reasoning folded back into a think block."""
    message = choice.get("message") or {}
    content = message.get("content")
    if content is None:
        content = message.get("refusal") or ""  # OpenAI puts a model refusal here instead of in content
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return join_reasoning(content, reasoning if isinstance(reasoning, str) else None)


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
