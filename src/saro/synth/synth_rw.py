"""The ``synth_rw`` stage: build RIT-D, the Reasoning-style Warmup SFT data.

For every RW prompt the teacher writes k candidate trajectories (policy reasoning + answer): one request per prompt
asking for k samples, so they are k different draws. A candidate passes when its format parses (closed reasoning,
at least one "Wait, ..." reflection, a decision), the teacher finished it (a text cut at ``max_new_tokens`` is
rejected as ``truncated``), it does not refer to the label note the teacher was given (``label``), its behaviour is
right (judged on the final answer as the user reads it, against the unwrapped request: refuse harmful prompts, help
benign and borderline ones) and, for harmful prompts, it names the prompt's policy category (a prompt whose
category is ``unclear`` names none). Shortest Rejection Sampling keeps the passing candidate with the fewest
reasoning tokens (in student tokens; ties by total tokens); ``selection: random`` keeps a seeded random passing one
instead (the paper's SRS ablation). Every example records its reasoning tokens and those of all its passing
candidates, and the stats report ``srs_saving`` = 1 - mean(chosen) / mean(random passing), in reasoning tokens,
the acceptance per prompt and per candidate (with n and a 95% interval), and how many of each prompt's k
candidates are distinct. Every rejection is recorded with its reason.

Files (``runs/<name>/synth_rw/``): ``answers.jsonl`` (offline teacher: the answer model's replies),
``candidates.jsonl`` (all candidates, resumable by id), ``rit_d.jsonl`` (SFT ``messages`` rows), ``rejects.jsonl``,
``safety_sft.jsonl`` (the SafetySFT baseline: same answers, no reasoning) and ``stats.json``.
"""

from __future__ import annotations

import logging
import random
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saro import stages
from saro.judges.base import REFUSED, UNPARSEABLE, expected_label
from saro.models.generate import Generation, SamplingParams
from saro.policy import NONE, Policy
from saro.prompts.attacks import judge_input
from saro.prompts.categorize import UNCLEAR
from saro.reasoning import parse
from saro.recipe import SynthRWConfig
from saro.records import (
    CONTENT,
    ROLE,
    JsonlWriter,
    Prompt,
    SFTExample,
    Trajectory,
    atomic_write_json,
    read_jsonl,
    read_rows,
    stable_id,
    write_jsonl_atomic,
)
from saro.stage import StageContext
from saro.stats import rate
from saro.synth.answers import Answer, answer_id, model_answers, stage_backend
from saro.synth.teacher import OfflineTeacher, base_text
from saro.synth.teacher_prompts import (
    LABEL_CUE_REASON,
    TRUNCATED,
    cites_label,
    teacher_messages,
    validate_teacher_output,
)

log = logging.getLogger(__name__)

_DECISION = re.compile(
    r"\b(i will|i'll|i should|i must|i won't|i can't|so i|decline|refuse|help|answer|assist)\b", re.IGNORECASE
)


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: SynthRWConfig = ctx.config
    ctx.set_threads()
    prompts = ctx.records("prompts", "rw", Prompt)
    if cfg.teacher.backend == "offline":
        answers = _answers(ctx, cfg, prompts)
        _offline_candidates(ctx, cfg, prompts, answers)
    else:
        _model_candidates(ctx, cfg, prompts)
    return finalize(ctx.dir, prompts, cfg, ctx.policy, _student_tokenizer(ctx), ctx.seed, cfg.teacher.backend)


def _student_tokenizer(ctx: StageContext) -> Any:
    from saro.models.loading import load_tokenizer

    return load_tokenizer(ctx.model.source, ctx.model.trust_remote_code)


# ------------------------------------------------------------------------------------- offline teacher


def _answers(ctx: StageContext, cfg: SynthRWConfig, prompts: list[Prompt]) -> dict[str, Answer]:
    """The answer model's own replies to the (unwrapped) benign and borderline prompts."""
    texts = [base_text(p) for p in prompts if p.kind != "harmful"]
    return model_answers(ctx, cfg.answer_model, texts, ctx.dir / "answers.jsonl", "answer model")


