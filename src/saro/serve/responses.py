"""Pieces shared by the endpoints: server-sent events, usage, token counting, waiting on a job, the log line."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from saro.models.generate import Conversation
from saro.reasoning import count_tokens
from saro.serve.batching import Job
from saro.serve.schema import ApiError

log = logging.getLogger(__name__)


def now() -> int:
    return int(time.time())


def sse(obj: dict[str, Any] | str) -> str:
    """One server-sent event (``data: ...``) carrying a JSON object or a literal such as ``[DONE]``."""
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n"


def usage(prompt: int, completion: int, reasoning: int | None = None) -> dict[str, Any]:
    """The OpenAI ``usage`` object (with ``completion_tokens_details.reasoning_tokens`` when known)."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if reasoning is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return out


def count_prompt(conv: Conversation, tok: Any) -> int:
    """Tokens of a conversation rendered with the chat template (words + 4 per turn without a tokenizer)."""
    if tok is None:
        return sum(len(m["content"].split()) + 4 for m in conv)
    ids = tok.apply_chat_template(conv, tokenize=True, add_generation_prompt=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # a BatchEncoding in newer transformers
        ids = ids["input_ids"]
    return len(ids)


def count(text: str, tok: Any) -> int:
    return count_tokens(text, tok) if tok is not None else len(text.split())


async def wait(job: Job) -> Any:
    """The job's result; its error as a 500 (text events are skipped: the caller did not ask to stream)."""
    while True:
        event = await job.events.get()
        if event[0] == "done":
            return event[1]
        if event[0] == "error":
            raise ApiError(500, event[1], type="server_error")


def log_request(
    path: str, status: int, prompt: int, completion: int, n: int, finish: str, stream: bool, t0: float
) -> None:
    """One line per request: sizes, status, timing; never the text (harmful text is data)."""
    log.info(
        "POST %s %d prompt=%d completion=%d n=%d finish=%s stream=%s %.3fs",
        path,
        status,
        prompt,
        completion,
        n,
        finish or "-",
        stream,
        time.perf_counter() - t0,
    )
