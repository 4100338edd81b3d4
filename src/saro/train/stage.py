"""The ``train_sft`` and ``train_dpo`` pipeline stages: pick the data and the start model, then call TRL.

A training section is one config, or a base config plus named ``variants`` (e.g. SafetySFT on the baseline data,
or the SRPO ablation on a subset of pair types). The main model goes to ``<stage>/final``, a variant's to
``<stage>/<variant>/final``. Our keys besides TRL's: ``data`` (which upstream dataset) and, for DPO,
``pair_types`` (which SRPO pair types to train on). A subset trains fewer steps per epoch than the whole set; an
ablation that compares pair types sets TRL's ``max_steps`` to the main model's step count (the subset is then
looped over for more epochs), and the stage warns when its DPO models ended at different step counts.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from saro.errors import SaroError
from saro.recipe import TRAIN_KEYS, iter_variants
from saro.records import read_rows, stable_id, write_jsonl_atomic
from saro.stage import RunDir, StageContext, copy_tree

if TYPE_CHECKING:
    from saro.train.config import SaroDPOConfig, SaroSFTConfig

log = logging.getLogger(__name__)

SFT_DATA = {"rit_d": "rit_d.jsonl", "safety_sft": "safety_sft.jsonl"}
DPO_DATA = {"srpo": "pairs.jsonl", "safety_dpo": "safety_dpo.jsonl"}
# the method each dataset trains (named in the model card)
METHOD = {"rit_d": "RW", "safety_sft": "SafetySFT", "srpo": "SRPO", "safety_dpo": "SafetyDPO"}


def run(ctx: StageContext) -> dict[str, Any]:
    ctx.set_threads()
    out: dict[str, Any] = {}
    variants = iter_variants(ctx.stage, ctx.config)
    names = [v for v, _ in variants if v]
    previous = ctx.run.status(ctx.stage).get("summary") or {}  # from the last finished run of this stage
    for variant, section in variants:
        name = variant or "main"
        vh = variant_hash(ctx, section)
        if _finished(ctx, variant, vh, previous):
            log.info(
                "%s%s: trained before with the same inputs, kept", ctx.stage, f"/{variant}" if variant else ""
            )
            out[name] = previous[name]
            continue
        reused = _reuse_variant(ctx, variant, vh, names)
        out[name] = reused if reused is not None else train_variant(ctx, variant, section)
        out[name]["variant_hash"] = vh
    if ctx.stage == "train_dpo":
        _warn_unequal_steps(out)
    return out


def _warn_unequal_steps(summaries: dict[str, Any]) -> None:
    """DPO variants that ended at different step counts compare amounts of training, not only their data."""
    steps = {k: v.get("global_step") for k, v in summaries.items() if v.get("global_step") is not None}
    if len(set(steps.values())) > 1:
        log.warning(
            "train_dpo: the models trained different numbers of steps (%s); set max_steps in the variants to "
            "compare them at equal steps",
            ", ".join(f"{k} {n}" for k, n in steps.items()),
        )


def _finished(ctx: StageContext, variant: str | None, vh: str, previous: dict[str, Any]) -> bool:
    old = previous.get(variant or "main") or {}
    out_dir = ctx.dir / variant if variant else ctx.dir
    return old.get("variant_hash") == vh and (out_dir / "final" / "config.json").exists()


def keep_unchanged(ctx: StageContext, previous: dict[str, Any]) -> None:
    """The stage's config changed (a variant added, removed or edited): delete the outputs of every model whose
    inputs changed and keep the finished ones whose inputs did not, so that adding SafetySFT next to the RW model
    does not train the RW model again. ``previous`` is the summary of the stage's last finished run."""
    variants = iter_variants(ctx.stage, ctx.config)
    folders = {v for v, _ in variants if v} | {k for k in previous if k != "main"}
    kept = {
        variant or "main"
        for variant, sec in variants
        if _finished(ctx, variant, variant_hash(ctx, sec), previous)
    }
    for entry in ctx.dir.iterdir():
        # a variant's files are in its own folder, the main model's are the rest of the stage folder
        owner = entry.name if entry.name in folders else "main"
        if owner not in kept:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    log.info("%s: kept %s", ctx.stage, ", ".join(sorted(kept)) or "nothing")


def variant_hash(ctx: StageContext, section: dict[str, Any]) -> str:
    """What one trained model depends on: its own settings, the base model, the seed and the upstream stages."""
    from saro.stages import get
    from saro.train.resolve import resolve_training

    deps = ctx.upstream_hashes(section)
    model = ctx.recipe.model.model_dump(mode="json")
    resolved = resolve_training(ctx.stage, section)  # defaults included: a changed default retrains
    return stable_id(ctx.stage, resolved, model, ctx.seed, deps, get(ctx.stage).code_version)


def _reuse_variant(
    ctx: StageContext, variant: str | None, vh: str, names: list[str]
) -> dict[str, Any] | None:
    """With ``reuse_from``: copy a model trained there with exactly the same inputs instead of training it again."""
    if not ctx.recipe.reuse_from or not (Path(ctx.recipe.reuse_from) / "manifest.json").exists():
        return None
    other = RunDir(ctx.recipe.reuse_from)
    st = other.status(ctx.stage)
    summary = (st.get("summary") or {}).get(variant or "main") or {}
    if st.get("status") != "done" or summary.get("variant_hash") != vh:
        return None
    src = other.stage_dir(ctx.stage) / variant if variant else other.stage_dir(ctx.stage)
    dst = ctx.dir / variant if variant else ctx.dir
    if not (src / "final" / "config.json").exists():
        return None
    # the main model's folder is the stage folder: leave the variants' sub-folders out
    skip = set() if variant else {*names, *(k for k in st.get("summary", {}) if k != "main")}
    copy_tree(src, dst, skip=skip)
    log.info(
        "%s%s: same inputs as in %s, model reused",
        ctx.stage,
        f"/{variant}" if variant else "",
        ctx.recipe.reuse_from,
    )
    return {**summary, "final": str(dst / "final"), "reused_from": str(src)}


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
    cfg: SaroSFTConfig | SaroDPOConfig
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
        summary = train_sft(cfg, train_file, method=METHOD[data])
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
        summary = train_dpo(cfg, train_file, method=METHOD[data])
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
