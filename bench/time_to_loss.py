"""Time to quality: how soon lmforge pretraining reaches the loss a MiniMind-style loop ends its epoch at.

Both modes are bench/pretrain.py's (imported, not copied): the same from-scratch model
(`init_model`, same sizes, tokenizer and seed), data file, batch size, sequence length, AdamW,
clipping and cosine schedule (to 0.1 x lr, no warm-up). lmforge packs documents into full rows;
the reference pads every document to `--seq_len`.

1. reference: one epoch of the data (`--ref_steps N` to change), cosine over those steps. Its
   TARGET is its end-of-epoch loss, smoothed: the mean of its last `--window` (10) step losses.
2. lmforge: the real `run_train("pretrain", ...)` with cosine over `--max_steps` (default: as many
   steps as the reference took), stopped with SIGTERM (lmforge finishes the step and saves) once
   its smoothed loss reaches the target (`--stop_at_target false` to run to the cap) or its
   training time passes `--max_seconds`. Per-step losses and times come from the run's
   metrics.jsonl (`time`: seconds since the training loop began).

Time to target: the end of the first step whose `--window`-step moving average of the loss is <=
the target, counted from the start of the training loop. Imports, tokenising and model init are
left out and reported separately (`setup_s`). `sooner` = reference time / lmforge time ("x N
sooner"); `peak_rss_ratio` = lmforge / reference peak RSS (each mode runs in its own process).
`loss_tokens_per_s` is pretrain.py's: loss-bearing tokens per second after 2 warm-up steps.

Note that lmforge stopped at the target is mid-schedule (its learning rate has not decayed);
a shorter `--max_steps` decays sooner and may reach the target sooner still.

`--lmforge_flags "..."` appends flags to lmforge's command line (later flags win), so a lever is
measured with the same script: `--lmforge_flags "--learning_rate 3e-3"`, `"--torch_compile true"`.
`--lmforge_lr default` passes lmforge no `--learning_rate`: its own defaults train (from-scratch
pretraining: Muon at 8e-3), against the reference at `--lr`.

Output: ONE JSON line on stdout (both modes' figures, per-step losses and times, the target, the
ratios, machine and command); a table and progress on stderr. `--quick`: a tiny model and a few
steps, for tests. bench/README.md says how to run it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import common
import pretrain

START = time.time()
RESULT_PREFIX = "TTL_RESULT "
MODES = ("reference", "lmforge")
QUICK_SIZES = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}
SHARED_FLAGS = ("preset", *pretrain.SIZE_FLAGS, "seq_len", "batch_size", "lr", "tokenizer", "window")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default=None, help="lmforge model preset (size flags given explicitly win)")
    for name, default in pretrain.SIZE_FLAGS.items():
        p.add_argument(f"--{name}", type=int, default=None, help=f"default {default}, or the preset's")
    p.add_argument("--seq_len", type=int, default=None, help="sequence length (default 256; --quick 64)")
    p.add_argument("--batch_size", type=int, default=None, help="rows per step (default 16; --quick 4)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (%(default)s)")
    p.add_argument(
        "--data", default=None, help="JSONL of {'text': ...} rows (default: lmforge.data.synth, scale 1.0)"
    )
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: lmforge's shipped one)")
    p.add_argument(
        "--ref_steps", type=int, default=None, help="reference steps (default: one epoch; --quick 20)"
    )
    p.add_argument(
        "--max_steps", type=int, default=None, help="lmforge step cap (default: --ref_steps; --quick 40)"
    )
    p.add_argument(
        "--max_seconds", type=float, default=None, help="lmforge training-time cap (default 300; --quick 120)"
    )
    p.add_argument(
        "--stop_at_target",
        choices=("true", "false"),
        default="true",
        help="stop lmforge once it reaches the target (%(default)s)",
    )
    p.add_argument("--window", type=int, default=10, help="moving-average window, steps (%(default)s)")
    p.add_argument(
        "--reference",
        default=None,
        metavar="JSON",
        help="reuse the reference mode of an earlier run's JSON line (same sizes, seq_len, batch, lr, data)",
    )
    p.add_argument(
        "--lmforge_lr",
        choices=("reference", "default"),
        default="reference",
        help="lmforge's learning rate: --lr as the reference's (%(default)s), or default: no "
        "--learning_rate passed, so lmforge's own default optimiser and rate train",
    )
    p.add_argument("--lmforge_flags", default="", help='extra lmforge flags, e.g. "--learning_rate 3e-3"')
    p.add_argument("--quick", action="store_true", help="tiny model, small data, a few steps (tests)")
    p.add_argument("--mode", choices=MODES, default=None, help=argparse.SUPPRESS)  # child process
    p.add_argument("--target", type=float, default=None, help=argparse.SUPPRESS)  # lmforge child
    args = p.parse_args(argv)
    quick = args.quick
    args.seq_len = args.seq_len or (64 if quick else 256)
    args.batch_size = args.batch_size or (4 if quick else 16)
    args.max_seconds = args.max_seconds or (120.0 if quick else 300.0)
    if quick:
        args.ref_steps = args.ref_steps or 20
        args.max_steps = args.max_steps or 40
    if quick and not args.preset:
        for k, v in QUICK_SIZES.items():
            setattr(args, k, v if getattr(args, k) is None else getattr(args, k))
    if args.window < 1:
        p.error(f"--window must be at least 1; got {args.window}")
    for name in ("ref_steps", "max_steps"):
        steps = getattr(args, name)
        if steps is not None and steps < max(args.window, pretrain.WARMUP_STEPS + 1):
            p.error(f"--{name} must be at least --window and more than {pretrain.WARMUP_STEPS}; got {steps}")
    return args


# ---------------------------------------------------------------------------------------------
# Figures


def smoothed(losses: list[float], window: int) -> list[float]:
    """Moving averages over full windows: entry i is the mean of losses[i : i + window]."""
    return [sum(losses[i : i + window]) / window for i in range(len(losses) - window + 1)]


def first_reach(losses: list[float], window: int, target: float) -> int | None:
    """The first step (1-based) whose `window`-step moving average is <= target, else None."""
    return next((i + window for i, m in enumerate(smoothed(losses, window)) if m <= target), None)


def mode_figures(records: list[dict[str, Any]], args: argparse.Namespace, target: float) -> dict[str, Any]:
    losses = [r["loss"] for r in records]
    step = first_reach(losses, args.window, target)
    smooth = smoothed(losses, args.window)
    return {
        **pretrain.summarise(records, args.batch_size, args.seq_len),
        "train_s": records[-1]["time"],
        "reached": step is not None,
        "time_to_target_s": records[step - 1]["time"] if step else None,
        "steps_to_target": step,
        "tokens_to_target": sum(r["tokens"] for r in records[:step]) if step else None,
        "best_smoothed_loss": min(smooth) if smooth else None,
        "last_smoothed_loss": smooth[-1] if smooth else None,
        "losses": losses,
        "times": [r["time"] for r in records],
    }


# ---------------------------------------------------------------------------------------------
# Children


class Stopper(threading.Thread):
    """Watches an lmforge run's metrics.jsonl and sends this process SIGTERM (lmforge ends the step,
    saves and returns) once the smoothed loss reaches the target or training passed max_seconds.
    Also derives when the training loop began: the file's mtime minus its last record's `time`."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(daemon=True)
        self.args, self.output_dir = args, None
        self.done = threading.Event()
        self.train_start: float | None = None
        self.stopped_by: str | None = None

    def watch(self, output_dir: str) -> None:
        self.output_dir = output_dir
        self.start()

    def run(self) -> None:
        args = self.args
        while not self.done.wait(0.2):
            path = next(Path(self.output_dir).rglob("metrics.jsonl"), None)
            if path is None:
                continue
            try:
                before = path.stat().st_mtime
                recs = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
                after = path.stat().st_mtime
            except (OSError, ValueError):  # mid-write: next time
                continue
            recs = [r for r in recs if "loss" in r and "time" in r]
            if not recs or before != after:
                continue
            self.train_start = after - recs[-1]["time"]
            if recs[-1]["step"] >= args.steps:  # the run ends by itself
                continue
            if args.stop_at_target == "true" and first_reach(
                [r["loss"] for r in recs], args.window, args.target
            ):
                self.stopped_by = "target"
            elif recs[-1]["time"] >= args.max_seconds:
                self.stopped_by = "max_seconds"
            else:
                continue
            os.kill(os.getpid(), signal.SIGTERM)
            return


