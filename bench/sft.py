"""SFT throughput and memory: lmforge's real SFT path vs TRL's `SFTTrainer` (and a plain Trainer).

All modes fine-tune the same from-scratch model (lmforge's `init_model`, same sizes, tokenizer and
seed 42, sdpa attention) on the same chat rows, tokenised the same way (lmforge's chat template,
loss on assistant tokens only, cut at `--max_length`), for the same number of optimizer steps with
the same batch size, learning rate and schedule (cosine to 0.1 x lr, no warm-up, no weight decay),
AdamW (fused: transformers' default on torch >= 2.8, in every mode), gradient clipping at 1.0, no
gradient accumulation, no gradient checkpointing, float32 on CPU (bf16 autocast on a bf16 GPU).
Every step holds the same conversations in every mode (same rows, same seeded sampler), so the
loss-bearing tokens of each step (`step_tokens`) are equal across modes and the losses agree.
What differs is how a batch is made and run:

- lmforge    `lmforge.pipeline.run_train("sft", ...)` with lmforge's defaults: padding-free
             batches (the batch's conversations laid end to end in rows of at most
             `--max_length` tokens, position ids restarting per conversation so nothing attends
             across them, no padding between them), the chunked loss (`--loss_chunk_size 1024`:
             no (batch, length, vocab) logits, prompt positions never reach the head),
             LmforgeTrainer. `--lmforge_flags "..."` adds or overrides flags, e.g.
             "--packing true" (full packed rows: more conversations per step) or
             "--padding_free false --loss_chunk_size 0" (the plain path). Loss and tokens come
             from metrics.jsonl, batch positions from the trainer's inputs.
- trl        (the baseline) `trl.SFTTrainer` (trl 1.16) with its fastest settings that run on
             CPU: `padding_free=True` (its collator lays the batch's conversations end to end in
             ONE row with per-conversation position ids; transformers builds the block-causal
             sdpa mask from them), `max_length=None` (padding-free without packing requires it;
             the rows come already cut), `packing=False` (so a step holds the same conversations
             as the other modes'), `gradient_checkpointing=False` (SFTConfig's default is True),
             `loss_type="nll"`: SFTTrainer always patches in its fused, chunked LM head
             (`add_fused_lm_head`: per-token log-probs in vocabulary tiles, no full logits;
             "chunked_nll" is a deprecated alias). Data: lmforge's `input_ids` plus an
             `assistant_masks` column (1 where lmforge has a label), from which SFTTrainer builds
             its own labels. `--trl_config '{"packing": true}'` (JSON SFTConfig overrides) runs
             TRL's best-fit-decreasing packing instead (rows of `--max_length`: more
             conversations per step, compare with lmforge's "--packing true").
- hf         `transformers.Trainer` with `DataCollatorForSeq2Seq` (each batch right-padded to its
             longest row, attention mask), the usual recipe before SFTTrainer. `--modes` picks
             the modes (default all three; lmforge and one baseline at least).

TRL options not used: `assistant_only_loss=True` needs a conversational dataset and a chat
template with `{% generation %}` markers; lmforge's ChatML has none and TRL cannot patch it
("patching is not supported for this template"), and re-tokenising in TRL would change the
loss-bearing tokens, hence the `assistant_masks` column. `padding_free=True` with `max_length` set
raises (padding-free without packing does not truncate). `use_liger_kernel` is deprecated and Triton
only; `model_init_kwargs={"use_kernels": True}` applies to a model TRL loads itself and needs Hub
kernels; `activation_offloading` offloads to the CPU we already run on. On CPU (no Triton) TRL's
fused head scores every position of the row and masks afterwards (on a Triton GPU only labelled
ones), and its one padding-free row is attended over whole (quadratic in the batch's tokens).

Each mode runs in its own subprocess, so memory is per mode. The first 2 steps are warm-up and
untimed. Figures per mode:

  tokens_per_s       loss-bearing (assistant) tokens per second: the figure to compare
  positions_per_s    batch positions (padding included) per second: raw compute
  waste              1 - loss-bearing / positions over the timed steps
  train_rss_mb       training memory: peak RSS during training minus RSS just before the first
                     step (imports, data, model already loaded; freed heap returned to the OS
                     first) - the CPU analogue of CUDA's max_memory_allocated, what a bigger batch,
                     sequence or model pays for. `memory_ratio` (lmforge / trl) is judged on it.
  peak_rss_mb        max resident memory of the whole process (imports and data included)
  train_cuda_mb      (CUDA only) peak allocated GPU memory during training minus before it;
                     `memory_ratio` is judged on this one on a GPU
  peak_cuda_mb       (CUDA only) max allocated GPU memory

Output: ONE JSON line on stdout {"lmforge": {...}, "trl": {...}, "hf": {...}, "baseline": "trl",
"speedup_tokens_per_s", "memory_ratio", "memory_measure", "peak_rss_ratio" (lmforge / trl), the same
four with `_vs_hf` (lmforge / hf), "goal" (lmforge >= 1.5x assistant tokens/s at <= 0.7x training
memory vs TRL SFTTrainer: met / not met), "machine", "command"}; progress goes to stderr. Without
the trl mode, the plain keys compare with hf.

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
    python bench/sft.py --threads 1 --steps 12 --modes lmforge,trl   # lmforge vs TRL only
    python bench/sft.py --trl_config '{"packing": true}' --lmforge_flags "--packing true"   # both packed
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
MODES = ("lmforge", "trl", "hf")
BASELINE = "trl"  # speedup_tokens_per_s and memory_ratio are lmforge / this mode
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
    p.add_argument(
        "--trl_config",
        default="",
        help="JSON SFTConfig overrides for the trl mode, e.g. '{\"packing\": true}'",
    )
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {','.join(MODES)}")
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "lmforge" not in args.modes or not set(args.modes) & {"trl", "hf"} or set(args.modes) - set(MODES):
        p.error(f"--modes: lmforge and at least one of trl, hf (got {args.modes})")
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
        "step_tokens": [r["tokens"] for r in records],  # loss-bearing tokens of each step, warm-up included
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


def _hf_data_and_model(args: argparse.Namespace):
    """The tokenizer, lmforge's tokenisation of the rows (input_ids + labels, -100 off assistant
    tokens, cut at --max_length, rows with no label dropped) and the seeded model: what the hf and
    trl modes share with lmforge's own run."""
    import torch
    from transformers import set_seed

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
    return tok, ds, model


