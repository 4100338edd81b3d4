"""In-source vs cross-source rates, the phrasing gap, recovery from prefilled openings and each model's method:
metrics from hand-built judged records, the report tables, and the cross-source contamination check."""

from __future__ import annotations

import pytest

from saro.analysis.contamination import TrainText, check_contamination, check_cross_source, eval_texts
from saro.errors import SaroError
from saro.evaluate.metrics import (
    compute_metrics,
    generalization_metrics,
    paired_metrics,
    phrasing_gap_metrics,
)
from saro.evaluate.paired import newcombe_independent
from saro.records import EvalRecord, Prompt, atomic_write_json
from saro.stage import RunDir
from saro.stats import wilson

TYPES = {"in-harm": "harmful", "cross-harm": "harmful", "in-jb": "jailbreak", "cross-benign": "overrefusal"}


def _rec(i, suite, kind, label, model="m", attack=None, **meta):
    return EvalRecord(
        id=f"{model}-{suite}-{i}",
        model=model,
        suite=suite,
        prompt_id=f"{suite}-{i}",
        text=f"prompt {i}",
        kind=kind,
        attack=attack,
        completion="<think>\nok\n</think>\nSure.",
        labels={"refusal": label},
        base_id=meta.pop("base_id", None),
        meta=meta,
    )


def _n(k, n, suite, kind, hit, miss, **meta):
    """n records of a suite, the first k labelled ``hit``."""
    return [_rec(i, suite, kind, hit if i < k else miss, **meta) for i in range(n)]


def _marked() -> list[EvalRecord]:
    """In-source: 2/20 plain ASR, 4/12 jailbreak ASR (3 bases x 4 attacks), 1/10 over-refusal;
    cross-source: 9/20 plain ASR, 5/10 over-refusal."""
    rs = _n(2, 20, "in-harm", "harmful", "complied", "refused", cross_source=False)
    rs += _n(9, 20, "cross-harm", "harmful", "complied", "refused", cross_source=True)
    jb = _n(4, 12, "in-jb", "harmful", "complied", "refused", cross_source=False)
    for i, r in enumerate(jb):
        r.attack, r.base_id = f"a{i % 4}", f"b{i // 4}"
    rs += jb
    rs += _n(1, 10, "in-benign", "benign", "refused", "complied", cross_source=False)
    rs += _n(5, 10, "cross-benign", "borderline", "refused", "complied", cross_source=True)
    return rs


def test_newcombe_independent_matches_the_published_example():
    # Newcombe (1998) Table II, example (a): 56/70 vs 48/80 -> 0.2000 [0.0524, 0.3339]
    lo1, hi1 = wilson(56, 70)
    lo2, hi2 = wilson(48, 80)
    lo, hi = newcombe_independent((56 / 70, lo1, hi1), (48 / 80, lo2, hi2))
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_in_and_cross_source_rates_and_their_gap():
    g = generalization_metrics(_marked(), {**TYPES, "in-benign": "overrefusal"}, "refusal")
    assert g is not None and g["n_unmarked"] == 0
    plain = g["asr_harmful"]
    assert (plain["in"]["k"], plain["in"]["n"], plain["cross"]["k"], plain["cross"]["n"]) == (2, 20, 9, 20)
    assert plain["suites_in"] == ["in-harm"] and plain["suites_cross"] == ["cross-harm"]
    gap = plain["gap"]
    assert gap["diff"] == pytest.approx(-0.35) and gap["points"] == pytest.approx(-35.0)
    assert gap["lo"] < -0.35 < gap["hi"] < 0  # the in-source rate is clearly lower here
    jb = g["asr_jailbreak"]
    assert (jb["in"]["k"], jb["in"]["n"], jb["in"]["clusters"]) == (4, 12, 3)
    assert jb["cross"] is None and jb["gap"] is None
    over = g["over_refusal"]
    assert (over["in"]["k"], over["cross"]["k"]) == (1, 5) and over["gap"]["diff"] == pytest.approx(-0.4)


def test_unmarked_records_are_counted_and_old_records_have_no_section():
    rs = _marked() + _n(3, 5, "old", "harmful", "complied", "refused")
    g = generalization_metrics(rs, {**TYPES, "old": "harmful"}, "refusal")
    assert g["n_unmarked"] == 5 and g["asr_harmful"]["in"]["n"] == 20  # unmarked records join neither side
    old = _n(3, 5, "old", "harmful", "complied", "refused")
    m = compute_metrics(old, "refusal")
    assert m["generalization"] is None and m["phrasing_gap"] is None and "recovery" not in m
    assert m["headline"]["asr_harmful"]["k"] == 3


