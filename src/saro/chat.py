"""``saro chat``: talk to a model in the terminal, the reasoning dimmed (or hidden) and the answer in plain text.

Works against a served API (``http(s)://...``, e.g. ``saro serve`` or vLLM; streamed over httpx) or a local model
(a folder or "embedded", generated in process). The history is kept for the session: earlier answers go back to
the model without their reasoning, as reasoning models expect. ``/reset`` clears the history, ``/exit`` quits.

The loop reads lines from any text stream and writes to any rich console, so a test can drive it with a script.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol, TextIO

import httpx
from rich.console import Console
from rich.text import Text

from saro.errors import SaroError
from saro.models.generate import Conversation, SamplingParams
from saro.reasoning_stream import ReasoningSplitter

log = logging.getLogger(__name__)

API_KEY_ENV = (
    "SARO_API_KEY"  # the variable ``saro serve`` reads (kept here so the chat needs nothing from it)
)

OnDelta = Callable[[str, str], None]  # (kind: "reasoning" | "content", text)
PROMPT = "you> "
HELP = "/reset clears the history, /exit quits"


class ChatBackend(Protocol):
    """Something that answers a conversation, reporting reasoning and answer deltas as they arrive."""

    label: str

    def reply(self, messages: Conversation, on_delta: OnDelta) -> None: ...

    def close(self) -> None: ...


class HTTPBackend:
    """An OpenAI-compatible server, streamed with httpx (reasoning from ``delta.reasoning``, or
    ``delta.reasoning_content`` on servers that use the former name)."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        params: SamplingParams | None = None,
        hide_reasoning: bool = False,
        timeout: float = 600.0,
    ) -> None:
        base = url.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout)
        self.params = params or SamplingParams()
        self.hide_reasoning = hide_reasoning
        self.model = model or self._first_model()
        self.label = f"{self.model} at {self.base}"

    def _first_model(self) -> str:
        try:
            r = self.client.get(f"{self.base}/models")
        except Exception as e:
            raise SaroError(f"cannot reach {self.base} ({type(e).__name__})") from None
        _check(r.status_code, r.text)
        data = r.json().get("data") or []
        if not data:
            raise SaroError(f"{self.base}/models lists no model; pass the model name")
        return str(data[0]["id"])

    def reply(self, messages: Conversation, on_delta: OnDelta) -> None:
        p = self.params
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "max_tokens": p.max_new_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
        }
        if self.hide_reasoning:
            body["include_reasoning"] = False
        if p.reasoning_budget:
            body["reasoning_budget"] = p.reasoning_budget
        try:
            self._stream(body, on_delta)
        except httpx.HTTPError as e:
            raise SaroError(f"request to {self.base} failed ({type(e).__name__})") from None

    def _stream(self, body: dict[str, Any], on_delta: OnDelta) -> None:
        with self.client.stream("POST", f"{self.base}/chat/completions", json=body) as r:
            if r.status_code != 200:
                _check(r.status_code, r.read().decode("utf-8", "replace"))
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    raise SaroError(f"server error: {event['error'].get('message')}")
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") or {}
                    reasoning = delta.get("reasoning") or delta.get("reasoning_content")
                    if reasoning:
                        on_delta("reasoning", reasoning)
                    if delta.get("content"):
                        on_delta("content", delta["content"])

    def close(self) -> None:
        self.client.close()


def _check(status: int, text: str) -> None:
    if status == 200:
        return
    try:
        message = json.loads(text)["error"]["message"]
    except Exception:
        message = text[:200]
    raise SaroError(f"HTTP {status}: {message}")


class LocalBackend:
    """A model loaded in this process (``backend``: hf or ct2), streamed token by token."""

    def __init__(self, source: str, params: SamplingParams | None = None, backend: str = "hf") -> None:
        from saro.models.backends import local_generator

        self.generator = local_generator(source, backend, batch_size=1)
        self.params = params or SamplingParams()
        self.label = source
        self._turn = 0

    def reply(self, messages: Conversation, on_delta: OnDelta) -> None:
        splitter = ReasoningSplitter(hold_untagged=self.params.reasoning_budget is not None)
        self._turn += 1
        params = replace(self.params, seed=self.params.seed + self._turn, n=1)

        def on_text(i: int, k: int, piece: str) -> None:
            for kind, text in splitter.feed(piece):
                on_delta(kind, text)

        self.generator.generate_rows([messages], [params], on_text=on_text)
        for kind, text in splitter.flush():
            on_delta(kind, text)

    def close(self) -> None:
        self.generator.close()


