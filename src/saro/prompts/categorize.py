"""Assign a policy category to prompts whose source has no usable label.

``embedding``: nearest category by MiniLM cosine between the prompt and each category's description (name,
description and disallowed/allowed behaviours). ``keyword``: the category whose keywords match most (a fast,
weaker fallback used in tests). Benign prompts get ``none``.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

from saro.policy import NONE, Policy

log = logging.getLogger(__name__)

Method = Literal["embedding", "keyword"]


def clause_texts(policy: Policy) -> tuple[list[str], list[int]]:
    """One text per policy clause (each category's description and disallowed behaviours) and its category index."""
    texts, owner = [], []
    for i, c in enumerate(policy.categories):
        for d in [c.description, *c.disallowed]:
            texts.append(f"{c.name}: {d}")
            owner.append(i)
    return texts, owner


def categorize(texts: list[str], policy: Policy, method: Method = "embedding") -> list[str]:
    """One category id per text."""
    if not texts:
        return []
    if method == "keyword":
        return [keyword_category(t, policy) for t in texts]
    import numpy as np

    from saro.embeddings import embed

    # nearest clause, not nearest category summary: a request matches one specific behaviour far better than the
    # average of a category (MiniLM on whole-category texts put "hack a self-driving car" under self-harm)
    texts_c, owner = clause_texts(policy)
    sims = embed(texts) @ embed(texts_c).T
    owner_a = np.array(owner)
    per_cat = np.stack([sims[:, owner_a == j].max(axis=1) for j in range(len(policy.categories))], axis=1)
    return [policy.categories[int(i)].id for i in per_cat.argmax(axis=1)]


def keyword_hits(text: str, policy: Policy) -> list[int]:
    """Per category, how many of its keywords occur in the text."""
    low = text.lower()
    return [
        sum(1 for k in c.keywords if re.search(r"\b" + re.escape(k.lower()), low)) for c in policy.categories
    ]


def keyword_category(text: str, policy: Policy) -> str:
    """Category with the most keyword hits (ties: policy order); the first category when nothing matches."""
    scores = keyword_hits(text, policy)
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return policy.categories[best].id if scores[best] > 0 else policy.categories[0].id


def fill_categories(
    kinds: list[str], cats: list[str | None], texts: list[str], policy: Policy, method: Method
) -> list[str]:
    """Keep valid source labels; benign -> none; the rest from the categoriser."""
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
        guessed = categorize([texts[i] for i in todo], policy, method)
        for i, g in zip(todo, guessed, strict=True):
            out[i] = g
    return [c or NONE for c in out]
