"""Stage 2, Safety-oriented Reasoning Process Optimization (SRPO): DPO on preference pairs about the reasoning,
with the RW model as reference, a thin layer over TRL's ``DPOTrainer``.

Reference log-probs are computed once and stored in ``output_dir/ref_logps.jsonl`` (keyed by pair id, valid for one
hash of data + reference model + template + max_length), so a re-run or a resume never recomputes them; with LoRA
the reference is the start model with adapters disabled, so no second copy is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trl import DPOTrainer

from saro.errors import SaroError
from saro.records import CHOSEN, PROMPT, REJECTED, atomic_write_text
from saro.train import checkpoints, dist, loading, metrics, save
from saro.train.audit import audit_dpo
from saro.train.callbacks import stage_callbacks
from saro.train.config import SaroDPOConfig

log = logging.getLogger(__name__)

REF_LOGPS = "ref_logps.jsonl"
REF_KEY = "ref_logps.json"
_RC, _RR = "ref_chosen_logps", "ref_rejected_logps"


class _SaroDPOTrainer(DPOTrainer):
    """DPOTrainer whose reference log-prob pass is skipped when the data already carries them, and whose result is
    written to ``ref_logps.jsonl`` for the next run."""

    def __init__(self, *args: Any, ref_store: tuple[Path, str] | None = None, **kwargs: Any) -> None:
        self.saro_ref_store = ref_store  # set first: __init__ runs the reference pass
        super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        if _RC in dataset.column_names and _RR in dataset.column_names:
            log.info("train_dpo: reference log-probs for %s loaded from %s", name, REF_LOGPS)
            return dataset
        out = super()._precompute_ref_logps(dataset, name, batch_size)
        if name == "train" and self.saro_ref_store is not None and "id" in out.column_names:
            path, key = self.saro_ref_store
            if self.accelerator.is_main_process:
                _write_ref_logps(path, key, out["id"], out[_RC], out[_RR])
            self.accelerator.wait_for_everyone()
        return out


def train_dpo(
    cfg: SaroDPOConfig,
    train_file: Path,
    eval_file: Path | None = None,
    callbacks: Iterable[Any] | None = None,
    method: str | None = None,
) -> dict[str, Any]:
    """Train the SRPO model from ``cfg.model`` (the RW model); resumes from the last complete checkpoint in
    ``cfg.output_dir``; returns a summary.

    Writes ``audit.json`` (template and length checks, incl. pairs TRL would silently drop or truncate),
    ``ref_logps.jsonl``, ``metrics.jsonl`` (loss, rewards/chosen|rejected|margins|accuracies, ...),
    ``samples.jsonl`` (generations on ``sample_prompts``), ``metrics.json`` and, last and atomically, ``final/``.
    """
    assert cfg.output_dir is not None  # TrainingArguments.__post_init__ defaults it
    out = Path(cfg.output_dir)
    cols = ["id", PROMPT, CHOSEN, REJECTED]
    tok, template, eot = loading.load_training_tokenizer(cfg)
    train_ds = loading.load_jsonl_dataset(Path(train_file), cols, "train_dpo")
    eval_ds = loading.load_jsonl_dataset(Path(eval_file), cols, "train_dpo") if eval_file else None
    ids = list(train_ds["id"])
    if len(set(ids)) != len(ids):
        raise SaroError(f"train_dpo: {train_file} has duplicate pair ids")

    ref_source = cfg.ref_model or cfg.model
    fingerprint = checkpoints.run_fingerprint(
        "dpo",
        cfg,
        [train_file, eval_file],
        {"template": tok.chat_template, "ref": loading.model_fingerprint(ref_source)},
    )
    done, resume = checkpoints.prepare_run_dir(out, fingerprint, "dpo")
    if done:
        log.info("train_dpo: %s is already complete", out / checkpoints.FINAL)
        return checkpoints.read_summary(out)

    audit = audit_dpo(tok, list(train_ds[PROMPT]), list(train_ds[CHOSEN]), list(train_ds[REJECTED]), eot, cfg)
    dropped = set(audit.pop("_dropped_all"))
    audit["template"] = template
    metrics.enforce_audit("train_dpo", audit, out, cfg.audit)

    trainer, source, cached = None, None, False
    if checkpoints.finished_checkpoint(resume):
        # Killed after the last checkpoint: the Trainer would take one step too many, so finish from the files.
        log.info("train_dpo: %s holds the last step; writing final/ from it", resume.name)
        summary, history = checkpoints.summary_from_checkpoint(resume, "dpo", cfg.world_size)
        source = resume
    else:
        trainer, cached = _trainer(
            cfg, train_ds, eval_ds, tok, ids, dropped, train_file, ref_source, callbacks
        )
        if resume:
            log.info("train_dpo: resuming from %s", resume.name)
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        summary, history = metrics.train_summary(trainer, result, "dpo", resume), trainer.state.log_history

    last = _last_with(history, "rewards/margins")
    summary.update(
        {
            "pairs": len(train_ds),
            "pairs_dropped": audit["dropped"],
            "pairs_truncated": audit["truncated"],
            "template": template,
            "audit_ok": audit["ok"],
            "ref_logps_cached": cached,
            "rewards/chosen": last.get("rewards/chosen"),
            "rewards/rejected": last.get("rewards/rejected"),
            "rewards/margins": last.get("rewards/margins"),
            "rewards/accuracies": last.get("rewards/accuracies"),
            "final_dir": str(out / checkpoints.FINAL),
            "method": method or "SRPO",  # named in the model card
            "train_file": str(train_file),
        }
    )
    metrics.write_metrics(out, summary, history)
    info = {"stage": "dpo", "fingerprint": fingerprint, **summary}
    save.save_final(trainer, cfg, tok, eot, info, source=source)
    log.info(
        "train_dpo: %d steps, margins %s, accuracy %s; model in %s",
        summary["global_step"],
        summary["rewards/margins"],
        summary["rewards/accuracies"],
        summary["final_dir"],
    )
    return {**summary, "audit": audit, "skipped": False}


def _trainer(
    cfg: SaroDPOConfig,
    train_ds: Any,
    eval_ds: Any,
    tok: Any,
    ids: list[Any],
    dropped: set[int],
    train_file: Path,
    ref_source: str,
    callbacks: Iterable[Any] | None,
) -> tuple[_SaroDPOTrainer, bool]:
    """The DPO trainer, with stored reference log-probs attached to the data when they are still valid (then no
    reference model is loaded at all); returns (trainer, whether the stored log-probs were used)."""
    assert cfg.output_dir is not None  # TrainingArguments.__post_init__ defaults it
    out = Path(cfg.output_dir)
    ref_key = _ref_key(cfg, train_file, tok.chat_template, ref_source)
    cached = False
    if cfg.precompute_ref_log_probs:
        stored = _read_ref_logps(out, ref_key)
        kept = {x for i, x in enumerate(ids) if i not in dropped}  # TRL drops the others before its pass
        if stored is not None and kept <= stored.keys():
            with dist.state().main_process_first():
                train_ds = train_ds.map(
                    lambda row: dict(
                        zip((_RC, _RR), stored.get(row["id"], (math.nan, math.nan)), strict=True)
                    ),
                    desc="Attaching stored reference log-probs",
                )
            cached = True

    model = loading.load_training_model(cfg)
    ref_model = None
    same_ref = cfg.ref_model is None or loading.model_fingerprint(cfg.ref_model) == loading.model_fingerprint(
        cfg.model
    )
    if not cached and (not same_ref or (not cfg.use_lora and not cfg.precompute_ref_log_probs)):
        # An explicit copy: TRL would otherwise re-load the reference from config._name_or_path.
        ref_model = loading.load_training_model(cfg, ref_source)
    if not same_ref and cfg.use_lora:
        log.info(
            "train_dpo: LoRA with a separate reference model %s (adapters stay on the policy only)",
            ref_source,
        )
    trainer = _SaroDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=cfg,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tok,
        peft_config=loading.lora_config(cfg),
        callbacks=stage_callbacks(cfg, tok, callbacks),
        ref_store=(out, ref_key),
    )
    if cfg.precompute_ref_log_probs and trainer.ref_model is not None:
        trainer.ref_model = None  # log-probs are in the data; free the reference copy for training
    return trainer, cached


def _last_with(history: list[dict[str, Any]], key: str) -> dict[str, Any]:
    for h in reversed(history):
        if key in h:
            return h
    return {}


# ------------------------------------------------------------------------------------ stored reference log-probs


def _ref_key(cfg: SaroDPOConfig, train_file: Path, template: str | None, ref_source: str) -> str:
    """What the reference log-probs depend on: data, reference weights, tokenisation, truncation, ld_alpha."""
    payload = {
        "data": loading.file_sha256(Path(train_file)),
        "ref": loading.model_fingerprint(ref_source),
        "lora_base": cfg.use_lora and cfg.ref_model is None,
        "template": template,
        "max_length": cfg.max_length,
        "truncation_mode": cfg.truncation_mode,
        "ld_alpha": cfg.ld_alpha,
        "dtype": str(loading.training_dtype(cfg)),
        "bf16": cfg.bf16,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_ref_logps(
    out: Path, key: str, ids: Iterable[str], chosen: Iterable[float], rejected: Iterable[float]
) -> None:
    rows = [
        json.dumps({"id": i, _RC: float(c), _RR: float(r)})
        for i, c, r in zip(ids, chosen, rejected, strict=True)
    ]
    atomic_write_text(out / REF_LOGPS, "".join(x + "\n" for x in rows))
    atomic_write_text(out / REF_KEY, json.dumps({"key": key, "pairs": len(rows)}) + "\n")
    log.info("train_dpo: reference log-probs for %d pairs stored in %s", len(rows), out / REF_LOGPS)


def _read_ref_logps(out: Path, key: str) -> dict[str, tuple[float, float]] | None:
    try:
        meta = json.loads((out / REF_KEY).read_text())
        if meta.get("key") != key:
            log.info(
                "train_dpo: stored reference log-probs are for other data or another reference; recomputing"
            )
            return None
        table = {}
        for line in (out / REF_LOGPS).read_text().splitlines():
            row = json.loads(line)
            table[row["id"]] = (float(row[_RC]), float(row[_RR]))
        if len(table) != meta.get("pairs"):
            return None
        return table
    except (OSError, ValueError, KeyError):
        return None
