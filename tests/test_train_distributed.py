"""The training stages as separate processes, the way users run them: two gloo ranks on CPU under
``accelerate launch`` (both must take part in one training), and ``python -m saro.train`` killed with SIGKILL right
after a checkpoint, then resumed to the same final step; a recipe's ``launch:`` section, with which ``saro run`` starts
the training stages under ``accelerate launch`` itself (two gloo ranks) and runs the other stages in-process."""

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
from test_pipeline import tiny_recipe
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


def test_launch_section_builds_the_accelerate_command(tmp_path: Path) -> None:
    """A named config from configs/accelerate/, a file next to the recipe, the other options and the overrides."""
    from saro.errors import SaroError
    from saro.recipe import LaunchConfig
    from saro.train.launch import CONFIG_DIR, recipe_launch_command

    repo = Path(__file__).resolve().parents[1]
    recipe = tmp_path / "r.yaml"
    named = LaunchConfig(config="deepspeed_zero3", num_processes=8)
    cmd = recipe_launch_command("train_sft", named, recipe, ["train_sft.learning_rate=1e-4"])
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[3:5] == ["--config_file", str(repo / CONFIG_DIR / "deepspeed_zero3.yaml")]
    assert cmd[5:7] == ["--num_processes", "8"]
    assert cmd[7:] == ["-m", "saro", "train", "sft", str(recipe), "--set", "train_sft.learning_rate=1e-4"]

    (tmp_path / "acc.yaml").write_text("distributed_type: MULTI_GPU\n")
    from_file = LaunchConfig.model_validate(
        {
            "config": "acc.yaml",
            "num_processes": 16,
            "num_machines": 2,
            "machine_rank": 1,
            "main_process_ip": "10.0.0.1",
            "main_process_port": 29500,
            "mixed_precision": "bf16",
            "args": ["--rdzv_backend", "c10d"],
        }
    )
    cmd = recipe_launch_command("train_dpo", from_file, recipe, [], overwrite=True)
    opts = cmd[3 : cmd.index("-m", 3)]
    assert opts == [
        "--config_file",
        str((tmp_path / "acc.yaml").resolve()),
        "--num_processes",
        "16",
        "--num_machines",
        "2",
        "--machine_rank",
        "1",
        "--main_process_ip",
        "10.0.0.1",
        "--main_process_port",
        "29500",
        "--mixed_precision",
        "bf16",
        "--rdzv_backend",
        "c10d",
    ]
    assert cmd[-6:] == ["-m", "saro", "train", "dpo", str(recipe), "--overwrite"]
    with pytest.raises(
        SaroError, match="launch.config: 'zero9' is neither a file nor one of .*deepspeed_zero3"
    ):
        recipe_launch_command("train_sft", LaunchConfig(config="zero9"), recipe, [])
    with pytest.raises(SaroError, match="does not run under accelerate launch"):
        recipe_launch_command("eval", named, recipe, [])


def test_launch_section_is_validated_and_changes_no_stage_hash(tiny_model_dir: Path, tmp_path: Path) -> None:
    from saro.errors import SaroError
    from saro.pipeline import load_recipe, stage_hashes
    from saro.recipe import validate_recipe

    data = tiny_recipe(tiny_model_dir, tmp_path / "run")
    plain = validate_recipe(data)
    launched = validate_recipe({**data, "launch": {"config": "deepspeed_zero3", "num_processes": 8}})
    assert launched.launch is not None and launched.launch.num_processes == 8
    assert stage_hashes(launched) == stage_hashes(plain)
    with pytest.raises(SaroError, match="launch.num_procs"):
        validate_recipe({**data, "launch": {"num_procs": 8}})
    with pytest.raises(SaroError, match="launch.num_processes"):
        validate_recipe({**data, "launch": {"num_processes": 0}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nlaunch: {config: zero9}\n")
    with pytest.raises(SaroError, match="launch.config: 'zero9'"):  # at load time, not when training starts
        load_recipe(bad)


def test_saro_run_launches_the_training_stage_on_two_cpu_ranks(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``launch: {num_processes: 2, use_cpu: true}``: run_recipe trains train_sft under accelerate launch with two
    gloo ranks and runs every other stage in this process; a second run launches nothing and skips everything."""
    import yaml

    import saro.train.launch as launch_mod
    from saro.pipeline import load_recipe, run_recipe
    from saro.records import read_json

    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    r = tiny_recipe(tiny_model_dir, tmp_path / "run")
    r["train_sft"].update(max_steps=4, per_device_train_batch_size=2)
    r["launch"] = {"num_processes": 2, "use_cpu": True, "main_process_port": _free_port()}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r))
    calls: list[list[str]] = []
    real_run = subprocess.run

    def spy(cmd: list[str], **kw: object) -> subprocess.CompletedProcess:
        if "accelerate.commands.launch" in cmd:  # subprocess.run is patched for everyone (git too)
            calls.append(list(cmd))
            kw.setdefault("timeout", 400)
        return real_run(cmd, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(launch_mod.subprocess, "run", spy)
    out = run_recipe(load_recipe(path, ["train_sft.logging_steps=2"]), until="synth_srpo")
    assert len(calls) == 1 and calls[0][-6:] == [
        "saro",
        "train",
        "sft",
        str(path.resolve()),
        "--set",
        "train_sft.logging_steps=2",
    ]
    assert out["train_sft"]["main"]["world_size"] == 2
    run = tmp_path / "run"
    ranks = [json.loads((run / "train_sft" / "ranks" / f"rank-{i}.json").read_text()) for i in (0, 1)]
    assert all(x["world_size"] == 2 and x["global_step"] == 4 for x in ranks)
    stages = read_json(run / "manifest.json")["stages"]
    assert [s for s, st in stages.items() if st["status"] == "done"] == [
        "prompts",
        "synth_rw",
        "train_sft",
        "synth_srpo",
    ]
    assert stages["train_sft"]["launch"] and not any(
        stages[s].get("launch") for s in ("prompts", "synth_rw", "synth_srpo")
    )

    run_recipe(load_recipe(path, ["train_sft.logging_steps=2"]), until="synth_srpo")
    assert len(calls) == 1  # nothing launched again
    again = read_json(run / "manifest.json")["stages"]
    assert {s: st["started"] for s, st in again.items()} == {s: st["started"] for s, st in stages.items()}


def test_a_failed_or_incomplete_launch_is_one_line_error(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """accelerate launch exiting non-zero, or exiting 0 without finishing the stage: a one-line SaroError."""
    import yaml

    import saro.train.launch as launch_mod
    from saro.errors import SaroError
    from saro.pipeline import _launch_stage, load_recipe

    r = tiny_recipe(tiny_model_dir, tmp_path / "run")
    r["launch"] = {"num_processes": 2, "use_cpu": True}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r))
    recipe = load_recipe(path)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    codes = iter([3, 0])
    monkeypatch.setattr(
        launch_mod.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, next(codes))
    )
    with pytest.raises(SaroError, match=r"stage 'train_sft': accelerate launch exited with code 3") as e:
        _launch_stage(recipe, "train_sft", False)
    assert "\n" not in str(e.value) and e.value.exit_code == 2
    with pytest.raises(SaroError, match="does not show it done with this recipe's hash"):
        _launch_stage(recipe, "train_sft", False)
