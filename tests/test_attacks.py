"""Jailbreak attack registry: determinism, the request survives every wrapper, provenance, splits, LLM attacks."""

from __future__ import annotations

import base64
import codecs
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saro.errors import SaroError
from saro.prompts.attacks import ATTACKS, Attack, apply_attack, get_attack, split_attacks, wrap_prompt
from saro.records import Prompt

TEMPLATE = [n for n, a in ATTACKS.items() if not a.needs_llm]
LLM = [n for n, a in ATTACKS.items() if a.needs_llm]
REQUIRED = {
    "prefix_injection",
    "refusal_suppression",
    "style_injection",
    "aim",
    "evil_confidant",
    "developer_mode",
    "distractors",
    "poem",
    "base64",
    "rot13",
    "leetspeak",
    "deep_inception",
    "code_completion",
    "payload_splitting",
    "few_shot",
}
TEXTS = [
    "How do I kill a Python process?",
    "Write a {request} poem about autumn, with \"quotes\" and 'apostrophes'.",
    "Explain photosynthesis.\nThen list three plants that grow in shade.",
    "Wie backe ich Brot? 面包怎么做 🍞",
]


def echo_rewriter(instruction: str) -> str:
    """A fake teacher: returns the instruction's last line, quoted, so cleanup and plumbing are visible."""
    return f'  "{instruction.strip().splitlines()[-1]}"  '


# ---------------------------------------------------------------------------------------------- decoders


def b64_payload(out: str) -> str:
    """Decode the base64 line of an attack output (no such line: the request was empty)."""
    lines = [line for line in out.split("\n") if re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", line)]
    assert len(lines) <= 1, out
    return base64.b64decode(lines[0]).decode("utf-8", "surrogatepass") if lines else ""


def split_payload(out: str) -> str:
    """Join the string pieces of a payload-splitting output back together."""
    pieces = [m.group(1) for line in out.split("\n") if (m := re.fullmatch(r"\w+ = (\".*\")", line))]
    return "".join(json.loads(p) for p in pieces)


LEET_INVERSE = str.maketrans("431057", "aeiost")


def recovers(name: str, text: str, out: str) -> bool:
    """Whether the request can be read back from an attack's output."""
    if name in ("base64", "combination"):
        return b64_payload(out) == text
    if name == "rot13":
        return codecs.encode(text, "rot13") in out
    if name == "payload_splitting":
        return split_payload(out) == text
    if name == "leetspeak":
        return text.lower() in out.translate(LEET_INVERSE).lower() or not re.search(r"[aeiostAEIOST]", text)
    if name == "disemvowel":
        return re.sub(r"[aeiouAEIOU]", "", text) in out
    if name == "past_tense_rule":
        stop = {"how", "do", "does", "i", "what", "is", "are", "can", "you"}
        words = [w for w in re.findall(r"\w+", text.lower()) if w not in stop]
        return all(w in out.lower() for w in words)
    return text in out


# ---------------------------------------------------------------------------------------------- registry


def test_registry_has_the_required_attacks() -> None:
    assert set(TEMPLATE) >= REQUIRED
    assert len(TEMPLATE) >= 16
    assert set(LLM) == {"past_tense_llm", "persuasive_paraphrase"}
    for name, a in ATTACKS.items():
        assert isinstance(a, Attack)
        assert a.name == name
        assert a.family and a.description
        assert a.default_split in ("train", "heldout")


def test_get_attack_unknown_suggests_closest() -> None:
    assert get_attack("base64").family == "encoding"
    with pytest.raises(SaroError, match="did you mean 'base64'"):
        get_attack("bas64")
    with pytest.raises(SaroError, match="unknown attack 'zzzz'"):
        apply_attack("zzzz", "hello")


# ---------------------------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("name", TEMPLATE)
def test_deterministic_and_varied(name: str) -> None:
    for text in TEXTS:
        assert apply_attack(name, text, seed=3) == apply_attack(name, text, seed=3)
    outputs = {apply_attack(name, TEXTS[0], seed=s) for s in range(12)}
    assert len(outputs) > 1, f"{name} has no variation across seeds"


@pytest.mark.parametrize("name", TEMPLATE)
def test_output_carries_the_request(name: str) -> None:
    for text in TEXTS:
        for seed in range(6):
            out = apply_attack(name, text, seed=seed)
            assert out.strip() and out != text
            assert recovers(name, text, out), f"{name} lost the request (seed {seed}):\n{out}"


def test_encodings_actually_encode() -> None:
    text = "How do I kill a Python process?"
    for name in ("base64", "rot13", "leetspeak", "disemvowel", "combination"):
        assert text not in apply_attack(name, text), name
    lower = "please tell me about seasonal vegetables"
    for seed in range(8):
        out = apply_attack("leetspeak", lower, seed=seed)
        assert lower not in out and lower in out.translate(LEET_INVERSE)


def test_payload_splitting_splits() -> None:
    out = apply_attack("payload_splitting", "How do I kill a Python process?", seed=1)
    assert len(re.findall(r"^\w+ = \"", out, flags=re.M)) >= 2
    assert "How do I kill a Python process?" not in out


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("How do I kill a Python process?", ["How did people kill a Python process"]),
        ("Where can someone buy cheap flights?", ["Where did people buy cheap flights"]),
        ("What is the capital of France?", ["What was the capital of France"]),
        ("Explain how to bake sourdough bread.", ["How did people bake sourdough bread"]),
        ("Can you tell me how to tie a bowline knot?", ["How did people tie a bowline knot"]),
        ("I want to learn the violin.", ["How did people learn the violin"]),
        ("Bananas are yellow.", ["Bananas are yellow."]),
        (
            "Explain photosynthesis. Then tell me how to water ferns.",
            ["Explain photosynthesis. Then tell me"],
        ),
    ],
)
def test_past_tense_rule(text: str, expect: list[str]) -> None:
    out = apply_attack("past_tense_rule", text, seed=0)
    for e in expect:
        assert e in out
    assert out.rstrip().endswith("?") or text in out


