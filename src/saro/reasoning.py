"""The reasoning format: ``<think>\\n{steps}\\n</think>\\n{answer}``.

Steps are paragraphs separated by blank lines; a step that starts with "Wait" is a reflection. Parsing is robust
to what real models emit: no tags at all, a missing opening tag (templates that put ``<think>`` in the prompt),
an unclosed tag (ran out of tokens while thinking), and repeated or nested tags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

ParseStatus = Literal["ok", "no_think", "missing_open", "unclosed", "repeated", "nested"]

_REFLECTION = re.compile(r"^\s*(\*\*)?wait\b", re.IGNORECASE)
_TAG = re.compile(r"</?think>")


@dataclass(frozen=True)
class Parsed:
    """A parsed assistant turn. ``reasoning`` is None when there was no think block at all."""

    reasoning: str | None
    answer: str
    status: ParseStatus
    steps: list[str] = field(default_factory=list)

    @property
    def has_reasoning(self) -> bool:
        return bool(self.reasoning and self.reasoning.strip())

    @property
    def finished(self) -> bool:
        """False when the reasoning was never closed (no final answer was produced)."""
        return self.status != "unclosed"

    @property
    def reflections(self) -> list[int]:
        """Indices of the steps that are reflections ("Wait, ...")."""
        return [i for i, s in enumerate(self.steps) if is_reflection(s)]


def render(steps: list[str], answer: str) -> str:
    """Render reasoning steps and an answer in the canonical format."""
    body = "\n\n".join(s.strip() for s in steps if s.strip())
    return f"{THINK_OPEN}\n{body}\n{THINK_CLOSE}\n{answer.strip()}"


def split_steps(reasoning: str | None) -> list[str]:
    """Split reasoning into steps: paragraphs separated by blank lines, or lines when there are no blank lines."""
    if not reasoning:
        return []
    text = _TAG.sub("", reasoning).strip()
    if not text:
        return []
    parts = re.split(r"\n\s*\n", text)
    if len(parts) == 1:
        parts = text.split("\n")
    return [p.strip() for p in parts if p.strip()]


def is_reflection(step: str) -> bool:
    """A reflection step starts with "Wait" (optionally bold), as in "Wait, ...", "Wait - ...", "Wait...")."""
    return bool(_REFLECTION.match(step))


def parse(text: str) -> Parsed:
    """Split an assistant turn into reasoning and answer.

    - no tags: no reasoning, the whole text is the answer (``no_think``);
    - ``</think>`` without ``<think>``: the text before it is the reasoning (``missing_open``);
    - ``<think>`` without ``</think>``: everything after it is reasoning, the answer is empty (``unclosed``);
    - several blocks or nested tags: the reasoning runs from the first ``<think>`` to the last ``</think>``
      (inner tags removed) and the answer is what follows (``repeated`` / ``nested``).
    """
    opens = [m.start() for m in re.finditer(re.escape(THINK_OPEN), text)]
    closes = [m.start() for m in re.finditer(re.escape(THINK_CLOSE), text)]
    if not opens and not closes:
        return Parsed(None, text.strip(), "no_think")
    if not opens:
        last = closes[-1]
        reasoning = _TAG.sub("", text[:last])
        status: ParseStatus = "missing_open" if len(closes) == 1 else "repeated"
        return _mk(reasoning, text[last + len(THINK_CLOSE) :], status)
    first = opens[0]
    closes_after = [c for c in closes if c > first]
    if not closes_after:
        reasoning = _TAG.sub("", text[first + len(THINK_OPEN) :])
        return _mk(reasoning, "", "unclosed")
    last = closes_after[-1]
    inner = text[first + len(THINK_OPEN) : last]
    answer = text[last + len(THINK_CLOSE) :]
    status = "ok" if len(opens) == 1 and len(closes) == 1 else _classify_multi(text[first:])
    return _mk(_TAG.sub("", inner), answer, status)


def _classify_multi(text: str) -> ParseStatus:
    depth = 0
    for m in _TAG.finditer(text):
        if m.group(0) == THINK_OPEN:
            depth += 1
            if depth > 1:
                return "nested"
        else:
            depth = max(0, depth - 1)
    return "repeated"


def _mk(reasoning: str, answer: str, status: ParseStatus) -> Parsed:
    reasoning = reasoning.strip()
    return Parsed(reasoning, _TAG.sub("", answer).strip(), status, split_steps(reasoning))


def close_reasoning(partial: str) -> str:
    """A partial turn with its think block closed, ready for the model to continue with the answer (used when a
    reasoning budget runs out)."""
    if THINK_CLOSE in partial:
        return partial
    if THINK_OPEN not in partial:
        partial = THINK_OPEN + "\n" + partial
    return partial.rstrip() + "\n" + THINK_CLOSE + "\n"


def count_tokens(text: str, tokenizer: Any) -> int:
    """Token count of ``text`` without special tokens."""
    if not text:
        return 0
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def token_counts(text: str, tokenizer: Any) -> tuple[int, int]:
    """(reasoning tokens, answer tokens) of an assistant turn."""
    p = parse(text)
    return count_tokens(p.reasoning or "", tokenizer), count_tokens(p.answer, tokenizer)
