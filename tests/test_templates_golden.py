"""Golden renderings: saro's training templates, generation markers aside, render byte for byte what the official
templates render (``trl/chat_templates/*.jinja`` for Qwen2.5, Llama-3 and Llama-3.1; SmolLM2's own template from the
embedded tokenizer), default system prompts and the Llama-3.1 date header included; reasoning stays in the trained
turn and inside the loss mask."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trl

from saro.models.templates import END_OF_TURN, audit_mask, install_template

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
SYSTEM = {"role": "system", "content": "You follow the safety policy."}
USER = {"role": "user", "content": "  How do I bake bread?  "}
REASONED = {
    "role": "assistant",
    "content": "<think>\nThe policy allows this.\n</think>\n\nMix flour and water.",
}
PLAIN = {"role": "assistant", "content": "Sure."}
USER2 = {"role": "user", "content": "And then?"}

CONVERSATIONS = {
    "no_system": [USER, REASONED],
    "system": [SYSTEM, USER, REASONED],
    "plain_answer": [USER, PLAIN],
    "multi_turn": [SYSTEM, USER, PLAIN, USER2, REASONED],
    "multi_turn_no_system": [USER, REASONED, USER2, PLAIN],
}
PROMPTS = {"prompt_no_system": [USER], "prompt_system": [SYSTEM, USER], "prompt_multi": [USER, PLAIN, USER2]}


def _smol() -> Any:
    from transformers import AutoTokenizer

    from saro.models.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


def _llama() -> Any:
    tok = _smol()
    tok.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIALS})
    tok.bos_token = "<|begin_of_text|>"
    return tok


def _official(name: str) -> str:
    return (TRL_TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")


def _cases() -> list[tuple[str, list[dict[str, str]], bool]]:
    return [(k, c, False) for k, c in CONVERSATIONS.items()] + [(k, c, True) for k, c in PROMPTS.items()]


def _assert_golden(tok: Any, official: str, training: str, **kw: Any) -> None:
    assert "{% generation %}" in training.replace("{%- generation %}", "{% generation %}")
    unmarked = re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", training)
    for name, conv, gen_prompt in _cases():
        want = tok.apply_chat_template(
            conv, chat_template=official, tokenize=False, add_generation_prompt=gen_prompt, **kw
        )
        got = tok.apply_chat_template(
            conv, chat_template=training, tokenize=False, add_generation_prompt=gen_prompt, **kw
        )
        plain = tok.apply_chat_template(
            conv, chat_template=unmarked, tokenize=False, add_generation_prompt=gen_prompt, **kw
        )
        assert got == want, name
        assert plain == want, name
        if not gen_prompt:  # prefix-preserving: the prompt is a prefix of prompt + answer (DPO needs it)
            prompt = tok.apply_chat_template(
                conv[:-1], chat_template=training, tokenize=False, add_generation_prompt=True, **kw
            )
            assert got.startswith(prompt), name
            if conv[-1] is REASONED:  # the trained turn keeps its reasoning (no template strips it)
                assert REASONED["content"] in got, name


def test_qwen2_5_training_template_is_the_official_one() -> None:
    tok = _smol()
    tok.chat_template = _official("qwen2_5")
    assert install_template(tok, "chatml") == "qwen2_5"  # the recipe's `chatml` keeps Qwen's rendering
    _assert_golden(tok, _official("qwen2_5"), tok.chat_template)
    out = tok.apply_chat_template([USER, REASONED], tokenize=False)
    assert out.startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    )
    assert install_template(tok, "auto") == "qwen2_5"  # idempotent on a trained model's saved template


@pytest.mark.parametrize("date", [None, "01 Dec 2026"])
def test_llama3_1_training_template_is_the_official_one(date: str | None) -> None:
    tok = _llama()
    tok.chat_template = _official("llama3_1")
    assert install_template(tok, "llama3") == "llama3_1"
    kw = {} if date is None else {"date_string": date}
    _assert_golden(tok, _official("llama3_1"), tok.chat_template, **kw)
    out = tok.apply_chat_template([USER, REASONED], tokenize=False, **kw)
    header = f"Cutting Knowledge Date: December 2023\nToday Date: {date or '26 Jul 2024'}\n\n"
    assert out.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + header)
    assert out.count("<|begin_of_text|>") == 1
    assert install_template(tok, "auto") == "llama3_1"


def test_llama3_training_template_is_the_official_one() -> None:
    tok = _llama()
    tok.chat_template = _official("llama3")
    assert install_template(tok, "llama3") == "llama3"
    _assert_golden(tok, _official("llama3"), tok.chat_template)


def test_smollm2_training_template_is_the_official_one() -> None:
    tok = _smol()
    official = tok.chat_template
    assert "SmolLM" in official
    assert install_template(tok, "auto") == "chatml"
    _assert_golden(tok, official, tok.chat_template)


def test_a_drifted_template_fails_the_golden_check() -> None:
    """The check itself can fail: ChatML with the SmolLM2 system prompt is not Qwen's rendering."""
    tok = _smol()
    install_template(tok, "chatml")
    with pytest.raises(AssertionError):
        _assert_golden(tok, _official("qwen2_5"), tok.chat_template)


@pytest.mark.parametrize(
    "official,name", [("qwen2_5", "chatml"), ("llama3_1", "llama3"), ("llama3", "llama3")]
)
def test_reasoning_of_the_trained_turn_is_in_the_loss_mask(official: str, name: str) -> None:
    tok = _llama() if official.startswith("llama") else _smol()
    tok.chat_template = _official(official)
    used = install_template(tok, name)
    convs = [CONVERSATIONS["no_system"], CONVERSATIONS["system"], CONVERSATIONS["multi_turn"]]
    audit = audit_mask(tok, convs, END_OF_TURN[used])
    assert audit.ok, audit.problems
    assert audit.reasoning_in_mask == audit.with_reasoning == 3


def test_custom_default_system_is_refused_for_an_official_template() -> None:
    from saro.errors import SaroError

    tok = _smol()
    tok.chat_template = _official("qwen2_5")
    with pytest.raises(SaroError, match="default_system: native"):
        install_template(tok, "chatml", default_system="Be brief.")


def test_template_label_is_the_same_for_base_and_trained() -> None:
    from saro.models.templates import template_label

    for official, name, tok in (("qwen2_5", "chatml", _smol()), ("llama3_1", "llama3", _llama())):
        tok.chat_template = _official(official)
        assert template_label(tok) == official
        install_template(tok, name)
        assert template_label(tok) == official + "+markers"
    smol = _smol()
    assert template_label(smol) == "chatml"
    smol.chat_template = None
    assert template_label(smol) == "none"
