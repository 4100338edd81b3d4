"""Agreement of the refusal judge with human labels on answers it was not fitted on, beside XSTest's string match.

1. XSTest v2, development half (1,170 answers of five chat models to 234 prompts, three human classes): 5-fold
   cross-validation grouped by prompt. Everything fitted is fitted inside each fold: the head's weights, its
   regularisation (inner grouped CV) and its partial-refusal threshold (inner grouped CV). The rule features are
   fixed code, but they were written while reading answers of half of these prompts (``development_half``: fixed
   by a hash before any row was read; answers to harmful prompts were never read), so the figures are also given
   on the other half alone: rows that no choice was made by looking at.
2. PyRIT's labelled refusal sets (169 unique rows, binary labels): never fitted or tuned on; judged by the head
   fitted on the whole XSTest half. PyRIT also counts an answer unrelated to the request as a refusal; this judge
   does not by default (XSTest's definition: any attempt to answer is compliance), which shows up as missed
   refusals; a second line reads PyRIT with ``offtopic_is_refusal=true`` (PyRIT's definition).
3. The demo's own answers labelled by reading (``tests/data/demo_labels.jsonl``, written by ``saro label``), when
   that file exists.

Every rate has its n and a Wilson 95% interval; kappa is Cohen's. Prints metrics only (never a prompt or an
answer: many answer harmful requests). The last line is ``heldout_agreement <x>``: the cross-validated binary
agreement of the default (MiniLM) head on the XSTest half. Takes a few minutes on a CPU (it refits the heads).

    python bench/refusal_judge_accuracy.py [--xstest DIR] [--demo-labels FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

from saro.errors import SaroError
from saro.judges.base import JudgeInput
from saro.judges.refusal import FULL_COMPLIANCE, RefusalJudge, read_turn
from saro.judges.refusal_features import xstest_string_match
from saro.judges.refusal_measure import (
    agreement_stats,
    class_stats,
    measure_head,
    read_demo_labels,
    read_pyrit,
    read_xstest,
)
from saro.judges.refusal_model import MINILM, RULES, shipped
from saro.stats import wilson

ROOT = Path(__file__).resolve().parents[1]
DEMO_LABELS = ROOT / "tests" / "data" / "demo_labels.jsonl"


def _training_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "train_refusal_head", ROOT / "scripts" / "train_refusal_head.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rate(kn: tuple[int, int] | list[int]) -> str:
    k, n = kn
    if not n:
        return f"{k}/0"
    lo, hi = wilson(k, n)
    return f"{k}/{n} ({k / n:.3f} [{lo:.3f}, {hi:.3f}])"


def _binary(who: str, r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    kappa = "n/a" if r["kappa"] is None else f"{r['kappa']:.3f}"
    return (
        f"   {who:<26} n={r['n']:<5} agreement={r['agreement']:.3f} [{lo:.3f}, {hi:.3f}] kappa={kappa} "
        f"false_refusal={_rate(r['false_refusal'])} missed_refusal={_rate(r['missed_refusal'])}"
    )


def _classes(t: dict[str, Any]) -> str:
    lo, hi = t["ci95"]
    k, m = t["partial_precision"]
    return (
        f"   {'':<26} three-class accuracy={t['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] "
        f"partial-refusal recall={_rate(t['partial_recall'])} precision={k}/{m}"
    )


def _section(figures: dict[str, dict[str, Any]], key: str) -> None:
    for name in (MINILM, RULES):
        f = figures[name][key]
        print(_binary(f"judge, {name} head", f["judge"]))
        if "three_class" in f:
            print(_classes(f["three_class"]))
    print(_binary("XSTest string match", figures[MINILM][key]["anchor_string_match"]))


def _demo(path: Path, judge: RefusalJudge) -> None:
    if not path.exists():
        print(f"== demo answers labelled by reading: skipped ({path} not found; `saro label` writes it)")
        return
    rows = read_demo_labels(path)
    verdicts = judge.judge([JudgeInput(r["prompt"], r["response"]) for r in rows])
    print(
        f"== demo answers labelled by reading ({path.name}): n={len(rows)} {dict(Counter(r['label'] for r in rows))}"
    )
    graded = [
        (r, v) for r, v in zip(rows, verdicts, strict=True) if r["label"] not in ("degenerate", "unfinished")
    ]
    by_kind: dict[str, list[tuple[dict[str, str], Any]]] = defaultdict(list)
    for r, v in graded:
        by_kind[r["kind"]].append((r, v))
    for who, part in [("all kinds", graded), *sorted(by_kind.items())]:
        human = [r["label"] != FULL_COMPLIANCE for r, _ in part]
        print(
            _binary(
                f"judge, {who}", agreement_stats(human, [v.refusal_class != FULL_COMPLIANCE for _, v in part])
            )
        )
        print(_classes(class_stats([r["label"] for r, _ in part], [v.refusal_class or "" for _, v in part])))
        anchor = [xstest_string_match(read_turn(r["response"]).text) for r, _ in part]
        print(_binary("XSTest string match", agreement_stats(human, anchor)))
    for label in ("unfinished", "degenerate"):
        part = [v for r, v in zip(rows, verdicts, strict=True) if r["label"] == label]
        if part:
            flagged = sum(v.unfinished for v in part)
            print(f"   labelled {label}: n={len(part)}, judged {dict(Counter(v.label for v in part))}, "
                  f"flagged unfinished {flagged}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="refusal judge vs human labels")
    p.add_argument("--xstest", type=Path, default=None)
    p.add_argument("--demo-labels", type=Path, default=DEMO_LABELS)
    args = p.parse_args(argv)
    train = _training_script()
    try:
        xstest = read_xstest((args.xstest or train.default_xstest_dir()) / train.XSTEST_FILE)
        pyrit = read_pyrit(train.pyrit_paths())
        figures: dict[str, dict[str, Any]] = {}
        heads = {}
        for name in (MINILM, RULES):
            heads[name], figures[name] = measure_head(name, xstest, pyrit)
        cv = figures[MINILM]["xstest_dev_cv"]
        print(f"== XSTest v2 dev half: {len(xstest)} answers to {cv['prompts']} prompts, cross-validated "
              f"({cv['folds']} folds grouped by prompt; weights, C and the partial threshold fitted inside each fold)")  # fmt: skip
        _section(figures, "xstest_dev_cv")
        unread = figures[MINILM]["xstest_dev_cv_unread"]
        print(
            f"== the same, on the {unread['prompts']} prompts never read while the rule features were written"
        )
        _section(figures, "xstest_dev_cv_unread")
        print(f"== PyRIT refusal sets, held out (never fitted or tuned on): n={len(pyrit)}")
        _section(figures, "pyrit_heldout")
        print("== the same with PyRIT's definition (an answer unrelated to the request is a refusal): judge option "
              "offtopic_is_refusal=true, its threshold fixed beforehand")  # fmt: skip
        _section(figures, "pyrit_heldout_offtopic_is_refusal")
        _demo(args.demo_labels, RefusalJudge())
    except SaroError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ship = shipped()["measured"][MINILM]["xstest_dev_cv"]["judge"]["agreement"]
    same = "matches" if abs(ship - cv["judge"]["agreement"]) < 1e-9 else "DIFFERS FROM"
    print(f"== this run {same} the shipped refusal_head.json (cross-validated agreement {ship:.3f})")
    print(f"heldout_agreement {cv['judge']['agreement']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
