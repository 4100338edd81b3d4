"""The ``eval`` stage: every model generates on the held-out suites, every judge labels the final answers, and
metrics with 95% intervals are computed per model and suite, with paired comparisons between models.

Files (``runs/<name>/eval/``): ``<model>/generations.jsonl`` (EvalRecord, resumable by id),
``judgements.jsonl`` (one Judgement per record and judge, resumable), ``contamination.json`` (eval prompts found in
the models' training data), ``metrics.json``. Completions to harmful prompts stay in these files; nothing is
printed.

Generation goes through any backend (``hf``, ``vllm``, ``openai``: ``eval.models[].backend``), greedy unless a
suite asks otherwise; each suite's sampling (``saro.suites``) is applied, with ``max_new_tokens`` capped by
``eval.max_new_tokens`` and ``eval.reasoning_budget`` as the default thinking budget.
"""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from saro.errors import SaroError
from saro.evaluate.metrics import (
    compute_metrics,
    is_harm_judge,
    is_refusal_judge,
    judge_agreement,
    paired_metrics,
)
from saro.evaluate.quality import REASONING_SUFFIX
from saro.evaluate.recovery import recovery_metrics, turn_position
from saro.evaluate.schema import METRICS_VERSION, write_metrics
from saro.fingerprint import unit_hash
from saro.judges.base import JudgeInput
from saro.models.backends import LOCAL_BACKENDS
from saro.models.generate import SamplingParams
from saro.policy import Policy
from saro.reasoning import parse
from saro.recipe import BackendSpec, EvalConfig, EvalModel
from saro.records import (
    EvalRecord,
    JsonlWriter,
    Judgement,
    Prompt,
    atomic_write_json,
    read_jsonl,
    stable_id,
)
from saro.stage import RunDir, RunFiles, StageContext
from saro.stages import MAIN, parse_model_ref
from saro.stats import IntervalMethod
from saro.suites import suite_of, suite_sampling

log = logging.getLogger(__name__)

# prompt metadata carried into EvalRecords (what metrics need; never the unwrapped harmful text)
RECORD_META = (
    "answer",
    "attack_split",
    "attack_family",
    "source_id",
    "xstest_type",
    "data_type",
    "method",
    "wrapped",
    "phrasing",
    "rephrased",
    "contrast",
    "cross_source",
    "overlap",
    "prefill",
    "prefill_kind",
    "prefill_style",
)
PREFILL = "prefill"  # prompt meta: the opening of the assistant turn the model continues


def run(ctx: StageContext[EvalConfig]) -> dict[str, Any]:
    cfg = ctx.config
    ctx.set_threads()
    prompts = ctx.records("prompts", "eval", Prompt)
    if not prompts:
        raise SaroError(
            "eval: the recipe has no eval prompts (prompts.eval and prompts.eval_suites are empty)"
        )
    contamination = check_contamination(ctx, cfg, prompts)
    if cfg.drop_contaminated and contamination.get("eval_ids"):
        found = set(contamination["eval_ids"])
        kept = [p for p in prompts if (p.base_id or p.id) not in found]
        contamination["dropped"] = len(prompts) - len(kept)
        log.warning("eval: left out %d eval prompts found in the training data", contamination["dropped"])
        prompts = kept
        if not prompts:
            raise SaroError("eval: every eval prompt is in the training data (drop_contaminated)")
    contamination = _cross_source(contamination, prompts)  # after the drop: only the prompts evaluated
    hashes = ctx.unit_hashes()
    for m in cfg.models:
        _reuse_generations(ctx, m.name, hashes[m.name])
        generate_for_model(ctx, cfg, m, prompts)
    records = {m.name: read_generations(ctx.output("generations", m.name), m, prompts) for m in cfg.models}
    judge_records(ctx.dir, cfg, prompts, records)
    suite_info = _suite_info(ctx)
    declared = {s: i["type"] for s, i in suite_info.items() if i.get("type")}
    scored = score_models(records, cfg.judges, declared, cfg.bootstrap, ctx.seed, cfg.interval)
    if cfg.lm_eval is not None:
        for m in cfg.models:
            scored["models"][m.name]["lm_eval"] = lm_eval_for_model(ctx, cfg, m)
    every = [r for rs in records.values() for r in rs]
    out = {
        **scored,
        "judge_info": judge_info(cfg),
        "sources": {m.name: m.source for m in cfg.models},
        "backends": {m.name: (m.backend.backend if m.backend else "hf") for m in cfg.models},
        "templates": {m.name: template_of(ctx, cfg, m) for m in cfg.models},
        "methods": methods_info(cfg),
        "suites": suite_info,
        "contamination": contamination,
    }
    write_metrics(ctx.output("metrics"), out)
    return {
        "models": list(scored["models"]),
        "records": len(every),
        "contaminated": contamination.get("contaminated", 0),
    }


