"""The ``vllm`` backend against a fake ``vllm`` module shaped like vLLM 0.2x-0.3x's offline API (``LLM``,
``SamplingParams``, ``vllm.inputs.TokensPrompt``): what reaches the engine is recorded and checked, one BOS for a
Llama-3 template and none added for ChatML, sampling settings passed through, the reasoning budget in two phases."""

from __future__ import annotations

import hashlib
import sys
import types
from typing import Any

import pytest

from saro.errors import SaroError
from saro.models.generate import SamplingParams, make_generator, render_prompts, row_seed
from saro.models.templates import install_template
from saro.reasoning import parse

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def convs(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"question {i}"}] for i in range(n)]


def _llama3_tokenizer() -> Any:
    """The SmolLM2 tokenizer given Llama-3's special tokens and, like Llama-3's, a post-processor that prepends
    ``<|begin_of_text|>`` whenever special tokens are added: what vLLM does to a text prompt."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from saro.models.embedded import embedded_model_dir

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    tok.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIALS})
    tok.bos_token = "<|begin_of_text|>"
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    assert tok("hi")["input_ids"][0] == bos  # the fake engine would add a BOS to text
    return tok


def _chatml_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from saro.models.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


def _fake_vllm(tok: Any, budget_cut: bool = False) -> tuple[types.ModuleType, dict[str, Any]]:
    """A stand-in ``vllm`` (with ``vllm.inputs``) that records the token ids the engine would run on. A text
    prompt is tokenized as vLLM does, with special tokens, so a backend sending text would show its extra BOS.

    It samples like vLLM: one SamplingParams or one per prompt; each of the ``n`` outputs of a request is drawn
    from (prompt, seed, output index) when temperature > 0, so equal requests with equal seeds give equal
    outputs and the n outputs of one request differ; at temperature 0 every output is the greedy one."""
    rec: dict[str, Any] = {"generate": []}

    class VSamplingParams:
        def __init__(self, **kw: Any) -> None:
            self.kw = kw

    class TokensPrompt(dict):
        pass

    def sample(p_ids: list[int], kw: dict[str, Any], j: int) -> str:
        key = str(p_ids) + (f"|{kw['seed']}|{j}" if kw.get("temperature", 1.0) > 0 else "")
        return f"answer {hashlib.sha256(key.encode()).hexdigest()[:8]}"

    class LLM:
        def __init__(self, **kw: Any) -> None:
            rec["llm"] = kw

        def get_tokenizer(self) -> Any:
            return tok

        def generate(self, prompts: list[Any], sp: Any, use_tqdm: bool = True) -> list[Any]:
            ids = [p["prompt_token_ids"] if isinstance(p, dict) else tok(p)["input_ids"] for p in prompts]
            sps = sp if isinstance(sp, list) else [sp] * len(prompts)
            assert len(sps) == len(prompts)
            rec["generate"].append(([type(p).__name__ for p in prompts], ids, [x.kw for x in sps]))
            outs = []
            for p_ids, one in zip(ids, sps, strict=True):
                text = tok.decode(p_ids)
                cut = budget_cut and "</think>" not in text
                comps = [
                    types.SimpleNamespace(
                        text="<think>\nthinking"
                        if cut
                        else ("final answer" if budget_cut else sample(p_ids, one.kw, j)),
                        token_ids=[1] * 4,
                        finish_reason="length" if cut else "stop",
                    )
                    for j in range(one.kw["n"])
                ]
                outs.append(types.SimpleNamespace(outputs=comps))
            return outs

    mod = types.ModuleType("vllm")
    mod.LLM = LLM  # type: ignore[attr-defined]
    mod.SamplingParams = VSamplingParams  # type: ignore[attr-defined]
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = TokensPrompt  # type: ignore[attr-defined]
    mod.inputs = inputs  # type: ignore[attr-defined]
    return mod, rec


def _install(monkeypatch: pytest.MonkeyPatch, mod: types.ModuleType) -> None:
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.inputs", mod.inputs)


def test_vllm_missing_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(SaroError, match=r"vllm is not installed; pip install 'saro\[gpu\]'"):
        make_generator("vllm", model="org/model")


def test_llama3_prompt_has_exactly_one_bos(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = _llama3_tokenizer()
    mod, rec = _fake_vllm(tok)
    _install(monkeypatch, mod)
    gen = make_generator("vllm", model="org/model", chat_template="llama3")
    gen.generate(convs(2), SamplingParams())
    kinds, ids, _ = rec["generate"][0]
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    assert kinds == ["TokensPrompt", "TokensPrompt"]
    for i, row in enumerate(ids):
        assert row[0] == bos and row.count(bos) == 1
        text = tok.apply_chat_template(convs(2)[i], tokenize=False, add_generation_prompt=True)
        assert text.count("<|begin_of_text|>") == 1
        assert tok.decode(row) == text  # the rendered template, token for token, nothing added
    # the control: the same text given to the engine as text would carry two BOS
    assert tok(tok.decode(ids[0]))["input_ids"].count(bos) == 2


def test_chatml_prompt_gets_no_added_special_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = _chatml_tokenizer()
    install_template(tok, "chatml")
    mod, rec = _fake_vllm(tok)
    _install(monkeypatch, mod)
    gen = make_generator("vllm", model="org/model")
    gen.generate(convs(1), SamplingParams())
    _, ids, _ = rec["generate"][0]
    text = tok.apply_chat_template(convs(1)[0], tokenize=False, add_generation_prompt=True)
    assert ids[0] == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids[0][:1]) == ["<|im_start|>"]
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")


def test_engine_and_sampling_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = _chatml_tokenizer()
    mod, rec = _fake_vllm(tok)
    _install(monkeypatch, mod)
    gen = make_generator(
        "vllm", model="org/model", tensor_parallel_size=4, gpu_memory_utilization=0.8, max_model_len=4096,
        batch_size=2, seed=3, enforce_eager=True,
    )  # fmt: skip
    assert rec["llm"] == {
        "model": "org/model",
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.8,
        "dtype": "auto",
        "seed": 3,
        "trust_remote_code": False,
        "max_model_len": 4096,
        "enforce_eager": True,
    }
    params = SamplingParams(n=2, temperature=0.7, top_p=0.9, seed=10, max_new_tokens=77)
    chunks = list(gen.generate_batches(convs(3), params))
    assert [idx for idx, _ in chunks] == [[0, 1], [2]]  # chunks of batch_size conversations
    _, _, kws = rec["generate"][0]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    prompts = render_prompts(gen.tok, convs(3))
    for i, kw in enumerate(kws):
        assert kw["stop_token_ids"] and im_end in kw["stop_token_ids"]
        assert {k: v for k, v in kw.items() if k != "stop_token_ids"} == {
            "n": 2, "max_tokens": 77, "seed": row_seed(10, prompts[i], 0), "temperature": 0.7, "top_p": 0.9,
        }  # fmt: skip
    assert rec["generate"][1][2][0]["seed"] == row_seed(10, prompts[2], 0)  # per prompt, not per chunk
    assert len({g.text for g in chunks[0][1][1]}) == 2  # two different samples
    assert all(g.finished and g.tokens == 4 and g.ok for gs in chunks[0][1] for g in gs)
    gen.generate(convs(1), SamplingParams(temperature=0.0))
    assert rec["generate"][-1][2][0]["temperature"] == 0.0 and rec["generate"][-1][2][0]["top_p"] == 1.0
    gen.close()


def test_k_samples_differ_and_do_not_depend_on_the_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """n=k gives k different samples; a prompt gets the same samples whichever chunk it lands in (a resumed stage
    samples what an uninterrupted one would have), and k copies of one prompt asked with n=1 are one sample."""
    tok = _chatml_tokenizer()
    mod, _ = _fake_vllm(tok)
    _install(monkeypatch, mod)
    params = SamplingParams(n=4, temperature=0.8, seed=5)
    whole = make_generator("vllm", model="org/model", batch_size=8).generate(convs(6), params)
    assert all(len({g.text for g in gs}) == 4 for gs in whole)
    tail = make_generator("vllm", model="org/model", batch_size=2).generate(convs(6)[3:], params)
    assert [[g.text for g in gs] for gs in tail] == [[g.text for g in gs] for gs in whole[3:]]
    copies = make_generator("vllm", model="org/model").generate(convs(1) * 4, SamplingParams(temperature=0.8))
    assert len({gs[0].text for gs in copies}) == 1


def test_reasoning_budget_is_two_phase_and_keeps_one_bos(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = _llama3_tokenizer()
    mod, rec = _fake_vllm(tok, budget_cut=True)
    _install(monkeypatch, mod)
    gen = make_generator("vllm", model="org/model", chat_template="llama3")
    out = gen.generate(convs(2), SamplingParams(n=2, max_new_tokens=100, reasoning_budget=30))
    (_, _, kw1), (_, ids2, kw2) = rec["generate"]
    assert all(k["max_tokens"] == 30 and k["n"] == 2 for k in kw1)
    assert (
        all(k["max_tokens"] == 70 and k["n"] == 1 for k in kw2) and len(ids2) == 4
    )  # every sample continued once
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    for row in ids2:
        assert row.count(bos) == 1 and tok.decode(row).endswith("<think>\nthinking\n</think>\n")
    for gs in out:
        for g in gs:
            parsed = parse(g.text)
            assert parsed.status == "ok" and parsed.reasoning == "thinking" and g.tokens == 8
