"""Secrets never reach a file: mask secret-looking keys and any value of a secret environment variable."""

from __future__ import annotations

import os
import re
from typing import Any

_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|authorization)$", re.IGNORECASE)
MASK = "***"


def mask_secrets(obj: Any) -> Any:
    """Mask values of secret-looking keys, and any string equal to a secret environment variable's value."""
    secrets = {
        v
        for k, v in os.environ.items()
        if v and len(v) >= 8 and re.search(r"KEY|TOKEN|SECRET|PASSWORD", k, re.IGNORECASE)
    }

    def walk(o: Any, key: str = "") -> Any:
        if isinstance(o, dict):
            return {k: walk(v, str(k)) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [walk(v, key) for v in o]
        if isinstance(o, str):
            if _SECRET_KEY.search(key) and not key.endswith("_env") and o:
                return MASK
            for s in secrets:
                if s in o:
                    o = o.replace(s, MASK)
        return o

    return walk(obj)
