"""``saro serve``: an OpenAI-compatible HTTP server (FastAPI + uvicorn) for a model folder.

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (plain JSON or server-sent events
with ``stream: true``). The answer is returned in ``content`` and the reasoning in ``reasoning_content`` (the vLLM
convention), streamed as separate deltas. Per request, ``include_reasoning: false`` hides the reasoning and
``reasoning_budget`` caps it (``extra_body`` in the openai client); the server flags do the same for every request.

Batching: one worker thread owns the model. It takes up to ``max_batch_size`` waiting requests (counting ``n``
samples each) that share ``max_tokens`` and ``reasoning_budget`` and runs them as one batch; temperature, top_p,
seed and n may differ inside a batch (per-row sampling). Streamed requests are batched like the others: tokens
reach each client as they are decoded. Before a batch the worker waits up to ``batch_wait_ms`` for the clients of
the last batch to send their next request, so concurrent clients keep sharing the model instead of drifting into
groups that take turns; a lone client never waits. ``stop`` sequences are applied to the generated text
(generation itself is not cut short).

Security: binds to 127.0.0.1 unless told otherwise; with an API key (``api_key`` or ``$SARO_API_KEY``) every
``/v1`` request needs ``Authorization: Bearer <key>``. The key is never logged, and neither is any prompt or
completion text (harmful text is data): the log has one line per request with sizes, status and timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hmac
import json
import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from saro.errors import SaroError
from saro.models.generate import Conversation, Generation, Generator, SamplingParams
from saro.reasoning import THINK_CLOSE, THINK_OPEN, count_tokens, parse

log = logging.getLogger(__name__)

API_KEY_ENV = "SARO_API_KEY"
DEFAULT_MAX_TOKENS = 1024  # when a request gives neither max_tokens nor max_completion_tokens
MAX_N = 16
MAX_STOP = 4


# ------------------------------------------------------------------------------------------------ errors


class ApiError(Exception):
    """An error answered with an OpenAI-style body ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


# ------------------------------------------------------------------------------------------ request schema


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One message of a chat request (text only; a list of text parts is joined)."""

    model_config = ConfigDict(extra="allow")  # e.g. reasoning_content or name on earlier turns: ignored
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart] | None = None


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields of ``POST /v1/chat/completions`` that the server reads; other fields are ignored."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    include_reasoning: bool | None = None  # saro / vLLM extension (extra_body)
    reasoning_budget: int | None = Field(None, ge=1)  # saro extension (extra_body)
    tools: list[Any] | None = None
    logprobs: bool | None = None
    response_format: dict[str, Any] | None = None


def _validation_error(e: ValidationError) -> ApiError:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()))
    return ApiError(
        400, f"{loc}: {err.get('msg', 'invalid value')}" if loc else str(err.get("msg")), loc or None
    )


def _conversation(req: ChatCompletionRequest) -> Conversation:
    """The request's messages as plain ``{"role", "content"}`` turns for the chat template."""
    conv: Conversation = []
    for i, m in enumerate(req.messages):
        content = m.content
        if isinstance(content, list):
            for part in content:
                if part.type != "text" or part.text is None:
                    raise ApiError(
                        400, f"content part type '{part.type}' is not supported (text only)", f"messages.{i}"
                    )
            content = "".join(p.text or "" for p in content)
        if content is None:
            if m.role != "assistant":
                raise ApiError(
                    400, f"messages.{i}.content: a {m.role} message needs content", f"messages.{i}"
                )
            content = ""
        conv.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    return conv


def _stops(req: ChatCompletionRequest) -> list[str]:
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > MAX_STOP:
        raise ApiError(400, f"stop: at most {MAX_STOP} sequences", "stop")
    if any(not s for s in stops):
        raise ApiError(400, "stop: sequences must not be empty", "stop")
    return stops


# --------------------------------------------------------------------------------- streaming text handling


