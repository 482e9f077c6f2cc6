"""Pretraining throughput: lmforge's real pretrain path vs a MiniMind-style plain PyTorch loop.

Both modes train the same from-scratch model (lmforge's `init_model`, same sizes, tokenizer and
seed) on the same data file for the same number of optimizer steps, with the same batch size,
sequence length, learning rate and schedule (cosine to 0.1 x lr, no warm-up, no weight decay),
AdamW and gradient clipping at 1.0. What differs is what a step is made of:

- lmforge   `lmforge.pipeline.run_train("pretrain", ...)`: documents (bos + text + eos) are PACKED
            into full `--seq_len` rows whose position ids restart at every document (no attention
            or label crosses a document), trained by transformers' Trainer (LmforgeTrainer).
            Figures come from the run's metrics.jsonl.
- reference every document is tokenised the same way (`encode_text`), truncated at `--seq_len` and
            PADDED to `--seq_len` (MiniMind's PretrainDataset); a plain DataLoader (shuffle),
            `torch.optim.AdamW`, cross entropy with pad positions ignored, no attention mask
            (right padding under a causal mask cannot change the real tokens' outputs).

lmforge calls `torch.set_flush_denormal(True)` (tiny models' optimizer states drift into denormals
and CPU ops on them get ~20x slower); the reference does the same, so the comparison is about
packing and the training loop, not denormal arithmetic. On CUDA both use bf16 autocast when the
GPU supports it (what lmforge's `--dtype auto` picks) and report peak allocated GPU memory.

Each mode runs in its own subprocess (`--mode lmforge|reference`, which prints one JSON line), so
peak RSS is per mode. How to read the table (the first 2 steps are warm-up and are not timed):

  all tok/s    batch x seq_len positions per second: raw compute throughput.
  loss tok/s   positions that carry a next-token target per second: useful throughput. This is
               the figure to compare; padding and bos positions cost compute but teach nothing.
  waste %      1 - loss-bearing / all positions over the timed steps (padding, plus the one
               target-less first position of every document or row).
  peak RSS MB  max resident memory of the whole mode process (imports and data included).
  final loss   mean loss of the last 5 steps. Per-token losses of the two modes are comparable,
               but after N steps lmforge has trained on more real tokens, so it is usually lower.
  s/step       seconds per optimizer step after warm-up.
  wall s       the whole subprocess: imports, tokenising, model init, training, saving.

Below the table: each mode's dataset-level padding (lmforge: its PackStats; reference:
`padding_waste_unpacked`), its CPU seconds per wall second and the load average. On a shared
machine other processes slow runs down, never up: `--repeats 3` alternates the modes and keeps each
mode's fastest run, and a warning is printed when the load average exceeded the core count.

`--lmforge_flags "..."` passes extra `lmforge train pretrain` flags to the lmforge mode (compile, Liger,
the attention kernel); bench/gpu.sh uses it. Run `python bench/pretrain.py --help` for the flags;
bench/README.md has measured results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common

START = time.time()
WARMUP_STEPS = 2
LAST_LOSS_STEPS = 5
SEED = 42
RESULT_PREFIX = "BENCH_RESULT "
MODES = ("lmforge", "reference")
SIZE_FLAGS = {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 6, "num_key_value_heads": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default=None, help="lmforge model preset (size flags given explicitly win)")
    for name, default in SIZE_FLAGS.items():
        p.add_argument(f"--{name}", type=int, default=None, help=f"default {default}, or the preset's")
    p.add_argument(
        "--seq_len", type=int, default=256, help="sequence length, lmforge --max_length (%(default)s)"
    )
    p.add_argument(
        "--batch_size", type=int, default=16, help="rows per optimizer step, no accumulation (%(default)s)"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=30,
        help=f"optimizer steps, the first {WARMUP_STEPS} untimed (%(default)s)",
    )
    p.add_argument(
        "--lr", type=float, default=2e-3, help="peak learning rate, cosine to 0.1 x lr (%(default)s)"
    )
    p.add_argument(
        "--data", default=None, help="JSONL of {'text': ...} rows (default: lmforge.data.synth, scale 1.0)"
    )
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: lmforge's shipped one)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated modes to run (%(default)s)")
    p.add_argument(
        "--lmforge_flags",
        default="",
        help="extra `lmforge train pretrain` flags for the lmforge mode (later flags win), e.g. "
        '"--torch_compile true --use_liger_kernel true --attn_implementation flash_attention_2"',
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the modes this many times, alternating, and report each mode's fastest run (%(default)s)",
    )
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results to this JSON file")
    p.add_argument("--mode", choices=MODES, default=None, help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    if args.steps <= WARMUP_STEPS:
        p.error(f"--steps must be more than the {WARMUP_STEPS} warm-up steps; got {args.steps}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        p.error(f"--modes: expected a comma-separated subset of {','.join(MODES)}; got {args.modes!r}")
    args.modes = modes
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1; got {args.repeats}")
    return args


def model_sizes(args: argparse.Namespace) -> dict[str, int]:
    """Size flags to pass on: all of them (with defaults) without a preset, else only those given."""
    sizes = {k: getattr(args, k) for k in SIZE_FLAGS}
    if args.preset:
        return {k: v for k, v in sizes.items() if v is not None}
    return {k: default if sizes[k] is None else sizes[k] for k, default in SIZE_FLAGS.items()}


def use_bf16() -> bool:
    """lmforge's `--dtype auto` rule: bf16 on a GPU that supports it, else fp32."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


