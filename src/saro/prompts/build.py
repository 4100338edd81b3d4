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
from saro.prompts.phrasing import apply_phrasing, phrasing_table, warn_phrasing
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
    return {
        "counts": {u: len(p) for u, p in out.items()},
        "dropped": stats["dropped"],
        "phrasing": stats["phrasing"],
    }


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
    cross = _cross_source(entries)
    pools, skipped = _load_pools(cfg, entries, policy, seed)
    slices = _slice_pools(entries, pools)
    _label_drawn(slices, cfg, policy)
    out: dict[str, list[Prompt]] = {u: [] for u in USES}
    short: list[str] = []
    rephrased: dict[str, dict[str, int]] = {}
    for use in USES:
        for i, e in enumerate(entries[use]):
            rows = slices[(_slice_key(e), use)]
            if e.n is not None:
                if len(rows) < e.n:
                    short.append(f"prompts.{use}[{i}] ({e.source}): wanted {e.n}, only {len(rows)} left")
                rows = rows[: e.n]
            base = [_record(r, e, use) for r in rows]
            base, counts = apply_phrasing(base, e, seed, f"prompts.{use}[{i}]")
            if counts:
                rephrased[f"prompts.{use}[{i}]"] = counts
            if use == "eval" and cross[i] is not None:
                for p in base:
                    p.meta["cross_source"] = cross[i]
            if e.prefill:
                base = _prefill(base, policy, seed)
            out[use].extend(_apply_attacks(e, base, use, train_attacks, heldout_attacks, seed, rewriter))
    if short:
        raise SaroError("not enough prompts: " + "; ".join(short))
    dropped = _dedup(out, cfg.dedup_threshold)
    table = phrasing_table(out)
    stats = {
        "counts": {u: _counts(out[u]) for u in USES},
        "attacks": {"train": train_attacks, "heldout": heldout_attacks},
        "dropped": dict(dropped),
        "skipped_rows": skipped,
        "phrasing": table,
        "rephrase": rephrased,
    }
    for k, v in dropped.items():
        log.info("prompts: dropped %d (%s)", v, k)
    warn_phrasing(table)
    return {**out, "_stats": stats}


EVAL_ONLY = ("phrasing_contrast", "prefill", "cross_source")


def _cross_source(entries: dict[str, list[PromptEntry]]) -> list[bool | None]:
    """Per eval entry: True when no rw/srpo entry draws from its source (checked against an explicit value).

    A recipe that trains on nothing (a standalone evaluation of models trained elsewhere) cannot know which
    sources their training used: unmarked (None) unless the entry says so."""
    for use in ("rw", "srpo"):
        for i, e in enumerate(entries[use]):
            for key in EVAL_ONLY:
                if getattr(e, key) not in (None, False):
                    raise SaroError(f"prompts.{use}[{i}].{key}: only allowed on eval entries")
    trained = {e.source for use in ("rw", "srpo") for e in entries[use]}
    out: list[bool | None] = []
    for i, e in enumerate(entries["eval"]):
        if not trained:
            out.append(e.cross_source)
            continue
        computed = e.source not in trained
        if e.cross_source is True and not computed:
            raise SaroError(
                f"prompts.eval[{i}].cross_source: true, but source '{e.source}' is also used for training"
            )
        out.append(computed if e.cross_source is None else e.cross_source)
    return out


def _prefill(prompts: list[Prompt], policy: Any, seed: int) -> list[Prompt]:
    """Open each prompt's assistant turn with a drifting or over-cautious prefill (saro.prompts.prefill)."""
    try:
        from saro.prompts.prefill import add_prefills
    except ImportError as e:
        raise SaroError(f"prompts: prefill entries need saro.prompts.prefill ({e})") from None
    return add_prefills(prompts, policy, seed)


def _load_pools(
    cfg: PromptsConfig, entries: dict[str, list[PromptEntry]], policy: Any, seed: int
) -> tuple[dict[str, list[RawPrompt]], dict[str, dict[str, int]]]:
    """Load each source once and shuffle it (seeded by the pool key); categories come later, for drawn rows."""
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
            rows = sorted(rows, key=lambda r: normalize(r.text))
            random.Random(f"{seed}:{key}").shuffle(rows)
            pools[key] = rows
    return pools, skipped


def _label_drawn(slices: dict[tuple[str, str], list[RawPrompt]], cfg: PromptsConfig, policy: Any) -> None:
    """Policy categories for the rows that were drawn (slices do not depend on categories, so labelling only
    these gives the same prompts as labelling whole sources, at a fraction of the embedding time)."""
    rows: dict[int, RawPrompt] = {}
    for key in sorted(slices):
        for r in slices[key]:
            rows.setdefault(id(r), r)
    todo = list(rows.values())
    cats = fill_categories(
        [r.kind for r in todo],
        [r.category for r in todo],
        [r.text for r in todo],
        policy,
        cfg.categorize,
        margin=cfg.categorize_margin,
    )
    for r, c in zip(todo, cats, strict=True):
        r.category = c


def _slice_key(e: PromptEntry) -> str:
    """Entries of one source in one use share a slice (a jailbreak entry wraps the plain entry's first prompts,
    so the two can be compared prompt by prompt), except phrasing-contrast and prefill entries: they get slices
    of their own, so their requests appear in no other suite."""
    return _source_key(e) + ("|contrast" if e.phrasing_contrast else "") + ("|prefill" if e.prefill else "")


def _slice_pools(
    entries: dict[str, list[PromptEntry]], pools: dict[str, list[RawPrompt]]
) -> dict[tuple[str, str], list[RawPrompt]]:
    """Disjoint slices per (source, use), eval first, so no prompt is both trained on and evaluated."""
    taken: dict[str, int] = defaultdict(int)
    slices: dict[tuple[str, str], list[RawPrompt]] = {}
    for use in USES:
        need: dict[str, tuple[str, int | None]] = {}
        for e in entries[use]:
            key = _slice_key(e)
            prev = need.get(key, (_source_key(e), 0))[1]
            need[key] = (_source_key(e), None if (e.n is None or prev is None) else max(prev, e.n))
        for key, (pool, n) in need.items():
            start = taken[pool]
            end = len(pools[pool]) if n is None else start + n
            slices[(key, use)] = pools[pool][start:end]
            taken[pool] = end
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
            if p.base_id:  # a phrasing-contrast prompt: keep the cluster of the underlying request
                w.base_id = p.base_id
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
