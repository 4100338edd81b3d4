"""Fit the refusal judge's heads on the XSTest v2 development half and write ``refusal_head.json`` with their
held-out measurements.

For each head (``minilm``: rule features + MiniLM embedding of the opening; ``rules``: rule features alone) it
runs 5-fold cross-validation grouped by prompt on the XSTest half (the whole fit inside each fold), fits the head on
all of it, judges PyRIT's labelled refusal sets with the fitted head (never used for fitting), and writes the heads,
the figures and the provenance (data digests, seed, date, command) to ``src/saro/judges/refusal_head.json``.
Deterministic for a given seed and data. Prints metrics only (the data holds answers to harmful requests).

    python scripts/train_refusal_head.py [--xstest DIR] [--out FILE] [--seed 0] [--folds 5]

XSTest's completions are public (github.com/paul-rottger/exaggerated-safety, CC-BY-4.0); DIR holds the project's
development half, ``xstest_completions_dev.csv`` (default: ``$SARO_XSTEST_DIR`` or ``../shared/data/xstest``).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from saro.errors import SaroError
from saro.judges.refusal_measure import measure_head, read_pyrit, read_xstest
from saro.judges.refusal_model import HEAD_FILE, MINILM, RULES
from saro.paths import package_file

ROOT = Path(__file__).resolve().parents[1]
XSTEST_FILE = "xstest_completions_dev.csv"
PYRIT_FILES = ("refusal_scorer/refusal.csv", "refusal_scorer/refusal_extra.csv", "sample/mini_refusal.csv")
PYRIT_FOLDER = "pyrit/datasets/scorer_evals"


def default_xstest_dir() -> Path:
    """``$SARO_XSTEST_DIR``, else the shared data folder beside the checkout."""
    return Path(os.environ.get("SARO_XSTEST_DIR") or ROOT.parent / "shared" / "data" / "xstest")


def pyrit_paths() -> list[Path]:
    """PyRIT's labelled refusal sets, read from the installed package."""
    return [package_file("pyrit", f"{PYRIT_FOLDER}/{rel}") for rel in PYRIT_FILES]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--xstest", type=Path, default=None, help="folder with xstest_completions_dev.csv")
    p.add_argument("--out", type=Path, default=HEAD_FILE, help="head file to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    p.add_argument("--folds", type=int, default=5, help="outer folds (grouped by prompt)")
    return p


def train(xstest_dir: Path, out: Path, seed: int, folds: int) -> dict[str, Any]:
    """Measure and fit both heads; write and return the head file's content."""
    xs_path = xstest_dir / XSTEST_FILE
    xstest = read_xstest(xs_path)
    pyrit = read_pyrit(pyrit_paths())
    heads, measured = {}, {}
    for name in (MINILM, RULES):
        head, figures = measure_head(name, xstest, pyrit, k=folds, seed=seed)
        heads[name], measured[name] = head.to_dict(), figures
        cv = figures["xstest_dev_cv"]["judge"]
        print(
            f"{name}: xstest cv agreement {cv['agreement']:.3f} (n={cv['n']}); C={head.C} alpha={head.alpha}"
        )
    data = {
        "format": 1,
        "trained": {
            "date": datetime.date.today().isoformat(),
            "command": "python scripts/train_refusal_head.py" + (f" --seed {seed}" if seed else ""),
            "seed": seed,
            "folds": folds,
            "data": {XSTEST_FILE: _digest(xs_path), **{Path(p).name: _digest(p) for p in pyrit_paths()}},
            "rows": {"xstest_dev": len(xstest), "pyrit_unique": len(pyrit)},
        },
        "heads": heads,
        "measured": measured,
    }
    out.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return data


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        train(args.xstest or default_xstest_dir(), args.out, args.seed, args.folds)
    except SaroError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
