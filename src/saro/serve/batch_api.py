"""The OpenAI Batch API on ``saro serve``: ``/v1/files`` and ``/v1/batches``, answered by the server's own model.

A client uploads a JSONL file of requests (purpose ``batch``), creates a batch for ``/v1/chat/completions`` with a
``24h`` completion window, polls it, cancels it if it wants, and downloads the output and error files: the protocol
of OpenAI's Batch API, which the ``openai_batch`` backend speaks. The input is validated line by line (a bad line
fails the batch with the line named, as OpenAI does). Each request is checked like a live request and submitted
to the same :class:`~saro.serve.batching.BatchEngine`, a window of them at a time, so a batch's requests run in
real batches of up to ``max_batch_size`` rows, beside live traffic. Answers are appended as they finish; a batch
that was running when the server stopped goes on, from where it stopped, when a server starts on the same
``batch_dir``. Only sizes and ids are logged, never a request or answer text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from saro.records import JsonlWriter, read_rows, stable_id
from saro.serve.batch_store import BatchStore, new_id
from saro.serve.batching import BatchEngine, Job
from saro.serve.chat_api import chat_body, load_json, prepare_chat
from saro.serve.responses import wait
from saro.serve.schema import ApiError, Settings, validation_error

log = logging.getLogger(__name__)

ENDPOINTS = ("/v1/chat/completions",)
WINDOWS = {"24h": 24 * 3600}
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
MAX_LINE_ERRORS = 100  # a failed batch lists at most this many bad lines


@dataclass(frozen=True)
class BatchRequest:
    """One line of a batch input file."""

    line: int
    custom_id: str
    body: dict[str, Any]


class BatchInvalid(Exception):
    """The input file of a batch has bad lines: the batch fails with these errors (OpenAI error objects)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid lines")
        self.errors = errors


class CreateBatch(BaseModel):
    """The body of ``POST /v1/batches``."""

    model_config = ConfigDict(extra="forbid")
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = Field(None, max_length=16)


def parse_upload(raw: bytes, content_type: str) -> tuple[bytes, str, dict[str, str]]:
    """A multipart/form-data upload -> (file bytes, file name, the other fields); 400 when it is not one."""
    m = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not content_type.startswith("multipart/form-data") or not m:
        raise ApiError(400, "upload a file as multipart/form-data with the fields 'file' and 'purpose'")
    delimiter = b"--" + m.group(1).encode("latin-1")
    content: tuple[bytes, str] | None = None
    fields: dict[str, str] = {}
    for part in raw.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, sep, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise ApiError(400, "malformed multipart body (a part without headers)")
        data = data.removesuffix(b"\r\n")
        disposition = head.decode("latin-1")
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if name and name.group(1) == "file":
            content = (data, filename.group(1) if filename else "upload.jsonl")
        elif name:
            fields[name.group(1)] = data.decode("utf-8", "replace")
    if content is None:
        raise ApiError(400, "the upload has no 'file' field", "file")
    return content[0], content[1], fields


