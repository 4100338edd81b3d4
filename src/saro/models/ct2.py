"""The ``ct2`` backend: CTranslate2, the fast CPU engine for local models.

A transformers folder is converted once (``saro.models.ct2_convert``) and generated from with the same prompt
rendering (``render_prompts``: prefilled turns continue, one BOS), end-of-turn ids, ``Generation`` semantics,
reasoning budget and sampling knobs (``saro.models.sampling``) as the ``hf`` backend; greedy token ids are the same.

Batching. CTranslate2 has no attention mask: it runs the shortest prompt of a batch at once and steps through the
rest of the longer prompts one token per step, so a batch is only as fast as its lengths are alike. Batches are
cut from the prompts sorted by token length, at ``batch_size`` rows or when the lengths would spread by more than
``max_spread`` tokens. A prefix that every row of a batch shares (a long system prompt with exemplars) is passed
as ``static_prompt``: computed once, and cached by CTranslate2 for the next batches with the same prefix.

Sampling. CTranslate2 draws every row of a batch from one random generator per worker thread, seeded once when
the thread first samples (``set_random_seed`` has no effect later), so a row's sample depends on its batch-mates
(measured: the same prompt and seed alone, or beside another prompt, or in another position, gives another
sample). Sampled batches are therefore made deterministic from their content: each runs on a freshly loaded
engine seeded from (run seed, the batch's prompts in order). The batches are cut walking from the shortest prompt
and yielded from the longest, so when a resumed stage passes only the prompts it has not written, every batch
left is cut exactly as before and samples exactly what an uninterrupted run sampled; only the unwritten rows of a
batch killed while it was being written are resampled (still deterministically). ``generate_rows`` (serve, chat)
seeds each call from its rows' seeds and prompts: a seeded request reproduces its answer when it is batched with
the same requests, in particular when it runs alone.

Speed on an AMD CPU depends on the GEMM library: ``CT2_USE_MKL`` is set to ``DEFAULT_USE_MKL`` unless the
environment sets it (measured: bench/generation_throughput.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saro.console import make_progress
from saro.errors import SaroError
from saro.models.generate import (
    Conversation,
    Generation,
    Generator,
    SamplingParams,
    TextCallback,
    check_rows,
    encode_prompts,
    end_of_turn_ids,
    group_rows,
    register_backend,
    render_prompts,
    row_callback,
    with_reasoning_budget,
)
from saro.models.sampling import ModelSampling
from saro.models.streaming import RowCallback, TextStreams

log = logging.getLogger(__name__)

COMPUTE_TYPES = ("float32", "int8")
DEFAULT_USE_MKL = "1"
STATIC_PROMPT_MIN = 64  # tokens every row of a batch must share before they are passed as a static prompt


@dataclass(frozen=True)
class Row:
    """One row of a ct2 batch: the caller's row index, its prompt ids, and the text it continues."""

    index: int
    ids: list[int]
    text: str


def max_spread(max_new_tokens: int) -> int:
    """How many tokens the prompt lengths in one batch may differ by. CTranslate2 drops a row from the batch when
    it is done, and a longer row steps through its extra prompt tokens while the shorter rows generate, so up to
    ``max_new_tokens`` of difference costs little; beyond that the longer row would step through its prompt alone,
    one token a step, where in a batch of its own it is run at once (a cost model over the bench prompts put this
    rule within 13% of the best cut, and a quarter of it up to 49% slower)."""
    return max(16, max_new_tokens)


