"""SRPO pair construction on hand-built trajectories: step stance, drift localisation, prefix sharing, early vs
late, mixing, de-duplication and length accounting."""

from __future__ import annotations

import random

import pytest

from saro.judges.step import find_drift, step_stance
from saro.policy import load_policy
from saro.reasoning import parse, render
from saro.recipe import SynthSRPOConfig
from saro.records import Prompt
from saro.synth.pairs import (
    early_late_pair,
    hygiene,
    length_check,
    make_pair,
    mix,
    pp_pair,
    shared_prefix_len,
)
from saro.synth.teacher import Correction, reflection_for

POLICY = load_policy()
HARM = Prompt.make("Explain how to make a pipe bomb", "harmful", "t", category="violence_weapons")
BORDER = Prompt.make("How do I kill a stuck Python process?", "borderline", "t", category="cyber")


@pytest.mark.parametrize(
    "step,stance",
    [
        ("This falls under [cyber]: my policy does not allow writing malware.", "refuse"),
        ("So I will decline and offer safety resources instead.", "refuse"),
        ("This looks like general information, it is harmless, so I can help.", "help"),
        ("The request is benign and educational.", "help"),
        ("Wait, I should not over-refuse just because the topic sounds dangerous.", "help"),
        ("Wait, the role-play framing does not change what is being asked.", "refuse"),
        ("The user wants to know about bread.", "neutral"),
    ],
)
def test_step_stance(step, stance):
    assert step_stance(step) == stance


def test_drift_harmful_found_at_first_helping_step():
    t = render(
        [
            "The user asks how to make a pipe bomb.",
            "It might be for a story, so it is harmless.",
            "I will help.",
        ],
        "Sure, first get a pipe...",
    )
    assert find_drift(parse(t), "harmful", "complied") == 1


def test_drift_benign_found_at_first_refusing_step():
    t = render(
        ["The user asks about killing a process.", "This sounds violent and dangerous.", "I will refuse."],
        "I can't help with that.",
    )
    assert find_drift(parse(t), "borderline", "refused") == 1


def test_drift_at_answer_when_reasoning_right_but_answer_wrong():
    t = render(
        [
            "The user asks for a bomb recipe.",
            "My policy does not allow weapons instructions.",
            "I will decline.",
        ],
        "Sure, here is how.",
    )
    assert find_drift(parse(t), "harmful", "complied") == 3


def test_no_drift_for_a_right_trajectory():
    t = render(
        ["The user asks for a bomb recipe.", "My policy does not allow this.", "I will decline."], "No."
    )
    assert find_drift(parse(t), "harmful", "refused") is None


def test_pp_pair_shares_exactly_the_prefix_up_to_the_drift_step():
    steps = [
        "The user asks how to make a pipe bomb.",
        "It might be harmless curiosity, so I can help.",
        "I will help.",
    ]
    d = find_drift(parse(render(steps, "Sure...")), "harmful", "complied")
    corr = Correction(
        reflection_for(HARM, POLICY, random.Random(0)), ["I will decline."], "I can't help with that."
    )
    chosen, rejected = pp_pair(steps[:d], steps[d:], "Sure...", corr)
    c, r = parse(chosen), parse(rejected)
    assert c.steps[:d] == r.steps[:d] == steps[:d]
    assert c.steps[d] != r.steps[d]
    assert c.steps[d].startswith("Wait") and "[violence_weapons]" in c.steps[d]
    assert r.steps[d:] == steps[d:] and r.answer == "Sure..."
    assert c.answer == "I can't help with that."
    # the shared text ends inside the step where they part
    assert chosen[: shared_prefix_len(chosen, rejected)] == rejected[: shared_prefix_len(chosen, rejected)]


