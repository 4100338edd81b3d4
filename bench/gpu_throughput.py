"""GPU throughput of saro's SFT and DPO steps beside plain TRL, with model FLOPs utilisation (MFU).

For a random ~0.5B and ~1.5B Llama (SmolLM2 tokenizer carried in the tree, no hub), each stage runs through saro's
``train_sft`` / ``train_dpo`` and through a plain TRL trainer with the same arguments (bf16, large batch, padding-free
with flash attention when installed, Liger kernels when installed, dataloader workers, no per-step logging syncs).
Tokens/s are measured after a few warm-up steps; MFU = 6 * params * tokens/s / peak bf16 FLOPs of the detected GPU.
vLLM generation tokens/s are measured when vLLM is importable (bench/gpu_smoke.py vllm, in its own process).

    python bench/gpu_throughput.py                 # one GPU, < 10 minutes
    python bench/gpu_throughput.py --cpu-check     # the same code path, tiny model on CPU, < 1 minute

Prints a final line ``sft_mfu <x> saro_trl_ratio <y>`` and writes a JSON under bench/results/.
Generated text is never printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_smoke

ROOT = gpu_smoke.ROOT
sys.path.insert(0, str(ROOT / "src"))  # works from a checkout even when saro is not pip-installed

SHAPES = {
    "0.5b": gpu_smoke.GPU_SHAPE,
    "1.5b": dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=8,
        tie_word_embeddings=False,
    ),
    "tiny": gpu_smoke.CPU_SHAPE,
}
# Dense bf16 peak FLOP/s (no sparsity) by device-name fragment; the first match wins.
PEAK_BF16 = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 6000 Ada", 364e12),
    ("V100", 125e12),
)


def say(msg: str) -> None:
    print(f"[gpu_throughput] {msg}", flush=True)


def peak_flops(device_name: str, cpu: bool) -> float:
    """Peak bf16 FLOP/s of the device; on CPU a measured fp32 matmul rate (only to exercise the arithmetic)."""
    import torch

    if cpu:
        a = torch.randn(256, 256)
        t0 = time.perf_counter()
        for _ in range(20):
            a @ a
        return 20 * 2 * 256**3 / (time.perf_counter() - t0)
    for frag, peak in PEAK_BF16:
        if frag.lower() in device_name.lower():
            return peak
    raise SystemExit(f"unknown GPU {device_name!r}: add its dense bf16 peak to PEAK_BF16")


class Throughput:
    """Trainer callback: tokens and samples between the end of warm-up step ``warmup`` and the end of training,
    timed with one device synchronisation at each end (none per step)."""

    def __init__(self, warmup: int, batch: int) -> None:
        from transformers import TrainerCallback

        self.warmup, self.batch = warmup, batch
        self.t0 = self.t1 = 0.0
        self.tok0 = self.tok1 = 0
        self.steps = 0
        outer = self

        class _CB(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if state.global_step == outer.warmup:
                    outer._sync()
                    outer.t0, outer.tok0 = time.perf_counter(), state.num_input_tokens_seen

            def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                outer._sync()
                outer.t1, outer.tok1 = time.perf_counter(), state.num_input_tokens_seen
                outer.steps = state.global_step - outer.warmup

        self.callback = _CB()

    @staticmethod
    def _sync() -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def result(self) -> dict[str, float]:
        dt = self.t1 - self.t0
        if dt <= 0 or self.steps <= 0:
            raise SystemExit("throughput: no timed steps (max_steps must exceed the warm-up)")
        return {
            "tokens_per_s": round((self.tok1 - self.tok0) / dt, 1),
            "samples_per_s": round(self.steps * self.batch / dt, 3),
            "timed_steps": self.steps,
        }


def train_args(args: argparse.Namespace, cpu: bool, steps: int) -> dict[str, Any]:
    """The TRL arguments both sides get: bf16, a batch that fills the GPU, no logging or saving in the timed part."""
    flash = not cpu and importlib.util.find_spec("flash_attn") is not None
    return {
        "per_device_train_batch_size": args.batch,
        "max_length": args.max_length,
        "max_steps": steps,
        "learning_rate": 1e-5,
        "bf16": True,
        "logging_steps": steps,  # one log at the end: no per-step host sync
        "save_steps": 10_000,
        "dataloader_num_workers": 0 if cpu else 4,
        "dataloader_pin_memory": not cpu,
        "include_num_input_tokens_seen": "non_padding",
        "use_liger_kernel": not cpu and importlib.util.find_spec("liger_kernel") is not None,
        "padding_free": flash,  # position-ids packing is only correct with flash attention kernels
        "report_to": "none",
        "seed": 0,
        **({"use_cpu": True} if cpu else {}),
        **({"attn_implementation": "flash_attention_2"} if flash else {}),
    }


def run_saro(stage: str, base: Path, data: Path, out: Path, kw: dict[str, Any], meter: Throughput) -> None:
    from saro.train.config import build_dpo_config, build_sft_config
    from saro.train.dpo import train_dpo
    from saro.train.sft import train_sft

    if stage == "sft":
        train_sft(build_sft_config({"model": str(base), **kw}, str(out)), data, callbacks=[meter.callback])
    else:
        sec = {"model": str(base), "beta": 0.1, "precompute_ref_log_probs": True, **kw}
        train_dpo(build_dpo_config(sec, str(out)), data, callbacks=[meter.callback])


def run_trl(stage: str, base: Path, data: Path, out: Path, kw: dict[str, Any], meter: Throughput) -> None:
    """Plain TRL with the same arguments, model dtype and data (TRL's own defaults for everything else)."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from saro.train.config import build_sft_config
    from saro.train.start import training_dtype

    attn = kw.get("attn_implementation")
    targs = {k: v for k, v in kw.items() if k != "attn_implementation"}
    dtype = training_dtype(build_sft_config({"model": str(base), **kw}, str(out / "probe")))
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=dtype, **({"attn_implementation": attn} if attn else {})
    )
    tok = AutoTokenizer.from_pretrained(base)
    ds = load_dataset("json", data_files=str(data), split="train")
    common = {
        "output_dir": str(out),
        "save_strategy": "no",
        **{k: v for k, v in targs.items() if k != "save_steps"},
    }
    if stage == "sft":
        trainer: Any = SFTTrainer(
            model=model, args=SFTConfig(**common), train_dataset=ds.select_columns(["messages"]),
            processing_class=tok, callbacks=[meter.callback],
        )  # fmt: skip
    else:
        cfg = DPOConfig(beta=0.1, precompute_ref_log_probs=True, **common)
        trainer = DPOTrainer(
            model=model, args=cfg, train_dataset=ds.select_columns(["prompt", "chosen", "rejected"]),
            processing_class=tok, callbacks=[meter.callback],
        )  # fmt: skip
    trainer.train()