def _offline_candidates(
    ctx: StageContext, cfg: SynthRWConfig, prompts: list[Prompt], answers: dict[str, Answer]
) -> None:
    """k composed candidates per prompt; for benign/borderline prompts the answer model's reply is the answer, and
    a reply that stops mid-sentence makes the candidate ``truncated`` (rejected)."""
    teacher = OfflineTeacher(ctx.policy, seed=ctx.seed)
    with JsonlWriter(ctx.dir / "candidates.jsonl", fsync=False) as w:
        for p in prompts:
            ans = answers.get(answer_id(base_text(p))) if p.kind != "harmful" else None
            cut = ans is not None and not ans.complete
            for k in range(cfg.k):
                cid = stable_id(p.id, k)
                if cid in w:
                    continue
                c = teacher.compose(p, sample=k, answer=ans.text if ans else None)
                meta: dict[str, Any] = {"style": c.style}
                if ans is not None:
                    meta["answer_finished"] = ans.finished
                if cut:
                    meta["reason"] = "truncated: the answer model's reply stops mid-sentence"
                w.write(
                    Trajectory(
                        id=cid,
                        prompt_id=p.id,
                        sample=k,
                        text=c.text,
                        generator="offline",
                        status="rejected" if cut else "ok",
                        meta=meta,
                    )
                )


# --------------------------------------------------------------------------------------- model teachers


def _model_candidates(ctx: StageContext, cfg: SynthRWConfig, prompts: list[Prompt]) -> None:
    """k samples per prompt from a model teacher, asked as one conversation with ``n = k``.

    A malformed sample (no parseable reasoning with a reflection and an answer) or one cut at ``max_new_tokens``
    is asked again (the ``openai`` backend re-asks malformed ones itself, with its request cache; for the other
    backends the prompt is sampled again with a new seed and the missing sample index taken from it), then
    recorded as rejected with the reason. A request that still fails after the backend's retries (server errors,
    timeouts) is not recorded as a candidate: it goes to ``errors.jsonl`` and is asked again when the stage is
    resumed; if the stage finishes without it, the prompt's rejects say so.
    """
    spec = cfg.teacher
    gen = stage_backend(ctx, spec, validate=validate_teacher_output)
    label = f"{spec.backend}:{spec.model}"
    attempts = 1 if spec.backend == "openai" else spec.malformed_retries + 1
    errors_path = ctx.dir / "errors.jsonl"
    with JsonlWriter(ctx.dir / "candidates.jsonl") as w:
        todo = {p.id: [k for k in range(cfg.k) if stable_id(p.id, k) not in w] for p in prompts}
        for attempt in range(attempts):
            asked = [p for p in prompts if todo[p.id]]
            if not asked:
                break
            convs = [teacher_messages(p, ctx.policy, few_shot=cfg.few_shot) for p in asked]
            # the attempt number changes the seed, so a retry is a new sample
            params = SamplingParams(
                max_new_tokens=spec.max_new_tokens,
                temperature=spec.temperature if spec.temperature > 0 else (0.7 if cfg.k > 1 else 0.0),
                top_p=spec.top_p,
                n=cfg.k,
                seed=ctx.seed + 1000 * attempt,
            )
            retry: dict[str, list[int]] = {}
            desc = "teacher" + (f" (attempt {attempt + 1})" if attempt else "")
            for idx, gens in gen.generate_batches(convs, params, description=desc):
                for i, samples in zip(idx, gens, strict=True):
                    p = asked[i]
                    for k in todo[p.id]:
                        if not _record_sample(w, errors_path, p, k, samples[k], label, attempt, attempts):
                            retry.setdefault(p.id, []).append(k)
            todo = {pid: retry.get(pid, []) for pid in todo}
    gen.close()


def _record_sample(
    w: JsonlWriter,
    errors_path: Path,
    p: Prompt,
    k: int,
    out: Generation,
    label: str,
    attempt: int,
    attempts: int,
) -> bool:
    """Write sample ``k`` of prompt ``p`` as a candidate (ok or rejected with its reason), or log its failed
    request; False when it should be asked again (malformed or truncated, and attempts are left)."""
    cid = stable_id(p.id, k)
    if out.status == "error":
        _log_error(errors_path, cid, p.id, k, out.error or "request failed")
        return True
    if out.status == "rejected":
        reason = out.error
    else:
        reason = validate_teacher_output(out.text) or (None if out.finished else TRUNCATED)
        if reason and attempt + 1 < attempts:
            return False
    meta = {"attempts": attempt + 1, "finished": out.finished, "tokens": out.tokens}
    w.write(
        Trajectory(
            id=cid,
            prompt_id=p.id,
            sample=k,
            text=out.text,
            generator=label,
            status="rejected" if reason else "ok",
            meta={**meta, **({"reason": reason} if reason else {})},
        )
    )
    return True