# ---------------------------------------------------------------------------------------------
# Figures, shared by both modes


def summarise(records: list[dict[str, Any]], batch_size: int, seq_len: int) -> dict[str, Any]:
    """Throughput figures from per-step records {step, loss, tokens, time (end of step, s)}."""
    if len(records) <= WARMUP_STEPS:
        raise RuntimeError(f"only {len(records)} steps recorded; need more than {WARMUP_STEPS}")
    timed = records[WARMUP_STEPS:]
    span = timed[-1]["time"] - records[WARMUP_STEPS - 1]["time"]
    all_positions = len(timed) * batch_size * seq_len
    loss_bearing = sum(r["tokens"] for r in timed)
    last = [r["loss"] for r in records[-LAST_LOSS_STEPS:]]
    return {
        "steps": len(records),
        "timed_steps": len(timed),
        "all_tokens_per_s": all_positions / span,
        "loss_tokens_per_s": loss_bearing / span,
        "waste": 1.0 - loss_bearing / all_positions,
        "final_loss": sum(last) / len(last),
        "first_loss": records[0]["loss"],
        "s_per_step": span / len(timed),
        "step_s": [round(b["time"] - a["time"], 3) for a, b in zip(records, records[1:])],  # steps 2..N
    }


def process_figures() -> dict[str, Any]:
    import torch

    return {
        **common.process_figures(START),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "dtype": "bfloat16" if use_bf16() else "float32",
    }


# ---------------------------------------------------------------------------------------------
# Mode: lmforge


def lmforge_argv(args: argparse.Namespace, output_dir: str) -> list[str]:
    """`lmforge train pretrain` flags matching the reference: no accumulation, no mid-run saves."""
    flags = {
        "dataset": args.data, "output_dir": output_dir, "max_length": args.seq_len,
        "per_device_train_batch_size": args.batch_size, "gradient_accumulation_steps": 1,
        "learning_rate": None if getattr(args, "lmforge_lr", None) == "default" else args.lr, "max_steps": args.steps, "save_steps": 1_000_000, "packing": "true",
        "report_to": "none", "disable_tqdm": "true", "plot": "false", "seed": SEED, "dtype": "auto",
        "preset": args.preset, "tokenizer_path": args.tokenizer, **model_sizes(args),
    }  # fmt: skip
    argv = [x for k, v in flags.items() if v is not None for x in (f"--{k}", str(v))]
    return argv + shlex.split(args.lmforge_flags)  # later flags win


