"""The ``train_sft`` and ``train_dpo`` pipeline stages: pick the data and the start model, then call TRL.

A training section (``saro.recipe.TrainSFTConfig`` / ``TrainDPOConfig``) is one config, or a base config plus named
``variants`` (e.g. SafetySFT on the baseline data, or the SRPO ablation on a subset of pair types); each model is a
unit of the stage (``saro.stages.Units``), hashed by ``saro.fingerprint.training_units``. The main model goes to
``<stage>/final``, a variant's to ``<stage>/<variant>/final``. Our keys besides TRL's: ``data`` (which upstream
dataset), for DPO ``pair_types`` (which SRPO pair types to train on) and ``model`` (the start and reference model).
A subset trains fewer steps per epoch than the whole set; an ablation that compares pair types sets TRL's
``max_steps`` to the main model's step count (the subset is then looped over for more epochs), and the stage warns
when its DPO models ended at different step counts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from saro.errors import SaroError
from saro.recipe import TrainDPOConfig, TrainingSection, TrainSFTConfig
from saro.records import read_rows, write_jsonl_atomic
from saro.stage import FINAL, RunDir, StageContext, copy_tree, unit_folder
from saro.stages import MAIN

if TYPE_CHECKING:
    from saro.train.config import SaroDPOConfig, SaroSFTConfig

log = logging.getLogger(__name__)

# the output of the data stage each ``data`` value trains on
SFT_DATA = {"rit_d": "rit_d", "safety_sft": "safety_sft"}
DPO_DATA = {"srpo": "pairs", "safety_dpo": "safety_dpo"}
# the method each dataset trains (named in the model card)
METHOD = {"rit_d": "RW", "safety_sft": "SafetySFT", "srpo": "SRPO", "safety_dpo": "SafetyDPO"}


def run(ctx: StageContext[TrainingSection]) -> dict[str, Any]:
    ctx.set_threads()
    out: dict[str, Any] = {}
    units = ctx.config.units(ctx.stage)
    hashes = ctx.unit_hashes()
    previous = ctx.run.status(ctx.stage).get("summary") or {}  # from the last finished run of this stage
    for name, section in units:
        h = hashes[name]
        if _finished(ctx, name, h, previous):
            log.info("%s: trained before with the same inputs, kept", _label(ctx, name))
            out[name] = previous[name]
            continue
        reused = _reuse_unit(ctx, name, h, [u for u, _ in units])
        out[name] = reused if reused is not None else train_unit(ctx, name, section)
        out[name]["unit_hash"] = h
    if ctx.stage == "train_dpo":
        _warn_unequal_steps(out)
    return out


def _label(ctx: StageContext[TrainingSection], unit: str) -> str:
    return ctx.stage if unit == MAIN else f"{ctx.stage}/{unit}"


def _warn_unequal_steps(summaries: dict[str, Any]) -> None:
    """DPO variants that ended at different step counts compare amounts of training, not only their data."""
    steps = {k: v.get("global_step") for k, v in summaries.items() if v.get("global_step") is not None}
    if len(set(steps.values())) > 1:
        log.warning(
            "train_dpo: the models trained different numbers of steps (%s); set max_steps in the variants to "
            "compare them at equal steps",
            ", ".join(f"{k} {n}" for k, n in steps.items()),
        )


def _finished(ctx: StageContext[TrainingSection], unit: str, h: str, previous: dict[str, Any]) -> bool:
    old = previous.get(unit) or {}
    return old.get("unit_hash") == h and (ctx.unit_dir(unit) / FINAL / "config.json").exists()


def _reuse_unit(
    ctx: StageContext[TrainingSection], unit: str, h: str, names: list[str]
) -> dict[str, Any] | None:
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
    log.info("%s: same inputs as in %s, model reused", _label(ctx, unit), ctx.reuse_from)
    return {**summary, "final": str(dst / FINAL), "reused_from": str(src)}


def _model_defaults(ctx: StageContext[TrainingSection]) -> dict[str, Any]:
    m = ctx.model
    return {
        "template": m.template,
        "trust_remote_code": m.trust_remote_code,
        "attn_implementation": m.attn_implementation,
        "model_dtype": m.dtype,
        "seed": ctx.seed,
    }


def train_unit(ctx: StageContext[TrainingSection], unit: str, section: TrainingSection) -> dict[str, Any]:
    """Train one model of the stage; skipped when its final model is already there."""
    out_dir = ctx.unit_dir(unit)
    final = out_dir / FINAL
    if (final / "config.json").exists():
        log.info("%s: final model exists, skipping", _label(ctx, unit))
        return {"final": str(final), "skipped": True}
    args = section.trainer_settings()
    cfg: SaroSFTConfig | SaroDPOConfig
    if isinstance(section, TrainSFTConfig):
        from saro.train.config import build_sft_config
        from saro.train.sft import train_sft

        train_file = ctx.input("synth_rw", SFT_DATA[section.data])
        cfg = build_sft_config({**_model_defaults(ctx), "model": ctx.model.source, **args}, str(out_dir))
        summary = train_sft(cfg, train_file, method=METHOD[section.data])
    elif isinstance(section, TrainDPOConfig):
        from saro.train.config import build_dpo_config
        from saro.train.dpo import train_dpo

        train_file = ctx.input("synth_srpo", DPO_DATA[section.data])
        if section.pair_types:
            train_file = _filter_pairs(train_file, list(section.pair_types), out_dir / "pairs.jsonl")
        start = ctx.resolve_model(section.model)
        cfg = build_dpo_config(
            {**_model_defaults(ctx), "model": start, "ref_model": start, **args}, str(out_dir)
        )
        summary = train_dpo(cfg, train_file, method=METHOD[section.data])
    else:
        raise SaroError(f"{ctx.stage}: not a training section ({type(section).__name__})")
    summary = dict(summary or {})
    summary.update(data=str(train_file), final=str(final))
    return summary


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
