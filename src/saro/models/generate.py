"""Generation backends behind one interface: ``hf`` (transformers, batched, left padding), ``vllm``, ``openai``.

A backend turns conversations into assistant turns. ``generate_batches`` yields results batch by batch so that
callers can write each result as soon as it exists (a killed stage loses at most one batch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from saro.console import make_progress
from saro.errors import SaroError
from saro.reasoning import THINK_CLOSE, close_reasoning

log = logging.getLogger(__name__)

Conversation = list[dict[str, str]]
# Finished rows leave the decode batch in steps of this size: with MKL on CPU, a decode step at batch 2, 3 or 6
# took longer than at batch 8 (the lm_head matmul; measured on the 2-core demo machine), at 1, 4 and 8 it did not.
BATCH_STEP = 4
SHARED_PREFIX_MIN = 64  # tokens every row of a batch must share before the prefix is computed once
TextCallback = Callable[[int, int, str], None]  # (conversation index, sample index, text piece)


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. ``temperature == 0`` is greedy. ``reasoning_budget`` caps the thinking tokens: when the
    model has not closed ``</think>`` after that many tokens, the think block is closed for it and it answers."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    reasoning_budget: int | None = None


GenStatus = Literal["ok", "rejected", "error"]


@dataclass(frozen=True)
class Generation:
    """One generated assistant turn.

    ``status`` is "ok" for a usable answer, "rejected" when every answer failed the caller's validation
    (``text`` holds the last one, ``error`` the reason), and "error" when the request itself kept failing
    (``error`` says why; a re-run asks again, since failures are never cached).
    """

    text: str
    finished: bool  # ended with the end-of-turn token (not cut by max_new_tokens)
    tokens: int
    status: GenStatus = "ok"
    error: str | None = None
    cached: bool = False  # served from the on-disk request cache

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Generator:
    """Base class of the generation backends."""

    name = "base"

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams
    ) -> list[list[Generation]]:
        """``params.n`` generations for each conversation, in order."""
        out: list[list[Generation]] = [[] for _ in conversations]
        for idx, gens in self.generate_batches(conversations, params):
            for i, g in zip(idx, gens, strict=True):
                out[i] = g
        return out

    def generate_batches(
        self, conversations: Sequence[Conversation], params: SamplingParams, description: str = "generating"
    ) -> Iterator[tuple[list[int], list[list[Generation]]]]:
        raise NotImplementedError

    def generate_rows(
        self,
        conversations: Sequence[Conversation],
        params: Sequence[SamplingParams],
        on_text: TextCallback | None = None,
    ) -> list[list[Generation]]:
        """Each conversation with its own sampling params (``params[i].n`` generations for conversation i).

        ``on_text(conversation index, sample index, piece)`` receives the text as it is produced; here, where
        the backend cannot stream, each whole text arrives as one piece. ``saro serve`` batches through this.
        """
        out: list[list[Generation]] = [[] for _ in conversations]
        groups: dict[SamplingParams, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault(p, []).append(i)
        for p, idx in groups.items():
            for i, gens in zip(idx, self.generate([conversations[i] for i in idx], p), strict=True):
                out[i] = gens
                if on_text is not None:
                    for k, g in enumerate(gens):
                        on_text(i, k, g.text)
        return out

    def close(self) -> None:  # release the model
        return None


class HFGenerator(Generator):
    """transformers ``generate``, batched with left padding; prompts sorted by length to waste little padding."""

    name = "hf"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 8,
        label: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.tok = tokenizer
        self.batch_size = batch_size
        self.label = label or getattr(model.config, "name_or_path", "model")
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token

    @classmethod
    def from_source(cls, source: str, batch_size: int = 8, dtype: str = "auto", **kw: Any) -> HFGenerator:
        from saro.models.loading import load_model, load_tokenizer

        return cls(
            load_model(source, dtype=dtype, **kw), load_tokenizer(source, padding_side="left"), batch_size
        )

    def _eos_ids(self) -> list[int]:
        ids = {self.tok.eos_token_id}
        for t in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>"):
            tid = self.tok.convert_tokens_to_ids(t)
            if isinstance(tid, int) and tid != self.tok.unk_token_id and tid >= 0:
                ids.add(tid)
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif isinstance(gen_eos, list):
            ids.update(gen_eos)
        return sorted(i for i in ids if i is not None)

    def _prompts(self, conversations: Sequence[Conversation]) -> list[str]:
        return render_prompts(self.tok, conversations)

    def _run(
        self,
        texts: list[str],
        max_new_tokens: int,
        params: SamplingParams,
        seed: int,
        streamer: _RowStreamer | None = None,
        sampler: _RowSampler | None = None,
    ) -> list[Generation]:
        import torch

        prefix, enc = shared_prefix_batch(self.tok, texts, self.tok.pad_token_id)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        if prefix is not None:
            prefix = prefix.to(self.model.device)
        eos = self._eos_ids()
        if sampler is None and params.temperature > 0:  # a seeded RNG per row, as the public methods use
            sampler = _RowSampler(
                [params] * len(texts), [seed + r for r in range(len(texts))], self.model.device
            )
        if streamer is not None:
            streamer.eos = set(eos)
        with torch.inference_mode():
            rows = decode(
                self.model,
                enc["input_ids"],
                enc["attention_mask"],
                max_new_tokens,
                eos,
                sampler,
                streamer,
                prefix_ids=prefix,
            )
        gens = []
        for row in rows:
            finished = bool(row) and row[-1] in eos
            n = len(row) - 1 if finished else len(row)
            while n > 0 and row[n - 1] == self.tok.pad_token_id and not finished:
                n -= 1
            gens.append(Generation(self.tok.decode(row[:n], skip_special_tokens=True), finished, n))
        return gens

    def generate_batches(
        self, conversations: Sequence[Conversation], params: SamplingParams, description: str = "generating"
    ) -> Iterator[tuple[list[int], list[list[Generation]]]]:
        prompts = self._prompts(conversations)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        # each batch holds whole conversations (all n samples), so one yielded batch completes its conversations
        per = max(1, self.batch_size // max(1, params.n))
        with make_progress() as prog:
            task = prog.add_task(f"{description} ({self.label})", total=len(order))
            for b in range(0, len(order), per):
                idx = order[b : b + per]
                texts = [prompts[i] for i in idx for _ in range(params.n)]
                sampler = None
                if params.temperature > 0:
                    # one seeded RNG per (prompt, sample): the draws do not depend on which prompts share a
                    # batch, so a resumed stage samples exactly what an uninterrupted one would have
                    seeds = [row_seed(params.seed, prompts[i], k) for i in idx for k in range(params.n)]
                    sampler = _RowSampler([params] * len(texts), seeds, self.model.device)
                gens = self._generate_texts(texts, params, seed=params.seed + b, sampler=sampler)
                grouped = [gens[k * params.n : (k + 1) * params.n] for k in range(len(idx))]
                prog.advance(task, len(idx))
                yield idx, grouped

    def generate_rows(
        self,
        conversations: Sequence[Conversation],
        params: Sequence[SamplingParams],
        on_text: TextCallback | None = None,
    ) -> list[list[Generation]]:
        """All conversations in one batch, in the given order (no progress bar), each with its own temperature,
        top_p, seed and n; ``max_new_tokens`` and ``reasoning_budget`` must be the same for all. Sample k of a
        conversation is drawn with seed ``seed + k``. ``on_text`` gets the text token by token (streaming)."""
        if len(params) != len(conversations):
            raise ValueError("generate_rows: one SamplingParams per conversation")
        if not conversations:
            return []
        p0 = params[0]
        if any(
            (p.max_new_tokens, p.reasoning_budget) != (p0.max_new_tokens, p0.reasoning_budget) for p in params
        ):
            raise ValueError("generate_rows: max_new_tokens and reasoning_budget must agree within a batch")
        prompts = self._prompts(conversations)
        rows = [(i, k) for i, p in enumerate(params) for k in range(p.n)]
        texts = [prompts[i] for i, _ in rows]
        sampler = _RowSampler(
            [params[i] for i, _ in rows], [params[i].seed + k for i, k in rows], self.model.device
        )
        callback = None
        if on_text is not None:

            def callback(row: int, piece: str) -> None:
                on_text(rows[row][0], rows[row][1], piece)

        gens = self._generate_texts(texts, p0, p0.seed, on_text=callback, sampler=sampler)
        out: list[list[Generation]] = [[] for _ in conversations]
        for (i, _), g in zip(rows, gens, strict=True):
            out[i].append(g)
        return out

    def _generate_texts(
        self,
        texts: list[str],
        params: SamplingParams,
        seed: int,
        on_text: Callable[[int, str], None] | None = None,
        sampler: _RowSampler | None = None,
    ) -> list[Generation]:
        """Generate for prompt texts, honouring the reasoning budget; ``on_text(row, piece)`` streams the text."""

        def streamer(rows: list[int]) -> _RowStreamer | None:
            return None if on_text is None else _RowStreamer(self.tok, rows, on_text)

        budget = params.reasoning_budget
        if not budget or budget >= params.max_new_tokens:
            return self._run(
                texts, params.max_new_tokens, params, seed, streamer(list(range(len(texts)))), sampler
            )
        first = self._run(texts, budget, params, seed, streamer(list(range(len(texts)))), sampler)
        rest = params.max_new_tokens - budget
        todo: list[int] = []
        cont: list[str] = []
        for i, g in enumerate(first):
            if g.finished:
                continue
            partial = close_reasoning(g.text)
            todo.append(i)
            cont.append(partial)
            if on_text is not None and partial != g.text:  # the think block was closed for the model
                on_text(i, "\n" + THINK_CLOSE + "\n")
        if not todo:
            return first
        second = self._run(
            [texts[i] + cont[k] for k, i in enumerate(todo)],
            rest,
            params,
            seed + 1,
            streamer(todo),
            None if sampler is None else sampler.subset(todo),
        )
        out = list(first)
        for k, i in enumerate(todo):
            out[i] = Generation(
                cont[k] + second[k].text, second[k].finished, first[i].tokens + second[k].tokens
            )
        return out

    def close(self) -> None:
        import gc

        del self.model
        gc.collect()


def shared_prefix_batch(tok: Any, texts: Sequence[str], pad_id: int) -> tuple[Any, dict[str, Any]]:
    """Tokenize a batch; when every row starts with the same ``SHARED_PREFIX_MIN`` or more tokens (a system prompt
    with few-shot exemplars, a review instruction), return that prefix (1, P) apart and the rows' remainders,
    left-padded, with an attention mask over prefix + remainder (the padding then sits between the two). The
    prefix is computed once for the batch instead of once per row. Otherwise (None, the usual left-padded batch).
    """
    import torch

    ids = [list(x) for x in tok(list(texts), add_special_tokens=False)["input_ids"]]
    n = 0
    if len(ids) > 1:
        shortest = min(len(x) for x in ids)
        first = ids[0]
        while n < shortest - 1 and all(x[n] == first[n] for x in ids):
            n += 1
    if n < SHARED_PREFIX_MIN:
        n = 0  # no prefix apart: the usual left-padded batch, from the ids already tokenized
    rest = [x[n:] for x in ids]
    width = max(len(x) for x in rest)
    input_ids = torch.tensor([[pad_id] * (width - len(x)) + x for x in rest])
    tail = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in rest])
    if n == 0:
        return None, {"input_ids": input_ids, "attention_mask": tail}
    mask = torch.cat([torch.ones((len(ids), n), dtype=tail.dtype), tail], dim=-1)
    return torch.tensor([ids[0][:n]]), {"input_ids": input_ids, "attention_mask": mask}


def decode(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    max_new_tokens: int,
    eos: Sequence[int],
    sampler: _RowSampler | None = None,
    streamer: _RowStreamer | None = None,
    prefix_ids: Any = None,
) -> list[list[int]]:
    """Greedy (or ``sampler``-drawn) decoding over the model's forward with a KV cache: the new token ids of each
    left-padded row, ending with the eos token when the row finished.

    It computes what ``model.generate`` computes (same prefill, positions, masks and argmax, so greedy token ids
    are the same), but finished rows leave the batch and the cache (down to the next multiple of ``BATCH_STEP``),
    so the remaining steps run on about the rows still writing; ``generate`` keeps every row to the end.
    With ``prefix_ids`` (1, P), the tokens every row starts with (``shared_prefix_batch``), the prefix is run
    once and its cache repeated for the rows; ``attention_mask`` then covers prefix + ``input_ids``.
    """
    import torch
    from transformers import DynamicCache

    batch = int(input_ids.shape[0])
    out: list[list[int]] = [[] for _ in range(batch)]
    if max_new_tokens <= 0 or batch == 0:
        return out
    positions = attention_mask.long().cumsum(-1) - 1
    positions = positions.masked_fill(attention_mask == 0, 0)
    # generate drops an all-ones mask too (the attention then runs unmasked)
    mask = None if bool((attention_mask == 1).all()) else attention_mask
    cache = DynamicCache(config=model.config)
    extra = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    if streamer is not None:
        streamer.put(input_ids)  # the first call carries the prompt, as in generate
    if prefix_ids is not None:
        p = int(prefix_ids.shape[1])
        model(input_ids=prefix_ids, cache=cache, use_cache=True, **extra)
        cache.batch_repeat_interleave(batch)
        positions = positions[:, p:]
    logits = model(
        input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, **extra
    ).logits
    last = positions[:, -1:]
    rows: list[int | None] = list(range(batch))  # batch row -> caller's row (None: finished, kept as filler)
    eos_ids = torch.tensor(sorted(set(eos)), device=input_ids.device)
    for step in range(max_new_tokens):
        scores = logits[:, -1].to(copy=True, dtype=torch.float32)
        if sampler is not None:
            scores = sampler(None, scores)
        tokens = scores.argmax(-1)
        done = torch.isin(tokens, eos_ids).tolist()
        step_tokens = [int(eos_ids[0])] * batch  # rows finished before: an eos, which the streamer skips
        for j, t in enumerate(tokens.tolist()):
            r = rows[j]
            if r is not None:
                out[r].append(t)
                step_tokens[r] = t
                if done[j]:
                    rows[j] = None
        if streamer is not None:
            streamer.put(torch.tensor(step_tokens))
        alive = [j for j, r in enumerate(rows) if r is not None]
        if not alive or step == max_new_tokens - 1:
            break
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        keep = _compacted(rows, alive)
        if len(keep) < len(rows):  # finished rows leave the batch, their cache with them
            idx = torch.tensor(keep, device=input_ids.device)
            cache.batch_select_indices(idx)
            tokens, last = tokens[idx], last[idx]
            mask = None if mask is None else mask[idx]
            sampler = None if sampler is None else sampler.subset(keep)
            rows = [rows[j] for j in keep]
        last = last + 1
        logits = model(
            input_ids=tokens[:, None], attention_mask=mask, position_ids=last, cache=cache, use_cache=True
        ).logits
    if streamer is not None:
        streamer.end()
    return out


def _compacted(rows: list[int | None], alive: list[int]) -> list[int]:
    """The batch rows to keep once some rows finished: the live ones, plus finished ones as filler up to a batch
    size of 1 or a multiple of ``BATCH_STEP`` (all rows while that is not smaller than the batch now)."""
    n = len(alive)
    size = 1 if n == 1 else -(-n // BATCH_STEP) * BATCH_STEP
    if size >= len(rows):
        return list(range(len(rows)))
    filler = [j for j, r in enumerate(rows) if r is None][: size - n]
    return sorted(alive + filler)


def _accepts(model: Any, arg: str) -> bool:
    import inspect

    try:
        return arg in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def render_prompts(tokenizer: Any, conversations: Sequence[Conversation]) -> list[str]:
    """The prompt text of each conversation: its chat template with the generation prompt. The template writes
    every special token itself (a Llama-3 template starts with ``{{- bos_token }}``).

    A conversation whose last message is the assistant's is continued, not answered: the template renders the turns
    before it with the generation prompt, and the assistant's opening follows verbatim (a prefilled turn)."""
    return [_render_one(tokenizer, list(c), i) for i, c in enumerate(conversations)]


