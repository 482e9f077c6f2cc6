"""SFT throughput and memory: lmforge's real SFT path vs a plain transformers Trainer.

Both modes fine-tune the same from-scratch model (lmforge's `init_model`, same sizes, tokenizer and
seed 42) on the same chat rows, tokenised the same way (lmforge's chat template, loss on assistant
tokens only, cut at `--max_length`), for the same number of optimizer steps with the same batch
size, learning rate and schedule (cosine to 0.1 x lr, no warm-up, no weight decay), AdamW (fused:
transformers' default on torch >= 2.8, in both modes) and gradient clipping at 1.0, no gradient
accumulation. What differs is how a batch is made and run:

- lmforge    `lmforge.pipeline.run_train("sft", ...)` with lmforge's defaults: padding-free
             batches (the batch's conversations laid end to end in rows of at most
             `--max_length` tokens, position ids restarting per conversation so nothing attends
             across them, no padding between them), the chunked loss (`--loss_chunk_size 1024`:
             no (batch, length, vocab) logits, prompt positions never reach the head),
             LmforgeTrainer. Each step holds the same conversations as the hf mode's, so both
             runs see the same data in the same order. `--lmforge_flags "..."` adds or overrides
             flags, e.g. "--packing true" (full packed rows: more conversations per step) or
             "--padding_free false --loss_chunk_size 0" (the plain path). Loss and tokens come
             from metrics.jsonl, batch positions from the trainer's inputs.
- hf         `transformers.Trainer` with `DataCollatorForSeq2Seq` (each batch right-padded to its
             longest row, attention mask), the usual recipe. The subclass only counts tokens.

Each mode runs in its own subprocess, so memory is per mode. The first 2 steps are warm-up and
untimed. Figures per mode:

  tokens_per_s       loss-bearing (assistant) tokens per second: the figure to compare
  positions_per_s    batch positions (padding included) per second: raw compute
  waste              1 - loss-bearing / positions over the timed steps
  train_rss_mb       training memory: peak RSS during training minus RSS just before the first
                     step (imports, data, model already loaded; freed heap returned to the OS
                     first) - the CPU analogue of CUDA's max_memory_allocated, what a bigger batch,
                     sequence or model pays for. `memory_ratio` (lmforge / hf) is judged on it.
  peak_rss_mb        max resident memory of the whole process (imports and data included)
  train_cuda_mb      (CUDA only) peak allocated GPU memory during training minus before it;
                     `memory_ratio` is judged on this one on a GPU
  peak_cuda_mb       (CUDA only) max allocated GPU memory

Output: ONE JSON line on stdout {"lmforge": {...}, "hf": {...}, "speedup_tokens_per_s",
"memory_ratio", "memory_measure", "peak_rss_ratio", "machine", "command"}; progress goes to stderr.
`--quick` is a tiny model and a few steps, for tests. On a shared machine other processes only
slow a run down: compare the modes of one run, and use `--repeats 3` (each mode's fastest run is
kept) for figures you intend to quote; pass `--threads 1` on a busy machine (two threads on two
busy cores wait on each other at every op: the HF mode's short padded batches then ran ~5x slower
here, lmforge's full rows ~1.5x).

    python bench/sft.py                       # 192 hidden, 4 layers, max_length 256, batch 16, 30 steps
    python bench/sft.py --quick
    python bench/sft.py --threads 1 --repeats 3   # on a shared machine
    python bench/sft.py --lmforge_flags "--packing true"   # lmforge with packed rows
    python bench/sft.py --data my_sft.jsonl --preset minimind2-small --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from typing import Any

import common

START = time.time()
WARMUP_STEPS = 2
SEED = 42
RESULT_PREFIX = "BENCH_RESULT "
MODES = ("lmforge", "hf")
SIZES = {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 6, "num_key_value_heads": 2}
FULL = {"steps": 30, "batch_size": 16, "max_length": 256}
QUICK_SIZES = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="chat JSONL (default: lmforge.data.synth sft.jsonl)")
    p.add_argument("--preset", help="an lmforge preset instead of the size flags")
    for k in SIZES:
        p.add_argument(f"--{k}", type=int)
    p.add_argument("--max_length", type=int, help="default 256 (--quick: 128)")
    p.add_argument("--batch_size", type=int, help="default 16 (--quick: 4)")
    p.add_argument("--steps", type=int, help="default 30 (--quick: 5)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch threads in each mode (default: torch's own)")
    p.add_argument("--quick", action="store_true", help="tiny model, 5 steps, batch 4 (tests)")
    p.add_argument(
        "--lmforge_flags", default="", help='extra `lmforge train sft` flags, e.g. "--packing false"'
    )
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    defaults = {"steps": 5, "batch_size": 4, "max_length": 128} if args.quick else FULL
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.steps <= WARMUP_STEPS:
        p.error(f"--steps must be more than {WARMUP_STEPS} (the untimed warm-up)")
    return args


def model_sizes(args: argparse.Namespace) -> dict[str, int]:
    """Size flags: the given ones over the defaults (none with a preset: its own sizes)."""
    base = {} if args.preset else (QUICK_SIZES if args.quick else SIZES)
    given = {k: getattr(args, k) for k in SIZES if getattr(args, k) is not None}
    return {**base, **given}


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures from per-step records {loss, tokens, positions, time (end of step, s)}."""
    timed = records[WARMUP_STEPS:]
    span = timed[-1]["time"] - records[WARMUP_STEPS - 1]["time"]
    tokens, positions = sum(r["tokens"] for r in timed), sum(r["positions"] for r in timed)
    return {
        "steps": len(records),
        "tokens_per_s": tokens / span,
        "positions_per_s": positions / span,
        "waste": 1.0 - tokens / positions,
        "s_per_step": span / len(timed),
        "first_loss": records[0]["loss"],
        "last_loss": records[-1]["loss"],
    }


