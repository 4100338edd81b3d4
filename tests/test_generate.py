"""The HF backend over ``model.generate``: greedy and sampled rows equal plain ``generate``'s (sampling with the
model's generation config), per-row seeds independent of the batch (a resumed run samples what a clean one did),
flags and counts, streaming; prefilled assistant turns in ``render_prompts``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import trl

from saro.errors import SaroError
from saro.models.generate import HFGenerator, SamplingParams, render_prompts
from saro.models.sampling import row_seed
from saro.reasoning import close_reasoning

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
PROMPTS = [
    "hi",
    "Tell me about the history of bread making in a few sentences, please.",
    "What is two plus two?",
    "Write a short poem about the sea, the wind, the gulls, and a small boat coming home at dusk.",
]


def _plain_generate(
    model: Any, enc: dict[str, Any], max_new: int, eos: list[int], pad: int, **kw: Any
) -> list[list[int]]:
    """``model.generate`` token ids per row, cut after the first eos (the reference); greedy unless ``kw``."""
    sampling = kw or {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new, eos_token_id=eos, pad_token_id=pad, **sampling)
    rows = []
    for row in out[:, enc["input_ids"].shape[1] :].tolist():
        cut = next((j + 1 for j, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:cut])
    return rows


def _staggering_stop(rows: list[list[int]]) -> int:
    """A token that, taken as eos, ends the rows at the most different steps (some rows not at all)."""

    def ends(t: int) -> set[int]:
        return {r.index(t) if t in r else len(r) for r in rows}

    return max(sorted({t for r in rows for t in r}), key=lambda t: len(ends(t)))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> HFGenerator:
    """The tiny model with wide random weights: the default init repeats one token; these vary from step to step."""
    g = HFGenerator.from_source(str(tiny_model_dir), batch_size=4)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in g.model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.5)
    return g


def _encode(g: HFGenerator, texts: list[str]) -> dict[str, Any]:
    convs = [[{"role": "user", "content": t}] for t in texts]
    return dict(
        g.tok(render_prompts(g.tok, convs), return_tensors="pt", padding=True, add_special_tokens=False)
    )


def _convs(texts: list[str]) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": t}] for t in texts]


def test_greedy_ids_match_generate_when_rows_finish_early(
    tiny: HFGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Greedy texts, counts and flags equal plain ``generate``'s when rows finish at different steps: the "eos" is
    a token the random model emits early in some rows and never in others."""
    enc = _encode(tiny, PROMPTS)
    pad = tiny.tok.pad_token_id
    free = _plain_generate(tiny.model, enc, 16, [tiny.tok.eos_token_id], pad)
    eos = [tiny.tok.eos_token_id, _staggering_stop(free)]
    want = _plain_generate(tiny.model, enc, 16, eos, pad)
    assert len({len(r) for r in want}) > 1, "the chosen stop token should end rows at different steps"
    monkeypatch.setattr(tiny, "eos_ids", lambda: eos)
    gens = [g[0] for g in tiny.generate(_convs(PROMPTS), SamplingParams(max_new_tokens=16))]
    for g, row in zip(gens, want, strict=True):
        finished = row[-1] in eos
        body = row[:-1] if finished else row
        assert (g.text, g.tokens, g.finished) == (
            tiny.tok.decode(body, skip_special_tokens=True),
            len(body),
            finished,
        )
        assert g.tokens == (
            len(row) - 1 if finished else 16
        )  # the eos is not counted; a cut row has them all


