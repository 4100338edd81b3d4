"""The paper recipe in the environment it names: `saro run recipes/paper/llama3.1-8b.yaml --until synth_rw` with
its teacher endpoint set to a local `saro serve` (a real server process, reached through the real openai backend),
and the training keys the paper recipes use under every transformers version pyproject.toml allows.

scripts/paper_env.sh runs this file in the paper environment (transformers 5.17, huggingface_hub 1.33, numpy 2.3:
the versions vLLM 0.31 forces); `make test` runs it in the CPU lock's environment."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from saro.errors import SaroError
from saro.testing import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "recipes" / "paper" / "llama3.1-8b.yaml"
KEY = "sk-local-paper-env-test-0123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "saro serve did not start"
        time.sleep(0.2)


def test_paper_recipe_runs_synth_rw_against_a_local_teacher(tmp_path: Path) -> None:
    """The paper recipe as written (openai teacher with a key from the environment, concurrency, retries, k
    candidates) gets past loading and runs prompts and synth_rw; only sizes, the endpoint and the student are set
    on the command line. The teacher is a tiny random model with a 4096-token context (the teacher prompt is about
    2,200 tokens): its text does not parse, so the candidates are judged and rejected, which is the point here."""
    model = build_tiny_model(tmp_path / "tiny", context_length=4096)
    port = _free_port()
    log = tmp_path / "serve.log"
    serve = [sys.executable, "-m", "saro", "serve", str(model), "--port", str(port), "--model-name", "teacher",
             "--api-key", KEY]  # fmt: skip
    with open(log, "wb") as f:
        server = subprocess.Popen(serve, stdout=f, stderr=subprocess.STDOUT)
    rw = [{"source": "saro_benign", "n": 1}, {"source": "advbench", "n": 1, "attacks": "train"}]
    sets = {
        "run_dir": str(tmp_path / "run"),
        "model.source": str(model),  # the student's tokenizer counts SRS tokens (the hub is out of reach)
        "prompts.rw": json.dumps(rw),
        "prompts.srpo": "[]",
        "prompts.eval_suites": "[]",
        "synth_rw.teacher.base_url": f"http://127.0.0.1:{port}/v1",
        "synth_rw.teacher.model": "teacher",
        "synth_rw.teacher.max_new_tokens": "8",
        "synth_rw.k": "2",
    }
    cmd = [sys.executable, "-m", "saro", "run", str(PAPER), "--until", "synth_rw"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    env = {**os.environ, "OPENAI_API_KEY": KEY, "HF_HUB_OFFLINE": "1", "SARO_NO_PROGRESS": "1"}
    try:
        _wait_healthy(server, port, log)
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    finally:
        server.terminate()
        server.wait(60)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert KEY not in done.stdout + done.stderr + log.read_text()  # the key is never logged
    sdir = tmp_path / "run" / "synth_rw"
    stats = json.loads((sdir / "stats.json").read_text())
    assert stats["prompts"] == 2 and stats["candidates"] == 4  # k = 2 samples per prompt, all asked and kept
    served = log.read_text().count("POST /v1/chat/completions 200")
    assert served >= 2  # the teacher answered over HTTP (requests with n = k, or one per sample)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert KEY not in json.dumps(manifest)


def test_paper_training_sections_build_under_the_installed_transformers() -> None:
    """Both paper recipes' training sections (activation_checkpointing: true) build TRL configs here."""
    from saro.train.config import build_dpo_config, build_sft_config

    for name in ("llama3.1-8b.yaml", "qwen2.5-7b.yaml"):
        raw = yaml.safe_load((ROOT / "recipes" / "paper" / name).read_text())
        for section, build in (("train_sft", build_sft_config), ("train_dpo", build_dpo_config)):
            cfg = build(raw[section], "/tmp/saro-paper-env")
            if hasattr(cfg, "activation_checkpointing"):  # transformers >= 5.23
                assert cfg.activation_checkpointing is True, (name, section)
            else:  # before 5.23 the field is gradient_checkpointing; on a CPU it is off (it only costs time)
                assert cfg.gradient_checkpointing is bool(_cuda()), (name, section)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclasses.dataclass
class _Before523:
    """The checkpointing fields of TrainingArguments before transformers 5.23 (hand-built)."""

    learning_rate: float = 5e-5
    gradient_checkpointing: bool = True
    gradient_checkpointing_kwargs: dict | None = None


@dataclasses.dataclass
class _Since523(_Before523):
    activation_checkpointing: bool | None = None
    activation_checkpointing_kwargs: dict | None = None


def test_renamed_training_keys_map_to_the_installed_names() -> None:
    from saro.train.config import installed_names

    section = {"activation_checkpointing": True, "activation_checkpointing_kwargs": {"use_reentrant": False}}
    old = installed_names(_Before523, "train_sft", {**section, "learning_rate": 1e-5})
    assert old == {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False},
                   "learning_rate": 1e-5}  # fmt: skip
    assert installed_names(_Since523, "train_sft", section) == section  # the current names stay
    assert installed_names(_Before523, "train_dpo", {"gradient_checkpointing": False}) == {
        "gradient_checkpointing": False
    }
    with pytest.raises(SaroError, match="train_dpo: set 'activation_checkpointing' only"):
        installed_names(
            _Before523, "train_dpo", {"activation_checkpointing": True, "gradient_checkpointing": True}
        )