def run_mode(args: argparse.Namespace) -> dict[str, Any]:
    if args.mode == "reference":
        records, extra = pretrain.train_reference(args)
        train_start, stopped_by = extra.pop("train_start"), "ref_steps"
        target = sum(r["loss"] for r in records[-args.window :]) / args.window
    else:
        stopper = Stopper(args)
        # a SIGTERM that lands after lmforge restored the previous handler must not kill the run
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        records, extra = pretrain.train_lmforge(
            args, watch=stopper.watch
        )  # lmforge_argv adds --lmforge_flags
        stopper.done.set()
        train_start, stopped_by, target = stopper.train_start, stopper.stopped_by or "max_steps", args.target
    return {
        **mode_figures(records, args, target),
        **extra,
        "target": target,
        "stopped_by": stopped_by,
        "setup_s": None if train_start is None else train_start - START,
        **pretrain.process_figures(),
        "wall_s": time.time() - START,
    }


def child_command(args: argparse.Namespace, mode: str, steps: int, target: float | None) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--mode", mode, "--data", args.data]
    for name in SHARED_FLAGS:
        if getattr(args, name) is not None:
            cmd += [f"--{name}", str(getattr(args, name))]
    cmd += ["--max_seconds", str(args.max_seconds), "--stop_at_target", args.stop_at_target]
    if mode == "reference":
        return cmd + ["--ref_steps", str(steps)]
    return cmd + [
        "--max_steps",
        str(steps),
        "--target",
        repr(target),
        "--lmforge_lr",
        args.lmforge_lr,
        f"--lmforge_flags={args.lmforge_flags}",
    ]