class _PackStatsCatcher:
    """Keeps the PackStats object lmforge logs at the start of a pretrain run (dataset padding)."""

    def __init__(self) -> None:
        import logging

        self.stats = None
        self.handler = logging.Handler()
        self.handler.emit = self._emit  # type: ignore[method-assign]

    def _emit(self, record) -> None:
        for arg in record.args if isinstance(record.args, tuple) else ():
            if hasattr(arg, "padding_waste"):
                self.stats = arg


def train_lmforge(
    args: argparse.Namespace, extra_argv: list[str] = (), watch: Callable[[str], Any] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run lmforge pretrain (`extra_argv` appended: later flags win); returns its metrics.jsonl step
    records {step, loss, tokens, time (s since the training loop began), ...} and the dataset
    figures + argv. `watch(output_dir)` is called before training (bench/time_to_loss.py's stopper)."""
    import logging
    import shutil

    from lmforge.pipeline import run_train
    from lmforge.runs import MetricsLog, read_run_args

    catcher = _PackStatsCatcher()
    logger = logging.getLogger("lmforge")
    logger.addHandler(catcher.handler)
    logger.setLevel(logging.INFO)
    output_dir = tempfile.mkdtemp(prefix="lmforge-bench-")
    try:
        argv = lmforge_argv(args, output_dir) + list(extra_argv)
        if watch is not None:
            watch(output_dir)
        run_dir = run_train("pretrain", argv)
        records = [r for r in MetricsLog(run_dir).read() if "loss" in r and "tokens" in r]
        resolved = read_run_args(run_dir)  # what trained: the optimiser and rate lmforge chose
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    stats = catcher.stats
    return records, {
        "data_padding_waste": stats.padding_waste if stats is not None else None,
        "num_train_rows": stats.num_sequences if stats is not None else None,
        "argv": argv,
        "optim": resolved.get("optim"),  # None: transformers' default AdamW
        "learning_rate": resolved.get("learning_rate"),
    }


def run_lmforge(args: argparse.Namespace) -> dict[str, Any]:
    records, extra = train_lmforge(args)
    return {**summarise(records, args.batch_size, args.seq_len), **extra}


# ---------------------------------------------------------------------------------------------
# Mode: reference (MiniMind-style)


def read_texts(path: str) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                row = json.loads(line)
                if "text" not in row:
                    raise ValueError(
                        f"--data {path}: line {n} has no 'text' field (the reference mode reads "
                        "MiniMind pretrain JSONL only)"
                    )
                texts.append(row["text"])
    return texts


def padded_dataset(tokenizer, texts: list[str], seq_len: int):
    """Every document → bos + ids + eos (encode_text), cut at seq_len, padded to seq_len."""
    import torch
    from torch.utils.data import TensorDataset

    from lmforge.data.template import encode_text

    ids = torch.full((len(texts), seq_len), tokenizer.pad_token_id, dtype=torch.long)  # (N, T)
    labels = torch.full((len(texts), seq_len), -100, dtype=torch.long)  # (N, T)
    lengths = []
    for start in range(0, len(texts), 1000):
        for i, doc in enumerate(encode_text(tokenizer, texts[start : start + 1000]), start):
            doc = doc[:seq_len]
            ids[i, : len(doc)] = torch.tensor(doc)
            labels[i, : len(doc)] = ids[i, : len(doc)]
            lengths.append(len(doc))
    return TensorDataset(ids, labels), lengths


def cosine_min_lr(step: int, total: int, min_rate: float = 0.1) -> float:
    """lmforge's default schedule (transformers cosine_with_min_lr, min_lr_rate 0.1, no warm-up)."""
    return min_rate + (1 - min_rate) * 0.5 * (1 + math.cos(math.pi * step / total))


def train_reference(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The MiniMind-style loop for `args.steps` steps (a new epoch starts when the data runs out);
    returns per-step records {step, loss, tokens, time (s since the loop began)} and the dataset
    figures + `train_start` (time.time() when the loop began: imports, tokenising and model init
    happened before it)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from lmforge.data.packing import padding_waste_unpacked
    from lmforge.models.scratch import init_model
    from lmforge.models.tokenizer import load_tokenizer

    torch.set_flush_denormal(True)  # as lmforge.pipeline.flush_denormals
    torch.manual_seed(SEED)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(args.tokenizer)
    dataset, lengths = padded_dataset(tokenizer, read_texts(args.data), args.seq_len)
    model = init_model(
        tokenizer, preset=args.preset, seed=SEED, attn_implementation="sdpa", **model_sizes(args)
    ).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_min_lr(s, args.steps))
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(SEED),
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16())
    records: list[dict[str, Any]] = []
    batches = iter(loader)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        try:
            x, y = next(batches)
        except StopIteration:  # next epoch
            batches = iter(loader)
            x, y = next(batches)
        x, y = x.to(device), y.to(device)  # (B, T)
        with autocast:
            logits = model(input_ids=x).logits  # (B, T, V)
        target = y[:, 1:]  # (B, T-1): position t predicts token t+1
        loss = F.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        records.append(
            {
                "step": step,
                "loss": loss.item(),
                "tokens": int((target != -100).sum()),
                "time": time.time() - t0,
            }
        )
    return records, {
        "data_padding_waste": padding_waste_unpacked(lengths, args.seq_len),
        "num_train_rows": len(dataset),
        "train_start": t0,
    }


def run_reference(args: argparse.Namespace) -> dict[str, Any]:
    records, extra = train_reference(args)
    extra.pop("train_start")
    return {**summarise(records, args.batch_size, args.seq_len), **extra}


# ---------------------------------------------------------------------------------------------
# Parent: one subprocess per mode, then the table


def child_command(args: argparse.Namespace, mode: str) -> list[str]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--mode",
        mode,
        "--data",
        args.data,
        "--seq_len",
        str(args.seq_len),
        "--batch_size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--lr",
        str(args.lr),
    ]
    if args.preset:
        cmd += ["--preset", args.preset]
    if args.tokenizer:
        cmd += ["--tokenizer", args.tokenizer]
    if args.lmforge_flags and mode == "lmforge":
        cmd += [f"--lmforge_flags={args.lmforge_flags}"]
    for k in SIZE_FLAGS:
        if getattr(args, k) is not None:
            cmd += [f"--{k}", str(getattr(args, k))]
    return cmd


