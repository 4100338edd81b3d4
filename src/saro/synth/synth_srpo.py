"""The ``synth_srpo`` stage: preference data about the reasoning process (SRPO), from the RW model's own samples.

1. Sample the RW model n times per SRPO prompt (harmful, jailbreak-wrapped with training attacks, borderline,
   benign) and judge each sample's final answer as the user reads it, against the unwrapped request: right
   (refuse harmful, help benign/borderline) or wrong. With ``judge_reasoning`` a sample whose answer is right but
   whose reasoning drifts (offline step judge) is wrong too. A sample cut at ``max_new_tokens`` is neither: it is
   counted (``truncated``) and never trained on.
2. **OP-COT** (outcome level): for a prompt with right and wrong samples, chosen = the shortest right sample,
   rejected = a wrong one. Prompts where every sample is wrong get a chosen trajectory from the teacher.
3. **PP-COT** (process level): find the earliest step where a wrong trajectory drifts (the step judge: offline
   regex stance, or the teacher). chosen = shared prefix + a "Wait, ..." reflection naming the policy clause + a
   corrected continuation and answer (written by the teacher); rejected = the shared prefix + the drifting
   continuation. Without a wrong sample, a drift is constructed from a right sample's opening step. A pair whose
   shared prefix holds a step that already leans the wrong way (offline step judge) is not built (counted).
   The drift model's answers (the base model) are judged like the samples; only complete, compliant ones are used
   (the rejected side of a constructed harmful drift and of SafetyDPO, the answer of a benign prompt without a
   right sample). A prompt without one gets no constructed drift and no SafetyDPO pair; every such case is counted
   in ``stats.json`` (``drift_answers``, ``dropped``), and each pair that uses one says so in its meta.
4. **Early vs late**: the same correction placed at the earliest drifting step is preferred over the same
   correction placed after more drifting steps (early reflection saves tokens).
5. Mixing, de-duplication, hygiene drops and a length check against the DPO ``max_length`` are counted in
   ``stats.json``; **SafetyDPO** baseline pairs (direct answers, no reasoning) go to ``safety_dpo.jsonl``.

The teacher is the offline composer unless ``synth_srpo.teacher`` names a model (``synth.srpo_teacher``).
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from saro.judges.base import COMPLIED, expected_label
from saro.judges.step import find_drift, step_stance
from saro.models.generate import SamplingParams
from saro.prompts.attacks import judge_input
from saro.reasoning import parse
from saro.recipe import SynthSRPOConfig
from saro.records import (
    CONTENT,
    ROLE,
    JsonlWriter,
    PreferencePair,
    Prompt,
    Trajectory,
    atomic_write_json,
    read_jsonl,
    stable_id,
    write_jsonl_atomic,
)
from saro.stage import StageContext
from saro.synth.answers import Answer, answer_id, model_answers, stage_backend
from saro.synth.pairs import (
    PAIR_TYPES,
    early_late_pair,
    hygiene,
    length_check,
    make_pair,
    mix,
    nested_counts,
    pp_pair,
)
from saro.synth.srpo_prompts import UNPARSEABLE
from saro.synth.srpo_teacher import PENDING, Drift, ModelSRPOTeacher, OfflineSRPOTeacher, SRPOTeacher
from saro.synth.teacher import Correction, base_text, constructed_drift

log = logging.getLogger(__name__)

Judged = dict[str, list[tuple[Trajectory, str]]]  # prompt id -> (sample, outcome) sorted by sample


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: SynthSRPOConfig = ctx.config
    ctx.set_threads()
    prompts = ctx.records("prompts", "srpo", Prompt)
    _sample_policy(ctx, cfg, prompts)
    drift_answers = _drift_answers(ctx, cfg, prompts)
    return build_pairs(ctx, cfg, prompts, drift_answers)


def _sample_policy(ctx: StageContext, cfg: SynthSRPOConfig, prompts: list[Prompt]) -> None:
    spec = cfg.policy
    with JsonlWriter(ctx.dir / "samples.jsonl") as w:
        todo = [p for p in prompts if any(stable_id(p.id, "srpo", k) not in w for k in range(cfg.n_samples))]
        if not todo:
            return
        gen = stage_backend(ctx, spec)
        params = SamplingParams(
            max_new_tokens=spec.max_new_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            n=cfg.n_samples,
            seed=ctx.seed,
        )
        convs = [[{ROLE: "user", CONTENT: p.text}] for p in todo]
        for idx, gens in gen.generate_batches(convs, params, description="sampling the RW model"):
            for i, samples in zip(idx, gens, strict=True):
                p = todo[i]
                for k, g in enumerate(samples):
                    sid = stable_id(p.id, "srpo", k)
                    if sid in w:
                        continue
                    status = "ok" if g.finished else "unfinished"
                    w.write(
                        Trajectory(
                            id=sid, prompt_id=p.id, sample=k, text=g.text, generator="rw", status=status
                        )
                    )
        gen.close()


def _drift_answers(ctx: StageContext, cfg: SynthSRPOConfig, prompts: list[Prompt]) -> dict[str, Answer]:
    """The drift model's own answers (base model) to the unwrapped prompts, keyed by the unwrapped text's id: the
    compliant ones to harmful prompts become drifting continuations, those to benign prompts the corrected answer
    when no right sample exists."""
    texts = [base_text(p) for p in prompts]
    return model_answers(ctx, cfg.drift_model, texts, ctx.dir / "drift_answers.jsonl", "drift model answers")


def usable_drift_answers(
    cfg: SynthSRPOConfig, prompts: list[Prompt], answers: dict[str, Answer]
) -> tuple[dict[str, str], dict[str, Any]]:
    """Prompt id -> the drift model's answer where it is usable: complete (not cut mid-sentence) and judged
    ``complied`` (a refusal cannot be the compliant side of a pair, nor the answer to a benign prompt). Also the
    counts by kind: usable, refused, unparseable, truncated, missing (the request failed)."""
    from saro.judges import JudgeInput, get_judge

    by_aid = {answer_id(base_text(p)): base_text(p) for p in prompts}
    judged = [aid for aid in by_aid if aid in answers and answers[aid].complete]
    # the drift model was asked the unwrapped request itself, so it is judged against exactly that
    verdicts = get_judge(cfg.judge).judge([JudgeInput(by_aid[a], answers[a].text) for a in judged])
    label = {a: v.label for a, v in zip(judged, verdicts, strict=True)}
    usable: dict[str, str] = {}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for p in prompts:
        aid = answer_id(base_text(p))
        if aid not in answers:
            outcome = "missing"
        elif not answers[aid].complete:
            outcome = "truncated"
        else:
            outcome = "usable" if label[aid] == COMPLIED else label[aid]
        counts[p.kind][outcome] += 1
        if outcome == "usable":
            usable[p.id] = answers[aid].text
    return usable, {"judge": cfg.judge, "by_kind": {k: dict(v) for k, v in sorted(counts.items())}}


def judge_samples(cfg: SynthSRPOConfig, prompts: list[Prompt], samples: list[Trajectory]) -> Judged:
    """Each sample's outcome: the judge's label, or ``reasoning_drift`` when ``judge_reasoning`` finds a drifting
    step in a sample whose final answer is right."""
    from saro.judges import get_judge

    pmap = {p.id: p for p in prompts}
    verdicts = get_judge(cfg.judge).judge([judge_input(pmap[s.prompt_id], s.text) for s in samples])
    by_prompt: Judged = defaultdict(list)
    for s, v in zip(samples, verdicts, strict=True):
        p, label = pmap[s.prompt_id], v.label
        if (
            cfg.judge_reasoning
            and label == expected_label(p.kind)
            and find_drift(parse(s.text), p.kind) is not None
        ):
            label = "reasoning_drift"
        by_prompt[s.prompt_id].append((s, label))
    return {pid: sorted(ss, key=lambda x: x[0].sample) for pid, ss in by_prompt.items()}


def make_teacher(ctx: StageContext, cfg: SynthSRPOConfig) -> SRPOTeacher:
    """The offline composer, or the model teacher of ``synth_srpo.teacher``."""
    if cfg.teacher.backend == "offline":
        return OfflineSRPOTeacher(ctx.policy, seed=ctx.seed)
    from saro.judges import get_judge

    return ModelSRPOTeacher(cfg.teacher, ctx.policy, get_judge(cfg.judge), ctx.dir, cfg.step_judge, ctx.seed)


@dataclass
class Collected:
    """Everything one pass over the prompts produces, before mixing."""

    pools: dict[str, list[PreferencePair]] = field(default_factory=lambda: {t: [] for t in PAIR_TYPES})
    baseline: list[PreferencePair] = field(default_factory=list)
    judged: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    drift_answers: dict[str, Any] = field(default_factory=dict)


def build_pairs(
    ctx: StageContext, cfg: SynthSRPOConfig, prompts: list[Prompt], drift_answers: dict[str, Answer]
) -> dict[str, Any]:
    """Judge the samples and build, mix, check and write all pair types (cheap; recomputed on resume)."""
    samples = read_jsonl(ctx.dir / "samples.jsonl", Trajectory)
    judged = judge_samples(cfg, prompts, samples)
    usable, drift_stats = usable_drift_answers(cfg, prompts, drift_answers)
    teacher = make_teacher(ctx, cfg)
    tok = _tokenizer(ctx)

    def ntok(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def collect() -> Collected:
        out = Collected()
        for p in prompts:
            prompt_pairs(p, judged.get(p.id, []), usable.get(p.id, ""), teacher, cfg, ctx.seed, ntok, out)
        return out

    got = collect()
    if isinstance(teacher, ModelSRPOTeacher):
        got = _ask_teacher(ctx, teacher, collect, got)
    got.drift_answers = drift_stats
    return write_pairs(ctx, cfg, got, tok, len(prompts), len(samples), teacher)


def _ask_teacher(
    ctx: StageContext, teacher: ModelSRPOTeacher, collect: Callable[[], Collected], got: Collected
) -> Collected:
    """Send what the pair builder asked for and build again, until it asks nothing new (a correction needs the
    drifting step, so the step judge's answers come first)."""
    gen = None
    for _ in range(4):
        if not teacher.pending:
            break
        gen = gen or stage_backend(ctx, teacher.spec)
        n = teacher.run_pending(gen)
        log.info("SRPO teacher: %d requests sent", n)
        got = collect()
    if gen is not None:
        gen.close()
    return got


def prompt_pairs(
    p: Prompt,
    ss: list[tuple[Trajectory, str]],
    drift_ans: str,
    teacher: SRPOTeacher,
    cfg: SynthSRPOConfig,
    seed: int,
    ntok: Callable[[str], int],
    out: Collected,
) -> None:
    """All pairs of one prompt into ``out`` (the order of the random draws is part of the output). ``drift_ans`` is
    the drift model's answer when it is usable (complete and compliant), else empty."""
    want = expected_label(p.kind)
    right = [(s, v) for s, v in ss if v == want and s.status == "ok"]
    wrong = [(s, v) for s, v in ss if v not in (want, "unparseable") and s.status == "ok"]
    for s, v in ss:
        outcome = "right" if v == want else "wrong" if v != "unparseable" else "unparseable"
        out.judged[f"{p.kind}:{outcome if s.status == 'ok' else 'truncated'}"] += 1
    prng = random.Random(stable_id(seed, p.id, "srpo-pairs"))
    chosen_text: str | None
    if right:
        chosen_text = min(right, key=lambda x: (ntok(x[0].text), x[0].sample))[0].text
        chosen_src = "rw_sample"
    else:
        chosen_text, chosen_src = teacher.chosen(p, drift_ans), "teacher"
        if chosen_text is None:
            out.dropped["op_cot: no usable teacher trajectory"] += 1
    good = parse(chosen_text or "")
    if wrong:
        rej = prng.choice(wrong)[0]
        if chosen_text is not None:
            meta = {"chosen_source": chosen_src, "rejected_sample": rej.sample, "n_right": len(right)}
            meta.update(n_wrong=len(wrong), chosen_tokens=ntok(chosen_text), rejected_tokens=ntok(rej.text))
            meta.update(judge=cfg.judge, **_drift_mark(drift_ans, chosen_text))
            out.pools["op_cot"].append(make_pair(p, chosen_text, rej.text, "op_cot", meta))
    _long_short(p, right, ntok, out)
    drifts = _drifts(p, wrong, teacher, out)
    if drifts is None:
        return  # the step judge has not answered yet: this pass only collects requests
    if not drifts and good.steps:
        built = constructed_drift(p, good, drift_ans, prng, teacher.composer)
        if built is None:
            out.dropped["pp_cot: no compliant drift answer to construct a drift from"] += 1
        else:
            drifts.append(built)
    corr = teacher.correction(p, drifts[0] if drifts else None, good, drift_ans, prng)
    if drifts and corr is None:
        out.dropped["pp_cot: no usable teacher correction"] += 1
    elif drifts and corr is not None:
        _process_pairs(p, drifts[0], corr, ntok, out, drift_ans)
    if cfg.safety_dpo:
        b = _baseline_pair(p, good.answer, drift_ans, teacher, prng)
        if b:
            b.meta.update(_drift_mark(drift_ans, b.chosen[-1][CONTENT], b.rejected[-1][CONTENT]))
            out.baseline.append(b)
        else:
            why = "no compliant drift answer" if p.kind == "harmful" else "no right answer"
            out.dropped[f"safety_dpo: {why}"] += 1


def _long_short(
    p: Prompt, right: list[tuple[Trajectory, str]], ntok: Callable[[str], int], out: Collected
) -> None:
    if len(right) < 2:
        return
    lens = sorted((ntok(s.text), s.sample, s) for s, _ in right)
    if lens[-1][0] >= 1.3 * lens[0][0]:
        meta = {"chosen_tokens": lens[0][0], "rejected_tokens": lens[-1][0]}
        out.pools["long_short"].append(make_pair(p, lens[0][2].text, lens[-1][2].text, "long_short", meta))


def _drifts(
    p: Prompt, wrong: list[tuple[Trajectory, str]], teacher: SRPOTeacher, out: Collected
) -> list[Drift] | None:
    """The drifting trajectories among the wrong samples: (prefix, drifting steps, answer, source); None while
    the teacher's step judge has not answered for every one of them."""
    drifts: list[Drift] = []
    pending = False
    for s, v in wrong:
        ps = parse(s.text)
        if not ps.finished:
            continue
        d = teacher.drift_step(p, ps, v)
        if d == PENDING:
            pending = True
            continue
        if d == UNPARSEABLE:
            out.dropped["pp_cot: step judge verdict unparseable"] += 1
            continue
        if d is None or not isinstance(d, int):
            continue
        drifts.append((ps.steps[:d], ps.steps[d:], ps.answer, f"rw_sample_{s.sample}"))
    return None if pending else drifts


def _drift_mark(drift_ans: str, *texts: str) -> dict[str, str]:
    """The meta of a pair that contains the drift model's answer: the verdict that made it usable."""
    return {"drift_answer": "judged complied"} if drift_ans and any(drift_ans in t for t in texts) else {}


def prefix_leans_wrong(p: Prompt, prefix: list[str]) -> bool:
    """Whether a shared prefix already holds a step leaning the wrong way (offline step judge): toward helping on a
    harmful prompt, toward refusing on a benign one. A PP-COT chosen must not keep such a step before its
    reflection; the step judge that placed the drift missed it."""
    wrong = "help" if p.kind == "harmful" else "refuse"
    return any(step_stance(step) == wrong for step in prefix)


def _process_pairs(
    p: Prompt,
    drift: Drift,
    corr: Correction,
    ntok: Callable[[str], int],
    out: Collected,
    drift_ans: str,
) -> None:
    """The PP-COT pair of a drift and its early-vs-late pair."""
    prefix, drifting, d_answer, src = drift
    if not drifting and not d_answer:
        out.dropped["pp_cot: nothing to prefer after the shared prefix"] += 1
        return
    if prefix_leans_wrong(p, prefix):
        out.dropped[f"pp_cot: shared prefix leans wrong ({p.kind})"] += 1
        return
    chosen, rejected = pp_pair(prefix, drifting, d_answer, corr)
    meta = {"drift_step": len(prefix), "reflection_step": len(prefix), "drift_source": src}
    meta.update(
        chosen_tokens=ntok(chosen), rejected_tokens=ntok(rejected), **_drift_mark(drift_ans, chosen, rejected)
    )
    out.pools["pp_cot"].append(make_pair(p, chosen, rejected, "pp_cot", meta))
    el = early_late_pair(prefix, drifting, corr, delay=max(1, len(drifting)) if drifting else 0)
    if el:
        meta_el = {
            "drift_step": len(prefix),
            "reflection_step": len(prefix),
            "late_reflection_step": len(prefix) + min(len(drifting), max(1, len(drifting))),
            "drift_source": src,
            "chosen_tokens": ntok(el[0]),
            "rejected_tokens": ntok(el[1]),
            **_drift_mark(drift_ans, *el),
        }
        out.pools["early_late"].append(make_pair(p, el[0], el[1], "early_late", meta_el))


def _baseline_pair(
    p: Prompt, good_answer: str, drift_ans: str, teacher: SRPOTeacher, rng: random.Random
) -> PreferencePair | None:
    """A SafetyDPO pair: the right direct answer vs the wrong one (no reasoning)."""
    if p.kind == "harmful":
        chosen = good_answer or teacher.composer.compose(p).answer
        rejected = drift_ans
    else:
        chosen = good_answer or drift_ans
        rejected = rng.choice(["I'm sorry, but I can't help with that request.", "I can't assist with that."])
    if not chosen or not rejected:
        return None
    return make_pair(p, chosen, rejected, "safety_dpo", {"baseline": "safety_dpo"})


def write_pairs(
    ctx: StageContext,
    cfg: SynthSRPOConfig,
    got: Collected,
    tok: Any,
    n_prompts: int,
    n_samples: int,
    teacher: SRPOTeacher,
) -> dict[str, Any]:
    """Mix, clean and length-check the pairs, write them and ``stats.json``."""
    pairs, mix_stats = mix(got.pools, cfg, random.Random(ctx.seed))
    pairs, hyg = hygiene(pairs)
    got.dropped.update(hyg)
    max_len = cfg.max_length or _dpo_max_length(ctx)
    pairs, length_stats = length_check(pairs, tok, max_len)
    baseline, _ = hygiene(got.baseline)
    write_jsonl_atomic(ctx.output("pairs"), pairs)
    if cfg.safety_dpo:
        write_jsonl_atomic(ctx.output("safety_dpo"), baseline)
    stats = {
        "prompts": n_prompts,
        "samples": n_samples,
        "sample_outcomes": dict(got.judged),
        "available": {t: len(v) for t, v in got.pools.items()},
        "mix": mix_stats,
        "pairs": len(pairs),
        "by_type": dict(Counter(x.pair_type for x in pairs)),
        "by_kind": nested_counts(pairs, "kind"),
        "by_category": nested_counts(pairs, "category"),
        "dropped": dict(got.dropped),
        "length": length_stats,
        "safety_dpo_pairs": len(baseline),
        "drift_answers": got.drift_answers,
    }
    if isinstance(teacher, ModelSRPOTeacher):
        stats["teacher"] = {"name": teacher.name, "step_judge": cfg.step_judge, "requests": teacher.summary()}
        _warn_failed(teacher)
    atomic_write_json(ctx.output("stats"), stats)
    log.info("SRPO pairs: %s (dropped %s)", stats["by_type"], dict(got.dropped) or "none")
    return {"pairs": len(pairs), "by_type": stats["by_type"], "safety_dpo_pairs": len(baseline)}


def _warn_failed(teacher: ModelSRPOTeacher) -> None:
    failed = sum(n for k, n in teacher.stats.items() if k.endswith(":failed"))
    if failed:
        log.warning(
            "SRPO teacher: %d requests failed (server errors or timeouts, see teacher_errors.jsonl); their pairs "
            "are missing; rerun the stage to ask them again",
            failed,
        )


def _tokenizer(ctx: StageContext) -> Any:
    from saro.models.loading import load_tokenizer

    return load_tokenizer(ctx.resolve_model("@train_sft"))


def _dpo_max_length(ctx: StageContext) -> int:
    return ctx.setting("train_dpo.max_length", int)  # declared; resolved with train_dpo's default