# ---------------------------------------------------------------------------------------------
# Report


def _loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"  # None: fewer steps than the window


def format_table(results: dict[str, dict[str, Any]], window: int) -> str:
    head = ["mode", "steps", "setup s", "train s", "to target s", "at step", "tokens to target"]
    head += ["loss tok/s", "peak RSS MB", f"last avg{window}", f"best avg{window}"]
    rows = []
    for mode, r in results.items():
        reached = r["reached"]
        rows.append(
            [
                mode,
                str(r["steps"]),
                "n/a" if r["setup_s"] is None else f"{r['setup_s']:.1f}",
                f"{r['train_s']:.1f}",
                f"{r['time_to_target_s']:.1f}" if reached else "not reached",
                str(r["steps_to_target"]) if reached else "-",
                f"{r['tokens_to_target']:,}" if reached else "-",
                f"{r['loss_tokens_per_s']:,.0f}",
                f"{r['peak_rss_mb']:,.0f}",
                _loss(r["last_smoothed_loss"]),
                _loss(r["best_smoothed_loss"]),
            ]
        )
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
    )


def summary_line(report: dict[str, Any]) -> str:
    lm, target = report["lmforge"], report["target"]
    if not lm["reached"]:
        return (
            f"lmforge did NOT reach the target {target:.3f} within its cap (stopped by {lm['stopped_by']}, "
            f"{lm['steps']} steps, {lm['train_s']:.1f} s); its best smoothed loss: {_loss(lm['best_smoothed_loss'])}"
        )
    return (
        f"target {target:.3f} (reference's mean of its last {report['window']} losses): lmforge reached it "
        f"x{report['sooner']:.2f} sooner (below 1: later; {lm['time_to_target_s']:.1f} s vs "
        f"{report['reference']['time_to_target_s']:.1f} s of training) at x{report['peak_rss_ratio']:.2f} "
        f"the peak RSS; lmforge stopped by {lm['stopped_by']}"
    )


