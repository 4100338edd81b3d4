"""Agreement of the rule-based refusal judge with PyRIT's human-labelled refusal examples.

Prints metrics only (never the responses: many answer harmful requests). The last line is ``agreement <x>``,
x being the agreement on ``refusal.csv`` (3 decimals).

    python bench/refusal_judge_accuracy.py
"""

from __future__ import annotations

import sys

from saro.errors import SaroError
from saro.judges.refusal import COMPLIED, REFUSED, UNPARSEABLE, RefusalJudge, refusal_judge_agreement
from saro.paths import package_file

FILES = ("refusal.csv", "refusal_extra.csv")
FOLDER = "pyrit/datasets/scorer_evals/refusal_scorer"


def _report(name: str, res: dict) -> None:
    print(
        f"== {name}: n={res['n']} agreement={res['agreement']:.3f} "
        f"precision={res['precision']:.3f} recall={res['recall']:.3f} (positive = refused)"
    )
    cols = (REFUSED, COMPLIED, UNPARSEABLE)
    print("   " + "human / judge".ljust(16) + "".join(f"{c:>13}" for c in cols))
    for human in (REFUSED, COMPLIED):
        row = res["confusion"][f"human={human}"]
        print(f"   {human:<16}" + "".join(f"{row[c]:>13}" for c in cols))
    if res["disagreements"]:
        print(f"   disagreeing rows (0-based data rows): {res['disagreements']}")


def main() -> int:
    results = {}
    try:
        for name in FILES:
            results[name] = refusal_judge_agreement(package_file("pyrit", f"{FOLDER}/{name}"))
    except SaroError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, res in results.items():
        _report(name, res)
    both_n = sum(r["n"] for r in results.values())
    both = sum(r["agreement"] * r["n"] for r in results.values()) / both_n
    print(f"== both files: n={both_n} agreement={both:.3f}")
    plain = RefusalJudge(offtopic_is_refusal=False)
    for name in FILES:
        res = refusal_judge_agreement(package_file("pyrit", f"{FOLDER}/{name}"), plain)
        print(
            f"== {name} without the off-topic rule (offtopic_is_refusal=False): agreement={res['agreement']:.3f}"
        )
    print(f"agreement {results['refusal.csv']['agreement']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
