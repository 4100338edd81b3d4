"""Teacher backends: the ``openai`` backend against a real local HTTP server with injected faults, the request
cache (the ``vllm`` backend is tested in test_vllm_backend.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakeserver import FakeServer
from saro.errors import SaroError
from saro.models.cache import RequestCache, request_key
from saro.models.generate import Generation, SamplingParams, make_generator
from saro.models.openai_backend import OpenAIGenerator, join_reasoning, require_reasoning
from saro.reasoning import parse

SECRET = "sk-test-0123456789abcdefSECRET"


def convs(n: int, prefix: str = "question") -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"{prefix} {i}"}] for i in range(n)]


def fast(srv: FakeServer, **kw: Any) -> OpenAIGenerator:
    """A client tuned for tests: short timeout and backoff."""
    opts: dict[str, Any] = {
        "timeout": 0.3,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "max_retries": 6,
        "concurrency": 8,
        "cache": False,
    }
    opts.update(kw)
    return OpenAIGenerator(model="fake", base_url=srv.url, **opts)


@pytest.fixture
def saro_logs(caplog: pytest.LogCaptureFixture):
    """Capture every saro / httpx / httpcore record at DEBUG (even when saro's logger does not propagate)."""
    names = ("saro", "httpx", "httpcore")
    for name in names:
        caplog.set_level(logging.DEBUG, logger=name)
    logging.getLogger("saro").addHandler(caplog.handler)
    yield caplog
    logging.getLogger("saro").removeHandler(caplog.handler)


# ------------------------------------------------------------------------------------------------- faults


def test_completes_under_faults_every_conversation_accepted_or_rejected(tmp_path: Path) -> None:
    """20% 500s, 10% timeouts, 10% malformed: the run completes, retries happen, every sample has an outcome."""
    n_conv, n = 40, 2
    with FakeServer(seed=2, p_500=0.2, p_timeout=0.1, p_malformed=0.1, timeout_sleep=1.0) as srv:
        gen = fast(srv, validate=require_reasoning, malformed_retries=2, cache=tmp_path / "cache")
        seen: list[int] = []
        results: dict[int, list[Generation]] = {}
        for idx, gens in gen.generate_batches(convs(n_conv), SamplingParams(n=n, temperature=0.7)):
            seen.extend(idx)
            results.update(zip(idx, gens, strict=True))
        assert sorted(seen) == list(range(n_conv))  # every conversation exactly once
        for i in range(n_conv):
            assert len(results[i]) == n
            for g in results[i]:
                if g.ok:
                    assert require_reasoning(g.text) is None
                    assert f"question {i}" in parse(g.text).answer
                else:
                    assert g.status in ("rejected", "error") and g.error
        # the faults really happened and were retried / re-asked
        assert srv.outcomes["error500"] > 0 and srv.outcomes["timeout"] > 0 and srv.outcomes["malformed"] > 0
        assert srv.requests > n_conv  # one request per conversation (n in the body), plus retries and re-asks
        assert all(len({g.text for g in gs if g.ok}) == sum(g.ok for g in gs) for gs in results.values())
        assert gen.stats["retries"] > 0 and gen.stats["redos"] > 0
        assert gen.stats["requests"] == srv.requests

        # a re-run asks again only for what did not end "ok"
        failed = sum(1 for gs in results.values() for g in gs if not g.ok)
        before = srv.requests
        again = gen.generate(convs(n_conv), SamplingParams(n=n, temperature=0.7))
        if failed == 0:
            assert srv.requests == before
        for i in range(n_conv):
            for g, old in zip(again[i], results[i], strict=True):
                assert not old.ok or (g.cached and g.text == old.text)


def test_malformed_every_time_is_rejected_with_reason(tmp_path: Path) -> None:
    with FakeServer(p_malformed=1.0) as srv:
        gen = fast(srv, validate=require_reasoning, malformed_retries=2, cache=tmp_path / "c")
        out = gen.generate(convs(3), SamplingParams(n=2))
        assert srv.requests == 3 * (
            1 + 2 * 2
        )  # one request with n=2, then each sample re-asked 2 times alone
        for gs in out:
            for g in gs:
                assert g.status == "rejected"
                assert "asked 3 times" in (g.error or "")
                assert any(w in (g.error or "") for w in ("reasoning", "answer"))
        assert len(RequestCache(tmp_path / "c")) == 0  # rejections are never cached


def test_retries_exhausted_is_an_error_not_a_crash() -> None:
    with FakeServer(p_500=1.0) as srv:
        gen = fast(srv, max_retries=2, max_consecutive_failures=None)
        out = gen.generate(convs(2), SamplingParams())
        assert srv.requests == 2 * 3
        assert all(g.status == "error" and "HTTP 500" in (g.error or "") for gs in out for g in gs)


def test_server_down_stops_the_run_after_consecutive_failures() -> None:
    with FakeServer(p_500=1.0) as srv:
        gen = fast(srv, max_retries=1, max_consecutive_failures=3, concurrency=1)
        with pytest.raises(SaroError, match="3 requests in a row failed"):
            gen.generate(convs(10), SamplingParams())
        assert srv.requests == 3 * 2


def test_connection_refused_is_retried() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    gen = OpenAIGenerator(
        model="fake", base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, backoff_base=0.01, cache=False
    )
    out = gen.generate(convs(1), SamplingParams())
    assert out[0][0].status == "error" and "connection error" in (out[0][0].error or "")
    assert gen.stats["retries"] == 2


def test_429_is_retried_with_retry_after() -> None:
    with FakeServer(p_429=0.5, seed=1) as srv:
        out = fast(srv).generate(convs(10), SamplingParams())
        assert srv.outcomes["rate_limited"] > 0
        assert all(g.ok for gs in out for g in gs)


def test_non_retryable_4xx_raises_a_clear_error() -> None:
    with FakeServer(models={"real-model"}) as srv:
        gen = fast(srv, concurrency=1)  # asks for model "fake"
        with pytest.raises(SaroError) as e:
            gen.generate(convs(5), SamplingParams())
        msg = str(e.value)
        assert "HTTP 404" in msg and "fake" in msg and "does not exist" in msg and "base_url" in msg
        assert srv.requests == 1  # not retried, and the run stopped


def test_bad_request_raises_or_is_recorded_per_sample() -> None:
    with FakeServer(bad_request_marker="TOO LONG") as srv:
        data = [*convs(3), [{"role": "user", "content": "TOO LONG prompt"}]]
        with pytest.raises(SaroError, match=r"HTTP 400.*maximum context length"):
            fast(srv, concurrency=1).generate(data, SamplingParams())
        out = fast(srv, record_bad_requests=True).generate(data, SamplingParams())
        assert [g.ok for gs in out for g in gs] == [True, True, True, False]
        assert out[3][0].status == "error" and "HTTP 400" in (out[3][0].error or "")


# ------------------------------------------------------------------------------------------------- n samples


def test_n_samples_are_n_different_draws_from_one_request() -> None:
    """n in the body, one request per conversation, n different texts; greedy decoding gives n equal texts, as a
    real server does (so callers that want k candidates must sample)."""
    with FakeServer() as srv:
        out = fast(srv).generate(convs(5), SamplingParams(n=4, temperature=0.8, seed=3))
        assert srv.requests == 5 and all(b["n"] == 4 and b["seed"] == 3 for b in srv.bodies)
        assert all(len({g.text for g in gs}) == 4 and all(g.ok and g.finished for g in gs) for gs in out)
        again = fast(srv).generate(convs(5), SamplingParams(n=4, temperature=0.8, seed=3))
        assert [[g.text for g in gs] for gs in again] == [[g.text for g in gs] for gs in out]  # seeded
        greedy = fast(srv).generate(convs(2), SamplingParams(n=3, temperature=0.0))
        assert all(len({g.text for g in gs}) == 1 for gs in greedy)


@pytest.mark.parametrize("mode", ["ignore", "reject"])
def test_a_server_without_n_is_asked_sample_by_sample(mode: str) -> None:
    """A server that answers one choice whatever n, or rejects n > 1 with HTTP 400: each sample is asked on its
    own with its own seed, and the n samples still differ."""
    with FakeServer(n_support=mode) as srv:
        gen = fast(srv, concurrency=1)
        out = gen.generate(convs(4), SamplingParams(n=3, temperature=0.8, seed=10))
        assert not gen.n_per_request
        assert all(len({g.text for g in gs}) == 3 and all(g.ok for g in gs) for gs in out)
        singles = [b for b in srv.bodies if b["n"] == 1]
        assert {b["seed"] for b in singles} <= {10, 11, 12}
        assert srv.outcomes["n_rejected"] == (1 if mode == "reject" else 0)


def test_a_malformed_choice_is_asked_again_on_its_own() -> None:
    with FakeServer(p_malformed=0.4, seed=4) as srv:
        gen = fast(srv, validate=require_reasoning, malformed_retries=3)
        out = gen.generate(convs(8), SamplingParams(n=4, temperature=0.8, seed=0))
        assert srv.outcomes["malformed"] > 0 and gen.stats["redos"] > 0
        redos = [b for b in srv.bodies if b["n"] == 1]
        assert redos and all(b["seed"] >= 4 for b in redos)  # sample s, try r: seed s + r * n
        for gs in out:
            assert all(g.ok for g in gs) and len({g.text for g in gs}) == 4


# ------------------------------------------------------------------------------------------------- api key


def test_missing_api_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SARO_TEST_TEACHER_KEY", raising=False)
    with pytest.raises(SaroError, match="SARO_TEST_TEACHER_KEY"):
        OpenAIGenerator(model="m", base_url="http://127.0.0.1:9/v1", api_key_env="SARO_TEST_TEACHER_KEY")
    with pytest.raises(SaroError, match="SARO_TEST_TEACHER_KEY"):
        make_generator(
            "openai", model="m", base_url="http://127.0.0.1:9/v1", api_key_env="SARO_TEST_TEACHER_KEY"
        )
    OpenAIGenerator(model="m", base_url="http://127.0.0.1:9/v1", api_key_env=None)  # a local server: no key


def test_api_key_is_sent_and_never_leaks(
    monkeypatch: pytest.MonkeyPatch, saro_logs: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setenv("SARO_TEST_TEACHER_KEY", SECRET)
    cache = tmp_path / "cache"
    # right key: works; the key is in no log line, no cache file, no repr
    with FakeServer(api_key=SECRET, p_500=0.3, p_malformed=0.3) as srv:
        gen = fast(srv, api_key_env="SARO_TEST_TEACHER_KEY", validate=require_reasoning, cache=cache)
        out = gen.generate(convs(4), SamplingParams(n=2))
        assert srv.outcomes["unauthorized"] == 0 and any(g.ok for gs in out for g in gs)
        assert SECRET not in repr(gen) and SECRET not in repr(vars(gen))
    for f in cache.rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text()
    # wrong key: the server echoes what it got (as some providers do); the error must not carry it
    with FakeServer(api_key="sk-the-right-one") as srv:
        gen = fast(srv, api_key_env="SARO_TEST_TEACHER_KEY")
        with pytest.raises(SaroError) as e:
            gen.generate(convs(2), SamplingParams())
    msg = str(e.value)
    assert "HTTP 401" in msg and "SARO_TEST_TEACHER_KEY" in msg and "***" in msg
    assert SECRET not in msg and SECRET not in repr(e.value)
    assert saro_logs.records  # the logs were captured at all
    assert SECRET not in saro_logs.text


def test_no_key_sent_gets_a_hint() -> None:
    with FakeServer(api_key="sk-needed") as srv, pytest.raises(SaroError, match="no API key was sent"):
        fast(srv).generate(convs(1), SamplingParams())


# ------------------------------------------------------------------------------------------------- cache


def test_rerun_hits_the_cache_and_makes_zero_requests(tmp_path: Path) -> None:
    params = SamplingParams(n=3, temperature=0.8, seed=7)
    with FakeServer() as srv:
        first = fast(srv, cache=tmp_path / "c").generate(convs(6), params)
        assert srv.requests == 6  # the 3 samples of a conversation in one request
        srv.reset_counts()
        gen = fast(srv, cache=tmp_path / "c")
        second = gen.generate(convs(6), params)
        assert srv.requests == 0
        assert gen.stats["cache_hits"] == 18
        assert [[g.text for g in gs] for gs in second] == [[g.text for g in gs] for gs in first]
        assert all(g.cached for gs in second for g in gs)
        # different sampling params, another model name, or no cache: real requests again
        fast(srv, cache=tmp_path / "c").generate(convs(6), SamplingParams(n=3, temperature=0.8, seed=8))
        assert srv.requests == 6
        fast(srv, cache=False).generate(convs(6), params)
        assert srv.requests == 12


def test_cached_answers_are_validated_again(tmp_path: Path) -> None:
    with FakeServer(p_malformed=1.0) as srv:
        fast(srv, cache=tmp_path / "c").generate(convs(2), SamplingParams())  # no validator: cached as is
        assert len(RequestCache(tmp_path / "c")) == 2
        srv.reset_counts()
        out = fast(srv, cache=tmp_path / "c", validate=require_reasoning, malformed_retries=1).generate(
            convs(2), SamplingParams()
        )
        assert srv.requests == 4  # the cached malformed answers were not served
        assert all(g.status == "rejected" for gs in out for g in gs)


def test_request_cache_unit(tmp_path: Path) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    k = request_key("m", msgs, {"temperature": 0.5, "seed": 1}, 0)
    assert k == request_key("m", msgs, {"seed": 1, "temperature": 0.5}, 0)  # order-insensitive
    others = {
        request_key("m", msgs, {"temperature": 0.5, "seed": 1}, 1),
        request_key("m2", msgs, {"temperature": 0.5, "seed": 1}, 0),
        request_key("m", msgs, {"temperature": 0.5, "seed": 2}, 0),
        request_key("m", [{"role": "user", "content": "hi!"}], {"temperature": 0.5, "seed": 1}, 0),
    }
    assert k not in others and len(others) == 4
    cache = RequestCache(tmp_path / "rc")
    assert cache.get(k) is None
    cache.put(k, {"text": "hello"})
    assert (tmp_path / "rc" / k[:2] / f"{k}.json").exists()  # sharded by the first two hex chars
    assert cache.get(k) == {"text": "hello"} and k in cache and len(cache) == 1
    assert not list((tmp_path / "rc").rglob("*.tmp"))
    (tmp_path / "rc" / k[:2] / f"{k}.json").write_text("{torn")
    assert cache.get(k) is None  # unreadable entries are misses
    off = RequestCache(tmp_path / "off", enabled=False)
    off.put(k, {"text": "x"})
    assert off.get(k) is None and not (tmp_path / "off").exists()


# ------------------------------------------------------------------------------------------------- order, shape


def test_ordering_and_ids_with_concurrency() -> None:
    """Answers come back out of order; results still land on the right conversation and sample."""
    with FakeServer(latency_jitter=0.05, seed=5) as srv:
        gen = fast(srv, concurrency=8)
        order: list[int] = []
        got: dict[int, list[Generation]] = {}
        params = SamplingParams(n=3, seed=100, temperature=0.7)
        for idx, gens in gen.generate_batches(convs(30), params):
            assert not set(idx) & set(order)
            order.extend(idx)
            got.update(zip(idx, gens, strict=True))
        assert sorted(order) == list(range(30))
        assert order != list(range(30))  # completion order, not input order
        assert 1 < srv.max_in_flight <= 8
        for i in range(30):
            assert all(f"question {i}" in parse(g.text).answer for g in got[i])
            assert len({g.text for g in got[i]}) == 3  # three different draws
        ordered = gen.generate(convs(30), params)
        assert [[g.text for g in gs] for gs in ordered] == [[g.text for g in got[i]] for i in range(30)]


def test_reasoning_content_is_joined_back() -> None:
    assert join_reasoning("answer", None) == "answer"
    assert join_reasoning("answer", "  step  ") == "<think>\nstep\n</think>\nanswer"
    with FakeServer(reasoning_field=True) as srv:
        out = fast(srv, validate=require_reasoning).generate(convs(2), SamplingParams())
    for i, gs in enumerate(out):
        p = parse(gs[0].text)
        assert gs[0].ok and p.status == "ok" and p.reflections and p.answer.startswith("Here is my answer")
        assert f"question {i}" in p.answer
        assert gs[0].tokens > 0 and gs[0].finished


def test_works_inside_a_running_event_loop() -> None:
    with FakeServer() as srv:
        gen = fast(srv)

        async def main() -> list[list[Generation]]:
            return gen.generate(convs(3), SamplingParams())

        out = asyncio.run(main())
    assert [gs[0].ok for gs in out] == [True, True, True]


def test_stopping_early_cancels_the_rest() -> None:
    with FakeServer(latency=0.2) as srv:
        gen = fast(srv, concurrency=2, timeout=5)
        t0 = time.monotonic()
        for _ in gen.generate_batches(convs(40), SamplingParams()):
            break
        assert time.monotonic() - t0 < 3
        time.sleep(0.3)
        assert srv.requests < 10


def test_registry_and_bad_arguments() -> None:
    gen = make_generator("openai", model="m", base_url="http://127.0.0.1:9/v1", cache=False)
    assert isinstance(gen, OpenAIGenerator) and gen.name == "openai"
    with pytest.raises(SaroError, match="base_url"):
        make_generator("openai", model="m")
    with pytest.raises(SaroError, match="concurrency"):
        OpenAIGenerator(model="m", base_url="http://x/v1", concurrency=0)


def test_cache_is_off_by_default_and_cache_dir_turns_it_on(tmp_path: Path) -> None:
    assert not OpenAIGenerator(model="m", base_url="http://x/v1").cache.enabled
    gen = make_generator("openai", model="m", base_url="http://x/v1", cache_dir=str(tmp_path / "rc"))
    assert gen.cache.enabled and gen.cache.root == tmp_path / "rc"


def test_generation_defaults_are_backward_compatible() -> None:
    g = Generation("text", True, 3)
    assert g.status == "ok" and g.ok and g.error is None and not g.cached


# ------------------------------------------------------------------------------------------------- hf


def test_hf_backend_through_the_registry(tiny_model_dir: Path) -> None:
    """The local transformers teacher: n samples per conversation, results on the right index, status ok."""
    gen = make_generator("hf", model=str(tiny_model_dir), batch_size=4, dtype="float32")
    data = [*convs(2), [{"role": "user", "content": "a much longer question " * 6}]]
    chunks = list(gen.generate_batches(data, SamplingParams(n=2, max_new_tokens=6, temperature=0.8, seed=1)))
    assert sorted(i for idx, _ in chunks for i in idx) == [0, 1, 2]
    assert all(len(gs) == 2 and all(g.ok and 0 < g.tokens <= 6 for g in gs) for _, c in chunks for gs in c)
    budget = gen.generate(data[:1], SamplingParams(max_new_tokens=8, reasoning_budget=3))[0][0]
    assert budget.tokens <= 8 and "</think>" in budget.text  # the think block was closed for it
    gen.close()
