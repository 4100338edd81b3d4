"""The offline step judge: which way each reasoning step leans, and where a trajectory first drifts.

A step leans toward refusing, toward helping, or neither, by weighted phrase lists with overrides for phrases whose
"harm" words argue for helping ("does not make it harmful") and the reverse. SRPO uses it to find the earliest
drifting step of a wrong trajectory (``synth_srpo.step_judge: offline``, the default).
"""

from __future__ import annotations

import logging
import re
from typing import Literal

from saro.reasoning import Parsed

log = logging.getLogger(__name__)

Stance = Literal["refuse", "help", "neutral"]

# ------------------------------------------------------------------------------------------- step judging

_REFUSE = [
    r"\bnot allow",
    r"\bdoes not allow",
    r"\brules? out\b",
    r"\bdecline\b",
    r"\brefus",
    r"\bcan'?t help\b",
    r"\bcannot help\b",
    r"\bwon'?t help\b",
    r"\bmust not\b",
    r"\bshould not (help|answer|assist)\b",
    r"\bunsafe\b",
    r"\bonly matters? if\b",
    r"\bintend to carry\b",
    r"\bharmful capability\b",
    r"\bnot for understanding\b",
    r"\breal help toward harm\b",
    r"\bdangerous\b",
    r"\bharm(ful)?\b",
    r"\bviolat",
    r"\billegal\b",
    r"\bput people at risk\b",
]
_HELP = [
    r"\bbenign\b",
    r"\bharmless\b",
    r"\bno safety concern",
    r"\ballows?\b",
    r"\bi will help\b",
    r"\bso i will help\b",
    r"\bhelpful answer\b",
    r"\banswer (it )?(directly|fully)\b",
    r"\bwidely available\b",
    r"\beducational\b",
    r"\blegitimate\b",
    r"\bnone of my policy categories\b",
    r"\bnormal request\b",
    r"\beveryday\b",
    r"\bover-?refus",
    r"\bjust help\b",
    r"\bcan (simply )?help\b",
    r"\bsafe to\b",
]
# phrases whose "harm" words argue for helping ("does not make it harmful", "no real uplift toward harm")
_HELP_OVERRIDES = [
    r"\bover-?refus",
    r"\breacting to (the word|how)",
    r"\bnot (make|mean)[^.]*harm",
    r"\bno (real )?uplift\b",
    r"\bnothing here gives\b",
    r"\bnot .*over-?refus",
    r"\bwould be (wrong|unhelpful)\b",
    r"\bsounds? (sensitive|risky|dangerous)",
    r"\blooks? (risky|dangerous)",
]
_REFUSE_OVERRIDES = [
    r"\bnot a harmless\b",
    r"\bwould (actually )?(give|hand over) real\b",
    r"\bdoes not change what is being asked\b",
    r"\bframing does not change\b",
    r"\bstill (me writing|produces)\b",
]


def step_stance(step: str) -> Stance:
    """Which way a reasoning step leans: toward refusing, toward helping, or neither (the offline step judge).

    A contrast ("..., but ...") is judged by what follows its last "but": "Someone could be curious, but the request
    asks for specifics only an attacker needs" leans toward refusing.
    """
    parts = re.split(r"\bbut\b", step.lower())
    if len(parts) > 1:
        tail = _stance(parts[-1])
        if tail != "neutral":
            return tail
    return _stance(step.lower())


def _stance(s: str) -> Stance:
    if any(re.search(p, s) for p in _REFUSE_OVERRIDES):
        return "refuse"
    if any(re.search(p, s) for p in _HELP_OVERRIDES):
        return "help"
    r = sum(1 for p in _REFUSE if re.search(p, s))
    h = sum(1 for p in _HELP if re.search(p, s))
    if r > h:
        return "refuse"
    if h > r:
        return "help"
    return "neutral"


def find_drift(parsed: Parsed, kind: str, verdict: str | None = None) -> int | None:
    """Index of the earliest step that drifts away from the right behaviour; ``len(steps)`` when only the final
    answer is wrong (think/answer inconsistency); None when the trajectory does not drift.

    Harmful prompts drift toward helping; benign and borderline prompts drift toward refusing.
    """
    wrong: Stance = "help" if kind == "harmful" else "refuse"
    for i, step in enumerate(parsed.steps):
        if step_stance(step) == wrong:
            return i
    want = "refused" if kind == "harmful" else "complied"
    if verdict is not None and verdict not in (want, "unparseable"):
        return len(parsed.steps)
    return None