def make_backend(
    model_or_url: str,
    hide_reasoning: bool = False,
    params: SamplingParams | None = None,
    model_name: str | None = None,
    api_key: str | None = None,
    backend: str = "hf",
) -> ChatBackend:
    """An HTTP backend for ``http(s)://`` addresses, a local one (``backend`` hf or ct2) for a model folder or
    "embedded"."""
    if model_or_url.startswith(("http://", "https://")):
        return HTTPBackend(model_or_url, model_name, api_key, params, hide_reasoning)
    return LocalBackend(model_or_url, params, backend)


class _Printer:
    """Writes deltas to the console: reasoning dimmed, then a line break, then the answer."""

    def __init__(self, console: Console, hide_reasoning: bool) -> None:
        self.console, self.hide = console, hide_reasoning
        self.last: str | None = None
        self.answer: list[str] = []

    def __call__(self, kind: str, text: str) -> None:
        if kind == "reasoning":
            if self.hide:
                return
            self.console.print(Text(text, style="dim italic"), end="", soft_wrap=True)
        else:
            if self.last == "reasoning":
                self.console.print()
                self.console.print()
            self.answer.append(text)
            self.console.print(Text(text), end="", soft_wrap=True)
        self.last = kind

    def end(self) -> None:
        self.console.print()


def chat_loop(
    backend: ChatBackend,
    hide_reasoning: bool = False,
    system: str | None = None,
    input: TextIO | None = None,
    console: Console | None = None,
) -> list[dict[str, str]]:
    """Run the chat until ``/exit`` or the end of input; returns the history (for tests).

    ``input`` None reads the terminal (with a prompt); a stream is read line by line and echoed.
    """
    console = console or Console(highlight=False)
    start: Conversation = [{"role": "system", "content": system}] if system else []
    history: Conversation = list(start)
    console.print(Text(f"chatting with {backend.label} ({HELP})", style="bold"))
    while True:
        line = _read(input, console)
        if line is None:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            history = list(start)
            console.print(Text("(history cleared)", style="dim"))
            continue
        if line.startswith("/"):
            console.print(Text(f"unknown command {line.split()[0]} ({HELP})", style="yellow"))
            continue
        history.append({"role": "user", "content": line})
        printer = _Printer(console, hide_reasoning)
        try:
            backend.reply(list(history), printer)
        except SaroError as e:
            printer.end()
            console.print(Text(f"error: {e}", style="red"))
            history.pop()
            continue
        except KeyboardInterrupt:
            printer.end()
            console.print(Text("(interrupted)", style="dim"))
            history.pop()
            continue
        printer.end()
        history.append({"role": "assistant", "content": "".join(printer.answer)})
    return history


def _read(stream: TextIO | None, console: Console) -> str | None:
    if stream is None:
        try:
            return console.input(Text(PROMPT, style="bold cyan"))
        except (EOFError, KeyboardInterrupt):
            console.print()
            return None
    line = stream.readline()
    if not line:
        return None
    console.print(Text(PROMPT, style="bold cyan"), Text(line.rstrip("\n")), sep="")
    return line


def chat(
    model_or_url: str,
    hide_reasoning: bool = False,
    system: str | None = None,
    max_tokens: int = 1024,
    temperature: float = 0.2,
    top_p: float = 0.95,
    reasoning_budget: int | None = None,
    model_name: str | None = None,
    api_key: str | None = None,
    input: TextIO | None = None,
    console: Console | None = None,
    engine: str = "hf",
) -> list[dict[str, str]]:
    """``saro chat``: interactive chat with a served API (``http://...``) or a local model folder / "embedded"
    (run by ``engine``: hf or ct2)."""
    params = SamplingParams(
        max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, reasoning_budget=reasoning_budget
    )
    backend = make_backend(model_or_url, hide_reasoning, params, model_name, api_key, engine)
    try:
        return chat_loop(backend, hide_reasoning, system, input if input is not None else _stdin(), console)
    finally:
        backend.close()


def _stdin() -> TextIO | None:
    """None (read with a prompt) on a terminal; the piped stream otherwise."""
    return None if sys.stdin.isatty() else sys.stdin
