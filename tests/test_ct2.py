"""The ``ct2`` backend (CTranslate2): greedy ids equal transformers' ``generate`` on the tiny and the embedded model,
the conversion cache (reused, rebuilt for changed weights, a corrupt entry rebuilt, an unconvertible architecture
one line / exit 2), batches cut so that a resumed stage samples what a clean run sampled, prefilled turns, the
reasoning budget, end-of-turn stops, streaming and the shared static prompt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from saro.errors import SaroError
from saro.models import ct2_convert
from saro.models.backends import local_generator
from saro.models.ct2 import STATIC_PROMPT_MIN, CT2Generator, max_spread, plan_batches, shared_prefix
from saro.models.generate import HFGenerator, SamplingParams, encode_prompts, make_generator, render_prompts

PROMPTS = [
    "hi",
    "Tell me about the history of bread making in a few sentences, please.",
    "What is two plus two?",
    "Write a short poem about the sea, the wind, the gulls, and a small boat coming home at dusk.",
    "Name three fruits.",
    "How do I kill a Python process that hangs?",
]


def _convs(texts: list[str], system: str | None = None) -> list[list[dict[str, str]]]:
    head = [{"role": "system", "content": system}] if system else []
    return [[*head, {"role": "user", "content": t}] for t in texts]


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model with wide random weights, saved (the default init repeats one token; these vary)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.5)
    out = tmp_path_factory.mktemp("wide") / "model"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pair(wide_dir: Path) -> tuple[HFGenerator, CT2Generator]:
    return (
        HFGenerator.from_source(str(wide_dir), batch_size=4, dtype="float32"),
        CT2Generator.from_source(str(wide_dir), batch_size=4),
    )


def _margins(hf: HFGenerator, convs: list[Any], max_new: int) -> list[float]:
    """Per prompt, the smallest gap between the two best logits along transformers' greedy path."""
    out = []
    for text in render_prompts(hf.tok, convs):
        enc = hf.tok([text], return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            res = hf.model.generate(
                **enc,
                max_new_tokens=max_new,
                do_sample=False,
                eos_token_id=hf.eos_ids(),
                pad_token_id=hf.tok.pad_token_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
        gaps = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in res.scores]
        out.append(min(gaps))
    return out


def test_greedy_ids_equal_transformers_on_the_tiny_model(pair: tuple[HFGenerator, CT2Generator]) -> None:
    """Token for token (texts, counts, finished flags). The random tiny model's greedy path has no near-tie on
    these prompts (the smallest top-2 logit gap is checked), so the comparison is well defined on all of them."""
    hf, ct = pair
    convs = _convs(PROMPTS)
    assert min(_margins(hf, convs, 16)) > 1e-3
    params = SamplingParams(max_new_tokens=16)
    want = [g[0] for g in hf.generate(convs, params)]
    got = [g[0] for g in ct.generate(convs, params)]
    assert [(g.text, g.tokens, g.finished) for g in got] == [(g.text, g.tokens, g.finished) for g in want]


def test_greedy_ids_equal_transformers_on_the_embedded_model() -> None:
    """The real model: a batch of prompts of different lengths (CTranslate2 steps through the longer ones), rows
    that stop on the end-of-turn token and rows cut by max_new_tokens, a prefilled assistant turn, and a batch
    sharing the policy_reasoning system prompt and exemplars (run as a static prompt)."""
    from saro.evaluate.methods import build_conversation
    from saro.policy import load_policy

    hf = HFGenerator.from_source("embedded", batch_size=8, dtype="float32")
    ct = CT2Generator.from_source("embedded", batch_size=8)
    plain = _convs(PROMPTS[:5])
    lengths = [len(x) for x in encode_prompts(ct.tok, render_prompts(ct.tok, plain))]
    plan = plan_batches(lengths, [str(i) for i in range(5)], 8, max_spread(16))
    assert any(len({lengths[i] for i in b}) > 1 for b in plan)  # a batch of unequal lengths
    prefilled = [
        [{"role": "user", "content": "How do I bake bread?"}, {"role": "assistant", "content": "Sure,"}]
    ]
    shared = [build_conversation(t, "policy_reasoning", load_policy(None)) for t in PROMPTS[:2]]
    assert shared_prefix(encode_prompts(ct.tok, render_prompts(ct.tok, shared))) >= STATIC_PROMPT_MIN
    flags = set()
    for convs in (plain, prefilled, shared):
        params = SamplingParams(max_new_tokens=16)
        want = [(g[0].text, g[0].tokens, g[0].finished) for g in hf.generate(convs, params)]
        got = [(g[0].text, g[0].tokens, g[0].finished) for g in ct.generate(convs, params)]
        assert got == want
        flags |= {g[2] for g in got}
    assert flags == {True, False}  # both an end-of-turn stop and a cut row were compared


def test_reasoning_budget_and_streaming_match_the_hf_backend(pair: tuple[HFGenerator, CT2Generator]) -> None:
    """The budget closes the think block as the HF backend does; streamed pieces add up to each text (greedy and
    sampled rows, n > 1, in one call)."""
    hf, ct = pair
    convs = _convs(PROMPTS[:3])
    budget = SamplingParams(max_new_tokens=12, reasoning_budget=5)
    assert [g[0].text for g in ct.generate(convs, budget)] == [g[0].text for g in hf.generate(convs, budget)]
    pieces: dict[tuple[int, int], str] = {}

    def on_text(i: int, k: int, piece: str) -> None:
        pieces[(i, k)] = pieces.get((i, k), "") + piece

    params = [
        SamplingParams(max_new_tokens=10),
        SamplingParams(max_new_tokens=10, temperature=1.0, n=2, seed=4),
    ]
    out = ct.generate_rows(convs[:2], params, on_text)
    assert [len(o) for o in out] == [1, 2] and out[1][0].text != out[1][1].text
    assert {(i, k): g.text for i, o in enumerate(out) for k, g in enumerate(o)} == pieces
    assert out[0][0].text == hf.generate(convs[:1], params[0])[0][0].text


def test_sampling_depends_on_batch_mates_in_ctranslate2(wide_dir: Path) -> None:
    """The experiment behind the seeding design: with one seed, a prompt sampled alone and the same prompt
    sampled beside another give different samples (CTranslate2 draws all rows from one generator), and
    ``set_random_seed`` only takes effect on an engine that has not sampled yet."""
    import ctranslate2

    from saro.models.ct2_convert import converted_model

    ct = CT2Generator.from_source(str(wide_dir))
    a, b = (
        ct.tok.convert_ids_to_tokens(x)
        for x in encode_prompts(ct.tok, render_prompts(ct.tok, _convs(PROMPTS[:2])))
    )
    kw = {"max_length": 24, "sampling_topk": 0, "include_prompt_in_result": False, "end_token": []}

    def sample(batch: list[list[str]], fresh: bool) -> list[int]:
        ctranslate2.set_random_seed(7)
        engine = (
            ctranslate2.Generator(str(converted_model(wide_dir)), intra_threads=1) if fresh else ct.engine
        )
        return engine.generate_batch(batch, **kw)[0].sequences_ids[0]

    alone = sample([a], fresh=True)
    assert sample([a], fresh=True) == alone  # a fresh engine with the same seed: the same sample
    assert sample([a, b], fresh=True) != alone  # a batch-mate changes the sample of the first row
    sample([a], fresh=False)
    assert sample([a], fresh=False) != alone  # a used engine ignores the new seed


def test_resumed_sampling_equals_a_clean_run(pair: tuple[HFGenerator, CT2Generator]) -> None:
    """Kill/resume: after some batches were written, a resumed stage passes only the prompts left; they sample
    exactly what the clean run sampled. n samples of one prompt are n different samples."""
    _, ct = pair
    convs = _convs([f"{t} ({i})" for i, t in enumerate(PROMPTS * 2)])
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=2, seed=3)
    batches = list(ct.generate_batches(convs, params))
    assert len(batches) >= 3
    clean = {i: [g.text for g in gens] for idx, out in batches for i, gens in zip(idx, out, strict=True)}
    assert all(len(set(v)) == 2 for v in clean.values())
    for written in ([0], [0, 1], [1]):  # the first batches done; or a later one (another order of work)
        done = {i for w in written for i in batches[w][0]}
        left = [i for i in range(len(convs)) if i not in done]
        resumed = ct.generate([convs[i] for i in left], params)
        assert {i: [g.text for g in gens] for i, gens in zip(left, resumed, strict=True)} == {
            i: clean[i] for i in left
        }
    assert [[g.text for g in o] for o in ct.generate(convs, params)] == [clean[i] for i in range(len(convs))]
    other = ct.generate(convs, SamplingParams(max_new_tokens=8, temperature=1.0, n=2, seed=4))
    assert [[g.text for g in o] for o in other] != [clean[i] for i in range(len(convs))]


