"""Labels through files, for scripts and for the HTML page: the blind sample as JSONL out, labels as JSONL in.

Export (``saro label RUN --export FILE``): one row per sampled answer, in presentation order, with what a person
needs and nothing else: ``id``, ``prompt``, ``reasoning`` (null without a think block), ``answer``, ``finished``
(false when the reasoning never closed or the generation hit its token limit), ``response_sha256``, and ``label`` / ``note`` (the current label, or null).
No model name, prompt kind or judge verdict.

Import (``saro label RUN --import FILE``): one row per label, ``{"id", "label"}`` plus optional ``note`` and
``response_sha256`` (the hash of the text that was read: a label given to an older answer is then stored as
stale, not attached to the new one); the other export keys are allowed, so a filled-in export imports as it is, and
a row whose label is null is left unlabelled (and counted). The whole file is checked before anything is written:
a wrong key, an unknown label or id, an id given twice or an empty file is one error naming the file and line.
Importing the same file again adds nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saro.errors import DataError
from saro.labels.items import Answer
from saro.labels.store import LABELS, Label, LabelWriter
from saro.reasoning import parse
from saro.records import iter_jsonl, write_jsonl_atomic

log = logging.getLogger(__name__)

REQUIRED = ("id", "label")
OPTIONAL = ("note", "response_sha256")
EXPORT_ONLY = ("prompt", "reasoning", "answer", "finished")
IMPORT_KEYS = (*REQUIRED, *OPTIONAL, *EXPORT_ONLY)


def export_row(a: Answer, current: Label | None) -> dict[str, Any]:
    """One blind row of the export (the HTML page embeds the same rows)."""
    p = parse(a.completion)
    return {
        "id": a.id,
        "prompt": a.prompt,
        "reasoning": p.reasoning,
        "answer": p.answer,
        "finished": a.finished and p.finished,
        "response_sha256": a.response_sha256,
        "label": current.label if current else None,
        "note": current.note if current else None,
    }


def export_sample(path: Path, sample: list[Answer], valid: dict[str, Label]) -> int:
    """Write the blind sample as JSONL (atomically); returns the number of rows."""
    return write_jsonl_atomic(path, (export_row(a, valid.get(a.id)) for a in sample))


@dataclass(frozen=True)
class ImportRow:
    """One checked row of an import file."""

    answer: Answer
    label: str | None
    note: str | None
    response_sha256: str | None


@dataclass
class ImportResult:
    added: int = 0
    unchanged: int = 0  # same label, note and answer as the newest one already stored
    unlabelled: int = 0  # rows with label null
    stale: int = 0  # added, but given to an older answer than the run's


def _check_row(path: Path, line: int, row: dict[str, Any], answers: dict[str, Answer]) -> ImportRow:
    unknown = sorted(set(row) - set(IMPORT_KEYS))
    if unknown:
        raise DataError(path, line, f"unknown key(s) {unknown}; a label row has {list(REQUIRED + OPTIONAL)}")
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise DataError(path, line, f'missing key(s) {missing}; a label row is {{"id": ..., "label": ...}}')
    rid, label = row["id"], row["label"]
    if not isinstance(rid, str) or rid not in answers:
        raise DataError(path, line, f"id {rid!r} is not a labellable answer of this run")
    if label is not None and label not in LABELS:
        raise DataError(path, line, f"label {label!r} is not one of {', '.join(LABELS)}")
    note, digest = row.get("note"), row.get("response_sha256")
    for key, v in (("note", note), ("response_sha256", digest)):
        if v is not None and not isinstance(v, str):
            raise DataError(path, line, f"{key} must be a string or null")
    return ImportRow(answers[rid], label, note or None, digest or None)


def read_import(path: Path, answers: list[Answer]) -> list[ImportRow]:
    """Every row of an import file, checked (nothing is written when one is wrong)."""
    by_id = {a.id: a for a in answers}
    rows: list[ImportRow] = []
    seen: dict[str, int] = {}
    for line, obj in iter_jsonl(path):
        row = _check_row(path, line, obj, by_id)
        if row.answer.id in seen:
            raise DataError(
                path, line, f"id {row.answer.id} is labelled twice (first on line {seen[row.answer.id]})"
            )
        seen[row.answer.id] = line
        rows.append(row)
    if not rows:
        raise DataError(path, None, "no label rows (empty file)")
    return rows


def import_labels(
    path: Path, answers: list[Answer], newest: dict[str, Label], writer: LabelWriter
) -> ImportResult:
    """Store the labels of an import file; ``newest`` is the newest stored label per answer (any state)."""
    out = ImportResult()
    for row in read_import(path, answers):
        if row.label is None:
            out.unlabelled += 1
            continue
        digest = row.response_sha256 or row.answer.response_sha256
        old = newest.get(row.answer.id)
        if old and (old.label, old.note, old.response_sha256) == (row.label, row.note, digest):
            out.unchanged += 1
            continue
        writer.add(row.answer, row.label, row.note, digest)
        out.added += 1
        out.stale += digest != row.answer.response_sha256
    return out
