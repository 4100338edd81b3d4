"""The <think> format: render, parse (including broken tags), steps, reflections."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from saro.reasoning import is_reflection, parse, render, split_steps, token_counts

STEP = (
    st.text(
        alphabet=st.characters(blacklist_characters="<>\n\r", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(bool)
)


def test_parse_ok():
    p = parse("<think>\nFirst.\n\nWait, check.\n</think>\nThe answer.")
    assert p.status == "ok"
    assert p.steps == ["First.", "Wait, check."]
    assert p.answer == "The answer."
    assert p.reflections == [1]
    assert p.finished


def test_no_tags():
    p = parse("Just an answer.")
    assert p.status == "no_think" and p.reasoning is None and p.answer == "Just an answer."
    assert not p.has_reasoning


def test_missing_open_tag():
    p = parse("I think about it.\n\nWait, yes.\n</think>\nDone.")
    assert p.status == "missing_open"
    assert p.steps == ["I think about it.", "Wait, yes."]
    assert p.answer == "Done."


def test_unclosed():
    p = parse("<think>\nStill thinking about")
    assert p.status == "unclosed" and p.answer == "" and not p.finished
    assert p.steps == ["Still thinking about"]


def test_repeated_blocks():
    p = parse("<think>a</think> middle <think>b</think> final")
    assert p.status == "repeated"
    assert p.answer == "final"
    assert "a" in p.reasoning and "b" in p.reasoning and "<think>" not in p.reasoning


def test_nested_tags():
    p = parse("<think>outer <think>inner</think> more</think>answer")
    assert p.status == "nested"
    assert p.answer == "answer"
    assert "inner" in p.reasoning and "</think>" not in p.reasoning


def test_empty_and_whitespace():
    assert parse("").status == "no_think"
    assert parse("<think></think>x").steps == []


def test_split_steps_lines_when_no_blank_lines():
    assert split_steps("one\ntwo\nthree") == ["one", "two", "three"]
    assert split_steps("one\n\ntwo\nstill two") == ["one", "two\nstill two"]


def test_reflection_detection():
    assert is_reflection("Wait, this is unsafe.")
    assert is_reflection("**Wait** - hmm")
    assert is_reflection("wait... no")
    assert not is_reflection("Waiting for the bus is boring.")
    assert not is_reflection("I will wait.")


@given(st.lists(STEP, min_size=1, max_size=6), STEP)
def test_render_parse_roundtrip(steps, answer):
    p = parse(render(steps, answer))
    assert p.status == "ok"
    assert p.steps == steps
    assert p.answer == answer


@given(st.text(max_size=200))
def test_parse_never_crashes(text):
    p = parse(text)
    assert p.status in ("ok", "no_think", "missing_open", "unclosed", "repeated", "nested")
    assert "<think>" not in p.answer and "</think>" not in p.answer
    if p.reasoning is not None:
        assert "<think>" not in p.reasoning


def test_token_counts(smollm_tokenizer):
    r, a = token_counts(render(["one two three"], "four five"), smollm_tokenizer)
    assert r > 0 and a > 0
    assert token_counts("no think here", smollm_tokenizer)[0] == 0
