"""Streaming generated text row by row: token ids in, text pieces out, for ``saro serve`` and ``saro chat``.

``TextStreams`` decodes each row incrementally; a piece is the growth of the row's decoded text, held back while
it ends in an incomplete UTF-8 character, so the pieces of a row add up to the text the backend returns.
``GenerateStreamer`` feeds it from transformers' ``generate`` (whose streamer protocol is ``put(ids)`` once with
the prompt, then once per step with one token per row, then ``end()``); the CTranslate2 backend feeds it from its
per-token callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any

log = logging.getLogger(__name__)

RowCallback = Callable[[int, str], None]  # (caller's row index, text piece)


class TextStreams:
    """Incremental text of several rows: ``push(row, token)`` and ``end()`` call ``on_text(rows[row], piece)``.

    A row stops at its first end-of-turn token (``eos``): that token and anything after it are not text.
    """

    def __init__(
        self, tokenizer: Any, rows: Sequence[int], on_text: RowCallback, eos: Collection[int]
    ) -> None:
        self.tok = tokenizer
        self.rows = list(rows)  # batch row -> caller's row index
        self.on_text = on_text
        self.eos = set(eos)
        self.ids: list[list[int]] = [[] for _ in self.rows]
        self.sent = [0] * len(self.rows)
        self.done = [False] * len(self.rows)

    def push(self, row: int, token: int) -> None:
        if self.done[row]:
            return
        if token in self.eos:
            self.done[row] = True
            return
        self.ids[row].append(token)
        self._emit(row, final=False)

    def end(self) -> None:
        for r in range(len(self.rows)):
            self._emit(r, final=True)

    def _emit(self, r: int, final: bool) -> None:
        text = self.tok.decode(self.ids[r], skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):
            return
        piece = text[self.sent[r] :]
        if piece:
            self.sent[r] = len(text)
            self.on_text(self.rows[r], piece)


class GenerateStreamer:
    """A transformers ``generate`` streamer for a whole batch (transformers' own streamers take one row)."""

    def __init__(self, streams: TextStreams) -> None:
        self.streams = streams
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call carries the prompt ids
            self.prompt_seen = True
            return
        for r, t in enumerate(value.reshape(-1).tolist()):
            self.streams.push(r, int(t))

    def end(self) -> None:
        self.streams.end()
