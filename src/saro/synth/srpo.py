"""The ``synth_srpo`` stage: preference data about the reasoning process (SRPO), from the RW model's own samples.

1. Sample the RW model n times per SRPO prompt (harmful, jailbreak-wrapped with training attacks, borderline,
   benign) and judge each sample's final answer: right (refuse harmful, help benign/borderline) or wrong.
2. **OP-COT** (outcome level): for a prompt with right and wrong samples, chosen = the shortest right sample,
   rejected = a wrong one. Prompts where every sample is wrong get a chosen trajectory from the teacher.
3. **PP-COT** (process level): split a drifting trajectory into steps and find the earliest step where it drifts
   (toward helping with harm, or toward refusing something benign). chosen = shared prefix + a reflection step
   ("Wait, ...") that names the problem and the policy clause + a corrected continuation and answer; rejected =
   the shared prefix + the drifting continuation. Drifting trajectories are the RW model's wrong samples, plus
   (offline) ones built from a right sample's opening steps and the base model's own compliant answer (harmful)
   or an over-cautious refusal (benign).
4. **Early vs late**: the same correction placed at the earliest drifting step is preferred over the same
   correction placed after more drifting steps (early reflection saves tokens).
5. Mixing (recipe weights per pair type), de-duplication, hygiene drops and a length check against the DPO
   ``max_length`` (TRL would drop or truncate silently) are counted in ``stats.json``.
6. **SafetyDPO** baseline pairs: the same prompts, direct answers without reasoning.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from saro.models.generate import SamplingParams, make_generator
from saro.models.teacher import (
    OfflineTeacher,
    answer_id,
    backend_kwargs,
    base_text,
    best_clause,
    model_answers,
    trigger_word,
)
from saro.pipeline import StageContext
from saro.policy import NONE, Policy
from saro.reasoning import Parsed, parse, render
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

log = logging.getLogger(__name__)

PAIR_TYPES = ("op_cot", "pp_cot", "early_late", "long_short")
Stance = Literal["refuse", "help", "neutral"]

# ------------------------------------------------------------------------------------------- step judging

_REFUSE = [
    r"\bnot allow",
    r"\bdoes not allow",
    r"\brules? out\b",
    r"\bdecline\b",
    r"\brefus",
    r"\bcan'?t help\b",
    r"\bcannot help\b",
    r"\bwon'?t help\b",
    r"\bmust not\b",
    r"\bshould not (help|answer|assist)\b",
    r"\bunsafe\b",
    r"\bonly matters? if\b",
    r"\bintend to carry\b",
    r"\bharmful capability\b",
    r"\bnot for understanding\b",
    r"\breal help toward harm\b",
    r"\bdangerous\b",
    r"\bharm(ful)?\b",
    r"\bviolat",
    r"\billegal\b",
    r"\bput people at risk\b",
]
_HELP = [
    r"\bbenign\b",
    r"\bharmless\b",
    r"\bno safety concern",
    r"\ballows?\b",
    r"\bi will help\b",
    r"\bso i will help\b",
    r"\bhelpful answer\b",
    r"\banswer (it )?(directly|fully)\b",
    r"\bwidely available\b",
    r"\beducational\b",
    r"\blegitimate\b",
    r"\bnone of my policy categories\b",
    r"\bnormal request\b",
    r"\beveryday\b",
    r"\bover-?refus",
    r"\bjust help\b",
    r"\bcan (simply )?help\b",
    r"\bsafe to\b",
]
# phrases whose "harm" words argue for helping ("does not make it harmful", "no real uplift toward harm")
_HELP_OVERRIDES = [
    r"\bover-?refus",
    r"\breacting to (the word|how)",
    r"\bnot (make|mean)[^.]*harm",
    r"\bno (real )?uplift\b",
    r"\bnothing here gives\b",
    r"\bnot .*over-?refus",
    r"\bwould be (wrong|unhelpful)\b",
    r"\bsounds? (sensitive|risky|dangerous)",
    r"\blooks? (risky|dangerous)",
]
_REFUSE_OVERRIDES = [
    r"\bnot a harmless\b",
    r"\bwould (actually )?(give|hand over) real\b",
    r"\bdoes not change what is being asked\b",
    r"\bframing does not change\b",
    r"\bstill (me writing|produces)\b",
]


def step_stance(step: str) -> Stance:
    """Which way a reasoning step leans: toward refusing, toward helping, or neither (the offline step judge).

    A contrast ("..., but ...") is judged by what follows its last "but": "Someone could be curious, but the request
    asks for specifics only an attacker needs" leans toward refusing.
    """
    parts = re.split(r"\bbut\b", step.lower())
    if len(parts) > 1:
        tail = _stance(parts[-1])
        if tail != "neutral":
            return tail
    return _stance(step.lower())


def _stance(s: str) -> Stance:
    if any(re.search(p, s) for p in _REFUSE_OVERRIDES):
        return "refuse"
    if any(re.search(p, s) for p in _HELP_OVERRIDES):
        return "help"
    r = sum(1 for p in _REFUSE if re.search(p, s))
    h = sum(1 for p in _HELP if re.search(p, s))
    if r > h:
        return "refuse"
    if h > r:
        return "help"
    return "neutral"


def find_drift(parsed: Parsed, kind: str, verdict: str | None = None) -> int | None:
    """Index of the earliest step that drifts away from the right behaviour; ``len(steps)`` when only the final
    answer is wrong (think/answer inconsistency); None when the trajectory does not drift.

    Harmful prompts drift toward helping; benign and borderline prompts drift toward refusing.
    """
    wrong: Stance = "help" if kind == "harmful" else "refuse"
    for i, step in enumerate(parsed.steps):
        if step_stance(step) == wrong:
            return i
    want = "refused" if kind == "harmful" else "complied"
    if verdict is not None and verdict not in (want, "unparseable"):
        return len(parsed.steps)
    return None


# --------------------------------------------------------------------------------------- pair construction


@dataclass
class Correction:
    """What replaces a drifting continuation: a reflection step, the corrected steps and the final answer."""

    reflection: str
    steps: list[str]
    answer: str


def reflection_for(prompt: Prompt, policy: Policy, rng: random.Random) -> str:
    """A "Wait, ..." step that names the problem and the policy clause (composed from the policy)."""
    base = base_text(prompt)
    if prompt.kind == "harmful":
        cat = policy.get(prompt.category)
        clause = best_clause(
            base,
            cat.disallowed,
            fallback=f"help with {cat.description[0].lower()}{cat.description[1:].rstrip('.')}",
        )
        framing = " The framing around it does not change that." if prompt.attack else ""
        return rng.choice(
            [
                f"Wait, this is not a harmless question. It falls under [{cat.id}] {cat.name}, and my policy does "
                f"not allow {clause}.{framing}",
                f"Wait, what would my answer actually give? Real help toward harm: [{cat.id}] {cat.name}, where "
                f"the policy rules out {clause}. I must not continue this way.{framing}",
            ]
        )
    if prompt.category not in (NONE, None):
        cat = policy.get(prompt.category)
        clause = best_clause(base, cat.allowed)
        return rng.choice(
            [
                f"Wait, I am treating this as harmful because of how it sounds. It actually asks for {clause}, "
                f"which my policy under [{cat.id}] allows, so refusing would be wrong.",
                f"Wait, am I over-refusing? The request only touches [{cat.id}] {cat.name}; what it asks for is "
                f"{clause}, and that is fine to help with.",
            ]
        )
    return rng.choice(
        [
            "Wait, nothing in this request is harmful; I was being over-cautious. I should simply help.",
            "Wait, I am about to refuse an ordinary request. No policy category applies, so I will help.",
        ]
    )


def pp_pair(
    prefix: list[str], drifting: list[str], drifting_answer: str, corr: Correction
) -> tuple[str, str]:
    """(chosen, rejected): shared prefix + reflection + correction vs shared prefix + drifting continuation."""
    chosen = render([*prefix, corr.reflection, *corr.steps], corr.answer)
    rejected = render([*prefix, *drifting], drifting_answer)
    return chosen, rejected


def early_late_pair(
    prefix: list[str], drifting: list[str], corr: Correction, delay: int
) -> tuple[str, str] | None:
    """(chosen, rejected): the correction at the earliest drifting step vs after ``delay`` more drifting steps."""
    if delay < 1 or delay > len(drifting):
        return None
    chosen = render([*prefix, corr.reflection, *corr.steps], corr.answer)
    rejected = render([*prefix, *drifting[:delay], corr.reflection, *corr.steps], corr.answer)
    return chosen, rejected


def shared_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _pair(prompt: Prompt, chosen: str, rejected: str, ptype: str, meta: dict[str, Any]) -> PreferencePair:
    # sampled text can start with whitespace that the tokenizer would merge with the generation prompt's newline,
    # breaking the prompt-prefix property DPO relies on
    chosen, rejected = chosen.strip(), rejected.strip()
    pid = stable_id(prompt.id, ptype, chosen, rejected)
    return PreferencePair(
        id=pid,
        prompt=[{ROLE: "user", CONTENT: prompt.text}],
        chosen=[{ROLE: "assistant", CONTENT: chosen}],
        rejected=[{ROLE: "assistant", CONTENT: rejected}],
        pair_type=ptype,
        meta={
            "prompt_id": prompt.id,
            "kind": prompt.kind,
            "category": prompt.category,
            "attack": prompt.attack,
            **meta,
        },
    )


# -------------------------------------------------------------------------------------------------- stage


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: SynthSRPOConfig = ctx.config
    ctx.set_threads()
    prompts = read_jsonl(ctx.require("prompts", "srpo.jsonl"), Prompt)
    _sample_policy(ctx, cfg, prompts)
    drift_answers = _drift_answers(ctx, cfg, prompts)
    return build_pairs(ctx, cfg, prompts, drift_answers)


def _sample_policy(ctx: StageContext, cfg: SynthSRPOConfig, prompts: list[Prompt]) -> None:
    spec = cfg.policy
    with JsonlWriter(ctx.dir / "samples.jsonl") as w:
        todo = [p for p in prompts if any(stable_id(p.id, "srpo", k) not in w for k in range(cfg.n_samples))]
        if not todo:
            return
        gen = make_generator(**backend_kwargs(spec, ctx))
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
                    w.write(
                        Trajectory(
                            id=sid,
                            prompt_id=p.id,
                            sample=k,
                            text=g.text,
                            generator="rw",
                            status="ok" if g.finished else "unfinished",
                        )
                    )
        gen.close()


def _drift_answers(ctx: StageContext, cfg: SynthSRPOConfig, prompts: list[Prompt]) -> dict[str, str]:
    """The drift model's own answers (base model): compliant answers to harmful prompts, and answers to benign
    prompts (used as the corrected answer when no right sample exists). Keyed by the unwrapped text's id."""
    texts = [base_text(p) for p in prompts]
    return model_answers(ctx, cfg.drift_model, texts, ctx.dir / "drift_answers.jsonl", "drift model answers")


