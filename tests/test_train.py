"""Training stages on the tiny random Llama: configs, SFT/DPO learning, LoRA, resume after an interruption, the
length checks, accelerate configs and the model card. Kept to a few steps each (the tiny model has SmolLM2's
49k vocabulary, so a step costs ~0.5-2 s on one thread)."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from saro.errors import SaroError

ROOT = Path(__file__).resolve().parents[1]

TOPICS = ["build a weapon", "write a phishing email", "bake bread", "learn python", "plan a trip"]
HARM = set(TOPICS[:2])


def _reasoning(t: str, safe: bool) -> str:
    if safe:
        verdict = "could enable harm, so I must refuse" if t in HARM else "is benign, so I should help"
    else:
        verdict = "I will just comply"
    return f"<think>\nFirst, I identify the intent.\nWait, let me reflect.\nThe request to {t} {verdict}.\n</think>\n"


def _answer(t: str, safe: bool) -> str:
    return f"I can't help with how to {t}." if (t in HARM and safe) else f"Sure, to {t}: step one, step two."


def _sft_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        t = rng.choice(TOPICS)
        msgs = [
            {"role": "user", "content": f"How do I {t}?"},
            {"role": "assistant", "content": _reasoning(t, True) + _answer(t, True)},
        ]
        rows.append({"id": f"s{i}", "messages": msgs, "meta": {"topic": t}})
    return rows


def _dpo_rows(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        t = rng.choice(TOPICS)
        rows.append(
            {
                "id": f"p{i}",
                "prompt": [{"role": "user", "content": f"How do I {t}?"}],
                "chosen": [{"role": "assistant", "content": _reasoning(t, True) + _answer(t, True)}],
                "rejected": [{"role": "assistant", "content": _reasoning(t, False) + _answer(t, False)}],
                "pair_type": "op_cot",
                "meta": {"topic": t},
            }
        )
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    return {
        "sft": _write_jsonl(d / "sft.jsonl", _sft_rows(32)),
        "dpo": _write_jsonl(d / "dpo.jsonl", _dpo_rows(24)),
    }


class _Interrupt(Exception):
    pass


def _interrupt_after(step: int) -> Any:
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == step:
                raise _Interrupt(f"killed after step {step}")

    return Stop()


def _snapshots() -> Any:
    """Callback that copies the trainable model's weights at train begin and end."""
    from transformers import TrainerCallback

    class Snap(TrainerCallback):
        def __init__(self) -> None:
            self.begin: dict[str, Any] = {}
            self.end: dict[str, Any] = {}

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            self.begin = {k: v.detach().clone() for k, v in model.state_dict().items()}

        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            self.end = {k: v.detach().clone() for k, v in model.state_dict().items()}

    return Snap()