def _partial_tag(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``tags`` (a tag maybe starting)."""
    best = 0
    for tag in tags:
        for k in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:k]):
                best = k
                break
    return best


class ReasoningSplitter:
    """Splits streamed assistant text into reasoning and answer deltas as it arrives.

    ``feed(piece)`` and ``flush()`` return ``("reasoning" | "content", text)`` deltas. For a well-formed turn
    (``<think>...</think>answer``), a turn without tags and an unclosed think block, the deltas add up to exactly
    what :func:`saro.reasoning.parse` returns (both parts stripped, tags removed). Malformed turns can only be
    judged at the end and are streamed as they look so far: text before a late ``<think>`` or a ``</think>``
    without an opening tag is sent as content, and with repeated think blocks the reasoning ends at the first
    ``</think>``.
    """

    _TAGS = (THINK_OPEN, THINK_CLOSE)

    def __init__(self) -> None:
        self.state: Literal["start", "reasoning", "content"] = "start"
        self.buf = ""  # undecided text (a tag may be starting)
        self.ws = ""  # whitespace held back: it is sent only if more text follows
        self.started = False  # leading whitespace of the current part has been skipped

    def feed(self, piece: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        self.buf += piece
        if self.state == "start":
            head = self.buf.lstrip()
            if not head or (THINK_OPEN.startswith(head) and head != THINK_OPEN):
                return out
            if head.startswith(THINK_OPEN):
                self.state, self.buf = "reasoning", head[len(THINK_OPEN) :]
            else:
                self.state, self.buf = "content", head
        if self.state == "reasoning":
            self.buf = self.buf.replace(THINK_OPEN, "")
            end = self.buf.find(THINK_CLOSE)
            if end < 0:
                keep = _partial_tag(self.buf, self._TAGS)
                self._emit("reasoning", self.buf[: len(self.buf) - keep], out)
                self.buf = self.buf[len(self.buf) - keep :]
                return _merge(out)
            self._emit("reasoning", self.buf[:end], out)
            self.state, self.buf, self.ws, self.started = (
                "content",
                self.buf[end + len(THINK_CLOSE) :],
                "",
                False,
            )
        # content: tags are removed, as parse() removes them from the answer
        self.buf = self.buf.replace(THINK_OPEN, "").replace(THINK_CLOSE, "")
        keep = _partial_tag(self.buf, self._TAGS)
        self._emit("content", self.buf[: len(self.buf) - keep], out)
        self.buf = self.buf[len(self.buf) - keep :]
        return _merge(out)

    def flush(self) -> list[tuple[str, str]]:
        """The rest at the end of the text (a partial tag is text after all; trailing whitespace is dropped)."""
        out: list[tuple[str, str]] = []
        kind = "reasoning" if self.state == "reasoning" else "content"
        self._emit(kind, self.buf.rstrip(), out)
        self.buf, self.ws = "", ""
        return out

    def _emit(self, kind: str, text: str, out: list[tuple[str, str]]) -> None:
        if not self.started:
            text = text.lstrip()
            if not text:
                return
            self.started = True
        body = text.rstrip()
        if not body:
            self.ws += text
            return
        out.append((kind, self.ws + body))
        self.ws = text[len(body) :]


def _merge(deltas: list[tuple[str, str]]) -> list[tuple[str, str]]:
    merged: list[tuple[str, str]] = []
    for kind, text in deltas:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    return merged


class StopScanner:
    """Cuts streamed text at the first stop sequence; holds back text that may be the start of one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.buf = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.buf += piece
        cut = _find_stop(self.buf, self.stops)
        if cut is not None:
            self.stopped = True
            out, self.buf = self.buf[:cut], ""
            return out
        keep = _partial_tag(self.buf, tuple(self.stops)) if self.stops else 0
        out, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep :]
        return out

    def flush(self) -> str:
        out, self.buf = ("" if self.stopped else self.buf), ""
        return out


def _find_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


# ------------------------------------------------------------------------------------------------ batching


