"""The ``prompts`` stage: draw the recipe's prompt sets, keep uses disjoint, label, wrap with attacks.

Each source is loaded once, de-duplicated, shuffled with the recipe seed and cut into disjoint slices: eval first
(so the held-out sets do not move when training sizes change), then rw, then srpo. Training prompts that equal an
eval prompt (exactly, or above ``dedup_threshold`` MiniLM cosine) are dropped and counted. Output:
``prompts/{rw,srpo,eval}.jsonl`` (Prompt records) and ``prompts/stats.json``.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from typing import Any

from saro.errors import SaroError
from saro.prompts.categorize import fill_categories
from saro.prompts.sources import RawPrompt, load_source, normalize
from saro.recipe import PromptEntry, PromptsConfig
from saro.records import Prompt, atomic_write_json, write_jsonl_atomic
from saro.stage import StageContext

log = logging.getLogger(__name__)

USES = ("eval", "rw", "srpo")  # allocation order


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: PromptsConfig = ctx.config
    out = build_prompts(cfg, ctx.policy, ctx.seed, rewriter=_rewriter(ctx))
    stats = out.pop("_stats")
    for use, prompts in out.items():
        write_jsonl_atomic(ctx.dir / f"{use}.jsonl", prompts)
    atomic_write_json(ctx.dir / "stats.json", stats)
    return {"counts": {u: len(p) for u, p in out.items()}, "dropped": stats["dropped"]}


def _rewriter(ctx: StageContext):
    """LLM-assisted attacks rewrite through the RW teacher when one is configured (not the offline teacher)."""
    t = ctx.recipe.synth_rw.teacher if ctx.recipe.synth_rw else None  # declared: synth_rw.teacher
    if t is None or t.backend == "offline":
        return None
    from saro.synth.answers import make_rewriter

    return make_rewriter(ctx, t)


def _entries(cfg: PromptsConfig) -> dict[str, list[PromptEntry]]:
    return {"eval": cfg.eval, "rw": cfg.rw, "srpo": cfg.srpo}


def _source_key(e: PromptEntry) -> str:
    """Pool key: entries of one source (same options, same kind filter) draw disjoint slices from one pool."""
    return e.source + (repr(sorted(e.options.items())) if e.options else "") + f"|{e.kind or '*'}"


def build_prompts(cfg: PromptsConfig, policy: Any, seed: int, rewriter: Any = None) -> dict[str, Any]:
    """Build the prompt lists per use (and ``_stats``)."""
    from saro.prompts.attacks import split_attacks

    train_attacks, heldout_attacks = split_attacks(cfg.attacks.train, cfg.attacks.heldout)
    entries = _entries(cfg)
    pools, skipped = _load_pools(cfg, entries, policy, seed)
    slices = _slice_pools(entries, pools)
    out: dict[str, list[Prompt]] = {u: [] for u in USES}
    short: list[str] = []
    for use in USES:
        for i, e in enumerate(entries[use]):
            rows = slices[(_source_key(e), use)]
            if e.n is not None:
                if len(rows) < e.n:
                    short.append(f"prompts.{use}[{i}] ({e.source}): wanted {e.n}, only {len(rows)} left")
                rows = rows[: e.n]
            base = [_record(r, e, use) for r in rows]
            out[use].extend(_apply_attacks(e, base, use, train_attacks, heldout_attacks, seed, rewriter))
    if short:
        raise SaroError("not enough prompts: " + "; ".join(short))
    dropped = _dedup(out, cfg.dedup_threshold)
    stats = {
        "counts": {u: _counts(out[u]) for u in USES},
        "attacks": {"train": train_attacks, "heldout": heldout_attacks},
        "dropped": dict(dropped),
        "skipped_rows": skipped,
    }
    for k, v in dropped.items():
        log.info("prompts: dropped %d (%s)", v, k)
    return {**out, "_stats": stats}


def _load_pools(
    cfg: PromptsConfig, entries: dict[str, list[PromptEntry]], policy: Any, seed: int
) -> tuple[dict[str, list[RawPrompt]], dict[str, dict[str, int]]]:
    """Load each source once, label it with policy categories and shuffle it (seeded by the pool key)."""
    pools: dict[str, list[RawPrompt]] = {}
    skipped: dict[str, dict[str, int]] = {}
    for use in USES:
        for e in entries[use]:
            key = _source_key(e)
            if key in pools:
                continue
            res = load_source(e.source, e.options, cfg.on_bad_row)
            rows = [r for r in res.prompts if e.kind is None or r.kind == e.kind]
            if res.skipped:
                skipped[e.source] = res.skipped
            cats = fill_categories(
                [r.kind for r in rows],
                [r.category for r in rows],
                [r.text for r in rows],
                policy,
                cfg.categorize,
            )
            for r, c in zip(rows, cats, strict=True):
                r.category = c
            rows = sorted(rows, key=lambda r: normalize(r.text))
            random.Random(f"{seed}:{key}").shuffle(rows)
            pools[key] = rows
    return pools, skipped


def _slice_pools(
    entries: dict[str, list[PromptEntry]], pools: dict[str, list[RawPrompt]]
) -> dict[tuple[str, str], list[RawPrompt]]:
    """Disjoint slices per (source, use), eval first, so no prompt is both trained on and evaluated."""
    taken: dict[str, int] = defaultdict(int)
    slices: dict[tuple[str, str], list[RawPrompt]] = {}
    for use in USES:
        need: dict[str, int | None] = {}
        for e in entries[use]:
            key = _source_key(e)
            prev = need.get(key, 0)
            need[key] = None if (e.n is None or prev is None) else max(prev, e.n)
        for key, n in need.items():
            start = taken[key]
            end = len(pools[key]) if n is None else start + n
            slices[(key, use)] = pools[key][start:end]
            taken[key] = end
    return slices


def _record(r: RawPrompt, e: PromptEntry, use: str) -> Prompt:
    return Prompt.make(
        r.text,
        r.kind,
        e.source,
        category=r.category,
        split=use,
        meta={**r.meta, "source_id": r.source_id, **({"suite": e.suite} if e.suite else {})},
    )


def _dedup(out: dict[str, list[Prompt]], threshold: float | None) -> Counter[str]:
    """Drop duplicates within a use, and training prompts equal (or nearly equal) to an eval prompt."""
    dropped: Counter[str] = Counter()
    for use in USES:
        seen: set[str] = set()
        keep = []
        for p in out[use]:
            if p.id in seen:
                dropped[f"{use}: duplicate"] += 1
                continue
            seen.add(p.id)
            keep.append(p)
        out[use] = keep
    eval_norm = {normalize(p.text) for p in out["eval"]}
    for use in ("rw", "srpo"):
        before = len(out[use])
        out[use] = [p for p in out[use] if normalize(p.text) not in eval_norm]
        if before - len(out[use]):
            dropped[f"{use}: equals an eval prompt"] += before - len(out[use])
    if threshold is not None:
        from saro.embeddings import near_duplicates

        evals = [p.text for p in out["eval"] if p.attack is None]
        for use in ("rw", "srpo"):
            plain = [p for p in out[use] if p.attack is None]
            hits = near_duplicates([p.text for p in plain], evals, threshold)
            bad = {plain[i].id for i, _, _ in hits}
            out[use] = [p for p in out[use] if p.id not in bad and p.base_id not in bad]
            if bad:
                dropped[f"{use}: near-duplicate of an eval prompt (cos >= {threshold})"] += len(bad)
    return dropped


def _apply_attacks(
    e: PromptEntry,
    base: list[Prompt],
    use: str,
    train: list[str],
    heldout: list[str],
    seed: int,
    rewriter: Any,
) -> list[Prompt]:
    from saro.prompts.attacks import wrap_prompt

    if not e.attacks:
        return base
    if e.attacks == "train":
        names = train
    elif e.attacks == "heldout":
        names = heldout
    elif e.attacks == "all":
        names = train + heldout
    else:
        names = list(e.attacks)
    if use != "eval":
        leaked = sorted(set(names) & set(heldout))
        if leaked:
            raise SaroError(
                f"prompts.{use}: held-out attacks {leaked} may not be used to build training data"
            )
    if not names:
        raise SaroError(f"prompts.{use}: entry for {e.source} asks for attacks but the list is empty")
    mode = e.attack_mode or ("each" if use == "eval" else "one")
    out = list(base) if e.keep_plain else []
    rng = random.Random(f"{seed}:attacks:{use}:{e.source}")
    for p in base:
        chosen = names if mode == "each" else [rng.choice(names)]
        for a in chosen:
            w = wrap_prompt(p, a, seed=seed, rewriter=rewriter)
            w.meta["base_text"] = (
                p.text
            )  # the unwrapped request: teachers reason about it, answers address it
            if e.suite:
                w.meta["suite"] = e.suite
            w.meta["attack_split"] = "heldout" if a in heldout else "train"
            out.append(w)
    return out


def _counts(prompts: list[Prompt]) -> dict[str, Any]:
    return {
        "total": len(prompts),
        "kind": dict(Counter(p.kind for p in prompts)),
        "category": dict(Counter(p.category for p in prompts)),
        "source": dict(Counter(p.source for p in prompts)),
        "attack": dict(Counter(p.attack or "none" for p in prompts)),
        "suite": dict(Counter(p.meta.get("suite", "-") for p in prompts)),
    }
