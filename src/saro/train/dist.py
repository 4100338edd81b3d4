"""Process helpers for multi-process training: accelerate's state, the main process, barriers, sharding."""

from __future__ import annotations

import os
from typing import Any


def state() -> Any:
    """accelerate's process state (already initialised by the config's ``__post_init__``)."""
    from accelerate import PartialState

    return PartialState()


def is_main() -> bool:
    return state().is_main_process


def barrier() -> None:
    state().wait_for_everyone()


def uses_sharding(cfg: Any) -> bool:
    """True under DeepSpeed or FSDP (from the config or from ``accelerate launch``)."""
    env = os.environ
    return bool(
        getattr(cfg, "deepspeed", None)
        or getattr(cfg, "fsdp", None)
        or env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
        or env.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    )


def state_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))
