"""Generation throughput on the CPU, in one run: plain ``model.generate``, saro's HF backend, and the ct2 backend
(CTranslate2) in float32 and int8, on the same prompts and settings; tokens/s, ratios and greedy agreement.

Loads the embedded SmolLM2-135M-Instruct and builds a fixed set of chat prompts from saro's packaged benign and
borderline sources (some wrapped in template attacks, so prompts run from ~40 to ~200 tokens). Every side decodes
greedily, ``--max-new-tokens`` per prompt with no stop token (each side writes the full length), on ``--threads``
threads, in batches of at most ``--batch-size``: plain ``generate`` and the HF backend sort the prompts by length
and left-pad; the ct2 backend cuts its batches where prompt lengths spread (``saro.models.ct2``). After a warm-up
the sides run in rotating order, ``--repeats`` times each; each side's time is its best run (the least disturbed by
other jobs on the machine); the CPU seconds each side used (all its threads) are printed too, a measure that
moves less with the machine's load. Agreement: per prompt, whether a side's token ids equal ``generate``'s, and where they
first differ. ``--policy-prefix`` also times ct2 on policy_reasoning prompts (a long shared system prompt and
exemplars) with and without the static prompt.

The last line is ``ratio <x>``: ct2 float32 tokens/s over plain ``generate`` tokens/s (goal >= 3).

    python bench/generation_throughput.py                  # embedded model, 32 prompts, batch 16, 128 tokens
    python bench/generation_throughput.py --quick          # tiny random model, format check (CI)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SARO_NO_PROGRESS", "1")

ATTACKS = ["aim", "developer_mode", "distractors", "poem", "fiction_frame", "refusal_suppression"]
SIDES = ("generate", "hf", "ct2-float32", "ct2-int8")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded", help="model source (default: the embedded model)")
    p.add_argument("--prompts", type=int, default=32, help="number of prompts")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each side")
    p.add_argument("--threads", type=int, default=2, help="threads for every side")
    p.add_argument("--policy-prefix", action="store_true", help="also time ct2's static prompt")
    p.add_argument(
        "--stop", action="store_true", help="stop at the end-of-turn token as the stages do (rows end early)"
    )
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


class Recorder:
    """Wraps a model (``generate``) or a CTranslate2 engine (``generate_batch``) and keeps, per prompt (its token
    ids), the new token ids it produced; everything else passes through."""

    def __init__(self, inner: Any, tok: Any) -> None:
        self._inner, self._tok, self.ids = inner, tok, {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def generate(self, **kw: Any) -> Any:
        out = self._inner.generate(**kw)
        width = kw["input_ids"].shape[1]
        for prompt, mask, row in zip(kw["input_ids"], kw["attention_mask"], out, strict=True):
            self.ids[tuple(prompt[mask.bool()].tolist())] = row[width:].tolist()
        return out

    def generate_batch(self, tokens: list[list[str]], **kw: Any) -> Any:
        results = self._inner.generate_batch(tokens, **kw)
        head = self._tok.convert_tokens_to_ids(kw.get("static_prompt") or [])
        for toks, res in zip(tokens, results, strict=True):
            self.ids[tuple(head + self._tok.convert_tokens_to_ids(toks))] = list(res.sequences_ids[0])
        return results


def run_generate(
    model: Any, tok: Any, prompts: list[str], batch: int, max_new: int, eos: list[int]
) -> dict[tuple, list[int]]:
    """Plain ``model.generate``, greedy, on length-sorted left-padded batches: new ids per prompt (``eos``: the
    stop tokens; none: every row writes ``max_new``)."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    rec = Recorder(model, tok)
    with torch.inference_mode():
        for b in range(0, len(order), batch):
            enc = tok(
                [prompts[i] for i in order[b : b + batch]],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            )
            rec.generate(
                **enc,
                max_new_tokens=max_new,
                eos_token_id=eos,
                pad_token_id=tok.pad_token_id,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
            )
    return rec.ids


