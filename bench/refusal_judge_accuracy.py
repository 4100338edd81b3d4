"""Agreement of the rule-based refusal judge with human refusal labels, on a tuning set and on held-out sets.

Split (fixed; rules are developed on the tuning set only, the held-out numbers are only reported):

- tuning:   PyRIT ``refusal_scorer/refusal.csv``
- held out: PyRIT ``refusal_scorer/refusal_extra.csv`` and ``sample/mini_refusal.csv``; rows of
  ``mini_refusal.csv`` whose (objective, response) also occur in ``refusal.csv`` are dropped from the held-out
  set (the count is printed), so that nothing tuned on is scored as held out.

All three share one schema: ``objective, assistant_response, human_score, data_type``; ``human_score`` 1 = the
answer refuses (mapped to saro's "refused", i.e. not full compliance), 0 = it complies. Beside the judge, XSTest's
string-match baseline is scored on the same rows. Prints metrics and row indices only (never the responses: many
answer harmful requests). The last line is ``heldout_agreement <x>`` over the held-out sets pooled.

    python bench/refusal_judge_accuracy.py
"""

from __future__ import annotations

import sys
from typing import Any

from saro.errors import SaroError
from saro.judges.refusal import RefusalJudge, agreement_stats, read_refusal_csv, refusal_judge_agreement
from saro.paths import package_file

TUNING = ("refusal.csv", "refusal_scorer/refusal.csv")
HELD_OUT = (
    ("refusal_extra.csv", "refusal_scorer/refusal_extra.csv"),
    ("mini_refusal.csv", "sample/mini_refusal.csv"),
)
FOLDER = "pyrit/datasets/scorer_evals"


def _rate(kn: tuple[int, int]) -> str:
    k, n = kn
    return f"{k}/{n}" + (f" ({k / n:.3f})" if n else "")


def _line(who: str, r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    kappa = "n/a" if r["kappa"] is None else f"{r['kappa']:.3f}"
    return (
        f"   {who:<22} agreement={r['agreement']:.3f} [{lo:.3f}, {hi:.3f}] kappa={kappa} "
        f"false_refusal={_rate(r['false_refusal'])} missed_refusal={_rate(r['missed_refusal'])}"
    )


def _report(name: str, role: str, res: dict[str, Any]) -> None:
    print(f"== {name} ({role}): n={res['n']} judge classes={res['classes']}")
    print(_line("refusal judge", res))
    print(_line("XSTest string match", res["baseline"]))
    if res["disagreements"]:
        print(f"   judge disagrees on rows (0-based data rows): {res['disagreements']}")


def _pooled(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
    human = [h for r in results for h in r["labels"]["human"]]
    judged = [j for r in results for j in r["labels"][key]]
    return agreement_stats(human, judged)


def main() -> int:
    judge = RefusalJudge()
    try:
        tune_path = package_file("pyrit", f"{FOLDER}/{TUNING[1]}")
        tune_rows = read_refusal_csv(tune_path)
        seen = {(r["objective"], r["assistant_response"]) for r in tune_rows}
        _report(TUNING[0], "tuning", refusal_judge_agreement(tune_path, judge, tune_rows))
        held = []
        for name, rel in HELD_OUT:
            path = package_file("pyrit", f"{FOLDER}/{rel}")
            rows = read_refusal_csv(path)
            kept = [r for r in rows if (r["objective"], r["assistant_response"]) not in seen]
            dropped = len(rows) - len(kept)
            role = "held out" + (f", {dropped} rows also in the tuning set dropped" if dropped else "")
            res = refusal_judge_agreement(path, judge, kept)
            _report(name, role, res)
            held.append(res)
    except SaroError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pooled, base = _pooled(held, "judge"), _pooled(held, "baseline")
    print(f"== held-out sets pooled: n={pooled['n']}")
    print(_line("refusal judge", pooled))
    print(_line("XSTest string match", base))
    print(f"heldout_agreement {pooled['agreement']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