def test_sampling_matches_plain_generate_with_the_generation_config(tiny: HFGenerator) -> None:
    """A sampled row is the sample plain ``generate(do_sample=True)`` draws with the same seed: the request's
    temperature and top_p, the model's generation config for top_k and repetition_penalty (transformers' warpers,
    softmax, ``torch.multinomial``). Changing the config changes the sample, so the config is really read."""
    enc = _encode(tiny, PROMPTS[3:])
    eos, pad = tiny.eos_ids(), tiny.tok.pad_token_id
    params = SamplingParams(max_new_tokens=12, temperature=0.8, top_p=0.9, seed=5)
    config = tiny.model.generation_config
    saved = (config.top_k, config.repetition_penalty)
    try:
        outs = []
        for top_k, penalty in ((5, 1.3), (None, 1.0)):
            config.top_k, config.repetition_penalty = top_k, penalty
            tiny.sampling = type(tiny.sampling).of(config)
            torch.manual_seed(5)
            (want,) = _plain_generate(
                tiny.model, enc, 12, eos, pad, do_sample=True, temperature=0.8, top_p=0.9
            )
            (got,) = tiny.generate_rows(_convs(PROMPTS[3:]), [params])[0]
            body = want[:-1] if want[-1] in eos else want
            assert got.text == tiny.tok.decode(body, skip_special_tokens=True) and got.tokens == len(body)
            outs.append(got.text)
        assert outs[0] != outs[1]
    finally:
        config.top_k, config.repetition_penalty = saved
        tiny.sampling = type(tiny.sampling).of(config)


def test_resumed_sampling_equals_a_clean_run(tiny: HFGenerator) -> None:
    """Kill/resume: a run that generates the first half, then (resumed) the second half, samples exactly what a
    clean run over all prompts sampled; n samples of one prompt are n different samples."""
    convs = _convs([f"{t} ({i})" for i, t in enumerate(PROMPTS * 2)])
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=2, seed=3)
    clean = tiny.generate(convs, params)
    half = len(convs) // 2
    resumed = tiny.generate(convs[:half], params) + tiny.generate(convs[half:], params)
    assert [[g.text for g in o] for o in resumed] == [[g.text for g in o] for o in clean]
    assert all(o[0].text != o[1].text for o in clean)
    prompt = render_prompts(tiny.tok, convs[:1])[0]
    assert row_seed(3, prompt, 0) != row_seed(3, prompt, 1) != row_seed(4, prompt, 1)


