"""Record schemas shared by every stage, and the JSONL I/O that makes stages resumable.

Every record has a stable ``id`` (a hash of its content and provenance) that is carried through the pipeline.
Stages append records to JSONL files and flush after each one; a restarted stage reads the ids already written
and only does the rest. Final artefacts (stats, reports, manifests) are written atomically (temp file + rename).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from saro.errors import DataError

# Field names of the TRL dataset formats (conversational SFT and preference data).
MESSAGES = "messages"
PROMPT = "prompt"
CHOSEN = "chosen"
REJECTED = "rejected"
ROLE = "role"
CONTENT = "content"

Kind = Literal["harmful", "benign", "borderline"]
KINDS: tuple[str, ...] = ("harmful", "benign", "borderline")


def stable_id(*parts: object, n: int = 16) -> str:
    """A short, stable hex id from the given parts (order matters)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()[:n]


class Record(BaseModel):
    """Base class: unknown fields are errors, so a typo in a hand-edited file is caught."""

    model_config = ConfigDict(extra="forbid")

    id: str


class Prompt(Record):
    """One user prompt with its label. ``base_id`` is the unwrapped prompt's id for jailbreak-wrapped prompts."""

    text: str = Field(min_length=1)
    kind: Kind
    category: str = "none"
    source: str
    split: str = "train"
    attack: str | None = None
    base_id: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def make(cls, text: str, kind: str, source: str, **kw: Any) -> Prompt:
        """Build a prompt whose id hashes its text, kind, source and attack."""
        pid = stable_id(text, kind, source, kw.get("attack"))
        return cls(id=pid, text=text, kind=kind, source=source, **kw)  # type: ignore[arg-type]

    def messages(self, system: str | None = None) -> list[dict[str, str]]:
        msgs = [{ROLE: "system", CONTENT: system}] if system else []
        return [*msgs, {ROLE: "user", CONTENT: self.text}]


class Trajectory(Record):
    """One assistant turn (reasoning + answer) for a prompt, from a teacher or a policy model."""

    prompt_id: str
    sample: int = 0
    text: str
    generator: str
    status: str = "ok"
    meta: dict[str, Any] = Field(default_factory=dict)


class Judgement(Record):
    """A judge's verdict on one (prompt, response). ``label`` is judge-specific; "unparseable" is explicit.
    ``truncated`` / ``unfinished``: the verdict's own flags (the judge read a clipped answer / a turn whose
    reasoning never closed)."""

    record_id: str
    judge: str
    label: str
    score: float | None = None
    raw: str | None = None
    truncated: bool = False
    unfinished: bool = False


class SFTExample(Record):
    """A conversational SFT row (TRL ``messages`` format) with provenance in ``meta``."""

    messages: list[dict[str, str]]
    meta: dict[str, Any] = Field(default_factory=dict)


class PreferencePair(Record):
    """A conversational preference row (TRL ``prompt``/``chosen``/``rejected``) with metadata."""

    prompt: list[dict[str, str]]
    chosen: list[dict[str, str]]
    rejected: list[dict[str, str]]
    pair_type: str
    meta: dict[str, Any] = Field(default_factory=dict)


class EvalRecord(Record):
    """One generation of one model on one eval prompt, with the judges' labels. ``base_id`` is its prompt's
    (``Prompt.base_id``: prompts that share one are resampled together); records of an older saro have none and
    are given their prompt's when read (``saro.evaluate.eval.read_generations``)."""

    model: str
    suite: str
    prompt_id: str
    base_id: str | None = None
    text: str
    kind: Kind
    category: str = "none"
    attack: str | None = None
    completion: str
    reasoning_tokens: int = 0
    answer_tokens: int = 0
    finished: bool = True
    labels: dict[str, str] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)


R = TypeVar("R", bound=BaseModel)


# ---------------------------------------------------------------------------------------------------------- I/O


