"""Cross-source by content in the prompts stage: an eval prompt that near-duplicates a training prompt (in any form)
or a row of a training source is not cross-source, whatever its source is called; training dedup compares every
form; prompts/stats.json counts the overlap per suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from saro.errors import SaroError
from saro.policy import load_policy
from saro.prompts.prompts import build_prompts
from saro.recipe import PromptsConfig

EVAL = [
    "Explain how to repot a cactus without getting pricked.",
    "What is the tallest waterfall in Europe?",
    "Write a limerick about a forgetful octopus.",
    "How do tides depend on the phase of the moon?",
]
TRAIN = [
    "Explain how to repot a cactus without getting pricked.",  # a copy of EVAL[0]
    "Write a limerick about a forgetful octopus.",  # a copy of EVAL[2]
    "Give me a packing list for a weekend of camping in the rain.",
    "How do I descale a kettle with vinegar?",
]


def _local(tmp_path: Path, name: str, texts: list[str], **entry: Any) -> dict[str, Any]:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts), encoding="utf-8")
    return {"source": "local", "options": {"path": str(path), "kind": "benign"}, **entry}


def _build(**prompts: Any) -> dict[str, Any]:
    cfg = PromptsConfig.model_validate({"categorize": "keyword", **prompts})
    return build_prompts(cfg, load_policy(), seed=0)


def test_strongreject_prompts_copied_from_advbench_are_not_cross_source() -> None:
    out = _build(eval=[{"source": "strongreject", "suite": "sr"}], rw=[{"source": "advbench", "n": 8}])
    ev = out["eval"]
    copied = [p for p in ev if p.meta["sr_source"] == "AdvBench"]
    assert len(copied) == 25
    for p in copied:  # in AdvBench verbatim: found in the source the recipe trains on, drawn or not
        assert p.meta["cross_source"] is False
        assert p.meta["overlap"]["method"] == "exact" and p.meta["overlap"]["source"] == "advbench"
    others = [p for p in ev if p.meta["sr_source"] != "AdvBench"]
    assert sum(p.meta["cross_source"] for p in others) >= 0.8 * len(others)
    assert all("overlap" in p.meta for p in ev if p.meta["cross_source"] is False)
    sr = out["_stats"]["suites"]["sr"]
    assert sr["prompts"] == sr["requests"] == len(ev) == 313
    assert sr["overlap_requests"] == sum(not p.meta["cross_source"] for p in ev) >= 25
    assert sr["cross_source_prompts"] + sr["overlap_prompts"] == 313
    assert sr["overlap_methods"]["exact"] == 25
    assert out["_stats"]["overlap_rules"] == {"ngram": 0.67, "cosine": 0.73}


def test_the_same_suite_stays_cross_source_when_advbench_is_not_trained_on() -> None:
    out = _build(
        eval=[{"source": "strongreject", "n": 60, "suite": "sr"}], rw=[{"source": "saro_benign", "n": 4}]
    )
    assert all(p.meta["cross_source"] for p in out["eval"] if p.meta["sr_source"] == "AdvBench")


def test_rephrased_and_wrapped_training_copies_are_found_and_dropped(tmp_path: Path) -> None:
    out = _build(
        attacks={"train": ["prefix_injection"], "heldout": []},
        eval=[_local(tmp_path, "eval", EVAL, suite="mine")],
        rw=[_local(tmp_path, "rw", TRAIN[:1] + TRAIN[2:], rephrase="question")],
        srpo=[_local(tmp_path, "srpo", TRAIN[1:2], attacks="train")],
    )
    ev = {p.text: p for p in out["eval"]}
    repot, limerick = ev[EVAL[0]], ev[EVAL[2]]
    assert repot.meta["cross_source"] is False and limerick.meta["cross_source"] is False
    assert repot.meta["overlap"]["form"] == "original_text" and repot.meta["overlap"]["method"] == "exact"
    assert limerick.meta["overlap"]["form"] == "base_text" and limerick.meta["overlap"]["train_id"]
    assert ev[EVAL[1]].meta["cross_source"] is True and ev[EVAL[3]].meta["cross_source"] is True
    # training dedup compares every form: neither the rephrased nor the wrapped copy is left to train on
    left = {p.meta.get("original_text") or p.meta.get("base_text") or p.text for p in out["rw"] + out["srpo"]}
    assert not left & set(EVAL)
    assert out["_stats"]["dropped"] == {"rw: equals an eval prompt": 1, "srpo: equals an eval prompt": 1}
    mine = out["_stats"]["suites"]["mine"]
    assert (mine["requests"], mine["overlap_requests"], mine["cross_source_prompts"]) == (4, 2, 2)


def test_a_near_copy_is_found_by_embedding_and_dropped_with_a_threshold(tmp_path: Path) -> None:
    near = "How do I repot a cactus without getting pricked?"  # the same request, asked as a question
    entries = {"eval": [_local(tmp_path, "eval", EVAL, suite="mine")], "rw": [_local(tmp_path, "rw", [near])]}
    out = _build(**entries)
    repot = next(p for p in out["eval"] if p.text == EVAL[0])
    assert repot.meta["overlap"]["method"] == "embedding" and repot.meta["overlap"]["score"] >= 0.73
    assert [p.text for p in out["rw"]] == [near]  # dedup_threshold unset: only equal prompts are dropped
    dropped = _build(dedup_threshold=0.9, **entries)
    assert dropped["rw"] == [] and sum(dropped["_stats"]["dropped"].values()) == 1


def test_explicit_cross_source_true_keeps_the_prompts_that_do_not_overlap(tmp_path: Path) -> None:
    out = _build(
        eval=[_local(tmp_path, "eval", EVAL, suite="mine", cross_source=True)],
        rw=[_local(tmp_path, "rw", TRAIN)],
    )
    marks = {p.text: p.meta["cross_source"] for p in out["eval"]}
    assert marks == {EVAL[0]: False, EVAL[1]: True, EVAL[2]: False, EVAL[3]: True}
    # a source that is itself trained on cannot be declared cross-source
    same = _local(tmp_path, "same", EVAL)
    with pytest.raises(SaroError, match=r"prompts.eval\[0\].cross_source: true, but source 'local'"):
        _build(eval=[{**same, "cross_source": True}], rw=[same])


def test_in_source_and_untrained_recipes_are_not_marked_by_content(tmp_path: Path) -> None:
    ev = _build(eval=[{"source": "advbench", "n": 4}], rw=[{"source": "advbench", "n": 4}])["eval"]
    assert {p.meta["cross_source"] for p in ev} == {False} and not any("overlap" in p.meta for p in ev)
    alone = _build(eval=[_local(tmp_path, "eval", EVAL)])
    assert {p.meta.get("cross_source") for p in alone["eval"]} == {None}
    assert alone["_stats"]["suites"]["local"]["overlap_requests"] == 0


def test_contrast_suites_count_their_dropped_requests() -> None:
    out = _build(eval=[{"source": "saro_borderline", "n": 12, "phrasing_contrast": True, "suite": "pairs"}])
    s = out["_stats"]["suites"]["pairs"]
    assert s["contrast_pairs"] * 2 == s["prompts"] and s["contrast_pairs"] + s["contrast_dropped"] == 12
    reasons = {k: v for k, v in s.items() if k.startswith("contrast_dropped_")}
    assert sum(reasons.values()) == s["contrast_dropped"]
