"""Judges: refusal (rule-based), harmfulness classifiers (Llama-Guard-3, WildGuard), LLM-as-judge, StrongREJECT."""

from saro.judges.base import (
    UNPARSEABLE,
    Judge,
    JudgeInput,
    Verdict,
    agreement_matrix,
    get_judge,
    list_judges,
    register_judge,
)

__all__ = [
    "UNPARSEABLE",
    "Judge",
    "JudgeInput",
    "Verdict",
    "agreement_matrix",
    "get_judge",
    "list_judges",
    "register_judge",
]
