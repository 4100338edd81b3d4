"""Model sources: the embedded model, a local folder, or a Hugging Face hub id; dtype and device selection."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from saro.errors import SaroError

log = logging.getLogger(__name__)

EMBEDDED = "embedded"  # recipe value for the embedded SmolLM2-135M-Instruct


def resolve_source(source: str) -> str:
    """Turn a recipe model source into something ``from_pretrained`` accepts (a folder path or a hub id)."""
    if source in (EMBEDDED, "embedded:smollm2-135m-instruct"):
        from saro.models.embedded import embedded_model_dir

        return str(embedded_model_dir())
    p = Path(source).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise SaroError(f"{p}: not a model folder (no config.json)")
        return str(p.resolve())
    if source.startswith((".", "/", "~")) or os.sep in source.strip("/").split("/", 1)[-1]:
        raise SaroError(f"{source}: model folder not found")
    if source.count("/") != 1:
        raise SaroError(f"{source}: neither a model folder nor a hub id (owner/name)")
    return source  # a hub id: from_pretrained downloads it (or finds it in the HF cache when offline)


def local_folder(source: str) -> Path:
    """The local folder of a model source: the folder itself, the embedded model's, or a hub id's snapshot in
    the Hugging Face cache (downloaded when the hub is reachable)."""
    path = resolve_source(source)
    if Path(path).is_dir():
        return Path(path)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path))
    except Exception as e:  # offline without a cached copy, unknown repo, no access
        raise SaroError(
            f"{source}: cannot get the model files ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None


def pick_dtype(dtype: str = "auto") -> Any:
    """bf16 on a GPU that supports it, fp32 on CPU, unless the recipe says otherwise."""
    import torch

    if dtype == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {
            "float32": torch.float32,
            "fp32": torch.float32,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }[dtype]
    except KeyError:
        raise SaroError(f"unknown dtype '{dtype}' (auto, float32, bfloat16, float16)") from None


def load_tokenizer(source: str, trust_remote_code: bool = False, padding_side: str = "right") -> Any:
    """Load a tokenizer; make sure it has a pad token distinct from nothing (falls back to eos)."""
    from transformers import AutoTokenizer

    path = resolve_source(source)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_model(
    source: str,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    device: str | None = None,
) -> Any:
    """Load a causal LM for inference or training."""
    from transformers import AutoModelForCausalLM

    path = resolve_source(source)
    kw: dict[str, Any] = {"dtype": pick_dtype(dtype), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    try:
        # Any: transformers types the wrapped PreTrainedModel.to so that mypy mistakes its first argument for self.
        model: Any = AutoModelForCausalLM.from_pretrained(path, **kw)
    except OSError as e:
        raise SaroError(f"{source}: cannot load model ({str(e).splitlines()[0]})") from None
    if device:
        model.to(device)
    elif _cuda():
        model.to("cuda")
    return model


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
