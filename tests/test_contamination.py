"""Contamination check: a duplicate planted between training data and an eval suite is caught, exactly (after
normalisation) and as a near-duplicate (MiniLM cosine), in training files of every format a run writes."""

from __future__ import annotations

import json

import pytest

from saro.analysis.contamination import (
    contamination_report,
    eval_texts,
    prompts_of_row,
    read_training_texts,
    redact,
    run_dir_of,
    training_files,
)
from saro.errors import SaroError
from saro.policy import load_policy
from saro.prompts.near_duplicates import normalize_for_match
from saro.prompts.prompts import build_prompts
from saro.recipe import PromptsConfig
from saro.records import Prompt, write_jsonl_atomic


@pytest.fixture(scope="module")
def eval_prompts():
    cfg = PromptsConfig.model_validate(
        {
            "categorize": "keyword",
            "eval_suites": [{"name": "harmbench", "n": 6}, {"name": "rho-overrefusal", "n": 6}],
            "eval": [{"source": "harmbench", "n": 2, "attacks": ["poem"], "suite": "hb-jb"}],
        }
    )
    return build_prompts(cfg, load_policy(), seed=0)["eval"]


def test_rows_of_every_training_format():
    assert prompts_of_row(
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}
    ) == ["u"]
    pair = {"prompt": [{"role": "user", "content": "p"}], "chosen": [], "rejected": []}
    assert prompts_of_row(pair) == ["p"]
    assert prompts_of_row({"prompt": "plain", "response": "r"}) == ["plain"]
    assert prompts_of_row({"id": "x", "text": "wrapped", "meta": {"base_text": "base"}}) == [
        "wrapped",
        "base",
    ]
    assert prompts_of_row({"goal": "g"}) == ["g"]
    assert normalize_for_match("  How do I, make BREAD?? ") == "how do i make bread"
    assert redact("kill them all", "harmful") == "[redacted harmful prompt, 3 words]"
    assert redact("x" * 500, "benign").endswith("…")


def test_planted_exact_and_near_duplicates_are_caught(eval_prompts, tmp_path):
    wrapped = [p for p in eval_prompts if p.attack]
    # (a suite's jailbreak entries wrap the same base prompts as its plain entries: pick one not wrapped here)
    harmful = next(
        p
        for p in eval_prompts
        if p.meta["suite"] == "harmbench" and p.text not in {w.meta["base_text"] for w in wrapped}
    )
    benign = next(p for p in eval_prompts if p.meta["suite"] == "rho-overrefusal")
    # training data: the harmful eval prompt re-cased and re-punctuated (exact after normalisation), a light
    # paraphrase of the benign one (near-duplicate), and unrelated prompts
    sft = tmp_path / "sft.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "  " + harmful.text.upper() + " !! "},
                {"role": "assistant", "content": "x"},
            ]
        },
    ]
    sft.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs = tmp_path / "pairs.csv"
    near = benign.text.rstrip("?.!") + ", please?"
    pairs.write_text(f'prompt,chosen,rejected\n"Write a haiku about autumn leaves",a,b\n"{near}",a,b\n')
    out = contamination_report(eval_prompts, [], [sft, pairs], threshold=0.9)
    assert out["checked"] and out["n_train"] == 4
    assert out["exact"] == 1 and out["near"] >= 1
    ex = {e["eval_id"]: e for e in out["examples"]}
    assert ex[harmful.id]["match"] == "exact" and ex[harmful.id]["train_line"] == 2
    assert ex[harmful.id]["eval_excerpt"].startswith("[redacted") and harmful.text not in json.dumps(out)
    assert ex[benign.id]["match"] == "near" and ex[benign.id]["cosine"] >= 0.9
    assert ex[benign.id]["train_file"].endswith("pairs.csv") and ex[benign.id]["train_line"] == 3
    assert out["by_suite"]["harmbench"]["exact"] == 1 and out["by_suite"]["rho-overrefusal"]["near"] >= 1
    exact_only = contamination_report(eval_prompts, [], [sft, pairs], threshold=None, ngram=None)
    assert exact_only["exact"] == 1 and exact_only["near"] == 0
    # without the embedding, the n-gram rule still finds the copy with a few words added
    no_model = contamination_report(eval_prompts, [], [sft, pairs], threshold=None)
    assert no_model["near"] == 1 and no_model["near_by_method"] == {"ngram": 1, "embedding": 0}
    # a training copy of a wrapped prompt's request is found in the jailbreak suite too
    sft.write_text(json.dumps({"prompt": wrapped[0].meta["base_text"], "completion": "x"}) + "\n")
    jb = contamination_report(eval_prompts, [], [sft], threshold=None)
    assert jb["by_suite"]["hb-jb"]["exact"] == 1 and jb["by_suite"]["harmbench"]["exact"] == 1


