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
from saro.reasoning import THINK_CLOSE, THINK_OPEN

log = logging.getLogger(__name__)

Conversation = list[dict[str, str]]


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
        return [
            self.tok.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True)
            for c in conversations
        ]

    def _run(
        self, texts: list[str], max_new_tokens: int, params: SamplingParams, seed: int
    ) -> list[Generation]:
        import torch

        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        eos = self._eos_ids()
        kw: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "eos_token_id": eos,
            "pad_token_id": self.tok.pad_token_id,
        }
        if params.temperature > 0:
            kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            torch.manual_seed(seed)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kw)
        new = out[:, enc["input_ids"].shape[1] :]
        gens = []
        for row in new.tolist():
            n = len(row)
            finished = False
            for j, t in enumerate(row):
                if t in eos:
                    n, finished = j, True
                    break
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
                gens = self._generate_texts(texts, params, seed=params.seed + b)
                grouped = [gens[k * params.n : (k + 1) * params.n] for k in range(len(idx))]
                prog.advance(task, len(idx))
                yield idx, grouped

    def _generate_texts(self, texts: list[str], params: SamplingParams, seed: int) -> list[Generation]:
        budget = params.reasoning_budget
        if not budget or budget >= params.max_new_tokens:
            return self._run(texts, params.max_new_tokens, params, seed)
        first = self._run(texts, budget, params, seed)
        rest = params.max_new_tokens - budget
        todo: list[int] = []
        cont: list[str] = []
        for i, g in enumerate(first):
            if g.finished:
                continue
            partial = g.text
            if THINK_CLOSE not in partial:
                if THINK_OPEN not in partial:
                    partial = THINK_OPEN + "\n" + partial
                partial = partial.rstrip() + "\n" + THINK_CLOSE + "\n"
            todo.append(i)
            cont.append(partial)
        if not todo:
            return first
        second = self._run([texts[i] + cont[k] for k, i in enumerate(todo)], rest, params, seed + 1)
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

    for mod in ("saro.models.openai_backend", "saro.models.vllm_backend"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
