"""Where the Batch API keeps its files and batches: a folder that survives a server restart.

``files/<id>`` holds a file's bytes and ``files/<id>.json`` its OpenAI file object; ``batches/<id>.json`` holds a
batch object and ``batches/<id>.answers.jsonl`` the answers written so far (one line per request, appended as each
finishes), so a batch cut short by a stopped server goes on from there. Every object is written atomically.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any

from saro.records import atomic_write_json
from saro.serve.schema import ApiError

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # ids name files on disk: nothing that could leave the folder


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


class BatchStore:
    """Files and batch objects in ``root`` (created if missing)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.files_dir = self.root / "files"
        self.batches_dir = self.root / "batches"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.batches_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------------------ files

    def add_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        """Store a file and return its OpenAI file object."""
        fid = new_id("file-")
        (self.files_dir / fid).write_bytes(content)
        obj = {
            "id": fid,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        atomic_write_json(self.files_dir / f"{fid}.json", obj)
        return obj

    def file(self, fid: str) -> dict[str, Any]:
        """A file object; 404 when there is none."""
        path = self.files_dir / f"{_checked(fid, 'file')}.json"
        if not path.is_file():
            raise ApiError(404, f"no file with id '{fid}'", "file_id", "not_found")
        return dict(json.loads(path.read_text(encoding="utf-8")))

    def content(self, fid: str) -> bytes:
        self.file(fid)
        return (self.files_dir / fid).read_bytes()

    def delete_file(self, fid: str) -> dict[str, Any]:
        self.file(fid)
        (self.files_dir / f"{fid}.json").unlink()
        (self.files_dir / fid).unlink(missing_ok=True)
        return {"id": fid, "object": "file", "deleted": True}

    def files(self) -> list[dict[str, Any]]:
        """Every file object, newest first."""
        objs = [json.loads(p.read_text(encoding="utf-8")) for p in self.files_dir.glob("*.json")]
        return sorted(objs, key=lambda o: (o["created_at"], o["id"]), reverse=True)

    # ---------------------------------------------------------------------------------------------- batches

    def save(self, batch: dict[str, Any]) -> None:
        atomic_write_json(self.batches_dir / f"{batch['id']}.json", batch)

    def batch(self, bid: str) -> dict[str, Any]:
        """A batch object; 404 when there is none."""
        path = self.batches_dir / f"{_checked(bid, 'batch')}.json"
        if not path.is_file():
            raise ApiError(404, f"no batch with id '{bid}'", "batch_id", "not_found")
        return dict(json.loads(path.read_text(encoding="utf-8")))

    def batches(self) -> list[dict[str, Any]]:
        """Every batch object, newest first."""
        objs = [json.loads(p.read_text(encoding="utf-8")) for p in self.batches_dir.glob("*.json")]
        return sorted(objs, key=lambda o: (o["created_at"], o["id"]), reverse=True)

    def answers_path(self, bid: str) -> Path:
        return self.batches_dir / f"{bid}.answers.jsonl"


def _checked(oid: str, what: str) -> str:
    if not _ID.match(oid):
        raise ApiError(404, f"no {what} with id '{oid[:80]}'", f"{what}_id", "not_found")
    return oid