def measure(
    stage: str, side: str, base: Path, data: Path, work: Path, kw: dict[str, Any], warmup: int
) -> dict:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if stage == "dpo":
        kw = {k: v for k, v in kw.items() if k != "padding_free"}  # SFT-side option
    meter = Throughput(warmup, kw["per_device_train_batch_size"])
    (run_saro if side == "saro" else run_trl)(stage, base, data, work / f"{stage}_{side}", kw, meter)
    row = {"stage": stage, "side": side, **meter.result()}
    row["peak_mem_gb"] = (
        round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None
    )
    say(
        f"{stage} {side}: {row['tokens_per_s']} tokens/s, {row['samples_per_s']} samples/s, peak {row['peak_mem_gb']} GiB"
    )
    return row


def bench_model(name: str, args: argparse.Namespace, work: Path, cpu: bool, peak: float) -> dict[str, Any]:
    """Both stages, both sides, for one model shape."""
    gpu_smoke.CPU_SHAPE, gpu_smoke.GPU_SHAPE = SHAPES["tiny"], SHAPES[name]
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    base, n_params = gpu_smoke.build_model(d / "base", cpu)
    n_rows = args.batch * (args.steps + 1)
    sft_data, dpo_data = gpu_smoke.write_data(d, n_sft=n_rows, n_dpo=n_rows, words=8 if cpu else 120)
    say(f"{name}: random Llama with {n_params / 1e6:.0f}M parameters")
    kw = train_args(args, cpu, args.steps)
    rows = [measure(st, side, base, data, d, kw, args.warmup) for st, data in (("sft", sft_data), ("dpo", dpo_data))
            for side in ("saro", "trl")]  # fmt: skip
    by = {(r["stage"], r["side"]): r for r in rows}
    sft = by[("sft", "saro")]
    return {
        "model": name,
        "params": n_params,
        "rows": rows,
        "sft_mfu": round(6 * n_params * sft["tokens_per_s"] / peak, 4),
        "sft_saro_trl_ratio": round(sft["tokens_per_s"] / max(by[("sft", "trl")]["tokens_per_s"], 1e-9), 3),
        "dpo_saro_trl_ratio": round(
            by[("dpo", "saro")]["samples_per_s"] / max(by[("dpo", "trl")]["samples_per_s"], 1e-9), 3
        ),
        "final_dir": str(d / "sft_saro" / "final"),
    }


