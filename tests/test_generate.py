"""The HF backend's decode loop (same greedy token ids as ``model.generate``, finished rows leaving the batch) and
prefilled assistant turns in ``render_prompts``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import trl

from saro.errors import SaroError
from saro.models.generate import (
    BATCH_STEP,
    HFGenerator,
    SamplingParams,
    _compacted,
    _RowStreamer,
    decode,
    render_prompts,
)

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
PROMPTS = [
    "hi",
    "Tell me about the history of bread making in a few sentences, please.",
    "What is two plus two?",
    "Write a short poem about the sea, the wind, the gulls, and a small boat coming home at dusk.",
]


def _plain_generate(
    model: Any, enc: dict[str, Any], max_new: int, eos: list[int], pad: int
) -> list[list[int]]:
    """``model.generate`` greedy token ids per row, cut after the first eos (the reference)."""
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=max_new,
            eos_token_id=eos,
            pad_token_id=pad,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
        )
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


def test_decode_matches_generate_when_rows_finish_early(tiny: HFGenerator) -> None:
    """Greedy ids equal ``generate``'s, also when rows finish at different steps and leave the batch: the "eos" is
    a token the random model emits early in some rows and never in others."""
    enc = _encode(tiny, PROMPTS)
    pad = tiny.tok.pad_token_id
    free = _plain_generate(tiny.model, enc, 16, [tiny.tok.eos_token_id], pad)
    eos = [tiny.tok.eos_token_id, _staggering_stop(free)]
    want = _plain_generate(tiny.model, enc, 16, eos, pad)
    lengths = {len(r) for r in want}
    assert len(lengths) > 1, "the chosen stop token should end rows at different steps"
    with torch.inference_mode():
        got = decode(tiny.model, enc["input_ids"], enc["attention_mask"], 16, eos)
    assert got == want


def test_generate_texts_flags_and_counts(tiny: HFGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row ending with eos is finished and its count leaves the eos out; a cut row has max_new_tokens tokens."""
    enc = _encode(tiny, PROMPTS[:2])
    free = _plain_generate(tiny.model, enc, 8, [tiny.tok.eos_token_id], tiny.tok.pad_token_id)
    stop = _staggering_stop(free)
    monkeypatch.setattr(tiny, "_eos_ids", lambda: [stop])
    convs = [[{"role": "user", "content": t}] for t in PROMPTS[:2]]
    gens = [g[0] for g in tiny.generate(convs, SamplingParams(max_new_tokens=8))]
    for g, row in zip(gens, free, strict=True):
        if stop in row:
            assert g.finished and g.tokens == row.index(stop)
        else:
            assert not g.finished and g.tokens == 8


def test_finished_rows_leave_in_steps() -> None:
    """Live rows always stay; finished rows fill up to 1 or a multiple of BATCH_STEP; no shrink, no change."""
    assert BATCH_STEP == 4
    rows = [0, None, 2, None, None, 5, None, None]
    assert _compacted(rows, [0, 2, 5]) == [0, 1, 2, 5]
    assert _compacted([None, None, 2, None], [2]) == [2]
    assert _compacted([0, 1, None, 3, 4, None], [0, 1, 3, 4]) == [0, 1, 3, 4]
    assert _compacted([0, 1, None, 3, 4], [0, 1, 3, 4]) == [0, 1, 3, 4]  # 5 rows -> 4
    assert _compacted([0, None, 2, 3], [0, 2, 3]) == [0, 1, 2, 3]


def test_decode_edge_cases(tiny: HFGenerator) -> None:
    enc = _encode(tiny, PROMPTS[:2])
    with torch.inference_mode():
        assert decode(tiny.model, enc["input_ids"], enc["attention_mask"], 0, [0]) == [[], []]
        one = decode(tiny.model, enc["input_ids"][:1], enc["attention_mask"][:1], 1, [0])
    assert len(one) == 1 and len(one[0]) == 1


