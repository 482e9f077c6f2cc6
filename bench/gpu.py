"""GPU pretraining benchmark: lmforge's levers on the 26M and 104M presets, in one ~10-minute run.

`bash bench/gpu.sh` (which runs this file) trains each preset through lmforge's real pretrain path
(bench/pretrain.py `--mode lmforge`, one subprocess per configuration) with bf16 (`--dtype auto`),
packing (lmforge's default) and flash-attention 2 (varlen over the packed documents) when the
`flash_attn` package imports, else SDPA, and these levers:

  base            no lever
  compile         --torch_compile true
  liger           --use_liger_kernel true
  compile+liger   both (failed inside torch dynamo on torch 2.11 + liger 0.8.5)
  reference       bench/pretrain.py's MiniMind-style padded plain-PyTorch loop (`--mode reference`)

A configuration that fails is recorded as "failed" with its last error line and the run goes on;
one that cannot run here (no liger-kernel, no CUDA) is "skipped" with the reason.

Figures, per configuration (the first 2 steps, where compile's ~27 s first step falls, are untimed):

  loss tok/s   positions that carry a next-token target, per second (bench/pretrain.py's figure)
  MFU          flops_per_token x loss tok/s / PEAK_FLOPS, the share of the GPU's peak spent on
               useful tokens; "MFU all" uses all positions/s instead (padding included).
  flops_per_token = 6 N + 12 L d T   (PaLM appendix B / nanoGPT's estimate_mfu)
               N = all parameters except the input embedding table, with the LM head counted even
               when it is tied to that table (its matmul runs for every token): the weights that
               do a matmul per token. 12 L d T is attention's QK^T and AV (forward + backward),
               L layers, d hidden size, T = seq_len: full T x T, so it overstates causal and packed
               varlen attention a little (26M at T=512: 25M of 180M per token).
  PEAK_FLOPS   env var; default 989e12, an H200's dense bf16 peak (printed with the results).

Goals (issue 24, printed next to the figures): 26M >= 1.0M loss tok/s and >= 23% MFU; 104M >= 0.3M.

Output: progress on stderr; one JSON line per configuration on stdout as soon as it finishes (so a
run cut short keeps what it measured), then the table. `--dry_run` runs the same sequence on the
CPU with a tiny model and 3 steps, to test the plumbing: compile only for the first preset (~30 s on
a CPU), Liger and flash-attn skipped where they cannot run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

PRETRAIN = Path(__file__).resolve().parent / "pretrain.py"
RESULT_PREFIX = "BENCH_RESULT "  # bench/pretrain.py's child output
PEAK_FLOPS_DEFAULT = 989e12  # H200 SXM, dense bf16
# label, preset, batch, steps, goal (loss tok/s, MFU or None)
PRESETS = [
    ("26M", "minimind2-small", 64, 50, (1.0e6, 0.23)),
    ("104M", "minimind2", 32, 40, (0.3e6, None)),
]
LEVERS = {
    "base": "",
    "compile": "--torch_compile true",
    "liger": "--use_liger_kernel true",
    "compile+liger": "--torch_compile true --use_liger_kernel true",
}
SEQ_LEN = 512
DRY = {"seq_len": 64, "batch": 4, "steps": 3}  # tiny model, sized per preset in dry_sizes
DRY_LAYERS = {"26M": 1, "104M": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry_run", action="store_true", help="CPU, tiny model, 3 steps: test the plumbing")
    p.add_argument("--only", default="", help="comma-separated substrings of configuration names to run")
    p.add_argument(
        "--budget_s", type=float, default=500, help="skip what would start after this many s (%(default)s)"
    )
    p.add_argument("--timeout_s", type=float, default=180, help="per configuration (%(default)s)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write all results to this JSON file")
    return p.parse_args(argv)


def dry_sizes(label: str) -> dict[str, int]:
    layers = DRY_LAYERS[label]
    return {
        "hidden_size": 64,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    }


def flops_per_token(preset: str | None, sizes: dict[str, int], seq_len: int) -> dict[str, int]:
    """6 N + 12 L d T, N counted on a meta-device copy of the model bench/pretrain.py trains."""
    import torch

    from lmforge.models.scratch import init_model
    from lmforge.models.tokenizer import load_tokenizer

    with torch.device("meta"):
        model = init_model(load_tokenizer(), preset=preset, **sizes)
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    n = sum(p.numel() for p in model.parameters()) - embed.numel()  # tied weights are counted once
    n += head.numel() if head is embed else 0  # the tied head's matmul still runs per token
    layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    return {"n_params": n, "flops_per_token": 6 * n + 12 * layers * hidden * seq_len}


def attention() -> tuple[str, str]:
    """flash_attention_2 when it can run, else sdpa; and why."""
    import torch

    if not torch.cuda.is_available():
        return "sdpa", "no CUDA GPU"
    if importlib.util.find_spec("flash_attn") is None:
        return "sdpa", "flash_attn not importable"
    return "flash_attention_2", "flash_attn importable: varlen over packed documents"


def skip_reason(lever: str, label: str, dry_run: bool) -> str | None:
    import torch

    if "liger" in lever:
        if not torch.cuda.is_available():
            return "no CUDA GPU (Liger's kernels are Triton)"
        if importlib.util.find_spec("liger_kernel") is None:
            return "liger-kernel not installed"
    if "compile" in lever and dry_run and label != PRESETS[0][0]:
        return "dry run: compile is checked once, on the first preset (~30 s on a CPU)"
    return None


def last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.search(r"(Error|Exception|Unsupported)\b|error:", ln)]
    return ((errors or lines or ["(no output)"])[-1])[:300]


def configurations(args: argparse.Namespace, attn: str) -> list[dict[str, Any]]:
    out = []
    for label, preset, batch, steps, goal in PRESETS:
        for lever, flags in [*LEVERS.items(), ("reference", None)]:
            cfg = {"name": f"{label} {lever}", "model": label, "lever": lever, "goal": goal}
            if args.dry_run:
                cfg |= {"preset": None, "sizes": dry_sizes(label), "batch_size": DRY["batch"]}
                cfg |= {"steps": DRY["steps"], "seq_len": DRY["seq_len"]}
            else:
                cfg |= {
                    "preset": preset,
                    "sizes": {},
                    "batch_size": batch,
                    "steps": steps,
                    "seq_len": SEQ_LEN,
                }
            cfg["mode"] = "reference" if flags is None else "lmforge"
            cfg["lmforge_flags"] = None if flags is None else f"--attn_implementation {attn} {flags}".strip()
            out.append(cfg)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        out = [c for c in out if any(w in c["name"] for w in wanted)]
    return out


def child_command(cfg: dict[str, Any], data: str) -> list[str]:
    cmd = [sys.executable, str(PRETRAIN), "--mode", cfg["mode"], "--data", data]
    cmd += [
        "--seq_len",
        str(cfg["seq_len"]),
        "--batch_size",
        str(cfg["batch_size"]),
        "--steps",
        str(cfg["steps"]),
    ]
    cmd += ["--preset", cfg["preset"]] if cfg["preset"] else []
    cmd += [x for k, v in cfg["sizes"].items() for x in (f"--{k}", str(v))]
    cmd += [f"--lmforge_flags={cfg['lmforge_flags']}"] if cfg["lmforge_flags"] else []
    return cmd


def run_one(
    cfg: dict[str, Any], data: str, timeout: float, peak: float, flops: dict[str, int]
) -> dict[str, Any]:
    cmd = child_command(cfg, data)
    start = time.time()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, **common.CHILD_ENV}, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {
            "status": "failed",
            "reason": f"timed out after {timeout:.0f} s",
            "wall_s": time.time() - start,
        }
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        reason = f"exit {proc.returncode}: {last_error_line(proc.stderr + proc.stdout)}"
        return {"status": "failed", "reason": reason, "wall_s": time.time() - start}
    r = json.loads(lines[-1][len(RESULT_PREFIX) :])
    out = {"status": "ok", "reason": None}
    for k in ("loss_tokens_per_s", "all_tokens_per_s", "s_per_step", "final_loss", "device", "dtype"):
        out[k] = r[k]
    out["peak_cuda_mb"] = r.get("peak_cuda_mb")
    out["wall_s"] = time.time() - start
    out |= flops
    out["mfu"] = flops["flops_per_token"] * r["loss_tokens_per_s"] / peak
    out["mfu_all_positions"] = flops["flops_per_token"] * r["all_tokens_per_s"] / peak
    return out


def goal_text(res: dict[str, Any]) -> str:
    goal = res.get("goal")
    if res["lever"] == "reference" or not goal:
        return ""
    tok, mfu = goal
    text = f">= {tok / 1e6:.1f}M" + (f", >= {100 * mfu:.0f}% MFU" if mfu else "")
    if res["status"] != "ok":
        return text
    met = res["loss_tokens_per_s"] >= tok and (mfu is None or res["mfu"] >= mfu)
    return f"{text}: {'met' if met else 'not met'}"


def table(results: list[dict[str, Any]]) -> str:
    head = ["config", "status", "loss tok/s", "MFU %", "MFU all %", "s/step", "CUDA MB", "wall s", "goal"]
    rows = []
    for r in results:
        if r["status"] == "ok":
            cuda = f"{r['peak_cuda_mb']:,.0f}" if r["peak_cuda_mb"] is not None else "-"
            figs = [
                f"{r['loss_tokens_per_s']:,.0f}",
                f"{100 * r['mfu']:.3g}",
                f"{100 * r['mfu_all_positions']:.3g}",
            ]
            figs += [f"{r['s_per_step']:.3f}", cuda, f"{r['wall_s']:.0f}"]
        else:
            figs = ["-"] * 5 + [f"{r['wall_s']:.0f}" if "wall_s" in r else "-"]
        rows.append([r["name"], r["status"], *figs, goal_text(r)])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:{'<' if i in (0, 1, 8) else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
    lines += [f"{r['name']}: {r['status']}: {r['reason']}" for r in results if r["status"] != "ok"]
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.time()
    peak = float(os.environ.get("PEAK_FLOPS") or PEAK_FLOPS_DEFAULT)
    attn, why = attention()
    info = common.machine()
    if not args.dry_run and "gpu" not in info:
        raise SystemExit("bench/gpu.sh: no CUDA GPU here; run `bash bench/gpu.sh --dry_run` on a CPU")
    say = lambda msg: print(f"gpu bench: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    header = [
        f"machine: {info.get('gpu', 'CPU')} | torch {info['torch']} | {info['usable_cores']} cores"
        + (" | DRY RUN (CPU, tiny model, 3 steps: figures test the plumbing only)" if args.dry_run else ""),
        f"attention: {attn} ({why}) | packing on | dtype auto (bf16 on a capable GPU)",
        f"MFU = (6 N + 12 L d T) x tokens/s / PEAK_FLOPS, PEAK_FLOPS = {peak:.4g}"
        + (
            " (env PEAK_FLOPS)"
            if os.environ.get("PEAK_FLOPS")
            else " (H200 dense bf16; override: env PEAK_FLOPS)"
        ),
    ]
    for line in header:
        say(line)
    results = []
    flops_cache: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="lmforge-gpu-bench-") as tmp:
        from lmforge.data.synth import synth

        data = synth(tmp, scale=0.05 if args.dry_run else 1.0)["pretrain"]
        for cfg in configurations(args, attn):
            res = {
                k: cfg[k]
                for k in ("name", "model", "lever", "mode", "preset", "batch_size", "steps", "seq_len")
            }
            res |= {
                "lmforge_flags": cfg["lmforge_flags"],
                "attn": attn if cfg["mode"] == "lmforge" else "sdpa",
            }
            res |= {"peak_flops": peak, "goal": cfg["goal"], "dry_run": args.dry_run}
            reason = skip_reason(cfg["lever"], cfg["model"], args.dry_run)
            left = args.budget_s - (time.time() - t0)
            if reason is None and left < 20:
                reason = f"time budget ({args.budget_s:.0f} s) spent"
            if reason:
                res |= {"status": "skipped", "reason": reason}
            else:
                if cfg["model"] not in flops_cache:
                    flops_cache[cfg["model"]] = flops_per_token(cfg["preset"], cfg["sizes"], cfg["seq_len"])
                say(f"running {cfg['name']} ({time.time() - t0:.0f} s so far)")
                res |= run_one(cfg, data, min(args.timeout_s, left), peak, flops_cache[cfg["model"]])
            results.append(res)
            print(json.dumps(res), flush=True)
    print("\n".join(["", *header, "", table(results), f"total {time.time() - t0:.0f} s"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
