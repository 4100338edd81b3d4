"""``saro serve``: an OpenAI-compatible HTTP server (FastAPI + uvicorn) for a model folder.

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` (plain
JSON or server-sent events with ``stream: true``). In chat answers the answer is in ``content`` and the reasoning
in ``reasoning`` (vLLM's current name) and ``reasoning_content`` (its former one), streamed as separate deltas.
Per request, ``include_reasoning: false`` hides the reasoning and ``reasoning_budget`` caps it (``extra_body`` in
the openai client); the server flags do the same for every request. ``/v1/completions`` takes raw prompts and
returns ``logprobs`` computed by the model (with ``echo``, for the prompt too: lm-eval's loglikelihood).
The OpenAI Batch API (``/v1/files``, ``/v1/batches``: ``batch_api``, state in ``batch_store``) answers a batch's
requests through the same engine, so the ``openai_batch`` backend has a real local server to talk to.

The package, by concern: ``schema`` (requests, errors, settings), ``batching`` (the worker that owns the model),
``chat_api`` and ``completions`` (the two endpoints), ``scoring`` (token logprobs), ``stops``, ``responses``
(shared pieces), ``app`` (routes, auth, error bodies) and ``process`` (running it). The streaming ``<think>``
splitter lives in :mod:`saro.reasoning_stream`, beside the parser, so ``saro chat`` does not import the server.

Batching: one worker thread owns the model. It takes up to ``max_batch_size`` waiting chat requests (counting
``n`` samples each) that share ``max_tokens`` and ``reasoning_budget`` and runs them as one batch; streamed
requests are batched like the others. ``stop`` sequences are applied to the generated text.

Security: binds to 127.0.0.1 unless told otherwise; with an API key (``api_key`` or ``$SARO_API_KEY``) every
``/v1`` request needs ``Authorization: Bearer <key>``. The key is never logged, and neither is any prompt or
completion text (harmful text is data): the log has one line per request with sizes, status and timing.
"""

from __future__ import annotations

from saro.reasoning_stream import ReasoningSplitter
from saro.serve.app import create_app
from saro.serve.batching import BatchEngine
from saro.serve.process import BackgroundServer, serve
from saro.serve.schema import API_KEY_ENV, DEFAULT_MAX_TOKENS, ApiError
from saro.serve.stops import StopScanner

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_MAX_TOKENS",
    "ApiError",
    "BackgroundServer",
    "BatchEngine",
    "ReasoningSplitter",
    "StopScanner",
    "create_app",
    "serve",
]
