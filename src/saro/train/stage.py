"""The ``train_sft`` and ``train_dpo`` pipeline stages: pick the data and the start model, then call TRL.

A training section is one config, or a base config plus named ``variants`` (e.g. SafetySFT on the baseline data,
or the SRPO ablation on a subset of pair types). The main model goes to ``<stage>/final``, a variant's to
``<stage>/<variant>/final``. Our keys besides TRL's: ``data`` (which upstream dataset) and, for DPO,
``pair_types`` (which SRPO pair types to train on).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from saro.errors import SaroError
from saro.pipeline import StageContext
from saro.recipe import TRAIN_KEYS, iter_variants
from saro.records import read_rows, write_jsonl_atomic

log = logging.getLogger(__name__)

SFT_DATA = {"rit_d": "rit_d.jsonl", "safety_sft": "safety_sft.jsonl"}
DPO_DATA = {"srpo": "pairs.jsonl", "safety_dpo": "safety_dpo.jsonl"}


def run(ctx: StageContext) -> dict[str, Any]:
    ctx.set_threads()
    out: dict[str, Any] = {}
    for variant, section in iter_variants(ctx.stage, ctx.config):
        name = variant or "main"
        out[name] = train_variant(ctx, variant, section)
    return out


def _model_defaults(ctx: StageContext) -> dict[str, Any]:
    m = ctx.recipe.model
    return {
        "template": m.template,
        "trust_remote_code": m.trust_remote_code,
        "attn_implementation": m.attn_implementation,
        "model_dtype": m.dtype,
        "seed": ctx.seed,
    }


def train_variant(ctx: StageContext, variant: str | None, section: dict[str, Any]) -> dict[str, Any]:
    """Train one (variant of a) stage; skipped when its final model is already there."""
    out_dir = ctx.dir / variant if variant else ctx.dir
    final = out_dir / "final"
    if (final / "config.json").exists():
        log.info("%s%s: final model exists, skipping", ctx.stage, f"/{variant}" if variant else "")
        return {"final": str(final), "skipped": True}
    args = {k: v for k, v in section.items() if k not in TRAIN_KEYS}
    if ctx.stage == "train_sft":
        from saro.train.config import build_sft_config
        from saro.train.sft import train_sft

        data = section.get("data", "rit_d")
        if data not in SFT_DATA:
            raise SaroError(f"train_sft.data: '{data}' is not one of {', '.join(SFT_DATA)}")
        train_file = ctx.require("synth_rw", SFT_DATA[data])
        cfg = build_sft_config(
            {**_model_defaults(ctx), "model": ctx.recipe.model.source, **args}, str(out_dir)
        )
        summary = train_sft(cfg, train_file)
    else:
        from saro.train.config import build_dpo_config
        from saro.train.dpo import train_dpo

        data = section.get("data", "srpo")
        if data not in DPO_DATA:
            raise SaroError(f"train_dpo.data: '{data}' is not one of {', '.join(DPO_DATA)}")
        train_file = ctx.require("synth_srpo", DPO_DATA[data])
        pair_types = section.get("pair_types")
        if pair_types:
            train_file = _filter_pairs(train_file, list(pair_types), out_dir / "pairs.jsonl")
        start = ctx.resolve_model(section.get("model", "@train_sft"))
        cfg = build_dpo_config(
            {
                **_model_defaults(ctx),
                "model": start,
                "ref_model": start,
                **{k: v for k, v in args.items() if k != "model"},
            },
            str(out_dir),
        )
        summary = train_dpo(cfg, train_file)
    summary = dict(summary or {})
    summary.update(data=str(train_file), final=str(final))
    return summary


def _filter_pairs(src: Path, types: list[str], dst: Path) -> Path:
    rows = read_rows(src)
    known = sorted({r.get("pair_type") for r in rows})
    bad = [t for t in types if t not in known]
    if bad:
        raise SaroError(f"train_dpo.pair_types: {bad} not in the SRPO data (has: {', '.join(known)})")
    keep = [r for r in rows if r.get("pair_type") in types]
    if not keep:
        raise SaroError(f"train_dpo.pair_types {types}: no pairs of these types")
    write_jsonl_atomic(dst, keep)
    log.info("train_dpo: %d of %d pairs with types %s", len(keep), len(rows), types)
    return dst