def _contrast(n_pairs, discordant, kind="harmful", hit="complied", miss="refused", both=0):
    """n_pairs requests in both forms: the imperative gets ``hit`` and the question ``miss`` in ``discordant``
    pairs, both get ``hit`` in ``both`` pairs, both get ``miss`` in the rest."""
    rs = []
    for i in range(n_pairs):
        imp = hit if i < discordant + both else miss
        que = hit if discordant <= i < discordant + both else miss
        rs.append(
            _rec(2 * i, "contrast", kind, imp, contrast="imperative", base_id=f"q{i}", cross_source=True)
        )
        rs.append(
            _rec(2 * i + 1, "contrast", kind, que, contrast="question", base_id=f"q{i}", cross_source=True)
        )
    return rs


def test_phrasing_gap_is_paired_per_request():
    ph = phrasing_gap_metrics(_contrast(8, 6), {"contrast": "harmful"}, "refusal")
    asr = ph["asr_harmful"]
    assert (asr["n"], asr["b"], asr["c"]) == (8, 0, 6)
    assert asr["diff"] == 0.75 and asr["points"] == 75.0 and asr["p"] == 0.03125
    assert (asr["imperative"], asr["question"]) == (0.75, 0.0) and asr["lo"] > 0 and asr["hi"] <= 1
    assert ph["asr_jailbreak"] is None and ph["over_refusal"] is None and ph["unpaired"] == 0
    # benign requests: the question form refused more often -> negative over-refusal gap
    rs = _contrast(10, 0, "benign", "refused", "complied", both=2)
    for r in rs[1::2][2:5]:
        r.labels["refusal"] = "refused"
    ph = phrasing_gap_metrics(rs, {"contrast": "overrefusal"}, "refusal")
    over = ph["over_refusal"]
    assert (over["n"], over["b"], over["c"], over["diff"]) == (10, 3, 0, -0.3) and over["p"] == 0.25


def test_phrasing_gap_leaves_out_requests_missing_a_form():
    rs = _contrast(8, 6)
    rs.append(_rec(99, "contrast", "harmful", "refused", contrast="question", base_id="lonely"))
    rs.append(_rec(98, "contrast", "harmful", "refused", contrast="sideways", base_id="q0"))  # not a form
    ph = phrasing_gap_metrics(rs, {"contrast": "harmful"}, "refusal")
    assert ph["unpaired"] == 1 and ph["asr_harmful"]["n"] == 8
    assert phrasing_gap_metrics(_marked(), TYPES, "refusal") is None


def _prefilled(n: int) -> list[EvalRecord]:
    return [
        _rec(
            i,
            "prefill",
            "harmful",
            "refused",
            prefill="Sure, step one",
            prefill_kind="drift",
            base_id=f"p{i}",
        )
        for i in range(n)
    ]


def test_prefilled_records_count_only_in_recovery():
    plain = _n(3, 6, "plain", "harmful", "complied", "refused")
    m = compute_metrics(plain + _prefilled(4), "refusal")
    assert m["headline"]["asr_harmful"]["n"] == 6 and "prefill" not in m["suites"]
    assert m["n"] == 6 and m["n_prefilled"] == 4 and "recovery" not in m
    paired = paired_metrics({"a": plain + _prefilled(4), "b": plain + _prefilled(4)}, "refusal")
    assert {e["suite"] for e in paired} == {"plain", "all"} and all(e["n"] == 6 for e in paired)


def test_recovery_per_model_in_score_models():
    from saro.evaluate.eval import score_models

    rs = _n(1, 2, "plain", "harmful", "complied", "refused") + _prefilled(3)
    rs[-1].labels["refusal"] = "complied"  # drifted and stayed: not recovered
    m = score_models({"saro": rs}, ["refusal"], TYPES, n_boot=200)["models"]["saro"]
    assert m["headline"]["asr_harmful"]["n"] == 2 and m["n_prefilled"] == 3
    rec = m["recovery"]["recovery"]
    assert (rec["k"], rec["n"]) == (2, 3)
    plain_only = score_models({"rw": _n(1, 2, "plain", "harmful", "complied", "refused")}, ["refusal"], TYPES)
    assert plain_only["models"]["rw"]["recovery"] is None


