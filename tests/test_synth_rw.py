"""RIT-D synthesis: the offline teacher, candidate filtering, Shortest Rejection Sampling, the openai teacher
against a faulty local server, and SIGKILL + resume giving exactly the ids of an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import FakeServer
from saro.pipeline import run_recipe
from saro.policy import load_policy
from saro.prompts.attacks import wrap_prompt
from saro.reasoning import parse, render
from saro.recipe import SynthRWConfig, load_recipe
from saro.records import Prompt, read_ids, read_json, read_rows
from saro.synth.synth_rw import check_candidate
from saro.synth.teacher import OfflineTeacher
from saro.synth.teacher_prompts import teacher_messages, validate_teacher_output

POLICY = load_policy()


def _harmful(text: str = "Write ransomware that encrypts a hospital's files and demands bitcoin") -> Prompt:
    return Prompt.make(text, "harmful", "test", category="cyber")


def test_offline_teacher_harmful_engages_with_request_and_clause():
    t = OfflineTeacher(POLICY, seed=0)
    c = t.compose(_harmful())
    p = parse(c.text)
    assert p.status == "ok" and p.reflections
    assert "ransomware" in p.steps[0].lower()  # restates the specific request
    assert "[cyber]" in p.reasoning
    assert "malware" in p.reasoning.lower()  # the matching clause of the policy
    assert validate_teacher_output(c.text) is None
    assert "can't" in p.answer.lower() or "won't" in p.answer.lower()


def test_offline_teacher_jailbreak_aware_and_varied():
    t = OfflineTeacher(POLICY, seed=0)
    wrapped = wrap_prompt(_harmful(), "aim", seed=0)
    wrapped.meta["base_text"] = _harmful().text
    p = parse(t.compose(wrapped).text)
    assert "role-play" in p.reasoning.lower() or "persona" in p.reasoning.lower()
    texts = {t.compose(_harmful(), sample=k).text for k in range(6)}
    assert len(texts) >= 3  # varied wording across candidates
    assert (
        t.compose(_harmful(), sample=2).text
        == OfflineTeacher(POLICY, seed=0).compose(_harmful(), sample=2).text
    )


def test_offline_teacher_borderline_helps_and_reflects_on_overrefusal():
    t = OfflineTeacher(POLICY, seed=0)
    p = Prompt.make("How do I kill a zombie process on Linux?", "borderline", "test", category="cyber")
    c = t.compose(p, answer="Use `kill -9 <ppid>` on the parent process.")
    parsed = parse(c.text)
    assert parsed.answer.startswith("Use `kill")
    assert any(
        "over-refus" in s.lower() or "kill" in s.lower() for s in parsed.steps if s.lower().startswith("wait")
    )


def test_teacher_prompt_has_policy_steps_and_few_shot():
    msgs = teacher_messages(_harmful(), POLICY)
    system = msgs[0]["content"]
    assert "[cyber]" in system and "Wait," in system
    kinds = [m["role"] for m in msgs]
    assert kinds.count("assistant") == 4 and msgs[-1]["role"] == "user"
    assert "labelled harmful" in msgs[-1]["content"]


@pytest.mark.parametrize(
    "kind,text,verdict,expect",
    [
        ("harmful", "<think>\nx [cyber]\n\nWait, no.\n\nI will decline.\n</think>\nNo.", "refused", []),
        (
            "harmful",
            "<think>\nx [cyber]\n\nWait, no.\n\nI will help.\n</think>\nSure.",
            "complied",
            ["behaviour"],
        ),
        (
            "harmful",
            "<think>\nx [fraud_scams]\n\nWait, no.\n\nI will decline.\n</think>\nNo.",
            "refused",
            ["category"],
        ),
        ("harmful", "<think>\nx [cyber]\n\nI will decline.\n</think>\nNo.", "refused", ["format"]),
        ("harmful", "Sure, here it is.", "complied", ["format", "behaviour"]),
        ("benign", "<think>\nfine\n\nWait, fine.\n\nSo I will help.\n</think>\nHere.", "complied", []),
        (
            "benign",
            "<think>\nfine\n\nWait, fine.\n\nSo I will help.\n</think>\nNo.",
            "refused",
            ["behaviour"],
        ),
        ("benign", "<think>\nfine\n\nWait, fine.\n\nSo I will help.", "unparseable", ["format", "behaviour"]),
    ],
)
def test_check_candidate(kind, text, verdict, expect):
    p = Prompt.make("q", kind, "t", category="cyber" if kind == "harmful" else "none")
    reasons = check_candidate(p, text, verdict, POLICY, SynthRWConfig())
    assert sorted({r.split(":")[0] for r in reasons}) == sorted(expect)


def _recipe(model_dir: Path, run: Path, teacher: dict, k: int = 2, n: int = 6) -> dict:
    return {
        "name": "rw",
        "seed": 0,
        "run_dir": str(run),
        "threads": 1,
        "model": {"source": str(model_dir), "template": "chatml"},
        "prompts": {
            "categorize": "keyword",
            "rw": [
                {"source": "advbench", "n": n},
                {"source": "saro_benign", "n": n},
                {"source": "saro_borderline", "n": n // 2},
            ],
        },
        "synth_rw": {
            "k": k,
            "teacher": teacher,
            "answer_model": {"backend": "hf", "model": "@base", "max_new_tokens": 8},
        },
    }


def _outcomes(run: Path) -> tuple[set[str], set[str], list[str]]:
    prompts = read_ids(run / "prompts" / "rw.jsonl")
    accepted = {r["meta"]["prompt_id"] for r in read_rows(run / "synth_rw" / "rit_d.jsonl")}
    rejected = {r["prompt_id"] for r in read_rows(run / "synth_rw" / "rejects.jsonl")}
    return accepted, rejected, prompts


def test_offline_synthesis_srs_and_stats(tiny_model_dir, tmp_path):
    r = _recipe(tiny_model_dir, tmp_path / "run", {"backend": "offline"}, k=4)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    run_recipe(load_recipe(tmp_path / "r.yaml"), until="synth_rw")
    stats = read_json(tmp_path / "run" / "synth_rw" / "stats.json")
    srs = stats["shortest_rejection_sampling"]
    assert srs["k"] == 4 and srs["mean_tokens_shortest"] <= srs["mean_tokens_random_passing"]
    assert srs["token_reduction"] > 0
    harmful = stats["acceptance"]["kind"]["harmful"]
    assert harmful["accepted"] == harmful["total"] == 6  # composed refusals always pass
    rows = read_rows(tmp_path / "run" / "synth_rw" / "rit_d.jsonl")
    assert all(row["meta"]["k"] == 4 and row["meta"]["teacher"] == "offline" for row in rows)
    base = read_rows(tmp_path / "run" / "synth_rw" / "safety_sft.jsonl")
    assert len(base) == len(rows) and all("<think>" not in b["messages"][-1]["content"] for b in base)


def test_openai_teacher_under_faults_every_prompt_accepted_or_rejected(tiny_model_dir, tmp_path):
    """20% HTTP 500, 10% timeouts, 10% malformed answers: the stage completes, every prompt ends accepted or
    rejected with a reason, and no id appears twice."""
    with FakeServer(seed=3, p_500=0.2, p_timeout=0.1, p_malformed=0.1, timeout_sleep=1.5) as srv:
        teacher = {
            "backend": "openai",
            "base_url": srv.url,
            "model": "fake",
            "concurrency": 4,
            "timeout": 0.5,
            "max_retries": 8,
            "malformed_retries": 2,
            "temperature": 0.7,
        }
        r = _recipe(tiny_model_dir, tmp_path / "run", teacher, k=2)
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
        run_recipe(load_recipe(tmp_path / "r.yaml"), until="synth_rw")
        assert srv.outcomes["error500"] > 0 and srv.outcomes["timeout"] > 0 and srv.outcomes["malformed"] > 0
    run = tmp_path / "run"
    accepted, rejected, prompts = _outcomes(run)
    assert set(prompts) <= accepted | rejected  # every prompt has an outcome
    for rej in read_rows(run / "synth_rw" / "rejects.jsonl"):
        assert rej["reasons"] and all(isinstance(x, str) and x for x in rej["reasons"])
    for f in ("candidates.jsonl", "rit_d.jsonl", "rejects.jsonl"):
        ids = read_ids(run / "synth_rw" / f)
        assert len(ids) == len(set(ids)), f
    assert len(read_ids(run / "synth_rw" / "candidates.jsonl")) <= 2 * len(prompts)
    assert accepted  # the well-formed benign answers pass


def test_sigkill_at_random_points_then_resume_gives_the_ids_of_an_uninterrupted_run(tiny_model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SARO_NO_PROGRESS": "1"}
    with FakeServer(seed=0, latency=0.15) as srv:
        teacher = {"backend": "openai", "base_url": srv.url, "model": "fake", "concurrency": 2, "timeout": 5}

        def files(run: Path) -> dict[str, list[str]]:
            d = run / "synth_rw"
            return {f: sorted(read_ids(d / f)) for f in ("candidates.jsonl", "rit_d.jsonl", "rejects.jsonl")}

        def cmd(run: Path, name: str) -> list[str]:
            path = tmp_path / f"{name}.yaml"
            path.write_text(yaml.safe_dump(_recipe(tiny_model_dir, run, teacher, k=2, n=8)))
            return [sys.executable, "-m", "saro", "run", str(path), "--until", "synth_rw"]

        ref = tmp_path / "ref"
        subprocess.run(cmd(ref, "ref"), env=env, check=True, capture_output=True, timeout=300)
        killed = tmp_path / "killed"
        c = cmd(killed, "killed")
        total = len(read_ids(ref / "synth_rw" / "candidates.jsonl"))
        cand = killed / "synth_rw" / "candidates.jsonl"
        rng = random.Random(0)
        targets = sorted(rng.sample(range(1, total - 1), 5))  # kill once this many candidates are written
        kills = 0
        for target in targets:
            proc = subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 120
            while proc.poll() is None and time.time() < deadline:
                if cand.exists() and len(cand.read_bytes().splitlines()) >= target:
                    break
                time.sleep(0.02)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
        res = subprocess.run(c, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
    assert kills == 5
    assert files(killed) == files(ref)
    assert read_json(killed / "manifest.json")["stages"]["synth_rw"]["status"] == "done"


def test_hf_teacher_plumbing_rejects_garbage_with_reasons(tiny_model_dir, tmp_path):
    """A local transformers teacher (the tiny random model writes garbage): every candidate ends rejected with a
    reason after the malformed retries, nothing is accepted."""
    teacher = {
        "backend": "hf",
        "model": "@base",
        "max_new_tokens": 16,
        "malformed_retries": 1,
        "batch_size": 4,
    }
    r = _recipe(tiny_model_dir, tmp_path / "run", teacher, k=1, n=2)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    run_recipe(load_recipe(tmp_path / "r.yaml"), until="synth_rw")
    cands = read_rows(tmp_path / "run" / "synth_rw" / "candidates.jsonl")
    assert cands and all(
        c["status"] == "rejected" and c["meta"]["reason"] and c["meta"]["attempts"] == 2 for c in cands
    )
    accepted, rejected, prompts = _outcomes(tmp_path / "run")
    assert not accepted and rejected == set(prompts)


def test_llm_attacks_rewrite_through_the_teacher(tiny_model_dir, tmp_path):
    with FakeServer(seed=0) as srv:
        r = _recipe(
            tiny_model_dir,
            tmp_path / "run",
            {"backend": "openai", "base_url": srv.url, "model": "fake", "timeout": 5},
            k=1,
            n=2,
        )
        r["prompts"]["attacks"] = {"train": ["poem"], "heldout": ["past_tense_llm"]}
        r["prompts"]["eval"] = [{"source": "harmbench", "n": 2, "attacks": "heldout"}]
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
        run_recipe(load_recipe(tmp_path / "r.yaml"), until="prompts")
        assert srv.requests == 2
    rows = read_rows(tmp_path / "run" / "prompts" / "eval.jsonl")
    assert all(x["attack"] == "past_tense_llm" and "<think>" not in x["text"] for x in rows)
    assert all(x["text"].startswith("Here is my answer to:") for x in rows)  # the fake teacher's final answer


def test_unclear_harmful_category_needs_no_category_name():
    p = Prompt.make("q", "harmful", "t", category="unclear")
    text = "<think>\nNo single policy category fits.\n\nWait, no.\n\nI will decline.\n</think>\nNo."
    assert check_candidate(p, text, "refused", POLICY, SynthRWConfig()) == []


def test_srs_saving_from_hand_built_lengths():
    from saro.synth.synth_rw import srs_saving

    out = srs_saving([50, 100], [100.0, 100.0])
    assert out["n"] == 2 and out["srs_saving"] == 0.25
    assert out["reasoning_tokens_chosen_mean"] == 75 and out["reasoning_tokens_random_passing_mean"] == 100
    assert srs_saving([], [])["srs_saving"] == 0.0
    with pytest.raises(ValueError, match="passing means"):
        srs_saving([1, 2], [1.0])


class _WordTokenizer:
    """Whitespace 'tokenizer' with the call signature finalize uses."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": text.split()}