def plan_batches(lengths: Sequence[int], keys: Sequence[str], size: int, spread: int) -> list[list[int]]:
    """Batches of row indices: rows sorted by (length, key), cut walking from the shortest at ``size`` rows or
    when the lengths would spread by more than ``spread``; returned longest batch first.

    The cut depends only on the rows themselves, so removing whole batches (a resumed stage's written prompts)
    leaves every other batch as it was: a batch's first row was cut from the one before by size or spread, and a
    longer row before it can only be cut by the same rule."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], keys[i]))
    batches: list[list[int]] = []
    for i in order:
        cur = batches[-1] if batches else None
        if cur is None or len(cur) >= size or lengths[i] - lengths[cur[0]] > spread:
            batches.append([i])
        else:
            cur.append(i)
    return batches[::-1]


def shared_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving at least one token in each row (0 for one row)."""
    if len(rows) < 2:
        return 0
    first, limit = rows[0], min(len(r) for r in rows) - 1
    n = 0
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return n


def batch_seed(parts: Sequence[object]) -> int:
    """A 32-bit CTranslate2 seed from a batch's content (its seed, its prompts and rows in order)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode("utf-8", "surrogatepass") + b"\x1f")
    return int(h.hexdigest()[:8], 16)


class CT2Generator(Generator):
    """A converted model run by CTranslate2 on the CPU; see the module docstring for batching and seeding."""

    name = "ct2"

    def __init__(
        self,
        model_dir: str | Path,
        tokenizer: Any,
        generation_config: Any = None,
        batch_size: int = 8,
        compute_type: str = "float32",
        threads: int | None = None,
        label: str | None = None,
        context_length: int | None = None,
        source: Path | None = None,
    ) -> None:
        """``model_dir``: a converted folder; ``source``: the transformers folder it was converted from (for
        ``scoring_model``)."""
        if compute_type not in COMPUTE_TYPES:
            raise SaroError(f"ct2: unknown compute_type '{compute_type}' ({', '.join(COMPUTE_TYPES)})")
        self.model_dir = Path(model_dir)
        self.tok = tokenizer
        self.batch_size = batch_size
        self.compute_type = compute_type
        self.threads = threads or _torch_threads()
        self.label = label or self.model_dir.name
        self.context_length = context_length
        self.sampling = ModelSampling.of(generation_config)
        self.end_ids = end_of_turn_ids(tokenizer, generation_config)
        self._warn_unmatched()
        self.source = source
        self._scorer: Any = None
        self.engine: Any = None
        self._sampled = False  # its random generator was used: a seeded batch needs a fresh engine
        self._load()
        self._check_vocabulary()

    @classmethod
    def from_source(
        cls,
        source: str,
        batch_size: int = 8,
        compute_type: str = "float32",
        threads: int | None = None,
        label: str | None = None,
    ) -> CT2Generator:
        """Convert (once) and load a model folder, "embedded" or a hub id."""
        from transformers import AutoConfig, GenerationConfig

        from saro.models.ct2_convert import converted_model
        from saro.models.loading import load_tokenizer, local_folder

        folder = local_folder(source)
        converted = converted_model(folder, "int8" if compute_type == "int8" else "float32")
        try:
            gen_config = GenerationConfig.from_pretrained(str(folder))
        except OSError:
            gen_config = None
        n = getattr(AutoConfig.from_pretrained(str(folder)), "max_position_embeddings", None)
        return cls(
            converted,
            load_tokenizer(str(folder), padding_side="left"),
            gen_config,
            batch_size=batch_size,
            compute_type=compute_type,
            threads=threads,
            label=label or source,
            context_length=n if isinstance(n, int) and n > 0 else None,
            source=folder,
        )

    def eos_ids(self) -> list[int]:
        """The token ids that end a turn (the same the HF backend stops on)."""
        return list(self.end_ids)

    def scoring_model(self) -> Any:
        """The transformers model (loaded on first use, float32), for token log-probabilities
        (``/v1/completions``): CTranslate2 returns the chosen tokens' log-probs but no alternatives."""
        if self._scorer is None:
            if self.source is None:
                raise SaroError("ct2: this generator was made from a converted folder; it cannot score text")
            from saro.models.loading import load_model

            self._scorer = load_model(str(self.source), dtype="float32", device="cpu").eval()
        return self._scorer

    # ------------------------------------------------------------------------------------------ engine

    def _load(self) -> None:
        os.environ.setdefault("CT2_USE_MKL", DEFAULT_USE_MKL)  # read once, at CTranslate2's first GEMM
        import ctranslate2

        self.engine = None  # free the old engine before loading its replacement
        self.engine = ctranslate2.Generator(
            str(self.model_dir), device="cpu", compute_type=self.compute_type, intra_threads=self.threads
        )
        self._sampled = False

    def _seed(self, seed: int) -> None:
        """Make the next sampled call draw from ``seed``: a fresh engine (its worker thread seeds its random
        generator at its first draw, from the global seed set here)."""
        import ctranslate2

        if self._sampled:
            self._load()
        ctranslate2.set_random_seed(seed)
        self._sampled = True

    def _check_vocabulary(self) -> None:
        """The converted vocabulary must be the tokenizer's, id for id, over the tokenizer's ids (prompts are passed
        as token strings; a model may pad its vocabulary past the tokenizer's)."""
        import json

        vocab = json.loads((self.model_dir / "vocabulary.json").read_text(encoding="utf-8"))
        n = min(len(vocab), len(self.tok))
        mine = self.tok.convert_ids_to_tokens(list(range(n)))
        bad = next((i for i in range(n) if mine[i] != vocab[i]), None)
        if bad is not None:
            raise SaroError(f"{self.model_dir}: converted vocabulary differs from the tokenizer at id {bad}")

    def _warn_unmatched(self) -> None:
        s = self.sampling
        if s.min_p is not None or s.typical_p is not None:
            log.warning(
                "ct2: the model's generation_config sets min_p/typical_p, which CTranslate2 does not apply"
            )
        if s.repetition_penalty != 1.0 or s.no_repeat_ngram_size:
            log.warning(
                "ct2: repetition_penalty / no_repeat_ngram_size from the generation_config apply to generated "
                "tokens only (transformers counts the prompt too)"
            )

    # ------------------------------------------------------------------------------------------ public

    def generate_batches(
        self, conversations: Sequence[Conversation], params: SamplingParams, description: str = "generating"
    ) -> Iterator[tuple[list[int], list[list[Generation]]]]:
        prompts = render_prompts(self.tok, conversations)
        ids = encode_prompts(self.tok, prompts)
        per = max(1, self.batch_size // max(1, params.n))
        keys = [hashlib.sha256(p.encode("utf-8", "surrogatepass")).hexdigest() for p in prompts]
        plan = plan_batches([len(x) for x in ids], keys, per, max_spread(params.max_new_tokens))
        with make_progress() as prog:
            task = prog.add_task(f"{description} ({self.label})", total=len(prompts))
            for idx in plan:
                rows = [
                    Row(r, ids[i], prompts[i]) for r, i in enumerate(i for i in idx for _ in range(params.n))
                ]
                seed = batch_seed([params.seed, params.n, *(prompts[i] for i in idx)])
                gens = self._generate(rows, params, seed)
                prog.advance(task, len(idx))
                yield idx, [gens[k * params.n : (k + 1) * params.n] for k in range(len(idx))]

    def generate_rows(
        self,
        conversations: Sequence[Conversation],
        params: Sequence[SamplingParams],
        on_text: TextCallback | None = None,
    ) -> list[list[Generation]]:
        """All conversations at once (no progress bar), each with its own temperature, top_p, seed and n; rows
        with the same temperature and top_p run as one CTranslate2 batch, seeded from their seeds and prompts.
        ``on_text`` gets the text token by token (streaming)."""
        rows = check_rows(conversations, params)
        if not rows:
            return []
        prompts = render_prompts(self.tok, conversations)
        ids = encode_prompts(self.tok, prompts)
        callback = None if on_text is None else row_callback(rows, on_text)
        gens: list[Generation | None] = [None] * len(rows)
        groups: dict[tuple[float, float], list[int]] = {}
        for r, (i, _) in enumerate(rows):
            p = params[i]
            groups.setdefault((p.temperature, p.top_p if p.temperature > 0 else 1.0), []).append(r)
        for members in groups.values():
            batch = [Row(r, ids[rows[r][0]], prompts[rows[r][0]]) for r in members]
            first = params[rows[members[0]][0]]
            seed = batch_seed([(params[rows[r][0]].seed, rows[r][1], prompts[rows[r][0]]) for r in members])
            for r, g in zip(members, self._generate(batch, first, seed, callback), strict=True):
                gens[r] = g
        return group_rows(rows, [g for g in gens if g is not None], len(conversations))

    def close(self) -> None:
        self.engine = None
        self._scorer = None

    # ------------------------------------------------------------------------------------------ batches

    def _generate(
        self, rows: list[Row], params: SamplingParams, seed: int, on_text: RowCallback | None = None
    ) -> list[Generation]:
        """One batch (rows sharing temperature and top_p), honouring the reasoning budget; ``on_text`` gets the
        caller's row index (``Row.index``)."""
        by_text = {r.text: r.ids for r in rows}
        local = None if on_text is None else (lambda i, piece: on_text(rows[i].index, piece))

        def run(texts: list[str], max_new: int, which: list[int]) -> list[Generation]:
            batch = [by_text.get(t) or encode_prompts(self.tok, [t])[0] for t in texts]
            return self._run(batch, which, max_new, params, batch_seed([seed, *which]), local)

        return with_reasoning_budget(run, [r.text for r in rows], params, local)

    def _run(
        self,
        batch: list[list[int]],
        callers: list[int],
        max_new: int,
        params: SamplingParams,
        seed: int,
        on_text: RowCallback | None,
    ) -> list[Generation]:
        """Generate ``max_new`` tokens at most for prompt ids; ``callers[r]`` is row r's index for ``on_text``;
        a sampled call draws from ``seed``."""
        kw: dict[str, Any] = {"sampling_topk": 1}
        if params.temperature > 0:
            self._seed(seed)
            kw = {
                "sampling_topk": self.sampling.top_k,
                "sampling_topp": params.top_p,
                "sampling_temperature": params.temperature,
            }
        n = shared_prefix(batch) if len(batch) > 1 else 0
        if n >= STATIC_PROMPT_MIN:
            kw["static_prompt"] = self.tok.convert_ids_to_tokens(batch[0][:n])
            batch = [b[n:] for b in batch]
        if on_text is not None:
            streams = TextStreams(self.tok, callers, on_text, self.end_ids)
            kw["callback"] = lambda step: streams.push(step.batch_id, step.token_id)
        results = self.engine.generate_batch(
            [self.tok.convert_ids_to_tokens(b) for b in batch],
            max_length=max_new,
            include_prompt_in_result=False,
            end_token=self.end_ids,
            return_end_token=True,
            repetition_penalty=self.sampling.repetition_penalty,
            no_repeat_ngram_size=self.sampling.no_repeat_ngram_size,
            **kw,
        )
        if on_text is not None:
            streams.end()
        return [self._generation(r.sequences_ids[0]) for r in results]

    def _generation(self, ids: list[int]) -> Generation:
        end = next((j for j, t in enumerate(ids) if t in self.end_ids), None)
        body = ids if end is None else ids[:end]
        return Generation(self.tok.decode(body, skip_special_tokens=True), end is not None, len(body))


def _torch_threads() -> int:
    """The thread count the stage set for torch (``threads:`` in the recipe), so both engines use the same."""
    import torch

    return max(1, torch.get_num_threads())


@register_backend("ct2")
def _ct2(
    model: str, batch_size: int = 8, compute_type: str = "float32", threads: int | None = None, **_: Any
) -> Generator:
    return CT2Generator.from_source(model, batch_size=batch_size, compute_type=compute_type, threads=threads)
