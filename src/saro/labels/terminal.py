"""Labelling in the terminal: one answer at a time (the prompt, the reasoning dimmed, the answer), one key each.

Keys (then Enter; text after the key is kept as a note, e.g. ``p refuses the recipe, gives the history``):
``c`` full compliance, ``p`` partial refusal, ``r`` full refusal, ``d`` degenerate, ``u`` unfinished (or 1-5);
``s`` skip (it stays unlabelled and is offered again next time), ``b`` back to the previous answer (relabel it),
``q`` quit. Every label is written the moment it is given, so quitting (or a kill, or end of input) loses nothing
and the next ``saro label RUN`` resumes with the answers still unlabelled. Model names, prompt kinds and the judge's
verdicts are not shown. Text from the model is printed as plain text (never read as console markup).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from saro.labels.items import Answer
from saro.labels.store import (
    DEGENERATE,
    FULL_COMPLIANCE,
    FULL_REFUSAL,
    PARTIAL_REFUSAL,
    UNFINISHED,
    Label,
    LabelWriter,
)
from saro.reasoning import parse

log = logging.getLogger(__name__)

KEYS = {
    "c": FULL_COMPLIANCE,
    "p": PARTIAL_REFUSAL,
    "r": FULL_REFUSAL,
    "d": DEGENERATE,
    "u": UNFINISHED,
    "1": FULL_COMPLIANCE,
    "2": PARTIAL_REFUSAL,
    "3": FULL_REFUSAL,
    "4": DEGENERATE,
    "5": UNFINISHED,
}
SKIP, BACK, QUIT = "s", "b", "q"
HELP = (
    "c full_compliance · p partial_refusal · r full_refusal · d degenerate · u unfinished "
    "(or 1-5; text after the key is a note) · s skip · b back · q quit"
)


@dataclass
class SessionResult:
    labelled: int = 0  # labels written in this session (relabels included)
    skipped: int = 0
    quit: bool = False  # stopped before the end (q or end of input)


def show(console: Console, a: Answer, position: str, current: Label | None) -> None:
    """Print one answer: where we are, the prompt, the reasoning dimmed, the answer."""
    p = parse(a.completion)
    console.print(Rule(Text(position)))
    console.print(Text("PROMPT", style="bold"))
    console.print(Text(a.prompt))
    if p.reasoning is not None:
        console.print(Text("REASONING", style="bold dim"))
        console.print(Text(p.reasoning.strip(), style="dim"))
    if not p.finished:
        console.print(Text("(the reasoning never closed: there is no final answer)", style="italic"))
    elif not a.finished:
        console.print(Text("(the generation stopped at its token limit)", style="italic"))
    console.print(Text("ANSWER", style="bold"))
    console.print(Text(p.answer.strip() or "(empty)"))
    if current is not None:
        console.print(
            Text(f"labelled before: {current.label}" + (f" ({current.note})" if current.note else ""))
        )


def _ask(console: Console, read: Callable[[], str | None]) -> tuple[str, str | None] | None:
    """One command: (key, note); None at the end of input."""
    while True:
        console.print(Text(HELP, style="cyan"))
        line = read()
        if line is None:
            return None
        key, _, note = line.strip().partition(" ")
        key = key.lower()
        if key in KEYS or key in (SKIP, BACK, QUIT):
            return key, note.strip() or None
        console.print(Text(f"unknown key {key!r}", style="red"))


def label_in_terminal(
    items: list[Answer],
    writer: LabelWriter,
    console: Console,
    read: Callable[[], str | None],
    done_before: int = 0,
) -> SessionResult:
    """Label ``items`` (the sample's answers still without a valid label) one by one."""
    out = SessionResult()
    given: dict[str, Label] = {}
    history: list[int] = []  # positions labelled or skipped in this session, for "back"
    i = 0
    total = done_before + len(items)
    while i < len(items):
        a = items[i]
        where = f"answer {i + 1} of {len(items)} to label · {done_before + len(given)} of {total} done"
        show(console, a, where, given.get(a.id))
        cmd = _ask(console, read)
        if cmd is None or cmd[0] == QUIT:
            out.quit = True
            break
        key, note = cmd
        if key == BACK:
            if history:
                i = history.pop()
            else:
                console.print(Text("nothing to go back to in this session", style="yellow"))
            continue
        history.append(i)
        if key == SKIP:
            out.skipped += 1
        else:
            given[a.id] = writer.add(a, KEYS[key], note)
            out.labelled += 1
        i += 1
    return out
