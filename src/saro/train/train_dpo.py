"""The ``train_dpo`` stage: SRPO, DPO on the preference pairs (``synth_srpo.pairs``) from the RW model, which is
also the reference; variants train on other data (SafetyDPO: ``data: safety_dpo``) or a subset of pair types (the
ablation: ``pair_types``; it sets ``max_steps`` to the main model's step count, and the stage warns when its
models ended at different step counts). The models, their hashes, reuse and resume: ``saro.train.units``; the
trainer: ``saro.train.dpo``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from saro.errors import SaroError
from saro.recipe import TrainDPOConfig
from saro.records import read_rows, write_jsonl_atomic
from saro.stage import StageContext
from saro.train.units import model_defaults, train_models

log = logging.getLogger(__name__)

DATA = {"srpo": "pairs", "safety_dpo": "safety_dpo"}  # the synth_srpo output each ``data`` value trains on
METHOD = {
    "srpo": "SRPO",
    "safety_dpo": "SafetyDPO",
}  # the method each dataset trains (named in the model card)


def run(ctx: StageContext[TrainDPOConfig]) -> dict[str, Any]:
    out = train_models(ctx, train_one)
    warn_unequal_steps(out)
    return out


def train_one(
    ctx: StageContext[TrainDPOConfig], unit: str, section: TrainDPOConfig, out: Path
) -> dict[str, Any]:
    """Train one model of the stage on its ``data`` (and ``pair_types``), from its ``model`` (the reference too)."""
    from saro.train.config import build_dpo_config
    from saro.train.dpo import train_dpo

    train_file = ctx.input("synth_srpo", DATA[section.data])
    if section.pair_types:
        train_file = _filter_pairs(train_file, list(section.pair_types), out / "pairs.jsonl")
    start = ctx.resolve_model(section.model)
    settings = {**model_defaults(ctx), "model": start, "ref_model": start, **section.trainer_settings()}
    cfg = build_dpo_config(settings, str(out))
    return {**train_dpo(cfg, train_file, method=METHOD[section.data]), "data": str(train_file)}


def warn_unequal_steps(summaries: dict[str, Any]) -> None:
    """DPO variants that ended at different step counts compare amounts of training, not only their data."""
    steps = {k: v.get("global_step") for k, v in summaries.items() if v.get("global_step") is not None}
    if len(set(steps.values())) > 1:
        log.warning(
            "train_dpo: the models trained different numbers of steps (%s); set max_steps in the variants to "
            "compare them at equal steps",
            ", ".join(f"{k} {n}" for k, n in steps.items()),
        )


def _filter_pairs(src: Path, types: list[str], dst: Path) -> Path:
    rows = read_rows(src)
    known = sorted(cast("set[str]", {r.get("pair_type") for r in rows}))  # SRPO rows carry a str pair_type
    bad = [t for t in types if t not in known]
    if bad:
        raise SaroError(f"train_dpo.pair_types: {bad} not in the SRPO data (has: {', '.join(known)})")
    keep = [r for r in rows if r.get("pair_type") in types]
    if not keep:
        raise SaroError(f"train_dpo.pair_types {types}: no pairs of these types")
    write_jsonl_atomic(dst, keep)
    log.info("train_dpo: %d of %d pairs with types %s", len(keep), len(rows), types)
    return dst
