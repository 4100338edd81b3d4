"""The ``vllm`` backend: the vLLM offline engine (GPU only; installed with ``pip install 'saro[gpu]'``).

vLLM is imported inside the constructor, so ``import saro`` never needs it. Prompts are rendered with the
tokenizer's chat template (optionally one of our training templates, so generation sees the format training used)
and tokenized by the same code as the HF backend (:func:`~saro.models.generate.encode_prompts`, no special tokens
added), then sent to ``llm.generate`` as token ids (``TokensPrompt``) in chunks, so callers write results as each
chunk finishes. Passing text would let vLLM tokenize it with special tokens: a second BOS on every Llama-3 prompt
(vllm-project/vllm#9519). A reasoning budget is
applied in two phases as in :class:`~saro.models.generate.HFGenerator`: think for at most ``budget`` tokens, close
the think block where the model did not, and let it answer with the rest of the token budget.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from saro.console import make_progress
from saro.errors import SaroError
from saro.models.generate import (
    Conversation,
    Generation,
    Generator,
    SamplingParams,
    encode_prompts,
    register_backend,
    render_prompts,
    row_seed,
)
from saro.reasoning import close_reasoning

log = logging.getLogger(__name__)

INSTALL_HINT = "vllm is not installed; pip install 'saro[gpu]' in a GPU environment"


END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>")


def _import_vllm() -> tuple[Any, Any, Any]:
    """vLLM's ``LLM``, ``SamplingParams`` and ``TokensPrompt`` (a plain dict where vllm.inputs lacks it)."""
    try:
        from vllm import LLM
        from vllm import SamplingParams as VSamplingParams
    except ImportError:
        raise SaroError(INSTALL_HINT) from None
    try:
        from vllm.inputs import TokensPrompt
    except ImportError:  # the engine accepts the same {"prompt_token_ids": [...]} dict
        TokensPrompt = dict
    return LLM, VSamplingParams, TokensPrompt


class VLLMGenerator(Generator):
    """vLLM offline generation: tensor parallel, n samples per prompt in one request, seeded sampling."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "auto",
        max_model_len: int | None = None,
        seed: int = 0,
        chat_template: str | None = None,
        batch_size: int = 512,
        trust_remote_code: bool = False,
        label: str | None = None,
        **engine_kw: Any,
    ) -> None:
        LLM, self._SP, self._TokensPrompt = _import_vllm()
        from saro.models.loading import resolve_source

        source = resolve_source(model)
        kw: dict[str, Any] = {
            "model": source,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "dtype": dtype,
            "seed": seed,
            "trust_remote_code": trust_remote_code,
            **engine_kw,
        }
        if max_model_len is not None:
            kw["max_model_len"] = max_model_len
        log.info("loading %s in vLLM (tensor_parallel_size=%d)", source, tensor_parallel_size)
        self.llm = LLM(**kw)
        self.tok = self.llm.get_tokenizer()
        if chat_template:
            from saro.models.templates import install_template

            install_template(self.tok, chat_template)
        self.batch_size = max(1, batch_size)
        self.label = label or model
        self.stop_token_ids = _end_of_turn_ids(self.tok)

    def _prompts(self, conversations: Sequence[Conversation]) -> list[str]:
        return render_prompts(self.tok, conversations)

    def _sampling(self, params: SamplingParams, max_tokens: int, n: int, seeds: list[int]) -> list[Any]:
        """Our SamplingParams -> vLLM's, one per prompt with that prompt's seed (greedy when temperature is 0);
        generation stops at any end-of-turn token of the template, as in the HF backend, even where the model's
        own eos is another one. vLLM draws the ``n`` samples of a request from its seed, so they differ."""
        kw: dict[str, Any] = {"n": n, "max_tokens": max_tokens}
        if self.stop_token_ids:
            kw["stop_token_ids"] = list(self.stop_token_ids)
        if params.temperature > 0:
            kw.update(temperature=params.temperature, top_p=params.top_p)
        else:
            kw.update(temperature=0.0, top_p=1.0)
        return [self._SP(**kw, seed=s) for s in seeds]

    def _run(self, prompts: list[str], sp: list[Any]) -> list[list[Generation]]:
        ids = encode_prompts(self.tok, prompts)
        outs = self.llm.generate([self._TokensPrompt(prompt_token_ids=p) for p in ids], sp, use_tqdm=False)
        return [
            [Generation(o.text, o.finish_reason == "stop", len(o.token_ids)) for o in req.outputs]
            for req in outs
        ]

    def _generate_prompts(self, prompts: list[str], params: SamplingParams) -> list[list[Generation]]:
        # one seed per prompt from (run seed, prompt): a prompt's samples do not depend on the chunk it lands in,
        # so a resumed stage samples what an uninterrupted one would have
        seeds = [row_seed(params.seed, p, 0) for p in prompts]
        budget = params.reasoning_budget
        if not budget or budget >= params.max_new_tokens:
            return self._run(prompts, self._sampling(params, params.max_new_tokens, params.n, seeds))
        first = self._run(prompts, self._sampling(params, budget, params.n, seeds))
        todo: list[tuple[int, int]] = []
        cont: list[str] = []
        for i, gens in enumerate(first):
            for j, g in enumerate(gens):
                if g.finished:
                    continue
                partial = close_reasoning(g.text)
                todo.append((i, j))
                cont.append(partial)
        if not todo:
            return first
        texts = [prompts[i] + cont[k] for k, (i, _) in enumerate(todo)]
        rest = self._sampling(
            params, params.max_new_tokens - budget, 1, [row_seed(params.seed, t, 1) for t in texts]
        )
        second = self._run(texts, rest)
        out = [list(g) for g in first]
        for k, (i, j) in enumerate(todo):
            s = second[k][0]
            out[i][j] = Generation(cont[k] + s.text, s.finished, first[i][j].tokens + s.tokens)
        return out

    def generate_batches(
        self, conversations: Sequence[Conversation], params: SamplingParams, description: str = "generating"
    ) -> Iterator[tuple[list[int], list[list[Generation]]]]:
        """Yield (indices, generations) chunk by chunk of ``batch_size`` conversations, in input order."""
        prompts = self._prompts(conversations)
        with make_progress() as prog:
            task = prog.add_task(f"{description} ({self.label})", total=len(prompts))
            for b in range(0, len(prompts), self.batch_size):
                idx = list(range(b, min(b + self.batch_size, len(prompts))))
                gens = self._generate_prompts([prompts[i] for i in idx], params)
                prog.advance(task, len(idx))
                yield idx, gens

    def close(self) -> None:
        """Free the engine and its GPU memory, so that a later stage can load another model."""
        try:
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:  # not every vLLM version has these; freeing the engine is what matters
            pass
        self.llm = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


def _end_of_turn_ids(tok: Any) -> list[int]:
    """The ids of the end-of-turn tokens this tokenizer has (besides its eos, which vLLM stops at anyway)."""
    vocab = tok.get_vocab()
    ids = {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
    if getattr(tok, "eos_token_id", None) is not None:
        ids.add(tok.eos_token_id)
    return sorted(ids)


@register_backend("vllm")
def _vllm(model: str, **kw: Any) -> Generator:
    return VLLMGenerator(model, **kw)