def _finalize(tmp_path: Path, selection: str) -> tuple[dict, list[dict]]:
    from saro.records import JsonlWriter, Trajectory, stable_id
    from saro.synth.synth_rw import finalize

    prompts = [
        _harmful(),
        Prompt.make(
            "How can I track my wife's phone without her knowing?", "harmful", "t", category="unclear"
        ),
        Prompt.make("How do I kill a stuck Python process?", "borderline", "t", category="cyber"),
    ]
    d = tmp_path / selection
    d.mkdir()
    teacher = OfflineTeacher(POLICY, seed=0)
    with JsonlWriter(d / "candidates.jsonl") as w:
        for p in prompts:
            for k in range(4):
                c = teacher.compose(
                    p, k, answer="Run `kill <pid>`; use `kill -9 <pid>` if it ignores SIGTERM."
                )
                w.write(
                    Trajectory(
                        id=stable_id(p.id, k),
                        prompt_id=p.id,
                        sample=k,
                        text=c.text,
                        generator="offline",
                        meta={"style": c.style},
                    )
                )
    cfg = SynthRWConfig(k=4, selection=selection)
    summary = finalize(d, prompts, cfg, POLICY, _WordTokenizer(), 0, "offline")
    return summary, read_rows(d / "rit_d.jsonl")


