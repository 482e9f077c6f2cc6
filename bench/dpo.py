"""DPO throughput and memory: lmforge's real DPO path vs plain TRL `DPOTrainer` with its defaults.

Every mode starts from the same saved model (a from-scratch lmforge `init_model`: same sizes,
tokenizer and seed 42, written to a folder once, since DPO always starts from a saved model and TRL
loads its reference model from the policy's folder) and trains on the same preference pairs
(`lmforge.data.synth` dpo.jsonl: `{chosen, rejected}` chats sharing their user turn) for the same
number of optimizer steps with the same batch size (pairs), learning rate, beta 0.1, sigmoid loss,
AdamW and gradient clipping at 1.0. The modes:

- lmforge            `lmforge.pipeline.run_train("dpo", [...])`, what `lmforge train dpo` runs:
                     TRL's DPOTrainer under lmforge's trainer mixin (NaN guard, exact per-step
                     metrics, atomic checkpoints) and lmforge's defaults (cosine schedule to
                     0.1 x lr, no weight decay, fp32 on CPU / bf16 on GPUs that have it).
- lmforge_precompute the same with `--precompute_ref_log_probs true`: the reference log-probs are
                     computed once before training (a forward pass over the whole dataset, counted
                     in wall_s and prep_s, not in the step figures), so no reference model is held
                     or run during training.
- trl                the recipe a user writes by hand: `load_dataset("json", ...)`,
                     `AutoModelForCausalLM.from_pretrained(DIR)`, `DPOConfig(output_dir,
                     per_device_train_batch_size, max_steps, learning_rate, bf16=<GPU has bf16>)`
                     and `DPOTrainer(model, args, train_dataset, processing_class)`. Everything else
                     is TRL's default (linear schedule, gradient checkpointing on, max_length 1024,
                     padding to the longest row of the batch, reference model loaded from DIR).
                     `bf16` is the one field set beyond the obvious: DPOConfig defaults it to True
                     and refuses to start on a CPU without it.

Each mode runs in its own subprocess, so memory is per mode. The first 2 steps are warm-up and
untimed. The same measuring hooks wrap `transformers.Trainer.training_step` (token counts and the
step loss) and the callback handler (clock, memory) in every mode. Figures per mode:

  pairs_per_s        preference pairs per second
  tokens_per_s       real (non-pad) tokens of chosen + rejected sequences, prompts included
  completion_tokens_per_s  chosen + rejected answer tokens (what the loss is computed on)
  positions_per_s    batch positions, padding included: raw compute
  s_per_step         seconds per optimizer step after warm-up (s_per_step_median: the median
                     step, less sensitive to other processes' bursts on a shared machine)
  peak_rss_mb        max resident memory of the mode's process (imports, data, models)
  train_mem_mb       peak RSS during training minus RSS just before the first step (sampled
                     every 5 ms): optimizer states, activations, logits
  first_loss, last_loss  the loss of the first and of the last step (step 1 is log 2 = 0.693
                     whenever the reference equals the starting model)
  prep_s             subprocess start to the first step: imports, tokenising, model loads and
                     (lmforge_precompute) the reference pass
  wall_s             the whole subprocess

Output: ONE JSON line on stdout {"<mode>": {...}, ..., "speedup_pairs_per_s" (lmforge / trl),
"train_mem_ratio" (lmforge / trl), the same two for lmforge_precompute, "machine", "command",
"date"}; progress goes to stderr. `--quick` is a tiny model and a few steps, for tests. On a shared
machine other processes only slow a run down, and a whole run at a time (here a process's steps sat
at ~0.16 s or ~0.25 s depending on where it was scheduled): use `--repeats 5` (each mode's fastest
run is kept; all runs' s/step are in "s_per_step_all_runs") and `--threads 1`.

    python bench/dpo.py                              # 192 hidden, 4 layers, batch 8 pairs, 30 steps, lr 1e-3
    python bench/dpo.py --quick
    python bench/dpo.py --threads 1 --repeats 5      # on a shared machine
    python bench/dpo.py --modes lmforge,trl --data my_pairs.jsonl --preset minimind2-small --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import common

START = time.time()
WARMUP_STEPS = 2
SEED = 42
RESULT_PREFIX = "BENCH_RESULT "
MODES = ("lmforge", "lmforge_precompute", "trl")
SIZES = {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 6, "num_key_value_heads": 2}
FULL = {"steps": 30, "batch_size": 8}
QUICK_SIZES = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--data", help="preference JSONL {chosen, rejected} (default: lmforge.data.synth dpo.jsonl)"
    )
    p.add_argument("--preset", help="an lmforge preset instead of the size flags")
    for k in SIZES:
        p.add_argument(f"--{k}", type=int)
    p.add_argument("--batch_size", type=int, help="pairs per step, default 8 (--quick: 4)")
    p.add_argument("--steps", type=int, help="default 30 (--quick: 5)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (%(default)s)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated, from: " + ", ".join(MODES))
    p.add_argument("--repeats", type=int, default=1, help="runs per mode; the fastest is kept")
    p.add_argument("--threads", type=int, help="torch threads in each mode (default: torch's own)")
    p.add_argument("--quick", action="store_true", help="tiny model, 5 steps, 4 pairs a step (tests)")
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # child process
    p.add_argument("--model_dir", help=argparse.SUPPRESS)  # child process: the saved starting model
    args = p.parse_args(argv)
    defaults = {"steps": 5, "batch_size": 4} if args.quick else FULL
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.steps <= WARMUP_STEPS:
        p.error(f"--steps must be more than {WARMUP_STEPS} (the untimed warm-up)")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in args.modes if m not in MODES]
    if bad or not args.modes:
        p.error(f"--modes: unknown {bad}; choose from {', '.join(MODES)}")
    return args


def model_sizes(args: argparse.Namespace) -> dict[str, int]:
    """Size flags: the given ones over the defaults (none with a preset: its own sizes)."""
    base = {} if args.preset else (QUICK_SIZES if args.quick else SIZES)
    given = {k: getattr(args, k) for k in SIZES if getattr(args, k) is not None}
    return {**base, **given}


def make_model(args: argparse.Namespace, out_dir: str) -> str:
    """The from-scratch starting model and its tokenizer, saved once for every mode."""
    from lmforge.models.scratch import init_model
    from lmforge.models.tokenizer import load_tokenizer

    tok = load_tokenizer()
    model = init_model(tok, preset=args.preset, seed=SEED, attn_implementation="sdpa", **model_sizes(args))
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


# --- measuring (the same hooks in every mode) ------------------------------------------------------


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Meter:
    """Per-step records and the memory of the training loop, hooked into transformers' Trainer."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.step = {"pairs": 0, "tokens": 0, "completion_tokens": 0, "positions": 0, "loss": 0.0}
        self.t0 = 0.0
        self.train_begin = 0.0
        self.rss_before = 0.0
        self.rss_peak = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def install(self) -> None:
        from transformers import Trainer
        from transformers.trainer_callback import CallbackHandler

        meter, inner_step = self, Trainer.training_step
        inner_begin, inner_end, inner_train_end = (
            CallbackHandler.on_train_begin,
            CallbackHandler.on_step_end,
            CallbackHandler.on_train_end,
        )

        def training_step(trainer, model, inputs, *a, **kw):
            ids = inputs["input_ids"]
            meter.step["pairs"] += ids.shape[0] // 2  # rows are [chosen..., rejected...]
            meter.step["positions"] += ids.numel()
            meter.step["tokens"] += int(inputs["attention_mask"].sum())
            meter.step["completion_tokens"] += int(inputs["completion_mask"].sum())
            loss = inner_step(trainer, model, inputs, *a, **kw)
            meter.step["loss"] += float(loss.detach())
            return loss

        def on_train_begin(handler, *a, **kw):
            meter.start()
            return inner_begin(handler, *a, **kw)

        def on_step_end(handler, *a, **kw):
            meter.records.append({**meter.step, "time": time.perf_counter() - meter.t0})
            meter.step = dict.fromkeys(meter.step, 0)
            meter.step["loss"] = 0.0
            return inner_end(handler, *a, **kw)

        def on_train_end(handler, *a, **kw):
            meter.stop()
            return inner_train_end(handler, *a, **kw)

        Trainer.training_step = training_step
        CallbackHandler.on_train_begin = on_train_begin
        CallbackHandler.on_step_end = on_step_end
        CallbackHandler.on_train_end = on_train_end

    def start(self) -> None:
        self.train_begin = time.time()
        self.rss_before = self.rss_peak = current_rss_mb()
        self.t0 = time.perf_counter()

        def sample():
            while not self._stop.wait(0.005):
                self.rss_peak = max(self.rss_peak, current_rss_mb())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.rss_peak = max(self.rss_peak, current_rss_mb())

    def summary(self) -> dict[str, Any]:
        records = self.records
        if len(records) <= WARMUP_STEPS:
            raise SystemExit(f"bench: only {len(records)} steps ran")
        timed = records[WARMUP_STEPS:]
        span = timed[-1]["time"] - records[WARMUP_STEPS - 1]["time"]
        total = {k: sum(r[k] for r in timed) for k in ("pairs", "tokens", "completion_tokens", "positions")}
        return {
            "steps": len(records),
            "pairs_per_s": total["pairs"] / span,
            "tokens_per_s": total["tokens"] / span,
            "completion_tokens_per_s": total["completion_tokens"] / span,
            "positions_per_s": total["positions"] / span,
            "waste": 1.0 - total["tokens"] / total["positions"],
            "s_per_step": span / len(timed),
            "s_per_step_median": statistics.median(b["time"] - a["time"] for a, b in zip(records[1:], timed)),
            "train_mem_mb": self.rss_peak - self.rss_before,
            "rss_before_train_mb": self.rss_before,
            "first_loss": records[0]["loss"],
            "last_loss": records[-1]["loss"],
            "prep_s": self.train_begin - START,
        }