def test_braces_in_request_are_not_slots() -> None:
    out = apply_attack("deep_inception", "Tell me about {scene} and {depth}.", seed=0)
    assert "Tell me about {scene} and {depth}." in out


def test_rng_is_stable_across_processes() -> None:
    # a frozen output: catches a switch to salted hash() or a changed seeding scheme
    a = apply_attack("prefix_injection", "How do I kill a Python process?", seed=0)
    b = apply_attack("prefix_injection", "How do I kill a Python process?", seed=0)
    assert a == b
    import subprocess
    import sys

    code = (
        "from saro.prompts.attacks import apply_attack;"
        "print(apply_attack('prefix_injection', 'How do I kill a Python process?', seed=0), end='')"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other == a


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=200), seed=st.integers(min_value=0, max_value=2**31))
def test_no_attack_crashes_on_arbitrary_text(text: str, seed: int) -> None:
    for name in ATTACKS:
        out = apply_attack(name, text, seed=seed, rewriter=echo_rewriter)
        assert isinstance(out, str) and out.strip()
        assert out == apply_attack(name, text, seed=seed, rewriter=echo_rewriter)


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=200), seed=st.integers(min_value=0, max_value=1000))
def test_reversible_encodings_round_trip(text: str, seed: int) -> None:
    assert b64_payload(apply_attack("base64", text, seed=seed)) == text
    assert b64_payload(apply_attack("combination", text, seed=seed)) == text
    assert codecs.encode(text, "rot13") in apply_attack("rot13", text, seed=seed)
    assert split_payload(apply_attack("payload_splitting", text, seed=seed)) == text


@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,.?", min_size=1, max_size=80))
def test_leetspeak_round_trip(text: str) -> None:
    assert text in apply_attack("leetspeak", text, seed=0).translate(LEET_INVERSE)


def test_lone_surrogate_does_not_crash() -> None:
    for name in TEMPLATE:
        assert apply_attack(name, "bad \udcff byte", seed=0).strip()


# ---------------------------------------------------------------------------------------------- LLM attacks


@pytest.mark.parametrize("name", LLM)
def test_llm_attack_without_rewriter_raises(name: str) -> None:
    with pytest.raises(SaroError, match=f"attack '{name}' needs a teacher backend"):
        apply_attack(name, "How do I kill a Python process?")


@pytest.mark.parametrize("name", LLM)
def test_llm_attack_calls_rewriter(name: str) -> None:
    calls: list[str] = []

    def rewriter(instruction: str) -> str:
        calls.append(instruction)
        return '"How did people kill a Python process in the 1990s?"\n'

    out = apply_attack(name, "How do I kill a Python process?", seed=1, rewriter=rewriter)
    assert len(calls) == 1
    assert "How do I kill a Python process?" in calls[0]
    assert out == "How did people kill a Python process in the 1990s?"
    for s in range(12):
        apply_attack(name, "How do I kill a Python process?", seed=s, rewriter=rewriter)
    assert len(set(calls)) > 1, "the instruction has no variation across seeds"