def _log_error(path: Path, cid: str, prompt_id: str, sample: int, error: str) -> None:
    """Append a failed request (several per candidate are possible across resumes; not a resumable record)."""
    import json

    with open(path, "a", encoding="utf-8") as f:
        f.write(
            json.dumps({"candidate_id": cid, "prompt_id": prompt_id, "sample": sample, "error": error}) + "\n"
        )


# ---------------------------------------------------------------------------------------------- filter


def check_candidate(p: Prompt, text: str, verdict: str, policy: Policy, cfg: SynthRWConfig) -> list[str]:
    """Reasons a candidate fails (empty list = it passes)."""
    reasons = []
    parsed = parse(text)
    fmt = validate_teacher_output(text)
    if fmt:
        if fmt.startswith("no 'Wait") and not cfg.require_reflection:
            pass
        else:
            reasons.append(f"format: {fmt}")
    if parsed.steps and not _DECISION.search(parsed.steps[-1]):
        reasons.append("format: last reasoning step is not a decision")
    if cites_label(text):
        reasons.append(LABEL_CUE_REASON)
    want = expected_label(p.kind)
    if verdict == UNPARSEABLE:
        reasons.append("behaviour: no judgeable final answer")
    elif verdict != want:
        reasons.append(
            "behaviour: "
            + ("did not refuse a harmful prompt" if want == REFUSED else f"refused a {p.kind} prompt")
        )
    if (
        cfg.require_category
        and p.kind == "harmful"
        and p.category not in (NONE, UNCLEAR)
        and parsed.reasoning
    ):
        cat = policy.get(p.category)
        low = parsed.reasoning.lower()
        if f"[{cat.id}]" not in low and cat.name.lower() not in low:
            named = re.findall(r"\[([a-z_]+)\]", low)
            reasons.append(f"category: names {named or 'no category'}, prompt is [{cat.id}]")
    return reasons


_GROUPS = ("kind", "category", "attack")


@dataclass
class _Tally:
    """What ``finalize`` accumulates over the prompts."""

    rit: list[SFTExample] = field(default_factory=list)
    sft_base: list[SFTExample] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    acc: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in _GROUPS})
    tot: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in _GROUPS})
    reasons: Counter[str] = field(default_factory=Counter)
    # per candidate: (kind, passed, cluster) for the acceptance rates, and distinct texts per prompt
    cand: list[tuple[str, bool, str]] = field(default_factory=list)
    distinct: list[int] = field(default_factory=list)
    short_tokens: list[int] = field(default_factory=list)
    random_tokens: list[int] = field(default_factory=list)
    chosen_tokens: list[int] = field(default_factory=list)
    reasoning_tokens: list[int] = field(default_factory=list)
    passing_reasoning_means: list[float] = field(default_factory=list)
    answer_tokens: list[int] = field(default_factory=list)


def finalize(
    sdir: Path,
    prompts: list[Prompt],
    cfg: SynthRWConfig,
    policy: Policy,
    tokenizer: Any,
    seed: int,
    teacher: str,
) -> dict[str, Any]:
    """Judge every candidate, keep the shortest passing one per prompt, write RIT-D, rejects, baseline and stats."""
    from saro.judges import get_judge

    cands = read_jsonl(sdir / "candidates.jsonl", Trajectory)
    by_prompt: dict[str, list[Trajectory]] = defaultdict(list)
    for c in cands:
        by_prompt[c.prompt_id].append(c)
    ok = [c for c in cands if c.status == "ok"]
    pmap = {p.id: p for p in prompts}
    verdicts = get_judge(cfg.judge).judge([judge_input(pmap[c.prompt_id], c.text) for c in ok])
    label = {c.id: v.label for c, v in zip(ok, verdicts, strict=True)}
    errors = _request_errors(sdir)
    t = _Tally()
    for p in prompts:
        cs = sorted(by_prompt.get(p.id, []), key=lambda c: c.sample)
        _missing(p, cs, cfg, errors, t)
        passing = _passing(p, cs, label, policy, cfg, t)
        if cs:
            t.distinct.append(len({c.text for c in cs}))
        for key, val in (("kind", p.kind), ("category", p.category), ("attack", p.attack or "none")):
            t.tot[key][val] += 1
            if passing:
                t.acc[key][val] += 1
        if passing:
            rng = random.Random(stable_id("srs", seed, p.id))
            _accept(p, passing, label, tokenizer, rng, cfg, teacher, t)
    write_jsonl_atomic(sdir / _output("rit_d"), t.rit)
    write_jsonl_atomic(sdir / "rejects.jsonl", t.rejects)
    if cfg.safety_sft:
        write_jsonl_atomic(sdir / _output("safety_sft"), t.sft_base)
    stats = _stats(prompts, cands, cfg, t)
    atomic_write_json(sdir / _output("stats"), stats)
    srs = stats["shortest_rejection_sampling"]
    log.info(
        "RIT-D: %d/%d prompts accepted; %s selection saves %.1f%% of reasoning tokens vs a random passing "
        "candidate (n=%d, k=%d)",
        len(t.rit),
        len(prompts),
        cfg.selection,
        100 * srs["srs_saving"],
        srs["n"],
        cfg.k,
    )
    return {
        "accepted": len(t.rit),
        "prompts": len(prompts),
        "selection": cfg.selection,
        "srs_token_reduction": srs["token_reduction"],
        "srs_saving": srs["srs_saving"],
        "srs_n": srs["n"],
    }