def _proc_status() -> dict[str, int]:
    """VmRSS / VmHWM of this process in KiB (Linux); {} elsewhere."""
    import re

    try:
        text = open("/proc/self/status", encoding="ascii").read()
    except OSError:
        return {}
    return {k: int(v) for k, v in re.findall(r"(Vm\w+):\s+(\d+) kB", text)}


class TrainingMemory:
    """Memory used by training itself: call `start()` right before the first step (frees what
    can be freed, resets the kernel's RSS high-water mark and CUDA's peak counter), read
    `figures()` after the last step."""

    def __init__(self):
        self.rss0 = self.cuda0 = None

    def start(self) -> None:
        import ctypes
        import gc

        import torch

        gc.collect()
        try:  # hand freed heap back to the OS, so RSS before training is what is really in use
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        try:  # "5": reset VmHWM to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.rss0 = _proc_status().get("VmRSS")
        except OSError:
            self.rss0 = None
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.cuda0 = torch.cuda.memory_allocated()

    def figures(self) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {}
        if self.rss0 is not None:
            hwm = _proc_status().get("VmHWM", 0)
            out["train_rss_mb"] = (hwm - self.rss0) / 2**10
            out["rss_before_train_mb"] = self.rss0 / 2**10
        if self.cuda0 is not None:
            out["train_cuda_mb"] = (torch.cuda.max_memory_allocated() - self.cuda0) / 2**20
        return out


MEMORY = TrainingMemory()