def vllm_tokens_per_s(model_dir: str) -> float | None:
    """vLLM generation tokens/s from gpu_smoke.py in its own process (training memory is gone there)."""
    if importlib.util.find_spec("vllm") is None:
        return None
    cmd = [sys.executable, str(Path(gpu_smoke.__file__)), "vllm", "--model", model_dir]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    m = re.search(r"= (\d+) tokens/s", res.stdout)
    return float(m.group(1)) if m else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--cpu-check", action="store_true", help="tiny model on CPU: checks the plumbing, not the GPU"
    )
    p.add_argument(
        "--models", default=None, help="comma-separated shapes (default 0.5b,1.5b; tiny with --cpu-check)"
    )
    p.add_argument("--batch", type=int, default=None, help="per-device batch (default 16 on GPU, 2 on CPU)")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="steps per run, warm-up included")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--results-dir", default=str(ROOT / "bench" / "results"))
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args(argv)
    import torch

    cpu = args.cpu_check
    if not cpu and not torch.cuda.is_available():
        say("no CUDA GPU visible: run on a GPU machine (or pass --cpu-check)")
        return 1
    args.batch = args.batch or (2 if cpu else 16)
    args.max_length = args.max_length or (128 if cpu else 2048)
    args.steps = args.steps or (4 if cpu else 30)
    args.warmup = args.warmup or (1 if cpu else 5)
    logging.getLogger("saro").setLevel(logging.WARNING)
    device = "cpu" if cpu else torch.cuda.get_device_name(0)
    peak = peak_flops(device, cpu)
    say(f"device {device}, peak {peak / 1e12:.1f} TFLOP/s, torch {torch.__version__}")
    models = (args.models or ("tiny" if cpu else "0.5b,1.5b")).split(",")
    with tempfile.TemporaryDirectory(prefix="saro-throughput-") as tmp:
        work = Path(args.work or tmp)
        results = [bench_model(m, args, work, cpu, peak) for m in models]
        vllm_tps = None if cpu else vllm_tokens_per_s(results[0]["final_dir"])
    summary = {
        "device": device, "peak_flops": peak, "cpu_check": cpu, "batch": args.batch, "max_length": args.max_length,
        "steps": args.steps, "warmup": args.warmup, "models": results, "vllm_tokens_per_s": vllm_tps,
        "sft_mfu": results[0]["sft_mfu"], "saro_trl_ratio": results[0]["sft_saro_trl_ratio"],
    }  # fmt: skip
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = "cpu-check" if cpu else re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-")
    path = out / f"gpu_throughput-{tag}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    say(f"results in {path}")
    print(f"sft_mfu {summary['sft_mfu']} saro_trl_ratio {summary['saro_trl_ratio']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
