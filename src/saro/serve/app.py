"""The FastAPI app: settings from the arguments, the engine's lifecycle, error handlers, auth, and the routes."""

from __future__ import annotations

import contextlib
import copy
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from saro.models.generate import Generator
from saro.serve.batch_api import BatchAPI, install_batch_routes
from saro.serve.batching import BatchEngine, Job
from saro.serve.chat_api import ChatStream, chat_body, prepare_chat
from saro.serve.completions import completion_body, completion_events, completion_task, prepare_completion
from saro.serve.responses import log_request, wait
from saro.serve.schema import API_KEY_ENV, DEFAULT_MAX_TOKENS, ApiError, Settings

log = logging.getLogger(__name__)

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _context_length(generator: Generator) -> int | None:
    n = getattr(generator, "context_length", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def _load(
    model: str | Generator, model_name: str | None, batch_size: int, engine: dict[str, str]
) -> tuple[Generator, str]:
    if not isinstance(model, str):
        return model, model_name or getattr(model, "label", None) or "saro"
    from saro.models.backends import local_generator

    return local_generator(model, batch_size=batch_size, **engine), model_name or model


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
    batch_dir: str | Path | None = None,
    backend: str = "hf",
    compute_type: str = "float32",
) -> FastAPI:
    """The OpenAI-compatible app for a model source (folder, "embedded", hub id) or a ready generator.

    ``tokenizer`` counts tokens for usage and limits (default: a copy of the generator's; without one, words are
    counted). ``context_length`` defaults to the model's ``max_position_embeddings``; ``max_prompt_tokens`` to
    the context length. ``api_key`` defaults to ``$SARO_API_KEY``; empty means no check. ``backend`` picks the
    engine for a model source: ``hf`` (transformers, ``dtype``) or ``ct2`` (CTranslate2, ``compute_type``).
    ``batch_dir`` keeps the Batch API's files and batches (a batch running at shutdown goes on at the next
    start); default: a temporary folder for this server's life.
    """
    engine_args = {"backend": backend, "dtype": dtype, "compute_type": compute_type}
    generator, name = _load(model, model_name, max_batch_size, engine_args)
    tok = tokenizer
    if tok is None and getattr(generator, "tok", None) is not None:
        # a copy for the event loop thread: the worker uses the generator's, and fast tokenizers are not shared
        tok = copy.deepcopy(getattr(generator, "tok"))  # noqa: B009 (Generator declares no tokenizer)
    ctx = context_length or _context_length(generator)
    settings = Settings(
        model_name=name,
        api_key=(api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")).strip() or None,
        hide_reasoning=hide_reasoning,
        reasoning_budget=reasoning_budget,
        max_prompt_tokens=max_prompt_tokens or ctx,
        context_length=ctx,
        default_max_tokens=default_max_tokens,
    )
    engine = BatchEngine(generator, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms)
    batches = BatchAPI(batch_dir, settings, engine, tok)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        await batches.start()
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
            await batches.stop()
            engine.stop()

    app = FastAPI(title="saro", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.settings = settings
    app.state.batches = batches
    _install_handlers(app, settings)
    _install_routes(app, settings, engine, tok)
    install_batch_routes(app, batches)
    return app


def _authorized(request: Request, key: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def _install_handlers(app: FastAPI, settings: Settings) -> None:
    """OpenAI error bodies for every error; the bearer-token check and one log line per request."""

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
            elapsed = time.perf_counter() - t0
            log.info("%s %s %d %.3fs", request.method, request.url.path, response.status_code, elapsed)
        return response


async def _result(job: Job) -> Any:
    try:
        return await wait(job)
    except BaseException:
        job.cancelled = True  # the client went away (or the job failed): free its place in the queue
        raise


def _install_routes(app: FastAPI, settings: Settings, engine: BatchEngine, tok: Any) -> None:
    """``/health``, ``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions``."""
    name = settings.model_name

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "saro"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        t0 = time.perf_counter()
        prep = prepare_chat(await request.body(), settings, tok)
        job = Job(prep.conversation, prep.params, prep.stream, _loop())
        engine.submit(job)
        if prep.stream:
            request.state.logged = True  # the stream logs its line, with sizes, when it ends
            stream = ChatStream(job, prep, settings, tok)
            return StreamingResponse(stream.events(t0), media_type="text/event-stream", headers=_SSE_HEADERS)
        body, finish, completion = chat_body(await _result(job), prep, settings, tok)
        log_request(
            "/v1/chat/completions", 200, prep.prompt_tokens, completion, prep.params.n, finish, False, t0
        )
        request.state.logged = True
        return JSONResponse(body)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        from saro.models.generate import SamplingParams

        t0 = time.perf_counter()
        prep = prepare_completion(await request.body(), settings, tok, engine.generator)
        job = Job([], SamplingParams(), prep.stream, _loop(), task=completion_task(prep))
        engine.submit(job)
        if prep.stream:
            request.state.logged = True
            events = completion_events(job, prep, settings, t0)
            return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)
        body = completion_body(await _result(job), prep, settings, tok)
        finish = ",".join(c["finish_reason"] for c in body["choices"])
        completion = body["usage"]["completion_tokens"]
        log_request(
            "/v1/completions", 200, prep.prompt_tokens, completion, len(prep.prompts), finish, False, t0
        )
        request.state.logged = True
        return JSONResponse(body)


def _loop() -> Any:
    import asyncio

    return asyncio.get_running_loop()