def run_child(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    cmd = child_command(args, mode)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-6000:] + proc.stdout[-2000:])
        raise SystemExit(f"bench: mode {mode} failed (exit {proc.returncode}): {shlex.join(cmd)}")
    return {"mode": mode, **json.loads(lines[-1][len(RESULT_PREFIX) :]), "command": shlex.join(cmd)}


def fastest(runs: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """The mode's run with the shortest time per step, with every run's s/step kept alongside."""
    mine = [r for r in runs if r["mode"] == mode]
    return {
        **min(mine, key=lambda r: r["s_per_step"]),
        "s_per_step_all_runs": [r["s_per_step"] for r in mine],
    }


def format_table(results: list[dict[str, Any]]) -> str:
    cuda = any("peak_cuda_mb" in r for r in results)
    head = ["mode", "steps", "all tok/s", "loss tok/s", "waste %", "peak RSS MB"]
    head += ["peak CUDA MB"] if cuda else []
    head += ["final loss", "s/step", "wall s"]
    rows = []
    for r in results:
        row = [
            r["mode"],
            str(r["steps"]),
            f"{r['all_tokens_per_s']:,.0f}",
            f"{r['loss_tokens_per_s']:,.0f}",
            f"{100 * r['waste']:.1f}",
            f"{r['peak_rss_mb']:,.0f}",
        ]
        row += [f"{r.get('peak_cuda_mb', 0):,.0f}"] if cuda else []
        row += [f"{r['final_loss']:.3f}", f"{r['s_per_step']:.3f}", f"{r['wall_s']:.1f}"]
        rows.append(row)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
    )