def _output(name: str) -> str:
    """The file of one of the stage's declared outputs, inside its folder (``saro.stages``)."""
    return stages.get("synth_rw").output(name).path()


def _request_errors(sdir: Path) -> dict[str, str]:
    """Candidate id -> the last error of a request that never produced a candidate."""
    if not (sdir / "errors.jsonl").exists():
        return {}
    return {r["candidate_id"]: r["error"] for r in read_rows(sdir / "errors.jsonl")}


def _reject(p: Prompt, cid: str, sample: int, reasons: list[str], verdict: str | None) -> dict[str, Any]:
    return {
        "id": cid,
        "prompt_id": p.id,
        "sample": sample,
        "kind": p.kind,
        "category": p.category,
        "attack": p.attack,
        "reasons": reasons,
        "verdict": verdict,
    }


def _missing(p: Prompt, cs: list[Trajectory], cfg: SynthRWConfig, errors: dict[str, str], t: _Tally) -> None:
    """A reject for every sample index without a candidate (its request failed, or the stage is incomplete)."""
    have = {c.sample for c in cs}
    for k in range(cfg.k):
        if k in have:
            continue
        cid = stable_id(p.id, k)
        reason = f"request failed: {errors[cid]}" if cid in errors else "no candidate (stage incomplete)"
        t.rejects.append(_reject(p, cid, k, [reason], None))
        t.reasons["request" if cid in errors else "missing"] += 1


def _passing(
    p: Prompt, cs: list[Trajectory], label: dict[str, str], policy: Policy, cfg: SynthRWConfig, t: _Tally
) -> list[Trajectory]:
    """The candidates that pass; every other one becomes a reject with its reasons."""
    passing = []
    for c in cs:
        if c.status != "ok":
            reasons = [c.meta.get("reason", "malformed")]
        else:
            reasons = check_candidate(p, c.text, label[c.id], policy, cfg)
        t.cand.append((p.kind, not reasons, p.base_id or p.id))
        if reasons:
            t.rejects.append(_reject(p, c.id, c.sample, reasons, label.get(c.id)))
            t.reasons.update(r.split(":")[0] for r in reasons)
        else:
            passing.append(c)
    return passing