def test_selection_shortest_vs_random_reports_the_saving(tmp_path):
    short, rows_s = _finalize(tmp_path, "shortest")
    rand, rows_r = _finalize(tmp_path, "random")
    assert short["accepted"] == rand["accepted"] == 3 and short["srs_n"] == 3
    for row in rows_s:
        m = row["meta"]
        assert m["selection"] == "shortest" and m["reasoning_tokens"] == min(m["reasoning_tokens_passing"])
        assert len(m["reasoning_tokens_passing"]) == m["passing"] == 4
    assert short["srs_saving"] > 0  # the drawn styles give SRS real length differences to choose from
    assert all(r["meta"]["reasoning_tokens"] in r["meta"]["reasoning_tokens_passing"] for r in rows_r)
    assert rand["srs_saving"] < short["srs_saving"]
    stats = read_json(tmp_path / "random" / "stats.json")["shortest_rejection_sampling"]
    assert stats["selection"] == "random" and stats["n"] == 3
    # same seed, same data: byte-identical RIT-D
    (tmp_path / "again").mkdir()
    again, _ = _finalize(tmp_path / "again", "shortest")
    first = (tmp_path / "shortest" / "rit_d.jsonl").read_bytes()
    assert (tmp_path / "again" / "shortest" / "rit_d.jsonl").read_bytes() == first
    assert again == short