def _shared_training_args(args: argparse.Namespace, out: str) -> dict[str, Any]:
    """The `TrainingArguments` every mode shares (lmforge sets the same through its flags)."""
    import torch

    return dict(
        output_dir=out, per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        learning_rate=args.lr, max_steps=args.steps, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1}, weight_decay=0.0, max_grad_norm=1.0,
        save_strategy="no", report_to="none", disable_tqdm=True, seed=SEED, logging_steps=1_000_000,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(), dataloader_pin_memory=False,
    )  # fmt: skip


def _counting(trainer_cls):
    """`trainer_cls` counting loss-bearing tokens, batch positions and loss per step, and the
    callback that closes a step's record."""
    from transformers import TrainerCallback

    records: list[dict[str, Any]] = []
    step = {"tokens": 0, "positions": 0, "loss": 0.0}
    t0 = time.time()

    class Counting(trainer_cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # labels are unshifted (HF convention): the first token of a row never carries loss
            step["tokens"] += int((inputs["labels"][:, 1:] != -100).sum())
            step["positions"] += inputs["input_ids"].numel()
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            step["loss"] += float((loss[0] if return_outputs else loss).detach())
            return loss

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            records.append({**step, "time": time.time() - t0})
            step.update(tokens=0, positions=0, loss=0.0)

    return Counting, Clock(), records


def run_hf(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    tok, ds, model = _hf_data_and_model(args)
    trainer_cls, clock, records = _counting(Trainer)
    with tempfile.TemporaryDirectory(prefix="hf-bench-sft-") as out:
        targs = TrainingArguments(**_shared_training_args(args, out))
        collator = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)
        trainer = trainer_cls(model=model, args=targs, train_dataset=ds, data_collator=collator)
        trainer.add_callback(clock)
        trainer.add_callback(memory_callback())
        trainer.train()
    return summarise(records)


# TRL SFTTrainer's fastest settings that run on CPU with sdpa (trl 1.16; see the module docstring)
TRL_DEFAULTS = {
    "padding_free": True,  # the batch's conversations end to end in ONE row, position ids per conversation
    "max_length": None,  # required by padding_free without packing: rows come already cut at --max_length
    "packing": False,  # packing=True (bfd) puts more conversations in a step: `--trl_config '{"packing": true}'`
    "gradient_checkpointing": False,  # SFTConfig's default is True (slower); the other modes don't checkpoint
    "loss_type": "nll",  # the fused, chunked LM head (always on in trl 1.16; "chunked_nll" is its old alias)
    "dataset_num_proc": None,
}


def trl_config(args: argparse.Namespace) -> dict[str, Any]:
    """SFTConfig overrides: TRL_DEFAULTS, then `--trl_config` (JSON); packing needs a row length."""
    cfg = {**TRL_DEFAULTS, **json.loads(args.trl_config or "{}")}
    if cfg.get("packing") and cfg.get("max_length") is None:
        cfg["max_length"] = args.max_length
    return cfg


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    from trl import SFTConfig, SFTTrainer

    tok, ds, model = _hf_data_and_model(args)
    # lmforge's loss-bearing tokens as TRL's own mask column: SFTTrainer builds its labels from it
    # (labels = input_ids where assistant_masks is 1, else -100); `assistant_only_loss=True` itself
    # needs a conversational dataset and a {% generation %} template, which lmforge's ChatML lacks
    ds = ds.map(
        lambda b: {"assistant_masks": [[int(x != -100) for x in lab] for lab in b["labels"]]},
        batched=True, remove_columns=["labels"],
    )  # fmt: skip
    trainer_cls, clock, records = _counting(SFTTrainer)
    with tempfile.TemporaryDirectory(prefix="trl-bench-sft-") as out:
        sargs = SFTConfig(**{**_shared_training_args(args, out), **trl_config(args)})
        trainer = trainer_cls(model=model, args=sargs, train_dataset=ds, processing_class=tok)
        trainer.add_callback(clock)
        trainer.add_callback(memory_callback())
        trainer.train()
    return summarise(records)


def run_child(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--mode", mode, "--data", args.data]
    cmd += ["--max_length", str(args.max_length), "--batch_size", str(args.batch_size)]
    cmd += ["--steps", str(args.steps), "--lr", str(args.lr)] + (["--quick"] if args.quick else [])
    cmd += ["--threads", str(args.threads)] if args.threads else []
    cmd += [f"--lmforge_flags={args.lmforge_flags}"] if args.lmforge_flags else []
    cmd += [f"--trl_config={args.trl_config}"] if args.trl_config else []
    for k, v in {"preset": args.preset, **{k: getattr(args, k) for k in SIZES}}.items():
        cmd += [f"--{k}", str(v)] if v is not None else []
    return common.run_child(cmd, mode, RESULT_PREFIX)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mode:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        run = {"lmforge": run_lmforge, "trl": run_trl, "hf": run_hf}[args.mode]
        print(RESULT_PREFIX + json.dumps({**run(args), **process_figures()}), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-data-") as tmp:
        if args.data is None:
            from lmforge.data.synth import synth

            args.data = synth(tmp, scale=0.2 if args.quick else 1.0)["sft"]
        runs = {m: [run_child(args, m) for _ in range(args.repeats)] for m in MODES if m in args.modes}
    best = {m: min(r, key=lambda x: x["s_per_step"]) for m, r in runs.items()}
    lm = best["lmforge"]
    report: dict[str, Any] = {**best}
    if args.trl_config:
        report["trl_config"] = trl_config(args)
    bases = [b for b in (BASELINE, "hf") if b in best]  # the first one gets the plain keys
    for base in bases:
        ref = best[base]
        # judged on training memory (CUDA's on a GPU); whole-process peak RSS reported next to it
        mem = next((k for k in ("train_cuda_mb", "train_rss_mb") if k in lm and k in ref), "peak_rss_mb")
        suffix = "" if base == bases[0] else f"_vs_{base}"
        report.update({
            f"baseline{suffix}": base,
            f"speedup_tokens_per_s{suffix}": lm["tokens_per_s"] / ref["tokens_per_s"],
            f"memory_ratio{suffix}": lm[mem] / ref[mem],
            f"memory_measure{suffix}": mem,
            f"peak_rss_ratio{suffix}": lm["peak_rss_mb"] / ref["peak_rss_mb"],
        })  # fmt: skip
    report["goal"] = (
        f"lmforge >= 1.5x assistant tokens/s at <= 0.7x training memory vs {report['baseline']}: "
        + ("met" if report["speedup_tokens_per_s"] >= 1.5 and report["memory_ratio"] <= 0.7 else "not met")
    )
    common.emit(report)


if __name__ == "__main__":
    main()
