"""Stage 2, Safety-oriented Reasoning Process Optimization (SRPO): DPO on preference pairs about the reasoning,
with the RW model as reference, a thin layer over TRL's ``DPOTrainer``.

Reference log-probs are computed once and stored in ``output_dir/ref_logps.jsonl`` (keyed by pair id, valid for one
hash of data + reference model + template + max_length), so a re-run or a resume never recomputes them; with LoRA
the reference is the start model with adapters disabled, so no second copy is loaded.

A PP-COT or early-vs-late pair shares a drifting prefix: chosen = prefix + reflection + correction, rejected =
prefix + drift. The sigmoid log-ratio cancels that prefix, but TRL's ``"sft"`` NLL term trains the whole chosen
completion, i.e. it teaches the model to start drifting. With ``sft_shared_prefix: mask`` (the default) the collator
adds an ``sft_mask`` that leaves out the token-level common prefix of the chosen and rejected completion ids, and the
``"sft"`` term is computed on it; every other loss type is TRL's own, on the full completions.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from saro.errors import SaroError
from saro.fingerprint import file_digest, unit_hash
from saro.records import CHOSEN, PROMPT, REJECTED, atomic_write_text
from saro.train import batching, checkpoints, dist, results, save, start
from saro.train.audit import audit_dpo, common_prefix
from saro.train.callbacks import stage_callbacks
from saro.train.config import UNPAIRED_LOSS_TYPES, SaroDPOConfig

log = logging.getLogger(__name__)

REF_LOGPS = "ref_logps.jsonl"
REF_KEY = "ref_logps.json"
_RC, _RR = "ref_chosen_logps", "ref_rejected_logps"
# batch key: the tokens the "sft" term trains (chosen rows only); never passed to the model
SFT_MASK = "sft_mask"


class PrefixMaskingCollator(DataCollatorForPreference):
    """TRL's preference collator plus ``sft_mask``: per row, the completion tokens the ``"sft"`` term trains, i.e.
    the chosen completion after its token-level common prefix with the rejected one (rejected rows are all zero).
    Built before truncation and cut the same way, so ``keep_end`` truncation keeps it aligned."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call(examples)
        width = out["completion_mask"].shape[1]
        mask = torch.zeros((2 * len(examples), width), dtype=torch.long)
        for i, ex in enumerate(examples):
            row = sft_row_mask(ex["prompt_ids"], ex["chosen_ids"], ex["rejected_ids"])
            if self.max_length is not None:
                row = (
                    row[: self.max_length]
                    if self.truncation_mode == "keep_start"
                    else row[-self.max_length :]
                )
            mask[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        out[SFT_MASK] = mask
        return out


def sft_row_mask(prompt_ids: list[int], chosen_ids: list[int], rejected_ids: list[int]) -> list[int]:
    """0/1 over prompt + chosen completion: 1 on the chosen tokens after the divergence from the rejected ones."""
    shared = common_prefix(chosen_ids, rejected_ids)
    return [0] * (len(prompt_ids) + shared) + [1] * (len(chosen_ids) - shared)


class _FirstOutputs:
    """Calls ``model`` and keeps the outputs of the first call (TRL's policy forward in ``_compute_loss``)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.outputs: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.model(*args, **kwargs)
        if self.outputs is None:
            self.outputs = out
        return out


class _SaroDPOTrainer(DPOTrainer):
    """DPOTrainer whose reference log-prob pass is skipped when the data already carries them, whose result is
    written to ``ref_logps.jsonl`` for the next run, and whose ``"sft"`` term leaves out the completion prefix
    chosen and rejected share (``sft_shared_prefix: mask``)."""

    def __init__(self, *args: Any, ref_store: tuple[Path, str] | None = None, **kwargs: Any) -> None:
        self.saro_ref_store = ref_store  # set first: __init__ runs the reference pass
        super().__init__(*args, **kwargs)
        cfg = self.args
        self.saro_mask_sft = bool(getattr(cfg, "masks_shared_prefix", False))
        if self.saro_mask_sft and type(self.data_collator) is DataCollatorForPreference:
            # installed after TRL's reference pass, which needs no mask; the train and eval loaders use this one
            c = self.data_collator
            self.data_collator = PrefixMaskingCollator(
                pad_token_id=c.pad_token_id,
                max_length=c.max_length,
                truncation_mode=c.truncation_mode,
                pad_to_multiple_of=c.pad_to_multiple_of,
            )
        elif self.saro_mask_sft:
            log.warning("train_dpo: custom data collator; the sft term trains the shared prefix too")
            self.saro_mask_sft = False

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """Length-grouped batches in a shuffled order when the config sets ``length_grouping``; a pair's length
        is its prompt plus the longer completion (the collator pads chosen and rejected to one length)."""
        ds: Any = self.train_dataset if train_dataset is None else train_dataset
        if not getattr(self.args, "length_grouping", False) or "prompt_ids" not in ds.column_names:
            return super()._get_train_sampler(train_dataset)
        lengths = [
            len(p) + max(len(c), len(r))
            for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"], strict=True)
        ]
        return batching.train_sampler(self.args, lengths)

    def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != SFT_MASK})

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        """TRL's loss with its ``"sft"`` terms replaced by the NLL on ``sft_mask`` (the same forward pass)."""
        sft_mask = inputs.get(SFT_MASK)
        # a copy without the mask: it must not reach the model, and the caller's batch stays as it was
        inputs = {k: v for k, v in inputs.items() if k != SFT_MASK}
        if sft_mask is None or not self.saro_mask_sft or "sft" not in self.loss_types:
            return super()._compute_loss(model, inputs, return_outputs)
        types, weights = self.loss_types, self.loss_weights
        sft_weight = sum(w for t, w in zip(types, weights, strict=True) if t == "sft")
        recorder = _FirstOutputs(model)
        self.loss_types = [t for t in types if t != "sft"]
        self.loss_weights = [w for t, w in zip(types, weights, strict=True) if t != "sft"]
        try:
            result = super()._compute_loss(recorder, inputs, return_outputs)
        finally:
            self.loss_types, self.loss_weights = types, weights
        loss, outputs = result if return_outputs else (result, None)
        loss = loss + sft_weight * self._masked_sft(recorder.outputs, inputs, sft_mask)
        return (loss, outputs) if return_outputs else loss

    def _masked_sft(self, outputs: Any, inputs: dict[str, Any], sft_mask: Any) -> Any:
        """TRL's ``"sft"`` term (token mean of the chosen NLL, WPO-weighted when ``use_weighting``) on ``sft_mask``;
        logs the masked (shared-prefix) tokens per pair."""
        mode = "train" if getattr(self.model, "training", False) else "eval"
        shift_completion = inputs["completion_mask"][..., 1:]
        seq_len = shift_completion.size(1)
        per_token = outputs.log_probs[:, -seq_len:]
        chosen_logps, _ = per_token.chunk(2, dim=0)
        chosen_full, _ = shift_completion.chunk(2, dim=0)
        keep = sft_mask[..., 1:].chunk(2, dim=0)[0].to(chosen_logps.device).bool()
        n = keep.sum()
        # a batch whose chosen completions are all shared prefix trains nothing here (no NaN, graph kept)
        sft = -chosen_logps[keep].sum() / n.clamp(min=1)
        if self.use_weighting:
            lengths = shift_completion.sum(dim=1).clamp_min(1)
            with torch.no_grad():
                aligned = (per_token - outputs.log_sum_sq_probs[:, -seq_len:]) * shift_completion
            weights = torch.exp(aligned.sum(dim=1) / lengths)
            w_chosen, w_rejected = weights.chunk(2, dim=0)
            sft = (sft.expand(w_chosen.size(0)) * w_chosen * w_rejected).mean()
        masked = (chosen_full.sum(dim=1) - keep.sum(dim=1)).float().mean()
        self._metrics[mode]["sft/masked_tokens"].append(
            self.accelerator.gather_for_metrics(masked.detach()).mean().item()
        )
        return sft

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
    tok, template, eot = start.load_training_tokenizer(cfg)
    train_ds = start.load_jsonl_dataset(Path(train_file), cols, "train_dpo")
    eval_ds = start.load_jsonl_dataset(Path(eval_file), cols, "train_dpo") if eval_file else None
    ids = list(train_ds["id"])
    if len(set(ids)) != len(ids):
        raise SaroError(f"train_dpo: {train_file} has duplicate pair ids")

    ref_source = cfg.ref_model or cfg.model
    fingerprint = checkpoints.run_fingerprint(
        "dpo",
        cfg,
        [train_file, eval_file],
        {"template": tok.chat_template, "ref": start.model_fingerprint(ref_source)},
    )
    done, resume = checkpoints.prepare_run_dir(out, fingerprint, "dpo")
    if done:
        log.info("train_dpo: %s is already complete", out / checkpoints.FINAL)
        return checkpoints.read_summary(out)

    audit, dropped = _audit(cfg, tok, train_ds, Path(train_file), eot, template)

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
        summary, history = results.train_summary(trainer, result, "dpo", resume), trainer.state.log_history

    last = _last_with(history, "rewards/margins")
    summary.update(
        {
            "pairs": len(train_ds),
            "pairs_dropped": audit["dropped"],
            "pairs_truncated": audit["truncated"],
            "sft_shared_prefix": cfg.sft_shared_prefix,
            "pairs_with_shared_prefix": audit["shared_prefix"]["pairs_with_shared_prefix"],
            "sft_masked_tokens_mean": audit["shared_prefix"]["mean_masked_tokens"],
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
    results.write_metrics(out, summary, history)
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

    model = start.load_training_model(cfg)
    ref_model = None
    same_ref = cfg.ref_model is None or start.model_fingerprint(cfg.ref_model) == start.model_fingerprint(
        cfg.model
    )
    if not cached and (not same_ref or (not cfg.use_lora and not cfg.precompute_ref_log_probs)):
        # An explicit copy: TRL would otherwise re-load the reference from config._name_or_path.
        ref_model = start.load_training_model(cfg, ref_source)
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
        peft_config=start.lora_config(cfg),
        callbacks=stage_callbacks(cfg, tok, callbacks),
        ref_store=(out, ref_key),
    )
    if cfg.precompute_ref_log_probs and trainer.ref_model is not None:
        trainer.ref_model = None  # log-probs are in the data; free the reference copy for training
    return trainer, cached


def _audit(
    cfg: SaroDPOConfig, tok: Any, train_ds: Any, train_file: Path, eot: str, template: str
) -> tuple[dict[str, Any], set[int]]:
    """Run, write and enforce the pre-training audit; returns it and the indices of the pairs TRL will drop."""
    assert cfg.output_dir is not None
    audit = audit_dpo(
        tok,
        list(train_ds[PROMPT]),
        list(train_ds[CHOSEN]),
        list(train_ds[REJECTED]),
        eot,
        cfg,
        pair_types=_pair_types(train_file),
    )
    _warn_unpaired(cfg, audit)
    dropped = set(audit.pop("_dropped_all"))
    audit["template"] = template
    results.enforce_audit("train_dpo", audit, Path(cfg.output_dir), cfg.audit)
    return audit, dropped


def _pair_types(path: Path) -> list[str | None]:
    """The ``pair_type`` of every row of a preference file (None where a row has none), for the audit."""
    out: list[str | None] = []
    try:
        with path.open() as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    ptype = row.get("pair_type") if isinstance(row, dict) else None
                    out.append(str(ptype) if ptype is not None else None)
    except (OSError, ValueError):  # not JSON lines (datasets read it anyway): the audit counts no types
        return []
    return out


def _warn_unpaired(cfg: SaroDPOConfig, audit: dict[str, Any]) -> None:
    """Loss types that score one completion against the reference see its shared prefix: say so once."""
    unpaired = [t for t in cfg.loss_type if t in UNPAIRED_LOSS_TYPES]
    if unpaired and audit.get("shared_prefix", {}).get("pairs_with_shared_prefix"):
        log.warning(
            "train_dpo: loss types %s score the chosen/rejected completion on its own; the prefix %d pairs share "
            "does not cancel there and sft_shared_prefix does not mask it",
            ", ".join(unpaired),
            audit["shared_prefix"]["pairs_with_shared_prefix"],
        )


def _last_with(history: list[dict[str, Any]], key: str) -> dict[str, Any]:
    for h in reversed(history):
        if key in h:
            return h
    return {}


# ------------------------------------------------------------------------------------ stored reference log-probs


def _ref_key(cfg: SaroDPOConfig, train_file: Path, template: str | None, ref_source: str) -> str:
    """The unit hash of the reference log-probs: the data, the reference weights, tokenisation, truncation, ld_alpha
    and the precision they are computed in."""
    settings = {
        "lora_base": cfg.use_lora and cfg.ref_model is None,
        "template": template,
        "max_length": cfg.max_length,
        "truncation_mode": cfg.truncation_mode,
        "ld_alpha": cfg.ld_alpha,
        "dtype": str(start.training_dtype(cfg)),
        "bf16": cfg.bf16,
    }
    inputs = {"data": file_digest(train_file), "ref": start.model_fingerprint(ref_source)}
    return unit_hash("reference log-probs", settings, inputs)


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