@dataclass
class _Job:
    """One request waiting for (or in) a batch; the worker posts events to its asyncio queue."""

    conversation: Conversation
    params: SamplingParams
    stream: bool
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False

    @property
    def key(self) -> tuple[int, int | None]:
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
        self._q: queue.Queue[_Job | None] = queue.Queue()
        self._pending: deque[_Job] = deque()
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

    def submit(self, job: _Job) -> None:
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

    def _collect(self) -> list[_Job]:
        if not self._pending and not self._take(timeout=0.2):
            return []
        while self._take(timeout=None):
            pass
        self._pending = deque(j for j in self._pending if not j.cancelled)
        if not self._pending or self._stop.is_set():
            return []
        expected = min(self.max_batch_size, self._active)
        if expected > 1 and self.batch_wait > 0:
            deadline = time.monotonic() + self.batch_wait
            while self._rows() < expected:
                left = deadline - time.monotonic()
                if left <= 0 or not self._take(timeout=left):
                    break
        key = self._pending[0].key
        batch: list[_Job] = []
        rest: deque[_Job] = deque()
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

    def _run(self, batch: list[_Job]) -> None:
        self.batch_sizes.append(len(batch))
        streaming = any(j.stream for j in batch)

        def on_text(i: int, k: int, piece: str) -> None:
            job = batch[i]
            if job.stream and not job.cancelled:
                job.post(("text", k, piece))

        t0 = time.perf_counter()
        try:
            results = self.generator.generate_rows(
                [j.conversation for j in batch], [j.params for j in batch], on_text if streaming else None
            )
        except Exception as e:  # one bad batch must not kill the worker
            log.exception("generation failed for a batch of %d requests", len(batch))
            for job in batch:
                job.post(("error", f"generation failed ({type(e).__name__})"))
            return
        log.debug("batch of %d requests in %.2fs", len(batch), time.perf_counter() - t0)
        for job, gens in zip(batch, results, strict=True):
            job.post(("done", gens))


# -------------------------------------------------------------------------------------------------- the app


@dataclass
class _Settings:
    model_name: str
    api_key: str | None
    hide_reasoning: bool
    reasoning_budget: int | None
    max_prompt_tokens: int | None
    context_length: int | None
    default_max_tokens: int


@dataclass
class _Prepared:
    """A validated chat request, ready for the engine."""

    conversation: Conversation
    params: SamplingParams
    stream: bool
    include_usage: bool
    include_reasoning: bool
    stops: list[str]
    prompt_tokens: int


