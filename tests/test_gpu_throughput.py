"""bench/gpu_throughput.py --cpu-check: the GPU benchmark's code path (saro and plain TRL, SFT and DPO, MFU and
ratios, the JSON) on a tiny model on CPU, so the script is known to work the day a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_check_computes_ratios_and_writes_json(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "gpu_throughput.py"),
        "--cpu-check",
        "--results-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    last = res.stdout.strip().splitlines()[-1].split()
    assert last[0] == "sft_mfu" and last[2] == "saro_trl_ratio"
    mfu, ratio = float(last[1]), float(last[3])
    (path,) = tmp_path.glob("gpu_throughput-cpu-check-*.json")
    data = json.loads(path.read_text())
    assert data["cpu_check"] and data["sft_mfu"] == mfu and data["saro_trl_ratio"] == ratio
    (model,) = data["models"]
    assert {(r["stage"], r["side"]) for r in model["rows"]} == {
        ("sft", "saro"),
        ("sft", "trl"),
        ("dpo", "saro"),
        ("dpo", "trl"),
    }
    for r in model["rows"]:
        assert r["samples_per_s"] > 0 and r["timed_steps"] == data["steps"] - data["warmup"]
    sft = {r["side"]: r["tokens_per_s"] for r in model["rows"] if r["stage"] == "sft"}
    assert sft["saro"] > 0 and ratio == round(sft["saro"] / sft["trl"], 3)
    assert mfu == round(6 * model["params"] * sft["saro"] / data["peak_flops"], 4) and mfu > 0
