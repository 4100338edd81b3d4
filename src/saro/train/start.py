"""What a training run starts from: tokenizer with the training template, model weights (dtype picked
for the device and parallelism), the LoRA config, and the JSONL data; plus the cheap identity of a model folder
(its weight files' names, sizes and times)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from saro.errors import SaroError
from saro.train.dist import state, uses_sharding


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