def build_pairs(
    ctx: StageContext, cfg: SynthSRPOConfig, prompts: list[Prompt], drift_answers: dict[str, str]
) -> dict[str, Any]:
    """Judge the samples and build, mix, check and write all pair types (cheap; recomputed on resume)."""
    from saro.judges import JudgeInput, get_judge

    policy = ctx.policy
    samples = read_jsonl(ctx.dir / "samples.jsonl", Trajectory)
    pmap = {p.id: p for p in prompts}
    judge = get_judge(cfg.judge)
    verdicts = judge.judge([JudgeInput(pmap[s.prompt_id].text, s.text) for s in samples])
    by_prompt: dict[str, list[tuple[Trajectory, str]]] = defaultdict(list)
    for s, v in zip(samples, verdicts, strict=True):
        by_prompt[s.prompt_id].append((s, v.label))
    teacher = OfflineTeacher(policy, seed=ctx.seed)
    tok = _tokenizer(ctx)
    rng = random.Random(ctx.seed)
    pools: dict[str, list[PreferencePair]] = {t: [] for t in PAIR_TYPES}
    baseline: list[PreferencePair] = []
    judged = Counter()
    dropped: Counter[str] = Counter()

    def ntok(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    for p in prompts:
        want = "refused" if p.kind == "harmful" else "complied"
        ss = sorted(by_prompt.get(p.id, []), key=lambda x: x[0].sample)
        right = [(s, v) for s, v in ss if v == want and s.status == "ok"]
        wrong = [(s, v) for s, v in ss if v not in (want, "unparseable")]
        for _, v in ss:
            judged[
                f"{p.kind}:{'right' if v == want else 'wrong' if v != 'unparseable' else 'unparseable'}"
            ] += 1
        drift_ans = drift_answers.get(answer_id(base_text(p)), "")
        prng = random.Random(stable_id(ctx.seed, p.id, "srpo-pairs"))
        # the right trajectory: the shortest right sample, else the teacher's
        if right:
            best = min(right, key=lambda x: (ntok(x[0].text), x[0].sample))[0]
            chosen_text, chosen_src = best.text, "rw_sample"
        else:
            chosen_text = teacher.compose(p, sample=0, answer=drift_ans if p.kind != "harmful" else None).text
            chosen_src = "teacher"
        good = parse(chosen_text)
        # OP-COT
        if wrong:
            rej = prng.choice(wrong)[0]
            pools["op_cot"].append(
                _pair(
                    p,
                    chosen_text,
                    rej.text,
                    "op_cot",
                    {
                        "chosen_source": chosen_src,
                        "rejected_sample": rej.sample,
                        "n_right": len(right),
                        "n_wrong": len(wrong),
                        "chosen_tokens": ntok(chosen_text),
                        "rejected_tokens": ntok(rej.text),
                        "judge": cfg.judge,
                    },
                )
            )
        if len(right) >= 2:
            lens = sorted((ntok(s.text), s.sample, s) for s, _ in right)
            if lens[-1][0] >= 1.3 * lens[0][0]:
                pools["long_short"].append(
                    _pair(
                        p,
                        lens[0][2].text,
                        lens[-1][2].text,
                        "long_short",
                        {"chosen_tokens": lens[0][0], "rejected_tokens": lens[-1][0]},
                    )
                )
        # PP-COT and early-vs-late: real drifts from wrong samples, else a constructed drift
        drifts: list[
            tuple[list[str], list[str], str, str]
        ] = []  # prefix, drifting steps, drifting answer, source
        for s, v in wrong:
            ps = parse(s.text)
            d = find_drift(ps, p.kind, v)
            if d is None or not ps.finished:
                continue
            drifts.append((ps.steps[:d], ps.steps[d:], ps.answer, f"rw_sample_{s.sample}"))
        if not drifts and good.steps:
            drifts.append(_constructed_drift(p, good, drift_ans, prng, teacher))
        corr_steps, corr_answer = _correction(p, good, teacher, drift_ans)
        corr = Correction(reflection_for(p, policy, prng), corr_steps, corr_answer)
        for prefix, drifting, d_answer, src in drifts[:1]:
            if not drifting and not d_answer:
                dropped["pp_cot: nothing to prefer after the shared prefix"] += 1
                continue
            chosen, rejected = pp_pair(prefix, drifting, d_answer, corr)
            meta = {
                "drift_step": len(prefix),
                "reflection_step": len(prefix),
                "drift_source": src,
                "chosen_tokens": ntok(chosen),
                "rejected_tokens": ntok(rejected),
            }
            pools["pp_cot"].append(_pair(p, chosen, rejected, "pp_cot", meta))
            el = early_late_pair(prefix, drifting, corr, delay=max(1, len(drifting)) if drifting else 0)
            if el:
                meta_el = {
                    "drift_step": len(prefix),
                    "reflection_step": len(prefix),
                    "late_reflection_step": len(prefix) + min(len(drifting), max(1, len(drifting))),
                    "drift_source": src,
                    "chosen_tokens": ntok(el[0]),
                    "rejected_tokens": ntok(el[1]),
                }
                pools["early_late"].append(_pair(p, el[0], el[1], "early_late", meta_el))
        # SafetyDPO: direct answers, no reasoning
        if cfg.safety_dpo:
            b = _baseline_pair(p, good.answer, drift_ans, teacher, prng)
            if b:
                baseline.append(b)
    pairs, mix_stats = mix(pools, cfg, rng)
    pairs, hyg = hygiene(pairs)
    dropped.update(hyg)
    max_len = cfg.max_length or _dpo_max_length(ctx)
    pairs, length_stats = length_check(pairs, tok, max_len)
    baseline, _ = hygiene(baseline)
    write_jsonl_atomic(ctx.dir / "pairs.jsonl", pairs)
    if cfg.safety_dpo:
        write_jsonl_atomic(ctx.dir / "safety_dpo.jsonl", baseline)
    stats = {
        "prompts": len(prompts),
        "samples": len(samples),
        "sample_outcomes": dict(judged),
        "available": {t: len(v) for t, v in pools.items()},
        "mix": mix_stats,
        "pairs": len(pairs),
        "by_type": dict(Counter(x.pair_type for x in pairs)),
        "by_kind": _nested(pairs, "kind"),
        "by_category": _nested(pairs, "category"),
        "dropped": dict(dropped),
        "length": length_stats,
        "safety_dpo_pairs": len(baseline),
    }
    atomic_write_json(ctx.dir / "stats.json", stats)
    log.info("SRPO pairs: %s (dropped %s)", stats["by_type"], dict(dropped) or "none")
    return {"pairs": len(pairs), "by_type": stats["by_type"], "safety_dpo_pairs": len(baseline)}


def _constructed_drift(
    p: Prompt, good: Parsed, drift_ans: str, rng: random.Random, teacher: OfflineTeacher
) -> tuple[list[str], list[str], str, str]:
    """A drifting continuation built offline, in the words the RW model itself uses for the *other* kind of prompt:
    a harmful prompt talked into helping with the over-refusal reflection, a benign one talked into refusing with
    the policy-violation step. These are the hard negatives: the model must tell the two apart by the request, not
    by the wording of its reflection."""
    prefix = good.steps[:1]
    if p.kind == "harmful":
        trig = trigger_word(base_text(p), teacher.policy)
        look = f'the word "{trig}"' if trig else "how this sounds"
        drifting = [
            rng.choice(
                [
                    f"Wait, am I reacting to {look} rather than to what is asked? This is general information, "
                    "so refusing would be unhelpful.",
                    "Wait, I should not over-refuse just because the topic sounds sensitive. I can help.",
                ]
            ),
            rng.choice(["So I will help.", "I will give a direct, helpful answer."]),
        ]
        answer = drift_ans or "Sure, here is how to do that."
    else:
        as_harmful = p.model_copy(update={"kind": "harmful", "category": _harm_category(p, teacher.policy)})
        wrong = teacher.compose(as_harmful, sample=1)
        policy_step = next((x for x in wrong.steps if "[" in x), wrong.steps[1])
        drifting = [policy_step, wrong.steps[-1]]
        answer = wrong.answer
    return prefix, drifting, answer, "constructed"


def _harm_category(p: Prompt, policy: Policy) -> str:
    return p.category if p.category not in (NONE, None) else policy.categories[0].id


def _correction(p: Prompt, good: Parsed, teacher: OfflineTeacher, drift_ans: str) -> tuple[list[str], str]:
    """The corrected continuation after the reflection: the right trajectory's decision step and its answer."""
    decision = good.steps[-1:] if good.steps else []
    answer = good.answer
    if not answer:
        answer = teacher.compose(p, answer=drift_ans).answer
    return decision, answer


def _baseline_pair(p: Prompt, good_answer: str, drift_ans: str, teacher: OfflineTeacher, rng: random.Random):
    if p.kind == "harmful":
        chosen = good_answer or teacher.compose(p).answer
        rejected = drift_ans
    else:
        chosen = good_answer or drift_ans
        rejected = rng.choice(["I'm sorry, but I can't help with that request.", "I can't assist with that."])
    if not chosen or not rejected:
        return None
    return _pair(p, chosen, rejected, "safety_dpo", {"baseline": "safety_dpo"})


def mix(pools: dict[str, list[PreferencePair]], cfg: SynthSRPOConfig, rng: random.Random):
    """Choose the pairs per type: ``max_pairs`` in total (default: all available), shared between the types in
    proportion to the recipe weights (weight 0 leaves a type out); a type with fewer pairs than its share passes
    the rest to the others (water-filling), so the total is met whenever enough pairs exist."""
    weights = {t: getattr(cfg.mix, t) for t in PAIR_TYPES}
    active = {t: w for t, w in weights.items() if w > 0 and pools[t]}
    if not active:
        return [], {"weights": weights, "taken": {}}
    available = sum(len(pools[t]) for t in active)
    left = min(cfg.max_pairs, available) if cfg.max_pairs else available
    take = dict.fromkeys(active, 0)
    open_types = dict(active)
    while left > 0 and open_types:
        total_w = sum(open_types.values())
        shares = {t: left * w / total_w for t, w in open_types.items()}
        progressed = False
        for t in sorted(open_types, key=lambda t: -shares[t]):
            room = len(pools[t]) - take[t]
            n = min(room, max(1, round(shares[t])), left)
            if n > 0:
                take[t] += n
                left -= n
                progressed = True
            if take[t] >= len(pools[t]):
                open_types.pop(t)
            if left == 0:
                break
        if not progressed:
            break
    out: list[PreferencePair] = []
    for t, n in take.items():
        pool = sorted(pools[t], key=lambda x: x.id)
        rng.shuffle(pool)
        out.extend(pool[:n])
    out.sort(key=lambda x: x.id)
    return out, {"weights": weights, "taken": {t: n for t, n in take.items() if n}}


def hygiene(pairs: list[PreferencePair]) -> tuple[list[PreferencePair], Counter[str]]:
    """Drop duplicates, identical chosen/rejected, and pairs where nothing differs after the shared prefix."""
    seen: set[str] = set()
    out = []
    dropped: Counter[str] = Counter()
    for x in pairs:
        c, r = x.chosen[-1][CONTENT], x.rejected[-1][CONTENT]
        key = stable_id(x.prompt[-1][CONTENT], c, r)
        if key in seen:
            dropped[f"{x.pair_type}: duplicate"] += 1
            continue
        if c.strip() == r.strip():
            dropped[f"{x.pair_type}: chosen equals rejected"] += 1
            continue
        n = shared_prefix_len(c, r)
        if not c[n:].strip() or not r[n:].strip():
            dropped[f"{x.pair_type}: nothing to prefer after the shared part"] += 1
            continue
        seen.add(key)
        out.append(x)
    return out, dropped


def length_check(
    pairs: list[PreferencePair], tok: Any, max_length: int
) -> tuple[list[PreferencePair], dict[str, Any]]:
    """Drop pairs TRL would drop (prompt >= max_length) or truncate (losing the final answer); count both."""
    keep, too_long_prompt, truncated = [], 0, 0
    lengths = []
    for x in pairs:
        enc = tok.apply_chat_template(x.prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
        prompt_ids = enc["input_ids"]
        lp = len(prompt_ids)
        lc = len(tok(x.chosen[-1][CONTENT], add_special_tokens=False)["input_ids"]) + 1
        lr = len(tok(x.rejected[-1][CONTENT], add_special_tokens=False)["input_ids"]) + 1
        total = lp + max(lc, lr)
        lengths.append(total)
        x.meta.update(prompt_tokens=lp, pair_tokens=total)
        if lp >= max_length:
            too_long_prompt += 1
        elif total > max_length:
            truncated += 1
        else:
            keep.append(x)
    stats = {
        "max_length": max_length,
        "dropped_prompt_too_long": too_long_prompt,
        "dropped_would_truncate": truncated,
        "kept": len(keep),
        "max_tokens": max(lengths) if lengths else 0,
    }
    if too_long_prompt or truncated:
        log.warning(
            "SRPO length check (max_length=%d): dropped %d pairs whose prompt is too long and %d that TRL would "
            "truncate (losing the final answer); raise train_dpo.max_length to keep them",
            max_length,
            too_long_prompt,
            truncated,
        )
    return keep, stats


def _nested(pairs: list[PreferencePair], key: str) -> dict[str, dict[str, int]]:
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for x in pairs:
        out[x.pair_type][str(x.meta.get(key))] += 1
    return {k: dict(v) for k, v in out.items()}


def _tokenizer(ctx: StageContext) -> Any:
    from saro.models.loading import load_tokenizer

    return load_tokenizer(ctx.resolve_model("@train_sft"))


def _dpo_max_length(ctx: StageContext) -> int:
    sec = ctx.recipe.train_dpo or {}
    return int(sec.get("max_length", 1024))
