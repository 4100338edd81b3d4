"""The ``openai_batch`` backend against a local fake Batch API: the request file, results mapped by custom_id,
faults (500 on create, failed/expired batches, error-file items, malformed lines) and a SIGKILL while waiting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakeserver import FakeBatchServer
from saro.errors import SaroError
from saro.models.generate import SamplingParams, make_generator
from saro.models.openai_batch import STATE, OpenAIBatchGenerator


def convs(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"question {i}"}] for i in range(n)]


def _gen(srv: FakeBatchServer, tmp: Path, **kw: Any) -> OpenAIBatchGenerator:
    return OpenAIBatchGenerator(model="gpt-4o", base_url=srv.url, state_dir=tmp, poll_interval=0.01, **kw)


def test_batch_round_trip_through_the_registry(tmp_path: Path) -> None:
    with FakeBatchServer() as srv:
        gen = make_generator(
            "openai_batch", model="gpt-4o", base_url=srv.url, state_dir=tmp_path, poll_interval=0.01
        )
        out = gen.generate(convs(3), SamplingParams(n=2, temperature=0.7, max_new_tokens=50, seed=4))
    assert srv.batches_created == 1 and srv.uploads == 1 and srv.batch_sizes == [6]
    request = json.loads(srv.files["file-0"].splitlines()[0])
    assert request["method"] == "POST" and request["url"] == "/v1/chat/completions"
    assert request["body"]["max_tokens"] == 50 and request["body"]["model"] == "gpt-4o"
    for i, gs in enumerate(out):
        assert len(gs) == 2 and all(g.ok and g.text.endswith(f"answer to question {i}") for g in gs)
        assert all(g.tokens == 7 and g.finished for g in gs)
    assert not (tmp_path / STATE).exists()  # the finished batch is forgotten; results stay
    with FakeBatchServer() as srv2:  # a re-run answers from the stage folder, no new batch
        again = _gen(srv2, tmp_path).generate(
            convs(3), SamplingParams(n=2, temperature=0.7, max_new_tokens=50, seed=4)
        )
    assert srv2.batches_created == 0 and [g.text for gs in again for g in gs] == [
        g.text for gs in out for g in gs
    ]


def test_faults_are_retried_in_new_batches(tmp_path: Path) -> None:
    with FakeBatchServer(
        create_500=2, batch_fates=["expired", "failed"], malformed_lines=2,
        error_ids=lambda msgs: msgs[-1]["content"] == "question 1",
    ) as srv:  # fmt: skip
        gen = _gen(srv, tmp_path, max_rounds=4)
        out = gen.generate(convs(4), SamplingParams())
    # round 1 expired (half answered, q1 in the error file), round 2 failed, round 3 answers the rest but q1
    assert srv.batches_created == 4 and srv.batch_sizes[:3] == [4, 3, 3]
    assert gen.stats["malformed_lines"] == 2
    assert [gs[0].ok for gs in out] == [True, False, True, True]
    assert out[1][0].status == "error" and "batch item error" in (out[1][0].error or "")


def test_bounded_rounds_and_rejected_answers(tmp_path: Path) -> None:
    with FakeBatchServer(answer=lambda msgs: "no reasoning here") as srv:
        gen = _gen(
            srv, tmp_path, max_rounds=2, validate=lambda t: None if "<think>" in t else "no think block"
        )
        out = gen.generate(convs(2), SamplingParams())
    assert srv.batches_created == 2
    assert all(gs[0].status == "rejected" and "no think block" in (gs[0].error or "") for gs in out)


def test_bad_configuration_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SaroError, match="state_dir"):
        OpenAIBatchGenerator(model="m", base_url="http://x/v1")
    with pytest.raises(SaroError, match="http"):
        OpenAIBatchGenerator(model="m", base_url="x", state_dir=tmp_path)
    (tmp_path / STATE).write_text("{broken")
    with FakeBatchServer() as srv, pytest.raises(SaroError, match="unreadable batch state"):
        _gen(srv, tmp_path).generate(convs(1), SamplingParams())


CHILD = """
import sys
from saro.models.openai_batch import OpenAIBatchGenerator
from saro.models.generate import SamplingParams
convs = [[{"role": "user", "content": f"question {i}"}] for i in range(5)]
gen = OpenAIBatchGenerator(model="gpt-4o", base_url=sys.argv[1], state_dir=sys.argv[2], poll_interval=0.01, poll_max=0.05)
gen.generate(convs, SamplingParams())
"""


def test_killed_while_waiting_resumes_the_same_batch(tmp_path: Path) -> None:
    with FakeBatchServer(polls_to_complete=10**9) as srv:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        child = subprocess.Popen([sys.executable, "-c", CHILD, srv.url, str(tmp_path)], env=env)
        deadline = time.monotonic() + 60
        while not (srv.batches_created == 1 and srv.polls >= 2 and (tmp_path / STATE).exists()):
            assert time.monotonic() < deadline and child.poll() is None, "the child did not reach the wait"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        srv.polls_to_complete = 1
        out = _gen(srv, tmp_path).generate(convs(5), SamplingParams())
    assert srv.batches_created == 1 and srv.uploads == 1  # no second batch was paid for
    assert [gs[0].text.endswith(f"answer to question {i}") for i, gs in enumerate(out)] == [True] * 5


def test_n_samples_are_n_lines_with_their_own_seeds(tmp_path: Path) -> None:
    """k samples of one conversation are k request lines with seeds seed..seed+k-1 and k different answers (one
    line asked k times would be one answer: lines are keyed by their content)."""
    with FakeBatchServer() as srv:
        out = _gen(srv, tmp_path).generate(convs(3), SamplingParams(n=4, temperature=0.8, seed=7))
    lines = [json.loads(x) for x in srv.files["file-0"].splitlines()]
    assert len(lines) == 12 and sorted({x["body"]["seed"] for x in lines}) == [7, 8, 9, 10]
    assert all(len({g.text for g in gs}) == 4 and all(g.ok for g in gs) for gs in out)
