"""Generation backends behind one interface: ``hf`` (transformers, batched, left padding), ``ct2``
(CTranslate2, the fast CPU engine: ``saro.models.ct2``), ``vllm``, ``openai``, ``openai_batch``.

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
from saro.models.sampling import ModelSampling, RowSampler, row_seed
from saro.models.streaming import GenerateStreamer, RowCallback, TextStreams
from saro.reasoning import THINK_CLOSE, close_reasoning

log = logging.getLogger(__name__)

Conversation = list[dict[str, str]]
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
    """transformers ``model.generate``, batched with left padding; prompts sorted by length to waste little padding.

    Greedy rows are ``generate(do_sample=False)``; sampled rows are drawn by a ``RowSampler`` (one seeded RNG per
    row, transformers' warpers, the model's generation config: ``saro.models.sampling``), so a sample does not
    depend on its batch. ``generate`` is the public API, correct on every transformers version; a hand-written
    decode loop measured 0.97-1.11x of it and broke silently when the model's cache argument was renamed.
    """

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
        self.sampling = ModelSampling.of(getattr(model, "generation_config", None))

    @classmethod
    def from_source(cls, source: str, batch_size: int = 8, dtype: str = "auto", **kw: Any) -> HFGenerator:
        from saro.models.loading import load_model, load_tokenizer

        return cls(
            load_model(source, dtype=dtype, **kw), load_tokenizer(source, padding_side="left"), batch_size
        )

    def eos_ids(self) -> list[int]:
        """The token ids that end a turn (every one the HF backend stops on)."""
        return end_of_turn_ids(self.tok, getattr(self.model, "generation_config", None))

    @property
    def context_length(self) -> int | None:
        n = getattr(self.model.config, "max_position_embeddings", None)
        return int(n) if isinstance(n, int) and n > 0 else None

    def scoring_model(self) -> Any:
        """The transformers model, for token log-probabilities (``/v1/completions``)."""
        return self.model

    def generate_batches(
        self, conversations: Sequence[Conversation], params: SamplingParams, description: str = "generating"
    ) -> Iterator[tuple[list[int], list[list[Generation]]]]:
        prompts = render_prompts(self.tok, conversations)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        # each batch holds whole conversations (all n samples), so one yielded batch completes its conversations
        per = max(1, self.batch_size // max(1, params.n))
        with make_progress() as prog:
            task = prog.add_task(f"{description} ({self.label})", total=len(order))
            for b in range(0, len(order), per):
                idx = order[b : b + per]
                rows = [(i, k) for i in idx for k in range(params.n)]
                # one seeded RNG per (prompt, sample): the draws do not depend on which prompts share a batch,
                # so a resumed stage samples exactly what an uninterrupted one would have
                seeds = [row_seed(params.seed, prompts[i], k) for i, k in rows]
                gens = self._generate_texts([prompts[i] for i, _ in rows], [params] * len(rows), seeds)
                prog.advance(task, len(idx))
                yield idx, [gens[k * params.n : (k + 1) * params.n] for k in range(len(idx))]

    def generate_rows(
        self,
        conversations: Sequence[Conversation],
        params: Sequence[SamplingParams],
        on_text: TextCallback | None = None,
    ) -> list[list[Generation]]:
        """All conversations in one batch, in the given order (no progress bar), each with its own temperature,
        top_p, seed and n; ``max_new_tokens`` and ``reasoning_budget`` must be the same for all. Sample k of a
        conversation is drawn with seed ``seed + k``. ``on_text`` gets the text token by token (streaming)."""
        rows = check_rows(conversations, params)
        if not rows:
            return []
        prompts = render_prompts(self.tok, conversations)
        texts = [prompts[i] for i, _ in rows]
        callback = None if on_text is None else row_callback(rows, on_text)
        gens = self._generate_texts(
            texts, [params[i] for i, _ in rows], [params[i].seed + k for i, k in rows], callback
        )
        return group_rows(rows, gens, len(conversations))

    def _generate_texts(
        self,
        texts: list[str],
        params: Sequence[SamplingParams],
        seeds: Sequence[int],
        on_text: RowCallback | None = None,
    ) -> list[Generation]:
        """Generate for prompt texts (row r with ``params[r]`` and ``seeds[r]``), honouring the reasoning budget;
        ``on_text(row, piece)`` streams the text."""
        sampler = None
        if any(p.temperature > 0 for p in params):
            sampler = RowSampler(
                [p.temperature for p in params],
                [p.top_p for p in params],
                seeds,
                self.sampling,
                self.model.device,
            )

        def run(batch: list[str], max_new: int, rows: list[int]) -> list[Generation]:
            return self._run(batch, max_new, rows, None if sampler is None else sampler.subset(rows), on_text)

        return with_reasoning_budget(run, texts, params[0], on_text)

    def _run(
        self,
        texts: list[str],
        max_new_tokens: int,
        rows: list[int],
        sampler: RowSampler | None,
        on_text: RowCallback | None,
    ) -> list[Generation]:
        import torch
        from transformers import LogitsProcessorList

        eos = self.eos_ids()
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            self.model.device
        )
        streamer = None if on_text is None else GenerateStreamer(TextStreams(self.tok, rows, on_text, eos))
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos,
                pad_token_id=self.tok.pad_token_id,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                logits_processor=None if sampler is None else LogitsProcessorList([sampler]),
                streamer=streamer,
            )
        return [self._generation(row, eos) for row in out[:, enc["input_ids"].shape[1] :].tolist()]

    def _generation(self, row: list[int], eos: Sequence[int]) -> Generation:
        """A row of new token ids as a Generation: cut at its first end-of-turn token (generate pads after it)."""
        end = next((j for j, t in enumerate(row) if t in eos), None)
        ids = row if end is None else row[:end]
        return Generation(self.tok.decode(ids, skip_special_tokens=True), end is not None, len(ids))

    def close(self) -> None:
        import gc

        del self.model
        gc.collect()


def check_rows(
    conversations: Sequence[Conversation], params: Sequence[SamplingParams]
) -> list[tuple[int, int]]:
    """The (conversation, sample) rows of a ``generate_rows`` call, after checking its params agree where a batch
    needs them to (one SamplingParams per conversation; the same ``max_new_tokens`` and ``reasoning_budget``)."""
    if len(params) != len(conversations):
        raise ValueError("generate_rows: one SamplingParams per conversation")
    if params and any(
        (p.max_new_tokens, p.reasoning_budget) != (params[0].max_new_tokens, params[0].reasoning_budget)
        for p in params
    ):
        raise ValueError("generate_rows: max_new_tokens and reasoning_budget must agree within a batch")
    return [(i, k) for i, p in enumerate(params) for k in range(p.n)]


def row_callback(rows: Sequence[tuple[int, int]], on_text: TextCallback) -> RowCallback:
    """``on_text(conversation, sample, piece)`` as a callback by row index."""

    def callback(row: int, piece: str) -> None:
        on_text(rows[row][0], rows[row][1], piece)

    return callback


def group_rows(rows: Sequence[tuple[int, int]], gens: Sequence[Generation], n: int) -> list[list[Generation]]:
    """Row results back into per-conversation lists, samples in order."""
    out: list[list[Generation]] = [[] for _ in range(n)]
    for (i, _), g in zip(rows, gens, strict=True):
        out[i].append(g)
    return out


# (prompt texts, max new tokens, row indices) -> one Generation per text
RunRows = Callable[[list[str], int, list[int]], list[Generation]]


def with_reasoning_budget(
    run: RunRows, texts: list[str], params: SamplingParams, on_text: RowCallback | None = None
) -> list[Generation]:
    """Generate with ``run``, capping the thinking at ``params.reasoning_budget`` tokens: rows that have not
    finished after the budget get their think block closed (``close_reasoning``) and continue from there with the
    tokens left. ``run(texts, max_new_tokens, rows)`` generates for the given rows (indices into ``texts``)."""
    budget = params.reasoning_budget
    if not budget or budget >= params.max_new_tokens:
        return run(texts, params.max_new_tokens, list(range(len(texts))))
    first = run(texts, budget, list(range(len(texts))))
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
    second = run([texts[i] + cont[k] for k, i in enumerate(todo)], params.max_new_tokens - budget, todo)
    out = list(first)
    for k, i in enumerate(todo):
        out[i] = Generation(cont[k] + second[k].text, second[k].finished, first[i].tokens + second[k].tokens)
    return out


def end_of_turn_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Every token id that ends an assistant turn: the tokenizer's eos, the known end-of-turn tokens of the chat
    formats saro renders, and the model's ``generation_config.eos_token_id`` (an int or a list)."""
    ids = {tokenizer.eos_token_id}
    for t in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>"):
        tid = tokenizer.convert_tokens_to_ids(t)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    gen_eos = getattr(generation_config, "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif isinstance(gen_eos, list):
        ids.update(gen_eos)
    return sorted(i for i in ids if i is not None)


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
    """Build a generation backend by name (``hf``, ``ct2``, ``vllm``, ``openai``, ``openai_batch``)."""
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

    for mod in (
        "saro.models.ct2",
        "saro.models.openai_backend",
        "saro.models.vllm_backend",
        "saro.models.openai_batch",
    ):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
