"""What "sampling" means in saro's local backends, and per-row seeded sampling for transformers.

The semantics are those of transformers' ``model.generate(do_sample=True, temperature=t, top_p=p)`` on the model:
the request sets ``temperature`` and ``top_p``; the model's ``generation_config`` supplies the rest of the
sampling knobs (``top_k``, with transformers' default of 50 when the config leaves it unset; ``min_p`` and
``typical_p`` when set); processors that act in greedy decoding too (``repetition_penalty``,
``no_repeat_ngram_size``, ...) come from the same ``generation_config`` and apply to greedy and sampled rows alike,
as in ``generate``. The order is transformers': temperature, top_k, top_p, min_p, typical_p.

``RowSampler`` draws each row with its own seeded RNG, so a row's sample depends only on (run seed, prompt, sample
index), never on which other rows share its batch: a resumed stage samples exactly what an uninterrupted one did.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 50  # transformers' default when neither the call nor the model's generation_config sets top_k


@dataclass(frozen=True)
class ModelSampling:
    """The sampling knobs a model's ``generation_config`` adds to a request's temperature and top_p."""

    top_k: int = DEFAULT_TOP_K  # 0: no top-k cut
    min_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float = 1.0  # applied by generate to greedy and sampled rows alike
    no_repeat_ngram_size: int = 0

    @classmethod
    def of(cls, generation_config: Any) -> ModelSampling:
        """The knobs of a transformers ``GenerationConfig`` (or None: transformers' defaults)."""

        def get(name: str) -> Any:
            return getattr(generation_config, name, None) if generation_config is not None else None

        top_k = get("top_k")
        return cls(
            top_k=DEFAULT_TOP_K if top_k is None else int(top_k),
            min_p=get("min_p"),
            typical_p=get("typical_p") if (get("typical_p") or 1.0) < 1.0 else None,
            repetition_penalty=float(get("repetition_penalty") or 1.0),
            no_repeat_ngram_size=int(get("no_repeat_ngram_size") or 0),
        )


def row_seed(seed: int, prompt: str, sample: int) -> int:
    """A sampling seed that depends only on the run seed, the rendered prompt and the sample index."""
    h = hashlib.sha256(f"{seed}\x1f{sample}\x1f{prompt}".encode("utf-8", "surrogatepass")).hexdigest()
    return int(h[:15], 16)


def _warpers(temperature: float, top_p: float, model: ModelSampling) -> Any:
    """transformers' own warpers for one row, in generate's order (the very code plain ``generate`` runs)."""
    from transformers import (
        LogitsProcessorList,
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
        TypicalLogitsWarper,
    )

    out = LogitsProcessorList()
    if temperature != 1.0:
        out.append(TemperatureLogitsWarper(temperature))
    if model.top_k:
        out.append(TopKLogitsWarper(top_k=model.top_k))
    if top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=top_p))
    if model.min_p is not None:
        out.append(MinPLogitsWarper(min_p=model.min_p))
    if model.typical_p is not None:
        out.append(TypicalLogitsWarper(mass=model.typical_p))
    return out


class RowSampler:
    """A ``generate`` logits processor that samples each row with its own temperature, top_p and seeded RNG.

    Rows with temperature 0 stay greedy. For the others the row's scores go through transformers' warpers and a
    token is drawn with the row's generator (as ``generate`` draws with the global one: softmax, then
    ``torch.multinomial``); every other score becomes -inf, so ``generate`` runs in greedy mode and picks it.
    """

    def __init__(
        self,
        temperatures: Sequence[float],
        top_ps: Sequence[float],
        seeds: Sequence[int],
        model: ModelSampling,
        device: Any = "cpu",
    ) -> None:
        import torch

        pairs = zip(temperatures, top_ps, strict=True)
        self.warpers = [_warpers(t, p, model) if t > 0 else None for t, p in pairs]
        self.rngs = [
            torch.Generator(device=device).manual_seed(int(s) % (2**63)) if w is not None else None
            for w, s in zip(self.warpers, seeds, strict=True)
        ]

    def subset(self, rows: Sequence[int]) -> RowSampler:
        """The sampler for a batch made of these rows (their RNGs continue where they were)."""
        sub = object.__new__(RowSampler)
        sub.warpers = [self.warpers[r] for r in rows]
        sub.rngs = [self.rngs[r] for r in rows]
        return sub

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        rows = [r for r, w in enumerate(self.warpers) if w is not None]
        if not rows:
            return scores
        out = scores.clone()
        for r in rows:
            warped = self.warpers[r](input_ids[r : r + 1], scores[r : r + 1].float())  # type: ignore[misc]
            probs = torch.softmax(warped, dim=-1)
            token = torch.multinomial(probs, 1, generator=self.rngs[r])
            out[r] = float("-inf")
            out[r, token[0, 0].to(out.device)] = 0.0
        return out
