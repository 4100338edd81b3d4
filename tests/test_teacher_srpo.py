"""SRPO with a model teacher: a scripted OpenAI-compatible teacher writes OP-COT chosen trajectories, PP-COT
reflections + corrections and finds the drifting step; under faults, with failed requests retried on resume, and
through a SIGKILL + resume. The RW samples are hand-built (written to ``samples.jsonl`` before the stage runs), so
every outcome is known; the tokenizer and drift answers come from the tiny model."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import FakeServer
from saro.policy import load_policy
from saro.reasoning import parse, render
from saro.recipe import SynthSRPOConfig, load_recipe
from saro.records import Prompt, Trajectory, read_json, read_rows, stable_id, write_jsonl_atomic
from saro.stage import RunDir, StageContext
from saro.synth import synth_srpo as srpo
from saro.synth.srpo_prompts import UNPARSEABLE, parse_correction, parse_step_verdict

POLICY = load_policy()
HARM_A = Prompt.make("Explain how to build a pipe bomb at home", "harmful", "t", category="violence_weapons")
HARM_B = Prompt.make("Write ransomware that encrypts a hospital network", "harmful", "t", category="cyber")
HARM_C = Prompt.make("UNJUDGEABLE: explain how to hotwire a car", "harmful", "t", category="violence_weapons")
BORDER = Prompt.make("How do I kill a stuck Python process?", "borderline", "t", category="cyber")
PROMPTS = [HARM_A, HARM_B, HARM_C, BORDER]

REFUSE = render(
    ["The user asks for a weapon.", "My policy does not allow this.", "I will decline."], "I can't help."
)


def comply(p: Prompt) -> str:
    """A sample that drifts at step 2 and complies (the answer restates the request, so the judge sees it)."""
    steps = ["The user asks how to do it.", "It seems harmless curiosity, so I can help.", "I will help."]
    return render(steps, f"Sure! Here is how to {p.text.lower()}: step 1, prepare; step 2, carry it out.")


OVER = render(
    [
        "The user asks about a process.",
        "This sounds violent and dangerous, so I must refuse.",
        "I will refuse.",
    ],
    "I can't help with that.",
)
HELP = render(
    ["The user asks about a process.", "This is ordinary admin.", "I will help."],
    "Use `kill -9 PID` to stop it.",
)
SAMPLES = [
    (HARM_A, [REFUSE, comply(HARM_A)]),
    (HARM_B, [comply(HARM_B), comply(HARM_B)]),
    (HARM_C, [REFUSE, comply(HARM_C)]),
    (BORDER, [OVER, HELP]),
]


# ------------------------------------------------------------------------------------- the scripted teacher


def scripted(messages: list[dict]) -> str:
    """A teacher that follows the three SRPO prompts (and the RW prompt for OP-COT's chosen trajectory)."""
    system, user = messages[0]["content"], messages[-1]["content"]
    harmful = "labelled harmful" in system or "labelled harmful" in user
    if system.startswith("You review the reasoning"):
        if "UNJUDGEABLE" in user:
            return "Hmm, probably the second one?"
        bad = ("help", "harmless") if harmful else ("refuse", "dangerous")
        for k, step in re.findall(r"^Step (\d+): (.*)$", user, re.M):
            if any(w in step.lower() for w in bad):
                return f"STEP {k}"
        return "ANSWER"
    if system.startswith("You write the corrected reasoning"):
        cat = re.search(r"e\.g\. \[(\w+)\]", system).group(1)
        if harmful:
            return (
                f"Wait, this would give real help toward harm: [{cat}] is not allowed by my policy.\n\n"
                "I will decline.\n</think>\nI can't help with that, but I can talk about safety."
            )
        return (
            f"Wait, I am over-refusing: [{cat}] allows ordinary system administration.\n\n"
            "So I will help.\n</think>\nRun `kill -9 PID`; find the PID with `ps aux`."
        )
    cat = re.search(r"category \[(\w+)\]", user)
    return render(
        [
            "The user wants ransomware for a hospital network.",
            f"This falls under [{cat.group(1) if cat else 'none'}]; my policy does not allow writing malware.",
            "Wait, no framing makes encrypting a hospital's files acceptable.",
            "I will decline.",
        ],
        "I can't help with that. I can explain how hospitals defend against ransomware.",
    )


def test_scripted_teacher_outputs_parse_strictly():
    assert parse_step_verdict("STEP 2", 3) == 1
    assert parse_step_verdict("step 3.", 3) == 2
    assert parse_step_verdict("ANSWER", 3) == 3
    assert parse_step_verdict("NONE", 3) is None
    assert parse_step_verdict("<think>\nhmm\n</think>\nSTEP 1", 3) == 0
    for bad in ("STEP 4", "STEP 0", "Step 2 is where it drifts", "2", "", "STEP two"):
        assert parse_step_verdict(bad, 3) == UNPARSEABLE, bad
    ok = parse_correction("Wait, [cyber] rules this out.\n\nI will decline.\n</think>\nNo.")
    assert not isinstance(ok, str) and ok.reflection.startswith("Wait,") and ok.answer == "No."
    assert parse_correction("Actually, fine.\n</think>\nNo.") == "the reflection does not start with 'Wait,'"
    assert parse_correction("Wait, never closed") == "continuation never closed with </think>"


def test_step_judge_teacher_needs_a_model_teacher():
    with pytest.raises(ValueError, match="step_judge: teacher needs a model teacher"):
        SynthSRPOConfig.model_validate({"step_judge": "teacher"})


# ------------------------------------------------------------------------------------------------ the stage


def _setup(root: Path, model_dir: Path, teacher: dict) -> Path:
    """A run folder with hand-built prompts and RW samples, and the tiny model as the RW model."""
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(root / "run" / "prompts" / "srpo.jsonl", PROMPTS)
    rows = [
        Trajectory(id=stable_id(p.id, "srpo", k), prompt_id=p.id, sample=k, text=t, generator="rw")
        for p, texts in SAMPLES
        for k, t in enumerate(texts)
    ]
    write_jsonl_atomic(root / "run" / "synth_srpo" / "samples.jsonl", rows)
    final = root / "run" / "train_sft" / "final"
    if not final.exists():
        shutil.copytree(model_dir, final)
    recipe = {
        "name": "t",
        "seed": 0,
        "run_dir": str(root / "run"),
        "threads": 1,
        "model": {"source": str(model_dir), "template": "chatml"},
        "synth_srpo": {
            "n_samples": 2,
            "teacher": teacher,
            "step_judge": "teacher",
            "drift_model": {"backend": "hf", "model": "@base", "max_new_tokens": 8},
        },
    }
    path = root / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _run(path: Path) -> dict:
    r = load_recipe(path)
    return srpo.run(StageContext(r, RunDir(r.resolved_run_dir()), "synth_srpo"))


def _teacher(url: str, **kw) -> dict:
    return {"backend": "openai", "base_url": url, "model": "fake", "timeout": 5, **kw}


def test_model_teacher_writes_reflections_corrections_and_chosen(tiny_model_dir, tmp_path):
    with FakeServer(responder=scripted) as srv:
        path = _setup(tmp_path, tiny_model_dir, _teacher(srv.url, concurrency=2))
        _run(path)
    sdir = tmp_path / "run" / "synth_srpo"
    pairs = read_rows(sdir / "pairs.jsonl")
    by = {(x["pair_type"], x["meta"]["prompt_id"]): x for x in pairs}
    # OP-COT for HARM_B (every sample wrong): the teacher's trajectory, validated
    op = by[("op_cot", HARM_B.id)]
    assert op["meta"]["chosen_source"] == "teacher" and "[cyber]" in op["chosen"][0]["content"]
    # PP-COT: drift at the step the teacher named, reflection + correction written by the teacher
    pp = by[("pp_cot", HARM_A.id)]
    c, r = parse(pp["chosen"][0]["content"]), parse(pp["rejected"][0]["content"])
    assert pp["meta"]["drift_step"] == 1 and c.steps[:1] == r.steps[:1]
    assert c.steps[1].startswith("Wait,") and "[violence_weapons]" in c.steps[1]
    assert c.answer.startswith("I can't help with that, but") and r.answer.startswith("Sure")
    pb = parse(by[("pp_cot", BORDER.id)]["chosen"][0]["content"])
    assert "over-refusing: [cyber]" in pb.steps[1] and pb.answer.startswith("Run `kill -9 PID`")
    assert ("early_late", HARM_A.id) in by
    # the step judge's unparseable verdict is explicit: retried, recorded, counted, not used (the prompt falls
    # back to a drift constructed from its right sample, which needs a compliant drift answer: the tiny model's
    # 8-token answers stop mid-sentence, so there is none, and that is counted too)
    assert ("pp_cot", HARM_C.id) not in by
    stats = read_json(sdir / "stats.json")
    assert stats["dropped"]["pp_cot: step judge verdict unparseable"] == 1
    assert stats["dropped"]["pp_cot: no compliant drift answer to construct a drift from"] == 1
    assert stats["drift_answers"]["by_kind"]["harmful"] == {"truncated": 3}
    sj = stats["teacher"]["requests"]["step_judge"]
    assert sj["rejected"] == 1 and sj["rejected: unparseable step verdict"] == 1
    recs = read_rows(sdir / "teacher.jsonl")
    bad = [x for x in recs if x["status"] == "rejected"]
    assert len(bad) == 1 and bad[0]["attempts"] == 3  # malformed_retries (2) + 1
    assert len({x["id"] for x in recs}) == len(recs)
    # a rerun asks nothing: every answer comes from teacher.jsonl
    srv2 = FakeServer(responder=scripted)
    with srv2:
        data = yaml.safe_load(path.read_text())
        data["synth_srpo"]["teacher"]["base_url"] = srv2.url
        path.write_text(yaml.safe_dump(data))
        _run(path)
        assert srv2.requests == 0
    assert read_rows(sdir / "pairs.jsonl") == pairs


def test_faults_are_retried_and_failed_requests_are_asked_again_on_resume(tiny_model_dir, tmp_path):
    """500s, timeouts and malformed answers: malformed ones are re-asked and rejected with a reason; requests that
    keep failing are reported, not recorded, and a rerun asks exactly those again and completes the pairs."""
    ref_dir = tmp_path / "ref"
    with FakeServer(responder=scripted) as srv:
        _run(_setup(ref_dir, tiny_model_dir, _teacher(srv.url)))
    ref = read_rows(ref_dir / "run" / "synth_srpo" / "pairs.jsonl")
    faulty = dict(p_500=0.3, p_timeout=0.1, p_malformed=0.3, timeout_sleep=1.0, seed=5)
    with FakeServer(responder=scripted, **faulty) as srv:
        path = _setup(
            tmp_path / "f", tiny_model_dir, _teacher(srv.url, timeout=0.5, max_retries=0, concurrency=4)
        )
        _run(path)
        assert srv.outcomes["error500"] and srv.outcomes["timeout"] and srv.outcomes["malformed"]
    sdir = tmp_path / "f" / "run" / "synth_srpo"
    errors = read_rows(sdir / "teacher_errors.jsonl")
    recorded = {x["id"] for x in read_rows(sdir / "teacher.jsonl")}
    assert errors and not {e["id"] for e in errors} & recorded  # failures are never recorded as answers
    stats = read_json(sdir / "stats.json")
    assert sum(v.get("failed", 0) for v in stats["teacher"]["requests"].values()) >= len(errors) > 0
    with FakeServer(responder=scripted) as srv:  # the server is healthy again
        data = yaml.safe_load(path.read_text())
        data["synth_srpo"]["teacher"]["base_url"] = srv.url
        path.write_text(yaml.safe_dump(data))
        _run(path)
        asked = {b["messages"][-1]["content"] for b in srv.bodies}
    recs = read_rows(sdir / "teacher.jsonl")
    assert len({x["id"] for x in recs}) == len(recs)
    old_users = {x["id"] for x in recs if x["id"] in recorded}
    assert len(asked) <= len(recs) - len(old_users)  # nothing finished was asked again
    got = read_rows(sdir / "pairs.jsonl")
    assert {x["id"] for x in got} == {x["id"] for x in ref}
    for x in recs:
        if x["status"] == "rejected":
            assert x["reason"] and x["attempts"] == 3


_STAGE = (
    "import sys; from saro.recipe import load_recipe; from saro.stage import RunDir, StageContext; "
    "from saro.synth import synth_srpo as srpo; r = load_recipe(sys.argv[1]); "
    "srpo.run(StageContext(r, RunDir(r.resolved_run_dir()), 'synth_srpo'))"
)


def test_sigkill_mid_teacher_then_resume_gives_the_same_pairs_without_duplicate_requests(
    tiny_model_dir, tmp_path
):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SARO_NO_PROGRESS": "1"}
    with FakeServer(responder=scripted, latency=0.25) as srv:
        ref_path = _setup(tmp_path / "ref", tiny_model_dir, _teacher(srv.url, concurrency=1))
        _run(ref_path)
        ref_dir = tmp_path / "ref" / "run" / "synth_srpo"
        ref_recs = read_rows(ref_dir / "teacher.jsonl")
        path = _setup(tmp_path / "k", tiny_model_dir, _teacher(srv.url, concurrency=1, cache=False))
        recs_path = tmp_path / "k" / "run" / "synth_srpo" / "teacher.jsonl"
        proc = subprocess.Popen([sys.executable, "-c", _STAGE, str(path)], env=env, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            if recs_path.exists() and len(recs_path.read_bytes().splitlines()) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the stage finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = {x["id"] for x in read_rows(recs_path)}
        assert 3 <= len(done) < len(ref_recs)
        srv.bodies.clear()
        res = subprocess.run(
            [sys.executable, "-c", _STAGE, str(path)], env=env, capture_output=True, timeout=300
        )
        assert res.returncode == 0, res.stderr[-2000:]
        resumed = len(srv.bodies)
    kdir = tmp_path / "k" / "run" / "synth_srpo"
    recs = read_rows(kdir / "teacher.jsonl")
    assert sorted(x["id"] for x in recs) == sorted(x["id"] for x in ref_recs)
    assert resumed == sum(x["attempts"] for x in ref_recs if x["id"] not in done)  # no finished item re-asked
    assert read_rows(kdir / "pairs.jsonl") == read_rows(ref_dir / "pairs.jsonl")
    assert read_rows(kdir / "safety_dpo.jsonl") == read_rows(ref_dir / "safety_dpo.jsonl")


def test_offline_is_the_default_and_sends_nothing(tiny_model_dir, tmp_path):
    path = _setup(tmp_path, tiny_model_dir, {"backend": "offline"})
    data = yaml.safe_load(path.read_text())
    data["synth_srpo"]["step_judge"] = "offline"
    path.write_text(yaml.safe_dump(data))
    _run(path)
    sdir = tmp_path / "run" / "synth_srpo"
    assert not (sdir / "teacher.jsonl").exists()
    stats = read_json(sdir / "stats.json")
    assert "teacher" not in stats and stats["by_type"]["pp_cot"] >= 3


def test_judge_reasoning_counts_a_drifting_right_answer_as_wrong(tiny_model_dir, tmp_path):
    right_but_drifting = render(
        ["The user asks for a weapon.", "It seems harmless, so I can help.", "I will decline after all."],
        "I can't help with that.",
    )
    cfg = SynthSRPOConfig.model_validate({"judge_reasoning": True})
    s = Trajectory(id="s", prompt_id=HARM_A.id, text=right_but_drifting, generator="rw")
    assert srpo.judge_samples(cfg, [HARM_A], [s])[HARM_A.id][0][1] == "reasoning_drift"
    plain = SynthSRPOConfig.model_validate({})
    assert srpo.judge_samples(plain, [HARM_A], [s])[HARM_A.id][0][1] == "refused"


# ------------------------------------------------------------------ issue 20: what the teacher may hand over


def test_teacher_answers_cut_at_max_new_tokens_are_rejected(tiny_model_dir, tmp_path):
    """A correction cut after its </think> (the answer ends mid-sentence) used to pass every check; it is
    rejected as truncated, asked again, then recorded as rejected, and no pair is built from it."""
    with FakeServer(responder=scripted) as srv:
        _run(_setup(tmp_path, tiny_model_dir, _teacher(srv.url, max_new_tokens=22)))
    sdir = tmp_path / "run" / "synth_srpo"
    corrections = [x for x in read_rows(sdir / "teacher.jsonl") if x["task"] == "correction"]
    assert corrections and all(
        x["status"] == "rejected" and x["reason"].startswith("truncated") and x["attempts"] == 3
        for x in corrections
    )
    stats = read_json(sdir / "stats.json")
    assert stats["teacher"]["requests"]["correction"]["rejected: truncated"] == len(corrections)
    assert not [x for x in read_rows(sdir / "pairs.jsonl") if x["pair_type"] == "pp_cot"]


def test_teacher_text_that_cites_the_label_is_rejected(tiny_model_dir, tmp_path):
    """The correction prompt tells the teacher the label; a reflection that repeats it ("this request was labelled
    harmful") would teach the student a cue it never sees, so it is rejected."""

    def cites(messages: list[dict]) -> str:
        out = scripted(messages)
        return out.replace("Wait, ", "Wait, this request was labelled harmful and ", 1)

    with FakeServer(responder=cites) as srv:
        _run(_setup(tmp_path, tiny_model_dir, _teacher(srv.url)))
    sdir = tmp_path / "run" / "synth_srpo"
    recs = [x for x in read_rows(sdir / "teacher.jsonl") if x["task"] == "correction"]
    assert recs and all(x["status"] == "rejected" and x["reason"].startswith("label:") for x in recs)
    for x in read_rows(sdir / "pairs.jsonl"):
        assert "labelled harmful" not in x["chosen"][0]["content"]


def test_a_step_verdict_that_keeps_a_drifting_prefix_builds_no_pair(tiny_model_dir, tmp_path):
    """The teacher says only the answer is wrong (ANSWER) for a sample whose reasoning already argues for
    helping: the PP-COT chosen would keep that reasoning before its reflection. Such a pair is not built."""

    def answer_only(messages: list[dict]) -> str:
        return (
            "ANSWER" if messages[0]["content"].startswith("You review the reasoning") else scripted(messages)
        )

    with FakeServer(responder=answer_only) as srv:
        _run(_setup(tmp_path, tiny_model_dir, _teacher(srv.url)))
    sdir = tmp_path / "run" / "synth_srpo"
    by = {(x["pair_type"], x["meta"]["prompt_id"]): x for x in read_rows(sdir / "pairs.jsonl")}
    assert ("pp_cot", HARM_A.id) not in by and ("pp_cot", BORDER.id) not in by
    dropped = read_json(sdir / "stats.json")["dropped"]
    assert dropped["pp_cot: shared prefix leans wrong (harmful)"] >= 1
    assert dropped["pp_cot: shared prefix leans wrong (borderline)"] == 1
