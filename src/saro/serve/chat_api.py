"""``POST /v1/chat/completions``: check a request, build the answer, or stream it as server-sent events.

The answer is in ``content`` and the reasoning in both ``reasoning`` (vLLM's current name) and
``reasoning_content`` (its former name, which older clients read), in the message and in streamed deltas.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from saro.models.generate import Conversation, Generation, SamplingParams
from saro.reasoning import parse
from saro.reasoning_stream import ReasoningSplitter
from saro.serve.batching import Job
from saro.serve.responses import count, count_prompt, log_request, now, sse, usage
from saro.serve.schema import (
    ApiError,
    ChatCompletionRequest,
    Settings,
    check_model,
    parse_stops,
    validation_error,
)
from saro.serve.stops import StopScanner, find_stop

log = logging.getLogger(__name__)

PATH = "/v1/chat/completions"
REASONING_KEYS = ("reasoning", "reasoning_content")


@dataclass
class PreparedChat:
    """A validated chat request, ready for the engine."""

    conversation: Conversation
    params: SamplingParams
    stream: bool
    include_usage: bool
    include_reasoning: bool
    stops: list[str]
    prompt_tokens: int


def load_json(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def conversation(req: ChatCompletionRequest) -> Conversation:
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


def max_new_tokens(asked: int | None, prompt_tokens: int, s: Settings, param: str, where: str) -> int:
    """The completion budget: what was asked (checked against the context) or what is left of the context."""
    if s.max_prompt_tokens and prompt_tokens > s.max_prompt_tokens:
        raise ApiError(
            400,
            f"the prompt has {prompt_tokens} tokens; this server accepts at most {s.max_prompt_tokens}",
            where,
            "context_length_exceeded",
        )
    max_new = s.default_max_tokens if asked is None else asked
    if s.context_length and prompt_tokens + max_new > s.context_length:
        if asked is not None:
            raise ApiError(
                400,
                f"this model's context length is {s.context_length} tokens; the prompt ({prompt_tokens}) plus "
                f"{param} ({asked}) exceed it",
                param,
                "context_length_exceeded",
            )
        max_new = s.context_length - prompt_tokens
        if max_new < 1:
            raise ApiError(400, "the prompt fills the context window", where, "context_length_exceeded")
    return max_new


def prepare_chat(raw: bytes, s: Settings, tok: Any) -> PreparedChat:
    """Parse and check a request body; raises ApiError with the OpenAI status and error body."""
    try:
        req = ChatCompletionRequest.model_validate(load_json(raw))
    except ValidationError as e:
        raise validation_error(e) from None
    check_model(req.model, s)
    if req.tools:
        raise ApiError(400, "tools are not supported", "tools")
    if req.logprobs:
        raise ApiError(
            400, "logprobs are not supported on chat completions (use /v1/completions)", "logprobs"
        )
    if req.response_format and req.response_format.get("type", "text") != "text":
        raise ApiError(400, "only response_format type 'text' is supported", "response_format")
    conv = conversation(req)
    stops = parse_stops(req.stop)
    prompt_tokens = count_prompt(conv, tok)
    param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
    max_new = max_new_tokens(req.max_completion_tokens or req.max_tokens, prompt_tokens, s, param, "messages")
    budgets = [b for b in (s.reasoning_budget, req.reasoning_budget) if b]
    params = SamplingParams(
        max_new_tokens=max_new,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        n=req.n,
        seed=req.seed if req.seed is not None else random.randrange(2**31),
        reasoning_budget=min(budgets) if budgets else None,
    )
    include = not s.hide_reasoning and req.include_reasoning is not False
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return PreparedChat(conv, params, req.stream, include_usage, include, stops, prompt_tokens)


def finish_reason(gen: Generation, stopped: bool) -> str:
    return "stop" if stopped or gen.finished else "length"


def chat_body(
    gens: list[Generation], prep: PreparedChat, s: Settings, tok: Any
) -> tuple[dict[str, Any], str, int]:
    """The ``chat.completion`` object; also the finish reasons and completion tokens for the log line."""
    choices, completion, reasoning_tokens, finishes = [], 0, 0, []
    for k, gen in enumerate(gens):
        text, cut = gen.text, find_stop(gen.text, prep.stops)
        if cut is not None:
            text = text[:cut]
        parsed = parse(text)
        completion += gen.tokens if cut is None else count(text, tok)
        reasoning_tokens += count(parsed.reasoning or "", tok)
        finishes.append(finish_reason(gen, cut is not None))
        reasoning = parsed.reasoning if prep.include_reasoning else None
        message = {"role": "assistant", "content": parsed.answer, **dict.fromkeys(REASONING_KEYS, reasoning)}
        choices.append({"index": k, "message": message, "logprobs": None, "finish_reason": finishes[-1]})
    body = {
        "id": f"chatcmpl-{_uid()}",
        "object": "chat.completion",
        "created": now(),
        "model": s.model_name,
        "choices": choices,
        "usage": usage(prep.prompt_tokens, completion, reasoning_tokens),
    }
    return body, ",".join(finishes), completion


def _uid() -> str:
    import uuid

    return uuid.uuid4().hex[:24]


@dataclass
class _ChoiceStream:
    stops: StopScanner
    splitter: ReasoningSplitter
    raw: str = ""  # generated text received so far (before the stop cut)
    sent: str = ""  # text passed on to the splitter (after the stop cut)


class ChatStream:
    """Server-sent events for one chat request: role chunk, reasoning/content deltas, finish chunk(s), usage."""

    def __init__(self, job: Job, prep: PreparedChat, s: Settings, tok: Any) -> None:
        self.job, self.prep, self.s, self.tok = job, prep, s, tok
        self.cid, self.created = f"chatcmpl-{_uid()}", now()
        held = prep.params.reasoning_budget is not None  # the generator may close a block never opened
        self.states = [
            _ChoiceStream(StopScanner(prep.stops), ReasoningSplitter(hold_untagged=held))
            for _ in range(prep.params.n)
        ]
        self.status, self.completion, self.finish = 200, 0, ""

    def chunk(self, choices: list[dict[str, Any]], use: dict[str, Any] | None = None) -> str:
        obj: dict[str, Any] = {
            "id": self.cid,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.s.model_name,
            "choices": choices,
        }
        if use is not None:
            obj["usage"] = use
        return sse(obj)

    def _delta(self, k: int, delta: dict[str, Any], finish: str | None = None) -> str:
        return self.chunk([{"index": k, "delta": delta, "logprobs": None, "finish_reason": finish}])

    def _deltas(self, k: int, pieces: list[tuple[str, str]]) -> Iterator[str]:
        for kind, text in pieces:
            if kind == "reasoning":
                if self.prep.include_reasoning:
                    yield self._delta(k, dict.fromkeys(REASONING_KEYS, text))
            else:
                yield self._delta(k, {"content": text})

    def _feed(self, k: int, piece: str) -> Iterator[str]:
        st = self.states[k]
        st.raw += piece
        text = st.stops.feed(piece)
        st.sent += text
        yield from self._deltas(k, st.splitter.feed(text))

    def _end(self, gens: list[Generation]) -> Iterator[str]:
        completion, reasoning_tokens, finishes = 0, 0, []
        for k, gen in enumerate(gens):
            st = self.states[k]
            rest = gen.text[len(st.raw) :] if gen.text.startswith(st.raw) else ""
            yield from self._feed(k, rest)  # what a backend that cannot stream did not send as pieces
            tail = st.stops.flush()
            st.sent += tail
            yield from self._deltas(k, st.splitter.feed(tail) + st.splitter.flush())
            finishes.append(finish_reason(gen, st.stops.stopped))
            completion += count(st.sent, self.tok) if st.stops.stopped else gen.tokens
            reasoning_tokens += count(parse(st.sent).reasoning or "", self.tok)
            yield self._delta(k, {}, finishes[-1])
        self.completion, self.finish = completion, ",".join(finishes)
        if self.prep.include_usage:
            yield self.chunk([], usage(self.prep.prompt_tokens, completion, reasoning_tokens))

    async def events(self, t0: float) -> AsyncIterator[str]:
        try:
            for k in range(self.prep.params.n):
                yield self._delta(k, {"role": "assistant", "content": ""})
            while True:
                event = await self.job.events.get()
                if event[0] == "text":
                    for line in self._feed(event[1], event[2]):
                        yield line
                    continue
                if event[0] == "error":
                    self.status = 500
                    yield sse(ApiError(500, event[1], type="server_error").body())
                else:
                    for line in self._end(event[1]):
                        yield line
                break
            yield sse("[DONE]")
        finally:
            self.job.cancelled = True  # a client that went away frees its place in the queue
            p = self.prep
            log_request(
                PATH, self.status, p.prompt_tokens, self.completion, p.params.n, self.finish, True, t0
            )