def _line_error(line: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def parse_requests(content: bytes, endpoint: str) -> list[BatchRequest]:
    """The requests of an input file; ``BatchInvalid`` naming every bad line (JSON, custom_id, method, url, body,
    one model for the whole file)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BatchInvalid([_line_error(0, "invalid_file", f"not UTF-8 (byte {e.start})")]) from None
    out: list[BatchRequest] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(_line_error(n, "invalid_json_line", f"invalid JSON ({e.msg})"))
            continue
        cid = obj.get("custom_id") if isinstance(obj, dict) else None
        body = obj.get("body") if isinstance(obj, dict) else None
        if not isinstance(obj, dict):
            errors.append(_line_error(n, "invalid_json_line", "a line must be a JSON object"))
        elif not isinstance(cid, str) or not cid:
            errors.append(_line_error(n, "missing_required_parameter", "custom_id is required", "custom_id"))
        elif cid in seen:
            errors.append(_line_error(n, "duplicate_custom_id", f"custom_id '{cid[:64]}' is used twice"))
        elif obj.get("method") != "POST":
            errors.append(_line_error(n, "invalid_method", "method must be POST", "method"))
        elif obj.get("url") != endpoint:
            msg = f"url '{obj.get('url')}' does not match the batch's endpoint '{endpoint}'"
            errors.append(_line_error(n, "mismatched_endpoint", msg, "url"))
        elif not isinstance(body, dict):
            errors.append(_line_error(n, "missing_required_parameter", "body must be an object", "body"))
        else:
            seen.add(cid)
            models.add(str(body.get("model")))
            out.append(BatchRequest(n, cid, body))
    if len(models) > 1:
        errors.append(_line_error(0, "mismatched_model", "every request of a batch must name the same model"))
    if not out and not errors:
        errors.append(_line_error(0, "empty_file", "the input file has no requests"))
    if errors:
        raise BatchInvalid(errors[:MAX_LINE_ERRORS])
    return out


def _now() -> int:
    return int(time.time())


class BatchAPI:
    """Batches of chat requests answered through the server's engine; state in ``root`` (a temporary folder,
    removed at shutdown, when None)."""

    def __init__(self, root: str | Path | None, settings: Settings, engine: BatchEngine, tok: Any) -> None:
        self._tmp: str | None = None
        if root is None:
            root = self._tmp = tempfile.mkdtemp(prefix="saro-batches-")
        self.store = BatchStore(root)
        self.settings, self.engine, self.tok = settings, engine, tok
        self.window = 2 * engine.max_batch_size  # requests in the engine's queue per batch at a time
        self.live: dict[str, dict[str, Any]] = {}  # batches being processed (the object the routes return)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Go on with every batch that was running when the server last stopped."""
        for b in self.store.batches():
            if b["status"] in ACTIVE:
                log.info("batch %s: resuming (%s)", b["id"], b["status"])
                self._spawn(b)

    async def stop(self) -> None:
        """Stop processing (batches stay in progress on disk, resumed by the next server on this folder)."""
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _spawn(self, batch: dict[str, Any]) -> None:
        bid = batch["id"]
        self.live[bid] = batch
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks[bid] = task

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.pop(bid, None)
            self.live.pop(bid, None)
            if not t.cancelled() and t.exception() is not None:
                log.error("batch %s: processing failed (%s)", bid, type(t.exception()).__name__)

        task.add_done_callback(done)

    # ------------------------------------------------------------------------------------------- routes

    def create(self, raw: bytes) -> dict[str, Any]:
        try:
            req = CreateBatch.model_validate(load_json(raw))
        except ValidationError as e:
            raise validation_error(e) from None
        if req.endpoint not in ENDPOINTS:
            raise ApiError(
                400, f"endpoint '{req.endpoint}' is not supported (use {ENDPOINTS[0]})", "endpoint"
            )
        if req.completion_window not in WINDOWS:
            raise ApiError(400, "completion_window must be '24h'", "completion_window")
        f = self.store.file(req.input_file_id)
        if f["purpose"] != "batch":
            raise ApiError(
                400, f"file '{f['id']}' has purpose '{f['purpose']}', not 'batch'", "input_file_id"
            )
        now = _now()
        batch: dict[str, Any] = {
            "id": new_id("batch_"),
            "object": "batch",
            "endpoint": req.endpoint,
            "errors": None,
            "input_file_id": req.input_file_id,
            "completion_window": req.completion_window,
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "expires_at": now + WINDOWS[req.completion_window],
            **dict.fromkeys(
                ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at"), None
            ),
            **dict.fromkeys(("cancelling_at", "cancelled_at"), None),
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": req.metadata,
        }
        self.store.save(batch)
        log.info("batch %s: created from %s (%d bytes)", batch["id"], f["id"], f["bytes"])
        self._spawn(batch)
        return batch

    def retrieve(self, bid: str) -> dict[str, Any]:
        return self.live.get(bid) or self.store.batch(bid)

    def cancel(self, bid: str) -> dict[str, Any]:
        batch = self.retrieve(bid)
        if batch["status"] not in ACTIVE:
            raise ApiError(409, f"batch {bid} is {batch['status']}; only a running batch can be cancelled")
        if batch["status"] != "cancelling":
            batch.update(status="cancelling", cancelling_at=_now())
            self.store.save(batch)
            log.info("batch %s: cancelling", bid)
        if bid not in self._tasks:
            self._spawn(batch)  # nothing is processing it (a resumed server): finalize now
        return batch

    def page(self, limit: int, after: str | None) -> dict[str, Any]:
        objs = [self.live.get(b["id"], b) for b in self.store.batches()]
        if after is not None:
            ids = [b["id"] for b in objs]
            objs = objs[ids.index(after) + 1 :] if after in ids else []
        page = objs[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(objs) > limit,
        }

    # ------------------------------------------------------------------------------------------- work

    async def _run(self, batch: dict[str, Any]) -> None:
        try:
            requests = parse_requests(self.store.content(batch["input_file_id"]), batch["endpoint"])
        except (BatchInvalid, ApiError) as e:
            errors = e.errors if isinstance(e, BatchInvalid) else [_line_error(0, "invalid_file", e.message)]
            batch.update(status="failed", failed_at=_now(), errors={"object": "list", "data": errors})
            self.store.save(batch)
            log.info("batch %s: failed validation (%d errors)", batch["id"], len(errors))
            return
        if batch["status"] == "validating":
            batch.update(status="in_progress", in_progress_at=_now())
            batch["request_counts"]["total"] = len(requests)
            self.store.save(batch)
            log.info("batch %s: %d requests", batch["id"], len(requests))
        if batch["status"] == "in_progress":
            await self._answer_all(batch, requests)
        self._finish(batch, requests)

    async def _answer_all(self, batch: dict[str, Any], requests: list[BatchRequest]) -> None:
        """Answer every request without a saved answer, at most ``window`` in the engine's queue at a time."""
        bid = batch["id"]
        counts = batch["request_counts"]
        gate = asyncio.Semaphore(self.window)
        with JsonlWriter(self.store.answers_path(bid), fsync=False) as w:
            rows = read_rows(w.path)
            counts["completed"] = sum(1 for r in rows if r["response"]["status_code"] == 200)
            counts["failed"] = len(rows) - counts["completed"]
            todo = [r for r in requests if _line_id(bid, r.custom_id) not in w]

            async def one(r: BatchRequest) -> None:
                async with gate:
                    if batch["status"] != "in_progress":
                        return
                    if time.time() > batch["expires_at"]:
                        batch.update(status="expired", expired_at=_now())
                        return
                    line = await self._answer(bid, r)
                w.write(line)
                counts["completed" if line["response"]["status_code"] == 200 else "failed"] += 1
                self.store.save(batch)

            await asyncio.gather(*(one(r) for r in todo))

    async def _answer(self, bid: str, r: BatchRequest) -> dict[str, Any]:
        """The output line of one request: the chat completion, or the error a live request would get."""
        try:
            prep = prepare_chat(json.dumps(r.body).encode(), self.settings, self.tok)
            if prep.stream:
                raise ApiError(400, "stream is not supported in a batch", "stream")
            job = Job(prep.conversation, prep.params, False, asyncio.get_running_loop())
            self.engine.submit(job)
            try:
                gens = await wait(job)
            except BaseException:
                job.cancelled = True  # the server is stopping: free its place in the engine's queue
                raise
            status, body = 200, chat_body(gens, prep, self.settings, self.tok)[0]
        except ApiError as e:
            status, body = e.status, e.body()
        response = {"status_code": status, "request_id": new_id("req_"), "body": body}
        return {
            "id": _line_id(bid, r.custom_id),
            "custom_id": r.custom_id,
            "response": response,
            "error": None,
        }

    def _finish(self, batch: dict[str, Any], requests: list[BatchRequest]) -> None:
        """Write the output and error files (in input order) and close the batch."""
        bid = batch["id"]
        path = self.store.answers_path(bid)
        rows = {row["custom_id"]: row for row in read_rows(path)} if path.exists() else {}
        out: list[dict[str, Any]] = []
        err: list[dict[str, Any]] = []
        for r in requests:
            row = rows.get(r.custom_id)
            if row is None and batch["status"] == "expired":
                error = {"code": "batch_expired", "message": "the batch expired before this request ran"}
                err.append({"id": _line_id(bid, r.custom_id), "custom_id": r.custom_id, "response": None,
                            "error": error})  # fmt: skip
            elif row is not None:
                (out if row["response"]["status_code"] == 200 else err).append(row)
        final = {"cancelling": "cancelled", "expired": "expired"}.get(batch["status"], "completed")
        batch.update(status="finalizing", finalizing_at=_now())
        for rows_, key, suffix in ((out, "output_file_id", "output"), (err, "error_file_id", "error")):
            if rows_:
                data = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows_).encode()
                batch[key] = self.store.add_file(data, f"{bid}_{suffix}.jsonl", f"batch_{suffix}")["id"]
        batch["request_counts"].update(completed=len(out), failed=len(err))
        batch.update(status=final, **{f"{final}_at": _now()})
        self.store.save(batch)
        log.info("batch %s: %s (%d answered, %d failed)", bid, final, len(out), len(err))


