"""Serving throughput: `lmforge serve` with dynamic batching vs the same server one request at a time.

Both modes start the real server (`python -m lmforge serve DIR --port 0`) in a subprocess on the same
model folder and send it the same load: `--clients` concurrent streaming chat requests from
`openai.AsyncOpenAI`, `--requests` in all, each with a prompt of about `--prompt_words` words and
exactly `--max_tokens` generated tokens (`ignore_eos`, greedy). What differs is one flag:

- batched     `--max_batch_size` = `--clients` (the server decodes every waiting request together)
- sequential  `--max_batch_size 1` (each request runs alone, the others wait in the queue)

Before timing, one request warms each server up. Figures (all from the client side):

  requests_per_s   finished requests / wall seconds of the whole load
  tokens_per_s     generated tokens (the `usage` chunk of every stream) / wall seconds
  latency_s        mean seconds from sending a request to its last chunk (queueing included)

The model is a randomly initialised lmforge `init_model` (default preset `minimind2-small`, 26M
parameters, the shipped tokenizer) unless `--model` names a folder. The result is ONE JSON line on
stdout (progress goes to stderr); `--quick` runs a tiny model and a small load for tests.
On a shared machine other processes only slow a run down: compare modes from the same run, and
pass `--threads 1` there (two OpenMP threads on two busy cores wait on each other at every op, which
made a tiny model ~30x slower here).

    python bench/server.py                               # 16 clients, 64 requests, 64 tokens each
    python bench/server.py --clients 32 --requests 128 --max_tokens 32 --preset tiny
    python bench/server.py --model out/demo/sft --clients 8

Measured on 2 shared CPU cores (load average 5-6 from other jobs), `python bench/server.py
--threads 1`: batched 2.95 requests/s, 189 tokens/s, mean latency 5.4 s; sequential 0.38
requests/s, 24 tokens/s, 38.5 s: 7.7x the throughput. `--quick` (tiny model, 4 clients): 544 vs
175 tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

MODES = {"batched": None, "sequential": 1}  # mode → --max_batch_size (None: the client count)
WORDS = "the capital of france is paris and japan has tokyo while rivers flow into seas".split()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model or run folder (default: a random init_model)")
    p.add_argument(
        "--preset", default="minimind2-small", help="init_model preset without --model (%(default)s)"
    )
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (%(default)s)")
    p.add_argument("--requests", type=int, default=64, help="requests in all (%(default)s)")
    p.add_argument("--max_tokens", type=int, default=64, help="tokens generated per request (%(default)s)")
    p.add_argument(
        "--prompt_words", type=int, default=24, help="words per prompt, varied ±50%% (%(default)s)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS of the servers (default: torch's choice)"
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny model, 4 clients, 8 requests, 8 tokens, 1 thread"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.clients, args.requests, args.max_tokens, args.prompt_words = "tiny", 4, 8, 8, 8
        args.threads = args.threads or 1
    for name in ("clients", "requests", "max_tokens", "prompt_words"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


def log(msg: str) -> None:
    print(f"[bench/server] {msg}", file=sys.stderr, flush=True)


def start_server(
    model: str, max_batch_size: int, log_path: Path, threads: int | None, timeout: float = 300.0
):
    """`lmforge serve` on a free port; returns (process, base URL) once /health answers."""
    import httpx

    cmd = [
        sys.executable,
        "-m",
        "lmforge",
        "serve",
        model,
        "--port",
        "0",
        "--max_batch_size",
        str(max_batch_size),
    ]
    cmd += ["--max_queue", "100000", "--temperature", "0"]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    proc = subprocess.Popen(cmd, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=env)
    deadline, url = time.monotonic() + timeout, None
    while time.monotonic() < deadline and proc.poll() is None:
        found = url or re.search(r"at (http://127\.0\.0\.1:\d+)/v1", log_path.read_text())
        url = found if isinstance(found, str) else (found.group(1) if found else None)
        if url:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"bench: the server did not start:\n{log_path.read_text()[-3000:]}")


def prompts(n: int, words: int) -> list[str]:
    import random

    rng = random.Random(0)
    return [" ".join(rng.choices(WORDS, k=rng.randint(max(1, words // 2), words * 3 // 2))) for _ in range(n)]


async def one_request(client, model: str, prompt: str, max_tokens: int) -> dict:
    sent, tokens = time.perf_counter(), 0
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return {"tokens": tokens, "latency": time.perf_counter() - sent}


async def run_load(url: str, model: str, args: argparse.Namespace) -> dict:
    import openai

    texts = prompts(args.requests, args.prompt_words)
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=3600
    ) as client:
        await one_request(client, model, "warm up", 2)
        queue: asyncio.Queue = asyncio.Queue()
        for t in texts:
            queue.put_nowait(t)
        results: list[dict] = []

        async def worker():
            while not queue.empty():
                results.append(await one_request(client, model, queue.get_nowait(), args.max_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.clients)))
        wall = time.perf_counter() - start
    tokens = sum(r["tokens"] for r in results)
    return {
        "requests": len(results),
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(results) / wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "latency_s": round(sum(r["latency"] for r in results) / len(results), 4),
    }


def run_mode(model: str, mode: str, args: argparse.Namespace, tmp: str) -> dict:
    size = MODES[mode] or args.clients
    log(f"{mode}: starting the server (--max_batch_size {size})")
    proc, url = start_server(model, size, Path(tmp) / f"{mode}.log", args.threads)
    try:
        result = asyncio.run(run_load(url, model, args))
        import httpx

        result["peak_batch"] = httpx.get(f"{url}/health").json()["peak_batch"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    log(f"{mode}: {result}")
    return {"max_batch_size": size, **result, "load_1m": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-serve-") as tmp:
        model = args.model or common.make_model(args.preset, str(Path(tmp) / "model"))
        results = {mode: run_mode(model, mode, args, tmp) for mode in MODES}
    batched, seq = results["batched"], results["sequential"]
    report = {
        "bench": "server",
        "model": args.model or f"init_model(preset={args.preset})",
        "clients": args.clients,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        **results,
        "speedup_requests_per_s": round(batched["requests_per_s"] / seq["requests_per_s"], 2),
        "speedup_tokens_per_s": round(batched["tokens_per_s"] / seq["tokens_per_s"], 2),
    }
    common.emit(report)


if __name__ == "__main__":
    main()