def _accept(
    p: Prompt,
    passing: list[Trajectory],
    label: dict[str, str],
    tokenizer: Any,
    rng: random.Random,
    cfg: SynthRWConfig,
    teacher: str,
    t: _Tally,
) -> None:
    """Keep one passing candidate (and its SafetySFT twin): the one with the fewest reasoning tokens, ties broken by
    total tokens (Shortest Rejection Sampling, as the paper states its saving), or a seeded random one
    (``selection: random``, the SRS ablation)."""

    def ntok(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    lengths = [ntok(c.text) for c in passing]
    parsed_all = [parse(c.text) for c in passing]
    r_lengths = [ntok(x.reasoning or "") for x in parsed_all]
    shortest = min(range(len(passing)), key=lambda i: (r_lengths[i], lengths[i], passing[i].sample))
    drawn = rng.randrange(len(passing))
    best = shortest if cfg.selection == "shortest" else drawn
    t.short_tokens.append(lengths[shortest])
    t.random_tokens.append(lengths[drawn])
    t.chosen_tokens.append(lengths[best])
    chosen = passing[best]
    parsed = parsed_all[best]
    n_r = r_lengths[best]
    n_a = ntok(parsed.answer)
    mean_r = statistics.fmean(r_lengths)
    t.reasoning_tokens.append(n_r)
    t.passing_reasoning_means.append(mean_r)
    t.answer_tokens.append(n_a)
    meta = {
        "prompt_id": p.id,
        "kind": p.kind,
        "category": p.category,
        "attack": p.attack,
        "source": p.source,
        "teacher": teacher,
        "k": cfg.k,
        "passing": len(passing),
        "sample": chosen.sample,
        "selection": cfg.selection,
        "style": chosen.meta.get("style"),
        "reasoning_tokens": n_r,
        "reasoning_tokens_passing_mean": round(mean_r, 2),
        "reasoning_tokens_passing": r_lengths,
        "total_tokens_passing": lengths,
        "answer_tokens": n_a,
        "judge": {cfg.judge: label[chosen.id]},
    }
    user = {ROLE: "user", CONTENT: p.text}
    messages = [user, {ROLE: "assistant", CONTENT: chosen.text}]
    t.rit.append(SFTExample(id=stable_id(p.id, "rit_d"), messages=messages, meta=meta))
    if cfg.safety_sft:
        base = [user, {ROLE: "assistant", CONTENT: parsed.answer}]
        meta_b = {**meta, "baseline": "safety_sft"}
        t.sft_base.append(SFTExample(id=stable_id(p.id, "safety_sft"), messages=base, meta=meta_b))


def _stats(prompts: list[Prompt], cands: list[Trajectory], cfg: SynthRWConfig, t: _Tally) -> dict[str, Any]:
    def rate(key: str) -> dict[str, dict[str, float | int]]:
        return {
            k: {"accepted": t.acc[key][k], "total": n, "rate": round(t.acc[key][k] / n, 3)}
            for k, n in t.tot[key].items()
        }

    def mean(xs: list[int]) -> float:
        return round(statistics.fmean(xs), 1) if xs else 0

    short, rand = t.short_tokens, t.random_tokens
    return {
        "prompts": len(prompts),
        "candidates": len(cands),
        "accepted": len(t.rit),
        "rejected_candidates": len(t.rejects),
        "rejection_reasons": dict(t.reasons),
        "acceptance": {"kind": rate("kind"), "category": rate("category"), "attack": rate("attack")},
        "candidate_acceptance": _candidate_acceptance(t),
        "distinct_candidates": {
            "k": cfg.k,
            "prompts": len(t.distinct),
            "mean_per_prompt": round(statistics.fmean(t.distinct), 3) if t.distinct else 0.0,
            "prompts_all_distinct": sum(1 for d in t.distinct if d == cfg.k),
        },
        "tokens": {
            "reasoning_mean": mean(t.reasoning_tokens),
            "answer_mean": mean(t.answer_tokens),
            "total_mean": mean(t.chosen_tokens),
        },
        "shortest_rejection_sampling": {
            "k": cfg.k,
            "selection": cfg.selection,
            "mean_tokens_shortest": mean(short),
            "mean_tokens_random_passing": mean(rand),
            "token_reduction": round(1 - sum(short) / sum(rand), 4) if rand else 0.0,
            **srs_saving(t.reasoning_tokens, t.passing_reasoning_means),
        },
    }


def _candidate_acceptance(t: _Tally) -> dict[str, Any]:
    """The share of candidates that pass, overall and per kind, with a 95% interval (the candidates of one prompt,
    and of the wrappings of one base prompt, are resampled together)."""

    def one(rows: list[tuple[str, bool, str]]) -> dict[str, Any]:
        return rate([ok for _, ok, _ in rows], clusters=[c for _, _, c in rows])

    kinds = sorted({k for k, _, _ in t.cand})
    return {"all": one(t.cand), "kind": {k: one([r for r in t.cand if r[0] == k]) for k in kinds}}


def srs_saving(chosen: list[int], passing_means: list[float]) -> dict[str, Any]:
    """1 - mean(chosen) / mean(random passing) in reasoning tokens, over the accepted examples (the expected
    length of a random passing candidate is the mean over the passing ones), with n and both means."""
    n = len(chosen)
    if len(passing_means) != n:
        raise ValueError(f"srs_saving: {n} chosen lengths but {len(passing_means)} passing means")
    total = sum(passing_means)
    return {
        "n": n,
        "reasoning_tokens_chosen_mean": round(statistics.fmean(chosen), 2) if n else 0.0,
        "reasoning_tokens_random_passing_mean": round(total / n, 2) if n else 0.0,
        "srs_saving": round(1 - sum(chosen) / total, 4) if total > 0 else 0.0,
    }
