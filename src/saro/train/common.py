"""What the SFT and DPO stages share: model/tokenizer/data loading, resume, metrics and sample callbacks, the
atomic final save, and the run fingerprint that decides whether checkpoints in ``output_dir`` may be resumed."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from saro.errors import SaroError
from saro.records import atomic_write_json

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


# ------------------------------------------------------------------------------------------- process helpers


def state() -> Any:
    """accelerate's process state (already initialised by the config's ``__post_init__``)."""
    from accelerate import PartialState

    return PartialState()


def is_main() -> bool:
    return state().is_main_process


def barrier() -> None:
    state().wait_for_everyone()


# ---------------------------------------------------------------------------------------------- model loading


def uses_sharding(cfg: Any) -> bool:
    """True under DeepSpeed or FSDP (from the config or from ``accelerate launch``)."""
    env = os.environ
    return bool(
        getattr(cfg, "deepspeed", None)
        or getattr(cfg, "fsdp", None)
        or env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
        or env.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    )


def training_dtype(cfg: Any) -> Any:
    """Weights dtype for training: fp32 on CPU and for plain full fine-tuning (bf16 autocast does the speed-up and
    AdamW keeps full-precision weights); bf16 for LoRA (frozen base) and under DeepSpeed/FSDP (which keep fp32 master
    weights or shard them)."""
    import torch

    from saro.models.loading import pick_dtype

    if cfg.model_dtype != "auto":
        return pick_dtype(cfg.model_dtype)
    if cfg.use_cpu or not torch.cuda.is_available() or not torch.cuda.is_bf16_supported():
        return torch.float32
    if cfg.use_lora or uses_sharding(cfg):
        return torch.bfloat16
    return torch.float32


def load_training_tokenizer(cfg: Any, source: str | None = None) -> tuple[Any, str, str]:
    """Tokenizer of the start model with our training template installed: (tokenizer, template name, end-of-turn)."""
    from saro.models.loading import load_tokenizer
    from saro.models.templates import end_of_turn_token, install_template

    tok = load_tokenizer(source or cfg.model, trust_remote_code=cfg.trust_remote_code, padding_side="right")
    name = install_template(tok, cfg.template, default_system=cfg.default_system)
    eot = end_of_turn_token(tok, name)
    if tok.pad_token == tok.eos_token and "<|finetune_right_pad_id|>" in tok.get_vocab():
        tok.pad_token = (
            "<|finetune_right_pad_id|>"  # Llama-3.1 reserves one; keeps end-of-turn out of padding
        )
    return tok, name, eot


def load_training_model(cfg: Any, source: str | None = None) -> Any:
    """Load the start (or reference) model for training, without moving it: the Trainer places it (and under
    ZeRO-3 the weights are partitioned while loading, since the config exists already)."""
    from transformers import AutoModelForCausalLM

    from saro.models.loading import resolve_source

    src = source or cfg.model
    path = resolve_source(src)
    kw: dict[str, Any] = {"dtype": training_dtype(cfg), "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kw["attn_implementation"] = cfg.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kw)
    except OSError as e:
        raise SaroError(f"{src}: cannot load model ({str(e).splitlines()[0]})") from None
    return model


def lora_config(cfg: Any) -> Any:
    """A fresh peft ``LoraConfig`` per stage (reusing one object across trainers makes peft warn)."""
    if not cfg.use_lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def model_fingerprint(source: str) -> dict[str, Any]:
    """Cheap identity of a model source: its path plus size and mtime of the weight files (a retrained RW model in
    the same folder gets a new fingerprint without hashing gigabytes)."""
    from saro.models.loading import resolve_source

    path = resolve_source(source)
    p = Path(path)
    if not p.is_dir():
        return {"source": path}
    files = sorted(
        (f.name, f.stat().st_size, int(f.stat().st_mtime))
        for f in p.iterdir()
        if f.suffix in (".safetensors", ".bin", ".json") and f.is_file()
    )
    return {"source": str(p), "files": files}


# ------------------------------------------------------------------------------------------------------- data


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_jsonl_dataset(path: Path, columns: Iterable[str], stage: str) -> Any:
    """Load a JSONL file with ``datasets`` (on disk, so multi-process runs share its cache) and keep ``columns``."""
    from datasets import load_dataset

    path = Path(path)
    if not path.is_file():
        raise SaroError(f"{stage}: data file {path} not found")
    if path.stat().st_size == 0:
        raise SaroError(f"{stage}: data file {path} is empty")
    try:
        with state().main_process_first():
            ds = load_dataset("json", data_files=str(path), split="train")
    except Exception as e:  # datasets raises many types for malformed JSON
        raise SaroError(
            f"{stage}: cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise SaroError(
            f"{stage}: {path} has no '{missing[0]}' field (columns: {', '.join(ds.column_names)})"
        )
    if len(ds) == 0:
        raise SaroError(f"{stage}: {path} has no rows")
    return ds.select_columns(list(columns))


# -------------------------------------------------------------------------------------- run dir and resume


def run_fingerprint(
    stage: str, cfg: Any, data_files: Iterable[Path | None], extra: dict[str, Any] | None = None
) -> str:
    """Hash of what determines the trained weights: the training settings, the data and the start model."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IN_FINGERPRINT}
    payload = {
        "stage": stage,
        "settings": settings,
        "data": [file_sha256(Path(p)) if p else None for p in data_files],
        "model": model_fingerprint(cfg.model),
        **(extra or {}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
        old = _read_json(run_file)
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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_summary(output_dir: Path) -> dict[str, Any]:
    """The summary of a finished stage (from ``final/saro_train.json``)."""
    data = _read_json(output_dir / FINAL / STAGE_FILE) or {}
    audit = _read_json(output_dir / AUDIT_FILE)
    return {**data, "audit": audit, "skipped": True}


# ----------------------------------------------------------------------------------------------- callbacks


def drop_rows_after(path: Path, step: int) -> None:
    """Keep only the JSONL rows logged at or before ``step`` (the checkpoint a resumed run starts from), so that a
    resumed run does not log the replayed steps twice; a torn last line from a kill is dropped too."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("step", 0) <= step:
            keep.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
    os.replace(tmp, path)


class JsonlLogCallback(TrainerCallback):
    """Append every training log (loss, lr, rewards, ...) to ``metrics.jsonl``; on resume, drop rows past the
    checkpoint so that no step appears twice."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.is_world_process_zero:
            drop_rows_after(self.path, state.global_step)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3), **logs}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")
            f.flush()


