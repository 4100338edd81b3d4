"""Text helpers that read a request's own words: its gist, the policy clause it shares most words with, the
policy keyword that makes it look risky, and the unwrapped request of a jailbreak-wrapped prompt.

Used by the offline teacher (``saro.synth.teacher``) and by the prefill suite (``saro.prompts.prefill``), so they
sit in the prompts layer below both.
"""

from __future__ import annotations

import re

from saro.policy import Policy
from saro.records import Prompt

__all__ = ["base_text", "best_clause", "gist", "trigger_in_context", "trigger_word"]

_STOP = frozenset(
    re.findall(
        r"\w+",
        """
        a an the and or of to in on for with how do does did i me my you your can could would should what is
        are be it this that about from into by at as give write make create provide explain tell detailed
        step steps instructions guide list some any way ways someone people without
        """,
    )
)


def gist(text: str, max_words: int = 16) -> str:
    """A short restatement of a request: its first sentence, trimmed."""
    t = " ".join(text.strip().split())
    first = re.split(r"(?<=[.?!])\s", t, maxsplit=1)[0]
    words = first.rstrip(".?!:;").split()
    out = " ".join(words[:max_words])
    if len(words) > max_words:
        out += " ..."
    return out[:1].lower() + out[1:] if out[:2] != out[:2].upper() else out


def _words(text: str) -> set[str]:
    """Content-word stems (first 5 letters), so "violence"/"violent" and "weapon"/"weapons" match."""
    return {w[:5] for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOP and len(w) > 2}


def best_clause(text: str, clauses: list[str], fallback: str | None = None) -> str:
    """The policy clause sharing the most content words with the request; ``fallback`` (or the first clause)
    when none shares any."""
    ws = _words(text)
    scores = [len(ws & _words(c)) for c in clauses]
    best = max(range(len(clauses)), key=lambda i: (scores[i], -i))
    if scores[best] == 0 and fallback:
        return fallback
    return clauses[best]


def trigger_word(text: str, policy: Policy) -> str | None:
    """A policy keyword that occurs in the text (what could make a benign prompt *look* risky)."""
    low = text.lower()
    for c in policy.categories:
        for k in c.keywords:
            if re.search(r"\b" + re.escape(k.lower()) + r"\w*", low):
                return k
    return None


def trigger_in_context(text: str, policy: Policy) -> tuple[str, str] | None:
    """The risky-looking word as the prompt writes it and the few words after it ("kill", "a stuck Python
    process"): what shows the benign sense. None when no policy keyword occurs."""
    low = text.lower()
    for c in policy.categories:
        for k in c.keywords:
            m = re.search(r"\b" + re.escape(k.lower()) + r"\w*", low)
            if m:
                after = re.split(r"[.,;:?!\n]", text[m.end() :], maxsplit=1)[0].split()[:5]
                while after and after[-1].lower() in _STOP:
                    after.pop()
                return text[m.start() : m.end()], " ".join(after)
    return None


def base_text(prompt: Prompt) -> str:
    """The unwrapped request of a (possibly jailbreak-wrapped) prompt."""
    return prompt.meta.get("base_text") or prompt.text