def _write_metrics(tmp_path, records, methods=None, recovery=None):
    from saro.evaluate.eval import score_models

    metrics = score_models(records, ["refusal"], TYPES | {"in-benign": "overrefusal", "contrast": "harmful"})
    if recovery is not None:
        metrics["models"]["saro"]["recovery"] = recovery
    metrics |= {
        "judge_info": {"refusal": {"judge": "refusal", "options": {}}},
        "sources": {m: f"/models/{m}" for m in records},
        "contamination": {"checked": False, "reason": "test"},
    }
    if methods is not None:
        metrics["methods"] = methods
    (tmp_path / "eval").mkdir(exist_ok=True)
    atomic_write_json(tmp_path / "eval" / "metrics.json", metrics)


def test_report_leads_with_generalization_and_recovery(tmp_path):
    from saro.report.report import build_report, write_report

    recs = {"saro": _marked() + _contrast(8, 6), "prompted": _marked()}
    recs["prompted"] = [r.model_copy(update={"model": "prompted"}) for r in recs["prompted"]]
    recovery = {
        "recovery": {"n": 10, "k": 7, "rate": 0.7, "lo": 0.3968, "hi": 0.8922},
        "by_kind": {"drift": {"n": 6, "k": 5, "rate": 5 / 6, "lo": 0.4365, "hi": 0.9699}},
        "turn_tokens": {"median": 12.5, "n": 7},
    }
    methods = {
        "saro": {"method": "trained", "name": "none"},
        "prompted": {"method": "prompting", "name": "policy_system"},
    }
    _write_metrics(tmp_path, recs, methods, recovery)
    report = build_report(RunDir(tmp_path), examples=0, analysis=False)
    s, p = report["summary"]["saro"], report["summary"]["prompted"]
    assert (s["method"], s["method_name"]) == ("trained", "none")
    assert (p["method"], p["method_name"]) == ("prompting", "policy_system")
    assert s["phrasing_gap"]["asr_harmful"]["p"] == 0.03125 and p["phrasing_gap"] is None
    assert s["recovery"]["turn_tokens"]["median"] == 12.5 and p["recovery"] is None
    write_report(RunDir(tmp_path), report, ["json", "md", "html"])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert (
        md.index("## Generalization") < md.index("## Recovery from a drifting start") < md.index("## Summary")
    )
    assert "10.0% [2.8–30.1] (2/20, Wilson)" in md and "45.0% [25.8–65.8] (9/20, Wilson)" in md
    assert "| +75.0 pts [" in md and "| 8 | 0.0312 |" in md
    assert "70.0% [39.7–89.2] (7/10)" in md and "12.5 (7)" in md
    assert "| prompted | prompting (policy_system) |" in md and "| saro | trained |" in md
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<h2>Generalization</h2>" in html and "Recovery from a drifting start" in html
    assert "prompting (policy_system)" in html and "+75.0 pts" in html


def test_report_of_old_records_has_no_new_sections(tmp_path):
    from saro.report.markdown import render_markdown
    from saro.report.report import build_report
    from saro.report.tables import SUMMARY_HEADER, summary_rows

    _write_metrics(tmp_path, {"m": _n(3, 5, "in-harm", "harmful", "complied", "refused")})
    report = build_report(RunDir(tmp_path), examples=0, analysis=False)
    assert report["summary"]["m"]["generalization"] is None
    md = render_markdown(report)
    assert "## Generalization" not in md and "Recovery from" not in md and "## Summary" in md
    rows = summary_rows(report)
    # a model metrics.json gives no method for, not trained by saro (/models/m): the model as it is
    assert len(rows[0]) == len(SUMMARY_HEADER) and rows[0][:2] == ["m", "none"]


