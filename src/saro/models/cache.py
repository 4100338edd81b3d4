"""On-disk cache of teacher / judge requests, so that re-running a stage costs nothing.

One JSON file per request under ``<root>/<first 2 hex chars>/<key>.json``, written atomically (temp file +
rename), so a killed run never leaves a torn entry and several processes can share one cache folder. The key is a
hash of everything that determines the answer: model, messages, sampling parameters, seed and sample index.
Only successful, valid answers are stored; failures are asked again on the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from saro.records import atomic_write_text

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the meaning of a cached entry changes


def request_key(
    model: str,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    sample: int,
    namespace: str = "chat",
) -> str:
    """A sha256 hex key over (namespace, model, messages, sampling params incl. seed, sample index)."""
    payload = {
        "v": CACHE_VERSION,
        "ns": namespace,
        "model": model,
        "messages": messages,
        "params": params,
        "sample": sample,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class RequestCache:
    """A folder of cached responses keyed by :func:`request_key`; ``enabled=False`` makes it a no-op."""

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.root = Path(path)
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        if enabled:
            self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"RequestCache({str(self.root)!r}, enabled={self.enabled})"

    def _file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached entry for ``key``, or None (also for an unreadable entry, which is then ignored)."""
        if not self.enabled:
            return None
        f = self._file(key)
        try:
            entry = json.loads(f.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable cache entry %s (%s)", f, type(e).__name__)
            self.misses += 1
            return None
        if not isinstance(entry, dict):
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Store ``entry`` (a JSON-able dict) under ``key``, atomically."""
        if not self.enabled:
            return
        atomic_write_text(self._file(key), json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")

    def __contains__(self, key: str) -> bool:
        return self.enabled and self._file(key).exists()

    def __len__(self) -> int:
        if not self.enabled or not self.root.exists():
            return 0
        return sum(1 for _ in self.root.glob("??/*.json"))
