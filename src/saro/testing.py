"""Tiny random models for tests and benchmarks: a small Llama with the real SmolLM2 tokenizer.

Not for training real models; it exercises every code path (templates, generation, SFT, DPO) in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def build_tiny_model(
    out: str | Path,
    seed: int = 0,
    tokenizer: Any = None,
    template: str | None = "chatml",
    hidden_size: int = 64,
    num_layers: int = 2,
    context_length: int = 1024,
) -> Path:
    """Save a random Llama (~3M parameters at the defaults) with the SmolLM2 tokenizer to ``out``.

    ``tokenizer`` defaults to the embedded model's; ``template`` installs one of our training templates (None keeps
    the tokenizer's own chat template); ``context_length`` is ``max_position_embeddings`` (a served model takes
    prompts up to it).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from saro.models.embedded import embedded_model_dir
    from saro.models.templates import install_template

    tok = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(embedded_model_dir())
    if template is not None:
        install_template(tok, template)
    heads = max(1, hidden_size // 16)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=context_length,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
