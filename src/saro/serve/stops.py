"""Stop sequences on streamed text: cut at the first one, hold back text that may be the start of one."""

from __future__ import annotations

import logging

from saro.reasoning_stream import partial_suffix

log = logging.getLogger(__name__)


def find_stop(text: str, stops: list[str]) -> int | None:
    """Index of the earliest stop sequence in ``text``, or None."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


class StopScanner:
    """Cuts streamed text at the first stop sequence; holds back text that may be the start of one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.buf = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The part of ``piece`` (with what was held back) that can be sent now."""
        if self.stopped:
            return ""
        self.buf += piece
        cut = find_stop(self.buf, self.stops)
        if cut is not None:
            self.stopped = True
            out, self.buf = self.buf[:cut], ""
            return out
        keep = partial_suffix(self.buf, tuple(self.stops)) if self.stops else 0
        out, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep :]
        return out

    def flush(self) -> str:
        out, self.buf = ("" if self.stopped else self.buf), ""
        return out
