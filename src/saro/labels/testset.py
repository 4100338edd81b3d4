"""The labelled answers as a judge test set: one JSONL row per answer with a valid label, for
``bench/refusal_judge_accuracy.py`` (``tests/data/demo_labels.jsonl``).

Fields: ``model``, ``kind``, ``prompt`` (what the model was given, jailbreak wrapper included), ``response`` (the
whole assistant turn, reasoning included, as a judge receives it), ``label`` (full_compliance, partial_refusal,
full_refusal, degenerate or unfinished), plus ``group``, ``suite``, ``id`` and ``note``. The file holds answers to
harmful prompts: read it for metrics, never print it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from saro.labels.items import Answer
from saro.labels.store import Label
from saro.records import write_jsonl_atomic

log = logging.getLogger(__name__)


def write_testset(path: Path, answers: list[Answer], valid: dict[str, Label]) -> int:
    """Write every validly labelled answer (sorted by id, so the file is stable); returns the row count."""
    rows = [
        {
            "model": a.model,
            "kind": a.kind,
            "prompt": a.prompt,
            "response": a.completion,
            "label": valid[a.id].label,
            "group": a.group,
            "suite": a.suite,
            "id": a.id,
            "note": valid[a.id].note,
        }
        for a in sorted(answers, key=lambda a: a.id)
        if a.id in valid
    ]
    return write_jsonl_atomic(path, rows)
