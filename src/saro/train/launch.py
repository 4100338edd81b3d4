"""Running a training stage in its own processes: the spec file, the ``accelerate launch`` command line, and the
``python -m saro.train`` entry that every launched process runs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from saro.errors import SaroError
from saro.records import atomic_write_json

log = logging.getLogger(__name__)

STAGES = ("sft", "dpo")


def write_spec(
    path: Path, config: dict[str, Any], output_dir: Path, train_file: Path, eval_file: Path | None = None
) -> Path:
    """Write the JSON spec that ``python -m saro.train STAGE SPEC`` reads."""
    spec = {
        "config": config,
        "output_dir": str(output_dir),
        "train_file": str(train_file),
        "eval_file": str(eval_file) if eval_file else None,
    }
    atomic_write_json(path, spec)
    return Path(path)


def launch_command(
    stage: str,
    spec: Path,
    num_processes: int = 1,
    accelerate_config: Path | None = None,
    cpu: bool = False,
    port: int | None = None,
) -> list[str]:
    """The argv that runs ``stage`` under ``accelerate launch`` (for CPU the flags that really start N gloo processes:
    ``--cpu`` alone would run one)."""
    if stage not in STAGES:
        raise SaroError(f"unknown training stage '{stage}' (sft, dpo)")
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        cmd += ["--config_file", str(accelerate_config)]
    if cpu and num_processes > 1:
        cmd += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd += ["--num_cpu_threads_per_process", "1"]
    if num_processes > 1 or not accelerate_config:
        cmd += ["--num_processes", str(num_processes)]
    if port:
        cmd += ["--main_process_port", str(port)]
    return [*cmd, "-m", "saro.train", stage, str(spec)]


def run_spec(stage: str, spec_path: Path) -> dict[str, Any]:
    """Run one stage from a spec file in this process (one of possibly many launched ranks)."""
    try:
        spec = json.loads(Path(spec_path).read_text())
    except (OSError, ValueError) as e:
        raise SaroError(f"{spec_path}: cannot read training spec ({e})") from None
    for key in ("config", "output_dir", "train_file"):
        if key not in spec:
            raise SaroError(f"{spec_path}: training spec has no '{key}'")
    eval_file = Path(spec["eval_file"]) if spec.get("eval_file") else None
    if stage == "sft":
        from saro.train.config import build_sft_config
        from saro.train.sft import train_sft

        return train_sft(
            build_sft_config(spec["config"], spec["output_dir"]), Path(spec["train_file"]), eval_file
        )
    if stage == "dpo":
        from saro.train.config import build_dpo_config
        from saro.train.dpo import train_dpo

        return train_dpo(
            build_dpo_config(spec["config"], spec["output_dir"]), Path(spec["train_file"]), eval_file
        )
    raise SaroError(f"unknown training stage '{stage}' (sft, dpo)")


def main(argv: list[str] | None = None) -> int:
    """``python -m saro.train {sft,dpo} SPEC.json``: exit 0 on success, 2 on a user error (one line)."""
    parser = argparse.ArgumentParser(prog="python -m saro.train", description="Run one saro training stage.")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("spec", type=Path)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    from saro.console import setup_logging

    setup_logging(args.verbose)
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        logging.getLogger("saro").setLevel(
            logging.WARNING
        )  # one copy of the progress lines, not one per rank
    try:
        summary = run_spec(args.stage, args.spec)
    except SaroError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if rank == 0:
        keep = (
            "stage",
            "global_step",
            "train_loss",
            "train_tokens_per_second",
            "final_dir",
            "skipped",
            "world_size",
        )
        print(json.dumps({k: summary.get(k) for k in keep}))
    return 0