def _repair_tail(path: Path) -> None:
    """Drop a partial last line left by a kill in the middle of a write."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # scan back to the previous newline
        pos = size - 1
        chunk = 4096
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            buf = f.read(pos - start)
            idx = buf.rfind(b"\n")
            if idx >= 0:
                f.truncate(start + idx + 1)
                return
            pos = start
        f.truncate(0)


class JsonlWriter:
    """Append-only JSONL writer: one record per line, flushed (and fsynced) after each write.

    Opening repairs a torn last line; ``ids`` holds the ids already in the file so callers can skip them.
    Writing an id that is already present raises, so nothing is ever written twice.
    """

    def __init__(self, path: str | Path, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _repair_tail(self.path)
        self.ids: set[str] = set(read_ids(self.path)) if self.path.exists() else set()
        self._fsync = fsync
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __contains__(self, rid: str) -> bool:
        return rid in self.ids

    def write(self, record: BaseModel | dict[str, Any]) -> None:
        row = record.model_dump(mode="json") if isinstance(record, BaseModel) else record
        rid = row.get("id")
        if rid is None:
            raise ValueError(f"record without id written to {self.path}")
        if rid in self.ids:
            raise ValueError(f"duplicate id {rid} written to {self.path}")
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())
        self.ids.add(rid)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_csv_rows(
    path: Path, required: Sequence[str], what: str | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """(line, row) pairs of a csv whose leading ``#`` lines are comments. A missing column (``what`` names the
    format expected), a row with too many or too few fields, or malformed csv is a DataError naming the line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(path, None, f"not valid UTF-8 (byte offset {e.start})") from None
    lines = text.splitlines(True)
    skip = 0
    while skip < len(lines) and lines[skip].lstrip().startswith("#"):
        skip += 1
    reader = csv.DictReader(io.StringIO("".join(lines[skip:])))
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        lead = f"not {what}: " if what else ""
        raise DataError(path, skip + 1, f"{lead}missing column(s) {missing} (columns: {header})")
    out = []
    try:
        for row in reader:
            line = skip + reader.line_num
            if None in row:
                raise DataError(path, line, f"expected {len(header)} fields, found more")
            absent = [k for k, v in row.items() if v is None]
            if absent:
                raise DataError(path, line, f"expected {len(header)} fields, missing {absent}")
            out.append((line, dict(row)))
    except csv.Error as e:
        raise DataError(path, skip + reader.line_num, f"malformed csv ({e})") from None
    return out


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) from a JSONL file; a malformed line is a DataError naming file and line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(path, lineno, f"invalid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise DataError(path, lineno, "expected a JSON object")
                yield lineno, obj
    except UnicodeDecodeError as e:
        raise DataError(path, None, f"not valid UTF-8 (byte offset {e.start})") from None
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None


def read_jsonl(path: str | Path, model: type[R]) -> list[R]:
    """Read and validate every line of a JSONL file as ``model``."""
    out: list[R] = []
    for lineno, obj in iter_jsonl(path):
        try:
            out.append(model.model_validate(obj))
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"]) or "record"
            raise DataError(path, lineno, f"{loc}: {err['msg']}") from None
    return out


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file as plain dicts."""
    return [obj for _, obj in iter_jsonl(path)]


def read_ids(path: str | Path) -> list[str]:
    """Ids in a JSONL file, in order (a missing file has none)."""
    path = Path(path)
    if not path.exists():
        return []
    return [str(obj.get("id")) for _, obj in iter_jsonl(path)]


def write_jsonl_atomic(path: str | Path, rows: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Write a whole JSONL file atomically; returns the number of rows."""
    n = 0

    def lines() -> Iterator[str]:
        nonlocal n
        for r in rows:
            row = r.model_dump(mode="json") if isinstance(r, BaseModel) else r
            n += 1
            yield json.dumps(row, ensure_ascii=False) + "\n"

    atomic_write_text(path, "".join(lines()))
    return n


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, f"invalid JSON ({e.msg})") from None
