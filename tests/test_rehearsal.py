"""The paper recipe rehearsed on the CPU through real local servers (recipes/paper/rehearsal.yaml).

`recipes/paper/llama3.1-8b.yaml`'s stages and settings, sizes shrunk, training in-process, and every outside service
a real local process: `saro serve embedded` (SmolLM2-135M-Instruct) is the RW teacher (openai backend: n samples per
request, seeds, retries, concurrency), the SRPO teacher (openai_batch, through saro serve's Batch API) and the drift
model; `saro serve` of a tiny model is eval's LLM judge. The student is the embedded model, trained in-process. The run is SIGKILLed once during synthesis and resumed, and
the teacher server is stopped and started again while the resumed synthesis waits on it. The tests then check what
the run produced, and write its acceptance rates and SRS saving to ``rehearsal.json`` (printed as the last test).

A 135M teacher writes poor reasoning: these checks are about plumbing and invariants, not the quality of the data.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from rehearsal_support import SaroRun, ServedModel, line_count, sigkill_group, wait_for
from saro.judges import JudgeInput, get_judge
from saro.judges.step import step_stance
from saro.models.loading import load_tokenizer
from saro.pipeline import load_recipe
from saro.prompts.wording import base_text
from saro.reasoning import parse
from saro.records import PreferencePair, Prompt, SFTExample, Trajectory, read_jsonl, read_rows, stable_id
from saro.synth.answers import Answer, answer_id
from saro.testing import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "paper" / "rehearsal.yaml"
KEY = "sk-rehearsal-local-key-0123"
WAIT = 1800.0  # seconds any one wait may take on a busy 2-core machine
# The words of the reviewer's note ("Reviewer note: this request was labelled harmful ...") and close variants
LABEL_WORDS = re.compile(r"\breviewer\b|\blabell?ed\b|\bthe label\b|\bits label\b", re.IGNORECASE)


@dataclass
class Rehearsal:
    """What the rehearsal ran and where it wrote."""

    run: Path
    sets: dict[str, str]
    teacher: ServedModel
    judge: ServedModel
    expected: int  # RW prompts x k
    killed_at: int  # candidates on disk when synthesis was SIGKILLed
    stopped_at: int  # candidates on disk when the teacher server was stopped
    client_alive_at_stop: bool
    seconds: dict[str, float] = field(default_factory=dict)
    load: dict[str, list[float]] = field(default_factory=dict)
    runner: Any = None  # the SaroRun that continues the recipe

    def stage(self, name: str) -> Path:
        return self.run / name

    def rw_prompts(self) -> list[Prompt]:
        return read_jsonl(self.run / "prompts" / "rw.jsonl", Prompt)

    def srpo_prompts(self) -> list[Prompt]:
        return read_jsonl(self.run / "prompts" / "srpo.jsonl", Prompt)

    def candidates(self) -> list[Trajectory]:
        return read_jsonl(self.stage("synth_rw") / "candidates.jsonl", Trajectory)

    def pairs(self) -> list[PreferencePair]:
        sdir = self.stage("synth_srpo")
        return [
            p for name in ("pairs.jsonl", "safety_dpo.jsonl") for p in read_jsonl(sdir / name, PreferencePair)
        ]


def _k() -> int:
    return int(load_recipe(RECIPE).synth_rw.k)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    """The servers, and synth_rw run as a user would meet faults: SIGKILLed once, resumed, the teacher restarted."""
    tmp = tmp_path_factory.mktemp("rehearsal")
    t0, load0 = time.monotonic(), list(os.getloadavg())
    judge_model = build_tiny_model(
        tmp / "judge-model", seed=1, context_length=4096
    )  # the judge prompt is long
    # one thread per process: on a shared 2-core machine a second OpenMP thread spins and slows everything down
    teacher = ServedModel("embedded", "teacher", tmp, api_key=KEY, batch_dir=tmp / "batches").start()
    judge = ServedModel(str(judge_model), "judge", tmp).start()
    try:
        teacher.wait_ready(WAIT)
        judge.wait_ready(WAIT)
        run = tmp / "run"
        sets = {
            "run_dir": str(run),
            "synth_rw.teacher.base_url": teacher.url,
            "synth_srpo.teacher.base_url": teacher.url,
            "synth_srpo.drift_model.base_url": teacher.url,
            "eval.judge_options.llm.base_url": judge.url,
        }
        env = {**os.environ, "OPENAI_API_KEY": KEY, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "SARO_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip
        runner = SaroRun(RECIPE, sets, tmp, env)
        cands = run / "synth_rw" / "candidates.jsonl"
        seconds = {"servers": round(time.monotonic() - t0, 1)}

        # A: synthesis SIGKILLed as soon as the first candidates are on disk
        t = time.monotonic()
        proc, _ = runner.start(["--until", "synth_rw"])
        wait_for("the first candidates", lambda: line_count(cands) > 0, WAIT, lambda: proc.poll() is None)
        sigkill_group(proc)
        killed_at = line_count(cands)
        expected = len(read_jsonl(run / "prompts" / "rw.jsonl", Prompt)) * _k()

        # B: resumed; the teacher server is stopped while the resumed synthesis waits on it, then started again
        proc, log = runner.start(["--until", "synth_rw"])
        running = "stage synth_rw: running"
        wait_for(
            "the resumed synthesis", lambda: running in log.read_text(), WAIT, lambda: proc.poll() is None
        )
        time.sleep(3)  # its requests are out
        stopped_at, alive = line_count(cands), proc.poll() is None
        teacher.stop(grace=5)
        teacher.start().wait_ready(WAIT)
        rc = proc.wait(WAIT)
        assert rc == 0, log.read_text(errors="replace")[-4000:]
        seconds["synth_rw"] = round(time.monotonic() - t, 1)
        r = Rehearsal(run, sets, teacher, judge, expected, killed_at, stopped_at, alive, seconds,
                      {"start": load0, "end": list(os.getloadavg())})  # fmt: skip
        r.runner = runner
        yield r
    finally:
        teacher.stop()
        judge.stop()


@pytest.fixture(scope="module")
def pipeline(rehearsal: Rehearsal) -> Rehearsal:
    """The rest of the recipe (train_sft ... report) on the same servers.

    Slow, and not in `make test`: with the 135M teacher RIT-D is usually empty (its reasoning lacks the "Wait, ..."
    reflection the format requires: 0 of 12 candidates passed in this version's run), and train_sft stops there
    with a one-line error. The synthesis checks above run in `make test`."""
    t = time.monotonic()
    rehearsal.runner.finish(timeout=3 * WAIT)
    rehearsal.seconds["rest"] = round(time.monotonic() - t, 1)
    return rehearsal


# ------------------------------------------------------------------------------------------- synthesis


def test_rehearsal_k_candidates_per_prompt_are_distinct_samples(rehearsal: Rehearsal) -> None:
    k = _k()
    by_prompt: dict[str, list[Trajectory]] = defaultdict(list)
    for c in rehearsal.candidates():
        by_prompt[c.prompt_id].append(c)
    assert set(by_prompt) == {p.id for p in rehearsal.rw_prompts()}
    assert all(sorted(c.sample for c in cs) == list(range(k)) for cs in by_prompt.values())
    distinct = [len({c.text for c in cs}) for cs in by_prompt.values()]
    assert sum(distinct) / len(distinct) >= 0.9 * k, f"distinct candidates per prompt {distinct} (k = {k})"


def test_rehearsal_sigkill_in_synthesis_resumes_with_nothing_lost_or_duplicated(rehearsal: Rehearsal) -> None:
    assert 0 < rehearsal.killed_at < rehearsal.expected  # killed mid-synthesis
    ids = [c.id for c in rehearsal.candidates()]
    want = {stable_id(p.id, k) for p in rehearsal.rw_prompts() for k in range(_k())}
    assert len(ids) == len(set(ids)) == rehearsal.expected and set(ids) == want


def test_rehearsal_teacher_restart_leaves_every_request_accounted_for(rehearsal: Rehearsal) -> None:
    assert (
        rehearsal.client_alive_at_stop and rehearsal.stopped_at < rehearsal.expected
    )  # stopped mid-synthesis
    assert len(rehearsal.teacher.logs) == 2  # stopped once, started again
    restarted = rehearsal.teacher.logs[1].read_text()
    assert (
        "POST /v1/chat/completions 200" in restarted
    )  # the retried requests were answered by the new server
    sdir = rehearsal.stage("synth_rw")
    have = {c.id for c in rehearsal.candidates()}
    failed = read_rows(sdir / "errors.jsonl") if (sdir / "errors.jsonl").exists() else []
    assert all(f["candidate_id"] in have for f in failed)  # a failed request was asked again and answered
    reasons = [r for row in read_rows(sdir / "rejects.jsonl") for r in row["reasons"]]
    assert not [r for r in reasons if r.startswith(("request failed", "no candidate"))]


def _reasoning_tokens(tok: Any, text: str) -> tuple[int, int]:
    def n(s: str) -> int:
        return len(tok(s, add_special_tokens=False)["input_ids"])

    return n(parse(text).reasoning or ""), n(text)


def test_rehearsal_rit_d_keeps_the_shortest_passing_candidate_by_reasoning_tokens(
    rehearsal: Rehearsal,
) -> None:
    sdir = rehearsal.stage("synth_rw")
    rejected = {r["id"] for r in read_rows(sdir / "rejects.jsonl")}
    passing: dict[str, list[Trajectory]] = defaultdict(list)
    for c in rehearsal.candidates():
        if c.status == "ok" and c.id not in rejected:
            passing[c.prompt_id].append(c)
    tok = load_tokenizer(load_recipe(RECIPE).model.source)  # the student's tokenizer counts SRS tokens
    rit = read_jsonl(sdir / "rit_d.jsonl", SFTExample)
    assert {ex.meta["prompt_id"] for ex in rit} == set(passing)  # a prompt is kept iff a candidate passed
    for ex in rit:
        chosen = ex.messages[-1]["content"]
        lengths = {c.text: _reasoning_tokens(tok, c.text) for c in passing[ex.meta["prompt_id"]]}
        assert chosen in lengths and lengths[chosen] == min(lengths.values())


def _cited(texts: list[str]) -> int:
    return sum(1 for text in texts if LABEL_WORDS.search(parse(text).reasoning or ""))


def test_rehearsal_no_kept_reasoning_mentions_the_label_cue(rehearsal: Rehearsal) -> None:
    rit = read_jsonl(rehearsal.stage("synth_rw") / "rit_d.jsonl", SFTExample)
    assert not _cited([ex.messages[-1]["content"] for ex in rit]), "RIT-D reasoning refers to the label note"


def test_rehearsal_truncated_teacher_answers_were_rejected(rehearsal: Rehearsal) -> None:
    cands = rehearsal.candidates()
    cut = [c for c in cands if c.meta.get("finished") is False]
    assert cut, "no teacher answer reached max_new_tokens: the rehearsal did not exercise truncation"
    assert "finish=length" in rehearsal.teacher.log_text()  # the server says so too, independently
    rejected = {r["id"] for r in read_rows(rehearsal.stage("synth_rw") / "rejects.jsonl")}
    assert all(c.status == "rejected" or c.id in rejected for c in cut)
    rit = read_jsonl(rehearsal.stage("synth_rw") / "rit_d.jsonl", SFTExample)
    assert not {ex.messages[-1]["content"] for ex in rit} & {c.text for c in cut}


def _summary(r: Rehearsal) -> dict[str, Any]:
    rw = json.loads((r.stage("synth_rw") / "stats.json").read_text())
    cut = sum(1 for c in r.candidates() if c.meta.get("finished") is False)
    out: dict[str, Any] = {
        "rw": {
            "prompts": rw["prompts"],
            "candidates": rw["candidates"],
            "k": rw["distinct_candidates"]["k"],
            "distinct_per_prompt": rw["distinct_candidates"]["mean_per_prompt"],
            "candidate_acceptance": rw["candidate_acceptance"],
            "prompt_acceptance_by_kind": rw["acceptance"]["kind"],
            "rejection_reasons": rw["rejection_reasons"],
            "truncated_candidates": cut,
            "srs": rw["shortest_rejection_sampling"],
        },
        "faults": {
            "sigkill_at_candidates": r.killed_at,
            "teacher_stopped_at_candidates": r.stopped_at,
            "candidates_expected": r.expected,
        },
        "seconds": r.seconds,
        "loadavg": r.load,
    }
    if (r.stage("synth_srpo") / "stats.json").exists():
        srpo = json.loads((r.stage("synth_srpo") / "stats.json").read_text())
        out["srpo"] = {
            "pairs_by_type": srpo["by_type"],
            "safety_dpo_pairs": srpo["safety_dpo_pairs"],
            "drift_answers": srpo["drift_answers"],
            "dropped": srpo["dropped"],
            "teacher_requests": srpo.get("teacher", {}).get("requests"),
        }
    return out


def test_rehearsal_reports_its_rates(rehearsal: Rehearsal, capsys: pytest.CaptureFixture[str]) -> None:
    summary = _summary(rehearsal)
    (rehearsal.run / "rehearsal.json").write_text(json.dumps(summary, indent=2) + "\n")
    acc, srs = summary["rw"]["candidate_acceptance"]["all"], summary["rw"]["srs"]
    reasons = Counter(summary["rw"]["rejection_reasons"]).most_common(4)
    with capsys.disabled():
        print(
            f"\nrehearsal: RW candidates accepted {acc['k']}/{acc['n']} = {acc['rate']} "
            f"[{acc['lo']}, {acc['hi']}]; SRS saving {srs['srs_saving']} of reasoning tokens (n = {srs['n']}); "
            f"rejections {dict(reasons)}; seconds {summary['seconds']}; load {summary['loadavg']}; "
            f"{rehearsal.run / 'rehearsal.json'}"
        )
    assert acc["n"] == rehearsal.expected


# ------------------------------------------------------------------------ the rest of the recipe (slow)


def _batch_results(rehearsal: Rehearsal) -> list[dict[str, Any]]:
    path = rehearsal.run / ".cache" / "requests" / "openai_batch" / "batch_results.jsonl"
    return read_rows(path) if path.exists() else []


@pytest.mark.slow
def test_rehearsal_srpo_keeps_no_label_cue_and_no_unfinished_teacher_text(pipeline: Rehearsal) -> None:
    pairs = pipeline.pairs()
    assert not _cited([p.chosen[-1]["content"] for p in pairs]), "an SRPO chosen refers to the label note"
    unfinished = {r["text"].strip() for r in _batch_results(pipeline) if not r["finished"]}
    texts = [m["content"] for p in pairs for m in (p.chosen[-1], p.rejected[-1])]
    assert not [t for t in texts for u in unfinished if u and u in t]  # a cut teacher answer is never trained


@pytest.mark.slow
def test_rehearsal_every_drift_answer_used_was_judged_compliant(pipeline: Rehearsal) -> None:
    sdir = pipeline.stage("synth_srpo")
    rows = read_rows(sdir / "drift_answers.jsonl")
    answers = {r["id"]: Answer(r["text"], bool(r.get("finished", True))) for r in rows}
    prompts = {p.id: p for p in pipeline.srpo_prompts()}
    assert {answer_id(base_text(p)) for p in prompts.values()} <= set(answers)  # every one was asked and kept
    judge = get_judge(load_recipe(RECIPE).synth_srpo.judge)  # type: ignore[union-attr]
    used = []
    for pair in pipeline.pairs():
        p = prompts[pair.meta["prompt_id"]]
        ans = answers[answer_id(base_text(p))]
        # a drift answer is the compliant (rejected) side for a harmful prompt, the answer (chosen) for a benign one
        side = pair.rejected if p.kind == "harmful" else pair.chosen
        if pair.meta.get("drift_answer") or (ans.text.strip() and ans.text.strip() in side[-1]["content"]):
            used.append((p, ans))
    verdicts = judge.judge([JudgeInput(base_text(p), a.text) for p, a in used])  # judged again, independently
    assert all(v.label == "complied" and a.complete for (_, a), v in zip(used, verdicts, strict=True))
    counted = json.loads((sdir / "stats.json").read_text())["drift_answers"]["by_kind"]
    assert sum(sum(c.values()) for c in counted.values()) == len(prompts)  # each answer judged and counted


def _shared_steps(a: str, b: str) -> list[str]:
    out = []
    for x, y in zip(parse(a).steps, parse(b).steps, strict=False):
        if x != y:
            break
        out.append(x)
    return out


@pytest.mark.slow
def test_rehearsal_no_pp_cot_chosen_keeps_a_compliant_shared_prefix(pipeline: Rehearsal) -> None:
    prompts = {p.id: p for p in pipeline.srpo_prompts()}
    for pair in pipeline.pairs():
        if pair.pair_type not in ("pp_cot", "early_late"):
            continue
        p = prompts[pair.meta["prompt_id"]]
        wrong = "help" if p.kind == "harmful" else "refuse"
        prefix = _shared_steps(pair.chosen[-1]["content"], pair.rejected[-1]["content"])
        assert not [s for s in prefix if step_stance(s) == wrong], (pair.id, p.kind)


@pytest.mark.slow
def test_rehearsal_ran_every_stage_through_the_local_services(pipeline: Rehearsal) -> None:
    manifest = json.loads((pipeline.run / "manifest.json").read_text())
    done = [s for s, st in manifest["stages"].items() if st.get("status") == "done"]
    assert done == ["prompts", "synth_rw", "train_sft", "synth_srpo", "train_dpo", "eval", "report"]
    assert KEY not in json.dumps(manifest)  # the key is read from the environment, never written
    assert (pipeline.run / "train_sft" / "final").is_dir() and (pipeline.run / "train_dpo" / "final").is_dir()
    teacher_log = pipeline.teacher.log_text()
    assert re.search(r"batch \S+: completed", teacher_log)  # the SRPO teacher went through the Batch API
    assert _batch_results(pipeline)
    assert "POST /v1/chat/completions 200" in pipeline.judge.log_text()  # eval's LLM judge over HTTP
    assert KEY not in teacher_log
    (pipeline.run / "rehearsal.json").write_text(json.dumps(_summary(pipeline), indent=2) + "\n")
