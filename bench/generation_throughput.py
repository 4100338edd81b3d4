"""saro's HF generator against plain ``model.generate``: tokens/s at the same settings, and a bandwidth bound.

Loads the embedded SmolLM2-135M-Instruct once and builds a fixed prompt set from saro's packaged benign and
borderline sources (some wrapped in template attacks, so prompts run from ~30 to ~400 tokens). Both sides get the
same prompts in the same batches (sorted by length, ``--batch-size`` per batch, as saro batches them), greedy
decoding, the same ``max_new_tokens`` and the same eos ids, on the same thread count; saro's side also renders the
chat template and decodes the text (plain ``generate`` gets ready token ids). After a warm-up they run alternately,
``--repeats`` times each; each side's time is its best run (the least disturbed by other jobs on the machine).
Useful tokens = generated tokens before the eos (padding and tokens after eos are not counted).

The bound: one decode step reads every parameter once, so at batch 1 tokens/s <= memory bandwidth / parameter
bytes; the bandwidth is measured with a large tensor copy. The last line is ``ratio <x>`` (saro tokens/s over
``generate`` tokens/s); the goal is >= 1.0.

    python bench/generation_throughput.py                  # embedded model, 32 prompts, ~5 min on 2 cores
    python bench/generation_throughput.py --quick          # tiny random model, format check (CI)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SARO_NO_PROGRESS", "1")

ATTACKS = ["aim", "developer_mode", "distractors", "poem", "fiction_frame", "refusal_suppression"]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded", help="model source (default: the embedded model)")
    p.add_argument("--prompts", type=int, default=32, help="number of prompts")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each side (>= 2)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for both sides")
    p.add_argument(
        "--quick", action="store_true", help="tiny random model, a few prompts: checks the output only"
    )
    return p


def build_prompts(n: int) -> list[list[dict[str, str]]]:
    """``n`` conversations from the packaged benign/borderline sources; every third one wrapped in an attack,
    every sixth in two."""
    from saro.prompts.attacks import apply_attack
    from saro.prompts.sources import load_source

    pool: list[str] = []
    for name in ("saro_benign", "rho_overrefusal", "saro_borderline"):
        pool += [p.text for p in load_source(name).prompts[: max(1, n // 2)]]
    texts = []
    for i in range(n):
        text = pool[i % len(pool)]
        if i % 3 == 2:
            text = apply_attack(ATTACKS[(i // 3) % len(ATTACKS)], text, seed=i)
        if i % 6 == 5:  # a wrapper around a wrapper: the long prompts
            text = apply_attack(ATTACKS[(i // 6 + 1) % len(ATTACKS)], text, seed=i + 1)
        texts.append(text)
    return [[{"role": "user", "content": t}] for t in texts]


def memory_bandwidth_gbs(mib: int = 256) -> float:
    """GB/s of a large tensor copy (bytes read + bytes written), best of 5."""
    import torch

    a = torch.ones(mib * 2**20 // 4)
    b = torch.empty_like(a)
    b.copy_(a)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.numel() * a.element_size() / best / 1e9


def run_generate(
    model: Any, batches: list[dict[str, Any]], max_new: int, eos: list[int], pad: int
) -> list[list[int]]:
    """Plain ``model.generate``, greedy, on ready batches: the token ids of each row before its eos."""
    import torch

    rows: list[list[int]] = []
    with torch.inference_mode():
        for enc in batches:
            out = model.generate(
                **enc,
                max_new_tokens=max_new,
                eos_token_id=eos,
                pad_token_id=pad,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
            )
            for row in out[:, enc["input_ids"].shape[1] :].tolist():
                cut = next((j for j, t in enumerate(row) if t in eos), len(row))
                rows.append(row[:cut])
    return rows


def run_saro(gen: Any, convs: list[list[dict[str, str]]], max_new: int) -> tuple[list[str], int]:
    """saro's HFGenerator on the conversations: texts in the batches' order and the useful token count."""
    from saro.models.generate import SamplingParams

    texts: list[str] = []
    tokens = 0
    for _idx, gens in gen.generate_batches(convs, SamplingParams(max_new_tokens=max_new), "bench"):
        for g in gens:
            texts.append(g[0].text)
            tokens += g[0].tokens
    return texts, tokens


def _quick_model(tmp: Path) -> str:
    from saro.testing import build_tiny_model

    return str(build_tiny_model(tmp / "tiny"))


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.quick:
        args.prompts, args.batch_size, args.max_new_tokens, args.threads = 4, 2, 8, 1
    args.repeats = max(2, args.repeats)
    import torch

    torch.set_num_threads(args.threads)
    from saro.models.generate import HFGenerator, render_prompts
    from saro.models.loading import load_model, load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        source = _quick_model(Path(tmp)) if args.quick else args.model
        t = time.perf_counter()
        model = load_model(source, dtype="float32", device="cpu")
        tok = load_tokenizer(source, padding_side="left")
        load_s = time.perf_counter() - t
    gen = HFGenerator(model, tok, batch_size=args.batch_size, label="bench")
    convs = build_prompts(args.prompts)
    prompts = render_prompts(tok, convs)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # saro's own batching order
    batches = [
        dict(
            tok(
                [prompts[i] for i in order[b : b + args.batch_size]],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            )
        )
        for b in range(0, len(order), args.batch_size)
    ]
    lengths = sorted(len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"])
    eos, pad = gen._eos_ids(), tok.pad_token_id
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(
        f"model {source if not args.quick else 'tiny (saro.testing)'}: {param_bytes / 1e6:.0f} MB of parameters, "
        f"loaded in {load_s:.1f} s; threads {args.threads}"
    )
    print(
        f"prompts {len(prompts)} ({lengths[0]}-{lengths[-1]} tokens), batch {args.batch_size}, "
        f"max_new_tokens {args.max_new_tokens}, greedy, eos {eos}"
    )

    run_generate(model, batches[:1], min(8, args.max_new_tokens), eos, pad)  # warm-up, both paths
    run_saro(gen, [convs[order[0]]], min(8, args.max_new_tokens))
    best = {"generate": float("inf"), "saro": float("inf")}
    useful = {"generate": 0, "saro": 0}
    texts: dict[str, list[str]] = {}
    for rep in range(args.repeats):
        sides = ("generate", "saro") if rep % 2 == 0 else ("saro", "generate")
        for side in sides:
            t = time.perf_counter()
            if side == "generate":
                rows = run_generate(model, batches, args.max_new_tokens, eos, pad)
                useful[side] = sum(len(r) for r in rows)
                texts[side] = [tok.decode(r, skip_special_tokens=True) for r in rows]
            else:
                texts[side], useful[side] = run_saro(gen, convs, args.max_new_tokens)
            dt = time.perf_counter() - t
            best[side] = min(best[side], dt)
            print(f"run {rep + 1} {side:8s} {dt:7.2f} s  {useful[side] / dt:7.1f} tokens/s", flush=True)
    rate = {k: useful[k] / best[k] for k in best}
    bandwidth = memory_bandwidth_gbs(64 if args.quick else 256)
    bound = bandwidth * 1e9 / param_bytes
    print(
        f"useful tokens: generate {useful['generate']}, saro {useful['saro']}; "
        f"same texts: {'yes' if texts['generate'] == texts['saro'] else 'no'}"
    )
    print(f"generate {rate['generate']:.1f} tokens/s (best of {args.repeats}: {best['generate']:.2f} s)")
    print(f"saro     {rate['saro']:.1f} tokens/s (best of {args.repeats}: {best['saro']:.2f} s)")
    print(
        f"memory bandwidth {bandwidth:.1f} GB/s (tensor copy); batch-1 bound {bound:.1f} tokens/s "
        f"(bandwidth / parameter bytes); saro reaches {rate['saro'] / bound:.2f}x that bound at batch "
        f"{args.batch_size}, i.e. {rate['saro'] / bound / args.batch_size:.2f} of it per batch row"
    )
    print(f"ratio {rate['saro'] / rate['generate']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