def header(args: argparse.Namespace, info: dict[str, Any]) -> list[str]:
    sizes = " ".join(f"{k}={v}" for k, v in model_sizes(args).items())
    gpu = f" | {info['gpu']}" if "gpu" in info else ""
    repeats = f"fastest of {args.repeats} runs per mode | " if args.repeats > 1 else ""
    flags = f" | lmforge flags: {args.lmforge_flags}" if args.lmforge_flags else ""
    return [
        f"machine: {info['platform']} | {info['usable_cores']} usable cores ({info['cpu_count']} total) | "
        f"python {info['python']} | torch {info['torch']} ({info['torch_threads']} threads){gpu}",
        f"command: {shlex.join([sys.executable, *sys.argv])}",
        f"model: preset={args.preset} {sizes} | seq_len {args.seq_len} | batch {args.batch_size} | "
        f"steps {args.steps} (first {WARMUP_STEPS} untimed) | lr {args.lr} | {repeats}data {args.data_label}{flags}",
    ]


def footnote(r: dict[str, Any]) -> str:
    pad = "n/a" if r["data_padding_waste"] is None else f"{100 * r['data_padding_waste']:.1f}%"
    runs = r["s_per_step_all_runs"]
    each = f" | s/step of each run: {', '.join(f'{x:.3f}' for x in runs)}" if len(runs) > 1 else ""
    return (
        f"{r['mode']}: {r['num_train_rows']} train rows, dataset padding {pad} | first loss "
        f"{r['first_loss']:.3f} | {r['device']} {r['dtype']}, {r['torch_threads']} threads, "
        f"{r['cpu_busy']:.2f} CPU s per s, load avg {r['load_1m']:.2f} at the end{each}"
    )


def report(args: argparse.Namespace, results: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [*header(args, info), "", format_table(results), ""]
    lines += [footnote(r) for r in results]
    lines.append(
        "both modes run with torch.set_flush_denormal(True) (lmforge sets it on CPU), so the gap is "
        "packing + training loop, not denormal arithmetic"
    )
    busy = [r["mode"] for r in results if (r.get("load_1m") or 0) > info["usable_cores"] + 0.5]
    if busy:
        lines.append(
            f"WARNING: load average above the core count during {', '.join(busy)}: other processes "
            "competed for the CPU and the timings are not reliable; rerun on an idle machine"
        )
    if len(results) == 2:
        lm, ref = (next(r for r in results if r["mode"] == m) for m in MODES)
        ratio = {k: lm[k] / ref[k] for k in ("loss_tokens_per_s", "all_tokens_per_s", "peak_rss_mb")}
        lines.append(
            f"lmforge / reference: loss-bearing tokens/s x{ratio['loss_tokens_per_s']:.2f}, "
            f"all tokens/s x{ratio['all_tokens_per_s']:.2f}, peak RSS x{ratio['peak_rss_mb']:.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mode:
        if args.data is None:
            raise SystemExit("bench: --mode needs --data")
        result = {
            **(run_lmforge(args) if args.mode == "lmforge" else run_reference(args)),
            **process_figures(),
        }
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return
    args.data_label = args.data or "lmforge.data.synth(scale=1.0) pretrain.jsonl"
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-data-") as tmp:
        if args.data is None:
            from lmforge.data.synth import synth

            args.data = synth(tmp, scale=1.0)["pretrain"]
        runs = [run_child(args, mode) for _ in range(args.repeats) for mode in args.modes]
        results = [fastest(runs, mode) for mode in args.modes]
        info = common.machine()
        print(report(args, results, info))
    if args.json:
        payload = {
            "machine": info,
            "command": shlex.join([sys.executable, *sys.argv]),
            "args": vars(args),
            "results": results,
            "all_runs": runs,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
