"""End to end on the tiny random model: every stage runs, the manifest skips finished stages, and a run killed
in the middle resumes without redoing completed stages."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from saro import stages
from saro.pipeline import load_recipe, mask_secrets, run_recipe, run_stage, stage_hashes
from saro.records import read_json, read_rows
from saro.stage import RunDir
from saro.train.checkpoints import complete_checkpoints

STAGES = list(stages.STAGES)


def tiny_recipe(model_dir: Path, run_dir: Path, **over) -> dict:
    r = {
        "name": "tiny",
        "seed": 0,
        "run_dir": str(run_dir),
        "threads": 1,
        "model": {"source": str(model_dir), "template": "chatml"},
        "prompts": {
            "categorize": "keyword",
            "attacks": {"train": ["prefix_injection", "poem"], "heldout": ["evil_confidant"]},
            "eval": [
                {"source": "harmbench", "n": 4, "suite": "harmbench"},
                {"source": "harmbench", "n": 2, "attacks": "heldout", "suite": "harmbench-jailbreak"},
                {"source": "rho_overrefusal", "n": 4, "suite": "rho"},
                {"source": "gsm8k", "n": 2, "suite": "gsm8k"},
            ],
            "rw": [
                {"source": "advbench", "n": 6},
                {"source": "advbench", "n": 2, "attacks": "train"},
                {"source": "saro_benign", "n": 3},
                {"source": "saro_borderline", "n": 3},
            ],
            "srpo": [
                {"source": "advbench", "n": 3},
                {"source": "advbench", "n": 2, "attacks": "train"},
                {"source": "saro_borderline", "n": 2},
            ],
        },
        "synth_rw": {"k": 2, "answer_model": {"backend": "hf", "model": "@base", "max_new_tokens": 12}},
        "train_sft": {
            "max_steps": 3,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-3,
            "max_length": 384,
            "logging_steps": 1,
            "save_steps": 2,
            "save_total_limit": 1,
        },
        "synth_srpo": {
            "n_samples": 2,
            "policy": {"backend": "hf", "model": "@train_sft", "temperature": 1.0, "max_new_tokens": 24},
            # the drift model's answers become rejected sides only when complete and judged compliant: the tiny
            # random model's never are, the embedded model's often are
            "drift_model": {"backend": "hf", "model": "embedded", "max_new_tokens": 48},
        },
        "train_dpo": {
            "max_steps": 2,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-4,
            "max_length": 512,
            "logging_steps": 1,
            "save_steps": 1,
            "save_total_limit": 1,
            "precompute_ref_log_probs": True,
        },
        "eval": {
            "models": [
                {"name": "base", "source": "@base"},
                {"name": "rw", "source": "@train_sft"},
                {"name": "saro", "source": "@train_dpo"},
            ],
            "max_new_tokens": 24,
            "batch_size": 8,
            "bootstrap": 50,
        },
        "report": {"formats": ["json", "md"]},
    }
    r.update(over)
    return r


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    path = d / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tiny_model_dir, d / "run")))
    recipe = load_recipe(path)
    run_recipe(recipe)
    return recipe, d / "run"


def test_all_stages_done_with_artefacts(finished_run):
    _recipe, run = finished_run
    m = read_json(run / "manifest.json")
    assert [s for s in STAGES if m["stages"][s]["status"] == "done"] == STAGES
    assert m["git_commit"] is None or len(m["git_commit"]) >= 40
    assert {"torch", "transformers", "trl"} <= set(m["versions"])
    assert m["seed"] == 0 and m["stage_hashes"]["report"]
    for f in [
        "prompts/rw.jsonl",
        "prompts/eval.jsonl",
        "synth_rw/rit_d.jsonl",
        "synth_rw/stats.json",
        "synth_rw/safety_sft.jsonl",
        "train_sft/final/config.json",
        "synth_srpo/pairs.jsonl",
        "synth_srpo/stats.json",
        "train_dpo/final/config.json",
        "eval/metrics.json",
        "report.json",
        "report.md",
    ]:
        assert (run / f).exists(), f
    rows = read_rows(run / "synth_rw" / "rit_d.jsonl")
    assert rows and all("<think>" in r["messages"][-1]["content"] for r in rows)
    pairs = read_rows(run / "synth_srpo" / "pairs.jsonl")
    # no OP-COT: the tiny RW model never ends its turn, and a truncated sample is never trained on
    assert {p["pair_type"] for p in pairs} >= {"pp_cot", "early_late"}
    report = read_json(run / "report.json")
    assert set(report["summary"]) == {"base", "rw", "saro"}
    h = report["summary"]["base"]
    # tiny random weights: a verdict may be unreadable, left out of n and counted
    assert [h[k]["n"] + h[k]["unparseable"] for k in ("asr_harmful", "over_refusal", "asr_jailbreak")] == [
        4,
        4,
        2,
    ]
    assert (
        h["accuracy"]["n"] == 2 and h["method"] == "none" and report["summary"]["saro"]["method"] == "trained"
    )
    assert len(report["summary"]["base"]["asr_harmful"]["ci95"]) == 2


def test_rerun_skips_everything(finished_run):
    recipe, run = finished_run
    before = read_json(run / "manifest.json")["stages"]
    t = time.time()
    run_recipe(recipe)
    assert time.time() - t < 20
    after = read_json(run / "manifest.json")["stages"]
    assert all(before[s]["finished"] == after[s]["finished"] for s in STAGES)


def test_changed_config_redoes_stage_and_downstream(finished_run):
    recipe, run = finished_run
    h1 = stage_hashes(recipe)
    changed = recipe.model_copy(deep=True)
    changed.eval.max_new_tokens = 25
    h2 = stage_hashes(changed)
    assert h1["train_sft"] == h2["train_sft"] and h1["eval"] != h2["eval"] and h1["report"] != h2["report"]
    rd = RunDir(run)
    assert rd.is_done("eval", h1["eval"]) and not rd.is_done("eval", h2["eval"])


def test_a_new_training_variant_only_invalidates_what_reads_it(tmp_path):
    """Adding SafetySFT to train_sft keeps the SRPO data and the SaRO model valid; naming it downstream does not."""
    from saro.fingerprint import fingerprints, training_units

    def load(r: dict, name: str):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(r))
        return load_recipe(path)

    base = tiny_recipe(tmp_path / "model", tmp_path / "run")
    plain = load(base, "plain")
    more = json.loads(json.dumps(base))
    more["train_sft"]["variants"] = {"safety_sft": {"data": "safety_sft"}}
    more["eval"]["models"].append({"name": "safety-sft", "source": "@train_sft/safety_sft"})
    withv = load(more, "withv")
    h1, h2 = stage_hashes(plain), stage_hashes(withv)
    assert h1["train_sft"] != h2["train_sft"]  # the stage has more to train
    assert h1["synth_srpo"] == h2["synth_srpo"] and h1["train_dpo"] == h2["train_dpo"]  # main model only
    assert h1["eval"] != h2["eval"]  # names the variant

    def dpo_units(r):
        return training_units(r, "train_dpo", fingerprints(r, "train_dpo"))

    assert dpo_units(plain) == dpo_units(withv)  # the SaRO model reads the RW model only
    from_variant = json.loads(json.dumps(more))
    from_variant["train_dpo"]["variants"] = {"from_sft": {"model": "@train_sft/safety_sft"}}
    units = dpo_units(load(from_variant, "fromv"))
    assert units["main"] == dpo_units(withv)["main"] and units["from_sft"] != units["main"]
    more["train_sft"]["learning_rate"] = 3e-4  # the main model changes: everything downstream is redone
    h3 = stage_hashes(load(more, "lr"))
    assert h3["synth_srpo"] != h2["synth_srpo"] and h3["train_dpo"] != h2["train_dpo"]


def test_stage_needs_upstream(tiny_model_dir, tmp_path):
    from saro.errors import SaroError

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tiny_model_dir, tmp_path / "run")))
    with pytest.raises(SaroError, match="needs 'prompts'"):
        run_stage(load_recipe(path), "synth_rw")


def test_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("MY_API_KEY", "sk-verysecretvalue123")
    out = mask_secrets(
        {
            "api_key": "abc",
            "api_key_env": "MY_API_KEY",
            "url": "http://x?k=sk-verysecretvalue123",
            "nested": [{"token": "t0k"}],
        }
    )
    assert out["api_key"] == "***" and out["api_key_env"] == "MY_API_KEY"
    assert "sk-verysecret" not in json.dumps(out)
    assert out["nested"][0]["token"] == "***"


def test_killed_run_resumes_without_redoing_finished_stages(tiny_model_dir, tmp_path):
    """SIGKILL `saro run` while train_sft runs, start it again: earlier stages are not redone, the run finishes."""
    run = tmp_path / "run"
    path = tmp_path / "r.yaml"
    r = tiny_recipe(tiny_model_dir, run)
    r["train_sft"]["max_steps"] = 24  # long enough to be killed in the middle
    r["train_sft"]["save_steps"] = 4
    path.write_text(yaml.safe_dump(r))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SARO_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "saro", "run", str(path), "--until", "train_sft"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    ckpt = run / "train_sft"
    while time.time() < deadline:
        if complete_checkpoints(ckpt) or proc.poll() is not None:  # a whole one: the kill must leave one
            break
        time.sleep(0.5)
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    m1 = read_json(run / "manifest.json")["stages"]
    assert m1["synth_rw"]["status"] == "done" and m1["train_sft"]["status"] == "running"
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    m2 = read_json(run / "manifest.json")["stages"]
    assert m2["prompts"]["finished"] == m1["prompts"]["finished"]
    assert m2["synth_rw"]["finished"] == m1["synth_rw"]["finished"]
    assert m2["train_sft"]["status"] == "done"
    assert (run / "train_sft" / "final" / "config.json").exists()
    summary = read_json(run / "train_sft" / "metrics.json")["summary"]
    assert (
        summary["global_step"] == 24 and summary["resumed_from"]
    )  # resumed from a checkpoint, same final step


def test_reuse_from_copies_stages_models_and_generations(finished_run, tmp_path):
    """A recipe that only adds an SRPO variant reuses every stage, model and generation that has the same inputs."""
    recipe, run = finished_run
    r = tiny_recipe(Path(recipe.model.source), tmp_path / "run2", reuse_from=str(run), name="tiny2")
    r["train_dpo"]["variants"] = {"pp_only": {"pair_types": ["pp_cot"]}}
    r["eval"]["models"].append({"name": "pp-only", "source": "@train_dpo/pp_only"})
    path = tmp_path / "r2.yaml"
    path.write_text(yaml.safe_dump(r))
    run_recipe(load_recipe(path))
    run2 = tmp_path / "run2"
    m = read_json(run2 / "manifest.json")["stages"]
    for s in ["prompts", "synth_rw", "train_sft", "synth_srpo"]:
        assert m[s]["reused_from"] == str(run), s
    assert "reused_from" not in m["train_dpo"]  # the stage ran: it has a new variant
    dpo = m["train_dpo"]["summary"]
    assert dpo["main"]["reused_from"] and "reused_from" not in dpo["pp_only"]
    assert (run2 / "train_dpo" / "final" / "config.json").exists()
    assert (run2 / "train_dpo" / "pp_only" / "final" / "config.json").exists()
    assert not (run2 / "train_dpo" / "final" / "pp_only").exists()
    for name in ("base", "rw", "saro"):
        a = (run / "eval" / name / "generations.jsonl").read_text()
        assert (run2 / "eval" / name / "generations.jsonl").read_text() == a, name
    assert len(read_rows(run2 / "eval" / "pp-only" / "generations.jsonl")) == len(
        read_rows(run / "eval" / "base" / "generations.jsonl")
    )
    assert set(read_json(run2 / "report.json")["summary"]) == {"base", "rw", "saro", "pp-only"}

    # killed while training the new variant, after the main model was linked in: the rerun links again and trains
    weights = run2 / "train_dpo" / "final" / "model.safetensors"
    assert os.path.samefile(weights, run / "train_dpo" / "final" / "model.safetensors")
    shutil.rmtree(run2 / "train_dpo" / "pp_only")
    r2 = RunDir(run2)
    r2.update_stage("train_dpo", status="running")
    run_stage(load_recipe(path), "train_dpo")
    assert os.path.samefile(weights, run / "train_dpo" / "final" / "model.safetensors")
    assert (run2 / "train_dpo" / "pp_only" / "final" / "config.json").exists()
    assert RunDir(run2).status("train_dpo")["status"] == "done"


def test_adding_a_variant_in_place_trains_only_the_variant(finished_run, tmp_path):
    """Same run folder, no reuse_from: adding SafetySFT keeps the RW model, the SRPO data and the SaRO model;
    editing the variant retrains only the variant."""
    recipe, run = finished_run
    run3 = tmp_path / "run3"
    shutil.copytree(run, run3)
    r = tiny_recipe(Path(recipe.model.source), run3)
    r["train_sft"]["variants"] = {"safety_sft": {"data": "safety_sft", "max_steps": 2}}
    path = tmp_path / "r3.yaml"
    path.write_text(yaml.safe_dump(r))
    before = read_json(run3 / "manifest.json")["stages"]
    rw_weights = run3 / "train_sft" / "final" / "model.safetensors"
    ino = rw_weights.stat().st_ino
    run_recipe(load_recipe(path), until="train_dpo")
    after = read_json(run3 / "manifest.json")["stages"]
    assert rw_weights.stat().st_ino == ino  # not trained again
    assert after["train_sft"]["summary"]["main"] == before["train_sft"]["summary"]["main"]
    assert (run3 / "train_sft" / "safety_sft" / "final" / "config.json").exists()
    for s in ("synth_srpo", "train_dpo"):
        assert after[s]["finished"] == before[s]["finished"], s  # skipped: it reads the main model only
    r["train_sft"]["variants"]["safety_sft"]["learning_rate"] = 5e-4
    path.write_text(yaml.safe_dump(r))
    variant_weights = run3 / "train_sft" / "safety_sft" / "final" / "model.safetensors"
    vino = variant_weights.stat().st_ino
    run_stage(load_recipe(path), "train_sft")
    assert rw_weights.stat().st_ino == ino and variant_weights.stat().st_ino != vino
    r["train_sft"].pop("variants")  # back to the plain recipe: the variant's folder goes, the RW model stays
    path.write_text(yaml.safe_dump(r))
    run_stage(load_recipe(path), "train_sft")
    assert rw_weights.stat().st_ino == ino and not (run3 / "train_sft" / "safety_sft").exists()


def test_copy_tree_is_idempotent_and_replaces_stale_files(tmp_path):
    """Copying onto an earlier copy (a stage resumed after reusing outputs) keeps links and replaces stale files."""
    from saro.stage import copy_tree

    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "final").mkdir(parents=True)
    (src / "metrics.jsonl").write_text("a\n")
    (src / "final" / "w.bin").write_bytes(b"weights")
    (src / "variant").mkdir()
    (src / "variant" / "x").write_text("skip me")
    copy_tree(src, dst, skip={"variant"})
    copy_tree(src, dst, skip={"variant"})  # again onto the same links
    assert os.path.samefile(src / "final" / "w.bin", dst / "final" / "w.bin")
    assert not (dst / "variant").exists()
    (dst / "metrics.jsonl").unlink()
    (dst / "metrics.jsonl").write_text("stale\n")
    copy_tree(src, dst)
    assert (dst / "metrics.jsonl").read_text() == "a\n" and (dst / "variant" / "x").read_text() == "skip me"
    assert (src / "metrics.jsonl").read_text() == "a\n"  # the source is never written


def test_saro_train_sft_under_accelerate_launch_two_cpu_processes(tiny_model_dir, tmp_path):
    """`accelerate launch -m saro train sft RECIPE` unchanged: one training over two gloo ranks, one manifest."""
    import socket

    r = tiny_recipe(tiny_model_dir, tmp_path / "run")
    r["train_sft"].update(max_steps=4, per_device_train_batch_size=2)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r))
    run_recipe(load_recipe(path), until="synth_rw")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "SARO_NO_PROGRESS": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf"),
    }
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        "1",
        "--main_process_port",
        str(port),
        "-m",
        "saro",
        "train",
        "sft",
        str(path),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    st = read_json(tmp_path / "run" / "manifest.json")["stages"]["train_sft"]
    assert st["status"] == "done"
    ranks = [
        json.loads((tmp_path / "run" / "train_sft" / "ranks" / f"rank-{i}.json").read_text()) for i in (0, 1)
    ]
    assert all(x["world_size"] == 2 and x["global_step"] == 4 for x in ranks)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "train_sft" / "final")


def test_synth_srpo_sigkill_and_resume_gives_the_same_ids(tiny_model_dir, tmp_path):
    """Kill `saro synth srpo` while it samples the RW model, resume: the same samples and pairs as a clean run."""
    import random

    r = tiny_recipe(tiny_model_dir, tmp_path / "ref")
    r["prompts"]["srpo"] = [
        {"source": "advbench", "n": 8},
        {"source": "advbench", "n": 4, "attacks": "train"},
        {"source": "saro_borderline", "n": 4},
    ]
    r["synth_srpo"]["policy"]["batch_size"] = 2
    ref_yaml = tmp_path / "ref.yaml"
    ref_yaml.write_text(yaml.safe_dump(r))
    run_recipe(load_recipe(ref_yaml), until="train_sft")
    shutil.copytree(tmp_path / "ref", tmp_path / "killed")
    r["run_dir"] = str(tmp_path / "killed")
    killed_yaml = tmp_path / "killed.yaml"
    killed_yaml.write_text(yaml.safe_dump(r))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SARO_NO_PROGRESS": "1"}
    run_stage(load_recipe(ref_yaml), "synth_srpo")
    cmd = [sys.executable, "-m", "saro", "synth", "srpo", str(killed_yaml)]
    samples = tmp_path / "killed" / "synth_srpo" / "samples.jsonl"
    total = len(read_rows(tmp_path / "ref" / "synth_srpo" / "samples.jsonl"))
    kills = 0
    for target in sorted(random.Random(1).sample(range(2, total - 2, 2), 3)):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while proc.poll() is None and time.time() < deadline:
            if samples.exists() and len(samples.read_bytes().splitlines()) >= target:
                break
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert kills == 3
    for f in ("samples.jsonl", "pairs.jsonl", "safety_dpo.jsonl"):
        ref_rows = {x["id"]: x for x in read_rows(tmp_path / "ref" / "synth_srpo" / f)}
        got = {x["id"]: x for x in read_rows(tmp_path / "killed" / "synth_srpo" / f)}
        assert sorted(got) == sorted(ref_rows), f
    stats = read_json(tmp_path / "killed" / "synth_srpo" / "stats.json")
    assert set(stats["by_type"]) >= {"pp_cot", "early_late"}
