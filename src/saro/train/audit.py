"""Pre-training checks that catch the silent failures of reasoning SFT and DPO before any compute is spent.

SFT: on a sample, the reasoning, the answer and the end-of-turn token must be inside the loss mask (and no prompt
text); on all rows, no more than ``max_truncated_share`` may exceed ``max_length`` (TRL truncates them, cutting the
answer, or drops them when nothing trainable is left). DPO: the template must be prefix-preserving, each completion
must carry its reasoning, answer and end-of-turn token, and pairs TRL would drop (prompt >= max_length) or truncate
(prompt + completion > max_length) are counted, since TRL does both without a word; the completion prefix chosen and
rejected share (PP-COT's drifting prefix) is counted per pair type, with the tokens the ``"sft"`` term leaves out.
"""

from __future__ import annotations

import logging
import random
import re
from typing import Any

from saro.models.templates import audit_mask
from saro.reasoning import parse

log = logging.getLogger(__name__)


def _sample(n: int, k: int, seed: int = 0) -> list[int]:
    if k <= 0 or k >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), k))


def _encode(
    tok: Any, convs: list[list[dict[str, str]]], add_generation_prompt: bool = False
) -> list[list[int]]:
    """Token ids of conversations rendered with the tokenizer's template (batched; same ids as TRL's tokenising)."""
    if not convs:
        return []
    texts = tok.apply_chat_template(
        [list(c) for c in convs], tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return tok(texts, add_special_tokens=False)["input_ids"]


def _length_stats(lengths: list[int], max_length: int | None) -> dict[str, Any]:
    s = sorted(lengths)
    n = len(s)
    return {
        "examples": n,
        "max_tokens": s[-1] if s else 0,
        "mean_tokens": round(sum(s) / n, 1) if n else 0,
        "p95_tokens": s[min(n - 1, int(0.95 * n))] if n else 0,
        "total_tokens": sum(min(x, max_length) if max_length else x for x in s),
        "max_length": max_length,
    }


def audit_sft(tok: Any, conversations: list[list[dict[str, str]]], eot: str, cfg: Any) -> dict[str, Any]:
    """Loss-mask audit on a sample plus a length check on every row; ``problems`` empty means fit to train."""
    idx = _sample(len(conversations), cfg.audit_samples, cfg.seed)
    mask = audit_mask(tok, [conversations[i] for i in idx], eot)
    lengths = [len(x) for x in _encode(tok, conversations)]
    over = sum(1 for x in lengths if cfg.max_length is not None and x > cfg.max_length)
    problems = list(mask.problems)
    if lengths and over / len(lengths) > cfg.max_truncated_share:
        problems.append(
            f"{over}/{len(lengths)} examples exceed max_length={cfg.max_length} tokens and would be truncated "
            f"(allowed share {cfg.max_truncated_share:.0%}; longest {max(lengths)} tokens): raise max_length or "
            "shorten the data"
        )
    return {
        "stage": "sft",
        "end_of_turn": eot,
        "mask": mask.summary(),
        "lengths": {**_length_stats(lengths, cfg.max_length), "over_max_length": over},
        "ok": not problems,
        "problems": problems,
    }


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token-id lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _squash(s: str) -> str:
    return re.sub(r"\s+", "", s)


def audit_dpo(
    tok: Any,
    prompts: list[list[dict[str, str]]],
    chosen: list[list[dict[str, str]]],
    rejected: list[list[dict[str, str]]],
    eot: str,
    cfg: Any,
    pair_types: list[str | None] | None = None,
) -> dict[str, Any]:
    """Length check on every pair (what TRL would drop or truncate), the shared completion prefixes, and a
    completion audit on a sample."""
    p_ids = _encode(tok, prompts, add_generation_prompt=True)
    c_ids = _encode(tok, [p + c for p, c in zip(prompts, chosen, strict=True)])
    r_ids = _encode(tok, [p + r for p, r in zip(prompts, rejected, strict=True)])
    n = len(p_ids)
    max_len = cfg.max_length
    dropped: list[int] = []
    truncated: list[int] = []
    shared: list[int] = []
    not_prefix = 0
    for i in range(n):
        pl = min(common_prefix(p_ids[i], c_ids[i]), common_prefix(p_ids[i], r_ids[i]))
        shared.append(common_prefix(c_ids[i][pl:], r_ids[i][pl:]))  # as TRL splits prompt and completion
        if pl < len(p_ids[i]):
            not_prefix += 1
        if max_len is not None and pl >= max_len:
            dropped.append(i)
        elif max_len is not None and max(len(c_ids[i]), len(r_ids[i])) > max_len:
            truncated.append(i)

    checked, with_reasoning, reasoning_ok, answer_ok, eot_ok = _completion_checks(
        tok, p_ids, c_ids, r_ids, chosen, rejected, eot, cfg
    )

    problems: list[str] = []
    if not_prefix:
        problems.append(
            f"the chat template is not prefix-preserving for {not_prefix}/{n} pairs (the prompt rendered for "
            "generation is not a prefix of prompt + completion); DPO would train on a context the model never sees"
        )
    if reasoning_ok < with_reasoning:
        problems.append(
            f"reasoning missing from the tokenised completion in {with_reasoning - reasoning_ok}/{with_reasoning} "
            "sampled completions (the template strips or moves <think>)"
        )
    if answer_ok < checked:
        problems.append(
            f"answer missing from the tokenised completion in {checked - answer_ok}/{checked} completions"
        )
    if eot_ok < checked:
        problems.append(
            f"end-of-turn token {eot} missing from {checked - eot_ok}/{checked} tokenised completions "
            "(the model would not learn to stop)"
        )
    lost = len(dropped) + len(truncated)
    if n and lost / n > cfg.max_truncated_share:
        problems.append(
            f"{len(dropped)}/{n} pairs would be dropped (prompt >= max_length={max_len}) and {len(truncated)}/{n} "
            f"truncated (prompt + completion > max_length, losing the answer) by TRL (allowed share "
            f"{cfg.max_truncated_share:.0%}): raise max_length or shorten the data"
        )
    lengths = [max(len(c), len(r)) for c, r in zip(c_ids, r_ids, strict=True)]
    return {
        "stage": "dpo",
        "end_of_turn": eot,
        "pairs": n,
        "completions_checked": checked,
        "with_reasoning": with_reasoning,
        "reasoning_in_completion": reasoning_ok,
        "answer_in_completion": answer_ok,
        "end_of_turn_in_completion": eot_ok,
        "not_prefix_preserving": not_prefix,
        "dropped": len(dropped),
        "truncated": len(truncated),
        "dropped_index": dropped[:50],
        "_dropped_all": dropped,  # popped before audit.json is written
        "lengths": _length_stats(lengths, max_len),
        "prompt_tokens_max": max((len(p) for p in p_ids), default=0),
        "shared_prefix": shared_prefix_stats(shared, pair_types, cfg),
        "ok": not problems,
        "problems": problems,
    }


def shared_prefix_stats(shared: list[int], pair_types: list[str | None] | None, cfg: Any) -> dict[str, Any]:
    """How many pairs share a completion prefix and how long it is, overall and per pair type; with
    ``masked`` (``sft_shared_prefix: mask`` and an ``"sft"`` loss term) those tokens are out of the sft term."""
    masked = getattr(cfg, "sft_shared_prefix", "train") == "mask" and "sft" in (
        getattr(cfg, "loss_type", None) or []
    )
    types = pair_types if pair_types is not None and len(pair_types) == len(shared) else [None] * len(shared)
    by_type: dict[str, list[int]] = {}
    for t, k in zip(types, shared, strict=True):
        by_type.setdefault(str(t) if t is not None else "unknown", []).append(k)

    def stats(xs: list[int]) -> dict[str, Any]:
        return {
            "pairs": len(xs),
            "with_shared_prefix": sum(1 for x in xs if x > 0),
            "mean_shared_tokens": round(sum(xs) / len(xs), 2) if xs else 0.0,
            "max_shared_tokens": max(xs, default=0),
        }

    total = stats(shared)
    return {
        "mode": getattr(cfg, "sft_shared_prefix", None),
        "masked": masked,
        "pairs_with_shared_prefix": total["with_shared_prefix"],
        "mean_shared_tokens": total["mean_shared_tokens"],
        "mean_masked_tokens": total["mean_shared_tokens"] if masked else 0.0,
        "max_shared_tokens": total["max_shared_tokens"],
        "by_type": {t: stats(xs) for t, xs in sorted(by_type.items())},
    }


def _completion_checks(
    tok: Any,
    p_ids: list[list[int]],
    c_ids: list[list[int]],
    r_ids: list[list[int]],
    chosen: list[list[dict[str, str]]],
    rejected: list[list[dict[str, str]]],
    eot: str,
    cfg: Any,
) -> tuple[int, int, int, int, int]:
    """On a sample of pairs, whether each tokenised completion holds its reasoning, answer and end-of-turn token:
    (completions checked, with reasoning, reasoning found, answer found, end-of-turn found)."""
    eot_id = tok.convert_tokens_to_ids(eot)
    checked = reasoning_ok = answer_ok = eot_ok = with_reasoning = 0
    for i in _sample(len(p_ids), cfg.audit_samples, cfg.seed):
        pl = min(common_prefix(p_ids[i], c_ids[i]), common_prefix(p_ids[i], r_ids[i]))
        for ids, turn in ((c_ids[i], chosen[i]), (r_ids[i], rejected[i])):
            checked += 1
            comp = ids[pl:]
            text = _squash(tok.decode(comp, skip_special_tokens=False))
            content = next((m["content"] for m in reversed(turn) if m["role"] == "assistant"), "")
            p = parse(content)
            if p.has_reasoning:
                with_reasoning += 1
                # the whole turn verbatim (covers sampled turns with a missing or repeated tag), or its parsed
                # reasoning after an opening tag
                reasoning_ok += int(
                    _squash(content) in text or ("<think>" in text and _squash(p.reasoning or "") in text)
                )
            answer_ok += int(_squash(p.answer) in text)
            eot_ok += int(eot_id in comp)
    return checked, with_reasoning, reasoning_ok, answer_ok, eot_ok
