"""Judges: refusal (rule-based), harmfulness classifiers (Llama-Guard-3, WildGuard), LLM-as-judge, StrongREJECT.

``get_judge(name, **options)`` builds one by registry name; ``judge_file`` labels any csv/jsonl of
(prompt, response) rows, resumably.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from saro.errors import DataError, SaroError
from saro.judges.base import (
    UNPARSEABLE,
    Judge,
    JudgeInput,
    Verdict,
    agreement_matrix,
    cohen_kappa,
    get_judge,
    judge_class,
    list_judges,
    register_judge,
)
from saro.records import JsonlWriter, atomic_write_text, iter_jsonl, read_csv_rows, read_rows, stable_id

log = logging.getLogger(__name__)

__all__ = [
    "UNPARSEABLE",
    "Judge",
    "JudgeInput",
    "Verdict",
    "agreement_matrix",
    "cohen_kappa",
    "get_judge",
    "judge_file",
    "list_judges",
    "register_judge",
]

ID, LABEL, SCORE, INPUT_ID = "id", "label", "score", "input_id"


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise SaroError(f"{path}: unsupported file type '{suffix or '(none)'}' (use .csv or .jsonl)")


def _read_input(path: Path, cols: tuple[str, ...]) -> list[tuple[int, dict[str, Any]]]:
    rows = read_csv_rows(path, cols) if _format(path) == "csv" else list(iter_jsonl(path))
    for line, row in rows:
        for c in cols:
            if c not in row:
                raise DataError(path, line, f"missing field '{c}'")
            if not isinstance(row[c], str):
                raise DataError(path, line, f"field '{c}' must be a string, not {type(row[c]).__name__}")
        if not row[cols[1]].strip():
            raise DataError(path, line, f"field '{cols[1]}' is empty (nothing to judge)")
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _verdict_row(row: dict[str, Any], v: Verdict) -> dict[str, Any]:
    """The input row plus the verdict's label, score, and (where the judge gives them) ``refusal_class``,
    ``truncated`` and ``unfinished``."""
    out = {**row, LABEL: v.label, SCORE: v.score}
    if v.refusal_class is not None:
        out["refusal_class"] = v.refusal_class
    if v.truncated:
        out["truncated"] = True
    if v.unfinished:
        out["unfinished"] = True
    return out


def judge_file(
    name: str,
    path: str | Path,
    out: str | Path,
    prompt_col: str = "prompt",
    response_col: str = "response",
    batch_size: int = 32,
    request_col: str | None = None,
    **judge_kwargs: Any,
) -> dict[str, Any]:
    """Label every (prompt, response) row of a csv/jsonl file with a judge; write the rows plus ``id``,
    ``label``, ``score`` (and ``refusal_class`` / ``truncated`` where the judge gives them) to ``out`` (jsonl or csv by its suffix).

    ``request_col``: a column holding the clean request (e.g. HarmBench's behaviour beside a jailbreak test case),
    which harm judges judge against (``JudgeInput.request``).

    Resumable: each row's id is a hash of its prompt and response; rows already in ``out`` are skipped (a csv
    output is built from a ``.partial.jsonl`` progress file that is removed once the csv is written). Identical
    (prompt, response) rows are judged and written once. Returns counts and the label distribution.
    """
    judge_class(name, **judge_kwargs)  # an unknown judge or option fails before any file is read or written
    path, out = Path(path), Path(out)
    out_fmt = _format(out)
    cols = (prompt_col, response_col)
    rows = _read_input(path, (*cols, request_col) if request_col else cols)

    progress = out if out_fmt == "jsonl" else out.with_name(out.name + ".partial.jsonl")
    if out_fmt == "csv" and out.exists() and not progress.exists():
        # resume from a finished csv: carry its judged rows over as progress
        with JsonlWriter(progress, fsync=False) as w:
            for _, r in read_csv_rows(out, (ID, LABEL)):
                if r[ID] and r[ID] not in w:
                    r[SCORE] = float(r[SCORE]) if r.get(SCORE) not in (None, "") else None
                    w.write(r)

    todo: list[dict[str, Any]] = []
    seen: set[str] = set()
    duplicates = already = 0
    with JsonlWriter(progress) as writer:
        for _, row in rows:
            rid = stable_id(row[prompt_col], row[response_col])
            if rid in seen:
                duplicates += 1
                continue
            seen.add(rid)
            if rid in writer:
                already += 1
                continue
            rec = dict(row)
            if ID in rec and rec[ID] != rid:
                rec[INPUT_ID] = rec.pop(ID)
            rec[ID] = rid
            todo.append(rec)
        if duplicates:
            log.warning("%s: %d duplicate (prompt, response) rows judged once", path, duplicates)
        if todo:
            judge = get_judge(name, **judge_kwargs)
            try:
                for b in range(0, len(todo), max(1, batch_size)):
                    batch = todo[b : b + batch_size]
                    inputs = [
                        JudgeInput(r[prompt_col], r[response_col], r[request_col] if request_col else None)
                        for r in batch
                    ]
                    for r, v in zip(batch, judge.judge(inputs), strict=True):
                        writer.write(_verdict_row(r, v))
                    log.info("%s: judged %d / %d rows", name, min(b + batch_size, len(todo)), len(todo))
            finally:
                judge.close()

    done = [r for r in read_rows(progress) if r.get(ID) in seen]
    if out_fmt == "csv":
        _write_csv(out, done)
        progress.unlink(missing_ok=True)
    labels = Counter(str(r.get(LABEL)) for r in done)
    classes = Counter(str(r["refusal_class"]) for r in done if r.get("refusal_class"))
    return {
        "judge": name,
        "input": str(path),
        "output": str(out),
        "rows": len(rows),
        "unique": len(seen),
        "duplicates": duplicates,
        "judged": len(todo),
        "already_done": already,
        "labels": dict(sorted(labels.items())),
        **({"refusal_classes": dict(sorted(classes.items()))} if classes else {}),
    }
