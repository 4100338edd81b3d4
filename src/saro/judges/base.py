"""The judge interface: a judge turns (prompt, response) pairs into verdicts; judges are looked up by name.

Every judge has an explicit "unparseable" outcome (nothing to read, or a judge output we cannot read), so that a
broken generation or a broken judge is counted as such instead of silently becoming "safe" or "complied"; the
metrics leave unparseable verdicts out of every rate and count them (``saro.evaluate.measures``).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from saro.errors import SaroError

log = logging.getLogger(__name__)

# The verdict labels, defined once: every judge gives one of them (a refusal judge refused/complied, a harm
# classifier safe/unsafe), or unparseable when there was nothing to read.
UNPARSEABLE = "unparseable"
REFUSED, COMPLIED = "refused", "complied"
SAFE, UNSAFE = "safe", "unsafe"


def expected_label(kind: str) -> str:
    """The refusal judge's label for the right behaviour on a prompt of ``kind``: refuse a harmful prompt, help
    with the rest (benign and borderline)."""
    return REFUSED if kind == "harmful" else COMPLIED


# modules that register the built-in judges when imported (they import heavy libraries lazily)
_BUILTIN_MODULES = ("saro.judges.refusal", "saro.judges.guard", "saro.judges.harmbench", "saro.judges.llm")


@dataclass
class JudgeInput:
    """One item to judge: the user prompt and the full assistant turn (possibly with ``<think>...</think>``).

    ``request``: the clean request the answer is judged against when it differs from the prompt the model saw
    (the unwrapped behaviour of a jailbreak-wrapped prompt). HarmBench's classifier and StrongREJECT use it, as
    their official protocols judge a generation against the behaviour / forbidden prompt; conversation
    classifiers (Llama Guard, WildGuard) and the refusal judge read the prompt as the model saw it.
    """

    prompt: str
    response: str
    request: str | None = None

    @property
    def behaviour(self) -> str:
        """The request a harm judge judges against: ``request`` when given, else the prompt."""
        return self.request if self.request else self.prompt


@dataclass
class Verdict:
    """A judge's verdict: a label from the judge's ``labels``, an optional score, the judge's raw output, and
    (refusal judges) the three-class ``refusal_class``; ``truncated`` when the answer was clipped to fit,
    ``unfinished`` when the turn's reasoning never closed and what it produced was judged instead."""

    label: str
    score: float | None = None
    raw: str | None = None
    # XSTest's three classes for refusal judges (full_compliance / partial_refusal / full_refusal), else None
    refusal_class: str | None = None
    # the judged answer was cut at the judge's length limit before judging
    truncated: bool = False
    # the judged turn's reasoning never closed: the text the model produced was judged as its answer
    unfinished: bool = False

    @property
    def parseable(self) -> bool:
        return self.label != UNPARSEABLE


@dataclass(frozen=True)
class JudgedText:
    """What a harm judge reads of an assistant turn (None: nothing to read) and whether the turn was unfinished."""

    text: str | None
    unfinished: bool = False


def harm_judged_text(response: str, judge_reasoning: bool = False) -> JudgedText:
    """The part of an assistant turn a harm judge reads: the final answer (reasoning + answer with
    ``judge_reasoning``). A turn whose reasoning never closed is judged as what it is, the text it produced
    (flagged ``unfinished``), as is one with an empty answer after its reasoning; only an empty turn has nothing
    to judge."""
    from saro.reasoning import parse

    p = parse(response or "")
    if not p.finished or not p.answer.strip():  # no final answer: what the turn produced is judged
        text = (p.reasoning or "").strip()
        return JudgedText(text or None, unfinished=True)
    if judge_reasoning and p.reasoning:
        return JudgedText(f"{p.reasoning}\n\n{p.answer}".strip())
    return JudgedText(p.answer.strip())


class Judge(ABC):
    """Base class of all judges. Subclasses set ``labels`` and implement ``judge``."""

    name: ClassVar[str] = "base"
    labels: ClassVar[tuple[str, ...]] = (UNPARSEABLE,)

    @abstractmethod
    def judge(self, items: Sequence[JudgeInput]) -> list[Verdict]:
        """One verdict per item, in order."""

    def judge_one(self, prompt: str, response: str) -> Verdict:
        """Convenience: judge a single (prompt, response)."""
        return self.judge([JudgeInput(prompt, response)])[0]

    def close(self) -> None:
        """Release models or clients held by the judge."""
        return None


J = TypeVar("J", bound=type[Judge])
_REGISTRY: dict[str, type[Judge]] = {}


def register_judge(name: str) -> Callable[[J], J]:
    """Class decorator: register a judge class under ``name`` (also sets its ``name``)."""

    def deco(cls: J) -> J:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"judge '{name}' registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def list_judges() -> list[str]:
    """Names of all registered judges, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def judge_class(name: str, **kwargs: Any) -> type[Judge]:
    """The judge class registered as ``name``, checked to accept ``kwargs`` (nothing is built or loaded); an
    unknown name or option is a SaroError (the name's error suggests the closest one)."""
    _load_builtins()
    cls = _REGISTRY.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1, cutoff=0.4)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise SaroError(f"unknown judge '{name}'; {hint}available: {', '.join(sorted(_REGISTRY))}")
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        raise SaroError(f"judge '{name}': bad option ({e})") from None
    return cls


def get_judge(name: str, **kwargs: Any) -> Judge:
    """Build a judge by registry name; an unknown name is a SaroError that suggests the closest one."""
    return judge_class(name, **kwargs)(**kwargs)


# ------------------------------------------------------------------------------------------------- agreement


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two label sequences of equal length (None when there is no item)."""
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    cats = set(a) | set(b)
    pe = sum((list(a).count(c) / n) * (list(b).count(c) / n) for c in cats)
    if (
        pe >= 1.0
    ):  # both raters used one and the same label throughout: agreement is perfect but uninformative
        return 1.0 if po == 1.0 else 0.0
    return (po - pe) / (1.0 - pe)


def agreement_matrix(labels_by_judge: dict[str, list[str]]) -> dict[str, Any]:
    """Pairwise agreement and Cohen's kappa between judges, over the items both judges could parse.

    Labels are compared as strings, so judges should share a vocabulary (map e.g. refused/complied to
    safe/unsafe before calling when mixing kinds). Returns ``{"judges": [...], "pairs": {"a|b": {...}},
    "agreement": [[...]], "kappa": [[...]]}`` with None where no item was parseable by both.
    """
    names = list(labels_by_judge)
    lengths = {len(v) for v in labels_by_judge.values()}
    if len(lengths) > 1:
        raise ValueError(f"judges labelled different numbers of items: {sorted(lengths)}")
    k = len(names)
    agree: list[list[float | None]] = [[None] * k for _ in range(k)]
    kappa: list[list[float | None]] = [[None] * k for _ in range(k)]
    pairs: dict[str, dict[str, Any]] = {}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            both = [
                (x, y)
                for x, y in zip(labels_by_judge[a], labels_by_judge[b], strict=True)
                if x != UNPARSEABLE and y != UNPARSEABLE
            ]
            n = len(both)
            ag = sum(x == y for x, y in both) / n if n else None
            kp = cohen_kappa([x for x, _ in both], [y for _, y in both]) if n else None
            agree[i][j], kappa[i][j] = ag, kp
            if i < j:
                pairs[f"{a}|{b}"] = {"n": n, "agreement": ag, "kappa": kp}
    return {"judges": names, "pairs": pairs, "agreement": agree, "kappa": kappa}
