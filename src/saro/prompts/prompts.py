"""The ``prompts`` stage: draw the recipe's prompt sets, keep uses disjoint, label, wrap with attacks.

Each source is loaded once, de-duplicated, shuffled with the recipe seed and cut into disjoint slices: eval first
(so the held-out sets do not move when training sizes change), then rw, then srpo.

Cross-source by content: an eval prompt of a suite whose source supplies no training prompt is cross-source unless
one of its forms (text, the request it wraps, the text a rephrasing replaced) near-duplicates a form of a training
prompt or any row of a training source (``saro.prompts.near_duplicates``: exact, word 3-gram containment or
MiniLM cosine at the measured thresholds), whatever that source is called; such a prompt gets ``cross_source:
false`` and ``meta.overlap`` = {train_id (None for a source row that was not drawn), source, source_id, form,
eval_form, method, score}, and is counted per suite in ``stats.json`` (``suites.<suite>.overlap_requests``). Then
training prompts that equal an eval prompt in any form are dropped (and, with ``dedup_threshold``,
near-duplicates: n-gram rule or MiniLM cosine >= ``dedup_threshold``) and counted. Output:
``prompts/{rw,srpo,eval}.jsonl`` (Prompt records) and ``prompts/stats.json``.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from dataclasses import asdict
from typing import Any

from saro.errors import SaroError
from saro.prompts.categorize import fill_categories
from saro.prompts.near_duplicates import (
    METHODS,
    FormMatch,
    Rules,
    eval_form_matches,
    near_duplicate_rules,
    training_forms,
)
from saro.prompts.phrasing import apply_phrasing, phrasing_table, warn_phrasing
from saro.prompts.sources import RawPrompt, load_source, normalize
from saro.recipe import BackendSpec, PromptEntry, PromptsConfig
from saro.records import Prompt, atomic_write_json, write_jsonl_atomic
from saro.stage import StageContext
from saro.suites import suite_of

log = logging.getLogger(__name__)

USES = ("eval", "rw", "srpo")  # allocation order
# training-source rows beyond which whole sources are read by the exact and n-gram rules only (embedding them on a
# CPU would take too long); the embedding rule then covers the drawn training prompts
POOL_EMBED_LIMIT = 20_000


def run(ctx: StageContext[PromptsConfig]) -> dict[str, Any]:
    cfg = ctx.config
    out = build_prompts(cfg, ctx.policy, ctx.seed, rewriter=_rewriter(ctx))
    stats = out.pop("_stats")
    for use, prompts in out.items():
        write_jsonl_atomic(ctx.output(use), prompts)
    atomic_write_json(ctx.output("stats"), stats)
    return {
        "counts": {u: len(p) for u, p in out.items()},
        "dropped": stats["dropped"],
        "phrasing": stats["phrasing"],
        "overlap": {k: v["overlap_requests"] for k, v in stats["suites"].items() if v["overlap_requests"]},
    }


def _rewriter(ctx: StageContext[PromptsConfig]):
    """LLM-assisted attacks rewrite through the RW teacher when one is configured (not the offline teacher)."""
    t = ctx.setting_or_none("synth_rw.teacher", BackendSpec)
    if t is None or t.backend == "offline":
        return None
    from saro.synth.answers import make_rewriter

    return make_rewriter(ctx, t)


def _entries(cfg: PromptsConfig) -> dict[str, list[PromptEntry]]:
    return {"eval": cfg.eval, "rw": cfg.rw, "srpo": cfg.srpo}


def _source_id(e: PromptEntry) -> str:
    """A source as the name rule of cross-source marking sees it: its name and options (two local files are two
    sources), not the kind filter (the harmful and borderline halves of one source are one source)."""
    return e.source + (repr(sorted(e.options.items())) if e.options else "")


def _source_key(e: PromptEntry) -> str:
    """Pool key: entries of one source (same options, same kind filter) draw disjoint slices from one pool."""
    return _source_id(e) + f"|{e.kind or '*'}"


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
    contrast: dict[str, dict[str, int]] = {}  # suite -> contrast counts
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
            made = _apply_attacks(e, base, use, train_attacks, heldout_attacks, seed, rewriter)
            if e.phrasing_contrast:
                contrast[suite_of(made[0]) if made else (e.suite or e.source)] = counts
            out[use].extend(made)
    if short:
        raise SaroError("not enough prompts: " + "; ".join(short))
    # before dedup: a training copy that dedup drops still made its eval prompt in-source
    _mark_overlaps(out, _training_pool(entries, pools))
    dropped = _dedup(out, cfg.dedup_threshold)
    table = phrasing_table(out)
    stats = {
        "counts": {u: _counts(out[u]) for u in USES},
        "attacks": {"train": train_attacks, "heldout": heldout_attacks},
        "dropped": dict(dropped),
        "skipped_rows": skipped,
        "phrasing": table,
        "rephrase": rephrased,
        "overlap_rules": asdict(near_duplicate_rules()),
        "suites": _suite_stats(out["eval"], contrast),
    }
    for k, v in dropped.items():
        log.info("prompts: dropped %d (%s)", v, k)
    warn_phrasing(table)
    return {**out, "_stats": stats}


EVAL_ONLY = ("phrasing_contrast", "prefill", "cross_source")


def _cross_source(entries: dict[str, list[PromptEntry]]) -> list[bool | None]:
    """Per eval entry, by source (name and options, ``_source_id``): True when no rw/srpo entry draws from its
    source (an explicit value is checked: ``cross_source: true`` on a trained source is an error). Prompt by
    prompt, ``_mark_overlaps`` then takes the mark back from prompts that near-duplicate training data.

    A recipe that trains on nothing (a standalone evaluation of models trained elsewhere) cannot know which
    sources their training used: unmarked (None) unless the entry says so."""
    for use in ("rw", "srpo"):
        for i, e in enumerate(entries[use]):
            for key in EVAL_ONLY:
                if getattr(e, key) not in (None, False):
                    raise SaroError(f"prompts.{use}[{i}].{key}: only allowed on eval entries")
    trained = {_source_id(e) for use in ("rw", "srpo") for e in entries[use]}
    out: list[bool | None] = []
    for i, e in enumerate(entries["eval"]):
        if not trained:
            out.append(e.cross_source)
            continue
        computed = _source_id(e) not in trained
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


def _training_pool(
    entries: dict[str, list[PromptEntry]], pools: dict[str, list[RawPrompt]]
) -> list[tuple[str, RawPrompt]]:
    """(source name, row) for every row of every source the recipe trains on: the whole source, not only the
    slice drawn, since a held-out row of a training source is in-source too."""
    keys = {_source_key(e): e.source for use in ("rw", "srpo") for e in entries[use]}
    return [(name, r) for key, name in keys.items() for r in pools[key]]


def _mark_overlaps(out: dict[str, list[Prompt]], pool: list[tuple[str, RawPrompt]]) -> None:
    """Cross-source eval prompts that near-duplicate a training prompt in any form, or any row of a training
    source, at the measured thresholds become in-source: ``cross_source: false`` and ``meta.overlap`` naming the
    closest match. An explicit ``cross_source: true`` is treated the same way (the overlapping prompts leave the
    cross-source rate, the others keep it)."""
    cands = [p for p in out["eval"] if p.meta.get("cross_source") is True]
    train = out["rw"] + out["srpo"]
    if not cands or not (train or pool):
        return
    texts, owner = training_forms(train)
    refs = [
        {
            "train_id": train[j].id,
            "source": train[j].source,
            "source_id": train[j].meta.get("source_id"),
            "form": f,
        }
        for j, f in owner
    ]
    refs += [
        {"train_id": None, "source": name, "source_id": r.source_id, "form": "source"} for name, r in pool
    ]
    rules = near_duplicate_rules()
    if len(pool) <= POOL_EMBED_LIMIT:
        matches = eval_form_matches(cands, texts + [r.text for _, r in pool], rules)
    else:
        log.warning(
            "prompts: %d rows in the training sources: their overlap with cross-source eval prompts is checked by "
            "the exact and n-gram rules only (the embedding rule covers the %d drawn training prompts)",
            len(pool),
            len(train),
        )
        matches = eval_form_matches(cands, texts, rules)
        matches += [
            FormMatch(m.eval_index, m.eval_form, m.corpus + len(texts), m.method, m.score)
            for m in eval_form_matches(cands, [r.text for _, r in pool], Rules(rules.ngram, None))
        ]
    found: dict[int, list[FormMatch]] = defaultdict(list)
    for m in matches:
        found[m.eval_index].append(m)
    for i, group in found.items():
        best = min(
            group,
            key=lambda m: (METHODS.index(m.method), -m.score, refs[m.corpus]["train_id"] is None, m.corpus),
        )
        cands[i].meta["cross_source"] = False
        cands[i].meta["overlap"] = {
            **refs[best.corpus],
            "eval_form": best.eval_form,
            "method": best.method,
            "score": best.score,
        }
    if found:
        log.warning(
            "prompts: %d eval prompts of cross-source suites near-duplicate a training prompt or source row: "
            "marked in-source (stats.json suites.<suite>.overlap_requests)",
            len(found),
        )


def _dedup(out: dict[str, list[Prompt]], threshold: float | None) -> Counter[str]:
    """Drop duplicates within a use, and training prompts equal to an eval prompt in any form (with a threshold:
    near-duplicates too, by the n-gram rule or MiniLM cosine >= threshold)."""
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
    train = out["rw"] + out["srpo"]
    texts, owner = training_forms(train)
    rules = Rules(ngram=None, cosine=None) if threshold is None else near_duplicate_rules(threshold)
    method: dict[str, str] = {}
    for m in eval_form_matches(out["eval"], texts, rules):
        pid = train[owner[m.corpus][0]].id
        if pid not in method or METHODS.index(m.method) < METHODS.index(method[pid]):
            method[pid] = m.method
    near = f"near-duplicate of an eval prompt (n-gram >= {rules.ngram} or cos >= {threshold})"
    for use in ("rw", "srpo"):
        keep = []
        for p in out[use]:
            why = method.get(p.id) or method.get(p.base_id or "")
            if why is None:
                keep.append(p)
            else:
                dropped[f"{use}: " + ("equals an eval prompt" if why == "exact" else near)] += 1
        out[use] = keep
    return dropped


def _suite_stats(evals: list[Prompt], contrast: dict[str, dict[str, int]]) -> dict[str, dict[str, Any]]:
    """Per eval suite: prompts and requests, how many are cross-source, how many requests and prompts were taken
    out of the cross-source rate for overlapping training prompts (by method), and phrasing-contrast counts."""
    by_suite: dict[str, list[Prompt]] = defaultdict(list)
    for p in evals:
        by_suite[suite_of(p)].append(p)
    out: dict[str, dict[str, Any]] = {}
    for suite, ps in sorted(by_suite.items()):
        over = [p for p in ps if "overlap" in p.meta]
        out[suite] = {
            "prompts": len(ps),
            "requests": len({p.base_id or p.id for p in ps}),
            "cross_source_prompts": sum(p.meta.get("cross_source") is True for p in ps),
            "overlap_prompts": len(over),
            "overlap_requests": len({p.base_id or p.id for p in over}),
            "overlap_methods": dict(Counter(p.meta["overlap"]["method"] for p in over)),
            **contrast.get(suite, {}),
        }
    return out


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