# --- the modes --------------------------------------------------------------------------------------


def run_lmforge(args: argparse.Namespace, precompute: bool) -> None:
    from lmforge.pipeline import run_train

    with tempfile.TemporaryDirectory(prefix="lmforge-bench-dpo-") as out:
        flags = {
            "model_name_or_path": args.model_dir, "dataset": args.data, "output_dir": out,
            "per_device_train_batch_size": args.batch_size, "gradient_accumulation_steps": 1,
            "learning_rate": args.lr, "max_steps": args.steps, "seed": SEED, "save_steps": 1_000_000,
            "report_to": "none", "disable_tqdm": "true", "plot": "false",
            "precompute_ref_log_probs": "true" if precompute else "false",
        }  # fmt: skip
        run_train("dpo", [x for k, v in flags.items() for x in (f"--{k}", str(v))])


def run_trl(args: argparse.Namespace) -> None:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir)
    ds = load_dataset("json", data_files=args.data, split="train")
    with tempfile.TemporaryDirectory(prefix="trl-bench-dpo-") as out:
        config = DPOConfig(
            output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
            learning_rate=args.lr, bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
            report_to="none", save_strategy="no", disable_tqdm=True, seed=SEED,
        )  # fmt: skip
        DPOTrainer(model=model, args=config, train_dataset=ds, processing_class=tok).train()


