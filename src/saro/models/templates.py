"""Training chat templates that keep ``<think>`` reasoning in the target and train the end-of-turn token.

A training template is the model's OFFICIAL template plus ``{% generation %}`` markers, so that a trained model and
its base model see the same text: ``qwen2_5`` and ``llama3_1`` are TRL's ``qwen2_5_training.jinja`` and the
Llama-3.1 template with markers (shipped in ``assets/templates/``, golden-tested against ``trl/chat_templates``);
``llama3`` (Llama-3.0) is TRL's ``llama3_training.jinja``; ``chatml`` (SmolLM2, with the model's own default
system prompt) is written here and renders as the official one. ``chatml``/``llama3`` become
``qwen2_5``/``llama3_1`` when the tokenizer's own template is Qwen2.5's or Llama-3.1's. Llama-3.1's "Today Date" is the template's ``date_string`` variable; saro
never passes one, so the template's own default (26 Jul 2024) makes every render deterministic.

All templates wrap each assistant turn, end-of-turn token included, in ``{% generation %}`` markers, so TRL's
``assistant_only_loss`` puts exactly the assistant text (reasoning + answer + end-of-turn) in the loss. They never
strip ``<think>`` (as some reasoning-model templates do), and they are prefix-preserving (the prompt rendered with
``add_generation_prompt=True`` is a prefix of the prompt + answer), which TRL's DPO needs.

The audit tokenises real examples and checks what falls inside the loss mask, before any training runs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from saro.errors import SaroError
from saro.reasoning import parse

log = logging.getLogger(__name__)

TEMPLATES = ("chatml", "llama3", "llama3_1", "qwen2_5")
FILE_TEMPLATES = {"llama3_1": "llama3_1_training.jinja", "qwen2_5": "qwen2_5_training.jinja"}
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
LLAMA31_MARK = "Cutting Knowledge Date"


def _q(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")


def chatml_template(default_system: str | None = None) -> str:
    """ChatML (SmolLM2, Qwen2/2.5) with generation markers; ``default_system`` is used when no system turn is given."""
    sys_block = ""
    if default_system:
        sys_block = (
            "{%- if messages[0]['role'] != 'system' %}"
            f"{{{{- '<|im_start|>system\\n{_q(default_system)}<|im_end|>\\n' }}}}"
            "{%- endif %}"
        )
    return (
        sys_block + "{%- for message in messages %}"
        "{%- if message['role'] == 'assistant' %}"
        "{{- '<|im_start|>assistant\\n' }}"
        "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
        "{{- '\\n' }}"
        "{%- else %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endif %}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )


def llama3_template(default_system: str | None = None) -> str:
    """Llama-3 / 3.1 header format with generation markers (``<|eot_id|>`` is the trained end-of-turn token)."""
    sys_block = ""
    if default_system:
        sys_block = (
            "{%- if messages[0]['role'] != 'system' %}"
            f"{{{{- '<|start_header_id|>system<|end_header_id|>\\n\\n{_q(default_system)}<|eot_id|>' }}}}"
            "{%- endif %}"
        )
    return (
        "{{- bos_token }}" + sys_block + "{%- for message in messages %}"
        "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
        "{%- if message['role'] == 'assistant' %}"
        "{%- generation %}{{- message['content'] + '<|eot_id|>' }}{%- endgeneration %}"
        "{%- else %}"
        "{{- message['content'] + '<|eot_id|>' }}"
        "{%- endif %}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
    )


END_OF_TURN = {
    "chatml": "<|im_end|>",
    "llama3": "<|eot_id|>",
    "llama3_1": "<|eot_id|>",
    "qwen2_5": "<|im_end|>",
}


def file_template(name: str) -> str:
    """The text of a shipped training template (``assets/templates/*_training.jinja``)."""
    from saro.paths import package_asset

    fname = "llama3_training.jinja" if name == "llama3_0" else FILE_TEMPLATES[name]
    return package_asset("templates", fname).read_text(encoding="utf-8")


def official_variant(tokenizer: Any, name: str) -> str:
    """``chatml`` -> ``qwen2_5`` and ``llama3`` -> ``llama3_1`` when the tokenizer's own template is that model's
    (its default system prompt / date header), so training keeps the official rendering."""
    tpl = getattr(tokenizer, "chat_template", None) or ""
    if not isinstance(tpl, str):
        return name
    if name == "chatml" and QWEN_SYSTEM in tpl:
        return "qwen2_5"
    if name == "llama3" and LLAMA31_MARK in tpl:
        return "llama3_1"
    return name


def detect_template(tokenizer: Any) -> str:
    """Which of our templates fits this tokenizer (its own template first, then its special tokens)."""
    for base in ("chatml", "llama3"):
        if official_variant(tokenizer, base) != base:
            return official_variant(tokenizer, base)
    vocab = tokenizer.get_vocab()
    if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
        return "chatml"
    if "<|start_header_id|>" in vocab and "<|eot_id|>" in vocab:
        return "llama3"
    raise SaroError(
        f"cannot pick a training chat template for tokenizer {type(tokenizer).__name__}: it has neither ChatML "
        f"(<|im_start|>) nor Llama-3 (<|start_header_id|>) tokens; set `template:` in the recipe"
    )


def native_default_system(tokenizer: Any) -> str | None:
    """The default system prompt baked into a tokenizer's own ChatML template, if any (e.g. SmolLM2's), or into
    one of our training templates (so a model trained by saro keeps its system prompt when trained again)."""
    tpl = getattr(tokenizer, "chat_template", None) or ""
    m = re.search(r"!= 'system' %\}\{\{ '<\|im_start\|>system\n(.*?)<\|im_end\|>", tpl, re.S)
    if m:
        return m.group(1)
    ours = (
        r"!= 'system' %\}\{\{- '<\|im_start\|>system\\n((?:[^'\\]|\\.)*?)<\|im_end\|>\\n' \}\}",
        r"!= 'system' %\}\{\{- '<\|start_header_id\|>system<\|end_header_id\|>\\n\\n((?:[^'\\]|\\.)*?)<\|eot_id\|>' \}\}",
    )
    for pat in ours:
        m = re.search(pat, tpl, re.S)
        if m:
            return _unq(m.group(1))
    return None


def _unq(s: str) -> str:
    """Inverse of ``_q``: the text of a single-quoted Jinja string literal."""
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), s)


def install_template(tokenizer: Any, name: str = "auto", default_system: str | None = "native") -> str:
    """Set a training template on ``tokenizer`` (in place) and return its name.

    ``default_system="native"`` keeps the default system prompt of the model's own template (so a fine-tuned model
    sees the same context as the base model did); None drops it.
    """
    if name == "native":
        tpl = getattr(tokenizer, "chat_template", None) or ""
        if "{% generation %}" not in tpl.replace("{%- generation %}", "{% generation %}"):
            raise SaroError(
                "template 'native': the tokenizer's own chat template has no {% generation %} markers"
            )
        return "native"
    if name == "auto":
        name = detect_template(tokenizer)
    if name not in TEMPLATES:
        raise SaroError(
            f"unknown chat template '{name}' (choose one of: auto, native, {', '.join(TEMPLATES)})"
        )
    name = official_variant(tokenizer, name)
    if name in FILE_TEMPLATES:
        if default_system != "native":
            raise SaroError(
                f"template '{name}' keeps the official default system prompt; set default_system: native "
                f"(or put a system turn in the data)"
            )
        tokenizer.chat_template = file_template(name)
        return name
    system = native_default_system(tokenizer) if default_system == "native" else default_system
    if name == "llama3" and system is None:  # Llama-3.0 has no default system prompt: TRL's template as is
        tokenizer.chat_template = file_template("llama3_0")
    else:
        tokenizer.chat_template = chatml_template(system) if name == "chatml" else llama3_template(system)
    return name


def template_label(tokenizer: Any) -> str:
    """Which chat template a model is evaluated with, for the eval metrics (``template`` per model): the family
    (``qwen2_5``, ``llama3_1``, ``llama3``, ``chatml``, else ``native``) and ``+markers`` for a training template.
    A base model and the model trained from it get the same family when the rendering is the same."""
    tpl = getattr(tokenizer, "chat_template", None)
    if not isinstance(tpl, str) or not tpl:
        return "none"
    marked = "{% generation %}" in re.sub(r"\{%-?\s*generation\s*-?%\}", "{% generation %}", tpl)
    if QWEN_SYSTEM in tpl:
        family = "qwen2_5"
    elif LLAMA31_MARK in tpl:
        family = "llama3_1"
    elif "<|start_header_id|>" in tpl and "<|eot_id|>" in tpl:
        family = "llama3"
    elif "<|im_start|>" in tpl and "<|im_end|>" in tpl:
        family = "chatml"
    else:
        family = "native"
    return family + ("+markers" if marked else "")


def end_of_turn_token(tokenizer: Any, name: str) -> str:
    return END_OF_TURN.get(name, tokenizer.eos_token)


# ------------------------------------------------------------------------------------------------------ audit


@dataclass
class MaskAudit:
    """What the loss mask covers on a sample of examples."""

    n: int = 0
    reasoning_in_mask: int = 0
    answer_in_mask: int = 0
    eot_in_mask: int = 0
    prompt_leak: int = 0
    with_reasoning: int = 0
    truncated: int = 0
    max_length: int | None = None
    lengths: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        return {
            "examples": self.n,
            "with_reasoning": self.with_reasoning,
            "reasoning_in_mask": self.reasoning_in_mask,
            "answer_in_mask": self.answer_in_mask,
            "end_of_turn_in_mask": self.eot_in_mask,
            "prompt_tokens_in_mask": self.prompt_leak,
            "truncated": self.truncated,
            "max_length": self.max_length,
            "max_tokens": max(self.lengths) if self.lengths else 0,
            "mean_tokens": round(sum(self.lengths) / len(self.lengths), 1) if self.lengths else 0,
            "ok": self.ok,
            "problems": self.problems,
        }


def audit_mask(
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    eot: str,
    max_length: int | None = None,
    max_truncated_share: float = 0.0,
) -> MaskAudit:
    """Tokenise conversations with the tokenizer's template and check the assistant (loss) mask.

    For the last assistant turn of each conversation the reasoning, the answer and the end-of-turn token must all
    be inside the mask and no user text may be; more than ``max_truncated_share`` of examples over ``max_length``
    is a problem too.
    """
    a = MaskAudit(max_length=max_length)
    eot_id = tokenizer.convert_tokens_to_ids(eot)
    for conv in conversations:
        a.n += 1
        enc = tokenizer.apply_chat_template(
            conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = list(enc["input_ids"])
        mask = list(enc.get("assistant_masks") or [0] * len(ids))
        a.lengths.append(len(ids))
        if max_length is not None and len(ids) > max_length:
            a.truncated += 1
        target = tokenizer.decode(
            [t for t, m in zip(ids, mask, strict=False) if m], skip_special_tokens=False
        )
        last = next(m["content"] for m in reversed(conv) if m["role"] == "assistant")
        p = parse(last)
        if p.has_reasoning:
            a.with_reasoning += 1
            if "<think>" in last and "<think>" in target and _squash(p.reasoning or "") in _squash(target):
                a.reasoning_in_mask += 1
        if _squash(p.answer) in _squash(target):
            a.answer_in_mask += 1
        if any(t == eot_id and m for t, m in zip(ids, mask, strict=False)):
            a.eot_in_mask += 1
        users = [m["content"] for m in conv if m["role"] in ("user", "system") and len(m["content"]) > 12]
        if any(_squash(u) in _squash(target) for u in users):
            a.prompt_leak += 1
    if a.n == 0:
        a.problems.append("no examples to audit")
        return a
    if a.reasoning_in_mask < a.with_reasoning:
        a.problems.append(
            f"reasoning outside the loss mask in {a.with_reasoning - a.reasoning_in_mask}/{a.with_reasoning} "
            "examples (the template strips or masks <think>)"
        )
    if a.answer_in_mask < a.n:
        a.problems.append(f"answer outside the loss mask in {a.n - a.answer_in_mask}/{a.n} examples")
    if a.eot_in_mask < a.n:
        a.problems.append(
            f"end-of-turn token {eot} outside the loss mask in {a.n - a.eot_in_mask}/{a.n} examples "
            "(the model would never learn to stop)"
        )
    if a.prompt_leak:
        a.problems.append(f"prompt text inside the loss mask in {a.prompt_leak}/{a.n} examples")
    if max_length is not None and a.truncated / a.n > max_truncated_share:
        a.problems.append(
            f"{a.truncated}/{a.n} examples exceed max_length={max_length} tokens (allowed share "
            f"{max_truncated_share:.0%}); raise max_length or shorten the data"
        )
    return a


def _squash(s: str) -> str:
    return re.sub(r"\s+", "", s)
