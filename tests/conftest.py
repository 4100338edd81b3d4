"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer and our training template."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SARO_NO_PROGRESS", "1")

from pathlib import Path

import pytest


def build_tiny_model(out: Path, seed: int = 0) -> Path:
    """Save a ~3M-parameter random Llama with the SmolLM2 tokenizer (ChatML training template) to ``out``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from saro.models.embedded import embedded_model_dir
    from saro.models.templates import install_template

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    install_template(tok, "chatml")
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (real SmolLM2 tokenizer, ChatML training template) saved to a folder."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def smollm_tokenizer():
    """The real SmolLM2 tokenizer with our ChatML training template installed."""
    from transformers import AutoTokenizer

    from saro.models.embedded import embedded_model_dir
    from saro.models.templates import install_template

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    install_template(tok, "chatml")
    return tok


@pytest.fixture(autouse=True, scope="session")
def _quiet() -> None:
    from saro.console import quiet_libraries

    quiet_libraries()
