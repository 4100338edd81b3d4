"""A training section with every default filled in, for the stage hash (a changed default redoes the stage)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


def _plain(value: Any) -> Any:
    """A JSON value for a default (enums by value; objects by type name, never by address)."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return type(value).__name__


def resolve_training(stage: str, section: dict[str, Any] | None) -> dict[str, Any]:
    """A training section with every default filled in: TRL's field defaults, then saro's, then the recipe's."""
    try:
        from saro.train.config import (
            DPO_DEFAULTS,
            RESERVED,
            SFT_DEFAULTS,
            SaroDPOConfig,
            SaroSFTConfig,
            config_fields,
        )
    except ImportError:  # training extras missing: the stage cannot run here anyway
        return dict(section or {})
    cls, ours = (SaroSFTConfig, SFT_DEFAULTS) if stage == "train_sft" else (SaroDPOConfig, DPO_DEFAULTS)
    base: dict[str, Any] = {}
    for name, f in config_fields(cls).items():
        if name in RESERVED:
            continue
        if f.default is not dataclasses.MISSING:
            base[name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            base[name] = _plain(f.default_factory())
    return {**base, **ours, **(section or {})}