def test_streamed_pieces_add_up_when_rows_finish_early(
    tiny: HFGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = _encode(tiny, PROMPTS)
    free = _plain_generate(tiny.model, enc, 12, [tiny.tok.eos_token_id], tiny.tok.pad_token_id)
    monkeypatch.setattr(tiny, "eos_ids", lambda: [tiny.tok.eos_token_id, _staggering_stop(free)])
    pieces: dict[tuple[int, int], str] = {}

    def on_text(i: int, k: int, piece: str) -> None:
        pieces[(i, k)] = pieces.get((i, k), "") + piece

    params = [
        SamplingParams(max_new_tokens=12),
        *[SamplingParams(max_new_tokens=12, temperature=1.0, n=2)] * 3,
    ]
    out = tiny.generate_rows(_convs(PROMPTS), params, on_text)
    assert any(g.finished for o in out for g in o) and any(not g.finished for o in out for g in o)
    for i, gens in enumerate(out):
        for k, g in enumerate(gens):
            assert pieces.get((i, k), "") == g.text


def test_sampled_rows_keep_their_own_draws_when_a_mate_finishes(tiny: HFGenerator) -> None:
    """Per-row seeded sampling: the same seeds give the same samples, different seeds differ, and a greedy row
    in the batch stays plain greedy while sampled rows run on."""
    convs = _convs(PROMPTS[:3])
    params = [
        SamplingParams(max_new_tokens=10),
        SamplingParams(max_new_tokens=10, temperature=1.0, seed=4),
        SamplingParams(max_new_tokens=10, temperature=0.9, top_p=0.8, seed=7, n=2),
    ]
    a = tiny.generate_rows(convs, params)
    b = tiny.generate_rows(convs, params)
    assert [[g.text for g in o] for o in a] == [[g.text for g in o] for o in b]
    assert a[2][0].text != a[2][1].text
    assert a[0][0].text == tiny.generate(convs[:1], params[0])[0][0].text
    assert a[1][0].text == tiny.generate_rows(convs[1:2], params[1:2])[0][0].text  # alone: the same draw


def test_reasoning_budget_closes_the_think_block(tiny: HFGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row still thinking after the budget gets its think block closed for it (``close_reasoning``) and answers
    with the tokens left; the streamed pieces are the first part, the closing tag, then the answer."""
    monkeypatch.setattr(tiny, "eos_ids", lambda: [tiny.tok.eos_token_id])
    pieces: list[str] = []
    params = SamplingParams(max_new_tokens=10, reasoning_budget=4)
    (gen,) = tiny.generate_rows(_convs(PROMPTS[:1]), [params], lambda i, k, p: pieces.append(p))[0]
    first = tiny.generate(_convs(PROMPTS[:1]), SamplingParams(max_new_tokens=4))[0][0]
    head = close_reasoning(first.text)
    assert gen.text.startswith(head) and head.endswith("</think>\n") and gen.tokens == 10
    assert "".join(pieces) == first.text + "\n</think>\n" + gen.text[len(head) :]


def test_embedded_model_greedy_ids_match_generate() -> None:
    """The real embedded model, a batch of prompts of different lengths: same greedy ids as ``generate``."""
    from saro.models.loading import load_model, load_tokenizer

    g = HFGenerator(load_model("embedded"), load_tokenizer("embedded", padding_side="left"), batch_size=4)
    texts = ["What is the capital of France?", "Name three fruits.", PROMPTS[3]]
    eos = g.eos_ids()
    want = _plain_generate(g.model, _encode(g, texts), 24, eos, g.tok.pad_token_id)
    for gen, row in zip(g.generate(_convs(texts), SamplingParams(max_new_tokens=24)), want, strict=True):
        body = row[:-1] if row[-1] in eos else row
        assert gen[0].text == g.tok.decode(body, skip_special_tokens=True) and gen[0].tokens == len(body)


# prefilled assistant turns


def _llama3_tok() -> Any:
    from transformers import AutoTokenizer

    from saro.models.embedded import embedded_model_dir

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    tok.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIALS})
    tok.bos_token = "<|begin_of_text|>"
    tok.chat_template = (TRL_TEMPLATES / "llama3.jinja").read_text(encoding="utf-8")
    return tok


SYSTEM = {"role": "system", "content": "Follow the policy."}
USER = {"role": "user", "content": "How do I bake bread?"}
OPENING = {"role": "assistant", "content": "Sure, here is"}


@pytest.mark.parametrize("which", ["chatml", "llama3"])
def test_prefilled_turn_is_continued(which: str, smollm_tokenizer: Any) -> None:
    tok = smollm_tokenizer if which == "chatml" else _llama3_tok()
    for head in ([USER], [SYSTEM, USER]):
        prompt = tok.apply_chat_template(head, tokenize=False, add_generation_prompt=True)
        (text,) = render_prompts(tok, [[*head, OPENING]])
        assert text == prompt + "Sure, here is"
        assert not text.endswith(("<|im_end|>\n", "<|eot_id|>"))  # the turn stays open
    plain = render_prompts(tok, [[USER]])[0]
    assert plain == tok.apply_chat_template([USER], tokenize=False, add_generation_prompt=True)


def test_prefill_needs_a_template_and_a_user_turn(smollm_tokenizer: Any) -> None:
    with pytest.raises(SaroError, match="conversation 0: .*user turn"):
        render_prompts(smollm_tokenizer, [[OPENING]])
    from transformers import AutoTokenizer

    from saro.models.embedded import embedded_model_dir

    bare = AutoTokenizer.from_pretrained(embedded_model_dir())
    bare.chat_template = None
    with pytest.raises(SaroError, match="conversation 0: .*chat template"):
        render_prompts(bare, [[USER, OPENING]])


def test_prefilled_generation_continues_the_opening(tiny: HFGenerator) -> None:
    """Through the generator: the continuation of a prefilled turn is what greedy decoding of the rendered text
    gives (the opening is not repeated in the returned text)."""
    conv = [USER, OPENING]
    (gen,) = tiny.generate([conv], SamplingParams(max_new_tokens=6))
    text = render_prompts(tiny.tok, [conv])[0]
    enc = dict(tiny.tok([text], return_tensors="pt", add_special_tokens=False))
    ids = _plain_generate(tiny.model, enc, 6, tiny.eos_ids(), tiny.tok.pad_token_id)[0]
    body = ids[:-1] if ids and ids[-1] in tiny.eos_ids() else ids
    assert gen[0].text == tiny.tok.decode(body, skip_special_tokens=True)
