"""The Batch API of ``saro serve`` (``/v1/files``, ``/v1/batches``) on the tiny model: the ``openai_batch`` backend
and the official ``openai`` client against it, real batching through the engine, line validation, per-request
errors, cancel, and a server stopped mid-batch that goes on from where it stopped on the next start."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from saro.models.generate import (
    Conversation,
    Generation,
    Generator,
    HFGenerator,
    SamplingParams,
    TextCallback,
)
from saro.models.openai_batch import OpenAIBatchGenerator
from saro.serve import BackgroundServer, create_app
from saro.serve.batch_api import BatchInvalid, parse_requests, parse_upload
from saro.serve.schema import ApiError

openai = pytest.importorskip("openai")

ENDPOINT = "/v1/chat/completions"


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SARO_API_KEY", raising=False)


@pytest.fixture(scope="module")
def tiny_gen(tiny_model_dir: Path) -> HFGenerator:
    return HFGenerator.from_source(str(tiny_model_dir), batch_size=8)


@pytest.fixture(scope="module")
def server(tiny_gen: HFGenerator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    app = create_app(tiny_gen, model_name="tiny", api_key="", max_batch_size=8, batch_wait_ms=30,
                     batch_dir=tmp_path_factory.mktemp("batches"))  # fmt: skip
    with BackgroundServer(app) as srv:
        yield srv


def _client(srv: BackgroundServer) -> Any:
    return openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0, timeout=60)


def _line(cid: str, content: str, model: str = "tiny", **body: Any) -> dict[str, Any]:
    msgs = [{"role": "user", "content": content}]
    return {"custom_id": cid, "method": "POST", "url": ENDPOINT,
            "body": {"model": model, "messages": msgs, "max_tokens": 8, **body}}  # fmt: skip


def _jsonl(lines: Sequence[dict[str, Any] | str]) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


def _wait(
    client: Any, bid: str, until: tuple[str, ...] = ("completed", "failed", "cancelled", "expired")
) -> Any:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        b = client.batches.retrieve(bid)
        if b.status in until:
            return b
        time.sleep(0.05)
    raise AssertionError(f"batch {bid} still {b.status}")


def _submit(client: Any, lines: Sequence[dict[str, Any] | str]) -> Any:
    f = client.files.create(file=("in.jsonl", _jsonl(lines)), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h")


def _rows(client: Any, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


# ------------------------------------------------------------------------------------------- the clients


def test_openai_batch_backend_round_trip(server: BackgroundServer, tmp_path: Path) -> None:
    """saro's own client: k samples of each conversation, answered in real batches by the server's model."""
    engine = server.server.config.app.state.engine  # the app behind the server
    before = len(engine.batch_sizes)
    gen = OpenAIBatchGenerator(model="tiny", base_url=server.url, state_dir=tmp_path, poll_interval=0.05)
    convs = [[{"role": "user", "content": f"Tell me about topic {i}."}] for i in range(6)]
    out = gen.generate(convs, SamplingParams(n=2, temperature=1.0, max_new_tokens=12, seed=3))
    assert [len(gs) for gs in out] == [2] * 6
    assert all(g.ok and 1 <= g.tokens <= 12 for gs in out for g in gs)
    assert all(g.finished or g.tokens == 12 for gs in out for g in gs)  # cut only at the budget
    assert gen.stats["batches"] == 1 and gen.stats["failed_items"] == 0
    sizes = list(engine.batch_sizes)[before:]
    assert sum(sizes) == 12 and max(sizes) > 1  # 12 requests, several in one generation batch
    assert all(gs[0].text != gs[1].text for gs in out)  # two samples of one conversation, not one copy


def test_official_client_files_batches_and_listing(server: BackgroundServer) -> None:
    c = _client(server)
    lines = [_line("a", "Hi there."), _line("b", "Name a colour.", temperature=0.7, seed=5, n=2)]
    b = _submit(c, lines)
    assert b.status in ("validating", "in_progress", "completed") and b.endpoint == ENDPOINT
    done = _wait(c, b.id)
    assert done.status == "completed" and done.error_file_id is None
    assert done.request_counts.total == 2 and done.request_counts.completed == 2
    rows = {r["custom_id"]: r for r in _rows(c, done.output_file_id)}
    assert set(rows) == {"a", "b"}
    body = rows["b"]["response"]["body"]
    assert rows["b"]["response"]["status_code"] == 200 and body["object"] == "chat.completion"
    assert len(body["choices"]) == 2 and body["usage"]["completion_tokens"] >= 2
    assert c.files.retrieve(done.output_file_id).purpose == "batch_output"
    assert b.id in [x.id for x in c.batches.list(limit=100).data]
    with pytest.raises(openai.ConflictError):  # a finished batch cannot be cancelled
        c.batches.cancel(b.id)
    assert c.files.delete(done.input_file_id).deleted
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(done.input_file_id)


def test_bad_requests_are_answered_like_the_live_endpoint(server: BackgroundServer) -> None:
    """A request the live endpoint would refuse goes to the error file with the same status; the rest is answered."""
    c = _client(server)
    lines = [
        _line("ok", "Hello."),
        _line("long", "Hello.", max_tokens=10_000),  # past the tiny model's 1024-token context
        _line("badtemp", "Hello.", temperature=9),
        _line("stream", "Hello.", stream=True),
    ]
    done = _wait(c, _submit(c, lines).id)
    assert done.status == "completed" and done.request_counts.completed == 1
    assert done.request_counts.failed == 3
    assert [r["custom_id"] for r in _rows(c, done.output_file_id)] == ["ok"]
    errs = {r["custom_id"]: r["response"] for r in _rows(c, done.error_file_id)}
    assert {k: v["status_code"] for k, v in errs.items()} == {"long": 400, "badtemp": 400, "stream": 400}
    assert errs["long"]["body"]["error"]["code"] == "context_length_exceeded"


def test_invalid_input_fails_the_batch_naming_lines(server: BackgroundServer) -> None:
    c = _client(server)
    other = {**_line("x", "Hi."), "url": "/v1/completions"}
    lines: list[dict[str, Any] | str] = [_line("a", "Hi."), "{not json", _line("a", "again"), other,
                                         {**_line("m", "Hi."), "method": "GET"}]  # fmt: skip
    done = _wait(c, _submit(c, lines).id)
    assert done.status == "failed" and done.output_file_id is None
    codes = [(e.line, e.code) for e in done.errors.data]
    assert codes == [(2, "invalid_json_line"), (3, "duplicate_custom_id"), (4, "mismatched_endpoint"),
                     (5, "invalid_method")]  # fmt: skip


def test_create_and_upload_checks(server: BackgroundServer) -> None:
    c = _client(server)
    f = c.files.create(file=("in.jsonl", _jsonl([_line("a", "Hi.")])), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        c.batches.create(input_file_id=f.id, endpoint=ENDPOINT, completion_window="1h")  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        c.batches.create(input_file_id="file-nope", endpoint=ENDPOINT, completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        c.files.create(file=("in.jsonl", b"{}\n"), purpose="fine-tune")
    for bad in ("..%2F..%2Fetc", "batch_../x", "a" * 100):  # ids never leave the store's folder
        assert httpx.get(f"{server.url}/batches/{bad}").status_code == 404
    r = httpx.post(f"{server.url}/files", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]


# --------------------------------------------------------------------------------- stop, restart, cancel


class Gated(Generator):
    """The tiny model, with calls after the first ``open_calls`` held until ``gate`` is set."""

    name = "gated"
    label = "tiny"

    def __init__(self, inner: HFGenerator, open_calls: int) -> None:
        self.inner, self.open_calls = inner, open_calls
        self.gate = threading.Event()
        self.calls = 0

    def generate_rows(
        self,
        conversations: Sequence[Conversation],
        params: Sequence[SamplingParams],
        on_text: TextCallback | None = None,
    ) -> list[list[Generation]]:
        self.calls += 1
        if self.calls > self.open_calls:
            self.gate.wait(60)
        return self.inner.generate_rows(conversations, params, on_text)


def _gated_server(gen: Generator, batch_dir: Path) -> BackgroundServer:
    # one request per generation batch, so the gate stops the batch after a known number of answers
    app = create_app(gen, model_name="tiny", api_key="", max_batch_size=1, batch_dir=batch_dir)
    return BackgroundServer(app).start()


def _answers(batch_dir: Path, bid: str) -> list[dict[str, Any]]:
    path = batch_dir / "batches" / f"{bid}.answers.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_stopped_server_resumes_the_batch_without_loss_or_duplicates(
    tiny_gen: HFGenerator, tmp_path: Path
) -> None:
    lines = [_line(f"r{i}", f"Question number {i}?", seed=i) for i in range(6)]
    first = Gated(tiny_gen, open_calls=2)
    srv = _gated_server(first, tmp_path)
    b = _submit(_client(srv), lines)
    deadline = time.monotonic() + 60
    while first.calls < 3 and time.monotonic() < deadline:  # two answered, the third held at the gate
        time.sleep(0.02)
    api = srv.server.config.app.state.batches

    def release() -> None:
        """Once shutdown has stopped the batch, let the held call end (its answer is dropped)."""
        while b.id in api.live:
            time.sleep(0.01)
        first.gate.set()

    releaser = threading.Thread(target=release)
    releaser.start()
    srv.stop()
    releaser.join()
    saved = [r["custom_id"] for r in _answers(tmp_path, b.id)]
    assert saved == ["r0", "r1"]
    assert json.loads((tmp_path / "batches" / f"{b.id}.json").read_text())["status"] == "in_progress"

    second = Gated(tiny_gen, open_calls=100)
    srv2 = _gated_server(second, tmp_path)
    try:
        done = _wait(_client(srv2), b.id)
        out = _rows(_client(srv2), done.output_file_id)
    finally:
        srv2.stop()
    assert done.status == "completed" and done.request_counts.completed == 6
    assert sorted(r["custom_id"] for r in out) == [f"r{i}" for i in range(6)]  # each once, none lost
    assert second.calls == 6 - len(saved)  # only what the first server had not answered


def test_cancel_keeps_what_was_answered(tiny_gen: HFGenerator, tmp_path: Path) -> None:
    gen = Gated(tiny_gen, open_calls=2)
    srv = _gated_server(gen, tmp_path)
    try:
        c = _client(srv)
        b = _submit(c, [_line(f"r{i}", f"Question {i}?") for i in range(6)])
        deadline = time.monotonic() + 60
        while gen.calls < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.batches.cancel(b.id).status == "cancelling"
        gen.gate.set()
        done = _wait(c, b.id)
        answered = {r["custom_id"] for r in _rows(c, done.output_file_id)}
    finally:
        gen.gate.set()
        srv.stop()
    assert done.status == "cancelled" and done.cancelled_at is not None
    # r2 (held) and r3 were in the engine's queue (a window of 2 x max_batch_size): they end; r4, r5 never start
    assert {"r0", "r1"} <= answered <= {"r0", "r1", "r2", "r3"}
    assert done.request_counts.completed == len(answered)


# ------------------------------------------------------------------------------------ parsing, hand-built


def test_parse_upload_hand_built() -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
        b'Content-Type: application/octet-stream\r\n\r\n{"x": 1}\r\n{"y": 2}\n\r\n--XyZ--\r\n'
    )
    data, name, fields = parse_upload(body, "multipart/form-data; boundary=XyZ")
    assert data == b'{"x": 1}\r\n{"y": 2}\n' and name == "a.jsonl" and fields == {"purpose": "batch"}
    with pytest.raises(ApiError, match="no 'file'"):
        parse_upload(b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ--",
                     "multipart/form-data; boundary=XyZ")  # fmt: skip
    with pytest.raises(ApiError, match="multipart"):
        parse_upload(body, "application/json")


def test_parse_requests_hand_built() -> None:
    ok = _jsonl([_line("a", "x"), "", _line("b", "y")])
    assert [(r.line, r.custom_id) for r in parse_requests(ok, ENDPOINT)] == [(1, "a"), (3, "b")]
    for content, code in (
        (b"", "empty_file"),
        (b"\xff\xfe\n", "invalid_file"),
        (_jsonl(["[1, 2]"]), "invalid_json_line"),
        (_jsonl([{**_line("a", "x"), "custom_id": ""}]), "missing_required_parameter"),
        (_jsonl([{**_line("a", "x"), "body": "text"}]), "missing_required_parameter"),
        (_jsonl([_line("a", "x"), _line("b", "y", model="other")]), "mismatched_model"),
    ):
        with pytest.raises(BatchInvalid) as e:
            parse_requests(content, ENDPOINT)
        assert e.value.errors[0]["code"] == code