class SampleCallback(TrainerCallback):
    """Greedy generations on fixed prompts every ``every`` steps, appended to ``samples.jsonl``.

    Completions can be harmful text: they go to the file only, never to the console or the log.
    """

    def __init__(
        self, path: Path, tokenizer: Any, prompts: list[str], every: int, max_new_tokens: int
    ) -> None:
        self.path = Path(path)
        self.tok = tokenizer
        self.prompts = list(prompts)
        self.every = every
        self.max_new_tokens = max_new_tokens

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if state.is_world_process_zero:
            drop_rows_after(self.path, state.global_step)
        if state.global_step == 0:
            self._sample(args, state, model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if self.every and state.global_step % self.every == 0:
            self._sample(args, state, model)

    def _sample(self, args: Any, state: Any, model: Any) -> None:
        import torch

        if model is None or not self.prompts:
            return
        sharded = uses_sharding(args)
        if not sharded and not state.is_world_process_zero:
            return
        convs = [[{"role": "user", "content": p}] for p in self.prompts]
        side = self.tok.padding_side
        self.tok.padding_side = "left"
        try:
            enc = self.tok.apply_chat_template(
                convs, add_generation_prompt=True, return_tensors="pt", padding=True, return_dict=True
            )
        finally:
            self.tok.padding_side = side
        device = next(model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        was_training = model.training
        model.eval()
        t0 = time.time()
        try:
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    use_cache=True,
                    pad_token_id=self.tok.pad_token_id,
                    synced_gpus=sharded and state_world_size() > 1,
                )
        finally:
            if was_training:
                model.train()
        if not state.is_world_process_zero:
            return
        n_in = enc["input_ids"].shape[1]
        eos = {*_as_list(getattr(model.generation_config, "eos_token_id", None)), self.tok.eos_token_id}
        with open(self.path, "a", encoding="utf-8") as f:
            for prompt, ids in zip(self.prompts, out[:, n_in:].tolist(), strict=True):
                finished = any(t in eos for t in ids)
                text = self.tok.decode(ids, skip_special_tokens=True)
                f.write(
                    json.dumps(
                        {
                            "step": state.global_step,
                            "prompt": prompt,
                            "completion": text,
                            "finished": finished,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
        log.info(
            "samples at step %d written to %s (%.1fs)", state.global_step, self.path.name, time.time() - t0
        )


class RankReportCallback(TrainerCallback):
    """Each process writes ``ranks/rank-N.json`` (rank, world size, steps it took part in) at the end of training:
    proof that every rank of a multi-process launch trained, and a first stop when one hangs."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = Path(out_dir) / "ranks"
        self.steps = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.steps += 1

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        info = {
            "rank": args.process_index,
            "world_size": args.world_size,
            "parallel_mode": str(args.parallel_mode),
            "device": str(args.device),
            "steps_here": self.steps,
            "global_step": state.global_step,
            "pid": os.getpid(),
        }
        atomic_write_json(self.dir / f"rank-{args.process_index}.json", info)


def state_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def stage_callbacks(cfg: Any, tok: Any, extra: Iterable[Any] | None) -> list[Any]:
    out_dir = Path(cfg.output_dir)
    cbs: list[Any] = [JsonlLogCallback(out_dir / METRICS_JSONL)]
    if cfg.world_size > 1:
        cbs.append(RankReportCallback(out_dir))
    if cfg.sample_prompts and cfg.sample_every_steps:
        cbs.append(
            SampleCallback(
                out_dir / SAMPLES_JSONL,
                tok,
                cfg.sample_prompts,
                cfg.sample_every_steps,
                cfg.sample_max_new_tokens,
            )
        )
    return cbs + list(extra or [])


# --------------------------------------------------------------------------------------------- final save


def save_final(
    trainer: Any, cfg: Any, tok: Any, eot: str, info: dict[str, Any], source: Path | None = None
) -> Path:
    """Write ``output_dir/final`` atomically (temp folder + rename); with LoRA also ``output_dir/adapter``, and the
    final model is base + adapter merged unless ``merge_lora`` is off.

    With ``source`` (a checkpoint of the last step) the weights are taken from that folder instead of the trainer:
    used when a kill hit after the last checkpoint, since the Trainer would run one step too many on resuming there.
    """
    out = Path(cfg.output_dir)
    final = out / FINAL
    tmp = out / f".tmp-{FINAL}"
    tmp_adapter = out / f".tmp-{ADAPTER}"
    if is_main():
        for p in (tmp, tmp_adapter):
            shutil.rmtree(p, ignore_errors=True)
    barrier()
    target = tmp_adapter if cfg.use_lora else tmp
    if source is None:
        trainer.save_model(str(target))  # every rank: gathers sharded weights/adapters
    elif is_main():
        _copy_model_files(source, target)
        tok.save_pretrained(target)
    if is_main():
        if cfg.use_lora:
            _replace_dir(tmp_adapter, out / ADAPTER)
            if cfg.merge_lora:
                _merge_adapter(cfg, out / ADAPTER, tmp)
                tok.save_pretrained(tmp)
            else:
                shutil.copytree(out / ADAPTER, tmp)
        _set_generation_eos(tmp, tok, eot)
        atomic_write_json(tmp / STAGE_FILE, info)
        _replace_dir(tmp, final)
    barrier()
    return final


def _copy_model_files(src: Path, dest: Path) -> None:
    """Model/adapter, config and tokenizer files of a checkpoint (not optimizer, scheduler, RNG or DeepSpeed shards)."""
    dest.mkdir(parents=True)
    for f in src.iterdir():
        if (
            f.is_file()
            and f.suffix in (".safetensors", ".json", ".jinja", ".txt", ".model")
            and f.name != ("trainer_state.json")
        ):
            shutil.copy2(f, dest / f.name)


def finished_checkpoint(ckpt: Path | None) -> bool:
    """True when ``ckpt`` was saved at the last step of its run (the run only lacks its final save)."""
    if ckpt is None:
        return False
    st = _read_json(ckpt / "trainer_state.json") or {}
    return 0 < st.get("max_steps", 0) <= st.get("global_step", -1)


def summary_from_checkpoint(
    ckpt: Path, stage: str, world_size: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary ``train_summary`` would give, read from a last-step checkpoint (no training ran now)."""
    st = _read_json(ckpt / "trainer_state.json") or {}
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


def _merge_adapter(cfg: Any, adapter_dir: Path, dest: Path) -> None:
    """Base (start model, on CPU) + adapter, merged and saved as a plain model."""
    from peft import PeftModel

    base = load_training_model(cfg)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(dest)


def _set_generation_eos(model_dir: Path, tok: Any, eot: str) -> None:
    """Make generation stop at the end-of-turn token the model was trained to emit."""
    from transformers import GenerationConfig

    if not (model_dir / "config.json").exists():
        return  # an adapter-only folder
    try:
        gen = GenerationConfig.from_pretrained(model_dir)
    except OSError:
        gen = GenerationConfig()
    eos = _as_list(gen.eos_token_id)
    eot_id = tok.convert_tokens_to_ids(eot)
    if isinstance(eot_id, int) and eot_id not in eos and eot_id != tok.unk_token_id:
        gen.eos_token_id = [*eos, eot_id] if eos else eot_id
    if gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id
    gen.save_pretrained(model_dir)


def _replace_dir(src: Path, dest: Path) -> None:
    if dest.exists():
        old = dest.with_name(f".tmp-old-{dest.name}")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        src.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        src.rename(dest)


# ------------------------------------------------------------------------------------------------- metrics


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
