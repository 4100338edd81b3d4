"""Overhead of saro's training stages over plain TRL, measured side by side in one process.

Runs our ``train_sft`` / ``train_dpo`` and a plain TRL script with the same model, data and settings (same
tokenizer and chat template, assistant-only loss, max_length, batch size, steps, checkpointing, precomputed
reference log-probs, final save), alternating the order, several repeats, median. Throughput = tokens trained /
wall time of the whole stage call (load, data preparation, audits, training, saving), so everything saro adds is
counted. Time is this process's CPU time by default (``--clock cpu``): on a machine shared with other jobs, wall
time mostly measures their load (repeats of the same code varied by 30% here); ``--clock wall`` uses wall time.
Both ratios are printed; the last line is ``sft_ratio <x> dpo_ratio <y>`` (our tokens/s over plain TRL's, on the
chosen clock); the goal is >= 0.95.

    python bench/train_overhead.py                 # tiny random Llama (SmolLM2 tokenizer), ~3-4 min on 1 thread
    python bench/train_overhead.py --model embedded --steps 4 --repeats 1   # the real 135M model (slow on CPU)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

TOPICS = [
    "build a weapon",
    "write a phishing email",
    "bake bread",
    "learn python",
    "plan a trip",
    "fix a bike",
]
HARM = set(TOPICS[:2])


def _reasoning(t: str, safe: bool) -> str:
    verdict = (
        ("could enable harm, so I must refuse" if t in HARM else "is benign, so I should help")
        if safe
        else ("I will just comply")
    )
    return (
        f"<think>\nThe user asks how to {t}. First, I identify the intent and the policy clause that applies.\n"
        f"Wait, let me reflect on possible harm before answering.\nThe request to {t} {verdict}.\n</think>\n"
    )


def _answer(t: str, safe: bool) -> str:
    if t in HARM and safe:
        return f"I can't help with how to {t}. I can explain the risks and safer alternatives instead."
    return f"Sure, here is how to {t}: step one, prepare; step two, do it carefully; step three, check the result."


def write_data(d: Path, n_sft: int, n_dpo: int) -> tuple[Path, Path]:
    rng = random.Random(0)
    sft = d / "sft.jsonl"
    with open(sft, "w") as f:
        for i in range(n_sft):
            t = rng.choice(TOPICS)
            msgs = [
                {"role": "user", "content": f"How do I {t}?"},
                {"role": "assistant", "content": _reasoning(t, True) + _answer(t, True)},
            ]
            f.write(json.dumps({"id": f"s{i}", "messages": msgs, "meta": {}}) + "\n")
    dpo = d / "dpo.jsonl"
    with open(dpo, "w") as f:
        for i in range(n_dpo):
            t = rng.choice(TOPICS)
            row = {
                "id": f"p{i}",
                "prompt": [{"role": "user", "content": f"How do I {t}?"}],
                "chosen": [{"role": "assistant", "content": _reasoning(t, True) + _answer(t, True)}],
                "rejected": [{"role": "assistant", "content": _reasoning(t, False) + _answer(t, False)}],
                "pair_type": "op_cot",
                "meta": {},
            }
            f.write(json.dumps(row) + "\n")
    return sft, dpo


def build_model(kind: str, d: Path) -> Path:
    """The tiny random Llama of the test suite (SmolLM2 tokenizer + our ChatML template), or the embedded model with
    our template installed, saved to a folder both sides load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from saro.models.embedded import embedded_model_dir
    from saro.models.templates import install_template
    from saro.testing import build_tiny_model

    out = d / "model"
    if kind != "embedded":
        return build_tiny_model(out)
    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    install_template(tok, "chatml")
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir(), dtype=torch.float32)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TRL settings both sides use (our defaults made explicit, so plain TRL gets exactly the same)."""
    return {
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch,
        "learning_rate": 1e-4,
        "lr_scheduler_type": "cosine",
        "max_length": 512,
        "logging_steps": 5,
        "save_strategy": "steps",
        "save_steps": max(1, args.steps // 2),
        "save_total_limit": 2,
        "seed": 0,
        "report_to": "none",
        "bf16": False,
        "activation_checkpointing": False,
        "dataloader_pin_memory": False,
    }


# ------------------------------------------------------------------------------------------------ plain TRL


def plain_sft(model_dir: Path, data: Path, out: Path, st: dict[str, Any]) -> int:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ds = load_dataset("json", data_files=str(data), split="train").select_columns(["messages"])
    cfg = SFTConfig(output_dir=str(out), assistant_only_loss=True, packing=False, **st)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok)
    trainer.train()
    trainer.save_model(str(out / "final"))
    return trainer._total_train_tokens


def plain_dpo(model_dir: Path, data: Path, out: Path, st: dict[str, Any]) -> int:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ds = load_dataset("json", data_files=str(data), split="train").select_columns(
        ["prompt", "chosen", "rejected"]
    )
    cfg = DPOConfig(output_dir=str(out), beta=0.1, precompute_ref_log_probs=True, **st)
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok)
    trainer.train()
    trainer.save_model(str(out / "final"))
    return trainer._total_train_tokens


# ------------------------------------------------------------------------------------------------ ours


def ours_sft(model_dir: Path, data: Path, out: Path, st: dict[str, Any]) -> int:
    from saro.train.config import build_sft_config
    from saro.train.sft import train_sft

    return train_sft(build_sft_config({"model": str(model_dir), **st}, str(out)), data)["train_tokens"]


def ours_dpo(model_dir: Path, data: Path, out: Path, st: dict[str, Any]) -> int:
    from saro.train.config import build_dpo_config
    from saro.train.dpo import train_dpo

    section = {"model": str(model_dir), "beta": 0.1, "precompute_ref_log_probs": True, **st}
    return train_dpo(build_dpo_config(section, str(out)), data)["train_tokens"]


def timed(fn: Any, model_dir: Path, data: Path, work: Path, st: dict[str, Any]) -> tuple[float, float, int]:
    """(tokens per CPU second, tokens per wall second, tokens) of one whole stage call, on a fresh copy of the data
    (so TRL's dataset cache and our stored reference log-probs start cold on both sides) and a fresh output folder."""
    run = Path(tempfile.mkdtemp(dir=work))
    fresh = run / data.name
    shutil.copy(data, fresh)
    c0, t0 = time.process_time(), time.perf_counter()
    tokens = fn(model_dir, fresh, run / "out", st)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    shutil.rmtree(run, ignore_errors=True)
    return tokens / cpu, tokens / wall, tokens


def measure(
    stage: str, args: argparse.Namespace, model_dir: Path, data: Path, work: Path
) -> dict[str, float]:
    """Median tokens/s of ours and plain TRL (alternating order), on both clocks; returns {clock: ratio}."""
    ours, plain = (ours_sft, plain_sft) if stage == "sft" else (ours_dpo, plain_dpo)
    st = settings(args)
    if (
        not args.no_warmup
    ):  # the first calls pay one-off costs (lazy imports, Jinja compilation): not measured
        for fn in (ours, plain):
            timed(fn, model_dir, data, work, {**st, "max_steps": 2})
    res: dict[str, dict[str, list[float]]] = {c: {"ours": [], "plain": []} for c in ("cpu", "wall")}
    tokens: dict[str, int] = {}
    for r in range(args.repeats):
        order = [("ours", ours), ("plain", plain)] if r % 2 == 0 else [("plain", plain), ("ours", ours)]
        for name, fn in order:
            cpu_tps, wall_tps, tok = timed(fn, model_dir, data, work, st)
            res["cpu"][name].append(cpu_tps)
            res["wall"][name].append(wall_tps)
            tokens[name] = tok
            print(
                f"{stage} repeat {r} {name:5s} {cpu_tps:8.1f} tok/cpu-s {wall_tps:8.1f} tok/wall-s ({tok} tok)"
            )
    if tokens["ours"] != tokens["plain"]:
        print(f"WARNING: {stage}: token counts differ (ours {tokens['ours']}, plain {tokens['plain']})")
    ratios = {}
    for clock in ("cpu", "wall"):
        med = {k: statistics.median(v) for k, v in res[clock].items()}
        ratios[clock] = med["ours"] / med["plain"]
        print(
            f"{stage} [{clock}] median ours {med['ours']:.1f} plain {med['plain']:.1f} ratio {ratios[clock]:.3f}"
        )
    sys.stdout.flush()
    return ratios


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["tiny", "embedded"], default="tiny")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--stages", default="sft,dpo")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="time base of the last line")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed 2-step run of each side")
    args = p.parse_args()

    import datasets
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    logging.getLogger("saro").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="saro-bench-"))
    os.environ["HF_DATASETS_CACHE"] = str(work / "hf_datasets")
    try:
        model_dir = build_model(args.model, work)
        n = args.steps * args.batch
        files = dict(zip(("sft", "dpo"), write_data(work, n, n), strict=True))
        ratios = {
            stage: measure(stage, args, model_dir, files[stage], work)[args.clock]
            for stage in args.stages.split(",")
        }
        print(
            f"sft_ratio {ratios.get('sft', float('nan')):.3f} dpo_ratio {ratios.get('dpo', float('nan')):.3f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
