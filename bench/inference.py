"""Generation throughput: lmforge's inference engine vs plain `model.generate`, one prompt at a time
and batched.

Every mode loads the same saved model (default: a randomly initialised lmforge `init_model` with
preset `minimind2-small`, 26M parameters, and the shipped tokenizer; `--model DIR` for your own),
answers the same chat prompts (the first user turns of `lmforge.data.synth` sft.jsonl) with greedy
decoding and at most `--max_new_tokens` new tokens, on the same device and dtype (fp32 on CPU):

- lmforge_b1       `Engine.generate_batch(prompts, gen, batch_size=1)`: what `lmforge infer
                   --batch_size 1` and `lmforge chat` run for each prompt (`lmforge.infer.engine`)
- lmforge_batched  `Engine.generate_batch(prompts, gen, batch_size=--batch_size)`, what `lmforge
                   infer` runs (`lmforge.infer.batch`): prompts sorted by length, left padded,
                   results back in input order
- hf_sequential    the baseline: `tokenizer.apply_chat_template` + `model.generate(**inputs,
                   max_new_tokens=N, do_sample=False)`, one prompt at a time
- hf_batched       the naive batched baseline: prompts in input order, `padding_side="left"`,
                   batches of --batch_size through `model.generate`

Each mode runs in its own subprocess (so peak RSS is per mode), after one untimed warm-up call.
Figures per mode:

  new_tokens_per_s   generated tokens (each answer up to and including its end-of-sequence token)
                     / seconds for all prompts
  prompts_per_s      prompts / seconds for all prompts
  ttft_s             mean seconds of one generate call with max_new_tokens=1 in this mode's batching
                     (prompt prefill plus the first token: what a caller waits before anything)
  peak_rss_mb        max resident memory of the mode's process
  same_tokens        (top level) every lmforge answer has exactly the token ids of hf_sequential's
                     answer to the same prompt; each mode also reports its own count of differing
                     answers (`differ_from_hf_sequential`)

Output: ONE JSON line on stdout with every mode's figures, `same_tokens`, the speedups of
lmforge_batched over hf_sequential and over hf_batched, "machine", "command" and "date"; progress
goes to stderr. `--quick` is a tiny model and a small load for tests. On a shared machine other
processes only slow a run down: use `--repeats 4` (each mode's fastest run is kept) and
`--threads 1`.

    python bench/inference.py                         # 16 prompts, batch 16, 64 new tokens
    python bench/inference.py --quick
    python bench/inference.py --threads 1 --repeats 4  # on a shared machine
    python bench/inference.py --model out/demo/sft --prompts 32 --batch_size 8 --max_new_tokens 128
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

START = time.time()
RESULT_PREFIX = "BENCH_RESULT "
MODES = ("lmforge_b1", "lmforge_batched", "hf_sequential", "hf_batched")
REFERENCE = "hf_sequential"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: a random init_model saved to a temp folder)")
    p.add_argument(
        "--preset", help="init_model preset without --model (default minimind2-small; --quick: tiny)"
    )
    p.add_argument("--prompts", type=int, help="prompts answered per mode (default 16; --quick: 8)")
    p.add_argument("--batch_size", type=int, help="batch of the batched modes (default 16; --quick: 4)")
    p.add_argument("--max_new_tokens", type=int, help="default 64 (--quick: 8)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated, from: " + ", ".join(MODES))
    p.add_argument("--repeats", type=int, default=1, help="runs per mode; the fastest is kept")
    p.add_argument("--threads", type=int, help="torch threads in each mode (default: torch's own)")
    p.add_argument("--quick", action="store_true", help="tiny model, 8 prompts, batch 4, 8 tokens (tests)")
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # child process
    p.add_argument("--prompt_file", help=argparse.SUPPRESS)  # child process: the prompts as JSON
    args = p.parse_args(argv)
    quick = {"preset": "tiny", "prompts": 8, "batch_size": 4, "max_new_tokens": 8}
    full = {"preset": "minimind2-small", "prompts": 16, "batch_size": 16, "max_new_tokens": 64}
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    for name in ("prompts", "batch_size", "max_new_tokens", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in args.modes if m not in MODES]
    if bad or not args.modes:
        p.error(f"--modes: unknown {bad}; choose from {', '.join(MODES)}")
    return args


def log(msg: str) -> None:
    print(f"[bench/inference] {msg}", file=sys.stderr, flush=True)


def make_prompts(n: int, tmp: str) -> list[list[dict]]:
    """The first user turn of the first `n` synthetic SFT conversations (varied lengths)."""
    from lmforge.data.synth import synth

    path = synth(tmp, scale=max(0.01, n / 4000 * 1.5))["sft"]
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            user = next(t for t in json.loads(line)["conversations"] if t["role"] == "user")
            out.append([{"role": "user", "content": user["content"]}])
            if len(out) == n:
                return out
    raise SystemExit(f"bench: synth gave only {len(out)} prompts")


# --- the modes (child process) ----------------------------------------------------------------------


def timed(fn) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run_lmforge(args: argparse.Namespace, prompts: list[list[dict]]) -> dict[str, Any]:
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.engine import Engine

    engine = Engine.from_path(args.model)
    size = 1 if args.mode == "lmforge_b1" else args.batch_size
    gen = GenerationArgs(max_new_tokens=args.max_new_tokens, do_sample=False)
    engine.generate_batch(prompts[:1], GenerationArgs(max_new_tokens=2, do_sample=False), batch_size=1)
    first = GenerationArgs(max_new_tokens=1, do_sample=False)
    _, ttft = timed(lambda: engine.generate_batch(prompts, first, batch_size=size))
    done, seconds = timed(lambda: engine.generate_batch(prompts, gen, batch_size=size))
    calls = -(-len(prompts) // size)
    return {
        "batch_size": size,
        "seconds": seconds,
        "ttft_s": ttft / calls,
        "token_ids": [c.token_ids for c in done],
    }


def run_hf(args: argparse.Namespace, prompts: list[list[dict]]) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    size = 1 if args.mode == "hf_sequential" else args.batch_size
    tok.padding_side = "left"
    texts = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in prompts]
    batches = [texts[i : i + size] for i in range(0, len(texts), size)]
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])

    def generate(batch: list[str], new_tokens: int) -> list[list[int]]:
        inputs = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
        rows = []
        for row in out[:, inputs["input_ids"].shape[1] :].tolist():
            end = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
            rows.append(row[:end])  # up to and including the first end-of-sequence token
        return rows

    generate(texts[:1], 2)
    _, ttft = timed(lambda: [generate(b, 1) for b in batches])
    done, seconds = timed(lambda: [r for b in batches for r in generate(b, args.max_new_tokens)])
    return {"batch_size": size, "seconds": seconds, "ttft_s": ttft / len(batches), "token_ids": done}


def child(args: argparse.Namespace) -> None:
    import warnings

    import torch

    warnings.filterwarnings("ignore")  # generation-config notes about sampling fields under greedy
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = json.loads(Path(args.prompt_file).read_text(encoding="utf-8"))
    result = run_lmforge(args, prompts) if args.mode.startswith("lmforge") else run_hf(args, prompts)
    new_tokens = sum(len(t) for t in result["token_ids"])
    result.update(
        prompts=len(prompts),
        new_tokens=new_tokens,
        new_tokens_per_s=new_tokens / result["seconds"],
        prompts_per_s=len(prompts) / result["seconds"],
        **common.process_figures(START),
    )
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --- the parent -------------------------------------------------------------------------------------


def run_child(args: argparse.Namespace, mode: str, prompt_file: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--mode", mode, "--model", args.model]
    cmd += ["--prompt_file", prompt_file, "--batch_size", str(args.batch_size)]
    cmd += ["--max_new_tokens", str(args.max_new_tokens)] + (["--quick"] if args.quick else [])
    cmd += ["--threads", str(args.threads)] if args.threads else []
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "LMFORGE_LOG_LEVEL": "WARNING",
    }
    log(f"running {mode}")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-6000:] + proc.stdout[-2000:])
        raise SystemExit(f"bench: mode {mode} failed (exit {proc.returncode}): {shlex.join(cmd)}")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    log(
        f"{mode}: {result['new_tokens_per_s']:.1f} new tokens/s, {result['prompts_per_s']:.2f} prompts/s, "
        f"ttft {result['ttft_s'] * 1000:.1f} ms"
    )
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mode:
        child(args)
        return
    model_name = args.model or f"init_model(preset={args.preset})"
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-infer-") as tmp:
        if args.model is None:
            args.model = common.make_model(args.preset, str(Path(tmp) / "model"))
        prompt_file = Path(tmp) / "prompts.json"
        prompt_file.write_text(
            json.dumps(make_prompts(args.prompts, str(Path(tmp) / "data"))), encoding="utf-8"
        )
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.modes}
        for _ in range(args.repeats):  # alternate the modes, so a busy spell hits them all alike
            for m in args.modes:
                runs[m].append(run_child(args, m, str(prompt_file)))
    best = {m: min(r, key=lambda x: x["seconds"]) for m, r in runs.items()}
    ids = {m: r.pop("token_ids") for m, r in best.items()}
    for r in (x for rs in runs.values() for x in rs):
        r.pop("token_ids", None)
    report: dict[str, Any] = {"bench": "inference", **best}
    if REFERENCE in ids:
        for m in best:
            best[m]["differ_from_hf_sequential"] = sum(a != b for a, b in zip(ids[m], ids[REFERENCE]))
        lm = [m for m in best if m.startswith("lmforge")]
        report["same_tokens"] = bool(lm) and all(best[m]["differ_from_hf_sequential"] == 0 for m in lm)
    for a, b in (
        ("lmforge_batched", "hf_sequential"),
        ("lmforge_batched", "hf_batched"),
        ("lmforge_b1", "hf_sequential"),
    ):
        if a in best and b in best:
            report[f"speedup_{a}_vs_{b}"] = best[a]["new_tokens_per_s"] / best[b]["new_tokens_per_s"]
    report.update(
        seconds_all_runs={m: [round(r["seconds"], 3) for r in rs] for m, rs in runs.items()},
        model=model_name,
        prompts=args.prompts,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        threads=args.threads,
        repeats=args.repeats,
    )
    common.emit(report)


if __name__ == "__main__":
    main()