def run_backend(gen: Any, convs: list[Any], max_new: int) -> dict[tuple, list[int]]:
    """A saro backend through ``generate_batches`` (its own batching, rendering and decoding): new ids per
    prompt, as its model or engine produced them."""
    from saro.models.generate import SamplingParams

    attr = "engine" if hasattr(gen, "engine") else "model"
    rec = Recorder(getattr(gen, attr), gen.tok)
    setattr(gen, attr, rec)
    try:
        for _ in gen.generate_batches(convs, SamplingParams(max_new_tokens=max_new), "bench"):
            pass
    finally:
        setattr(gen, attr, rec._inner)
    return rec.ids


def no_stop(gen: Any, stop: bool = False) -> Any:
    """Make a saro backend write the full length (no end-of-turn stop), as the plain side does (unless
    ``stop``)."""
    if stop:
        return gen
    if hasattr(gen, "end_ids"):
        gen.end_ids = []
    else:
        gen.eos_ids = lambda: []
    return gen


def cut(ids: dict[tuple, list[int]], eos: set[int]) -> dict[tuple, list[int]]:
    """Each row up to its first stop token (what follows, generate's padding, is not output)."""
    return {k: v[: next((j for j, t in enumerate(v) if t in eos), len(v))] for k, v in ids.items()}


def agreement(want: dict[tuple, list[int]], got: dict[tuple, list[int]]) -> tuple[int, list[int]]:
    """(prompts whose ids equal ``want``'s, first-divergence positions of the others)."""
    same, first = 0, []
    for key, ref in want.items():
        ids = got[key]
        if ids == ref:
            same += 1
        else:
            first.append(
                next((j for j, (a, b) in enumerate(zip(ref, ids, strict=False)) if a != b), len(ref))
            )
    return same, first


