"""A real OpenAI-compatible HTTP server on 127.0.0.1 with fault injection, for tests and benches.

``POST /v1/chat/completions`` (non-streaming) answers with a well-formed ``<think>`` reasoning + answer built from
the last user message, or, by configurable fractions, with HTTP 500, HTTP 429, a hang longer than the client's
timeout, or malformed text. Which one is decided by a hash of (seed, request content, how many times that exact
request was seen), so a run is reproducible and a retried request gets a fresh draw. Counters record every request.

It samples like a real server: ``n`` choices per request, each a different draw when ``temperature > 0`` (the
wording and the number of reasoning steps follow the request's ``seed`` and the choice index; the same seed gives
the same choices), one greedy text whatever the seed at ``temperature == 0``; a text longer than ``max_tokens``
(counted in words) is cut there with ``finish_reason: "length"``. ``n_support`` mimics servers without ``n``:
``"ignore"`` answers one choice, ``"reject"`` answers HTTP 400 to ``n > 1``.

    with FakeServer(p_500=0.2, p_timeout=0.1, p_malformed=0.1, latency=0.01) as srv:
        OpenAIGenerator(model="fake", base_url=srv.url, ...)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MALFORMED = (
    "Sure, here is my answer without any reasoning.",
    "<think>\nI started to reason about this but never closed the block",
    "",
)


_EXTRA_STEPS = (
    "I consider who would ask this and why; an ordinary reason is the likely one.",
    "Checking the policy categories once more, none of them covers this request.",
    "The answer should be short and direct, with one concrete example.",
    "A careful answer also mentions where to read more about the topic.",
    "I think about the level of detail that is actually useful here.",
)
_OPENERS = ("I first work out what is being asked and why.", "Let me be sure I understand the request.",
            "I start by reading the request closely.", "First, what exactly is being asked?")  # fmt: skip
_CLOSERS = ("That should cover it.", "I hope this helps.", "Let me know if you need more.", "")


def good_reasoning(user: str, draw: int | None = None) -> tuple[str, str]:
    """(reasoning, answer) for a user message: several steps, one reflection, a decision. ``draw`` (a sampled
    choice) varies the wording and adds 0-3 extra steps; None is the greedy text. Only the message's first
    paragraph (the request, not a note appended to it) is quoted."""
    quoted = " ".join(user.strip().split("\n\n")[0].split())[:200]
    rng = random.Random(draw) if draw is not None else None
    opener = rng.choice(_OPENERS) if rng else _OPENERS[0]
    extra = rng.sample(_EXTRA_STEPS, rng.randint(0, 3)) if rng else []
    closer = rng.choice(_CLOSERS) if rng else ""
    steps = [
        f'The user asks: "{quoted}". {opener}',
        "The relevant policy clause is general assistance; nothing in the request is disallowed.",
        *extra,
        "Wait, could there be a harmful reading? Considering it, the benign reading is the plausible one.",
        "Decision: help.",
    ]
    answer = f"Here is my answer to: {quoted}" + (f" {closer}" if closer else "")
    if rng:
        answer += f" (draft {rng.randrange(10**6):06d})"
    return "\n\n".join(steps), answer


class FakeServer:
    """OpenAI-compatible fake server; use as a context manager (``url`` ends in ``/v1``).

    p_500 / p_429 / p_timeout: fractions of requests that fail that way (drawn per attempt); p_malformed: fraction
    of choices that come back as malformed text (drawn per attempt and choice).
    latency: seconds added to every response, plus up to latency_jitter more (drawn like the outcome, so
    answers come back out of order). timeout_sleep: how long a "timeout" hangs (longer than the client's
    timeout). reasoning_field: return the reasoning in ``reasoning_content`` (vLLM convention) instead of inline.
    api_key: when set, requests must carry it; a wrong one gets a 401 that echoes it (as some providers do).
    models: when set, other model names get a 404.
    bad_request_marker: a user message containing it gets a 400 (like a context-length or content-filter error).
    responder: when set, a successful request is answered with ``responder(messages)`` (a scripted teacher).
    n_support: "honour" (n choices), "ignore" (one choice whatever n), "reject" (HTTP 400 to n > 1).
    """

    def __init__(
        self,
        seed: int = 0,
        p_500: float = 0.0,
        p_429: float = 0.0,
        p_timeout: float = 0.0,
        p_malformed: float = 0.0,
        latency: float = 0.0,
        latency_jitter: float = 0.0,
        timeout_sleep: float = 3.0,
        reasoning_field: bool = False,
        api_key: str | None = None,
        models: set[str] | None = None,
        bad_request_marker: str | None = None,
        responder: Callable[[list[dict[str, Any]]], str] | None = None,
        n_support: str = "honour",
    ) -> None:
        assert p_500 + p_429 + p_timeout + p_malformed <= 1.0
        assert n_support in ("honour", "ignore", "reject")
        self.n_support = n_support
        self.seed = seed
        self.p_500, self.p_429, self.p_timeout, self.p_malformed = p_500, p_429, p_timeout, p_malformed
        self.latency = latency
        self.latency_jitter = latency_jitter
        self.bad_request_marker = bad_request_marker
        self.responder = responder  # scripted answers: messages -> content (faults still apply first)
        self.bodies: list[dict[str, Any]] = []  # every request body, in arrival order
        self.timeout_sleep = timeout_sleep
        self.reasoning_field = reasoning_field
        self.api_key = api_key
        self.models = models
        self.requests = 0  # every POST to /v1/chat/completions
        self.outcomes: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._seen: Counter[str] = Counter()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset_counts(self) -> None:
        self.requests = 0
        self.outcomes.clear()
        self.max_in_flight = 0

    # ------------------------------------------------------------------------------------------- behaviour

    def _draw(self, body: dict[str, Any]) -> tuple[str, float, str]:
        """The outcome for this request, a second uniform draw and the key of this attempt (a function of seed,
        content and how many times this exact request was seen)."""
        content = json.dumps(
            {
                k: body.get(k)
                for k in ("model", "messages", "seed", "temperature", "top_p", "max_tokens", "n")
            },
            sort_keys=True,
        )
        attempt = self._seen[content]
        self._seen[content] += 1
        key = f"{self.seed}\x1f{content}\x1f{attempt}"
        u, v = _uniform(key, 0), _uniform(key, 1)
        edge = 0.0
        for name, p in (("error500", self.p_500), ("rate_limited", self.p_429), ("timeout", self.p_timeout)):
            edge += p
            if u < edge:
                return name, v, key
        return "ok", v, key

    def _completion(self, body: dict[str, Any], contents: list[tuple[str, str | None]]) -> dict[str, Any]:
        """A chat.completion with one choice per (content, reasoning); each is cut at ``max_tokens`` words."""
        limit = body.get("max_tokens")
        choices, toks = [], 0
        for j, (content, reasoning) in enumerate(contents):
            finish = "stop"
            if isinstance(limit, int) and len((reasoning or "").split()) + len(content.split()) > limit:
                content, reasoning, finish = _cut(content, reasoning, limit)
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if reasoning is not None:
                message["reasoning_content"] = reasoning
            toks += len(content.split()) + len((reasoning or "").split())
            choices.append({"index": j, "message": message, "finish_reason": finish})
        return {
            "id": f"chatcmpl-{self.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": choices,
            "usage": {"prompt_tokens": 10, "completion_tokens": toks, "total_tokens": 10 + toks},
        }

    def _choices(self, body: dict[str, Any], users: list[str], attempt: str) -> list[tuple[str, str | None]]:
        """The (content, reasoning) of each choice: sampled per (seed, choice index) when temperature > 0; a
        ``p_malformed`` share of the choices (drawn per attempt and choice) is malformed text instead."""
        n = int(body.get("n") or 1) if self.n_support == "honour" else 1
        sampled = float(body.get("temperature") or 0) > 0
        content = json.dumps(body.get("messages"), sort_keys=True)
        out: list[tuple[str, str | None]] = []
        for j in range(n):
            if _uniform(attempt, 2 + j) < self.p_malformed:
                self.outcomes["malformed"] += 1
                out.append((MALFORMED[int(_uniform(attempt, 100 + j) * len(MALFORMED))], None))
                continue
            if self.responder is not None:
                out.append((self.responder(body.get("messages", [])), None))
                continue
            key = f"{content}\x1f{body.get('seed')}\x1f{j}" if sampled else content
            draw = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) if sampled else None
            reasoning, answer = good_reasoning(users[-1] if users else "", draw)
            out.append(
                (answer, reasoning)
                if self.reasoning_field
                else (f"<think>\n{reasoning}\n</think>\n{answer}", None)
            )
        return out

    async def _chat(self, request: Request) -> JSONResponse:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: Request) -> JSONResponse:
        if self.api_key is not None:
            got = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if got != self.api_key:
                self.outcomes["unauthorized"] += 1
                msg = f"Incorrect API key provided: {got}" if got else "You didn't provide an API key."
                return JSONResponse(
                    {"error": {"message": msg, "type": "invalid_request_error"}}, status_code=401
                )
        try:
            body = await request.json()
        except ValueError:
            self.outcomes["bad_json"] += 1
            return JSONResponse({"error": {"message": "invalid JSON body"}}, status_code=400)
        if self.models is not None and body.get("model") not in self.models:
            self.outcomes["unknown_model"] += 1
            msg = f"The model `{body.get('model')}` does not exist."
            return JSONResponse({"error": {"message": msg, "type": "NotFoundError"}}, status_code=404)
        users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
        if self.bad_request_marker is not None and any(self.bad_request_marker in u for u in users):
            self.outcomes["bad_request"] += 1
            msg = "This model's maximum context length is 8192 tokens (injected)."
            return JSONResponse({"error": {"message": msg, "type": "invalid_request_error"}}, status_code=400)
        if self.n_support == "reject" and int(body.get("n") or 1) > 1:
            self.outcomes["n_rejected"] += 1
            msg = "n > 1 is not supported by this server (injected)"
            return JSONResponse({"error": {"message": msg, "type": "invalid_request_error"}}, status_code=400)
        self.bodies.append(body)
        outcome, v, attempt = self._draw(body)
        self.outcomes[outcome] += 1
        if self.latency or self.latency_jitter:
            await asyncio.sleep(self.latency + self.latency_jitter * ((v * 7919) % 1.0))
        if outcome == "error500":
            return JSONResponse({"error": {"message": "internal error (injected)"}}, status_code=500)
        if outcome == "rate_limited":
            return JSONResponse(
                {"error": {"message": "rate limited (injected)"}},
                status_code=429,
                headers={"Retry-After": "0"},
            )
        if outcome == "timeout":
            await asyncio.sleep(self.timeout_sleep)
        return JSONResponse(self._completion(body, self._choices(body, users, attempt)))

    async def _models(self, request: Request) -> JSONResponse:
        names = sorted(self.models or {"fake"})
        return JSONResponse({"object": "list", "data": [{"id": m, "object": "model"} for m in names]})

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> FakeServer:
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )
        self._serve(app)
        return self

    def _serve(self, app: Starlette) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            backlog=256,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-openai", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _uniform(key: str, i: int) -> float:
    """The i-th uniform draw in [0, 1) of a key."""
    h = hashlib.sha256(f"{key}\x1f{i}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def _words(text: str, k: int) -> str:
    """The text up to the end of its k-th word (whitespace kept as it is)."""
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    return text[: ends[k - 1]] if 0 < k <= len(ends) else ("" if k <= 0 else text)


def _cut(content: str, reasoning: str | None, limit: int) -> tuple[str, str | None, str]:
    """A choice cut after ``limit`` words, as a server cuts at ``max_tokens`` (an inline think block may stay open)."""
    if reasoning is None:
        return _words(content, limit), None, "length"
    used = len(reasoning.split())
    if used >= limit:
        return "", _words(reasoning, limit), "length"
    return _words(content, limit - used), reasoning, "length"


class FakeBatchServer(FakeServer):
    """A fake OpenAI Batch API (``/v1/files``, ``/v1/batches``) on top of :class:`FakeServer`'s lifecycle.

    A batch completes after ``polls_to_complete`` GETs; each request line is answered with ``answer(messages)``, or
    by default with ``n`` choices sampled like :class:`FakeServer` (different per seed and choice index when
    ``temperature > 0``, the reasoning ending in "answer to <the last user message>").
    Faults: ``create_500`` first batch creations get HTTP 500; ``batch_fates`` (one per created batch, in order)
    ends a batch "failed" (no output) or "expired" (only the first half answered); ``error_ids(messages)`` puts a
    request in the error file instead; ``malformed_lines`` garbage lines are added to the first batch's output.
    Counters: ``batches_created``, ``uploads``, ``polls``.
    """

    def __init__(
        self,
        answer: Callable[[list[dict[str, Any]]], str] | None = None,
        polls_to_complete: int = 2,
        create_500: int = 0,
        batch_fates: list[str] | None = None,
        error_ids: Callable[[list[dict[str, Any]]], bool] | None = None,
        malformed_lines: int = 0,
    ) -> None:
        super().__init__()
        self.answer = answer  # None: a sampled answer, like FakeServer's (different per seed and choice)
        self.polls_to_complete = polls_to_complete
        self.create_500 = create_500
        self.batch_fates = list(batch_fates or [])
        self.error_ids = error_ids
        self.malformed_lines = malformed_lines
        self.files: dict[str, str] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batches_created = 0
        self.uploads = 0
        self.polls = 0
        self.batch_sizes: list[int] = []

    async def _upload(self, request: Request) -> JSONResponse:
        raw = await request.body()
        boundary = request.headers["content-type"].split("boundary=")[1].encode()
        content, purpose = None, None
        for part in raw.split(b"--" + boundary):
            head, _, data = part.partition(b"\r\n\r\n")
            data = data.removesuffix(b"\r\n")
            if b'name="file"' in head:
                content = data.decode("utf-8")
            elif b'name="purpose"' in head:
                purpose = data.decode()
        if content is None or purpose != "batch":
            return JSONResponse({"error": {"message": "need file and purpose=batch"}}, status_code=400)
        self.uploads += 1
        fid = f"file-{len(self.files)}"
        self.files[fid] = content
        return JSONResponse({"id": fid, "object": "file", "purpose": "batch"})

    async def _create(self, request: Request) -> JSONResponse:
        body = await request.json()
        if self.create_500 > 0:
            self.create_500 -= 1
            return JSONResponse({"error": {"message": "internal"}}, status_code=500)
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return JSONResponse({"error": {"message": "bad endpoint/window"}}, status_code=400)
        if body.get("input_file_id") not in self.files:
            return JSONResponse({"error": {"message": "no such file"}}, status_code=400)
        bid = f"batch-{self.batches_created}"
        fate = (
            self.batch_fates[self.batches_created] if self.batches_created < len(self.batch_fates) else "ok"
        )
        self.batches_created += 1
        self.batches[bid] = {
            "id": bid,
            "status": "validating",
            "input": body["input_file_id"],
            "polls": 0,
            "fate": fate,
        }
        self.batch_sizes.append(len(self.files[body["input_file_id"]].splitlines()))
        return JSONResponse(self._public(self.batches[bid]))

    def _public(self, b: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in b.items() if k in ("id", "status", "output_file_id", "error_file_id")}

    def _finish(self, b: dict[str, Any]) -> None:
        lines = [json.loads(x) for x in self.files[b["input"]].splitlines()]
        if b["fate"] == "failed":
            b["status"] = "failed"
            return
        if b["fate"] == "expired":
            lines = lines[: len(lines) // 2]
        out, err = [], []
        for r in lines:
            msgs = r["body"]["messages"]
            if self.error_ids is not None and self.error_ids(msgs):
                err.append(
                    {
                        "custom_id": r["custom_id"],
                        "response": None,
                        "error": {"code": "server_error", "message": "x"},
                    }
                )
                continue
            choices = [
                {"index": j, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                for j, text in enumerate(self._batch_answers(r["body"]))
            ]
            body = {"choices": choices, "usage": {"completion_tokens": 7 * len(choices)}}
            out.append(
                {"custom_id": r["custom_id"], "response": {"status_code": 200, "body": body}, "error": None}
            )
        text = "".join(json.dumps(x) + "\n" for x in out)
        if b["id"] == "batch-0":
            text += "{not json\n" * self.malformed_lines
        b["output_file_id"] = f"file-out-{b['id']}"
        self.files[b["output_file_id"]] = text
        if err:
            b["error_file_id"] = f"file-err-{b['id']}"
            self.files[b["error_file_id"]] = "".join(json.dumps(x) + "\n" for x in err)
        b["status"] = "expired" if b["fate"] == "expired" else "completed"

    def _batch_answers(self, body: dict[str, Any]) -> list[str]:
        msgs = body["messages"]
        if self.answer is not None:
            return [self.answer(msgs)]
        content = json.dumps(msgs, sort_keys=True)
        out = []
        for j in range(int(body.get("n") or 1)):
            sampled = float(body.get("temperature") or 0) > 0
            draw = _uniform(f"{content}\x1f{body.get('seed')}", j) if sampled else None
            note = f" (draw {draw:.6f})" if draw is not None else ""
            out.append(
                f"<think>\nok{note}\n\nWait, fine.\n\nI will help.\n</think>\n\nanswer to {msgs[-1]['content']}"
            )
        return out

    async def _get(self, request: Request) -> JSONResponse:
        b = self.batches.get(request.path_params["bid"])
        if b is None:
            return JSONResponse({"error": {"message": "no such batch"}}, status_code=404)
        self.polls += 1
        b["polls"] += 1
        if b["status"] not in ("completed", "failed", "expired"):
            if b["polls"] >= self.polls_to_complete:
                self._finish(b)
            else:
                b["status"] = "in_progress"
        return JSONResponse(self._public(b))

    async def _content(self, request: Request) -> Any:
        from starlette.responses import PlainTextResponse

        fid = request.path_params["fid"]
        if fid not in self.files:
            return JSONResponse({"error": {"message": "no such file"}}, status_code=404)
        return PlainTextResponse(self.files[fid])

    def start(self) -> FakeBatchServer:
        app = Starlette(
            routes=[
                Route("/v1/files", self._upload, methods=["POST"]),
                Route("/v1/files/{fid}/content", self._content, methods=["GET"]),
                Route("/v1/batches", self._create, methods=["POST"]),
                Route("/v1/batches/{bid}", self._get, methods=["GET"]),
            ]
        )
        self._serve(app)
        return self
