"""``saro serve`` and ``saro chat``: the OpenAI-compatible server on the tiny model and on a scripted generator,
queried with the official ``openai`` client over a loopback port."""

from __future__ import annotations

import io
import json
import logging
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from saro.chat import chat
from saro.models.generate import (
    Conversation,
    Generation,
    Generator,
    SamplingParams,
    TextCallback,
    make_generator,
)
from saro.reasoning import THINK_CLOSE, parse
from saro.reasoning_stream import ReasoningSplitter
from saro.serve import BackgroundServer, StopScanner, create_app

openai = pytest.importorskip("openai")

KEY = "sk-test-not-a-real-key-0123"
REASONING = (
    "The user asks for a number. The policy clause on general assistance applies.\n\n"
    "Wait, is there any harm here? No: it is arithmetic.\n\n"
    "Decision: help."
)
SCRIPT = f"<think>\n{REASONING}\n</think>\nThe answer is 42."


class ScriptedGenerator(Generator):
    """Answers every conversation with SCRIPT, streamed in small pieces (tests the reasoning/answer split)."""

    name = "scripted"
    label = "scripted"

    def __init__(self, piece: int = 3) -> None:
        self.piece = piece
        self.calls = 0

    def generate_rows(
        self,
        conversations: Sequence[Conversation],
        params: Sequence[SamplingParams],
        on_text: TextCallback | None = None,
    ) -> list[list[Generation]]:
        self.calls += 1
        out = []
        for i, p in enumerate(params):
            for k in range(p.n):
                for s in range(0, len(SCRIPT), self.piece):
                    if on_text is not None:
                        on_text(i, k, SCRIPT[s : s + self.piece])
            out.append([Generation(SCRIPT, True, len(SCRIPT.split()))] * p.n)
        return out


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SARO_API_KEY", raising=False)


@pytest.fixture(scope="module", params=["hf", "ct2"])
def tiny(tiny_model_dir: Path, request: pytest.FixtureRequest) -> Iterator[BackgroundServer]:
    """The tiny model served by each engine: every test on it runs on transformers and on CTranslate2."""
    app = create_app(
        str(tiny_model_dir),
        model_name="tiny",
        api_key="",
        batch_wait_ms=30,
        max_batch_size=8,
        backend=request.param,
    )
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def scripted() -> Iterator[BackgroundServer]:
    app = create_app(ScriptedGenerator(), model_name="scripted", api_key=KEY, max_prompt_tokens=200)
    with BackgroundServer(app) as srv:
        yield srv


def client(srv: BackgroundServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url, api_key=key, max_retries=0, timeout=60)


def _root(srv: BackgroundServer) -> str:
    return srv.url.removesuffix("/v1")


# ----------------------------------------------------------------------------------------------- basics


def test_health_and_models(tiny: BackgroundServer) -> None:
    r = httpx.get(_root(tiny) + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert [m.id for m in client(tiny).models.list().data] == ["tiny"]


def test_plain_completion(tiny: BackgroundServer) -> None:
    r = client(tiny).chat.completions.create(
        model="tiny",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}],
        max_tokens=12,
        temperature=1.0,
        seed=7,
    )
    msg = r.choices[0].message
    assert isinstance(msg.content, str) and msg.content
    assert "reasoning_content" in msg.model_extra  # present (null: the random model writes no think block)
    assert r.choices[0].finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 5 and 1 <= u.completion_tokens <= 12
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert r.object == "chat.completion" and r.model == "tiny" and r.id.startswith("chatcmpl-")


