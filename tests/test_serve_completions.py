"""``saro serve``'s legacy ``/v1/completions``: text, ``logprobs`` and ``echo`` computed by the model itself,
checked against a direct forward pass on the tiny model, through the official ``openai`` client and lm-eval."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from saro.serve import BackgroundServer, create_app
from saro.serve.scoring import Scored, _pieces, _trim, token_texts

openai = pytest.importorskip("openai")

PROMPT = "The quick brown fox jumps over the lazy dog. Then it"


@pytest.fixture(scope="module", params=["hf", "ct2"])
def server(tiny_model_dir: Path, request: pytest.FixtureRequest) -> Iterator[BackgroundServer]:
    """Served by each engine (ct2 scores with the transformers model it loads beside its engine)."""
    app = create_app(
        str(tiny_model_dir), model_name="tiny", api_key="", batch_wait_ms=0, backend=request.param
    )
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> tuple[Any, Any]:
    """The same model and tokenizer, loaded directly with transformers (the reference forward pass)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32").eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _logprobs(model: Any, ids: list[int]) -> Any:
    import torch

    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)


def _client(srv: BackgroundServer) -> Any:
    return openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0, timeout=60)


def test_echo_logprobs_equal_a_direct_forward_pass(
    server: BackgroundServer, reference: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    model, tok = reference
    ids = tok(PROMPT)["input_ids"]
    with caplog.at_level(logging.INFO, logger="saro"):
        r = _client(server).completions.create(
            model="tiny", prompt=PROMPT, max_tokens=0, echo=True, logprobs=3
        )
    assert f"POST /v1/completions 200 prompt={len(ids)} completion=0" in caplog.text
    assert "quick brown fox" not in caplog.text  # sizes in the log, never the text
    choice = r.choices[0]
    lp = choice.logprobs
    assert choice.text == PROMPT and len(lp.tokens) == len(ids) and "".join(lp.tokens) == PROMPT
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # the first token has no context
    ref = _logprobs(model, ids)
    for j in range(1, len(ids)):
        assert abs(lp.token_logprobs[j] - float(ref[j - 1, ids[j]])) < 1e-5
        top = ref[j - 1].topk(3)
        expected = {
            tok.decode([t]): v for t, v in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        }
        assert lp.top_logprobs[j].keys() == expected.keys()
        assert all(abs(lp.top_logprobs[j][k] - v) < 1e-5 for k, v in expected.items())
    assert lp.text_offset == [len("".join(lp.tokens[:j])) for j in range(len(ids))]
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 0
    assert choice.finish_reason == "length" and r.object == "text_completion"


def test_greedy_completion_with_logprobs(server: BackgroundServer, reference: tuple) -> None:
    """Greedy tokens are the argmax of a direct forward pass over prompt + completion, with those logprobs."""
    model, tok = reference
    prompt_ids = tok(PROMPT)["input_ids"]
    r = _client(server).completions.create(
        model="tiny", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=1
    )
    choice = r.choices[0]
    lp = choice.logprobs
    n = len(lp.tokens)
    assert 1 <= n <= 6 and r.usage.completion_tokens == n
    gen_ids = tok(PROMPT + choice.text, add_special_tokens=False)["input_ids"][len(prompt_ids) :]
    ref = _logprobs(model, prompt_ids + gen_ids)
    for j in range(len(gen_ids)):
        row = ref[len(prompt_ids) + j - 1]
        assert int(row.argmax()) == gen_ids[j]  # greedy
        assert abs(lp.token_logprobs[j] - float(row.max())) < 1e-4  # incremental (KV cache) vs full pass
        assert next(iter(lp.top_logprobs[j].values())) == lp.token_logprobs[j]  # greedy: its own top-1
    assert lp.text_offset[0] == 0 and "".join(lp.tokens[: len(gen_ids)]) == choice.text


def test_prompt_forms_streaming_and_stop(server: BackgroundServer, reference: tuple) -> None:
    _, tok = reference
    c = _client(server)
    ids = tok(PROMPT)["input_ids"]
    as_text = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0)
    as_ids = c.completions.create(model="tiny", prompt=ids, max_tokens=8, temperature=0)
    both = c.completions.create(model="tiny", prompt=[PROMPT, "Another one"], max_tokens=8, temperature=0)
    assert as_text.choices[0].text == as_ids.choices[0].text == both.choices[0].text
    assert [ch.index for ch in both.choices] == [0, 1] and both.choices[1].text
    chunks = list(c.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == as_text.choices[0].text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices[0].finish_reason] == [
        as_text.choices[0].finish_reason
    ]
    text = as_text.choices[0].text
    stop = text[2:5]
    cut = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[: text.find(stop)] and cut.choices[0].finish_reason == "stop"
    a, b = (c.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, seed=5) for _ in range(2))
    assert a.choices[0].text == b.choices[0].text  # sampling is seeded


