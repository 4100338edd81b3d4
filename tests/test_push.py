"""``saro push`` against a fake hub API (HfApi's methods monkeypatched): no network. Checks the repo id, the private
flag, which files would be uploaded (the card among them), the variant lookup, and that errors are one line with
the token masked and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TOKEN = "hf_fake_token_0123456789abcdef"


def _final(path: Path, card: bool = True) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (path / "model.safetensors").write_bytes(b"weights")
    (path / "saro_train.json").write_text("{}")
    if card:
        (path / "README.md").write_text("---\nlicense: other\n---\n# card\n")
    return path


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from huggingface_hub import HfApi

    calls: dict[str, Any] = {}

    def create_repo(self: Any, repo_id: str, **kw: Any) -> str:
        calls["token"] = self.token
        calls["create"] = {"repo_id": repo_id, **kw}
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self: Any, folder_path: str, repo_id: str, **kw: Any) -> str:
        calls["upload"] = {
            "repo_id": repo_id,
            "files": sorted(p.name for p in Path(folder_path).iterdir()),
            **kw,
        }
        return "commit"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return calls


def test_push_uploads_final_with_its_card(tmp_path: Path, fake_hub: dict[str, Any]) -> None:
    from saro.train.push import push_model

    _final(tmp_path / "run" / "train_sft" / "final")
    _final(tmp_path / "run" / "train_dpo" / "final")
    _final(tmp_path / "run" / "train_sft" / "safety_sft" / "final")
    url = push_model(tmp_path / "run", "me/saro-demo", private=True)
    assert url == "https://huggingface.co/me/saro-demo"
    assert fake_hub["token"] == TOKEN
    assert fake_hub["create"] == {
        "repo_id": "me/saro-demo",
        "private": True,
        "exist_ok": True,
        "repo_type": "model",
    }
    up = fake_hub["upload"]
    assert (
        up["repo_id"] == "me/saro-demo" and up["repo_type"] == "model" and "train_dpo" in up["commit_message"]
    )
    assert up["files"] == ["README.md", "config.json", "model.safetensors", "saro_train.json"]

    push_model(tmp_path / "run", "me/variant", model="safety_sft")
    assert fake_hub["create"]["private"] is False
    assert "safety_sft/final" in fake_hub["upload"]["commit_message"]
    push_model(tmp_path / "run", "me/rw", model="sft")
    assert "train_sft/final" in fake_hub["upload"]["commit_message"]


def test_push_refuses_bad_input(
    tmp_path: Path, fake_hub: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from saro.errors import SaroError
    from saro.train.push import push_model

    _final(tmp_path / "run" / "train_sft" / "final", card=False)
    with pytest.raises(SaroError, match="no model card"):
        push_model(tmp_path / "run", "me/x", model="sft")
    with pytest.raises(SaroError, match="no trained model"):
        push_model(tmp_path / "run", "me/x", model="dpo")
    with pytest.raises(SaroError, match="OWNER/NAME"):
        push_model(tmp_path / "run", "no-owner", model="sft")
    assert "upload" not in fake_hub
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(SaroError, match="HF_TOKEN is not set"):
        push_model(tmp_path / "run", "me/x")


def test_push_hub_error_is_one_line_without_the_token(
    tmp_path: Path, fake_hub: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import HfApi

    from saro.errors import SaroError
    from saro.train.push import push_model

    def fail(self: Any, *a: Any, **kw: Any) -> None:
        raise RuntimeError(f"401 Unauthorized for token {TOKEN}\nmore detail")

    monkeypatch.setattr(HfApi, "upload_folder", fail)
    _final(tmp_path / "run" / "train_sft" / "final")
    with pytest.raises(SaroError) as e:
        push_model(tmp_path / "run", "me/x")
    assert str(e.value) == "saro push me/x: 401 Unauthorized for token ***"


def test_push_merges_an_adapter_only_final(
    tiny_model_dir: Path, tmp_path: Path, fake_hub: dict[str, Any]
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from saro.train.push import push_model

    final = tmp_path / "run" / "train_dpo" / "final"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2, target_modules=["q_proj"])
    )
    model.save_pretrained(final)
    (final / "README.md").write_text("---\nlicense: other\n---\n# card\n")
    push_model(tmp_path / "run", "me/adapter")
    assert "adapter_config.json" in fake_hub["upload"]["files"]  # without --merge-lora: the adapter as it is
    push_model(tmp_path / "run", "me/merged", merge_lora=True)
    files = fake_hub["upload"]["files"]
    assert "config.json" in files and "model.safetensors" in files and "README.md" in files
    assert not any(f.startswith("adapter_") for f in files)


def test_push_cli_without_token_exits_2(tmp_path: Path) -> None:
    _final(tmp_path / "run" / "train_sft" / "final")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "saro", "push", str(tmp_path / "run"), "--repo-id", "me/x"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "HF_TOKEN is not set" in res.stdout + res.stderr and "Traceback" not in res.stdout + res.stderr
