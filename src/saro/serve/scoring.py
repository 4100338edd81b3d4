"""Token log-probabilities from the model itself, for ``/v1/completions`` (``logprobs``, ``echo``).

One forward pass over the prompt gives every prompt token's log-probability (the log-softmax of the logits at the
position before it; the first token has none), then tokens are decoded one at a time on the KV cache, each with
its log-probability and the top-k alternatives. Log-probabilities are those of the model's own distribution
(before temperature or top_p), as vLLM reports them by default. This is what lm-eval's loglikelihood tasks read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from saro.serve.stops import find_stop

log = logging.getLogger(__name__)

TopK = list[tuple[int, float]]


@dataclass
class Scored:
    """Tokens with their log-probabilities (None for a prompt's first token) and top-k alternatives."""

    ids: list[int] = field(default_factory=list)
    logprobs: list[float | None] = field(default_factory=list)
    top: list[TopK | None] = field(default_factory=list)


@dataclass
class Completion:
    """One prompt's scored prompt tokens and its scored completion (cut at a stop sequence)."""

    prompt: Scored
    completion: Scored
    text: str
    finish_reason: str


@dataclass(frozen=True)
class Decoding:
    """How to continue a prompt: budget, sampling, stop sequences, and how many alternatives to report."""

    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    top_k: int
    stops: list[str]


def _topk(logp: Any, k: int) -> list[TopK]:
    if k <= 0:
        return [[] for _ in range(logp.shape[0])]
    values, idx = logp.topk(k, dim=-1)
    return [list(zip(i, v, strict=True)) for i, v in zip(idx.tolist(), values.tolist(), strict=True)]


def score_prompt(logits: Any, ids: list[int], top_k: int) -> Scored:
    """The prompt's tokens with the log-probability the model gave each one at the position before it."""
    import torch

    logp = logits.float().log_softmax(-1)
    target = torch.tensor(ids[1:], device=logp.device)
    chosen = logp[:-1].gather(-1, target[:, None])[:, 0].tolist() if len(ids) > 1 else []
    return Scored(list(ids), [None, *chosen], [None, *_topk(logp[:-1], top_k)])


def _pick(logits: Any, d: Decoding, rng: Any) -> int:
    import torch

    if d.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / d.temperature, dim=-1)
    if d.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        sorted_p[(sorted_p.cumsum(0) - sorted_p) > d.top_p] = 0.0  # keep the top_p nucleus
        return int(order[torch.multinomial(sorted_p, 1, generator=rng)])
    return int(torch.multinomial(probs, 1, generator=rng))


def complete(
    model: Any,
    tok: Any,
    prompt_ids: list[int],
    d: Decoding,
    eos_ids: set[int],
    on_text: Callable[[str], None] | None = None,
) -> Completion:
    """Score ``prompt_ids`` and continue them for up to ``d.max_tokens`` tokens (stopping at EOS or a stop)."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt_ids], device=model.device), use_cache=d.max_tokens > 0)
        prompt = score_prompt(out.logits[0], prompt_ids, d.top_k)
        gen, text, sent, finish, cut = Scored(), "", 0, "length", None
        rng = torch.Generator(device=model.device).manual_seed(d.seed % (2**63))
        for _ in range(d.max_tokens):
            logits = out.logits[0, -1]
            token = _pick(logits, d, rng)
            logp = logits.float().log_softmax(-1)
            gen.ids.append(token)  # an end-of-text token too: it is scored (as OpenAI does), not in the text
            gen.logprobs.append(float(logp[token]))
            gen.top.append(_topk(logp[None], d.top_k)[0])
            if token in eos_ids:
                finish = "stop"
                break
            text = tok.decode(gen.ids, skip_special_tokens=True)
            cut = find_stop(text, d.stops)
            if cut is not None:
                text, finish = text[:cut], "stop"
                break
            if on_text is not None and not text.endswith("\ufffd") and len(text) > sent:
                on_text(text[sent:])
                sent = len(text)
            step = torch.tensor([[token]], device=model.device)
            out = model(input_ids=step, past_key_values=out.past_key_values, use_cache=True)
    if on_text is not None and len(text) > sent:
        on_text(text[sent:])
    if cut is not None:
        _trim(gen, tok, cut)
    return Completion(prompt, gen, text, finish)


def token_texts(tok: Any, ids: list[int], skip_special: bool) -> list[str]:
    """Each token's text, such that they join to the decoded whole.

    A token's text is what it adds to the decoding of the tokens before it; a token that ends inside a character
    gets "" and the token that completes the character gets all of it. Decoding the few tokens before each one
    keeps this linear; where that does not add up to the whole (a tokenizer that drops a leading space, say), the
    whole prefix is decoded each time (exact, quadratic).
    """
    whole = tok.decode(ids, skip_special_tokens=skip_special)
    texts = _pieces(tok, ids, skip_special, _WINDOW)
    return texts if "".join(texts) == whole else _pieces(tok, ids, skip_special, None)


_WINDOW = 6  # tokens of context when decoding one token's text


def _pieces(tok: Any, ids: list[int], skip_special: bool, window: int | None) -> list[str]:
    texts: list[str] = []
    done = 0  # tokens before this index have given all their text
    for j in range(len(ids)):
        lo = 0 if window is None else max(0, done - window)
        cur = tok.decode(ids[lo : j + 1], skip_special_tokens=skip_special)
        if cur.endswith("\ufffd") and j < len(ids) - 1:  # inside a character: wait for its last byte
            texts.append("")
            continue
        head = tok.decode(ids[lo:done], skip_special_tokens=skip_special)
        texts.append(cur[len(head) :] if cur.startswith(head) else cur)
        done = j + 1
    return texts


def _trim(gen: Scored, tok: Any, length: int) -> None:
    """Drop the tokens that start at or after ``length`` (after a stop sequence cut the text)."""
    offset, keep = 0, 0
    for piece in token_texts(tok, gen.ids, skip_special=True):
        if offset >= length:
            break
        offset += len(piece)
        keep += 1
    del gen.ids[keep:], gen.logprobs[keep:], gen.top[keep:]