def test_batches_are_cut_from_the_rows_themselves() -> None:
    """Sorted by (length, key), cut at the size or the spread, longest batch first; removing whole batches leaves
    the others as they were, and a partly written batch's remainder forms a batch of its own."""
    lengths = [10, 11, 12, 13, 40, 41, 90, 12, 11]
    keys = [f"k{i}" for i in range(len(lengths))]
    plan = plan_batches(lengths, keys, size=3, spread=16)
    assert plan == [[6], [4, 5], [2, 7, 3], [0, 1, 8]]
    for drop in ([0], [1], [2], [1, 3], [0, 2]):
        gone = {i for d in drop for i in plan[d]}
        keep = [i for i in range(len(lengths)) if i not in gone]
        sub = plan_batches([lengths[i] for i in keep], [keys[i] for i in keep], 3, 16)
        assert [[keep[j] for j in b] for b in sub] == [b for k, b in enumerate(plan) if k not in drop]
    keep = [i for i in range(len(lengths)) if i not in (6, 2)]  # batch 0 done, batch 2 half written
    sub = plan_batches([lengths[i] for i in keep], [keys[i] for i in keep], 3, 16)
    assert [[keep[j] for j in b] for b in sub] == [[4, 5], [7, 3], [0, 1, 8]]


# ------------------------------------------------------------------------------------------ conversion cache