def _line_id(bid: str, custom_id: str) -> str:
    return f"batch_req_{stable_id(bid, custom_id)}"


def install_batch_routes(app: FastAPI, api: BatchAPI) -> None:
    """``/v1/files`` (upload, list, retrieve, delete, content) and ``/v1/batches`` (create, list, retrieve,
    cancel)."""

    @app.post("/v1/files")
    async def upload(request: Request) -> Response:
        data, filename, fields = parse_upload(await request.body(), request.headers.get("content-type", ""))
        if fields.get("purpose") != "batch":
            raise ApiError(400, "purpose must be 'batch' (the only use of files on this server)", "purpose")
        obj = api.store.add_file(data, filename, "batch")
        log.info("file %s: uploaded (%d bytes)", obj["id"], obj["bytes"])
        return JSONResponse(obj)

    @app.get("/v1/files")
    async def list_files() -> dict[str, Any]:
        return {"object": "list", "data": api.store.files()}

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str) -> dict[str, Any]:
        return api.store.file(file_id)

    @app.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str) -> dict[str, Any]:
        return api.store.delete_file(file_id)

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str) -> Response:
        return Response(api.store.content(file_id), media_type="application/octet-stream")

    @app.post("/v1/batches")
    async def create_batch(request: Request) -> dict[str, Any]:
        return api.create(await request.body())

    @app.get("/v1/batches")
    async def list_batches(limit: int = 20, after: str | None = None) -> dict[str, Any]:
        if not 1 <= limit <= 100:
            raise ApiError(400, "limit must be between 1 and 100", "limit")
        return api.page(limit, after)

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(batch_id: str) -> dict[str, Any]:
        return api.retrieve(batch_id)

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str) -> dict[str, Any]:
        return api.cancel(batch_id)
