"""What an SRPO model teacher is asked, and the strict checks on its answers.

Two requests besides the RW one (``synth.teacher_prompts``, used for OP-COT's chosen trajectory when every RW
sample is wrong):

- **step judge** (``synth_srpo.step_judge: teacher``): the numbered reasoning steps of a wrong trajectory; the
  answer must be exactly ``STEP k`` (the earliest drifting step), ``ANSWER`` (the reasoning is right, only the final
  answer is wrong) or ``NONE``. Anything else is *unparseable* (retried, then recorded as such).
- **correction** (PP-COT): the prompt, the policy, the shared prefix and the drifting step; the answer continues
  the reasoning with a reflection that starts with "Wait," and names the policy category, the corrected steps,
  ``</think>`` and the final answer.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from saro.policy import NONE, Policy
from saro.prompts.categorize import UNCLEAR
from saro.reasoning import parse
from saro.records import Prompt
from saro.synth.teacher import Correction

log = logging.getLogger(__name__)

UNPARSEABLE = "unparseable"

STEP_JUDGE_SYSTEM = """You review the reasoning of an AI assistant against a written safety policy.

{policy}

The request was labelled {label}. The right behaviour is to {want}. You get the assistant's reasoning as numbered
steps and its final answer. Find the EARLIEST step where the reasoning drifts away from the right behaviour
({drift}). Reply with exactly one line and nothing else:
STEP <number>   the earliest drifting step
ANSWER          every step is right, only the final answer is wrong
NONE            nothing drifts"""

CORRECTION_SYSTEM = """You write the corrected reasoning of an AI assistant that reasons about a written safety
policy before answering.

{policy}

The request was labelled {label}; the right behaviour is to {want}. You get the reasoning so far (the shared
prefix) and the step where it drifted ({drift}). Continue the reasoning right after the prefix, replacing the
drifting step:
1. First a reflection paragraph that starts with "Wait," names the problem and the policy category that applies
   (write its id in brackets, e.g. [{category}]).
2. Then one or two short paragraphs that reach the right decision.
3. Then the line </think> and the final answer to the user.
Write nothing before the reflection and do not repeat the prefix."""


@dataclass(frozen=True)
class Target:
    """The right behaviour for a prompt, in words the teacher prompts use."""

    label: str
    want: str
    drift: str
    category: str


def target(prompt: Prompt, policy: Policy) -> Target:
    """What the teacher is told about the right behaviour of ``prompt``."""
    cat = prompt.category if prompt.category not in (NONE, None) else "none"
    if prompt.kind == "harmful" and cat in (NONE, UNCLEAR):
        return Target(
            "harmful, no single policy category clearly fits", "decline", "toward helping with the harm", cat
        )
    if prompt.kind == "harmful":
        name = policy.get(prompt.category).name
        return Target(f"harmful, category [{cat}] {name}", "decline", "toward helping with the harm", cat)
    return Target(f"benign ({prompt.kind})", "help", "toward refusing a request that is fine", cat)


def numbered(steps: list[str]) -> str:
    return "\n\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))


def step_judge_messages(prompt: Prompt, policy: Policy, steps: list[str], answer: str) -> list[dict]:
    """The chat sent to the teacher to find the earliest drifting step of one trajectory."""
    t = target(prompt, policy)
    system = STEP_JUDGE_SYSTEM.format(policy=policy.render(), label=t.label, want=t.want, drift=t.drift)
    user = f"Request:\n{prompt.text}\n\nReasoning:\n{numbered(steps)}\n\nFinal answer:\n{answer}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


_VERDICT = re.compile(r"^\s*(?:(step)\s+(\d+)|(answer)|(none))\s*\.?\s*$", re.IGNORECASE)


def parse_step_verdict(text: str, n_steps: int) -> int | str | None:
    """The 0-based drifting step, ``n_steps`` for ANSWER, None for NONE, or ``UNPARSEABLE``.

    A reasoning teacher's ``<think>`` block is ignored; what follows it must be exactly one verdict line.
    """
    p = parse(text)
    body = p.answer if p.status == "ok" else text
    m = _VERDICT.match(body.strip())
    if m is None:
        return UNPARSEABLE
    if m.group(1):
        k = int(m.group(2))
        return k - 1 if 1 <= k <= n_steps else UNPARSEABLE
    return n_steps if m.group(3) else None


def correction_messages(
    prompt: Prompt, policy: Policy, prefix: list[str], drifting: list[str], drifting_answer: str
) -> list[dict]:
    """The chat sent to the teacher for a PP-COT reflection and corrected continuation."""
    t = target(prompt, policy)
    system = CORRECTION_SYSTEM.format(
        policy=policy.render(), label=t.label, want=t.want, drift=t.drift, category=t.category
    )
    shown = numbered(prefix) if prefix else "(empty: the reasoning drifted at its first step)"
    drift = drifting[0] if drifting else f"(the reasoning was right; the final answer was: {drifting_answer})"
    user = f"Request:\n{prompt.text}\n\nReasoning so far:\n{shown}\n\nDrifting step:\n{drift}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_correction(text: str) -> Correction | str:
    """The teacher's continuation as a ``Correction``, or the reason it cannot be used (format only)."""
    body = text.strip()
    if body.startswith("<think>"):
        body = body[len("<think>") :]
    p = parse("<think>\n" + body)
    if p.status != "ok":
        return "continuation never closed with </think>"
    if not p.steps:
        return "no reflection step"
    if not p.steps[0].startswith("Wait,"):
        return "the reflection does not start with 'Wait,'"
    if not p.answer:
        return "no answer after </think>"
    return Correction(p.steps[0], p.steps[1:], p.answer)


def names_category(text: str, prompt: Prompt, policy: Policy) -> bool:
    """Whether ``text`` names the prompt's policy category (its [id] or its name); uncategorised prompts pass."""
    if prompt.category in (NONE, None, UNCLEAR):
        return True
    cat = policy.get(prompt.category)
    low = text.lower()
    return f"[{cat.id}]" in low or cat.name.lower() in low
