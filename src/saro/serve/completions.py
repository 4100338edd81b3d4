"""``POST /v1/completions`` (the OpenAI legacy endpoint): raw text in, text out, with ``logprobs`` and ``echo``.

``prompt`` may be a string, a list of strings, token ids or lists of token ids; each prompt is one choice
(``n`` is 1). ``logprobs: k`` returns ``tokens``, ``token_logprobs``, ``top_logprobs`` (the k most likely tokens
at each position) and ``text_offset``; ``echo`` puts the prompt's tokens first, the first one with a null
logprob. ``max_tokens: 0, echo: true, logprobs: 1`` scores a text without generating: lm-eval's loglikelihood.
The model scores the text itself, so this needs a backend with the model in process: ``hf``, or ``ct2``, which
loads the transformers model beside its engine on the first such request.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from saro.models.generate import Generator
from saro.serve.batching import Job
from saro.serve.chat_api import load_json, max_new_tokens
from saro.serve.responses import log_request, now, sse, usage
from saro.serve.schema import (
    ApiError,
    CompletionRequest,
    Settings,
    check_model,
    parse_stops,
    validation_error,
)
from saro.serve.scoring import Completion, Decoding, Scored, complete, token_texts

log = logging.getLogger(__name__)

PATH = "/v1/completions"


@dataclass
class PreparedCompletion:
    """A validated completion request: token ids per prompt (and the prompt text when one was given)."""

    prompts: list[list[int]]
    texts: list[str | None]
    decoding: Decoding
    logprobs: int | None
    echo: bool
    stream: bool
    include_usage: bool

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


def _prompts(
    prompt: str | list[str] | list[int] | list[list[int]], tok: Any
) -> tuple[list[list[int]], list[str | None]]:
    """Token ids per prompt, and the prompt text where one was given (token-id prompts have none)."""
    items: list[str | list[int]]
    if isinstance(prompt, str):
        items = [prompt]
    elif prompt and all(isinstance(t, int) for t in prompt):
        items = [[int(t) for t in prompt]]  # type: ignore[arg-type]
    else:
        items = list(prompt)  # type: ignore[arg-type]
    if not items:
        raise ApiError(400, "prompt: must not be empty", "prompt")
    ids: list[list[int]] = []
    texts: list[str | None] = []
    for i, p in enumerate(items):
        if isinstance(p, str):
            ids.append(list(tok(p)["input_ids"]) if p else [])
            texts.append(p)
        else:
            vocab = len(tok)
            if any(not 0 <= t < vocab for t in p):
                raise ApiError(400, f"prompt.{i}: token ids must be in [0, {vocab})", "prompt")
            ids.append(list(p))
            texts.append(None)
        if not ids[-1]:
            raise ApiError(400, f"prompt.{i}: an empty prompt has nothing to continue or score", "prompt")
    return ids, texts


def prepare_completion(raw: bytes, s: Settings, tok: Any, generator: Generator) -> PreparedCompletion:
    """Parse and check a completion request; raises ApiError with the OpenAI status and error body."""
    try:
        req = CompletionRequest.model_validate(load_json(raw))
    except ValidationError as e:
        raise validation_error(e) from None
    check_model(req.model, s)
    if tok is None or not callable(getattr(generator, "scoring_model", None)):
        raise ApiError(
            400, "this server's backend cannot score text: /v1/completions needs an in-process model"
        )
    if req.suffix:
        raise ApiError(400, "suffix is not supported", "suffix")
    if req.stream and (req.logprobs is not None or req.echo):
        raise ApiError(400, "logprobs and echo are not supported with stream", "stream")
    prompts, texts = _prompts(req.prompt, tok)
    for ids in prompts:
        max_new_tokens(req.max_tokens, len(ids), s, "max_tokens", "prompt")
    decoding = Decoding(
        max_tokens=req.max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        seed=req.seed if req.seed is not None else random.randrange(2**31),
        top_k=req.logprobs or 0,
        stops=parse_stops(req.stop),
    )
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return PreparedCompletion(prompts, texts, decoding, req.logprobs, req.echo, req.stream, include_usage)


def completion_task(prep: PreparedCompletion) -> Any:
    """The work the engine's worker runs: each prompt in turn, streaming its text when asked."""

    def run(generator: Generator, job: Job) -> list[Completion]:
        model, tok = generator.scoring_model(), generator.tok  # type: ignore[attr-defined]
        eos = set(generator.eos_ids())  # type: ignore[attr-defined]
        out = []
        for i, ids in enumerate(prep.prompts):
            if job.cancelled:
                break

            def on_text(piece: str, i: int = i) -> None:
                job.post(("text", i, piece))

            out.append(complete(model, tok, ids, prep.decoding, eos, on_text if prep.stream else None))
        return out

    return run


