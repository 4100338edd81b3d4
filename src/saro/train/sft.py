"""Stage 1, Reasoning-style Warmup (RW): SFT on ``messages`` rows with the loss on the assistant turn only
(reasoning, answer and end-of-turn token), a thin layer over TRL's ``SFTTrainer``.

Reads top to bottom: tokenizer + template, data, audit, resume decision, model, train, atomic final save, metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trl import SFTTrainer

from saro.records import MESSAGES
from saro.train import batching, checkpoints, results, save, start
from saro.train.audit import audit_sft
from saro.train.callbacks import stage_callbacks
from saro.train.config import SaroSFTConfig

log = logging.getLogger(__name__)


class _SaroSFTTrainer(SFTTrainer):
    """SFTTrainer with length-grouped batches in a shuffled order when the config sets ``length_grouping``."""

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        ds: Any = self.train_dataset if train_dataset is None else train_dataset
        if not getattr(self.args, "length_grouping", False) or "input_ids" not in ds.column_names:
            return super()._get_train_sampler(train_dataset)
        return batching.train_sampler(self.args, [len(x) for x in ds["input_ids"]])


def train_sft(
    cfg: SaroSFTConfig,
    train_file: Path,
    eval_file: Path | None = None,
    callbacks: Iterable[Any] | None = None,
    method: str | None = None,
) -> dict[str, Any]:
    """Train the RW model; resumes from the last complete checkpoint in ``cfg.output_dir``; returns a summary.

    Writes ``audit.json``, ``metrics.jsonl`` (every log), ``metrics.json`` (summary + log history) and, last and
    atomically, ``final/`` (model + tokenizer with the training template; LoRA merged unless ``merge_lora`` is off).
    """
    assert cfg.output_dir is not None  # TrainingArguments.__post_init__ defaults it
    out = Path(cfg.output_dir)
    tok, template, eot = start.load_training_tokenizer(cfg)
    train_ds = start.load_jsonl_dataset(Path(train_file), [MESSAGES], "train_sft")
    eval_ds = start.load_jsonl_dataset(Path(eval_file), [MESSAGES], "train_sft") if eval_file else None

    fingerprint = checkpoints.run_fingerprint(
        "sft", cfg, [train_file, eval_file], {"template": tok.chat_template}
    )
    done, resume = checkpoints.prepare_run_dir(out, fingerprint, "sft")
    if done:
        log.info("train_sft: %s is already complete", out / checkpoints.FINAL)
        return checkpoints.read_summary(out)

    audit = audit_sft(tok, list(train_ds[MESSAGES]), eot, cfg)
    audit["template"] = template
    results.enforce_audit("train_sft", audit, out, cfg.audit)

    trainer, source = None, None
    if checkpoints.finished_checkpoint(resume):
        # Killed after the last checkpoint: the Trainer would take one step too many, so finish from the files.
        log.info("train_sft: %s holds the last step; writing final/ from it", resume.name)
        summary, history = checkpoints.summary_from_checkpoint(resume, "sft", cfg.world_size)
        source = resume
    else:
        trainer = _SaroSFTTrainer(
            model=start.load_training_model(cfg),
            args=cfg,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tok,
            peft_config=start.lora_config(cfg),
            callbacks=stage_callbacks(cfg, tok, callbacks),
        )
        if resume:
            log.info("train_sft: resuming from %s", resume.name)
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        summary, history = results.train_summary(trainer, result, "sft", resume), trainer.state.log_history

    summary["examples"] = len(train_ds)
    summary["template"] = template
    summary["audit_ok"] = audit["ok"]
    summary["final_dir"] = str(out / checkpoints.FINAL)
    summary["method"] = method or "RW"  # named in the model card
    summary["train_file"] = str(train_file)
    results.write_metrics(out, summary, history)
    info = {"stage": "sft", "fingerprint": fingerprint, **summary}
    final = save.save_final(trainer, cfg, tok, eot, info, source=source)
    log.info(
        "train_sft: %d steps, loss %s -> %s, %s tokens/s; model in %s",
        summary["global_step"],
        _fmt(summary["first_loss"]),
        _fmt(summary["last_loss"]),
        summary["train_tokens_per_second"],
        final,
    )
    return {**summary, "audit": audit, "skipped": False}


def _fmt(x: float | None) -> str:
    return "?" if x is None else f"{x:.3f}"