def _render_one(tokenizer: Any, conversation: Conversation, index: int) -> str:
    if not conversation or conversation[-1].get("role") != "assistant":
        return str(tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True))
    if not getattr(tokenizer, "chat_template", None):
        raise SaroError(
            f"conversation {index}: a prefilled assistant turn needs a chat template, and the tokenizer has none"
        )
    head = conversation[:-1]
    if not any(m.get("role") == "user" for m in head):
        raise SaroError(f"conversation {index}: a prefilled assistant turn needs a user turn before it")
    opening = conversation[-1].get("content") or ""
    prompt = tokenizer.apply_chat_template(head, tokenize=False, add_generation_prompt=True)
    return str(prompt) + opening


def encode_prompts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of rendered prompts, with no special tokens added (the template wrote them): one BOS, not two.
    The HF backend tokenizes the same way; the vLLM backend passes these ids to the engine."""
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


class _RowStreamer:
    """A ``generate`` streamer for batches: decodes each row incrementally and calls ``on_text(row, piece)``.

    transformers' own streamers take one row only. Pieces are the growth of each row's decoded text (held back
    while it ends in an incomplete UTF-8 character), so they add up to the text ``_run`` returns.
    """

    def __init__(self, tokenizer: Any, rows: list[int], on_text: Callable[[int, str], None]) -> None:
        self.tok = tokenizer
        self.rows = rows  # batch row -> caller's row index
        self.on_text = on_text
        self.eos: set[int] = set()
        self.ids: list[list[int]] = [[] for _ in rows]
        self.sent = [0] * len(rows)
        self.done = [False] * len(rows)
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call carries the prompt ids
            self.prompt_seen = True
            return
        for r, t in enumerate(value.reshape(-1).tolist()):
            if self.done[r]:
                continue
            if t in self.eos:
                self.done[r] = True
                continue
            self.ids[r].append(t)
            self._emit(r, final=False)

    def end(self) -> None:
        for r in range(len(self.rows)):
            self._emit(r, final=True)

    def _emit(self, r: int, final: bool) -> None:
        text = self.tok.decode(self.ids[r], skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):
            return
        piece = text[self.sent[r] :]
        if piece:
            self.sent[r] = len(text)
            self.on_text(self.rows[r], piece)


def row_seed(seed: int, prompt: str, sample: int) -> int:
    """A sampling seed that depends only on the run seed, the rendered prompt and the sample index."""
    import hashlib

    h = hashlib.sha256(f"{seed}\x1f{sample}\x1f{prompt}".encode("utf-8", "surrogatepass")).hexdigest()
    return int(h[:15], 16)


class _RowSampler:
    """A logits processor that samples each row with its own temperature, top_p and seeded RNG, so that one
    batch can serve requests with different sampling settings. Rows with temperature 0 stay greedy; for the
    others every score but the drawn token's becomes -inf, so ``generate`` runs in greedy mode."""

    def __init__(self, params: Sequence[SamplingParams], seeds: Sequence[int], device: Any) -> None:
        import torch

        self.temps = [p.temperature for p in params]
        self.top_ps = [p.top_p for p in params]
        self.rngs = [
            torch.Generator(device=device).manual_seed(int(s) % (2**63)) if p.temperature > 0 else None
            for p, s in zip(params, seeds, strict=True)
        ]

    def subset(self, rows: list[int]) -> _RowSampler:
        """The sampler for a batch made of these rows (their RNGs continue where they were)."""
        sub = object.__new__(_RowSampler)
        sub.temps = [self.temps[r] for r in rows]
        sub.top_ps = [self.top_ps[r] for r in rows]
        sub.rngs = [self.rngs[r] for r in rows]
        return sub

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        rows = [r for r, t in enumerate(self.temps) if t > 0]
        if not rows:
            return scores
        scores = scores.clone()
        for r in rows:
            probs = torch.softmax(scores[r].float() / self.temps[r], dim=-1)
            if self.top_ps[r] < 1.0:
                sorted_p, order = probs.sort(descending=True)
                sorted_p[(sorted_p.cumsum(0) - sorted_p) > self.top_ps[r]] = 0.0  # keep the top_p nucleus
                token = order[torch.multinomial(sorted_p, 1, generator=self.rngs[r])]
            else:
                token = torch.multinomial(probs, 1, generator=self.rngs[r])
            scores[r] = float("-inf")
            scores[r, token] = 0.0
        return scores


BackendFactory = Callable[..., Generator]
_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    def deco(fn: BackendFactory) -> BackendFactory:
        _BACKENDS[name] = fn
        return fn

    return deco


@register_backend("hf")
def _hf(model: str, batch_size: int = 8, dtype: str = "auto", **kw: Any) -> Generator:
    return HFGenerator.from_source(model, batch_size=batch_size, dtype=dtype, **kw)


def make_generator(backend: str, **kw: Any) -> Generator:
    """Build a generation backend by name (``hf``, ``vllm``, ``openai``)."""
    if backend not in _BACKENDS:
        _load_optional_backends()
    try:
        factory = _BACKENDS[backend]
    except KeyError:
        raise SaroError(
            f"unknown generation backend '{backend}' (choose one of: {', '.join(sorted(_BACKENDS))})"
        ) from None
    return factory(**kw)


def _load_optional_backends() -> None:
    """Import the modules that register the optional backends (they import their heavy deps lazily)."""
    import importlib

    for mod in ("saro.models.openai_backend", "saro.models.vllm_backend", "saro.models.openai_batch"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