def _count_conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = ct2_convert._convert

    def counting(folder: Path, out: Path, quantization: str) -> None:
        calls.append(folder)
        real(folder, out, quantization)

    monkeypatch.setattr(ct2_convert, "_convert", counting)
    return calls


def test_conversion_cache_reuse_rebuild_and_corruption(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    monkeypatch.setenv("SARO_CACHE", str(tmp_path / "cache"))
    calls = _count_conversions(monkeypatch)
    src = tmp_path / "model"
    shutil.copytree(tiny_model_dir, src)
    first = ct2_convert.converted_model(src)
    assert ct2_convert.converted_model(src) == first and len(calls) == 1  # reused, not converted again
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    assert ct2_convert.converted_model(copy) == first and len(calls) == 1  # same bytes, same entry

    weights = load_file(src / "model.safetensors")
    name = next(k for k in weights if "layers.0" in k)
    weights[name] = weights[name] + 1.0
    save_file(weights, src / "model.safetensors", metadata={"format": "pt"})
    changed = ct2_convert.converted_model(src)
    assert changed != first and len(calls) == 2  # other weights: another entry
    assert (
        ct2_convert.converted_model(copy) == first and len(calls) == 2
    )  # the old one still serves its bytes

    marker = json.loads((first / ct2_convert.MARKER).read_text())
    bin_file = first / "model.bin"
    data = bytearray(bin_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    bin_file.write_bytes(bytes(data))
    assert ct2_convert.converted_model(copy) == first and len(calls) == 3  # detected and rebuilt
    assert json.loads((first / ct2_convert.MARKER).read_text())["files"] == marker["files"]
    killed = first.parent / f".tmp-{first.name}-killed"  # what a conversion killed mid-way leaves
    killed.mkdir()
    (first / ct2_convert.MARKER).unlink()  # an entry without its marker is never used
    assert ct2_convert.converted_model(copy) == first and len(calls) == 4 and not killed.exists()
    (first / "vocabulary.json").unlink()
    assert ct2_convert.converted_model(copy) == first and len(calls) == 5
    assert CT2Generator.from_source(str(copy)).generate(_convs(["hi"]), SamplingParams(max_new_tokens=2))


def test_unconvertible_architecture_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer, GraniteConfig, GraniteForCausalLM

    from saro.models.embedded import embedded_model_dir

    monkeypatch.setenv("SARO_CACHE", str(tmp_path / "cache"))
    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    cfg = GraniteConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    folder = tmp_path / "granite"
    GraniteForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    with pytest.raises(SaroError, match=r"granite: CTranslate2 cannot convert .*GraniteForCausalLM"):
        CT2Generator.from_source(str(folder))
    assert not list((tmp_path / "cache" / "ct2").glob(".tmp-*"))  # nothing half-written left behind
    env = {**os.environ, "SARO_CACHE": str(tmp_path / "cache")}
    res = subprocess.run(
        [sys.executable, "-m", "saro", "serve", str(folder), "--backend", "ct2"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "GraniteForCausalLM" in res.stderr and "Traceback" not in res.stderr
    for make in (lambda: local_generator(str(folder), "nope"), lambda: make_generator("nope", model="x")):
        with pytest.raises(SaroError, match="unknown generation backend 'nope'"):
            make()
