#!/usr/bin/env bash
# GPU smoke test for the training stages (one GPU, no network, < 8 minutes; installs nothing).
#
#   bash bench/gpu_smoke.sh [OUT_DIR [TRAIN_ARGS...]]     e.g. TRAIN_ARGS: --sft-steps 10 --dpo-steps 6
#
# Builds a random ~0.5B Llama-shaped model with the tokenizer carried in src/saro/assets, runs SFT (full + LoRA) and
# DPO for a few steps in bf16 through saro's train_sft/train_dpo, prints tokens/s and peak GPU memory, then generates
# with vLLM in a second process when vLLM is installed (skipped otherwise). The caller provides a Python environment
# with torch (CUDA), transformers, trl, peft, datasets, accelerate (and optionally vllm). Exit code 0 = all passed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-$(mktemp -d)}/gpu_smoke}"
shift || true
PY="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_DATASETS_CACHE="$OUT_DIR/hf_datasets"
mkdir -p "$OUT_DIR"
start=$(date +%s)
echo "[gpu_smoke] output in $OUT_DIR"
"$PY" - <<'PY' || true
import torch
print(f"[gpu_smoke] torch {torch.__version__}, cuda {torch.version.cuda}, GPUs {torch.cuda.device_count()}")
PY
set +e
timeout 300 "$PY" bench/gpu_smoke.py train --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/train.log" \
  | grep --line-buffered -E "^\[gpu_smoke\]|Error"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  echo "[gpu_smoke] training FAILED (exit $rc); last lines of $OUT_DIR/train.log:"
  tail -n 30 "$OUT_DIR/train.log"
  exit "$rc"
fi
if "$PY" -c "import vllm" >/dev/null 2>&1; then
  set +e
  timeout 150 "$PY" bench/gpu_smoke.py vllm --model "$OUT_DIR/dpo/final" 2>&1 | tee "$OUT_DIR/vllm.log" \
    | grep --line-buffered -E "^\[gpu_smoke\]|Error"
  vrc=${PIPESTATUS[0]}
  set -e
  if [ "$vrc" -ne 0 ]; then
    echo "[gpu_smoke] vllm generation FAILED (exit $vrc); last lines of $OUT_DIR/vllm.log:"
    tail -n 30 "$OUT_DIR/vllm.log"
    exit "$vrc"
  fi
else
  echo "[gpu_smoke] vllm not installed: generation check skipped"
fi
echo "[gpu_smoke] passed in $(( $(date +%s) - start )) s; results: $OUT_DIR/results.json"