def test_streamed_pieces_add_up_when_rows_leave_the_batch(tiny: HFGenerator) -> None:
    enc = _encode(tiny, PROMPTS)
    free = _plain_generate(tiny.model, enc, 12, [tiny.tok.eos_token_id], tiny.tok.pad_token_id)
    eos = [tiny.tok.eos_token_id, _staggering_stop(free)]
    pieces: dict[int, str] = {}

    def on_text(row: int, piece: str) -> None:
        pieces[row] = pieces.get(row, "") + piece

    streamer = _RowStreamer(tiny.tok, [10, 11, 12, 13], on_text)
    streamer.eos = set(eos)
    with torch.inference_mode():
        rows = decode(tiny.model, enc["input_ids"], enc["attention_mask"], 12, eos, streamer=streamer)
    for r, ids in enumerate(rows):
        body = ids[:-1] if ids and ids[-1] in eos else ids
        assert pieces.get(10 + r, "") == tiny.tok.decode(body, skip_special_tokens=True)


def test_sampled_rows_keep_their_own_draws_when_a_mate_finishes(tiny: HFGenerator) -> None:
    """Per-row seeded sampling: the same seeds give the same samples, different seeds differ, and a greedy row
    in the batch stays plain greedy while sampled rows run on."""
    convs = [[{"role": "user", "content": t}] for t in PROMPTS[:3]]
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


def test_embedded_model_greedy_ids_match_generate() -> None:
    """The real embedded model, a batch of prompts of different lengths: same greedy ids as ``generate``."""
    from saro.models.loading import load_model, load_tokenizer

    g = HFGenerator(load_model("embedded"), load_tokenizer("embedded", padding_side="left"), batch_size=4)
    texts = ["What is the capital of France?", "Name three fruits.", PROMPTS[3]]
    enc = _encode(g, texts)
    eos = g._eos_ids()
    want = _plain_generate(g.model, enc, 24, eos, g.tok.pad_token_id)
    with torch.inference_mode():
        got = decode(g.model, enc["input_ids"], enc["attention_mask"], 24, eos)
    assert got == want


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
    ids = _plain_generate(tiny.model, enc, 6, tiny._eos_ids(), tiny.tok.pad_token_id)[0]
    body = ids[:-1] if ids and ids[-1] in tiny._eos_ids() else ids
    assert gen[0].text == tiny.tok.decode(body, skip_special_tokens=True)


def test_shared_prefix_is_computed_once_with_the_same_ids(tiny: HFGenerator) -> None:
    """Rows that share a long system prompt: the prefix is split off (computed once, its cache repeated), the
    padding sits between prefix and remainder, and greedy ids equal those of the plain left-padded batch."""
    from saro.models.generate import SHARED_PREFIX_MIN, shared_prefix_batch

    system = "You follow this safety policy. " * 12
    convs = [[{"role": "system", "content": system}, {"role": "user", "content": t}] for t in PROMPTS]
    texts = render_prompts(tiny.tok, convs)
    prefix, enc = shared_prefix_batch(tiny.tok, texts, tiny.tok.pad_token_id)
    assert prefix is not None and prefix.shape[1] >= SHARED_PREFIX_MIN
    assert enc["attention_mask"].shape[1] == prefix.shape[1] + enc["input_ids"].shape[1]
    plain = dict(tiny.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False))
    eos = [tiny.tok.eos_token_id]
    with torch.inference_mode():
        want = decode(tiny.model, plain["input_ids"], plain["attention_mask"], 12, eos)
        got = decode(tiny.model, enc["input_ids"], enc["attention_mask"], 12, eos, prefix_ids=prefix)
    assert got == want
    short = render_prompts(tiny.tok, [[{"role": "user", "content": t}] for t in PROMPTS])
    assert shared_prefix_batch(tiny.tok, short, tiny.tok.pad_token_id)[0] is None  # nothing long in common
    assert shared_prefix_batch(tiny.tok, texts[:1], tiny.tok.pad_token_id)[0] is None  # one row: plain path
