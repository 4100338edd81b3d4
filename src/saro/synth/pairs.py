"""SRPO pair construction: OP-COT, PP-COT and early-vs-late pairs, mixing, hygiene and the length check.

Pure functions on texts and pairs; the ``synth_srpo`` stage (``synth.synth_srpo``) decides what goes in.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from typing import Any

from saro.reasoning import render
from saro.recipe import SynthSRPOConfig
from saro.records import CONTENT, ROLE, PreferencePair, Prompt, stable_id
from saro.synth.teacher import Correction

log = logging.getLogger(__name__)

PAIR_TYPES = ("op_cot", "pp_cot", "early_late", "long_short")


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


def make_pair(prompt: Prompt, chosen: str, rejected: str, ptype: str, meta: dict[str, Any]) -> PreferencePair:
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


def nested_counts(pairs: list[PreferencePair], key: str) -> dict[str, dict[str, int]]:
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for x in pairs:
        out[x.pair_type][str(x.meta.get(key))] += 1
    return {k: dict(v) for k, v in out.items()}