def policy_prefix(source: str, n: int, threads: int, max_new: int) -> str:
    """ct2 on policy_reasoning prompts, with the shared prefix as a static prompt and without: one line."""
    import saro.models.ct2 as ct2
    from saro.evaluate.methods import build_conversation
    from saro.models.generate import SamplingParams, encode_prompts, render_prompts
    from saro.policy import load_policy

    gen = no_stop(ct2.CT2Generator.from_source(source, batch_size=n, threads=threads))
    convs = [
        build_conversation(c[0]["content"], "policy_reasoning", load_policy(None)) for c in build_prompts(n)
    ]
    shared = ct2.shared_prefix(encode_prompts(gen.tok, render_prompts(gen.tok, convs)))
    params = SamplingParams(max_new_tokens=max_new)
    gen.generate(convs[:2], SamplingParams(max_new_tokens=2))  # warm-up (and the static prompt's cache)
    times: dict[str, float] = {}
    outs: dict[str, Any] = {}
    saved = ct2.STATIC_PROMPT_MIN
    for side in ("static", "plain", "static", "plain"):
        ct2.STATIC_PROMPT_MIN = saved if side == "static" else 10**9
        t = time.perf_counter()
        outs[side] = [g[0].text for g in gen.generate(convs, params)]
        times[side] = min(times.get(side, float("inf")), time.perf_counter() - t)
    ct2.STATIC_PROMPT_MIN = saved
    tokens = n * max_new
    return (
        f"policy_reasoning prompts ({n}, shared prefix {shared} tokens, batch {n}): ct2 static prompt "
        f"{tokens / times['static']:.1f} tokens/s, without {tokens / times['plain']:.1f} tokens/s "
        f"({times['plain'] / times['static']:.2f}x); same texts: {'yes' if outs['static'] == outs['plain'] else 'no'}"
    )


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.quick:
        args.prompts, args.batch_size, args.max_new_tokens, args.threads = 4, 2, 8, 1
    import torch

    torch.set_num_threads(args.threads)
    from saro.models.ct2 import CT2Generator
    from saro.models.generate import HFGenerator, render_prompts
    from saro.models.loading import load_model, load_tokenizer

    print(f"load {os.getloadavg()[0]:.2f} (1-min average) at start", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = str(_tiny(Path(tmp))) if args.quick else args.model
        model = load_model(source, dtype="float32", device="cpu")
        tok = load_tokenizer(source, padding_side="left")
        backends = {
            "hf": no_stop(HFGenerator(model, tok, batch_size=args.batch_size, label="bench"), args.stop),
            "ct2-float32": no_stop(
                CT2Generator.from_source(source, args.batch_size, "float32", args.threads), args.stop
            ),
            "ct2-int8": no_stop(
                CT2Generator.from_source(source, args.batch_size, "int8", args.threads), args.stop
            ),
        }
        convs = build_prompts(args.prompts)
        prompts = render_prompts(tok, convs)
        eos = backends["hf"].eos_ids() if args.stop else []
        lengths = sorted(len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"])
        print(
            f"model {'tiny (saro.testing)' if args.quick else source}; threads {args.threads}; prompts "
            f"{len(prompts)} ({lengths[0]}-{lengths[-1]} tokens); batch {args.batch_size}; "
            f"{args.max_new_tokens} new tokens, greedy, {'stop at end of turn' if args.stop else 'no stop token'}; "
            f"CT2_USE_MKL={os.environ.get('CT2_USE_MKL')}",
            flush=True,
        )

        def run(side: str, max_new: int) -> dict[tuple, list[int]]:
            if side == "generate":
                return run_generate(model, tok, prompts, args.batch_size, max_new, eos)
            return run_backend(backends[side], convs, max_new)

        for side in SIDES:  # warm-up
            run(side, 2)
        best = dict.fromkeys(SIDES, float("inf"))
        cpu = dict.fromkeys(SIDES, float("inf"))
        ids: dict[str, dict[tuple, list[int]]] = {}
        for rep in range(args.repeats):
            for side in SIDES[rep % len(SIDES) :] + SIDES[: rep % len(SIDES)]:
                t, c = time.perf_counter(), time.process_time()
                ids[side] = run(side, args.max_new_tokens)
                dt, dc = time.perf_counter() - t, time.process_time() - c
                best[side], cpu[side] = min(best[side], dt), min(cpu[side], dc)
                print(f"run {rep + 1} {side:12s} {dt:7.2f} s wall {dc:7.2f} s CPU", flush=True)
        extra = policy_prefix(source, 8, args.threads, 32) if args.policy_prefix else None
    ids = {s: cut(v, set(eos)) for s, v in ids.items()}
    tokens = {s: sum(len(v) for v in ids[s].values()) for s in SIDES}
    if not args.stop:
        assert all(t == len(prompts) * args.max_new_tokens for t in tokens.values()), (
            tokens
        )  # the full length
    rate = {s: tokens[s] / best[s] for s in SIDES}
    per_cpu = {s: tokens[s] / cpu[s] for s in SIDES}
    for s in SIDES:
        same, first = agreement(ids["generate"], ids[s])
        where = ""
        if first:
            where = (
                f"; first divergence at token {min(first)}-{max(first)} (median {statistics.median(first):g})"
            )
        print(
            f"{s:12s} {rate[s]:7.1f} tokens/s  {rate[s] / rate['generate']:5.2f}x generate  "
            f"({per_cpu[s]:.1f} tokens per CPU-second, {per_cpu[s] / per_cpu['generate']:.2f}x)  "
            f"greedy ids equal to generate on {same}/{len(prompts)} prompts{where}"
        )
    if extra:
        print(extra)
    print(f"load {os.getloadavg()[0]:.2f} (1-min average) at end")
    print(f"ratio {rate['ct2-float32'] / rate['generate']:.2f}")
    return 0


def _tiny(tmp: Path) -> Path:
    from saro.testing import build_tiny_model

    return build_tiny_model(tmp / "tiny")


if __name__ == "__main__":
    sys.exit(main())