def test_stream_matches_plain(tiny: BackgroundServer) -> None:
    """Same seed, same text: the streamed deltas reassemble to the non-streamed content."""
    kw = {"model": "tiny", "messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 16}
    plain = client(tiny).chat.completions.create(**kw, temperature=1.0, seed=11)
    chunks = list(
        client(tiny).chat.completions.create(
            **kw, temperature=1.0, seed=11, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == plain.choices[0].message.content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # arrived in pieces
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_concurrent_requests_are_batched(tiny: BackgroundServer) -> None:
    c = client(tiny)
    results: list[str | None] = [None] * 16
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for j in range(2):
                r = c.chat.completions.create(
                    model="tiny",
                    messages=[{"role": "user", "content": f"question {w}-{j}"}],
                    max_tokens=16,
                    temperature=0,
                )
                results[2 * w + j] = r.choices[0].finish_reason
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and all(r in ("stop", "length") for r in results)
    assert max(tiny.server.config.app.state.engine.batch_sizes) > 1  # clients shared batches


def test_n_samples_and_reasoning_budget(tiny: BackgroundServer) -> None:
    r = client(tiny).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Think about it."}],
        max_tokens=14,
        temperature=1.0,
        seed=3,
        n=2,
        extra_body={"reasoning_budget": 4},
    )
    assert [c.index for c in r.choices] == [0, 1]
    for c in r.choices:  # the budget closed the think block for the model after 4 tokens
        assert c.message.model_extra["reasoning_content"]
    assert 0 < r.usage.completion_tokens_details.reasoning_tokens <= 2 * 8


def test_generate_rows_streams_and_mixes_sampling_settings(tiny_model_dir: Path) -> None:
    """HFGenerator.generate_rows: per-row settings in one batch, streamed pieces that add up to the text."""
    from saro.models.generate import HFGenerator

    g = HFGenerator.from_source(str(tiny_model_dir))
    convs = [
        [{"role": "user", "content": "short"}],
        [{"role": "user", "content": "a rather longer question"}],
    ]
    greedy = SamplingParams(max_new_tokens=10)
    sampled = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=5, n=2)
    pieces: dict[tuple[int, int], str] = {}

    def on_text(i: int, k: int, piece: str) -> None:
        pieces[(i, k)] = pieces.get((i, k), "") + piece

    out = g.generate_rows(convs, [greedy, sampled], on_text=on_text)
    assert [len(o) for o in out] == [1, 2]
    assert out[0][0].text == g.generate(convs[:1], greedy)[0][0].text  # greedy rows are plain greedy
    assert {key: out[key[0]][key[1]].text for key in pieces} == pieces
    again = g.generate_rows(convs, [greedy, sampled])  # same seeds, same batch: same samples
    assert [[x.text for x in o] for o in again] == [[x.text for x in o] for o in out]
    assert out[1][0].text != out[1][1].text  # sample k is drawn with seed + k


def test_row_sampler_draws_do_not_depend_on_batch_company() -> None:
    """A row's draws come from its own seeded RNG: the same logits give the same tokens whether the row is alone
    or shares the batch with greedy and other sampled rows. (Compared on fixed logits: through a model, batch
    shape changes the logits in the last bits, which can flip a near-tie of a random tiny model.)"""
    import torch

    from saro.models.sampling import ModelSampling, RowSampler

    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    knobs = ModelSampling(top_k=0)  # no top-k cut: every token but the drawn one becomes -inf below
    alone = RowSampler([1.0], [0.9], [11], knobs)
    crowd = RowSampler([0.0, 0.7, 1.0], [1.0, 1.0, 0.9], [0, 12, 11], knobs)
    ids = torch.zeros((3, 1), dtype=torch.long)
    drawn_alone, drawn_crowd, greedy_rows = [], [], []
    for step in range(6):
        row = logits[step : step + 1]
        a = alone(ids[:1], row)
        c = crowd(
            ids, torch.cat([logits[(step + 1) % 6 : (step + 1) % 6 + 1], logits[(step + 2) % 6 :][:1], row])
        )
        drawn_alone.append(int(a[0].argmax()))
        drawn_crowd.append(int(c[2].argmax()))
        greedy_rows.append(int(c[0].argmax()) == int(logits[(step + 1) % 6].argmax()))
        assert torch.isinf(c[2]).sum() == 49 and torch.isinf(c[1]).sum() == 49  # sampled rows: one token left
        assert not torch.isinf(c[0]).any()  # the greedy row's scores are left alone
    assert drawn_alone == drawn_crowd and all(greedy_rows)
    assert drawn_alone != [int(logits[s].argmax()) for s in range(6)]  # it samples, not just the argmax


# ------------------------------------------------------------------------------ reasoning / answer split


def test_scripted_split_plain_and_streamed(scripted: BackgroundServer) -> None:
    c = client(scripted, KEY)
    messages = [{"role": "user", "content": "What is six times seven?"}]
    expected = parse(SCRIPT)
    plain = c.chat.completions.create(model="scripted", messages=messages)
    assert plain.choices[0].message.content == expected.answer == "The answer is 42."
    extra = plain.choices[0].message.model_extra
    assert extra["reasoning"] == extra["reasoning_content"] == expected.reasoning  # vLLM's new and old names
    assert plain.choices[0].finish_reason == "stop"

    chunks = list(c.chat.completions.create(model="scripted", messages=messages, stream=True))
    kinds = []
    for ch in chunks[1:]:
        if not ch.choices:
            continue
        d = ch.choices[0].delta
        r, a = (d.model_extra or {}).get("reasoning"), d.content
        assert r == (d.model_extra or {}).get("reasoning_content")  # both names, the same text
        assert not (r and a)  # a delta carries reasoning or answer, never both
        if r:
            kinds.append(("reasoning", r))
        if a:
            kinds.append(("content", a))
    assert len(kinds) > 4
    first_answer = next(i for i, (k, _) in enumerate(kinds) if k == "content")
    assert all(k == "reasoning" for k, _ in kinds[:first_answer])
    assert all(k == "content" for k, _ in kinds[first_answer:])
    assert "".join(t for k, t in kinds if k == "reasoning") == expected.reasoning
    assert "".join(t for k, t in kinds if k == "content") == expected.answer


def test_hide_reasoning_per_request_and_server() -> None:
    app = create_app(ScriptedGenerator(), model_name="s", api_key="")
    with BackgroundServer(app) as srv:
        c = client(srv)
        kw = {"model": "s", "messages": [{"role": "user", "content": "hi"}]}
        r = c.chat.completions.create(**kw, extra_body={"include_reasoning": False})
        assert r.choices[0].message.model_extra["reasoning_content"] is None
        assert r.choices[0].message.model_extra["reasoning"] is None
        assert r.choices[0].message.content == "The answer is 42."
        chunks = list(c.chat.completions.create(**kw, stream=True, extra_body={"include_reasoning": False}))
        for key in ("reasoning", "reasoning_content"):
            assert not any(ch.choices and (ch.choices[0].delta.model_extra or {}).get(key) for ch in chunks)
        assert (
            "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "The answer is 42."
        )
    hidden = create_app(ScriptedGenerator(), model_name="s", api_key="", hide_reasoning=True)
    with TestClient(hidden) as tc:
        body = tc.post(
            "/v1/chat/completions", json={"model": "s", "messages": [{"role": "user", "content": "x"}]}
        )
        message = body.json()["choices"][0]["message"]
        assert message["reasoning_content"] is None and message["reasoning"] is None
        assert message["content"] == "The answer is 42."
        streamed = tc.post(
            "/v1/chat/completions",
            json={"model": "s", "messages": [{"role": "user", "content": "x"}], "stream": True},
        )
        assert "Decision: help" not in streamed.text and '"reasoning' not in streamed.text
        events = [json.loads(x[5:]) for x in streamed.text.splitlines() if x.startswith("data: {")]
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == (
            "The answer is 42."
        )


def test_streamed_n_and_text_parts(scripted: BackgroundServer) -> None:
    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "six times seven?"}]
    chunks = list(
        client(scripted, KEY).chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": parts}], n=2, stream=True
        )
    )
    for k in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == k]
        assert "".join(c.delta.content or "" for c in mine) == "The answer is 42."
        assert [c.finish_reason for c in mine if c.finish_reason] == ["stop"]


