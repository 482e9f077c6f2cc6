"""A training run's life: its folder and the checkpoint it resumes from, what is logged when it
starts, how many optimizer steps it takes, and what a finished run leaves in its folder (model or
adapter, processor, trainer state, metrics, model card, the finished mark)."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.runs import (
    MetricsLog,
    default_output_dir,
    latest_checkpoint,
    latest_run_dir,
    mark_finished,
    write_model_card,
)

log = logging.getLogger("lmforge")


def resolve_run_dir(stage: str, cfg: Any) -> tuple[str, str | None]:
    """The run folder and the checkpoint to resume from (None: start fresh)."""
    from lmforge.models.locate import minimind_weight_dir

    resume = cfg.get("resume_from_checkpoint")
    if cfg.get("output_dir"):
        run_dir = cfg["output_dir"]
    elif cfg.get("lora_name"):  # MiniMind train_lora: save_dir/lora/NAME_<hidden>
        run_dir = str(
            minimind_weight_dir(
                Path(cfg["save_dir"], "lora"), cfg["lora_name"], cfg["hidden_size"], cfg["use_moe"]
            )
        )
    elif cfg.get("save_weight"):
        run_dir = str(
            minimind_weight_dir(cfg["save_dir"], cfg["save_weight"], cfg["hidden_size"], cfg["use_moe"])
        )
    elif resume == "latest":
        run_dir = latest_run_dir(cfg["save_dir"], stage) or default_output_dir(stage, cfg["save_dir"])
    else:
        run_dir = default_output_dir(stage, cfg["save_dir"])
    ckpt = None
    if resume == "latest":
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            log.info("no checkpoint in %s yet: starting from the beginning", run_dir)
    elif resume:
        if not Path(resume, "trainer_state.json").is_file():
            raise LmforgeError(f"--resume_from_checkpoint {resume}: not a complete checkpoint folder")
        ckpt = resume
    return run_dir, ckpt


def keep_checkpoint_optimizer(cfg: Any, ckpt: str | None) -> None:
    """A checkpoint resumes under the optimiser and learning rate it was trained with: where this
    command gives neither, the run's recorded ones replace the defaults (a from-scratch pretraining
    run started with AdamW, before Muon became the default there, resumes with AdamW; its optimizer
    state would not load into Muon's groups)."""
    from lmforge.runs import read_run_args
    from lmforge.tuners.optim import is_muon

    if not ckpt or cfg.explicit & {"optim", "learning_rate"}:
        return
    recorded = read_run_args(ckpt)
    if not recorded or "learning_rate" not in recorded:
        return
    optim = recorded.get("optim") or cfg.specs["optim"].default
    if is_muon({"optim": optim}) == is_muon(cfg):
        return
    log.info(
        "resuming %s: with its own optimiser %s at learning rate %g (pass --optim to change it)",
        ckpt,
        optim,
        recorded["learning_rate"],
    )
    cfg.values.update(optim=optim, learning_rate=recorded["learning_rate"])
    cfg.layered |= {"optim", "learning_rate"}


def num_training_steps(ctx) -> int:
    """Optimizer steps the run will take (AdaLoRA schedules its rank budget over them)."""
    args = ctx.training_args
    if args.max_steps and args.max_steps > 0:
        return args.max_steps
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
    return max(1, math.ceil(len(ctx.train_dataset) / per_step) * math.ceil(args.num_train_epochs))


def checkpoint_step(ckpt: str | None) -> int:
    """The global step a checkpoint folder was saved at (0: no checkpoint)."""
    if not ckpt:
        return 0
    state = json.loads(Path(ckpt, "trainer_state.json").read_text())
    return int(state.get("global_step", 0))


def log_start(ctx, ckpt: str | None) -> None:
    from lmforge.models.presets import count_parameters

    n = count_parameters(ctx.model)
    num_seq = len(ctx.train_dataset) if hasattr(ctx.train_dataset, "__len__") else "streamed"
    log.info(
        "stage %s → %s | params %.2fM | rows %s | train sequences %s%s",
        ctx.stage,
        ctx.run_dir,
        n / 1e6,
        ctx.stats.get("rows", "streamed"),
        num_seq,
        f" | resuming {ckpt}" if ckpt else "",
    )
    report = ctx.tuned.report if ctx.tuned else {}
    if report:
        log.info(
            "tuner %s: trainable params %s of %s (%.4g%%)%s",
            report["tuner"],
            f"{report['trainable params']:,}",
            f"{report['all params']:,}",
            report["trainable %"],
            f" | new layers {report['expanded layers']}" if "expanded layers" in report else "",
        )
    packing = ctx.stats.get("packing")
    if packing is not None:
        log.info("packing: %s", packing)


def finish_run(ctx, trainer, metrics: dict[str, Any]) -> None:
    """Save what a finished run leaves in its folder (rank 0 only)."""
    run_dir = ctx.run_dir
    # What Hugging Face / LLaMA-Factory users look for in a run folder
    trainer.state.save_to_json(os.path.join(run_dir, "trainer_state.json"))
    trainer.save_metrics("train", metrics)  # train_results.json + all_results.json
    if ctx.cfg.get("merge_lora") and ctx.tuned and hasattr(ctx.model, "merge_and_unload"):
        _save_merged(ctx, trainer)
    elif ctx.tuned and ctx.tuned.save:
        ctx.tuned.save(run_dir)
    else:
        trainer.save_model(run_dir)
    save_processor_files(ctx, run_dir)
    state = trainer.state
    losses = [r["loss"] for r in _read_metrics(run_dir) if "loss" in r]
    summary = {
        "steps": state.global_step,
        "first loss": _fmt(losses[0] if losses else None),
        "last loss": _fmt(losses[-1] if losses else None),
        "nan steps skipped": trainer.num_nan_skipped,
        **(
            {k: ctx.tuned.report[k] for k in ("tuner", "trainable params", "trainable %")}
            if ctx.tuned
            else {}
        ),
        **{k: v for k, v in ctx.stats.items() if isinstance(v, (int, float, str))},
    }
    write_model_card(run_dir, ctx.stage, ctx.cfg.values, summary)
    mark_finished(run_dir, {"stage": ctx.stage, "global_step": state.global_step})
    log.info("finished %s: %s", ctx.stage, run_dir)


def save_processor_files(ctx, run_dir: str) -> None:
    """The tokenizer, or an audio / vision LLM's whole processor, beside the saved model."""
    proc = ctx.processor
    if proc is not None and getattr(proc, "image_processor", None) is not None:
        from lmforge.training.vision import save_processor

        save_processor(proc, run_dir)
    else:
        (proc or ctx.tokenizer).save_pretrained(run_dir)


def _save_merged(ctx, trainer) -> None:
    """`--merge_lora`: the adapter goes to RUN/adapter, the merged full model to RUN itself."""
    run_dir = ctx.run_dir
    if ctx.tuned.save:
        ctx.tuned.save(os.path.join(run_dir, "adapter"))
    else:
        trainer.save_model(os.path.join(run_dir, "adapter"))
    merged = ctx.model.merge_and_unload()
    merged.save_pretrained(run_dir)
    log.info("--merge_lora: full model in %s (adapter in %s/adapter)", run_dir, run_dir)


def _read_metrics(run_dir: str) -> list[dict[str, Any]]:
    return MetricsLog(run_dir).read()


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