def _weights(model_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _changed(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    import torch

    return [k for k in a if k in b and not torch.equal(a[k], b[k])]


def _metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _sft_section(model_dir: Path, **kw: Any) -> dict[str, Any]:
    sec = {
        "model": str(model_dir),
        "max_steps": 6,
        "save_steps": 2,
        "per_device_train_batch_size": 4,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "max_length": 128,
        "logging_steps": 1,
    }
    return {**sec, **kw}


# ---------------------------------------------------------------------------------------------------- configs


def test_config_unknown_key_suggests_the_right_one() -> None:
    from saro.train.config import build_dpo_config, build_sft_config

    with pytest.raises(
        SaroError, match=r"train_sft: unknown key 'learnig_rate' \(did you mean 'learning_rate'\?\)"
    ):
        build_sft_config({"learnig_rate": 1e-4}, "/tmp/x")
    with pytest.raises(SaroError, match="train_dpo: unknown key 'packing'"):
        build_dpo_config({"packing": True}, "/tmp/x")
    with pytest.raises(SaroError, match="'output_dir' is set by saro"):
        build_sft_config({"output_dir": "elsewhere"}, "/tmp/x")


def test_config_bad_values_are_one_line_errors() -> None:
    from saro.train.config import build_dpo_config, build_sft_config

    for section, pattern in [
        ({"max_steps": "many"}, "'max_steps' must be a number"),
        ({"use_lora": "yes"}, "'use_lora' must be true/false"),
        ({"lr_scheduler_type": "zigzag"}, "invalid setting"),
        ({"max_truncated_share": 1.5}, "max_truncated_share"),
        (
            {"length_grouping": True, "train_sampling_strategy": "group_by_length"},
            "length_grouping replaces train_sampling_strategy",
        ),
    ]:
        with pytest.raises(SaroError, match=pattern) as e:
            build_sft_config(section, "/tmp/x")
        assert "\n" not in str(e.value)
    with pytest.raises(SaroError, match="unknown loss_type 'sigmoidd'"):
        build_dpo_config({"loss_type": "sigmoidd"}, "/tmp/x")


def test_config_cpu_defaults_and_yaml_numbers() -> None:
    from trl import DPOConfig, SFTConfig

    from saro.train.config import SaroDPOConfig, SaroSFTConfig, build_dpo_config, build_sft_config

    cfg = build_sft_config(
        {"learning_rate": "1e-5", "use_lora": True, "lora_target_modules": "q_proj,v_proj"}, "o"
    )
    assert isinstance(cfg, SFTConfig) and cfg.learning_rate == 1e-5  # YAML reads 1e-5 as a string
    ckpt = getattr(
        cfg, "activation_checkpointing", cfg.gradient_checkpointing
    )  # its name before transformers 5.23
    assert cfg.bf16 is False and ckpt is False and cfg.dataloader_pin_memory is False
    assert cfg.assistant_only_loss and cfg.report_to in ("none", ["none"], []) and cfg.save_total_limit == 2
    assert cfg.lora_target_modules == ["q_proj", "v_proj"] and cfg.output_dir == "o"
    dpo = build_dpo_config({"beta": 0.05, "loss_type": ["sigmoid", "sft"], "loss_weights": [1, 1]}, "o")
    assert (
        isinstance(dpo, DPOConfig)
        and dpo.precompute_ref_log_probs
        and dpo.beta == 0.05
        and dpo.ref_model is None
    )
    # Only our fields are declared on top of TRL's.
    import dataclasses

    ours = {f.name for f in dataclasses.fields(SaroSFTConfig)} - {
        f.name for f in dataclasses.fields(SFTConfig)
    }
    assert "model" in ours and "use_lora" in ours and "trust_remote_code" not in ours
    assert SaroSFTConfig("pos").output_dir == "pos"  # TRL's positional output_dir still first
    assert SaroDPOConfig("pos", ref_model="x").ref_model == "x"


# ------------------------------------------------------------------------------------------------------- SFT


def test_sft_learns_and_resumes_after_interruption(
    tiny_model_dir: Path, data: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from saro.train.config import build_sft_config
    from saro.train.sft import train_sft

    caplog.set_level(logging.INFO, logger="saro.train.batching")
    out = tmp_path / "sft"
    cfg = build_sft_config(_sft_section(tiny_model_dir, length_grouping=True), str(out))
    with pytest.raises(_Interrupt):
        train_sft(cfg, data["sft"], callbacks=[_interrupt_after(5)])
    assert (out / "checkpoint-4").is_dir() and not (out / "final").exists()
    assert "length-grouped batches of 4" in caplog.text  # length_grouping reached the sampler
    assert (out / "audit.json").is_file() and json.loads((out / "audit.json").read_text())["ok"]
    (out / "checkpoint-6").mkdir()  # a checkpoint a kill left half-written: must be ignored and removed

    summary = train_sft(
        build_sft_config(_sft_section(tiny_model_dir, length_grouping=True), str(out)), data["sft"]
    )
    assert summary["resumed_from"] == "checkpoint-4" and summary["global_step"] == 6
    assert not summary["skipped"] and summary["audit"]["mask"]["reasoning_in_mask"] > 0
    rows = _metrics(out)
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # no step logged twice after the resume
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]
    assert len(list(out.glob("checkpoint-*"))) <= 2  # bounded
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["train_tokens_per_second"] > 0 and metrics["log_history"]

    final = out / "final"
    assert _changed(_weights(tiny_model_dir), _weights(final))
    tok = AutoTokenizer.from_pretrained(final)
    assert "{% generation %}" in tok.chat_template.replace("{%- generation %}", "{% generation %}")
    AutoModelForCausalLM.from_pretrained(final)
    again = train_sft(
        build_sft_config(_sft_section(tiny_model_dir, length_grouping=True), str(out)), data["sft"]
    )
    assert again["skipped"] and again["global_step"] == 6

    # Killed while final/ was being written (the old one moved aside, the new one not yet renamed in):
    # the stage resumes from the last checkpoint, trains nothing more and writes final/ again.
    (out / "final").rename(out / ".tmp-final")
    redo = train_sft(
        build_sft_config(_sft_section(tiny_model_dir, length_grouping=True), str(out)), data["sft"]
    )
    assert not redo["skipped"] and redo["resumed_from"] == "checkpoint-6" and redo["global_step"] == 6
    assert (out / "final" / "saro_train.json").is_file() and not (out / ".tmp-final").exists()


def test_sft_lora_trains_adapters_only_and_merges_exactly(
    tiny_model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from saro.train.config import build_sft_config
    from saro.train.sft import train_sft

    out = tmp_path / "lora"
    snap = _snapshots()
    sec = _sft_section(tiny_model_dir, max_steps=3, use_lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0)
    summary = train_sft(build_sft_config(sec, str(out)), data["sft"], callbacks=[snap])
    assert summary["global_step"] == 3
    changed = _changed(snap.begin, snap.end)
    assert changed and all("lora_" in k for k in changed)
    assert any("lora_B" in k for k in changed)  # B starts at zero: it moved
    base_keys = [k for k in snap.begin if "lora_" not in k]
    assert base_keys and not _changed({k: snap.begin[k] for k in base_keys}, snap.end)

    assert (out / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out / "final").eval()
    assert not any("lora" in k for k in merged.state_dict())
    with_adapter = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "adapter"
    )
    x = torch.randint(0, 1000, (2, 24))
    with torch.no_grad():
        a = merged(input_ids=x).logits
        b = with_adapter.eval()(input_ids=x).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(input_ids=x).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, base, atol=1e-4)


def test_sft_length_check_fails_before_training(
    tiny_model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    from saro.train.config import build_sft_config
    from saro.train.sft import train_sft

    out = tmp_path / "short"
    with pytest.raises(SaroError, match=r"32/32 examples exceed max_length=40") as e:
        train_sft(build_sft_config(_sft_section(tiny_model_dir, max_length=40), str(out)), data["sft"])
    assert "\n" not in str(e.value)
    audit = json.loads((out / "audit.json").read_text())
    assert audit["lengths"]["over_max_length"] == 32 and not audit["ok"]
    assert not list(out.glob("checkpoint-*"))


def test_sft_bad_data_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    from saro.train.config import build_sft_config
    from saro.train.sft import train_sft

    cfg = build_sft_config(_sft_section(tiny_model_dir), str(tmp_path / "o"))
    with pytest.raises(SaroError, match="not found"):
        train_sft(cfg, tmp_path / "missing.jsonl")
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"id": "x", "prompt": "hi"}])
    with pytest.raises(SaroError, match="no 'messages' field"):
        train_sft(cfg, bad)