def _logprobs(parts: list[tuple[Scored, list[str]]], k: int, tok: Any) -> dict[str, Any]:
    tokens, lps, tops, offsets, offset = [], [], [], [], 0
    for scored, texts in parts:
        for j, text in enumerate(texts):
            tokens.append(
                text or tok.decode([scored.ids[j]])
            )  # a special token shows, but is not in the text
            offsets.append(offset)
            offset += len(text)
            lps.append(scored.logprobs[j])
            top = scored.top[j]
            tops.append(None if top is None else {tok.decode([t]): lp for t, lp in top[:k]})
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def completion_body(
    results: list[Completion], prep: PreparedCompletion, s: Settings, tok: Any
) -> dict[str, Any]:
    """The ``text_completion`` object, one choice per prompt."""
    choices = []
    for i, r in enumerate(results):
        comp_texts = token_texts(tok, r.completion.ids, skip_special=True)
        parts = [(r.completion, comp_texts)]
        text = r.text
        if prep.echo:
            prompt_texts = token_texts(tok, r.prompt.ids, skip_special=False)
            parts.insert(0, (r.prompt, prompt_texts))
            given = prep.texts[i]
            text = (given if given is not None else "".join(prompt_texts)) + text
        lp = None if prep.logprobs is None else _logprobs(parts, prep.logprobs, tok)
        choices.append({"index": i, "text": text, "logprobs": lp, "finish_reason": r.finish_reason})
    completion = sum(len(r.completion.ids) for r in results)
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": now(),
        "model": s.model_name,
        "choices": choices,
        "usage": usage(prep.prompt_tokens, completion),
    }


async def completion_events(job: Job, prep: PreparedCompletion, s: Settings, t0: float) -> AsyncIterator[str]:
    """Server-sent events for a streamed completion: text chunks per prompt, a finish chunk each, [DONE]."""
    cid, created, status, completion, finish = f"cmpl-{uuid.uuid4().hex[:24]}", now(), 200, 0, ""

    def chunk(choices: list[dict[str, Any]], use: dict[str, Any] | None = None) -> str:
        obj = {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": s.model_name,
            "choices": choices,
        }
        return sse(obj if use is None else {**obj, "usage": use})

    try:
        while True:
            event = await job.events.get()
            if event[0] == "text":
                yield chunk([{"index": event[1], "text": event[2], "logprobs": None, "finish_reason": None}])
                continue
            if event[0] == "error":
                status = 500
                yield sse(ApiError(500, event[1], type="server_error").body())
                break
            results: list[Completion] = event[1]
            for i, r in enumerate(results):
                yield chunk([{"index": i, "text": "", "logprobs": None, "finish_reason": r.finish_reason}])
            completion = sum(len(r.completion.ids) for r in results)
            finish = ",".join(r.finish_reason for r in results)
            if prep.include_usage:
                yield chunk([], usage(prep.prompt_tokens, completion))
            break
        yield sse("[DONE]")
    finally:
        job.cancelled = True
        log_request(PATH, status, prep.prompt_tokens, completion, len(prep.prompts), finish, True, t0)
