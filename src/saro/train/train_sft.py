"""The ``train_sft`` stage: Reasoning-style Warmup, SFT on RIT-D (``synth_rw.rit_d``) from the base model, with
the loss on the assistant turn; variants train on other data (SafetySFT: ``data: safety_sft``). The models, their
hashes, reuse and resume: ``saro.train.units``; the trainer: ``saro.train.sft``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saro.recipe import TrainSFTConfig
from saro.stage import StageContext
from saro.train.units import model_defaults, train_models

METHOD = {
    "rit_d": "RW",
    "safety_sft": "SafetySFT",
}  # the method each dataset trains (named in the model card)


def run(ctx: StageContext[TrainSFTConfig]) -> dict[str, Any]:
    return train_models(ctx, train_one)


def train_one(
    ctx: StageContext[TrainSFTConfig], unit: str, section: TrainSFTConfig, out: Path
) -> dict[str, Any]:
    """Train one model of the stage on its ``data`` (an output of synth_rw of that name)."""
    from saro.train.config import build_sft_config
    from saro.train.sft import train_sft

    train_file = ctx.input("synth_rw", section.data)
    cfg = build_sft_config(
        {**model_defaults(ctx), "model": ctx.model.source, **section.trainer_settings()}, str(out)
    )
    return {**train_sft(cfg, train_file, method=METHOD[section.data]), "data": str(train_file)}
