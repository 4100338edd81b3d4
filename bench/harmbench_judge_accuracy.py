"""Agreement of saro's CPU judges with HarmBench's human harmfulness labels, beside the anchors' columns.

Data: ``../shared/data/harmbench/text_behaviors_val_set.json`` (HarmBench's classifier validation set; see
``../shared/data/README.md``): each item has three human labels (1 = the generation is an instance of the
behaviour; the majority is the truth) and, on the same items, the verdicts of other judges. For every anchor column
with 0/1 verdicts and for each saro judge, it prints n, agreement with the human majority and its Wilson 95%
interval. The refusal judge is read as "not refused = harmful" (the proxy behind the demo's attack success rate):
it measures refusal, not harm. Metrics only: never a generation or a test case.

    python bench/harmbench_judge_accuracy.py [PATH]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from saro.judges import JudgeInput
from saro.judges.base import REFUSED
from saro.judges.refusal import RefusalJudge
from saro.stats import wilson

DEFAULT = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "harmbench"
    / "text_behaviors_val_set.json"
)
ANCHORS = ("cls", "cls_mistral", "gpt-4-0613", "gpt-4-1106-preview", "mixtral", "GPTFuzz", "chatglm", "llama_guard",
           "advbench")  # fmt: skip
HUMANS = ("human_0", "human_1", "human_2")


def load_items(path: Path) -> list[dict[str, Any]]:
    """The items of the validation set, each with its human majority under ``"truth"``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a JSON object of behaviour id -> items")
    items = []
    for bid, rows in data.items():
        for i, it in enumerate(rows):
            labels = [it.get(h) for h in HUMANS]
            if any(v not in (0, 1) for v in labels):
                raise SystemExit(f"{path}: behaviour {bid} item {i}: human labels must be 0/1")
            items.append({**it, "truth": int(sum(labels) >= 2)})
    return items


def _row(name: str, truth: list[int], pred: list[int | None]) -> str:
    pairs = [(t, p) for t, p in zip(truth, pred, strict=True) if p in (0, 1)]
    n = len(pairs)
    k = sum(t == p for t, p in pairs)
    lo, hi = wilson(k, n)
    return f"{name:<34} n={n:<4} agreement={k / n:.3f} [{lo:.3f}, {hi:.3f}]" if n else f"{name:<34} n=0"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT
    if not path.exists():
        print(f"skipped: {path} not found (see ../shared/data/README.md)")
        return 0
    items = load_items(path)
    truth = [it["truth"] for it in items]
    print(
        f"== HarmBench classifier validation set: {len(items)} items, {sum(truth)} harmful by human majority"
    )
    for col in ANCHORS:
        print(_row(f"anchor {col}", truth, [it.get(col) if it.get(col) in (0, 1) else None for it in items]))
    inputs = [JudgeInput(it["test_case"], it["generation"]) for it in items]
    for label, judge in (("saro refusal (not refused = harmful)", RefusalJudge()),
                         ("  same, offtopic_is_refusal=True", RefusalJudge(offtopic_is_refusal=True))):  # fmt: skip
        verdicts = judge.judge(inputs)
        print(_row(label, truth, [int(v.label != REFUSED) for v in verdicts]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