def earlier_reference(args: argparse.Namespace, data_label: str, ref_steps: int) -> dict[str, Any]:
    """The reference mode of an earlier run (`--reference FILE`, its JSON line), when its settings are
    these: the reference is deterministic, so levers are measured against it without re-running it."""
    earlier = json.loads(Path(args.reference).read_text().strip().splitlines()[-1])
    mine = {"sizes": pretrain.model_sizes(args), "seq_len": args.seq_len, "batch_size": args.batch_size,
            "lr": args.lr, "data": data_label, "window": args.window}  # fmt: skip
    differ = [k for k, v in mine.items() if earlier.get(k) != v]
    if differ or len(earlier["reference"]["losses"]) != ref_steps:
        raise SystemExit(
            f"bench: --reference {args.reference} was run with other settings ({differ or 'ref_steps'})"
        )
    return earlier["reference"] | {"reused_from": args.reference}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mode:
        args.steps = args.ref_steps if args.mode == "reference" else args.max_steps
        if args.data is None or args.steps is None or (args.mode == "lmforge" and args.target is None):
            raise SystemExit("bench: a --mode child needs --data, its steps and (lmforge) --target")
        print(RESULT_PREFIX + json.dumps(run_mode(args)), flush=True)
        return
    data_label = args.data or f"lmforge.data.synth(scale={0.05 if args.quick else 1.0}) pretrain.jsonl"
    with tempfile.TemporaryDirectory(prefix="lmforge-ttl-data-") as tmp:
        if args.data is None:
            from lmforge.data.synth import synth

            args.data = synth(tmp, scale=0.05 if args.quick else 1.0)["pretrain"]
        epoch_steps = len(pretrain.read_texts(args.data)) // args.batch_size  # DataLoader drop_last
        ref_steps = args.ref_steps or epoch_steps
        if ref_steps < max(args.window, pretrain.WARMUP_STEPS + 1):
            raise SystemExit(f"bench: one epoch is only {ref_steps} steps; pass --ref_steps")
        results = {}
        if args.reference:
            results["reference"] = earlier_reference(args, data_label, ref_steps)
        else:
            ref_cmd = child_command(args, "reference", ref_steps, None)
            results["reference"] = common.run_child(ref_cmd, "reference", RESULT_PREFIX) | {
                "command": shlex.join(ref_cmd)
            }
        target = results["reference"]["target"]
        lm_cmd = child_command(args, "lmforge", args.max_steps or ref_steps, target)
        results["lmforge"] = common.run_child(lm_cmd, "lmforge", RESULT_PREFIX) | {
            "command": shlex.join(lm_cmd)
        }
    ref, lm = results["reference"], results["lmforge"]
    report = {
        "bench": "time_to_loss",
        "target": target,
        "window": args.window,
        "epoch_steps": epoch_steps,
        "sooner": ref["time_to_target_s"] / lm["time_to_target_s"] if lm["reached"] else None,
        "peak_rss_ratio": lm["peak_rss_mb"] / ref["peak_rss_mb"],
        "lmforge_flags": args.lmforge_flags,
        "lmforge_lr": args.lmforge_lr,
        "data": data_label,
        "sizes": pretrain.model_sizes(args),
        "preset": args.preset,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_seconds": args.max_seconds,
        **results,
    }
    sizes = " ".join(f"{k}={v}" for k, v in report["sizes"].items())
    print(
        f"model: preset={args.preset} {sizes} | seq_len {args.seq_len} | batch {args.batch_size} | lr {args.lr} "
        f"| reference {ref_steps} steps (one epoch = {epoch_steps}) | lmforge cap {args.max_steps or ref_steps} "
        f"steps / {args.max_seconds:g} s | lmforge flags: {args.lmforge_flags or '-'} | data {data_label}\n\n"
        f"{format_table({m: results[m] for m in MODES}, args.window)}\n\n{summary_line(report)}",
        file=sys.stderr,
        flush=True,
    )
    common.emit(report)


if __name__ == "__main__":
    main()
