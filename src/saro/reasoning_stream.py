"""Streaming split of assistant text into reasoning and answer, as the pieces arrive.

The streaming twin of :func:`saro.reasoning.parse`: ``saro serve`` uses it for streamed deltas and ``saro chat``
for a model generated in process, so the chat needs nothing from the server.
"""

from __future__ import annotations

import logging
from typing import Literal

from saro.reasoning import THINK_CLOSE, THINK_OPEN

log = logging.getLogger(__name__)

Delta = tuple[str, str]  # ("reasoning" | "content", text)


def partial_suffix(text: str, tags: tuple[str, ...]) -> int:
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

    ``hold_untagged`` is for generation under a reasoning budget, where the generator closes the think block for
    a model that did not open one (``saro.reasoning.close_reasoning``): text that does not start with ``<think>``
    is held back until a ``</think>`` shows it was reasoning, or the end shows it was the answer. (The budget
    bounds what is held.)
    """

    _TAGS = (THINK_OPEN, THINK_CLOSE)

    def __init__(self, hold_untagged: bool = False) -> None:
        self.hold_untagged = hold_untagged
        self.state: Literal["start", "held", "reasoning", "content"] = "start"
        self.buf = ""  # undecided text (a tag may be starting)
        self.ws = ""  # whitespace held back: it is sent only if more text follows
        self.started = False  # leading whitespace of the current part has been skipped

    def feed(self, piece: str) -> list[Delta]:
        """The deltas that ``piece`` completes (text that may start a tag is held back)."""
        out: list[Delta] = []
        self.buf += piece
        if self.state == "start" and not self._start():
            return out
        if self.state == "held":
            if THINK_CLOSE not in self.buf:
                return out
            self.state = "reasoning"  # a missing opening tag: what came before the close was reasoning
        if self.state == "reasoning":
            self.buf = self.buf.replace(THINK_OPEN, "")
            end = self.buf.find(THINK_CLOSE)
            if end < 0:
                self._emit_safe("reasoning", out)
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
        self._emit_safe("content", out)
        return _merge(out)

    def flush(self) -> list[Delta]:
        """The rest at the end of the text (a partial tag is text after all; trailing whitespace is dropped)."""
        out: list[Delta] = []
        kind = "reasoning" if self.state == "reasoning" else "content"
        text = self.buf if self.state != "held" else self.buf.replace(THINK_OPEN, "")
        self._emit(kind, text.rstrip(), out)
        self.buf, self.ws = "", ""
        return out

    def _start(self) -> bool:
        """Decide whether the turn opens with a think block; False while the head could still be ``<think>``."""
        head = self.buf.lstrip()
        if not head or (THINK_OPEN.startswith(head) and head != THINK_OPEN):
            return False
        if head.startswith(THINK_OPEN):
            self.state, self.buf = "reasoning", head[len(THINK_OPEN) :]
        else:
            self.state, self.buf = ("held" if self.hold_untagged else "content"), head
        return True

    def _emit_safe(self, kind: str, out: list[Delta]) -> None:
        keep = partial_suffix(self.buf, self._TAGS)
        self._emit(kind, self.buf[: len(self.buf) - keep], out)
        self.buf = self.buf[len(self.buf) - keep :]

    def _emit(self, kind: str, text: str, out: list[Delta]) -> None:
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


def _merge(deltas: list[Delta]) -> list[Delta]:
    merged: list[Delta] = []
    for kind, text in deltas:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    return merged