def test_stop_trims_the_scored_tokens(reference: tuple) -> None:
    _, tok = reference
    ids = tok(" alpha beta gamma", add_special_tokens=False)["input_ids"]
    gen = Scored(list(ids), [-1.0] * len(ids), [[]] * len(ids))
    _trim(gen, tok, len(" alpha"))
    assert tok.decode(gen.ids) == " alpha"
    gen = Scored(list(ids), [-1.0] * len(ids), [[]] * len(ids))
    _trim(gen, tok, 0)
    assert gen.ids == [] and gen.logprobs == []


@pytest.mark.parametrize(
    "text",
    ["plain words, a few of them", "日本語のテキスト🙂 and emoji 🧪 mixed", "<|im_start|>user\nhi<|im_end|>"],
)
def test_token_texts_join_to_the_decoded_text(reference: tuple, text: str) -> None:
    _, tok = reference
    ids = tok(text)["input_ids"]
    whole = tok.decode(ids)
    for texts in (token_texts(tok, ids, False), _pieces(tok, ids, False, 6), _pieces(tok, ids, False, None)):
        assert len(texts) == len(ids) and "".join(texts) == whole
        assert "\ufffd" not in "".join(texts)  # a character split over tokens goes whole to its last token


def _post(srv: BackgroundServer, body: Any) -> httpx.Response:
    return httpx.post(srv.url + "/completions", content=json.dumps(body).encode(), timeout=60)


def test_bad_completion_requests(server: BackgroundServer) -> None:
    ok = {"model": "tiny", "prompt": "hi"}
    cases = [
        ({"model": "tiny"}, 400, "prompt"),
        ({**ok, "prompt": []}, 400, "prompt"),
        ({**ok, "prompt": ""}, 400, "prompt"),
        ({**ok, "prompt": [10**9]}, 400, "prompt"),
        ({**ok, "logprobs": 50}, 400, "logprobs"),
        ({**ok, "n": 2}, 400, "n"),
        ({**ok, "max_tokens": -1}, 400, "max_tokens"),
        ({**ok, "stream": True, "logprobs": 1}, 400, "stream"),
        ({**ok, "max_tokens": 10**6}, 400, "max_tokens"),
        ({**ok, "model": "gpt-9"}, 404, "model"),
    ]
    for body, status, param in cases:
        r = _post(server, body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["param"] == param, body


def test_completions_need_an_in_process_model() -> None:
    from test_serve import ScriptedGenerator

    with BackgroundServer(create_app(ScriptedGenerator(), model_name="s", api_key="")) as srv:
        r = _post(srv, {"model": "s", "prompt": "hi"})
        assert r.status_code == 400 and "in-process model" in r.json()["error"]["message"]


def test_lm_eval_local_completions_loglikelihood(server: BackgroundServer, reference: tuple) -> None:
    """lm-eval's ``local-completions`` model scores a continuation through the server (token-id requests)."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("tenacity")  # lm-eval's [api] extra
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    model, tok = reference
    tiny_dir = model.config.name_or_path
    lm = LocalCompletionsAPI(
        base_url=server.url + "/completions",
        model="tiny",
        tokenizer=tiny_dir,
        tokenizer_backend="huggingface",
        max_retries=1,
    )
    context, continuation = "The capital of France is", " Paris"
    req = Instance(request_type="loglikelihood", doc={}, arguments=(context, continuation), idx=0)
    [(logprob, is_greedy)] = lm.loglikelihood([req])
    ctx_ids, cont_ids = tok(context)["input_ids"], tok(continuation, add_special_tokens=False)["input_ids"]
    ref = _logprobs(model, ctx_ids + cont_ids)
    expected = sum(float(ref[len(ctx_ids) + j - 1, t]) for j, t in enumerate(cont_ids))
    greedy = all(int(ref[len(ctx_ids) + j - 1].argmax()) == t for j, t in enumerate(cont_ids))
    assert abs(logprob - expected) < 1e-4 and is_greedy == greedy
