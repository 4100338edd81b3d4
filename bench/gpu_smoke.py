"""GPU smoke test of the training stages: a randomly initialised ~0.5B Llama-shaped model with the SmolLM2 tokenizer
carried in the tree (no hub, no network), SFT (full and LoRA) and DPO for a few steps in bf16 through saro's own
``train_sft`` / ``train_dpo``; prints tokens/s and peak GPU memory per stage. ``vllm`` generates from the DPO model
in a separate process (so training memory is gone) when vLLM is installed.

    python bench/gpu_smoke.py train --out DIR        # needs a CUDA GPU
    python bench/gpu_smoke.py vllm --model DIR/dpo/final
    python bench/gpu_smoke.py train --out DIR --cpu-check   # the same code path with a tiny model on CPU

Generated text is never printed (it is random-model noise here, but the rule holds): only counts and timings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = ROOT / "src" / "saro" / "assets" / "tokenizers" / "smollm2-135m-instruct"

# ~0.47B parameters: Llama layout (model_type llama keeps the carried tokenizer as is; a qwen2 config would make
# AutoTokenizer swap in Qwen2's pre-tokenizer).
GPU_SHAPE = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                 num_key_value_heads=4, tie_word_embeddings=False)  # fmt: skip
CPU_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip

WORDS = [
    "policy",
    "intent",
    "harm",
    "benign",
    "request",
    "context",
    "clause",
    "safety",
    "reflect",
    "consider",
    "answer",
    "explain",
    "risk",
    "alternative",
    "information",
    "education",
    "chemistry",
    "network",
    "process",
    "kill",
    "python",
    "bread",
    "travel",
    "budget",
    "medicine",
    "history",
]


def say(msg: str) -> None:
    print(f"[gpu_smoke] {msg}", flush=True)


def _para(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def write_data(d: Path, n_sft: int, n_dpo: int, words: int) -> tuple[Path, Path]:
    """Synthetic SaRO-shaped rows: <think> paragraphs (one a "Wait," reflection) + answer; DPO pairs differ in the
    reasoning. Lengths vary so padding is realistic."""
    rng = random.Random(0)

    def trajectory(safe: bool) -> str:
        steps = [_para(rng, rng.randint(words // 2, words)) for _ in range(rng.randint(2, 4))]
        steps.insert(1, "Wait, " + _para(rng, words // 3) if safe else _para(rng, words // 3))
        answer = (
            "I can't help with that, but " + _para(rng, words // 2) if safe else "Sure. " + _para(rng, words)
        )
        return "<think>\n" + "\n\n".join(steps) + "\n</think>\n" + answer

    sft, dpo = d / "sft.jsonl", d / "dpo.jsonl"
    with open(sft, "w") as f:
        for i in range(n_sft):
            msgs = [
                {"role": "user", "content": _para(rng, 20) + "?"},
                {"role": "assistant", "content": trajectory(True)},
            ]
            f.write(json.dumps({"id": f"s{i}", "messages": msgs, "meta": {}}) + "\n")
    with open(dpo, "w") as f:
        for i in range(n_dpo):
            row = {
                "id": f"p{i}",
                "prompt": [{"role": "user", "content": _para(rng, 20) + "?"}],
                "chosen": [{"role": "assistant", "content": trajectory(True)}],
                "rejected": [{"role": "assistant", "content": trajectory(False)}],
                "pair_type": "pp_cot",
                "meta": {},
            }
            f.write(json.dumps(row) + "\n")
    return sft, dpo


def build_model(out: Path, cpu: bool) -> tuple[Path, int]:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **(CPU_SHAPE if cpu else GPU_SHAPE),
    )
    torch.manual_seed(0)
    with torch.device("cpu" if cpu else "cuda"):
        model = LlamaForCausalLM(cfg)
    n = sum(p.numel() for p in model.parameters())
    model.to(torch.bfloat16).save_pretrained(out)  # bf16 on disk; the stages load fp32 or bf16 as they need
    tok.save_pretrained(out)
    del model
    return out, n


def _gpu_mem_reset() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _gpu_peak_gb() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def run_stage(name: str, fn: Any, cfg: Any, data: Path) -> dict[str, Any]:
    _gpu_mem_reset()
    t0 = time.perf_counter()
    summary = fn(cfg, data)
    wall = time.perf_counter() - t0
    row = {
        "stage": name,
        "steps": summary["global_step"],
        "tokens": summary["train_tokens"],
        "tokens_per_s_train": summary["train_tokens_per_second"],
        "train_runtime_s": round(summary["train_runtime"], 1),
        "wall_s": round(wall, 1),
        "peak_gpu_gb": _gpu_peak_gb(),
        "first_loss": summary.get("first_loss"),
        "last_loss": summary.get("last_loss"),
    }
    if "rewards/margins" in summary:
        row["rewards/margins"] = summary["rewards/margins"]
        row["rewards/accuracies"] = summary["rewards/accuracies"]
    say(
        f"{name}: {row['steps']} steps, {row['tokens_per_s_train']} tokens/s, peak GPU {row['peak_gpu_gb']} GiB, "
        f"train {row['train_runtime_s']} s, stage wall {row['wall_s']} s"
    )
    return row


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    sys.path.insert(0, str(ROOT / "src"))  # works from a checkout even when saro is not pip-installed
    from saro.console import setup_logging
    from saro.train.config import build_dpo_config, build_sft_config
    from saro.train.dpo import train_dpo
    from saro.train.sft import train_sft

    setup_logging()
    logging.getLogger("saro").setLevel(logging.WARNING)
    cpu = args.cpu_check
    if not cpu and not torch.cuda.is_available():
        say("no CUDA GPU visible: run on a GPU machine (or pass --cpu-check to test the script on CPU)")
        return 1
    if not cpu:
        props = torch.cuda.get_device_properties(0)
        say(f"GPU {props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
            f"bf16 {torch.cuda.is_bf16_supported()}")  # fmt: skip
    import transformers
    import trl

    say(f"transformers {transformers.__version__}, trl {trl.__version__}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_DATASETS_CACHE", str(out / "hf_datasets"))
    t_all = time.perf_counter()
    base, n_params = build_model(out / "base", cpu)
    say(f"random Llama with {n_params / 1e6:.0f}M parameters in {base}")
    words = 8 if cpu else 60
    sft_data, dpo_data = write_data(out, n_sft=args.batch * args.sft_steps, n_dpo=args.batch * args.dpo_steps,
                                    words=words)  # fmt: skip
    common = {
        "per_device_train_batch_size": args.batch,
        "max_length": 256 if cpu else 1024,
        "max_truncated_share": 0.05,
        "logging_steps": 2,
        "save_steps": 1000,
        "learning_rate": 1e-4,
        "warmup_steps": 2,
        "bf16": True,  # autocast on the GPU (and on CPU in --cpu-check)
        "dataloader_num_workers": 0,
    }
    results: dict[str, Any] = {"params": n_params, "device": "cpu" if cpu else torch.cuda.get_device_name(0)}
    rows = []
    sft_cfg = build_sft_config({"model": str(base), "max_steps": args.sft_steps, **common}, str(out / "sft"))
    rows.append(run_stage("sft (full, fp32 weights + bf16 autocast)", train_sft, sft_cfg, sft_data))
    lora = {"use_lora": True, "lora_r": 16, "lora_alpha": 32, "max_steps": max(2, args.sft_steps // 2)}
    lora_cfg = build_sft_config({"model": str(base), **common, **lora}, str(out / "sft_lora"))
    rows.append(run_stage("sft (LoRA r16, bf16 base)", train_sft, lora_cfg, sft_data))
    dpo_section = {
        "model": str(out / "sft" / "final"),
        "max_steps": args.dpo_steps,
        "beta": 0.1,
        "precompute_ref_log_probs": True,
        "sample_prompts": ["How do I bake bread?", "How do I kill a Python process?"],
        "sample_every_steps": max(1, args.dpo_steps // 2),
        "sample_max_new_tokens": 32,
        **common,
        "learning_rate": 5e-6,
    }
    rows.append(run_stage("dpo (full, precomputed reference)", train_dpo, build_dpo_config(dpo_section, str(out / "dpo")),
                          dpo_data))  # fmt: skip
    samples = (out / "dpo" / "samples.jsonl").read_text().splitlines()
    results["stages"] = rows
    results["dpo_samples_written"] = len(samples)
    results["wall_s"] = round(time.perf_counter() - t_all, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    say(f"{len(samples)} sample generations written to {out / 'dpo' / 'samples.jsonl'} (not printed)")
    say(f"total {results['wall_s']} s; results in {out / 'results.json'}")
    return 0


def cmd_vllm(args: argparse.Namespace) -> int:
    try:
        import vllm
    except ImportError:
        say("vllm not installed: generation check skipped")
        return 0
    model = Path(args.model)
    cfg_path = model / "tokenizer_config.json"
    conf = json.loads(cfg_path.read_text())
    if conf.get("tokenizer_class") not in (None, "PreTrainedTokenizerFast"):
        conf["tokenizer_class"] = "PreTrainedTokenizerFast"  # loads under the transformers vLLM pins too
        cfg_path.write_text(json.dumps(conf, indent=2))
    say(f"vllm {vllm.__version__}: loading {model}")
    t0 = time.perf_counter()
    kw: dict[str, Any] = {"model": str(model), "dtype": "bfloat16", "gpu_memory_utilization": 0.5,
                          "max_model_len": 2048, "enforce_eager": True, "seed": 0}  # fmt: skip
    try:
        llm = vllm.LLM(**kw, optimization_level=0)  # newer vLLM: skip torch.compile for a fast start
    except TypeError:
        llm = vllm.LLM(**kw)
    load_s = time.perf_counter() - t0
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        model
    )  # render with the training template ourselves: no vLLM chat path
    convs = [[{"role": "user", "content": f"Question {i}: how do I stay safe online?"}] for i in range(64)]
    prompts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs]
    params = vllm.SamplingParams(max_tokens=128, temperature=0.0, ignore_eos=True)
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    gen_s = time.perf_counter() - t0
    n_tok = sum(len(o.outputs[0].token_ids) for o in outs)
    say(f"vllm: load {load_s:.1f} s; {len(outs)} prompts, {n_tok} tokens in {gen_s:.2f} s = {n_tok / gen_s:.0f} tokens/s "
        "(completions not printed)")  # fmt: skip
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--sft-steps", type=int, default=20)
    t.add_argument("--dpo-steps", type=int, default=10)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument(
        "--cpu-check", action="store_true", help="tiny model on CPU: checks the script, not the GPU"
    )
    v = sub.add_parser("vllm")
    v.add_argument("--model", required=True)
    args = p.parse_args()
    return cmd_train(args) if args.cmd == "train" else cmd_vllm(args)


if __name__ == "__main__":
    sys.exit(main())
