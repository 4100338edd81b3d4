"""The run folder of a training stage: its file layout, the run fingerprint that decides whether checkpoints in
``output_dir`` may be resumed, the resume decision, and the summary of a finished or last-step checkpoint."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeGuard

from saro.fingerprint import file_digest, unit_hash
from saro.records import atomic_write_json
from saro.train.dist import barrier, is_main
from saro.train.start import model_fingerprint

log = logging.getLogger(__name__)

FINAL = "final"
ADAPTER = "adapter"
RUN_FILE = "run.json"
AUDIT_FILE = "audit.json"
METRICS_JSON = "metrics.json"
METRICS_JSONL = "metrics.jsonl"
SAMPLES_JSONL = "samples.jsonl"
STAGE_FILE = "saro_train.json"  # inside final/: what produced it
_CKPT = "checkpoint-"

# Config fields that do not change what is trained (logging, saving, paths, checks): left out of the run fingerprint
# so that changing them does not discard resumable checkpoints.
_NOT_IN_FINGERPRINT = {
    "output_dir",
    "logging_dir",
    "logging_steps",
    "logging_strategy",
    "logging_first_step",
    "logging_nan_inf_filter",
    "save_steps",
    "save_strategy",
    "save_total_limit",
    "save_only_model",
    "report_to",
    "run_name",
    "disable_tqdm",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "dataloader_persistent_workers",
    "dataloader_prefetch_factor",
    "push_to_hub",
    "hub_model_id",
    "hub_token",
    "hub_strategy",
    "hub_private_repo",
    "resume_from_checkpoint",
    "overwrite_output_dir",
    "audit",
    "audit_samples",
    "max_truncated_share",
    "sample_prompts",
    "sample_every_steps",
    "sample_max_new_tokens",
    "merge_lora",
    "eval_steps",
    "eval_strategy",
    "per_device_eval_batch_size",
    "precompute_ref_batch_size",
    "dataset_num_proc",
    "local_rank",
    "ddp_backend",
    "ddp_timeout",
    "use_cpu",
    "activation_checkpointing",
    "gradient_checkpointing",
    "torch_empty_cache_steps",
}


def run_fingerprint(
    stage: str, cfg: Any, data_files: Iterable[Path | None], extra: dict[str, Any] | None = None
) -> str:
    """The unit hash (``saro.fingerprint.unit_hash``) of one training run's checkpoints: what determines the
    trained weights, i.e. the training settings, the data and the start model (plus ``extra`` inputs)."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IN_FINGERPRINT}
    inputs = {
        "data": [file_digest(p) if p else None for p in data_files],
        "model": model_fingerprint(cfg.model),
        **(extra or {}),
    }
    return unit_hash(f"{stage} checkpoints", settings, inputs)


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoints that were fully written (the Trainer writes trainer_state.json last), oldest first."""
    out = []
    if output_dir.is_dir():
        for p in output_dir.iterdir():
            name = p.name
            if (
                name.startswith(_CKPT)
                and name[len(_CKPT) :].isdigit()
                and (p / "trainer_state.json").is_file()
            ):
                out.append(p)
    return sorted(out, key=lambda p: int(p.name[len(_CKPT) :]))


def last_checkpoint(output_dir: Path) -> Path | None:
    ckpts = complete_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def prepare_run_dir(output_dir: Path, fingerprint: str, stage: str) -> tuple[bool, Path | None]:
    """Decide how to start: returns (already_done, checkpoint_to_resume).

    A run dir written by a different configuration or different data is cleared (its checkpoints would resume
    the wrong training); checkpoints left half-written by a kill are removed.
    """
    run_file = output_dir / RUN_FILE
    if is_main():
        output_dir.mkdir(parents=True, exist_ok=True)
        old = read_json(run_file)
        if old and old.get("fingerprint") != fingerprint:
            log.warning(
                "%s: %s was trained with other settings or data; starting over (old checkpoints removed)",
                stage,
                output_dir,
            )
            for p in output_dir.iterdir():
                if p.name.startswith(_CKPT) or p.name in (
                    FINAL,
                    ADAPTER,
                    METRICS_JSON,
                    METRICS_JSONL,
                    SAMPLES_JSONL,
                ):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        complete = {p.name for p in complete_checkpoints(output_dir)}
        for p in output_dir.iterdir():
            if p.is_dir() and p.name.startswith(_CKPT) and p.name not in complete:
                log.info("%s: removing incomplete checkpoint %s", stage, p.name)
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_dir() and p.name.startswith(".tmp-"):
                shutil.rmtree(p, ignore_errors=True)
        atomic_write_json(run_file, {"stage": stage, "fingerprint": fingerprint})
    barrier()
    done = (output_dir / FINAL / STAGE_FILE).is_file()  # final/ is renamed into place last
    return done, (None if done else last_checkpoint(output_dir))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_summary(output_dir: Path) -> dict[str, Any]:
    """The summary of a finished stage (from ``final/saro_train.json``)."""
    data = read_json(output_dir / FINAL / STAGE_FILE) or {}
    audit = read_json(output_dir / AUDIT_FILE)
    return {**data, "audit": audit, "skipped": True}


def finished_checkpoint(ckpt: Path | None) -> TypeGuard[Path]:
    """True when ``ckpt`` was saved at the last step of its run (the run only lacks its final save)."""
    if ckpt is None:
        return False
    st = read_json(ckpt / "trainer_state.json") or {}
    return 0 < st.get("max_steps", 0) <= st.get("global_step", -1)


def summary_from_checkpoint(
    ckpt: Path, stage: str, world_size: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary ``train_summary`` would give, read from a last-step checkpoint (no training ran now)."""
    st = read_json(ckpt / "trainer_state.json") or {}
    hist = st.get("log_history", [])
    losses = [h["loss"] for h in hist if "loss" in h]
    summary = {
        "stage": stage,
        "global_step": st.get("global_step"),
        "max_steps": st.get("max_steps"),
        "epoch": st.get("epoch"),
        "train_loss": None,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_runtime": 0.0,
        "train_tokens": 0,
        "train_tokens_per_second": None,
        "resumed_from": ckpt.name,
        "world_size": world_size,
    }
    return summary, hist