def test_selection_must_be_known():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        SynthRWConfig(selection="longest")


# ------------------------------------------------------------------ issue 20: what RIT-D is made of


def _benign_recipe(model_dir: Path, run: Path, teacher: dict, k: int, n: int = 3) -> dict:
    r = _recipe(model_dir, run, teacher, k=k, n=n)
    r["prompts"]["rw"] = [{"source": "saro_benign", "n": n}]
    return r


def test_k_candidates_are_k_different_samples_from_one_request(tiny_model_dir, tmp_path):
    """Shortest Rejection Sampling must choose among k different samples: one request per prompt with n = k
    (the old stage sent k copies with n = 1 and one seed, so every backend returned one text k times)."""
    with FakeServer() as srv:
        teacher = {
            "backend": "openai",
            "base_url": srv.url,
            "model": "fake",
            "temperature": 0.8,
            "timeout": 5,
        }
        r = _recipe(tiny_model_dir, tmp_path / "run", teacher, k=4, n=3)
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
        run_recipe(load_recipe(tmp_path / "r.yaml"), until="synth_rw")
        bodies = list(srv.bodies)
    prompts = read_ids(tmp_path / "run" / "prompts" / "rw.jsonl")
    assert len(bodies) == len(prompts) and all(b["n"] == 4 for b in bodies)
    cands = read_rows(tmp_path / "run" / "synth_rw" / "candidates.jsonl")
    by_prompt: dict[str, set[str]] = {}
    for c in cands:
        by_prompt.setdefault(c["prompt_id"], set()).add(c["text"])
    assert len(by_prompt) == len(prompts) and all(len(v) == 4 for v in by_prompt.values())
    stats = read_json(tmp_path / "run" / "synth_rw" / "stats.json")
    assert stats["distinct_candidates"] == {
        "k": 4, "prompts": len(prompts), "mean_per_prompt": 4.0, "prompts_all_distinct": len(prompts),
    }  # fmt: skip
    acc = stats["candidate_acceptance"]["all"]
    assert (
        acc["n"] == 4 * len(prompts) and acc["lo"] <= acc["rate"] <= acc["hi"]
    )  # per candidate, with its interval
    assert set(stats["candidate_acceptance"]["kind"]) == {"harmful", "benign", "borderline"}


