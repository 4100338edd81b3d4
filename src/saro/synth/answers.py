"""Answer-model helpers for the synthesis stages: a model's own answers, and an LLM rewriter for attacks.

``stage_backend`` is the one place a stage turns a recipe ``BackendSpec`` into a generator: it resolves the model
reference and the request-cache folder and hands them to the typed factory ``saro.models.backends.make_backend``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from saro.errors import SaroError
from saro.models.backends import LOCAL_BACKENDS, make_backend
from saro.models.generate import Generator, SamplingParams
from saro.reasoning import parse
from saro.records import JsonlWriter, read_rows, stable_id

if TYPE_CHECKING:
    from saro.recipe import BackendSpec
    from saro.stage import StageContext

log = logging.getLogger(__name__)


def stage_backend(
    ctx: StageContext, spec: BackendSpec, validate: Callable[[str], str | None] | None = None
) -> Generator:
    """The generator a stage uses for ``spec``: model references resolved, requests cached in the run folder."""
    local = spec.backend in LOCAL_BACKENDS
    return make_backend(
        spec,
        model_path=ctx.resolve_model(spec.model) if local else None,
        dtype=ctx.model.dtype,
        cache_dir=ctx.run.root / ".cache" / "requests",
        validate=validate,
    )


_SENTENCE_END = ".!?\"')`"


def trim_answer(text: str) -> str:
    """Cut a generated answer back to its last complete sentence (generation budgets end mid-sentence)."""
    t = text.strip()
    if not t or t[-1] in _SENTENCE_END:
        return t
    cut = max(t.rfind(". "), t.rfind(".\n"), t.rfind("! "), t.rfind("? "), t.rfind("\n\n"))
    if cut > len(t) * 0.4:
        return t[: cut + 1].strip()
    return t


@dataclass(frozen=True)
class Answer:
    """A model's answer (trimmed to its last full sentence) and whether the model ended it itself."""

    text: str
    finished: bool

    @property
    def complete(self) -> bool:
        """Usable as a whole answer: the model ended it, or it was cut back to a full sentence (an answer that
        still stops mid-sentence must never be trained with an end-of-turn token)."""
        t = self.text.strip()
        return bool(t) and (self.finished or t[-1] in _SENTENCE_END)


def answer_id(text: str) -> str:
    """The id of a model's answer to ``text`` (the key of ``answers.jsonl`` / ``drift_answers.jsonl``)."""
    return stable_id(text, "answer")


def model_answers(
    ctx: StageContext, spec: BackendSpec, texts: list[str], path: Path, description: str
) -> dict[str, Answer]:
    """A model's own answers to ``texts`` (trimmed to the last full sentence), keyed by ``answer_id``.

    Appended to ``path`` one by one, so a killed stage keeps what it has and only generates the rest; a request
    that failed is not recorded (its text is missing from the result) and is asked again on resume.
    """
    todo = {answer_id(t): t for t in texts}
    with JsonlWriter(path) as w:
        missing = [(aid, t) for aid, t in todo.items() if aid not in w]
        if missing:
            gen = stage_backend(ctx, spec)
            params = SamplingParams(
                max_new_tokens=spec.max_new_tokens, temperature=spec.temperature, seed=ctx.seed
            )
            convs = [[{"role": "user", "content": t}] for _, t in missing]
            for idx, gens in gen.generate_batches(convs, params, description=description):
                for i, g in zip(idx, gens, strict=True):
                    if g[0].status == "error":  # not recorded: asked again when the stage is resumed
                        log.warning(
                            "%s: a request failed (%s); rerun the stage to ask it again",
                            description,
                            g[0].error,
                        )
                        continue
                    w.write({"id": missing[i][0], "text": trim_answer(g[0].text), "finished": g[0].finished})
            gen.close()
    return {r["id"]: Answer(r["text"], bool(r.get("finished", True))) for r in read_rows(path)}


def make_rewriter(ctx: StageContext, spec: BackendSpec) -> Callable[[str], str]:
    """A text rewriter (instruction in, rewrite out) on a model teacher, for LLM-assisted attacks."""
    gen = stage_backend(ctx, spec)
    params = SamplingParams(max_new_tokens=min(spec.max_new_tokens, 512), temperature=0.7, seed=ctx.seed)

    def rewrite(instruction: str) -> str:
        out = gen.generate([[{"role": "user", "content": instruction}]], params)[0][0]
        if out.status != "ok":
            raise SaroError(f"attack rewrite through the teacher failed: {out.error}")
        return parse(out.text).answer or out.text.strip()  # a reasoning teacher's rewrite is its final answer

    return rewrite