def memory_callback():
    from transformers import TrainerCallback

    class StartMemory(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            MEMORY.start()

    return StartMemory()


def process_figures() -> dict[str, Any]:
    return {**common.process_figures(START), **MEMORY.figures()}


def train_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings both modes share, as `lmforge train sft` flags."""
    return {
        "max_length": args.max_length, "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1, "learning_rate": args.lr, "max_steps": args.steps,
        "seed": SEED, "preset": args.preset, **model_sizes(args),
    }  # fmt: skip


def run_lmforge(args: argparse.Namespace) -> dict[str, Any]:
    import lmforge.training.build as build
    from lmforge.pipeline import run_train
    from lmforge.runs import MetricsLog

    positions: list[int] = []
    make_trainer = build.default_trainer

    def counted_trainer(ctx):  # the stage's own trainer, plus the memory probe and a position count
        trainer = make_trainer(ctx)
        trainer.add_callback(memory_callback())
        step = trainer.training_step

        def training_step(model, inputs, num_items_in_batch=None):
            positions.append(inputs["input_ids"].numel())
            return step(model, inputs, num_items_in_batch)

        trainer.training_step = training_step
        return trainer

    build.default_trainer = counted_trainer
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-sft-") as out:
        flags = {
            "dataset": args.data, "output_dir": out, "save_steps": 1_000_000, "from_weight": "none",
            "report_to": "none", "disable_tqdm": "true", "plot": "false", **train_flags(args),
        }  # fmt: skip
        argv = [x for k, v in flags.items() if v is not None for x in (f"--{k}", str(v))]
        run_dir = run_train("sft", argv + shlex.split(args.lmforge_flags))  # later flags win
        rows = [r for r in MetricsLog(run_dir).read() if "tokens" in r]
    if len(positions) != len(rows):
        raise SystemExit(f"bench: {len(positions)} micro-batches for {len(rows)} steps")
    return summarise([{**r, "positions": n} for r, n in zip(rows, positions)])


def run_hf(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments, set_seed

    from lmforge.data.chat import encode_chat_batch
    from lmforge.data.load import load_rows
    from lmforge.models.scratch import init_model
    from lmforge.models.tokenizer import load_tokenizer

    torch.set_flush_denormal(True)  # as lmforge does on CPU: compare loops, not denormal arithmetic
    tok = load_tokenizer()
    rows, _ = load_rows(args.data, "chat", seed=SEED)

    def encode(batch):
        items = [{"messages": m, "tools": t} for m, t in zip(batch["messages"], batch["tools"])]
        return encode_chat_batch(tok, items, max_length=args.max_length)

    ds = rows.map(encode, batched=True, remove_columns=rows.column_names)
    ds = ds.filter(lambda b: [any(x != -100 for x in lab) for lab in b["labels"]], batched=True)
    set_seed(SEED)
    model = init_model(tok, preset=args.preset, seed=SEED, attn_implementation="sdpa", **model_sizes(args))
    records: list[dict[str, Any]] = []
    step = {"tokens": 0, "positions": 0, "loss": 0.0}
    t0 = time.time()

    class CountingTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            step["tokens"] += int((inputs["labels"] != -100).sum())
            step["positions"] += inputs["input_ids"].numel()
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            step["loss"] += float((loss[0] if return_outputs else loss).detach())
            return loss

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            records.append({**step, "time": time.time() - t0})
            step.update(tokens=0, positions=0, loss=0.0)

    with tempfile.TemporaryDirectory(prefix="hf-bench-sft-") as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
            learning_rate=args.lr, max_steps=args.steps, lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": 0.1}, weight_decay=0.0, max_grad_norm=1.0,
            save_strategy="no", report_to="none", disable_tqdm=True, seed=SEED, logging_steps=1_000_000,
            bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(), dataloader_pin_memory=False,
        )  # fmt: skip
        collator = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)
        trainer = CountingTrainer(model=model, args=targs, train_dataset=ds, data_collator=collator)
        trainer.add_callback(Clock())
        trainer.add_callback(memory_callback())
        trainer.train()
    return summarise(records)


def run_child(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--mode", mode, "--data", args.data]
    cmd += ["--max_length", str(args.max_length), "--batch_size", str(args.batch_size)]
    cmd += ["--steps", str(args.steps), "--lr", str(args.lr)] + (["--quick"] if args.quick else [])
    cmd += ["--threads", str(args.threads)] if args.threads else []
    cmd += [f"--lmforge_flags={args.lmforge_flags}"] if args.lmforge_flags else []
    for k, v in {"preset": args.preset, **{k: getattr(args, k) for k in SIZES}}.items():
        cmd += [f"--{k}", str(v)] if v is not None else []
    return common.run_child(cmd, mode, RESULT_PREFIX)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mode:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        result = run_lmforge(args) if args.mode == "lmforge" else run_hf(args)
        print(RESULT_PREFIX + json.dumps({**result, **process_figures()}), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-data-") as tmp:
        if args.data is None:
            from lmforge.data.synth import synth

            args.data = synth(tmp, scale=0.2 if args.quick else 1.0)["sft"]
        runs = {m: [run_child(args, m) for _ in range(args.repeats)] for m in MODES}
    best = {m: min(r, key=lambda x: x["s_per_step"]) for m, r in runs.items()}
    lm, hf = best["lmforge"], best["hf"]
    # judged on training memory (CUDA's on a GPU); whole-process peak RSS reported next to it
    mem = next((k for k in ("train_cuda_mb", "train_rss_mb") if k in lm and k in hf), "peak_rss_mb")
    import torch

    report = {
        **best,
        "speedup_tokens_per_s": lm["tokens_per_s"] / hf["tokens_per_s"],
        "memory_ratio": lm[mem] / hf[mem],
        "memory_measure": mem,
        "peak_rss_ratio": lm["peak_rss_mb"] / hf["peak_rss_mb"],
    }
    common.emit(report)


if __name__ == "__main__":
    main()