def run_child(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--mode", mode, "--data", args.data]
    cmd += ["--model_dir", args.model_dir, "--batch_size", str(args.batch_size)]
    cmd += ["--steps", str(args.steps), "--lr", str(args.lr)] + (["--quick"] if args.quick else [])
    cmd += ["--threads", str(args.threads)] if args.threads else []
    result = common.run_child(cmd, mode, RESULT_PREFIX)
    print(
        f"bench: {mode}: {result['s_per_step']:.3f} s/step, {result['pairs_per_s']:.1f} pairs/s, "
        f"train mem {result['train_mem_mb']:.0f} MB",
        file=sys.stderr,
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mode:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        meter = Meter()
        meter.install()
        if args.mode == "trl":
            run_trl(args)
        else:
            run_lmforge(args, precompute=args.mode == "lmforge_precompute")
        print(RESULT_PREFIX + json.dumps({**meter.summary(), **common.process_figures(START)}), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-dpo-data-") as tmp:
        if args.data is None:
            from lmforge.data.synth import synth

            args.data = synth(tmp, scale=0.1 if args.quick else 1.0)["dpo"]
        args.model_dir = make_model(args, str(Path(tmp) / "start"))
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.modes}
        for _ in range(args.repeats):  # alternate the modes, so a busy spell hits them all alike
            for m in args.modes:
                runs[m].append(run_child(args, m))
    best = {m: min(r, key=lambda x: x["s_per_step"]) for m, r in runs.items()}
    report: dict[str, Any] = {"bench": "dpo", **best}
    if "trl" in best:
        base = best["trl"]
        mem = "peak_cuda_mb" if "peak_cuda_mb" in base else "train_mem_mb"
        for m in ("lmforge", "lmforge_precompute"):
            if m in best:
                suffix = "" if m == "lmforge" else "_precompute"
                report[f"speedup_pairs_per_s{suffix}"] = best[m]["pairs_per_s"] / base["pairs_per_s"]
                report[f"train_mem_ratio{suffix}"] = best[m][mem] / base[mem] if base[mem] > 0 else None
                report[f"peak_rss_ratio{suffix}"] = best[m]["peak_rss_mb"] / base["peak_rss_mb"]
        report["memory_measure"] = mem
    report.update(
        s_per_step_all_runs={m: [round(r["s_per_step"], 4) for r in rs] for m, rs in runs.items()},
        model=f"init_model({args.preset or model_sizes(args)})",
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        threads=args.threads,
        repeats=args.repeats,
    )
    common.emit(report)


if __name__ == "__main__":
    main()
