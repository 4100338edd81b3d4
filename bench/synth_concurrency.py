"""Throughput of the ``openai`` teacher backend with bounded concurrency versus one request at a time.

Starts the fake OpenAI-compatible server from ``tests/fakeserver.py`` on 127.0.0.1 answering every request after
a fixed latency (200 ms by default), sends the same conversations with concurrency 8 and with concurrency 1 (request
cache off, so every request really goes out), and prints both throughputs. The last line is ``speedup <x>``
(concurrency 8 over concurrency 1; ideally close to 8).

    python bench/synth_concurrency.py [--requests 48] [--concurrency 8] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakeserver import FakeServer
from saro.models.generate import SamplingParams
from saro.models.openai_backend import OpenAIGenerator, require_reasoning

log = logging.getLogger("saro.bench.synth_concurrency")


def throughput(url: str, n_requests: int, concurrency: int) -> tuple[float, int]:
    """(requests per second, accepted answers) for ``n_requests`` single-sample conversations."""
    gen = OpenAIGenerator(
        model="fake",
        base_url=url,
        concurrency=concurrency,
        timeout=30,
        cache=False,
        validate=require_reasoning,
    )
    convs = [[{"role": "user", "content": f"benchmark question {i}"}] for i in range(n_requests)]
    t0 = time.perf_counter()
    accepted = 0
    for _, gens in gen.generate_batches(
        convs, SamplingParams(max_new_tokens=256), description=f"c={concurrency}"
    ):
        accepted += sum(g[0].ok for g in gens)
    return n_requests / (time.perf_counter() - t0), accepted


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds the server waits before each answer")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with FakeServer(latency=args.latency) as srv:
        throughput(srv.url, 2, 2)  # warm-up: imports, first connections
        srv.reset_counts()
        fast, ok_fast = throughput(srv.url, args.requests, args.concurrency)
        slow, ok_slow = throughput(srv.url, args.requests, 1)
        sent = srv.requests
    print(
        f"server latency {args.latency * 1000:.0f} ms, {args.requests} requests per run, {sent} sent in all"
    )
    print(f"concurrency {args.concurrency}: {fast:.2f} req/s ({ok_fast}/{args.requests} accepted)")
    print(f"concurrency 1: {slow:.2f} req/s ({ok_slow}/{args.requests} accepted)")
    print(f"speedup {fast / slow:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