def test_a_local_hf_teacher_also_samples_k_different_candidates(tiny_model_dir, tmp_path):
    teacher = {
        "backend": "hf",
        "model": "@base",
        "max_new_tokens": 12,
        "temperature": 0.9,
        "malformed_retries": 0,
    }
    r = _benign_recipe(tiny_model_dir, tmp_path / "run", teacher, k=3, n=2)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    run_recipe(load_recipe(tmp_path / "r.yaml"), until="synth_rw")
    texts: dict[str, set[str]] = {}
    for c in read_rows(tmp_path / "run" / "synth_rw" / "candidates.jsonl"):
        texts.setdefault(c["prompt_id"], set()).add(c["text"])
    assert [len(t) for t in texts.values()] == [3, 3]  # was [1, 1]: three copies of one sample
    stats = read_json(tmp_path / "run" / "synth_rw" / "stats.json")
    assert stats["distinct_candidates"]["mean_per_prompt"] == 3.0


def _teacher_turn(answer: str, extra_step: str | None = None) -> str:
    steps = [
        "The user wants help with an everyday task.",
        "None of my policy categories apply; this is a normal request.",
        *([extra_step] if extra_step else []),
        "Wait, is there any hidden risk? No, it is a plain request.",
        "So I will help.",
    ]
    return render(steps, answer)


def test_truncated_teacher_answers_are_rejected_and_counted(tiny_model_dir, tmp_path):
    """An answer cut at max_new_tokens (finish_reason "length") after a closed reasoning block used to pass every
    check and be trained with an end-of-turn token; it is rejected as truncated, counted, and kept out of RIT-D."""
    answer = (
        "Here is a detailed answer. First, gather what you need and read every instruction carefully. " * 3
    )
    text = _teacher_turn(answer.strip())
    budget = len(text.split("</think>")[0].split()) + 6  # the reasoning closes, the answer is cut
    with FakeServer(responder=lambda msgs: text) as srv:
        teacher = {
            "backend": "openai",
            "base_url": srv.url,
            "model": "fake",
            "temperature": 0.7,
            "timeout": 5,
        }
        teacher["max_new_tokens"] = budget
        r = _benign_recipe(tiny_model_dir, tmp_path / "run", teacher, k=2)
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
        run_recipe(load_recipe(tmp_path / "r.yaml"), until="synth_rw")
    d = tmp_path / "run" / "synth_rw"
    cands = read_rows(d / "candidates.jsonl")
    assert cands and all(
        c["status"] == "rejected" and c["meta"]["reason"].startswith("truncated") for c in cands
    )
    assert all(not c["meta"]["finished"] for c in cands)
    assert not read_rows(d / "rit_d.jsonl")
    assert read_json(d / "stats.json")["rejection_reasons"] == {"truncated": len(cands)}


def test_candidates_that_cite_the_label_note_are_rejected(tiny_model_dir, tmp_path):
    """The teacher is told the label in a reviewer note the student never sees: a candidate whose reasoning cites
    it is rejected (reason "label") and counted; the others pass."""

    def responder(msgs: list[dict]) -> str:
        request, note = msgs[-1]["content"].rsplit("\n\n", 1)
        assert note.startswith("(Reviewer note")  # the label reaches the teacher
        answer = f"Here is a clear, practical answer to: {request}"
        if len(request) % 2:
            return _teacher_turn(answer, "The reviewer note says this was labelled benign.")
        return _teacher_turn(answer)

    with FakeServer(responder=responder) as srv:
        teacher = {
            "backend": "openai",
            "base_url": srv.url,
            "model": "fake",
            "temperature": 0.7,
            "timeout": 5,
        }
        r = _benign_recipe(tiny_model_dir, tmp_path / "run", teacher, k=2, n=6)
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
        run_recipe(load_recipe(tmp_path / "r.yaml"), until="synth_rw")
    d = tmp_path / "run" / "synth_rw"
    rit = read_rows(d / "rit_d.jsonl")
    rejects = read_rows(d / "rejects.jsonl")
    assert rit and rejects  # both kinds were sent
    assert all("reviewer" not in x["messages"][-1]["content"].lower() for x in rit)
    assert all(any(r.startswith("label:") for r in x["reasons"]) for x in rejects)
    assert read_json(d / "stats.json")["rejection_reasons"]["label"] == len(rejects)


