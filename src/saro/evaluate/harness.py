"""Optional extra capability run: lm-evaluation-harness (MMLU, ARC, ...) on a model folder.

saro does not depend on lm-evaluation-harness; when its ``lm_eval`` command is installed
(``pip install lm-eval``), ``run_lm_eval`` shells out to it and reads the results back; otherwise it returns a
``skipped`` entry with a clear message. From a recipe::

    eval:
      lm_eval: {tasks: [mmlu], limit: 100, batch_size: 8}

or ``saro eval --model ... --lm-eval-task mmlu --lm-eval-limit 100``. Not part of CI.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NOT_INSTALLED = "lm-evaluation-harness is not installed (pip install lm-eval); the lm_eval run was skipped"


def lm_eval_command() -> list[str] | None:
    """How to invoke lm-evaluation-harness here (its console script, or ``python -m lm_eval``), or None."""
    exe = shutil.which("lm_eval")
    if exe:
        return [exe]
    import importlib.util

    if importlib.util.find_spec("lm_eval") is not None:
        return [sys.executable, "-m", "lm_eval"]
    return None


def run_lm_eval(
    model: str,
    tasks: list[str],
    out_dir: str | Path,
    limit: int | None = None,
    batch_size: int = 8,
    device: str | None = None,
    args: list[str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``lm_eval --model hf`` on a model folder or hub id; returns ``{"tasks": {task: {metric: value}}}``
    (metrics such as ``acc`` and ``acc_stderr``), or ``{"skipped": reason}`` / ``{"error": reason}``."""
    cmd = lm_eval_command()
    if cmd is None:
        log.warning(NOT_INSTALLED)
        return {"skipped": NOT_INSTALLED}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    full = [
        *cmd,
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model}",
        "--tasks",
        ",".join(tasks),
        "--batch_size",
        str(batch_size),
        "--output_path",
        str(out_dir),
    ]
    if limit is not None:
        full += ["--limit", str(limit)]
    if device:
        full += ["--device", device]
    full += list(args or [])
    log.info("lm_eval: %s on %s", ",".join(tasks), model)
    try:
        res = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"lm_eval did not run: {e}"}
    (out_dir / "lm_eval.log").write_text(res.stdout + "\n" + res.stderr, encoding="utf-8")
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"lm_eval exited with {res.returncode}: {tail[0][:300]}", "command": full}
    found = sorted(out_dir.rglob("results*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        return {"error": f"lm_eval wrote no results*.json under {out_dir}", "command": full}
    return {"tasks": parse_results(json.loads(found[-1].read_text(encoding="utf-8"))), "file": str(found[-1])}


def parse_results(data: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` from an lm_eval results file (``"acc,none"`` keys become ``acc``)."""
    out: dict[str, dict[str, float]] = {}
    for task, metrics in (data.get("results") or {}).items():
        row = {}
        for k, v in metrics.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                row[k.split(",")[0]] = float(v)
        out[task] = row
    return out
