#!/usr/bin/env bash
# The paper environment check (make check-paper-env; CI runs it after make test).
#
# recipes/paper/* run saro and vLLM in one environment (README, "On a GPU"). vLLM pins its own torch and
# transformers, so that environment is not the CPU lock the main tests use: requirements.paper.txt holds the
# versions vLLM 0.31.0 forces. This builds that environment without vLLM and CUDA in $PAPER_VENV (torch 2.13.0
# first, from the local CPU wheel; the paper pins over the CPU lock), checks the versions, and runs there the tests
# that decide whether saro works with them: every recipe loads and builds its training configs; the paper recipe
# runs `saro run ... --until synth_rw` against a local `saro serve` teacher; SFT and DPO train; the HF backend
# matches transformers' own generate. Idempotent: a second run reuses the environment while its inputs are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${PAPER_VENV:-.venv-paper}
PIP="$VENV/bin/python -m pip"
stamp="$VENV/.saro-paper-$(cat pyproject.toml requirements.lock.txt requirements.paper.txt requirements-assets.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  pins=$(grep -v -E '^\s*(#|$)' requirements.paper.txt)
  names=$(echo "$pins" | sed -E 's/[<>=!~ ].*//' | tr 'A-Z_' 'a-z-' | paste -sd'|')
  # the CPU lock without the packages the paper pins, then the paper pins (pip takes one pin per package)
  grep -v -i -E "^($(echo "$names" | sed 's/-/[-_]/g'))==" requirements.lock.txt > "$VENV/constraints.txt"
  echo "$pins" >> "$VENV/constraints.txt"
  $PIP install --quiet torch==2.13.0
  $PIP install --quiet -c "$VENV/constraints.txt" -e ".[dev]"
  $PIP install --quiet --no-deps -r requirements-assets.txt
  touch "$stamp"
fi
# the environment must have exactly the paper pins (a resolver that moved one would test something else)
"$VENV/bin/python" - requirements.paper.txt <<'PYEOF'
import re, sys
from importlib.metadata import version
bad = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, want = re.split(r"\s*==\s*", line)
        if version(name) != want:
            bad.append(f"{name} {version(name)} (paper pin {want})")
if bad:
    sys.exit("paper environment: " + ", ".join(bad))
print("paper environment:", ", ".join(f"{n} {version(n)}" for n in ("torch", "transformers", "huggingface_hub", "numpy", "trl")))
PYEOF
run() {  # pytest exits 5 when nothing was collected: a renamed test fails this check instead of passing it
  OMP_NUM_THREADS=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
}
run tests/test_recipe.py tests/test_paper_env.py
run tests/test_train.py -k "learns or config"
run tests/test_generate.py  # the HF backend (over model.generate) against plain generate, greedy and sampled
