"""The models of a training stage: one per unit (the main model, then each variant of its section), each kept when
it was trained before with the same unit hash, copied from ``reuse_from`` when trained there with it, or trained.

A training section (``saro.recipe.TrainSFTConfig`` / ``TrainDPOConfig``) is one config, or a base config plus named
``variants`` (e.g. SafetySFT on the baseline data, or the SRPO ablation on a subset of pair types); each model is a
unit of the stage (``saro.stages.Units``), hashed by ``saro.fingerprint.training_units``. The main model goes to
``<stage>/final``, a variant's to ``<stage>/<variant>/final``. The stages themselves (``train_sft.py``,
``train_dpo.py``) say how one model is trained.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from saro.recipe import TrainingSection
from saro.stage import FINAL, RunDir, StageContext, copy_tree, unit_folder
from saro.stages import MAIN

log = logging.getLogger(__name__)

S = TypeVar("S", bound=TrainingSection)
# trains one model (unit name, its section, its folder) and returns its summary
TrainOne = Callable[[StageContext[S], str, S, Path], dict[str, Any]]


def train_models(ctx: StageContext[S], train_one: TrainOne[S]) -> dict[str, Any]:
    """Every model of the stage, by unit: {unit: summary (with its ``unit_hash``)}."""
    ctx.set_threads()
    out: dict[str, Any] = {}
    units = ctx.config.units(ctx.stage)
    hashes = ctx.unit_hashes()
    previous = ctx.run.status(ctx.stage).get("summary") or {}  # from the last finished run of this stage
    for name, section in units:
        h = hashes[name]
        if _finished(ctx, name, h, previous):
            log.info("%s: trained before with the same inputs, kept", label(ctx, name))
            out[name] = previous[name]
            continue
        reused = _reuse_unit(ctx, name, h, [u for u, _ in units])
        out[name] = reused if reused is not None else _train(ctx, name, section, train_one)
        out[name]["unit_hash"] = h
    return out


def label(ctx: StageContext[Any], unit: str) -> str:
    """``train_sft`` for the main model, ``train_sft/safety_sft`` for a variant."""
    return ctx.stage if unit == MAIN else f"{ctx.stage}/{unit}"


def _finished(ctx: StageContext[Any], unit: str, h: str, previous: dict[str, Any]) -> bool:
    old = previous.get(unit) or {}
    return old.get("unit_hash") == h and (ctx.unit_dir(unit) / FINAL / "config.json").exists()


def _reuse_unit(ctx: StageContext[Any], unit: str, h: str, names: list[str]) -> dict[str, Any] | None:
    """With ``reuse_from``: copy a model trained there with exactly the same inputs instead of training it again."""
    src = ctx.reused_unit(unit, h)
    if src is None or ctx.reuse_from is None or not (src / FINAL / "config.json").exists():
        return None
    st = RunDir(ctx.reuse_from).status(ctx.stage)
    summary = (st.get("summary") or {}).get(unit) or {}
    dst = ctx.unit_dir(unit)
    # the main model's folder is the stage folder: leave the variants' folders out
    others = {*names, *(st.get("units") or {})} - {MAIN}
    copy_tree(src, dst, skip={unit_folder(u) for u in others} if unit == MAIN else set())
    log.info("%s: same inputs as in %s, model reused", label(ctx, unit), ctx.reuse_from)
    return {**summary, "final": str(dst / FINAL), "reused_from": str(src)}


def _train(ctx: StageContext[S], unit: str, section: S, train_one: TrainOne[S]) -> dict[str, Any]:
    """Train one model of the stage; skipped when its final model is already there."""
    out_dir = ctx.unit_dir(unit)
    final = out_dir / FINAL
    if (final / "config.json").exists():
        log.info("%s: final model exists, skipping", label(ctx, unit))
        return {"final": str(final), "skipped": True}
    summary = dict(train_one(ctx, unit, section, out_dir) or {})
    summary["final"] = str(final)
    return summary


def model_defaults(ctx: StageContext[Any]) -> dict[str, Any]:
    """The training config's settings that come from the recipe's base model and seed."""
    m = ctx.model
    return {
        "template": m.template,
        "trust_remote_code": m.trust_remote_code,
        "attn_implementation": m.attn_implementation,
        "model_dtype": m.dtype,
        "seed": ctx.seed,
    }
