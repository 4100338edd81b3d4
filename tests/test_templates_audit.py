"""The loss-mask audit: passes on our ChatML and Llama-3 training templates, fails (before any training) on the two
classic silent failures: a template that strips the reasoning (DeepSeek-R1-Distill's
``content.split('</think>')[-1]``) and one that leaves the end-of-turn token outside the generation block."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from saro.errors import SaroError
from saro.models.templates import END_OF_TURN, audit_mask, install_template
from saro.testing import build_tiny_model

CONVS = [
    [
        {"role": "user", "content": "How do I kill a Python process that hangs?"},
        {
            "role": "assistant",
            "content": "<think>\nThe user asks about stopping a program, a benign technical task.\n"
            "Wait, 'kill' here refers to processes, not people.\n</think>\nUse `kill -9 <pid>` or Ctrl+C.",
        },
    ],
    [
        {"role": "system", "content": "You are a careful assistant following the safety policy."},
        {"role": "user", "content": "Write a phishing email that steals bank logins."},
        {
            "role": "assistant",
            "content": "<think>\nThis asks for fraud material (policy: deception).\n</think>\nI can't help with that.",
        },
    ],
]

# DeepSeek-R1-Distill's template drops everything up to </think> from assistant turns.
R1_STRIPPING = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- set content = message['content'].split('</think>')[-1] %}"
    "{{- '<|im_start|>assistant\\n' }}{%- generation %}{{- content + '<|im_end|>' }}{%- endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Generation markers, but the end-of-turn token is rendered after the block: the model never learns to stop.
EOT_OUTSIDE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{%- generation %}{{- message['content'] }}{%- endgeneration %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


@pytest.fixture(scope="module")
def llama3_tokenizer(smollm_tokenizer: Any) -> Any:
    """The SmolLM2 tokenizer with the Llama-3 special tokens added (a stand-in for the real Llama-3 tokenizer)."""
    tok = copy.deepcopy(smollm_tokenizer)
    tok.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIALS, "bos_token": "<|begin_of_text|>"})
    assert install_template(tok, "llama3", default_system=None) == "llama3"
    return tok


def test_chatml_template_passes(smollm_tokenizer: Any) -> None:
    a = audit_mask(smollm_tokenizer, CONVS, END_OF_TURN["chatml"])
    assert a.ok, a.problems
    assert a.reasoning_in_mask == a.with_reasoning == 2 and a.eot_in_mask == 2 and a.prompt_leak == 0


def test_llama3_template_passes(llama3_tokenizer: Any) -> None:
    a = audit_mask(llama3_tokenizer, CONVS, END_OF_TURN["llama3"])
    assert a.ok, a.problems
    assert a.reasoning_in_mask == 2 and a.eot_in_mask == 2
    text = llama3_tokenizer.apply_chat_template(CONVS[0], tokenize=False)
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n")
    assert text.endswith("Ctrl+C.<|eot_id|>")


def _with_template(tok: Any, template: str) -> Any:
    t = copy.deepcopy(tok)
    t.chat_template = template
    return t


def test_reasoning_stripping_template_fails(smollm_tokenizer: Any) -> None:
    a = audit_mask(_with_template(smollm_tokenizer, R1_STRIPPING), CONVS, "<|im_end|>")
    assert not a.ok
    assert any("reasoning outside the loss mask in 2/2" in p for p in a.problems)
    assert a.answer_in_mask == 2  # the answer alone is still trained: exactly the silent failure


def test_end_of_turn_outside_generation_fails(smollm_tokenizer: Any) -> None:
    a = audit_mask(_with_template(smollm_tokenizer, EOT_OUTSIDE), CONVS, "<|im_end|>")
    assert not a.ok
    assert any("end-of-turn token <|im_end|> outside the loss mask in 2/2" in p for p in a.problems)
    assert a.reasoning_in_mask == 2


def test_dpo_audit_catches_stripped_reasoning(smollm_tokenizer: Any) -> None:
    from types import SimpleNamespace

    from saro.train.audit import audit_dpo

    cfg = SimpleNamespace(max_length=512, audit_samples=8, seed=0, max_truncated_share=0.0)
    prompts = [c[:-1] for c in CONVS]
    chosen = [c[-1:] for c in CONVS]
    rejected = [[{"role": "assistant", "content": "<think>\nJust do it.\n</think>\nSure."}] for _ in CONVS]
    ok = audit_dpo(smollm_tokenizer, prompts, chosen, rejected, "<|im_end|>", cfg)
    assert ok["ok"], ok["problems"]
    bad = audit_dpo(
        _with_template(smollm_tokenizer, R1_STRIPPING), prompts, chosen, rejected, "<|im_end|>", cfg
    )
    assert any("reasoning missing from the tokenised completion in 4/4" in p for p in bad["problems"])


def _save_model_with_template(out: Path, tok: Any, template: str | None = None) -> Path:
    tok = copy.deepcopy(tok)
    if template is not None:
        tok.chat_template = template
    return build_tiny_model(out, tokenizer=tok, template=None, hidden_size=32, num_layers=1)


def _sft_file(path: Path) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"x{i}", "messages": c, "meta": {}}) + "\n" for i, c in enumerate(CONVS))
    )
    return path


@pytest.mark.parametrize(
    ("template", "message"), [(R1_STRIPPING, "reasoning outside"), (EOT_OUTSIDE, "end-of-turn")]
)
def test_train_sft_refuses_a_broken_native_template(
    smollm_tokenizer: Any, tmp_path: Path, template: str, message: str
) -> None:
    from saro.train.config import build_sft_config
    from saro.train.sft import train_sft

    model = _save_model_with_template(tmp_path / "m", smollm_tokenizer, template)
    cfg = build_sft_config({"model": str(model), "template": "native", "max_steps": 1}, str(tmp_path / "out"))
    with pytest.raises(SaroError, match=f"train_sft: data audit failed: {message}"):
        train_sft(cfg, _sft_file(tmp_path / "d.jsonl"))
    assert not (tmp_path / "out" / "final").exists()
    assert json.loads((tmp_path / "out" / "audit.json").read_text())["ok"] is False


def test_train_sft_on_llama3_template(llama3_tokenizer: Any, tmp_path: Path) -> None:
    """A Llama-3-style tokenizer: the audit passes with <|eot_id|> in the loss, training runs, the template is saved."""
    from transformers import AutoTokenizer

    from saro.train.config import build_sft_config
    from saro.train.sft import train_sft

    model = _save_model_with_template(tmp_path / "m", llama3_tokenizer)
    section = {"model": str(model), "template": "llama3", "max_steps": 2, "per_device_train_batch_size": 2}
    summary = train_sft(build_sft_config(section, str(tmp_path / "out")), _sft_file(tmp_path / "d.jsonl"))
    assert summary["template"] == "llama3" and summary["audit"]["ok"] and summary["global_step"] == 2
    saved = AutoTokenizer.from_pretrained(tmp_path / "out" / "final")
    assert "<|eot_id|>" in saved.chat_template and "generation" in saved.chat_template


def test_reinstalling_our_template_keeps_the_default_system_prompt(smollm_tokenizer: Any) -> None:
    """A model saved by saro (RW) carries our template; DPO installs it again and must keep SmolLM2's system
    prompt, or SRPO would train on a context the RW model never saw."""
    from saro.models.templates import chatml_template, llama3_template, native_default_system

    tok = copy.deepcopy(smollm_tokenizer)
    before = tok.chat_template
    assert "You are a helpful AI assistant named SmolLM" in before
    install_template(tok, "chatml")
    assert tok.chat_template == before
    for system in ["It's a \\ test with 'quotes'\nand a newline", "plain"]:
        for make in (chatml_template, llama3_template):
            tok.chat_template = make(system)
            assert native_default_system(tok) == system