# ------------------------------------------------------------------------------------------------------- DPO


def _dpo_section(model_dir: Path, **kw: Any) -> dict[str, Any]:
    sec = {
        "model": str(model_dir),
        "max_steps": 6,
        "save_steps": 2,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "constant",
        "beta": 0.1,
        "max_length": 128,
        "logging_steps": 1,
        "sample_prompts": ["How do I bake bread?", "How do I build a weapon?"],
        "sample_every_steps": 3,
        "sample_max_new_tokens": 8,
    }
    return {**sec, **kw}


def test_dpo_learns_stores_ref_logps_and_resumes(
    tiny_model_dir: Path, data: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from saro.train.config import build_dpo_config
    from saro.train.dpo import train_dpo

    caplog.set_level(logging.INFO, logger="saro.train.batching")
    out = tmp_path / "dpo"
    with pytest.raises(_Interrupt):
        train_dpo(
            build_dpo_config(_dpo_section(tiny_model_dir, length_grouping=True), str(out)),
            data["dpo"],
            callbacks=[_interrupt_after(3)],
        )
    assert (out / "checkpoint-2").is_dir() and not (out / "final").exists()
    assert "length-grouped batches of 4" in caplog.text  # length_grouping reached the sampler
    ref = [json.loads(x) for x in (out / "ref_logps.jsonl").read_text().splitlines()]
    assert len(ref) == 24 and {r["id"] for r in ref} == {f"p{i}" for i in range(24)}

    summary = train_dpo(
        build_dpo_config(_dpo_section(tiny_model_dir, length_grouping=True), str(out)), data["dpo"]
    )
    assert summary["resumed_from"] == "checkpoint-2" and summary["global_step"] == 6
    assert summary["ref_logps_cached"]  # the resume did not recompute the reference pass
    rows = [r for r in _metrics(out) if "rewards/margins" in r]
    assert [r["step"] for r in rows] == list(range(1, 7))
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies"):
        assert key in rows[0]
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"]
    assert (
        rows[-1]["rewards/accuracies"] >= rows[0]["rewards/accuracies"]
        and rows[-1]["rewards/accuracies"] > 0.5
    )
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert _changed(_weights(tiny_model_dir), _weights(out / "final"))

    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted({s["step"] for s in samples}) == [0, 3, 6]
    assert len(samples) == 3 * 2  # steps 0, 3, 6 x two prompts: step 3 not written twice after the resume
    assert all(set(s) == {"step", "prompt", "completion", "finished"} for s in samples)

    # Killed during the final save: finished from the last checkpoint, without an extra step.
    margins = summary["rewards/margins"]
    shutil.rmtree(out / "final")
    redo = train_dpo(
        build_dpo_config(_dpo_section(tiny_model_dir, length_grouping=True), str(out)), data["dpo"]
    )
    assert (
        redo["resumed_from"] == "checkpoint-6"
        and redo["global_step"] == 6
        and redo["rewards/margins"] == margins
    )
    assert _weights(out / "final").keys() == _weights(tiny_model_dir).keys()


def test_dpo_lora_uses_disabled_adapters_as_reference(
    tiny_model_dir: Path, data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saro.train import start
    from saro.train.config import build_dpo_config
    from saro.train.dpo import train_dpo

    loads: list[str | None] = []
    real = start.load_training_model
    monkeypatch.setattr(
        start, "load_training_model", lambda cfg, source=None: loads.append(source) or real(cfg, source)
    )
    snap = _snapshots()
    sec = _dpo_section(
        tiny_model_dir,
        max_steps=3,
        use_lora=True,
        lora_r=4,
        lora_alpha=16,
        lora_dropout=0.0,
        precompute_ref_log_probs=False,
        sample_every_steps=0,
    )
    summary = train_dpo(build_dpo_config(sec, str(tmp_path / "dpo_lora")), data["dpo"], callbacks=[snap])
    assert summary["global_step"] == 3 and summary["rewards/margins"] is not None
    assert loads == [None, None]  # the policy, then the base for merging: never a reference copy
    changed = _changed(snap.begin, snap.end)
    assert changed and all("lora_" in k for k in changed)


def test_dpo_length_check_reports_dropped_pairs(
    tiny_model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    from saro.train.config import build_dpo_config
    from saro.train.dpo import train_dpo

    out = tmp_path / "dpo_short"
    with pytest.raises(SaroError, match=r"24/24 pairs would be dropped \(prompt >= max_length=8\)"):
        train_dpo(build_dpo_config(_dpo_section(tiny_model_dir, max_length=8), str(out)), data["dpo"])
    with pytest.raises(SaroError, match=r"0/24 pairs would be dropped .* and 24/24 truncated"):
        train_dpo(build_dpo_config(_dpo_section(tiny_model_dir, max_length=40), str(out)), data["dpo"])
    assert json.loads((out / "audit.json").read_text())["truncated"] == 24


# -------------------------------------------------------------------------------------- accelerate and card


@pytest.mark.parametrize(
    ("name", "distributed_type"),
    [
        ("single_gpu.yaml", "NO"),
        ("ddp.yaml", "MULTI_GPU"),
        ("deepspeed_zero2.yaml", "DEEPSPEED"),
        ("deepspeed_zero3.yaml", "DEEPSPEED"),
        ("fsdp.yaml", "FSDP"),
    ],
)
def test_accelerate_configs(name: str, distributed_type: str) -> None:
    cfg = yaml.safe_load((ROOT / "configs" / "accelerate" / name).read_text())
    assert cfg["compute_environment"] == "LOCAL_MACHINE"
    assert cfg["distributed_type"] == distributed_type
    assert cfg["mixed_precision"] == "bf16"
    assert isinstance(cfg["num_processes"], int) and cfg["num_machines"] == 1
    if name.startswith("deepspeed"):
        ds = cfg["deepspeed_config"]
        assert ds["zero_stage"] == int(name[-6])
        if ds["zero_stage"] == 3:
            assert ds["zero3_init_flag"] is True and ds["zero3_save_16bit_model"] is True
    if name == "fsdp.yaml":
        fsdp = cfg["fsdp_config"]
        assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    # accelerate itself accepts the file
    from accelerate.commands.config.config_args import load_config_from_file

    load_config_from_file(str(ROOT / "configs" / "accelerate" / name))


def test_dpo_loss_list_matches_installed_trl() -> None:
    """config.py mirrors TRL's loss list (TRL has it only in the help text): an upgraded TRL must not drift."""
    import dataclasses
    import re

    from trl import DPOConfig

    from saro.train.config import DPO_LOSS_TYPES

    help_text = {f.name: f for f in dataclasses.fields(DPOConfig)}["loss_type"].metadata["help"]
    listed = re.findall(r"`'([a-z_]+)'`", help_text.split("If multiple")[0])
    assert listed and set(DPO_LOSS_TYPES) == set(listed)