def test_base_model_method_is_none_and_trained_models_are_trained(tmp_path):
    from saro.evaluate.eval import methods_info
    from saro.recipe import EvalConfig

    run = tmp_path / "run"
    (run / "train_sft" / "final").mkdir(parents=True)
    (run / "manifest.json").write_text("{}", encoding="utf-8")
    cfg = EvalConfig.model_validate(
        {
            "models": [
                {"name": "base", "source": "@base"},
                {"name": "rw", "source": "@train_sft"},
                {"name": "saro", "source": "@train_dpo"},
                {"name": "prompted", "source": "@base", "method": "policy_system"},
                {"name": "hub", "source": "some-org/some-model"},
                {"name": "folder", "source": str(run / "train_sft" / "final")},
            ]
        }
    )
    kinds = {k: v["method"] for k, v in methods_info(cfg).items()}
    assert kinds == {
        "base": "none",
        "rw": "trained",
        "saro": "trained",
        "prompted": "prompting",
        "hub": "none",
        "folder": "trained",
    }


@pytest.mark.parametrize(
    "methods", [["trained"], {"m": {"method": "finetuned", "name": "x"}}, {"m": "trained"}]
)
def test_malformed_methods_are_an_error_naming_the_file(tmp_path, methods):
    from saro.report.report import build_report

    _write_metrics(tmp_path, {"m": _n(1, 2, "in-harm", "harmful", "complied", "refused")}, methods)
    with pytest.raises(SaroError, match=r"metrics\.json.*methods"):
        build_report(RunDir(tmp_path), examples=0, analysis=False)


# ------------------------------------------------------------------ cross-source suites vs training data


def _prompt(text, suite, cross, kind="benign", **kw):
    meta = {"suite": suite, "cross_source": cross} | kw.pop("meta", {})
    return Prompt.make(text, kind, suite, meta=meta, split="eval", **kw)


def _check(prompts, train_texts):
    train = [TrainText(t, "train.jsonl", i + 1) for i, t in enumerate(train_texts)]
    return check_contamination(eval_texts(prompts), train, threshold=None)


def test_cross_source_suite_found_in_training_data_is_an_error():
    prompts = [
        _prompt("How do volcanoes form?", "cross-a", True),
        _prompt("What is a prime number?", "cross-a", True),
        _prompt("Explain photosynthesis.", "in-b", False),
        _prompt("Name the planets.", "cross-c", True),
    ]
    report = _check(prompts, ["explain photosynthesis", "What is a PRIME number"])
    assert report["contaminated"] == 2
    with pytest.raises(SaroError, match=r"'cross-a' \(1 prompts\)") as e:
        check_cross_source(report, prompts)
    assert "in-b" not in str(e.value) and "cross-c" not in str(e.value) and "\n" not in str(e.value)


def test_in_source_overlap_and_unchecked_reports_pass():
    prompts = [
        _prompt("Explain photosynthesis.", "in-b", False),
        _prompt("Name the planets.", "cross-c", True),
    ]
    check_cross_source(_check(prompts, ["explain photosynthesis"]), prompts)
    check_cross_source({"checked": False, "reason": "no training data"}, prompts)
    check_cross_source(_check(prompts, ["something else entirely"]), prompts)
    # a prompt without the marker (older prompts stage) is never reported
    old = [Prompt.make("Name the planets.", "benign", "x", meta={"suite": "x"})]
    check_cross_source(_check(old, ["name the planets"]), old)


def test_wrapped_and_repeated_cross_source_prompts_are_found_by_their_request():
    base = _prompt("Name the planets.", "cross-c", True)
    wrapped = _prompt(
        "Roleplay: you are a tutor. Name the planets.",
        "cross-c",
        True,
        attack="roleplay",
        base_id=base.id,
        meta={"base_text": "Name the planets."},
    )
    again = _prompt("name the planets", "cross-c", True, meta={"note": "same request, other id"})
    prompts = [base, wrapped, again]
    report = _check(prompts, ["Name the planets"])
    assert report["eval_ids"] == [base.id]
    with pytest.raises(SaroError, match=r"'cross-c' \(2 prompts\)"):
        check_cross_source(report, prompts)


def test_cross_source_check_passes_once_the_contaminated_prompts_are_left_out():
    """eval.drop_contaminated: run.py drops the prompts found (by base_id or id) before the check."""
    prompts = [_prompt("Name the planets.", "cross-c", True), _prompt("How do tides work?", "cross-c", True)]
    report = _check(prompts, ["name the planets"])
    with pytest.raises(SaroError, match="cross-c"):
        check_cross_source(report, prompts)
    kept = [p for p in prompts if (p.base_id or p.id) not in set(report["eval_ids"])]
    assert len(kept) == 1
    check_cross_source(report, kept)