def _context_length(generator: Generator) -> int | None:
    config = getattr(getattr(generator, "model", None), "config", None)
    n = getattr(config, "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def _now() -> int:
    return int(time.time())


def _sse(obj: dict[str, Any] | str) -> str:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n"


def create_app(
    model: str | Generator,
    *,
    model_name: str | None = None,
    tokenizer: Any = None,
    api_key: str | None = None,
    hide_reasoning: bool = False,
    reasoning_budget: int | None = None,
    max_batch_size: int = 8,
    batch_wait_ms: float = 50.0,
    max_prompt_tokens: int | None = None,
    context_length: int | None = None,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    dtype: str = "auto",
) -> FastAPI:
    """The OpenAI-compatible app for a model source (folder, "embedded", hub id) or a ready generator.

    ``tokenizer`` counts tokens for usage and limits (default: a copy of the generator's; without one, words are
    counted). ``context_length`` defaults to the model's ``max_position_embeddings``; ``max_prompt_tokens`` to
    the context length. ``api_key`` defaults to ``$SARO_API_KEY``; empty means no check.
    """
    if isinstance(model, str):
        from saro.models.generate import HFGenerator

        generator: Generator = HFGenerator.from_source(model, batch_size=max_batch_size, dtype=dtype)
        name = model_name or model
    else:
        generator = model
        name = model_name or getattr(generator, "label", None) or "saro"
    tok = tokenizer
    if tok is None and getattr(generator, "tok", None) is not None:
        # a copy for the event loop thread: the worker uses the generator's, and fast tokenizers are not shared
        tok = copy.deepcopy(generator.tok)
    ctx = context_length or _context_length(generator)
    settings = _Settings(
        model_name=name,
        api_key=(api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")).strip() or None,
        hide_reasoning=hide_reasoning,
        reasoning_budget=reasoning_budget,
        max_prompt_tokens=max_prompt_tokens or ctx,
        context_length=ctx,
        default_max_tokens=default_max_tokens,
    )
    engine = BatchEngine(generator, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        log.info(
            "serving %s (batches of up to %d, reasoning %s%s, auth %s)",
            name,
            max_batch_size,
            "hidden" if hide_reasoning else "shown",
            f", budget {reasoning_budget} tokens" if reasoning_budget else "",
            "on" if settings.api_key else "off",
        )
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(title="saro", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.settings = settings

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else None
        return ApiError(exc.status_code, str(exc.detail), code=code).response()

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return ApiError(500, "internal server error", type="server_error").response()

    @app.middleware("http")
    async def _log_and_auth(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        t0 = time.perf_counter()
        request.state.logged = False
        if (
            request.url.path.startswith("/v1")
            and settings.api_key
            and not _authorized(request, settings.api_key)
        ):
            response: Response = ApiError(
                401, "invalid or missing API key (Authorization: Bearer <key>)", code="invalid_api_key"
            ).response()
        else:
            response = await call_next(request)
        if not request.state.logged:
            log.info(
                "%s %s %d %.3fs",
                request.method,
                request.url.path,
                response.status_code,
                time.perf_counter() - t0,
            )
        return response

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "saro"}],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        t0 = time.perf_counter()
        prep = _prepare(await request.body(), settings, tok)
        job = _Job(prep.conversation, prep.params, prep.stream, asyncio.get_running_loop())
        engine.submit(job)
        if prep.stream:
            request.state.logged = True  # the stream logs its line when it ends
            return StreamingResponse(
                _stream(job, prep, settings, tok, t0),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            gens = await _wait(job)
        except BaseException:
            job.cancelled = True
            raise
        body, summary = _completion(gens, prep, settings, tok)
        _log_request(summary, prep, 200, t0)
        request.state.logged = True
        return JSONResponse(body)

    return app


def _authorized(request: Request, key: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def _count_prompt(conv: Conversation, tok: Any) -> int:
    if tok is None:
        return sum(len(m["content"].split()) + 4 for m in conv)
    ids = tok.apply_chat_template(conv, tokenize=True, add_generation_prompt=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # a BatchEncoding in newer transformers
        ids = ids["input_ids"]
    return len(ids)


def _count(text: str, tok: Any) -> int:
    return count_tokens(text, tok) if tok is not None else len(text.split())


def _prepare(raw: bytes, s: _Settings, tok: Any) -> _Prepared:
    """Parse and check a request body; raises ApiError with the OpenAI status and error body."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    try:
        req = ChatCompletionRequest.model_validate(data)
    except ValidationError as e:
        raise _validation_error(e) from None
    if req.model != s.model_name:
        raise ApiError(
            404,
            f"the model '{req.model}' does not exist (this server has '{s.model_name}')",
            "model",
            "model_not_found",
        )
    if req.tools:
        raise ApiError(400, "tools are not supported", "tools")
    if req.logprobs:
        raise ApiError(400, "logprobs are not supported", "logprobs")
    if req.response_format and req.response_format.get("type", "text") != "text":
        raise ApiError(400, "only response_format type 'text' is supported", "response_format")
    conv = _conversation(req)
    stops = _stops(req)
    prompt_tokens = _count_prompt(conv, tok)
    if s.max_prompt_tokens and prompt_tokens > s.max_prompt_tokens:
        raise ApiError(
            400,
            f"the prompt has {prompt_tokens} tokens; this server accepts at most {s.max_prompt_tokens}",
            "messages",
            "context_length_exceeded",
        )
    asked = req.max_completion_tokens or req.max_tokens
    max_new = asked or s.default_max_tokens
    if s.context_length and prompt_tokens + max_new > s.context_length:
        if asked:
            raise ApiError(
                400,
                f"this model's context length is {s.context_length} tokens; the prompt ({prompt_tokens}) plus "
                f"max_tokens ({asked}) exceed it",
                "max_completion_tokens" if req.max_completion_tokens else "max_tokens",
                "context_length_exceeded",
            )
        max_new = s.context_length - prompt_tokens
        if max_new < 1:
            raise ApiError(400, "the prompt fills the context window", "messages", "context_length_exceeded")
    budgets = [b for b in (s.reasoning_budget, req.reasoning_budget) if b]
    temperature = 1.0 if req.temperature is None else req.temperature
    params = SamplingParams(
        max_new_tokens=max_new,
        temperature=temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        n=req.n,
        seed=req.seed if req.seed is not None else random.randrange(2**31),
        reasoning_budget=min(budgets) if budgets else None,
    )
    include = not s.hide_reasoning and req.include_reasoning is not False
    usage = bool(req.stream_options and req.stream_options.include_usage)
    return _Prepared(conv, params, req.stream, usage, include, stops, prompt_tokens)


async def _wait(job: _Job) -> list[Generation]:
    while True:
        event = await job.events.get()
        if event[0] == "done":
            return event[1]
        if event[0] == "error":
            raise ApiError(500, event[1], type="server_error")


def _finish(gen: Generation, stopped: bool) -> str:
    return "stop" if stopped or gen.finished else "length"


def _usage(prompt: int, completion: int, reasoning: int | None) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def _completion(
    gens: list[Generation], prep: _Prepared, s: _Settings, tok: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    choices, completion, reasoning_tokens, finishes = [], 0, 0, []
    for k, gen in enumerate(gens):
        text, cut = gen.text, _find_stop(gen.text, prep.stops)
        if cut is not None:
            text = text[:cut]
        parsed = parse(text)
        completion += gen.tokens if cut is None else _count(text, tok)
        reasoning_tokens += _count(parsed.reasoning or "", tok)
        finish = _finish(gen, cut is not None)
        finishes.append(finish)
        message = {
            "role": "assistant",
            "content": parsed.answer,
            "reasoning_content": parsed.reasoning if prep.include_reasoning else None,
        }
        choices.append({"index": k, "message": message, "logprobs": None, "finish_reason": finish})
    body = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": _now(),
        "model": s.model_name,
        "choices": choices,
        "usage": _usage(prep.prompt_tokens, completion, reasoning_tokens),
    }
    return body, {"completion": completion, "finish": ",".join(finishes), "stream": False}


@dataclass
class _ChoiceStream:
    stops: StopScanner
    splitter: ReasoningSplitter = field(default_factory=ReasoningSplitter)
    raw: str = ""  # generated text received so far (before the stop cut)
    sent: str = ""  # text passed on to the splitter (after the stop cut)


async def _stream(job: _Job, prep: _Prepared, s: _Settings, tok: Any, t0: float) -> AsyncIterator[str]:
    """Server-sent events for one request: role chunk, reasoning/content deltas, finish chunk(s), usage, [DONE]."""
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", _now()
    states = [_ChoiceStream(StopScanner(prep.stops)) for _ in range(prep.params.n)]
    status, summary = 200, {"completion": 0, "finish": "", "stream": True}

    def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> str:
        obj: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": s.model_name,
            "choices": choices,
        }
        if usage is not None:
            obj["usage"] = usage
        return _sse(obj)

    def deltas(k: int, pieces: Iterator[tuple[str, str]]) -> Iterator[str]:
        for kind, text in pieces:
            if kind == "reasoning" and not prep.include_reasoning:
                continue
            key = "reasoning_content" if kind == "reasoning" else "content"
            yield chunk([{"index": k, "delta": {key: text}, "logprobs": None, "finish_reason": None}])

    def feed(k: int, piece: str) -> Iterator[str]:
        st = states[k]
        st.raw += piece
        text = st.stops.feed(piece)
        st.sent += text
        yield from deltas(k, iter(st.splitter.feed(text)))

    try:
        for k in range(prep.params.n):
            role = {"role": "assistant", "content": ""}
            yield chunk([{"index": k, "delta": role, "logprobs": None, "finish_reason": None}])
        while True:
            event = await job.events.get()
            if event[0] == "text":
                for line in feed(event[1], event[2]):
                    yield line
            elif event[0] == "error":
                status = 500
                yield _sse(
                    {"error": {"message": event[1], "type": "server_error", "param": None, "code": None}}
                )
                break
            else:
                gens: list[Generation] = event[1]
                completion, reasoning_tokens, finishes = 0, 0, []
                for k, gen in enumerate(gens):
                    st = states[k]
                    rest = gen.text[len(st.raw) :] if gen.text.startswith(st.raw) else ""
                    for line in feed(k, rest):  # what a backend that cannot stream did not send as pieces
                        yield line
                    tail = st.stops.flush()
                    st.sent += tail
                    for line in deltas(k, iter(st.splitter.feed(tail) + st.splitter.flush())):
                        yield line
                    finish = _finish(gen, st.stops.stopped)
                    finishes.append(finish)
                    completion += _count(st.sent, tok) if st.stops.stopped else gen.tokens
                    reasoning_tokens += _count(parse(st.sent).reasoning or "", tok)
                    yield chunk([{"index": k, "delta": {}, "logprobs": None, "finish_reason": finish}])
                summary = {"completion": completion, "finish": ",".join(finishes), "stream": True}
                if prep.include_usage:
                    yield chunk([], _usage(prep.prompt_tokens, completion, reasoning_tokens))
                break
        yield _sse("[DONE]")
    finally:
        job.cancelled = True  # a client that went away frees its place in the queue
        _log_request(summary, prep, status, t0)


def _log_request(summary: dict[str, Any], prep: _Prepared, status: int, t0: float) -> None:
    log.info(
        "POST /v1/chat/completions %d prompt=%d completion=%d n=%d finish=%s stream=%s %.3fs",
        status,
        prep.prompt_tokens,
        summary["completion"],
        prep.params.n,
        summary["finish"] or "-",
        summary["stream"],
        time.perf_counter() - t0,
    )


# ----------------------------------------------------------------------------------------- running it


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    hide_reasoning: bool = False,
    reasoning_budget: int | None = None,
    max_batch_size: int = 8,
    batch_wait_ms: float = 50.0,
    max_prompt_tokens: int | None = None,
    model_name: str | None = None,
    dtype: str = "auto",
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
) -> None:
    """Load ``model`` (folder, "embedded" or hub id) and serve it until interrupted (``saro serve``)."""
    if not logging.getLogger("saro").handlers:
        from saro.console import setup_logging

        setup_logging()
    key = (api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")).strip() or None
    if host not in ("127.0.0.1", "localhost", "::1") and not key:
        log.warning(
            "serving on %s without an API key: anyone who can reach this address can use the model", host
        )
    app = create_app(
        model,
        model_name=model_name,
        api_key=key or "",
        hide_reasoning=hide_reasoning,
        reasoning_budget=reasoning_budget,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        max_prompt_tokens=max_prompt_tokens,
        default_max_tokens=default_max_tokens,
        dtype=dtype,
    )
    log.info(
        "OpenAI-compatible API at http://%s:%d/v1 (model name '%s')",
        host,
        port,
        app.state.settings.model_name,
    )
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")
    app.state.engine.generator.close()


class BackgroundServer:
    """Runs an ASGI app with uvicorn in a daemon thread on a loopback port (tests, benchmarks, local chat).

    The socket is bound before the thread starts (port 0 picks a free one), so ``url`` is valid at once.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        """The API base URL (ends in ``/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