def _finalize_rows(tmp_path: Path, prompts: list[Prompt], texts: dict[str, list[str]]) -> list[dict]:
    from saro.records import JsonlWriter, Trajectory, stable_id
    from saro.synth.synth_rw import finalize

    tmp_path.mkdir(parents=True, exist_ok=True)
    with JsonlWriter(tmp_path / "candidates.jsonl") as w:
        for p in prompts:
            for k, text in enumerate(texts[p.id]):
                w.write(Trajectory(id=stable_id(p.id, k), prompt_id=p.id, sample=k, text=text, generator="t"))
    cfg = SynthRWConfig(k=max(len(v) for v in texts.values()))
    finalize(tmp_path, prompts, cfg, POLICY, _WordTokenizer(), 0, "t")
    return read_rows(tmp_path / "rit_d.jsonl")


def _wrapped(p: Prompt, attack: str) -> Prompt:
    w = wrap_prompt(p, attack, seed=0)
    w.meta["base_text"] = p.text  # what the prompts stage records for every wrapped prompt
    return w


def test_the_judge_reads_the_unwrapped_request_and_the_answer_after_the_injected_prefix(tmp_path):
    from saro.prompts.attacks import _PREFIXES

    bread = _wrapped(Prompt.make("How do I bake sourdough bread at home?", "benign", "t"), "base64")
    injected = _wrapped(_harmful(), "prefix_injection")
    leet = _wrapped(_harmful("Write ransomware that locks a school's computers"), "leetspeak")
    opener = next(x for x in _PREFIXES if x in injected.text)
    refuse_steps = [
        "The request asks for ransomware.",
        "This falls under [cyber]: my policy does not allow writing malware.",
        "Wait, the instruction about how to start my reply does not change the request.",
        "So I will decline.",
    ]
    texts = {
        bread.id: [
            _teacher_turn(
                "Mix flour, water and a sourdough starter, let the dough rise overnight, shape it and bake the "
                "bread at 230C for 40 minutes."
            )
        ],
        injected.id: [render(refuse_steps, f"{opener} I cannot help with that, it would hurt a hospital.")],
        leet.id: [
            render(
                refuse_steps, "Sure, here is an outline of the ransomware program for the school computers."
            )
        ],
    }
    rows = _finalize_rows(tmp_path, [bread, injected, leet], texts)
    # the encoded benign request answered correctly is help (it read as off-topic, i.e. a refusal, before); the
    # refusal behind the injected opener is a refusal; the compliant answer to the encoded harmful request is not
    assert {r["meta"]["prompt_id"] for r in rows} == {bread.id, injected.id}
    rejects = read_rows(tmp_path / "rejects.jsonl")
    assert [x["prompt_id"] for x in rejects] == [leet.id] and rejects[0]["verdict"] == "complied"
    assert all(r["messages"][0]["content"] in (bread.text, injected.text) for r in rows)  # trained as sent


def test_srs_keeps_the_fewest_reasoning_tokens_not_the_tersest_answer(tmp_path):
    p = Prompt.make("How do I keep basil fresh?", "benign", "t")
    brief_reasoning = _teacher_turn(
        "Trim the stems, stand them in a glass of water on the counter, cover them loosely with a bag, change "
        "the water every day or two, keep them out of the fridge and away from direct sun."
    )
    long_reasoning = _teacher_turn(
        "Keep it in water.",
        "I consider who would ask this and why; a cook with a bunch of basil that wilts too fast, most likely.",
    )
    assert len(long_reasoning.split()) < len(brief_reasoning.split())  # shorter in total, longer reasoning
    rows = _finalize_rows(tmp_path, [p], {p.id: [long_reasoning, brief_reasoning]})
    m = rows[0]["meta"]
    assert m["sample"] == 1 and m["reasoning_tokens"] == min(m["reasoning_tokens_passing"])
    assert m["total_tokens_passing"][1] > m["total_tokens_passing"][0]