def test_stop_sequences(scripted: BackgroundServer) -> None:
    c = client(scripted, KEY)
    kw = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}], "stop": ["42", "zzz"]}
    r = c.chat.completions.create(**kw)
    assert r.choices[0].message.content == "The answer is" and r.choices[0].finish_reason == "stop"
    chunks = list(c.chat.completions.create(**kw, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "The answer is"


@pytest.mark.parametrize(
    "text",
    [
        SCRIPT,
        "  <think>\n\nstep one\n\nstep two  \n</think>\n\n  answer with <b>html</b> and spaces  \n",
        "no tags at all, just an answer\n",
        "<think>\nran out of tokens while thinking about <thi",
        "<think>\nnested <think>inner</think> tail</think>\nfinal",
        "",
        "<thi",
    ],
)
def test_splitter_matches_parse(text: str) -> None:
    rng = random.Random(0)
    p = parse(text)
    for _ in range(30):
        splitter, deltas, i = ReasoningSplitter(), [], 0
        while i < len(text):
            j = i + rng.randint(1, 6)
            deltas += splitter.feed(text[i:j])
            i = j
        deltas += splitter.flush()
        reasoning = "".join(t for k, t in deltas if k == "reasoning")
        answer = "".join(t for k, t in deltas if k == "content")
        if p.status != "nested":
            assert reasoning == (p.reasoning or "") and answer == p.answer
        seen = [k for k, _ in deltas]
        assert seen == sorted(seen, key=lambda k: k != "reasoning")  # reasoning first, then answer


@pytest.mark.parametrize(
    "text",
    [
        "budget ran out here\n</think>\nthe answer",  # the generator closed a block the model never opened
        "  no tags: all of it is the answer  ",
        "<think>\nopened by the model\n</think>\nanswer",
        "<think>\nunclosed",
    ],
)
def test_splitter_holds_untagged_text_under_a_budget(text: str) -> None:
    splitter, deltas = ReasoningSplitter(hold_untagged=True), []
    for i in range(0, len(text), 4):
        deltas += splitter.feed(text[i : i + 4])
    held_until_end = THINK_CLOSE not in text and not text.lstrip().startswith("<think>")
    if held_until_end:
        assert deltas == []  # nothing is sent before the end shows whether it was reasoning
    deltas += splitter.flush()
    p = parse(text)
    assert "".join(t for k, t in deltas if k == "reasoning") == (p.reasoning or "")
    assert "".join(t for k, t in deltas if k == "content") == p.answer


def test_stop_scanner_holds_back_partial_stops() -> None:
    s = StopScanner(["END"])
    assert s.feed("abc E") == "abc " and s.feed("N") == "" and s.feed("D more") == "" and s.stopped
    s = StopScanner(["END"])
    assert s.feed("xE") == "x" and s.feed("x") == "Ex" and s.flush() == ""


# ---------------------------------------------------------------------------------------- bad requests


def _post(srv: BackgroundServer, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {"Content-Type": "application/json", **(headers or {})}
    return httpx.post(srv.url + "/chat/completions", content=content, headers=h, timeout=60)


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["type"] == "invalid_request_error"
    return err


def test_bad_requests(tiny: BackgroundServer) -> None:
    user = [{"role": "user", "content": "hi"}]
    _error(_post(tiny, b"{not json"), 400)
    _error(_post(tiny, b"[1, 2]"), 400)
    assert _error(_post(tiny, {"model": "tiny"}), 400)["param"] == "messages"
    assert _error(_post(tiny, {"model": "tiny", "messages": []}), 400)["param"] == "messages"
    assert _error(_post(tiny, {"messages": user}), 400)["param"] == "model"
    bad_role = {"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}
    assert _error(_post(tiny, bad_role), 400)["param"] == "messages.0.role"
    no_content = {"model": "tiny", "messages": [{"role": "user"}]}
    _error(_post(tiny, no_content), 400)
    image = {
        "model": "tiny",
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
    }
    _error(_post(tiny, image), 400)
    for field, value in (("temperature", 5), ("n", 0), ("max_tokens", 0), ("top_p", 0), ("stop", ["a"] * 5)):
        assert _error(_post(tiny, {"model": "tiny", "messages": user, field: value}), 400)["param"] == field
    err = _error(_post(tiny, {"model": "gpt-9", "messages": user}), 404)
    assert err["code"] == "model_not_found" and err["param"] == "model"
    long = [{"role": "user", "content": "word " * 3000}]
    assert _error(_post(tiny, {"model": "tiny", "messages": long}), 400)["code"] == "context_length_exceeded"
    too_many = {"model": "tiny", "messages": user, "max_tokens": 5000}
    assert _error(_post(tiny, too_many), 400)["code"] == "context_length_exceeded"
    r = httpx.get(_root(tiny) + "/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()
    # the official client maps them to its exceptions
    with pytest.raises(openai.NotFoundError):
        client(tiny).chat.completions.create(model="gpt-9", messages=user)
    with pytest.raises(openai.BadRequestError):
        client(tiny).chat.completions.create(model="tiny", messages=long, stream=True)


def test_auth(scripted: BackgroundServer, caplog: pytest.LogCaptureFixture) -> None:
    body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}
    with caplog.at_level(logging.INFO, logger="saro"):
        assert _error(_post(scripted, body), 401)["code"] == "invalid_api_key"
        _error(_post(scripted, body, {"Authorization": "Bearer wrong"}), 401)
        _error(_post(scripted, b"{not json", {"Authorization": "Bearer wrong"}), 401)  # auth comes first
        assert _post(scripted, body, {"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert httpx.get(_root(scripted) + "/health").status_code == 200  # health checks need no key
        with pytest.raises(openai.AuthenticationError):
            client(scripted, "wrong").models.list()
    assert "POST /v1/chat/completions 401" in caplog.text
    assert KEY not in caplog.text and "answer is 42" not in caplog.text  # no key, no completion text
    assert "POST /v1/chat/completions 200 prompt=" in caplog.text


def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SARO_API_KEY", KEY)
    with TestClient(create_app(ScriptedGenerator(), model_name="s")) as tc:
        assert tc.get("/v1/models").status_code == 401
        assert tc.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


# ------------------------------------------------------------------------------ the other stages through it


def test_eval_through_server_with_openai_backend(
    tiny: BackgroundServer, scripted: BackgroundServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``openai`` generation backend of the other stages works against ``saro serve``: generate and parse."""
    prompts = [
        [{"role": "user", "content": f"Prompt number {i}: how do I kill a Python process?"}] for i in range(6)
    ]
    gen = make_generator(
        "openai",
        base_url=tiny.url,
        model="tiny",
        api_key_env=None,
        cache=False,
        extra_body={"reasoning_budget": 4},
    )
    outs = gen.generate(prompts, SamplingParams(max_new_tokens=12, temperature=1.0, seed=1))
    assert len(outs) == 6
    for (g,) in outs:  # the budget made the random model "reason"; the split survived the round trip
        assert g.ok and parse(g.text).has_reasoning

    monkeypatch.setenv("SARO_TEST_SERVE_KEY", KEY)
    gen = make_generator(
        "openai", base_url=scripted.url, model="scripted", api_key_env="SARO_TEST_SERVE_KEY", cache=False
    )
    outs = gen.generate(prompts[:3], SamplingParams(max_new_tokens=64))
    for (g,) in outs:
        p = parse(g.text)
        assert p.status == "ok" and p.reasoning == REASONING and p.answer == "The answer is 42."
        assert len(p.steps) == 3 and p.reflections == [1]


# --------------------------------------------------------------------------------------------------- chat


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=100, force_terminal=True, color_system="standard"), buf


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_chat_loop_on_local_model(tiny_model_dir: Path) -> None:
    console, buf = _console()
    script = io.StringIO("hello there\n\n/reset\nsecond question\n/help\n/exit\nnever read\n")
    history = chat(str(tiny_model_dir), input=script, console=console, max_tokens=8, temperature=1.0)
    assert [m["role"] for m in history] == ["user", "assistant"]  # /reset dropped the first exchange
    assert history[0]["content"] == "second question"
    out = buf.getvalue()
    assert "hello there" in out and "history cleared" in out and "unknown command /help" in out
    assert "never read" not in out


def test_chat_loop_against_server(scripted: BackgroundServer) -> None:
    console, buf = _console()
    history = chat(scripted.url, input=io.StringIO("hi\nand again\n"), console=console, api_key=KEY)
    assert [m["content"] for m in history if m["role"] == "assistant"] == ["The answer is 42."] * 2
    out = buf.getvalue()
    assert "\x1b[2;3m" in out  # reasoning shown dimmed (and italic)
    assert "Decision: help." in _plain(out) and "\nThe answer is 42." in out
    console, buf = _console()
    chat(scripted.url, hide_reasoning=True, input=io.StringIO("hi\n"), console=console, api_key=KEY)
    assert "Decision: help." not in buf.getvalue() and "The answer is 42." in buf.getvalue()
    console, buf = _console()
    chat(scripted.url, input=io.StringIO("hi\n"), console=console, api_key="wrong", model_name="scripted")
    assert "HTTP 401" in buf.getvalue()


# ------------------------------------------------------------------------------------- the command itself


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_saro_serve_command_answers_with_reasoning(tiny_model_dir: Path, tmp_path: Path) -> None:
    """``saro serve`` (the command, in its own process) answers the official openai client with the reasoning in
    ``reasoning`` and ``reasoning_content``, plain and streamed (the budget makes the random model "reason")."""
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "saro",
        "serve",
        str(tiny_model_dir),
        "--port",
        str(port),
        "--model-name",
        "tiny",
    ]
    with open(tmp_path / "serve.log", "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "saro serve did not start"
            time.sleep(0.2)
        c = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)
        kw = {"model": "tiny", "messages": [{"role": "user", "content": "Think first."}], "max_tokens": 10}
        body = {"reasoning_budget": 4}
        r = c.chat.completions.create(**kw, temperature=1.0, seed=2, extra_body=body)
        extra = r.choices[0].message.model_extra
        assert extra["reasoning"] and extra["reasoning"] == extra["reasoning_content"]
        chunks = list(c.chat.completions.create(**kw, temperature=1.0, seed=2, stream=True, extra_body=body))
        deltas = [ch.choices[0].delta.model_extra or {} for ch in chunks if ch.choices]
        streamed = "".join(d.get("reasoning") or "" for d in deltas)
        assert streamed == extra["reasoning"]  # same seed: the same reasoning, streamed under both names
        assert all(d.get("reasoning") == d.get("reasoning_content") for d in deltas)
    finally:
        proc.terminate()
        proc.wait(30)


def test_chat_does_not_import_the_server() -> None:
    code = "import sys, saro.chat; print(sorted(m for m in sys.modules if m.startswith('saro.serve')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from saro.chat import API_KEY_ENV as chat_key
    from saro.serve import API_KEY_ENV as serve_key

    assert chat_key == serve_key
