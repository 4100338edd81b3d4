"""Running a training stage in its own processes: the spec file, the ``accelerate launch`` command line, and the
``python -m saro.train`` entry that every launched process runs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saro import stages as table
from saro.errors import SaroError
from saro.records import atomic_write_json

if TYPE_CHECKING:
    from saro.recipe import LaunchConfig

log = logging.getLogger(__name__)

# the trainers a launched process runs (``python -m saro.train sft|dpo SPEC``), by the training stages' commands
TRAINERS: dict[str, str] = {table.get(s).command[-1]: s for s in table.DISTRIBUTED_STAGES}
# set in every process that ``saro run`` launches: it trains, it never launches again
LAUNCHED_ENV = "SARO_LAUNCHED"
CONFIG_DIR = Path("configs") / "accelerate"


def write_spec(
    path: Path,
    config: dict[str, Any],
    output_dir: Path,
    train_file: Path,
    eval_file: Path | None = None,
    method: str | None = None,
) -> Path:
    """Write the JSON spec that ``python -m saro.train STAGE SPEC`` reads (``method`` is named in the model card:
    RW, SafetySFT, SRPO, SafetyDPO)."""
    spec = {
        "config": config,
        "output_dir": str(output_dir),
        "train_file": str(train_file),
        "eval_file": str(eval_file) if eval_file else None,
        "method": method,
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
    if stage not in TRAINERS:
        raise SaroError(f"unknown training stage '{stage}' ({', '.join(TRAINERS)})")
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


def accelerate_config_file(name: str, base: Path | None = None) -> Path:
    """The accelerate config ``name`` names: a file (relative to ``base``, the recipe's folder, or the current
    folder) or a name in ``configs/accelerate/`` (here or in the source checkout)."""
    p = Path(name)
    for c in ([base / p] if base and not p.is_absolute() else []) + [p]:
        if c.is_file():
            return c.resolve()
    dirs = [CONFIG_DIR, Path(__file__).resolve().parents[3] / CONFIG_DIR]
    for d in dirs:
        for c in (d / name, d / f"{name}.yaml"):
            if c.is_file():
                return c.resolve()
    names = sorted({f.stem for d in dirs if d.is_dir() for f in d.glob("*.yaml")})
    raise SaroError(
        f"launch.config: '{name}' is neither a file nor one of {', '.join(names) or '(none found)'}"
    )


def accelerate_args(launch: LaunchConfig, base: Path | None = None) -> list[str]:
    """The ``accelerate launch`` options of a recipe's ``launch:`` section (unset fields: the config file's)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch.config:
        cmd += ["--config_file", str(accelerate_config_file(launch.config, base))]
    if launch.use_cpu and (launch.num_processes or 1) > 1:  # --cpu alone would start one process
        cmd += ["--multi_gpu", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1"]
    elif launch.use_cpu:
        cmd += ["--cpu"]
    mixed = launch.mixed_precision or ("no" if launch.use_cpu else None)
    options = {
        "num_processes": launch.num_processes,
        "num_machines": launch.num_machines or (1 if launch.use_cpu else None),
        "machine_rank": launch.machine_rank,
        "main_process_ip": launch.main_process_ip,
        "main_process_port": launch.main_process_port,
        "mixed_precision": mixed,
    }
    for key, value in options.items():
        if value is not None:
            cmd += [f"--{key}", str(value)]
    return [*cmd, *launch.args]


def recipe_launch_command(
    stage: str, launch: LaunchConfig, recipe_path: str | Path, overrides: list[str], overwrite: bool = False
) -> list[str]:
    """The argv that runs pipeline stage ``stage`` (train_sft / train_dpo) of the recipe at ``recipe_path`` under
    ``accelerate launch``: ``... -m saro train sft RECIPE --set ...`` with the same overrides, so every rank loads
    the identical recipe."""
    if stage not in table.DISTRIBUTED_STAGES:
        raise SaroError(
            f"stage '{stage}' does not run under accelerate launch ({', '.join(table.DISTRIBUTED_STAGES)})"
        )
    command = table.get(stage).command
    cmd = [*accelerate_args(launch, Path(recipe_path).parent), "-m", "saro", *command, str(recipe_path)]
    for ov in overrides:
        cmd += ["--set", ov]
    return [*cmd, "--overwrite"] if overwrite else cmd


def launched() -> bool:
    """True inside a process started by ``accelerate launch`` (or by ``saro run``'s launch)."""
    return bool(os.environ.get("WORLD_SIZE") or os.environ.get(LAUNCHED_ENV))


def launch_stage(
    stage: str, launch: LaunchConfig, recipe_path: str | Path | None, overrides: list[str], overwrite: bool
) -> None:
    """Run one training stage under ``accelerate launch`` and wait for it; a failure is a one-line SaroError."""
    if not recipe_path:
        raise SaroError(f"launch: stage '{stage}' needs a recipe loaded from a file (saro run RECIPE.yaml)")
    cmd = recipe_launch_command(stage, launch, recipe_path, overrides, overwrite)
    log.info("stage %s: accelerate launch (%s)", stage, " ".join(cmd[3:]))
    env = {**os.environ, LAUNCHED_ENV: "1"}
    try:
        rc = subprocess.run(cmd, env=env, check=False).returncode
    except OSError as e:
        raise SaroError(f"stage '{stage}': cannot start accelerate launch ({e})") from None
    if rc != 0:
        raise SaroError(f"stage '{stage}': accelerate launch exited with code {rc} (its output is above)")


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
            build_sft_config(spec["config"], spec["output_dir"]),
            Path(spec["train_file"]),
            eval_file,
            method=spec.get("method"),
        )
    if stage == "dpo":
        from saro.train.config import build_dpo_config
        from saro.train.dpo import train_dpo

        return train_dpo(
            build_dpo_config(spec["config"], spec["output_dir"]),
            Path(spec["train_file"]),
            eval_file,
            method=spec.get("method"),
        )
    raise SaroError(f"unknown training stage '{stage}' ({', '.join(TRAINERS)})")


def main(argv: list[str] | None = None) -> int:
    """``python -m saro.train {sft,dpo} SPEC.json``: exit 0 on success, 2 on a user error (one line)."""
    parser = argparse.ArgumentParser(prog="python -m saro.train", description="Run one saro training stage.")
    parser.add_argument("stage", choices=list(TRAINERS))
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
