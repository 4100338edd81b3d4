"""bench/generation_throughput.py --quick: runs every side on the tiny model and prints the agreed lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "generation_throughput.py"


def test_quick_bench_prints_rates_agreement_and_ratio() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600, check=True
    ).stdout
    lines = out.strip().splitlines()
    assert re.fullmatch(r"ratio \d+\.\d\d", lines[-1]), lines[-1]
    assert float(lines[-1].split()[1]) > 0
    for side in ("generate", "hf", "ct2-float32", "ct2-int8"):
        assert re.search(
            rf"^{side} +\d+\.\d tokens/s +\d+\.\d\dx generate +\(\d+\.\d tokens per CPU-second, \d+\.\d\dx\) +"
            r"greedy ids equal to generate on \d/4",
            out,
            re.M,
        )
        assert len(re.findall(rf"^run \d {side} ", out, re.M)) == 2  # 2 repetitions each
    assert re.search(r"^ct2-float32 .* on 4/4 prompts$", out, re.M)  # float32: the same ids as generate
    assert re.search(r"^hf .* on 4/4 prompts$", out, re.M)
    assert len(re.findall(r"^load \d+\.\d+", out, re.M)) == 2
