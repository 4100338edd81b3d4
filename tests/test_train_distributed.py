"""The training stages as separate processes, the way users run them: two gloo ranks on CPU under
``accelerate launch`` (both must take part in one training), and ``python -m saro.train`` killed with SIGKILL right
after a checkpoint, then resumed to the same final step."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_train import _dpo_rows, _sft_rows, _write_jsonl


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(tmp / "hf_datasets"),  # shared by the ranks, private to the test
            "TOKENIZERS_PARALLELISM": "false",
            "SARO_NO_PROGRESS": "1",
            "TQDM_DISABLE": "1",
        }
    )
    env.pop("WORLD_SIZE", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_cpu_sft(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from saro.train.launch import launch_command, write_spec

    data = _write_jsonl(tmp_path / "sft.jsonl", _sft_rows(32))
    out = tmp_path / "ddp"
    section = {
        "model": str(tiny_model_dir),
        "max_steps": 4,
        "save_steps": 2,
        "per_device_train_batch_size": 2,
        "max_length": 128,
        "logging_steps": 1,
        "learning_rate": 1e-3,
    }
    spec = write_spec(tmp_path / "spec.json", section, out, data)
    cmd = launch_command("sft", spec, num_processes=2, cpu=True, port=_free_port())
    proc = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ranks = [json.loads((out / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and "DISTRIBUTED" in r["parallel_mode"] for r in ranks)
    assert all(r["steps_here"] == 4 and r["global_step"] == 4 for r in ranks)
    assert ranks[0]["pid"] != ranks[1]["pid"]
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    # One training over both ranks: 4 steps x 2 per device x 2 ranks = 16 of 32 examples = half an epoch
    # (two independent trainings would each report a quarter).
    assert summary["world_size"] == 2 and summary["epoch"] == pytest.approx(0.5)
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["global_step"] == 4 and last["world_size"] == 2
    AutoModelForCausalLM.from_pretrained(out / "final")


def _wait_for_checkpoint(out: Path, proc: subprocess.Popen, timeout: float) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        ckpts = sorted(out.glob("checkpoint-*/trainer_state.json"))
        if ckpts:
            return ckpts[0].parent
        if proc.poll() is not None:
            raise AssertionError(f"training ended (rc {proc.returncode}) before its first checkpoint")
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_sigkill_then_resume_reaches_the_same_final_step(
    tiny_model_dir: Path, tmp_path: Path, stage: str
) -> None:
    from saro.train.launch import write_spec

    rows = _sft_rows(48) if stage == "sft" else _dpo_rows(48)
    data = _write_jsonl(tmp_path / f"{stage}.jsonl", rows)
    out = tmp_path / stage
    section = {
        "model": str(tiny_model_dir),
        "max_steps": 6,
        "save_steps": 2,
        "per_device_train_batch_size": 2,
        "max_length": 128,
        "logging_steps": 1,
        "learning_rate": 1e-3,
    }
    spec = write_spec(tmp_path / "spec.json", section, out, data)
    cmd = [sys.executable, "-m", "saro.train", stage, str(spec)]
    env = _env(tmp_path)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = _wait_for_checkpoint(out, proc, timeout=120)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "final").exists()

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert summary["global_step"] == 6 and summary["resumed_from"] is not None
    assert int(summary["resumed_from"].split("-")[1]) >= int(first.name.split("-")[1])
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    loss_steps = [s for s in steps if s]
    assert sorted(set(loss_steps)) == list(range(1, 7))
    assert (out / "final" / "saro_train.json").is_file()
    if stage == "dpo":
        assert summary["ref_logps_cached"]
