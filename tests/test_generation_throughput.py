"""bench/generation_throughput.py --quick: runs both sides on the tiny model and prints the agreed lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "generation_throughput.py"


def test_quick_bench_prints_rates_bound_and_ratio() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    lines = out.strip().splitlines()
    assert re.fullmatch(r"ratio \d+\.\d{3}", lines[-1]), lines[-1]
    assert float(lines[-1].split()[1]) > 0
    assert re.search(r"^generate \d+\.\d tokens/s", out, re.M)
    assert re.search(r"^saro +\d+\.\d tokens/s", out, re.M)
    assert re.search(r"memory bandwidth \d+\.\d GB/s .*batch-1 bound \d+\.\d tokens/s", out)
    assert "same texts: yes" in out  # greedy: identical outputs on both sides
    assert len(re.findall(r"^run \d (generate|saro)", out, re.M)) == 4  # 2 repetitions each, alternating
