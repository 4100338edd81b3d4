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

from saro.testing import build_tiny_model

__all__ = ["build_tiny_model"]


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