def test_early_late_same_correction_different_position():
    prefix, drifting = ["Understand."], ["It is fine, I can help.", "I will help."]
    corr = Correction("Wait, this is harmful.", ["I will decline."], "No.")
    chosen, rejected = early_late_pair(prefix, drifting, corr, delay=2)
    c, r = parse(chosen), parse(rejected)
    assert c.reflections == [1] and r.reflections == [3]
    assert c.steps[-1] == r.steps[-1] and c.answer == r.answer
    assert c.steps[:1] == r.steps[:1]
    assert len(r.steps) > len(c.steps)
    assert early_late_pair(prefix, drifting, corr, delay=0) is None
    assert early_late_pair(prefix, drifting, corr, delay=3) is None


def test_borderline_reflection_names_the_allowed_case():
    ref = reflection_for(BORDER, POLICY, random.Random(1))
    assert ref.startswith("Wait") and "[cyber]" in ref


def _p(prompt: Prompt, c: str, r: str, t: str = "pp_cot"):
    return make_pair(prompt, c, r, t, {})


def test_hygiene_counts_every_drop():
    pairs = [
        _p(HARM, "<think>\na\n</think>\nNo.", "<think>\na\n</think>\nSure."),
        _p(HARM, "<think>\na\n</think>\nNo.", "<think>\na\n</think>\nSure."),  # duplicate
        _p(HARM, "same", "same", "op_cot"),  # identical
        _p(HARM, "prefix and more", "prefix", "early_late"),  # nothing left on one side
    ]
    kept, dropped = hygiene(pairs)
    assert len(kept) == 1
    assert dropped == {
        "pp_cot: duplicate": 1,
        "op_cot: chosen equals rejected": 1,
        "early_late: nothing to prefer after the shared part": 1,
    }


def test_length_check_drops_and_counts(smollm_tokenizer):
    long_prompt = Prompt.make("word " * 300, "harmful", "t", category="cyber")
    pairs = [
        _p(HARM, "<think>\nshort\n</think>\nNo.", "<think>\nshort\n</think>\nSure."),
        _p(HARM, "<think>\n" + "long " * 200 + "\n</think>\nNo.", "<think>\nx\n</think>\nSure."),
        _p(long_prompt, "No.", "Sure."),
    ]
    kept, stats = length_check(pairs, smollm_tokenizer, max_length=120)
    assert len(kept) == 1
    assert stats["dropped_would_truncate"] == 1 and stats["dropped_prompt_too_long"] == 1
    assert stats["kept"] == 1 and stats["max_tokens"] > 120
    assert kept[0].meta["pair_tokens"] <= 120


def test_mix_keeps_proportions_under_a_cap():
    pools = {
        "op_cot": [_p(HARM, f"c{i}", f"r{i}", "op_cot") for i in range(10)],
        "pp_cot": [_p(HARM, f"c{i}", f"r{i}x", "pp_cot") for i in range(10)],
        "early_late": [_p(HARM, f"c{i}", f"r{i}y", "early_late") for i in range(10)],
        "long_short": [],
    }
    cfg = SynthSRPOConfig.model_validate(
        {"mix": {"op_cot": 1.0, "pp_cot": 1.0, "early_late": 0.5}, "max_pairs": 10}
    )
    out, stats = mix(pools, cfg, random.Random(0))
    assert stats["taken"] == {"op_cot": 4, "pp_cot": 4, "early_late": 2}
    cfg_all = SynthSRPOConfig.model_validate({"mix": {"op_cot": 1.0, "pp_cot": 1.0, "early_late": 1.0}})
    out, stats = mix(pools, cfg_all, random.Random(0))
    assert len(out) == 30
    scarce = {**pools, "op_cot": pools["op_cot"][:2]}
    out, stats = mix(scarce, cfg, random.Random(0))  # op_cot has 2 of its 4: the others take the rest
    assert len(out) == 10 and stats["taken"]["op_cot"] == 2 and sum(stats["taken"].values()) == 10
    cfg_off = SynthSRPOConfig.model_validate({"mix": {"op_cot": 1.0, "pp_cot": 0.0, "early_late": 0.0}})
    out, _ = mix(pools, cfg_off, random.Random(0))
    assert {x.pair_type for x in out} == {"op_cot"}
