"""The ``eval`` stage: every model generates on the held-out suites, the judges label the final answers, and
metrics with bootstrap intervals are computed per model and suite.

Files (``runs/<name>/eval/``): ``<model>/generations.jsonl`` (EvalRecord, resumable by id),
``judgements.jsonl`` (one Judgement per record and judge, resumable), ``metrics.json``.
Completions to harmful prompts stay in these files; nothing is printed.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from saro.evaluate.metrics import compute_metrics
from saro.models.generate import SamplingParams, make_generator
from saro.pipeline import StageContext
from saro.reasoning import parse
from saro.recipe import BackendSpec, EvalConfig, EvalModel
from saro.records import (
    CONTENT,
    ROLE,
    EvalRecord,
    JsonlWriter,
    Judgement,
    Prompt,
    atomic_write_json,
    read_jsonl,
    stable_id,
)

log = logging.getLogger(__name__)


def suite_of(p: Prompt) -> str:
    """The suite a prompt belongs to: its recipe ``suite`` or one derived from source and attack split."""
    if p.meta.get("suite"):
        return str(p.meta["suite"])
    if p.attack:
        return f"{p.source}-jailbreak-{p.meta.get('attack_split', 'attack')}"
    return p.source


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: EvalConfig = ctx.config
    ctx.set_threads()
    prompts = read_jsonl(ctx.require("prompts", "eval.jsonl"), Prompt)
    if not prompts:
        from saro.errors import SaroError

        raise SaroError("eval: the recipe has no eval prompts (prompts.eval is empty)")
    for m in cfg.models:
        generate_for_model(ctx, cfg, m, prompts)
    records = {m.name: read_jsonl(gen_path(ctx.dir, m.name), EvalRecord) for m in cfg.models}
    judge_records(ctx.dir, cfg, prompts, records)
    metrics = {
        name: compute_metrics(rs, cfg.judges[0], cfg.bootstrap, ctx.seed) for name, rs in records.items()
    }
    out = {
        "primary_judge": cfg.judges[0],
        "judges": cfg.judges,
        "models": metrics,
        "sources": {m.name: m.source for m in cfg.models},
    }
    atomic_write_json(ctx.dir / "metrics.json", out)
    return {"models": list(metrics), "records": sum(len(r) for r in records.values())}


def gen_path(d: Path, model: str) -> Path:
    return d / _safe_name(model) / "generations.jsonl"


def generate_for_model(ctx: StageContext, cfg: EvalConfig, m: EvalModel, prompts: list[Prompt]) -> None:
    path = gen_path(ctx.dir, m.name)
    with JsonlWriter(path) as w:
        todo = [p for p in prompts if stable_id(m.name, p.id) not in w]
        if not todo:
            return
        spec = m.backend or BackendSpec(backend="hf", model=m.source, batch_size=cfg.batch_size)
        if spec.model is None:
            spec = spec.model_copy(update={"model": m.source})
        from saro.models.teacher import backend_kwargs

        gen = make_generator(**backend_kwargs(spec, ctx))
        is_base = m.source == "@base"
        max_new = cfg.base_max_new_tokens if is_base and cfg.base_max_new_tokens else cfg.max_new_tokens
        params = SamplingParams(
            max_new_tokens=max_new, temperature=0.0, seed=ctx.seed, reasoning_budget=cfg.reasoning_budget
        )
        tok = _tokenizer(ctx, spec, m)
        convs = [[{ROLE: "user", CONTENT: p.text}] for p in todo]
        for idx, gens in gen.generate_batches(convs, params, description=f"eval {m.name}"):
            for i, g in zip(idx, gens, strict=True):
                p, out = todo[i], g[0]
                parsed = parse(out.text)
                n_r = _count(tok, parsed.reasoning or "")
                n_a = _count(tok, parsed.answer) if parsed.finished else 0
                w.write(
                    EvalRecord(
                        id=stable_id(m.name, p.id),
                        model=m.name,
                        suite=suite_of(p),
                        prompt_id=p.id,
                        text=p.text,
                        kind=p.kind,
                        category=p.category,
                        attack=p.attack,
                        completion=out.text,
                        reasoning_tokens=n_r,
                        answer_tokens=n_a,
                        finished=out.finished and parsed.finished,
                        meta={
                            k: v
                            for k, v in p.meta.items()
                            if k in ("answer", "attack_split", "attack_family", "source_id")
                        },
                    )
                )
        gen.close()


def _tokenizer(ctx: StageContext, spec: BackendSpec, m: EvalModel) -> Any:
    from saro.models.loading import load_tokenizer

    if spec.backend in ("hf", "vllm"):
        return load_tokenizer(ctx.resolve_model(spec.model))
    return load_tokenizer(ctx.recipe.model.source)  # API models: counted with the recipe's tokenizer


def _count(tok: Any, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"]) if text else 0


def judge_records(
    d: Path, cfg: EvalConfig, prompts: list[Prompt], records: dict[str, list[EvalRecord]]
) -> None:
    """Label every record with every judge (resumable), and copy the labels into the records in memory."""
    from saro.judges import JudgeInput, get_judge

    path = d / "judgements.jsonl"
    with JsonlWriter(path) as w:
        for name in cfg.judges:
            todo = [r for rs in records.values() for r in rs if stable_id(r.id, name) not in w]
            if not todo:
                continue
            judge = get_judge(name, **cfg.judge_options.get(name, {}))
            chunk = 64
            for s in range(0, len(todo), chunk):
                part = todo[s : s + chunk]
                verdicts = judge.judge([JudgeInput(r.text, r.completion) for r in part])
                for r, v in zip(part, verdicts, strict=True):
                    w.write(
                        Judgement(
                            id=stable_id(r.id, name),
                            record_id=r.id,
                            judge=name,
                            label=v.label,
                            score=v.score,
                            raw=v.raw,
                        )
                    )
    labels: dict[str, dict[str, str]] = defaultdict(dict)
    for j in read_jsonl(path, Judgement):
        labels[j.record_id][j.judge] = j.label
    for rs in records.values():
        for r in rs:
            r.labels = labels.get(r.id, {})