def _suite_info(ctx: StageContext[EvalConfig]) -> dict[str, dict[str, Any]]:
    """``prompts.suite_info``: version, type and sampling of every eval suite (a declared setting)."""
    return ctx.setting("prompts.suite_info", dict[str, dict[str, Any]])


def read_generations(path: Path, m: EvalModel, prompts: list[Prompt]) -> list[EvalRecord]:
    """One model's records of the prompts evaluated now, each with its prompt's ``base_id`` (a file of an older
    saro has none: taken from the prompt). Records of other prompts (generations reused from a run that dropped
    fewer prompts as contaminated) are left out."""
    by_id = {p.id: p for p in prompts_for_model(m, prompts)}
    out = []
    for r in read_jsonl(path, EvalRecord):
        p = by_id.get(r.prompt_id)
        if p is None:
            continue
        if r.base_id is None and p.base_id is not None:
            r.base_id = p.base_id
        out.append(r)
    return out


def score_models(
    records: dict[str, list[EvalRecord]],
    judges: list[str],
    suite_types: dict[str, str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    interval: IntervalMethod = "wilson",
) -> dict[str, Any]:
    """The numbers of ``metrics.json`` from judged records: per-model metrics, paired comparisons between every
    pair of models, what each judge measures and the judges' agreement (the first judge is primary)."""
    every = [r for rs in records.values() for r in rs]
    return {
        "metrics_version": METRICS_VERSION,
        "interval": interval,
        "primary_judge": judges[0],
        "judges": judges,
        "judge_measures": {j: judge_measures(every, j) for j in judges},
        "paired": paired_metrics(records, judges[0], suite_types),
        "agreement": judge_agreement(every, judges),
        "models": {
            name: {
                **compute_metrics(rs, judges[0], n_boot, seed, suite_types, judges, interval),
                "recovery": recovery_metrics(rs, judges[0], interval, n_boot=n_boot, seed=seed),
            }
            for name, rs in records.items()
        },
    }


def judge_measures(records: list[EvalRecord], judge: str) -> str:
    """What a judge's labels measure: "refusal" (refused/complied), "harm" (unsafe/safe) or "other"."""
    if is_refusal_judge(records, judge):
        return "refusal"
    return "harm" if is_harm_judge(records, judge) else "other"


def sampling_for(ctx: StageContext[EvalConfig], cfg: EvalConfig, m: EvalModel, suite: str) -> SamplingParams:
    """Decoding settings for one model on one suite: the suite's sampling, capped by the eval section."""
    s = suite_sampling(_suite_info(ctx).get(suite))
    cap = cfg.base_max_new_tokens if m.source == "@base" and cfg.base_max_new_tokens else cfg.max_new_tokens
    return SamplingParams(
        max_new_tokens=min(s.max_new_tokens or cap, cap),
        temperature=s.temperature,
        top_p=s.top_p,
        seed=ctx.seed,
        reasoning_budget=s.reasoning_budget or cfg.reasoning_budget,
    )


def _model_identity(ctx: StageContext[EvalConfig], source: str) -> Any:
    """What a model reference stands for: the trained model's unit hash, or the base model / path itself."""
    ref = parse_model_ref(source)
    if ref is not None and ref.stage != "base":
        return ctx.model_units(ref.stage).get(ref.variant or MAIN)
    if ref is not None:
        return ctx.model.model_dump(mode="json", exclude_defaults=True)
    return source


def unit_hashes(ctx: StageContext[EvalConfig]) -> dict[str, str]:
    """{model: hash} of the eval models' generations: the model, the eval prompts (and whether contaminated ones
    are dropped), the decoding settings and the method with the texts it adds."""
    cfg = ctx.config
    settings = cfg.model_dump(
        mode="json",
        include={
            "max_new_tokens",
            "base_max_new_tokens",
            "reasoning_budget",
            "batch_size",
            "drop_contaminated",
        },
    )
    suite_info = _suite_info(ctx)
    out = {}
    for m in cfg.models:
        method: list[Any] = []
        if m.method != "none":
            from saro.evaluate.methods import method_fingerprint

            method = [method_fingerprint(m.method, ctx.policy), m.reflect_max_new_tokens]
        stripped = STRIPPED_TEMPLATE if m.template == "stripped" else None
        unit = {
            "name": m.name,
            "settings": settings,
            "backend": m.backend.model_dump(mode="json", exclude_defaults=True) if m.backend else None,
            "suites": suite_info,
            "seed": ctx.seed,
            "method": method,
            "template": [m.template, stripped, m.suites],
        }
        inputs = {"model": _model_identity(ctx, m.source), "prompts": ctx.hashes.get("prompts")}
        out[m.name] = unit_hash("model", unit, inputs, ctx.row.unit_version)
    return out


# the message texts only, one after another: what a model sees when it is prompted without its chat template
STRIPPED_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{{ '\n\n' }}{% endfor %}"


def prompts_for_model(m: EvalModel, prompts: list[Prompt]) -> list[Prompt]:
    """The eval prompts one model is evaluated on: every prompt, or those of its ``suites``."""
    if m.suites is None:
        return prompts
    known = {suite_of(p) for p in prompts}
    unknown = sorted(set(m.suites) - known)
    if unknown:
        raise SaroError(
            f"eval.models '{m.name}'.suites: {', '.join(unknown)} not among the eval suites ({', '.join(sorted(known))})"
        )
    return [p for p in prompts if suite_of(p) in m.suites]


def _strip_template(gen: Any, m: EvalModel, spec: BackendSpec, tok: Any) -> None:
    """``template: stripped``: render the prompts without the chat template (the message texts only)."""
    if m.template != "stripped":
        return
    if spec.backend not in ("hf", "ct2") or not hasattr(gen, "tok"):
        raise SaroError(
            f"eval model '{m.name}': template: stripped needs the hf or ct2 backend (it has {spec.backend})"
        )
    gen.tok.chat_template = STRIPPED_TEMPLATE


def methods_info(cfg: EvalConfig) -> dict[str, dict[str, str]]:
    """``metrics.json`` "methods": per model its kind and method name. A model with no method is "trained" only
    when saro trained it (a ``@train_*`` reference, or a folder inside a saro run); the base model or any other
    model evaluated as it is has kind "none"."""
    from saro.evaluate.methods import method_kind

    out: dict[str, dict[str, str]] = {}
    for m in cfg.models:
        kind: str = method_kind(m.method)
        if m.method == "none" and not _trained_by_saro(m.source):
            kind = "none"
        out[m.name] = {"method": kind, "name": m.method}
    return out


def _trained_by_saro(source: str) -> bool:
    from saro.analysis.contamination import run_dir_of

    ref = parse_model_ref(source)
    if ref is not None:
        return ref.stage != "base"
    return run_dir_of(source) is not None


def _reuse_generations(ctx: StageContext[EvalConfig], name: str, h: str) -> None:
    """With ``reuse_from``: start from another run's generations for the same model, prompts and settings."""
    src_dir = ctx.reused_unit(name, h)
    dst = ctx.output("generations", name)
    if src_dir is None or ctx.reuse_from is None or dst.exists():
        return
    src = RunDir(ctx.reuse_from).file("eval", "generations", name)
    if src.exists():
        shutil.copy2(src, dst)  # a real copy: this stage appends to it
        log.info("eval %s: generations reused from %s", name, ctx.reuse_from)


def generate_for_model(
    ctx: StageContext[EvalConfig], cfg: EvalConfig, m: EvalModel, prompts: list[Prompt]
) -> None:
    """Generate (resumably) for every eval prompt this model has no record for yet, under the model's method
    (``saro.evaluate.methods``); records are written batch by batch."""
    path = ctx.output("generations", m.name)
    with JsonlWriter(path) as w:
        todo = [p for p in prompts_for_model(m, prompts) if stable_id(m.name, p.id) not in w]
        if not todo:
            return
        spec = _spec(cfg, m)
        from saro.models.backends import make_backend

        groups: dict[SamplingParams, list[Prompt]] = defaultdict(list)
        for p in todo:
            groups[sampling_for(ctx, cfg, m, suite_of(p))].append(p)
        tok = _tokenizer(ctx, spec, m)
        check_prefill_template(m, spec, tok, todo)
        gen = make_backend(
            spec,
            model_path=ctx.resolve_model(spec.model) if spec.backend in LOCAL_BACKENDS else None,
            dtype=ctx.model.dtype,
            cache_dir=ctx.run.root / ".cache" / "requests",
        )
        try:
            _strip_template(gen, m, spec, tok)
            for params, group in groups.items():
                for rec in generate_group(gen, m, group, params, ctx.policy, tok, spec.batch_size):
                    w.write(rec)
        finally:
            gen.close()


def generate_group(
    gen: Any,
    m: EvalModel,
    group: list[Prompt],
    params: SamplingParams,
    policy: Policy,
    tok: Any,
    batch_size: int = 8,
) -> Iterator[EvalRecord]:
    """The records of one model on prompts that share decoding settings, yielded as each batch is done."""
    from saro.evaluate.methods import build_conversation, self_reflect_batches

    what = f"eval {m.name}" + ("" if m.method == "none" else f" ({m.method})")
    if m.method == "self_reflect":
        stream = self_reflect_batches(
            gen,
            [p.text for p in group],
            params,
            policy,
            m.reflect_max_new_tokens,
            [_prefill(p) for p in group],
            batch_size,
            description=what,
        )
        for idx, outs in stream:
            for i, o in zip(idx, outs, strict=True):
                yield _reflect_record(m, group[i], o, tok)
        return
    convs = [build_conversation(p.text, m.method, policy, _prefill(p)) for p in group]
    for idx, gens in gen.generate_batches(convs, params, description=what):
        for i, g in zip(idx, gens, strict=True):
            p = group[i]
            extra = _prefill_meta(p, g[0].text, tok)
            yield _record(m, p, (_prefill(p) or "") + g[0].text, g[0].finished, tok, extra)


def _prefill(p: Prompt) -> str | None:
    value = p.meta.get(PREFILL)
    return str(value) if value else None


def _prefill_meta(p: Prompt, continuation: str, tok: Any) -> dict[str, Any]:
    """Record meta of a prefilled prompt: the prefill's length and where the continuation turns."""
    prefill = _prefill(p)
    if prefill is None:
        return {}
    kind = p.meta.get("prefill_kind")
    return {
        "prefill_chars": len(prefill),
        "turn_tokens": turn_tokens(continuation, str(kind), tok) if kind else None,
    }


def turn_tokens(continuation: str, prefill_kind: str, tok: Any) -> int | None:
    """Tokens of the continuation before it turns away from its prefill (``saro.evaluate.recovery``), None when
    it never turns."""
    pos = turn_position(continuation, prefill_kind)
    return None if pos is None else _count(tok, continuation[: int(pos)])


def check_prefill_template(m: EvalModel, spec: BackendSpec, tok: Any, prompts: list[Prompt]) -> None:
    """A suite that prefills the assistant turn needs a chat template to continue it (local models)."""
    from saro.models.templates import template_label

    if spec.backend not in LOCAL_BACKENDS:
        return
    pre = next((p for p in prompts if _prefill(p)), None)
    if pre is not None and template_label(tok) == "none":
        raise SaroError(
            f"eval model '{m.name}' ({m.source}): suite '{suite_of(pre)}' prefills the assistant turn, but the "
            "model's tokenizer has no chat template to continue it; leave that suite out for this model"
        )


def _reflect_record(m: EvalModel, p: Prompt, o: Any, tok: Any) -> EvalRecord:
    """A self_reflect record: the completion is the reviewed answer; the draft and both passes' tokens are kept."""
    extra = {
        "draft": o.draft,
        "draft_tokens": o.first.tokens,
        "reflect_tokens": o.final.tokens,
        "tokens": o.tokens,
        "draft_finished": o.first.finished,
        **_prefill_meta(p, o.first.text, tok),
    }
    return _record(m, p, o.final.text, o.final.finished, tok, extra)


def _record(
    m: EvalModel, p: Prompt, completion: str, finished: bool, tok: Any, extra: dict[str, Any] | None = None
) -> EvalRecord:
    parsed = parse(completion)
    meta = {k: v for k, v in p.meta.items() if k in RECORD_META and v is not None}
    return EvalRecord(
        id=stable_id(m.name, p.id),
        model=m.name,
        suite=suite_of(p),
        prompt_id=p.id,
        base_id=p.base_id,
        text=p.text,
        kind=p.kind,
        category=p.category,
        attack=p.attack,
        completion=completion,
        reasoning_tokens=_count(tok, parsed.reasoning or ""),
        answer_tokens=_count(tok, parsed.answer) if parsed.finished else 0,
        finished=finished and parsed.finished,
        meta={**meta, **(extra or {})},
    )


def _spec(cfg: EvalConfig, m: EvalModel) -> BackendSpec:
    """The backend that generates for eval model ``m`` (a local model through hf unless the recipe says)."""
    spec = m.backend or BackendSpec(backend="hf", model=m.source, batch_size=cfg.batch_size)
    return spec if spec.model is not None else spec.model_copy(update={"model": m.source})


def template_of(ctx: StageContext[EvalConfig], cfg: EvalConfig, m: EvalModel) -> str:
    """The chat template family a model was evaluated with (``served`` for API models, whose server renders it),
    so the report can show that base and trained models were prompted the same way."""
    from saro.models.loading import load_tokenizer
    from saro.models.templates import template_label

    spec = _spec(cfg, m)
    if m.template == "stripped":
        return "stripped (no chat template)"
    if spec.backend not in LOCAL_BACKENDS:
        return "served"
    return template_label(load_tokenizer(ctx.resolve_model(spec.model)))


def _tokenizer(ctx: StageContext[EvalConfig], spec: BackendSpec, m: EvalModel) -> Any:
    from saro.models.loading import load_tokenizer

    if spec.backend in LOCAL_BACKENDS:
        return load_tokenizer(ctx.resolve_model(spec.model))
    return load_tokenizer(ctx.model.source)  # API models: counted with the recipe's tokenizer


def _count(tok: Any, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"]) if text else 0


def registry_name(cfg: EvalConfig, judge: str) -> str:
    """The registered judge behind a judge name of the eval section (``judge_aliases`` resolved)."""
    return cfg.judge_aliases.get(judge, judge)


def judge_input(record: EvalRecord, text: str, prompt: Prompt | None) -> JudgeInput:
    """What a judge receives for one record: the prompt as the model saw it, the text to judge (the assistant
    turn, or its reasoning for the ``:reasoning`` judges) and the clean request harm judges judge against (the
    unwrapped request of a jailbreak-wrapped prompt, ``prompts.wording.base_text``). The one place that decides it:
    a view of the answer for prefix-injection attacks (the answer after the injected opening) belongs here too."""
    from saro.prompts.wording import base_text

    return JudgeInput(record.text, text, base_text(prompt) if prompt is not None else None)


def judge_records(
    d: Path, cfg: EvalConfig, prompts: list[Prompt], records: dict[str, list[EvalRecord]]
) -> None:
    """Label every record with every judge (resumable), and copy the labels, scores and verdict flags into the
    records in memory (``labels``; meta ``judge_scores``, ``judge_flags``).

    Each judge gets the prompt as the model saw it and the clean request (``judge_input``): harm judges whose
    protocol names the behaviour judge against the latter. A harmfulness judge (labels safe/unsafe) also reads the
    reasoning of every harmful record that has one, under the judge name ``"<judge>:reasoning"``: that is what the
    reasoning-leak rate counts.
    """
    from saro.judges import get_judge

    by_id = {p.id: p for p in prompts}
    path = d / "judgements.jsonl"
    seen = _labels_by_judge(path)
    with JsonlWriter(path) as w:
        for name in cfg.judges:
            todo = [
                (r, r.completion, name)
                for rs in records.values()
                for r in rs
                if stable_id(r.id, name) not in w
            ]
            rname = name + REASONING_SUFFIX
            think = [
                (r, parse(r.completion).reasoning or "", rname)
                for rs in records.values()
                for r in rs
                if r.kind == "harmful"
                and parse(r.completion).has_reasoning
                and stable_id(r.id, rname) not in w
            ]
            known_harm = bool(seen.get(name)) and seen[name] <= {"safe", "unsafe", "unparseable"}
            if not todo and not (think and known_harm):
                continue
            judge = get_judge(registry_name(cfg, name), **cfg.judge_options.get(name, {}))
            try:
                _judge_items(w, judge, todo, by_id, f"judge {name}")
                if "unsafe" in judge.labels:
                    _judge_items(w, judge, think, by_id, f"judge {name} (reasoning)")
            finally:
                judge.close()
    attach_judgements(records, read_jsonl(path, Judgement))


def attach_judgements(records: dict[str, list[EvalRecord]], judgements: list[Judgement]) -> None:
    """Copy each record's verdicts into it (in memory): ``labels``, and meta ``judge_scores`` / ``judge_flags``
    (what the metrics count apart: truncated, unfinished)."""
    from saro.evaluate.measures import JUDGE_FLAGS
    from saro.evaluate.metrics import JUDGE_SCORES

    by_record: dict[str, list[Judgement]] = defaultdict(list)
    for j in judgements:
        by_record[j.record_id].append(j)
    for rs in records.values():
        for r in rs:
            js = by_record.get(r.id, [])
            r.labels = {j.judge: j.label for j in js}
            r.meta[JUDGE_SCORES] = {j.judge: j.score for j in js if j.score is not None}
            r.meta[JUDGE_FLAGS] = {
                j.judge: [f for f in ("truncated", "unfinished") if getattr(j, f)] for j in js
            }


def _labels_by_judge(path: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    if path.exists():
        for j in read_jsonl(path, Judgement):
            out[j.judge].add(j.label)
    return out


def _judge_items(
    w: JsonlWriter,
    judge: Any,
    items: list[tuple[EvalRecord, str, str]],
    prompts: dict[str, Prompt],
    what: str,
) -> None:
    """Judge (record, text, judge name) items in chunks of 64, writing one Judgement each (with the verdict's
    truncated / unfinished flags)."""
    from saro.console import make_progress

    if not items:
        return
    chunk = 64
    with make_progress() as prog:
        task = prog.add_task(what, total=len(items))
        for s in range(0, len(items), chunk):
            part = items[s : s + chunk]
            inputs = [judge_input(r, text, prompts.get(r.prompt_id)) for r, text, _ in part]
            for (r, _, name), v in zip(part, judge.judge(inputs), strict=True):
                w.write(
                    Judgement(
                        id=stable_id(r.id, name),
                        record_id=r.id,
                        judge=name,
                        label=v.label,
                        score=v.score,
                        raw=v.raw,
                        truncated=bool(v.truncated),
                        unfinished=bool(getattr(v, "unfinished", False)),
                    )
                )
            prog.advance(task, len(part))


def judge_info(cfg: EvalConfig) -> dict[str, Any]:
    """Per judge: the registered judge, its options, and for refusal judges the measured held-out agreement with
    human labels (``refusal_accuracy``)."""
    out: dict[str, Any] = {}
    for name in cfg.judges:
        reg = registry_name(cfg, name)
        opts = cfg.judge_options.get(name, {})
        entry: dict[str, Any] = {"judge": reg, "options": opts}
        if reg == "refusal":
            entry["offtopic_is_refusal"] = opts.get("offtopic_is_refusal", False)
            if cfg.refusal_accuracy:
                entry["accuracy"] = refusal_accuracy(opts)
        out[name] = entry
    return out


def refusal_accuracy(options: dict[str, Any]) -> dict[str, Any]:
    """The refusal judge's held-out agreement with human labels (``{"error": ...}`` when unavailable)."""
    from saro.judges.refusal import held_out_accuracy

    try:
        return held_out_accuracy(**options)
    except (SaroError, TypeError) as e:
        return {"error": str(e)}


def check_contamination(
    ctx: StageContext[EvalConfig], cfg: EvalConfig, prompts: list[Prompt]
) -> dict[str, Any]:
    """Eval prompts against the training data of the evaluated models' runs (and extra files); written to
    ``eval/contamination.json``."""
    from saro.analysis.contamination import contamination_report, run_dir_of, training_files

    others: list[Path] = []
    for m in cfg.models:
        r = run_dir_of(m.source) if not m.source.startswith("@") else None
        if r is not None:
            others.append(r)
    others += [_resolve(ctx, r) for r in cfg.contamination_runs]
    own = bool(training_files(ctx))  # this run's training data, read through the stage's declared reads
    runs: list[RunFiles | str | Path] = [ctx] if own else []
    runs += [r for r in dict.fromkeys(others) if not (own and r == ctx.root)]
    files: list[str | Path] = [_resolve(ctx, f) for f in cfg.contamination_files]
    out = contamination_report(prompts, runs, files, cfg.contamination_threshold)
    atomic_write_json(ctx.output("contamination"), out)
    return out


def _cross_source(contamination: dict[str, Any], prompts: list[Prompt]) -> dict[str, Any]:
    """An eval prompt marked cross-source that the contamination check found in the training data is an error
    (``saro.analysis.contamination.check_cross_source``). Run on the prompts that are evaluated, so
    ``drop_contaminated`` settles it."""
    from saro.analysis.contamination import check_cross_source

    check_cross_source(contamination, prompts)
    return contamination


def _resolve(ctx: StageContext[EvalConfig], path: str) -> Path:
    p = Path(path)
    if not p.is_absolute() and not p.exists() and ctx.recipe_dir is not None:
        alt = ctx.recipe_dir / p
        if alt.exists():
            return alt
    return p


def lm_eval_for_model(ctx: StageContext[EvalConfig], cfg: EvalConfig, m: EvalModel) -> dict[str, Any]:
    """The optional lm-evaluation-harness run on a local or hub model (API models are skipped)."""
    from saro.evaluate.harness import run_lm_eval

    assert cfg.lm_eval is not None
    if m.backend is not None and m.backend.backend == "openai":
        return {"skipped": "lm_eval runs on model folders; this model is served through an API"}
    from saro.models.loading import resolve_source

    source = resolve_source(ctx.resolve_model(m.backend.model if m.backend and m.backend.model else m.source))
    c = cfg.lm_eval
    return run_lm_eval(
        source, c.tasks, ctx.unit_dir(m.name) / "lm_eval", c.limit, c.batch_size, c.device, c.args
    )