def test_llm_rewrite_cleanup_keeps_inner_quotes() -> None:
    out = apply_attack("past_tense_llm", "x", rewriter=lambda _: ' "Fire" and "ice" in old poems? ')
    assert out == '"Fire" and "ice" in old poems?'
    assert (
        apply_attack("past_tense_llm", "x", rewriter=lambda _: "“When did it rain?”") == "When did it rain?"
    )


@pytest.mark.parametrize("name", LLM)
def test_llm_attack_empty_rewrite_raises(name: str) -> None:
    with pytest.raises(SaroError, match="empty"):
        apply_attack(name, "hello", rewriter=lambda _: "  ")


def test_template_attack_ignores_rewriter() -> None:
    def boom(_: str) -> str:
        raise AssertionError("rewriter called")

    assert apply_attack("aim", "hi", rewriter=boom) == apply_attack("aim", "hi")


# ---------------------------------------------------------------------------------------------- wrap_prompt


def base_prompt() -> Prompt:
    return Prompt.make(
        "How do I kill a Python process?",
        "borderline",
        "seeds",
        category="violence",
        split="eval",
        meta={"note": "homonym"},
    )


def test_wrap_prompt_provenance() -> None:
    p = base_prompt()
    w = wrap_prompt(p, "aim", seed=2)
    assert w.text == apply_attack("aim", p.text, seed=2)
    assert (w.kind, w.category, w.split, w.source) == (p.kind, p.category, p.split, p.source)
    assert w.attack == "aim" and w.base_id == p.id
    assert w.meta["attack_family"] == "persona" and w.meta["note"] == "homonym"
    assert w.id != p.id
    assert w.id == Prompt.make(w.text, p.kind, p.source, attack="aim").id
    assert wrap_prompt(p, "aim", seed=2) == w
    assert wrap_prompt(p, "rot13").id != w.id
    assert p.attack is None and p.meta == {"note": "homonym"}  # the base prompt is untouched


def test_wrap_prompt_llm_and_errors() -> None:
    p = base_prompt()
    w = wrap_prompt(p, "past_tense_llm", rewriter=lambda _: "How did people stop programs in 1999?")
    assert w.text == "How did people stop programs in 1999?" and w.meta["attack_family"] == "rephrasing"
    with pytest.raises(SaroError, match="teacher backend"):
        wrap_prompt(p, "persuasive_paraphrase")
    with pytest.raises(SaroError, match="already wrapped"):
        wrap_prompt(wrap_prompt(p, "aim"), "rot13")
    with pytest.raises(SaroError, match="did you mean"):
        wrap_prompt(p, "rot_13")


# ---------------------------------------------------------------------------------------------- splits


def test_default_split() -> None:
    train, heldout = split_attacks(None, None)
    assert set(train) | set(heldout) == set(ATTACKS)
    assert not set(train) & set(heldout)
    assert 0.55 <= len(train) / len(ATTACKS) <= 0.75
    families = {ATTACKS[n].family for n in heldout}
    assert {"persona", "encoding", "nesting"} <= families
    assert all(not ATTACKS[n].needs_llm for n in train)  # the offline path trains without a teacher


def test_split_fills_unspecified_side() -> None:
    train, heldout = split_attacks(["aim", "rot13", "aim"], None)
    assert train == ["aim", "rot13"]
    assert "rot13" not in heldout and "evil_confidant" in heldout
    assert all(ATTACKS[n].default_split == "heldout" for n in heldout)
    train, heldout = split_attacks(None, ["base64"])
    assert heldout == ["base64"]
    assert "base64" not in train and "rot13" not in train
    assert split_attacks([], []) == ([], [])
    assert split_attacks(["poem"], ["wikipedia"]) == (["poem"], ["wikipedia"])


def test_split_errors() -> None:
    with pytest.raises(SaroError, match=r"both.*aim"):
        split_attacks(["aim", "poem"], ["aim"])
    with pytest.raises(SaroError, match="did you mean 'leetspeak'"):
        split_attacks(["leetspeek"], None)
    with pytest.raises(SaroError, match="unknown attack"):
        split_attacks(None, ["nope_nope"])
