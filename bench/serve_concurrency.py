"""Throughput of ``saro serve`` with 8 concurrent clients versus one client at a time.

Starts the server in a subprocess on a free loopback port (the embedded SmolLM2-135M-Instruct by default; ``tiny``
for a random Llama with the real tokenizer, or a folder) on ``--backend`` (ct2 by default, the CPU engine; hf for
transformers), sends the same N greedy requests with a fixed ``max_tokens`` first one at a time, then from
``--clients`` concurrent clients, and prints both throughputs (generated tokens per second). The last line is
``ratio <x>``: concurrent over sequential throughput. The gain comes from the server's request queue, which runs
waiting requests as one batch.

The line before it measures the engine alone, in this process, on the same prompts: one at a time, then in batches
of ``--clients``. That ratio bounds the server's. It is set by two things: how much more a batch costs per step
than one row (on 1 thread a 135M model's batch of 8 is compute-bound: 3.4x one row when every row runs the full
``max_tokens``, measured with CTranslate2 directly), and static batching: a batch runs until its longest row
ends, so rows that stop early at end-of-turn leave it narrower (2.4x with a real model's answers of varying
length). Going past that needs rows to join a running batch (continuous batching, as vLLM does on a GPU), which
CTranslate2's ``generate_batch`` does not offer. With ``tiny`` (thousands of tokens/s) the HTTP round trip
dominates and the ratio measures the server's overhead instead. The server runs with one thread by default
(``--threads``): on a shared 2-core machine more threads collapse under load.

    python bench/serve_concurrency.py                       # the embedded model on ct2
    python bench/serve_concurrency.py --backend hf          # the same on transformers
    python bench/serve_concurrency.py --model tiny --requests 64
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, args: argparse.Namespace, log: Path) -> subprocess.Popen:
    code = (
        "from saro.serve import serve; "
        f"serve({model!r}, port={port}, api_key='', model_name='bench', max_batch_size={args.max_batch_size}, "
        f"batch_wait_ms={args.batch_wait_ms}, dtype={args.dtype!r}, backend={args.backend!r})"
    )
    env = {**os.environ, "SARO_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with open(log, "wb") as out:  # the server's log (one line per request) stays out of the report
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with code {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start in 300 s")


def run(url: str, prompts: list[str], clients: int, max_tokens: int) -> tuple[float, int]:
    """Send every prompt once from ``clients`` threads; (seconds, generated tokens)."""
    todo = list(range(len(prompts)))
    lock = threading.Lock()
    tokens = [0]
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(timeout=600) as http:
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop(0)
                r = http.post(
                    url,
                    json={
                        "model": "bench",
                        "messages": [{"role": "user", "content": prompts[i]}],
                        "max_tokens": max_tokens,
                        "temperature": 0,
                    },
                )
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                    return
                with lock:
                    tokens[0] += r.json()["usage"]["completion_tokens"]

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"requests failed: {errors[0]}")
    return elapsed, tokens[0]


def engine_alone(model: str, prompts: list[str], args: argparse.Namespace) -> tuple[float, float]:
    """The engine without the server, in this process with the server's threads: the same prompts one at a time,
    then in batches of ``clients`` (what the server runs when every client waits); (tokens/s, tokens/s).

    A batch runs until its longest row ends, so rows that stop early at end-of-turn leave the batch narrower for
    the rest of its steps: this ratio, not the server, is what bounds the concurrent one."""
    import torch

    from saro.models.backends import local_generator
    from saro.models.generate import SamplingParams

    if args.threads:
        torch.set_num_threads(args.threads)
    gen = local_generator(model, backend=args.backend, batch_size=args.max_batch_size, dtype=args.dtype)
    convs = [[{"role": "user", "content": p}] for p in prompts]
    params = SamplingParams(max_new_tokens=args.max_tokens)

    def rate(size: int) -> float:
        t0, tokens = time.perf_counter(), 0
        for i in range(0, len(convs), size):
            out = gen.generate_rows(convs[i : i + size], [params] * len(convs[i : i + size]))
            tokens += sum(g[0].tokens for g in out)
        return tokens / (time.perf_counter() - t0)

    rate(args.clients)  # warm up
    try:
        return rate(1), rate(args.clients)
    finally:
        gen.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model",
        default="embedded",
        help="'embedded' (SmolLM2-135M-Instruct), 'tiny' (random, built here: HTTP overhead dominates), or a folder",
    )
    ap.add_argument("--requests", type=int, default=32, help="requests per phase")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients in the second phase")
    ap.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request (greedy)")
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--batch-wait-ms", type=float, default=50.0)
    ap.add_argument("--backend", default="ct2", choices=["ct2", "hf"], help="the server's engine")
    ap.add_argument("--dtype", default="auto", help="hf: model dtype of the server (auto: float32 on CPU)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the server (OMP_NUM_THREADS; 0 keeps the env)",
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        from saro.testing import build_tiny_model

        model = str(build_tiny_model(Path(tmp) / "tiny")) if args.model == "tiny" else args.model
        port = free_port()
        proc = start_server(model, port, args, Path(tmp) / "server.log")
        try:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            prompts = [
                f"Request {i}: explain topic number {i} in a few sentences." for i in range(args.requests)
            ]
            run(url, prompts[: args.clients], args.clients, args.max_tokens)  # warm up both paths
            run(url, prompts[:2], 1, args.max_tokens)
            t_seq, tok_seq = run(url, prompts, 1, args.max_tokens)
            t_con, tok_con = run(url, prompts, args.clients, args.max_tokens)
        finally:
            proc.terminate()
            proc.wait(30)
        alone = engine_alone(model, prompts, args)
    seq, con = tok_seq / t_seq, tok_con / t_con
    print(
        f"model {args.model} on {args.backend} ({args.dtype if args.backend == 'hf' else 'float32'}), "
        f"{args.requests} requests, max_tokens {args.max_tokens}, greedy; load {os.getloadavg()[0]:.2f}"
    )
    print(f"one at a time:      {t_seq:6.2f} s  {args.requests / t_seq:7.2f} req/s  {seq:8.1f} tokens/s")
    print(
        f"{args.clients} concurrent clients: {t_con:6.2f} s  {args.requests / t_con:7.2f} req/s  {con:8.1f} tokens/s"
    )
    print(
        f"engine alone, same prompts one at a time: {alone[0]:8.1f} tokens/s; in batches of {args.clients}: "
        f"{alone[1]:8.1f} tokens/s; ratio {alone[1] / alone[0]:.2f} (the bound on the server's)"
    )
    print(f"ratio {con / seq:.2f}")


if __name__ == "__main__":
    main()
