"""Who writes SRPO's teacher text: the offline composer (default) or a model teacher (``synth_srpo.teacher``).

Both answer three questions for the pair builder: the chosen trajectory of a prompt whose RW samples are all wrong,
the earliest drifting step of a wrong trajectory, and the reflection + corrected continuation for a drift.

The model teacher answers from ``teacher.jsonl`` (one record per request id: ``ok`` or ``rejected`` with the
reason); a question it has no record for is queued and answered ``None`` for now, so the stage builds the pairs,
sends the queued requests (``run_pending``), and builds again until nothing new is asked. Each answer is
validated (finished, not cut at ``max_new_tokens``; format; the reflection starts with "Wait," and names the policy
category; no reference to the label the teacher was told; the final behaviour is right per the stage's judge, which
reads the unwrapped request) and asked again with a new seed up to ``malformed_retries`` times, then recorded as
rejected.
A request that still fails (server errors, timeouts) is not recorded: it goes to ``teacher_errors.jsonl`` and is
asked again when the stage is resumed. Records are appended one by one, so a killed stage loses nothing it finished.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from saro.judges.base import Judge, expected_label
from saro.judges.step import find_drift
from saro.models.generate import Generator, SamplingParams
from saro.policy import Policy
from saro.prompts.attacks import judge_input
from saro.reasoning import Parsed
from saro.recipe import BackendSpec
from saro.records import JsonlWriter, Prompt, read_rows, stable_id
from saro.synth.srpo_prompts import (
    UNPARSEABLE,
    correction_messages,
    names_category,
    parse_correction,
    parse_step_verdict,
    step_judge_messages,
)
from saro.synth.teacher import Correction, OfflineTeacher, offline_correction, reflection_for
from saro.synth.teacher_prompts import (
    LABEL_CUE_REASON,
    TRUNCATED,
    cites_label,
    teacher_messages,
    validate_teacher_output,
)

log = logging.getLogger(__name__)

Drift = tuple[list[str], list[str], str, str]  # shared prefix, drifting steps, drifting answer, source
DriftStep = int | str | None  # a step index, None (no drift), UNPARSEABLE or PENDING
PENDING = "pending"  # the teacher has been asked and has not answered yet


class SRPOTeacher(Protocol):
    """What the pair builder asks the teacher (``None``: no usable answer, counted by the caller)."""

    name: str
    composer: OfflineTeacher  # constructed drifts and the SafetyDPO fallback refusal are composed offline

    def chosen(self, p: Prompt, drift_ans: str) -> str | None: ...

    def drift_step(self, p: Prompt, parsed: Parsed, verdict: str) -> DriftStep: ...

    def correction(
        self, p: Prompt, drift: Drift | None, good: Parsed, drift_ans: str, rng: random.Random
    ) -> Correction | None: ...


class OfflineSRPOTeacher:
    """The offline composer and the regex step judge (no requests)."""

    name = "offline"

    def __init__(self, policy: Policy, seed: int) -> None:
        self.policy = policy
        self.composer = OfflineTeacher(policy, seed=seed)

    def chosen(self, p: Prompt, drift_ans: str) -> str | None:
        if p.kind != "harmful" and not drift_ans:
            return None  # a benign prompt's composed trajectory needs a compliant answer to end in
        return self.composer.compose(p, sample=0, answer=drift_ans if p.kind != "harmful" else None).text

    def drift_step(self, p: Prompt, parsed: Parsed, verdict: str) -> DriftStep:
        return find_drift(parsed, p.kind, verdict)

    def correction(
        self, p: Prompt, drift: Drift | None, good: Parsed, drift_ans: str, rng: random.Random
    ) -> Correction | None:
        steps, answer = offline_correction(p, good, self.composer, drift_ans)
        if not answer:
            return None
        return Correction(reflection_for(p, self.policy, rng), steps, answer)


@dataclass
class Request:
    """One question to the model teacher; ``check`` returns the rejection reason (None = usable)."""

    id: str
    task: str
    prompt_id: str
    messages: list[dict]
    check: Callable[[str], str | None]


def request_id(spec: BackendSpec, task: str, messages: list[dict]) -> str:
    """The id of a teacher request: the teacher, the task and the exact messages."""
    return stable_id("srpo-teacher", spec.backend, spec.model, task, json.dumps(messages, sort_keys=True))


class ModelSRPOTeacher:
    """A language model as the SRPO teacher (see the module docstring)."""

    def __init__(
        self,
        spec: BackendSpec,
        policy: Policy,
        judge: Judge,
        sdir: Path,
        step_judge: str,
        seed: int,
        few_shot: bool = True,
    ) -> None:
        self.spec, self.policy, self.judge, self.seed = spec, policy, judge, seed
        self.step_judge, self.few_shot = step_judge, few_shot
        self.name = f"{spec.backend}:{spec.model}"
        self.composer = OfflineTeacher(policy, seed=seed)
        self.path = sdir / "teacher.jsonl"
        self.errors_path = sdir / "teacher_errors.jsonl"
        self.records: dict[str, dict] = {}
        self.pending: dict[str, Request] = {}
        self.failed: set[str] = set()  # failed in this run: asked again only when the stage is rerun
        self.stats: Counter[str] = Counter()
        JsonlWriter(self.path).close()  # repairs a line torn by a kill
        self.records = {r["id"]: r for r in read_rows(self.path)}

    # ---- the three questions

    def chosen(self, p: Prompt, drift_ans: str) -> str | None:
        msgs = teacher_messages(p, self.policy, few_shot=self.few_shot)
        rec = self._ask("chosen", p, msgs, lambda text: self._check_chosen(p, text))
        return rec["text"] if rec else None

    def drift_step(self, p: Prompt, parsed: Parsed, verdict: str) -> DriftStep:
        if self.step_judge != "teacher":
            return find_drift(parsed, p.kind, verdict)
        msgs = step_judge_messages(p, self.policy, parsed.steps, parsed.answer)
        n = len(parsed.steps)

        def check(text: str) -> str | None:
            return "unparseable step verdict" if parse_step_verdict(text, n) == UNPARSEABLE else None

        rec = self._ask("step_judge", p, msgs, check, unanswered=True)
        if rec is None:
            return None if request_id(self.spec, "step_judge", msgs) in self.failed else PENDING
        if rec["status"] != "ok":
            return UNPARSEABLE
        return parse_step_verdict(rec["text"], n)

    def correction(
        self, p: Prompt, drift: Drift | None, good: Parsed, drift_ans: str, rng: random.Random
    ) -> Correction | None:
        if drift is None:
            return None
        prefix, drifting, d_answer, _ = drift
        msgs = correction_messages(p, self.policy, prefix, drifting, d_answer)
        rec = self._ask("correction", p, msgs, lambda text: self._check_correction(p, text))
        if rec is None:
            return None
        corr = parse_correction(rec["text"])
        return corr if isinstance(corr, Correction) else None

    # ---- validation

    def _right(self, p: Prompt, text: str) -> str | None:
        want = expected_label(p.kind)
        got = self.judge.judge([judge_input(p, text)])[0].label
        return None if got == want else f"behaviour: judged {got}, want {want}"

    def _check_chosen(self, p: Prompt, text: str) -> str | None:
        fmt = validate_teacher_output(text)
        if fmt:
            return f"format: {fmt}"
        if cites_label(text):
            return LABEL_CUE_REASON
        if p.kind == "harmful" and not names_category(text, p, self.policy):
            return f"category: the reasoning does not name [{p.category}]"
        return self._right(p, text)

    def _check_correction(self, p: Prompt, text: str) -> str | None:
        corr = parse_correction(text)
        if isinstance(corr, str):
            return f"format: {corr}"
        if cites_label(text):
            return LABEL_CUE_REASON
        if not names_category(corr.reflection, p, self.policy):
            return f"reflection: does not name the policy category [{p.category}]"
        return self._right(p, corr.answer)

    # ---- requests

    def _ask(
        self,
        task: str,
        p: Prompt,
        msgs: list[dict],
        check: Callable[[str], str | None],
        unanswered: bool = False,
    ) -> dict | None:
        """The usable record for a request (None: rejected, or not asked yet and now queued).

        ``unanswered``: return rejected records too (the step judge reports them as unparseable)."""
        rid = request_id(self.spec, task, msgs)
        rec = self.records.get(rid)
        if rec is None:
            if rid not in self.failed:
                self.pending.setdefault(rid, Request(rid, task, p.id, msgs, check))
            return None
        if rec["status"] == "ok" or unanswered:
            return rec
        return None

    def run_pending(self, gen: Generator) -> int:
        """Send every queued request (retrying malformed answers); returns how many were asked."""
        todo, asked = list(self.pending.values()), len(self.pending)
        self.pending.clear()
        attempts = self.spec.malformed_retries + 1
        with JsonlWriter(self.path) as w:
            for attempt in range(attempts):
                if not todo:
                    break
                todo = self._attempt(gen, w, todo, attempt, last=attempt + 1 == attempts)
        return asked

    def _attempt(
        self, gen: Generator, w: JsonlWriter, todo: list[Request], attempt: int, last: bool
    ) -> list[Request]:
        temp = self.spec.temperature if self.spec.temperature > 0 or attempt == 0 else 0.7
        params = SamplingParams(
            max_new_tokens=self.spec.max_new_tokens,
            temperature=temp,
            top_p=self.spec.top_p,
            seed=self.seed + 1000 * attempt,  # a retry is a new sample (and a new cached request)
        )
        retry: list[Request] = []
        desc = "SRPO teacher" + (f" (attempt {attempt + 1})" if attempt else "")
        for idx, gens in gen.generate_batches([r.messages for r in todo], params, description=desc):
            for i, g in zip(idx, gens, strict=True):
                req, out = todo[i], g[0]
                self.stats[f"{req.task}:requests"] += 1
                if out.status == "error":
                    self._log_error(req, out.error or "request failed")
                    continue
                if out.status == "rejected":
                    reason = out.error
                else:
                    reason = req.check(out.text) if out.finished else TRUNCATED
                if reason and not last:
                    retry.append(req)
                    continue
                rec = {
                    "id": req.id,
                    "task": req.task,
                    "prompt_id": req.prompt_id,
                    "status": "rejected" if reason else "ok",
                    "text": out.text,
                    "attempts": attempt + 1,
                    **({"reason": reason} if reason else {}),
                }
                w.write(rec)
                self.records[req.id] = rec
        return retry

    def _log_error(self, req: Request, error: str) -> None:
        self.stats[f"{req.task}:failed"] += 1
        self.failed.add(req.id)
        with open(self.errors_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"id": req.id, "task": req.task, "prompt_id": req.prompt_id, "error": error}))
            f.write("\n")

    def summary(self) -> dict[str, dict[str, int]]:
        """Per task: records ok / rejected (by reason) and requests that failed in this run."""
        out: dict[str, Counter[str]] = {}
        for rec in self.records.values():
            c = out.setdefault(rec["task"], Counter())
            c[rec["status"]] += 1
            if rec["status"] != "ok":
                c[f"rejected: {str(rec.get('reason')).split(':')[0]}"] += 1
        for key, n in self.stats.items():
            task, what = key.split(":")
            out.setdefault(task, Counter())[what] += n
        return {k: dict(v) for k, v in out.items()}
