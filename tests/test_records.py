"""Record schemas and JSONL I/O: append + flush, torn-line repair, resume by id, atomic writes, errors."""

from __future__ import annotations

import json

import pytest

from saro.errors import DataError
from saro.records import (
    JsonlWriter,
    Prompt,
    atomic_write_json,
    read_ids,
    read_json,
    read_jsonl,
    stable_id,
    write_jsonl_atomic,
)


def test_stable_id_is_stable_and_order_sensitive():
    assert stable_id("a", 1) == stable_id("a", 1)
    assert stable_id("a", 1) != stable_id(1, "a")
    assert len(stable_id("x")) == 16


def test_prompt_make_ids():
    a = Prompt.make("How?", "benign", "src")
    b = Prompt.make("How?", "benign", "src", attack="poem")
    assert a.id != b.id
    assert Prompt.make("How?", "benign", "src").id == a.id


def test_writer_appends_and_resumes(tmp_path):
    p = tmp_path / "x.jsonl"
    with JsonlWriter(p) as w:
        w.write({"id": "1", "v": 1})
        w.write({"id": "2", "v": 2})
    with JsonlWriter(p) as w:
        assert "1" in w and "2" in w
        with pytest.raises(ValueError, match="duplicate"):
            w.write({"id": "1"})
        w.write({"id": "3"})
    assert read_ids(p) == ["1", "2", "3"]


def test_writer_repairs_torn_last_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": "1"}\n{"id": "2", "v": [1, 2')  # killed mid-write
    with JsonlWriter(p) as w:
        assert w.ids == {"1"}
        w.write({"id": "2"})
    assert read_ids(p) == ["1", "2"]


def test_read_jsonl_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": "a", "text": "t", "kind": "benign", "source": "s"}\n{not json}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        read_jsonl(p, Prompt)
    p.write_text('{"id": "a", "text": "t", "kind": "evil", "source": "s"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: kind"):
        read_jsonl(p, Prompt)
    p.write_text('{"id": "a", "text": "t", "kind": "benign", "source": "s", "typo": 1}\n')
    with pytest.raises(DataError, match=r"typo"):
        read_jsonl(p, Prompt)
    p.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(DataError, match="UTF-8"):
        read_jsonl(p, Prompt)


def test_atomic_writes(tmp_path):
    p = tmp_path / "a" / "f.json"
    atomic_write_json(p, {"x": 1})
    assert read_json(p) == {"x": 1}
    n = write_jsonl_atomic(tmp_path / "r.jsonl", [{"id": "1"}, Prompt.make("t", "benign", "s")])
    assert n == 2
    assert next(json.loads(x)["id"] for x in (tmp_path / "r.jsonl").read_text().splitlines()) == "1"
    assert not list(tmp_path.glob(".*.tmp"))