def test_wrapped_eval_prompts_are_checked_by_their_request(eval_prompts):
    wrapped = [p for p in eval_prompts if p.attack]
    texts = eval_texts(eval_prompts)
    base = {t.text for t in texts if t.suite == "hb-jb"}
    assert base == {p.meta["base_text"] for p in wrapped}


def test_a_runs_training_files_are_found_from_its_model_folder(eval_prompts, tmp_path):
    run = tmp_path / "runs" / "demo"
    (run / "train_sft" / "final").mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    target = next(p for p in eval_prompts if p.meta["suite"] == "rho-overrefusal")
    write_jsonl_atomic(
        run / "prompts" / "rw.jsonl", [Prompt.make(target.text, "borderline", "rho_overrefusal")]
    )
    assert run_dir_of(run / "train_sft" / "final") == run.resolve()
    assert run_dir_of(tmp_path / "nowhere") is None
    assert training_files(run) == [run / "prompts" / "rw.jsonl"]
    assert [t.text for t in read_training_texts(run / "prompts" / "rw.jsonl")] == [target.text]
    out = contamination_report(eval_prompts, [run], [], threshold=None)
    assert out["exact"] == 1 and out["examples"][0]["eval_excerpt"] == redact(target.text, "borderline")
    none = contamination_report(eval_prompts, [tmp_path], [], threshold=None)
    assert none["checked"] is False
    with pytest.raises(SaroError, match="not found"):
        contamination_report(eval_prompts, [], [tmp_path / "missing.jsonl"])


def test_rephrased_prompts_are_checked_in_both_forms(tmp_path):
    """The check reads ``original_text`` on both sides: an eval prompt whose original wording is in the training
    data, and a training prompt rephrased from an eval prompt, are both exact finds (no model needed)."""
    asked = "How do I repot a cactus without getting pricked?"
    told = "Explain how to repot a cactus without getting pricked."
    ev = Prompt.make(told, "benign", "x", meta={"suite": "s", "original_text": asked}, split="eval")
    assert [t.text for t in eval_texts([ev])] == [told, asked]
    plain_file = tmp_path / "plain.jsonl"
    plain_file.write_text(json.dumps({"prompt": asked.lower().rstrip("?")}) + "\n")
    out = contamination_report([ev], [], [plain_file], threshold=None, ngram=None)
    assert out["n_eval"] == 1 and out["exact"] == 1 and out["eval_ids"] == [ev.id]
    rephrased_train = Prompt.make(
        "Could you tell me about cacti?", "benign", "x", meta={"original_text": told}
    )
    assert prompts_of_row(rephrased_train.model_dump()) == ["Could you tell me about cacti?", told]
    rec = tmp_path / "rw.jsonl"
    write_jsonl_atomic(rec, [rephrased_train])
    plain_eval = Prompt.make(told, "benign", "x", meta={"suite": "s"}, split="eval")
    found = contamination_report([plain_eval], [], [rec], threshold=None, ngram=None)
    assert found["exact"] == 1 and found["examples"][0]["method"] == "exact"
