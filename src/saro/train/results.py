"""Training numbers and data-audit results written beside the model: ``metrics.json`` and ``audit.json``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from saro.errors import SaroError
from saro.records import atomic_write_json
from saro.train.checkpoints import AUDIT_FILE, METRICS_JSON
from saro.train.dist import is_main

log = logging.getLogger(__name__)


def train_summary(trainer: Any, result: Any, stage: str, resumed_from: Path | None) -> dict[str, Any]:
    """Numbers a pipeline and a model card need, from the trainer after ``train()``."""
    hist = trainer.state.log_history
    losses = [h["loss"] for h in hist if "loss" in h]
    runtime = float(result.metrics.get("train_runtime", 0.0))
    tokens = int(getattr(trainer, "_total_train_tokens", 0) or 0)
    summary = {
        "stage": stage,
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "epoch": trainer.state.epoch,
        "train_loss": result.metrics.get("train_loss"),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_runtime": runtime,
        "train_tokens": tokens,
        "train_tokens_per_second": round(tokens / runtime, 2) if runtime > 0 else None,
        "resumed_from": resumed_from.name if resumed_from else None,
        "world_size": trainer.args.world_size,
    }
    return summary


def write_metrics(output_dir: Path, summary: dict[str, Any], log_history: list[dict[str, Any]]) -> None:
    if is_main():
        atomic_write_json(Path(output_dir) / METRICS_JSON, {"summary": summary, "log_history": log_history})


def write_audit(output_dir: Path, audit: dict[str, Any]) -> None:
    if is_main():
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(output_dir) / AUDIT_FILE, audit)


def enforce_audit(stage: str, audit: dict, out: Path, enabled: bool) -> None:
    """Write the audit; fail on its problems (or only warn when the recipe turned the audit off)."""
    write_audit(out, audit)
    if not audit["problems"]:
        return
    problems = "; ".join(audit["problems"])
    if enabled:
        raise SaroError(f"{stage}: data audit failed: {problems} (details: {out}/audit.json)")
    log.warning("%s: audit problems ignored (audit: false): %s", stage, problems)
