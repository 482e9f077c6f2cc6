"""Build `TrainingArguments` from the resolved config, and the default stage trainer."""

from __future__ import annotations

import os
from typing import Any

from lmforge.errors import LmforgeError

# lmforge's defaults for Trainer fields (MiniMind reference: cosine schedule with a 0.1×lr floor).
TRAINER_DEFAULTS: dict[str, Any] = {
    "lr_scheduler_type": "cosine_with_min_lr",
    "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
    "logging_steps": 100,
    "save_steps": 100,
    "save_strategy": "steps",
    "save_total_limit": 3,
    "max_grad_norm": 1.0,
    "weight_decay": 0.0,
    "report_to": "none",
    "seed": 42,
}
# The schedules that take lmforge's default `min_lr_rate` kwarg.
MIN_LR_SCHEDULERS = ("cosine_with_min_lr", "cosine_warmup_with_min_lr")


def _cpu_only_ddp() -> bool:
    """A multi-process run (torchrun's WORLD_SIZE > 1) on a machine where no GPU is visible: without
    `use_cpu` each rank would train on its own, all writing into one run folder."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1 or torch.cuda.is_available():
        return False
    mps = getattr(torch.backends, "mps", None)
    return not (mps is not None and mps.is_available())


def build_training_args(cfg, run_dir: str, overrides: dict[str, Any] | None = None, args_cls=None):
    """`TrainingArguments` (or a TRL config class `args_cls`, e.g. `DPOConfig`) from the resolved config;
    `overrides` are extra fields (a stage's own: beta, loss_type, ...; GaLore's optim)."""
    import torch
    from transformers import TrainingArguments

    args_cls = args_cls or TrainingArguments
    kw = dict(cfg.hf_values())
    kw["output_dir"] = run_dir
    kw["remove_unused_columns"] = False
    kw.update(overrides or {})
    if kw.get("resume_from_checkpoint") is not None:
        kw.pop("resume_from_checkpoint")
    device = cfg.get("device")
    on_gpu = torch.cuda.is_available() and not (device or "").startswith("cpu")
    if (device and device.startswith("cpu")) or (not device and _cpu_only_ddp()):
        kw["use_cpu"] = True  # accelerate then joins the ranks with gloo
    elif device and device.startswith("cuda:"):
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", device.split(":", 1)[1])
    if not on_gpu and "dataloader_pin_memory" not in cfg.explicit:
        kw["dataloader_pin_memory"] = False
    dtype = cfg.get("dtype", "auto")
    if dtype == "auto":
        dtype = "bfloat16" if on_gpu and torch.cuda.is_bf16_supported() else "float32"
    if "bf16" not in cfg.explicit:  # TRL configs default bf16 to True, even on CPU
        kw["bf16"] = dtype == "bfloat16"
    if dtype == "float16" and "fp16" not in cfg.explicit:
        if not on_gpu:
            raise LmforgeError("--dtype float16 needs a GPU; use float32 or bfloat16 on CPU")
        kw["fp16"] = True
    if kw.get("use_liger_kernel"):
        check_liger(on_gpu)
    from lmforge.training.sharding import apply_sharding

    apply_sharding(kw, on_gpu)
    if cfg.get("wandb_project"):
        os.environ["WANDB_PROJECT"] = cfg["wandb_project"]
    if cfg.get("val_size") or cfg.get("val_dataset"):
        kw.setdefault("eval_strategy", "steps")
        kw.setdefault("eval_steps", kw.get("save_steps", 100))
    try:
        return args_cls(**kw)
    except (ValueError, TypeError) as e:
        msg = " ".join(str(e).split())
        raise LmforgeError(f"training arguments: {msg}") from None


def default_trainer(ctx, trainer_cls=None, *, allow_padding_free: bool = True, **extra):
    """An `LmforgeTrainer` (or the subclass `trainer_cls`, given `extra` keyword arguments) over ctx's
    datasets with lmforge's collator; `allow_padding_free=False` keeps padded batches by default."""
    from lmforge.data.packing import collator_for
    from lmforge.training.trainer import LmforgeTrainer

    cfg = ctx.cfg
    padding_free, max_row_tokens = padding_free_rows(cfg, ctx.model)
    padding_free = padding_free and allow_padding_free
    return (trainer_cls or LmforgeTrainer)(
        model=ctx.model,
        args=ctx.training_args,
        train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset,
        data_collator=collator_for(
            _columns(ctx.train_dataset),
            ctx.tokenizer.pad_token_id,
            padding_free=padding_free,
            max_row_tokens=max_row_tokens,
            attention_weight=row_attention_weight(ctx.model) if max_row_tokens else 0.0,
        ),
        processing_class=ctx.tokenizer,
        nan_policy=cfg["nan_policy"],
        max_nan_skips=cfg["max_nan_skips"],
        loss_chunk_size=cfg.get("loss_chunk_size", 0) or 0,
        **extra,
    )


def padding_free_rows(cfg, model) -> tuple[bool, int | None]:
    """(`--padding_free`, the longest row a padding-free batch may build).

    Default: on for transformers' own causal LMs (they turn restarting position_ids into
    per-row attention: tests/test_fastpath.py checks it), off for other models (remote code may
    ignore position_ids and let rows attend to each other). Flash-attention kernels take the
    whole batch as one row; sdpa/eager rows stop at --max_length tokens (their attention is
    quadratic in the row, so no row costs more than a packed one)."""
    from lmforge.training.loss import SUPPORTED_MODEL_TYPES

    value = cfg.get("padding_free")
    config = getattr(model, "config", None)
    attn = str(getattr(config, "_attn_implementation", None) or "")
    if value is None:
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        native = type(inner).__module__.startswith("transformers.models.")
        value = native and getattr(config, "model_type", None) in SUPPORTED_MODEL_TYPES
    varlen = attn.startswith("flash_attention")
    return bool(value), None if varlen else cfg.get("max_length")


def row_attention_weight(model) -> float:
    """What one position's masked attention costs per token of row width, relative to the rest of
    its forward and backward: 4·d FLOPs a token of width (scores and values) against ~24·d² for the
    projections and MLP (d = hidden size), so 1 / (6·d). A padding-free row of W tokens then costs
    W·(1 + W / 6d): bench/sft.py measured rows capped at 128 instead of 256 ×1.035 assistant
    tokens/s at d = 192. 0 (no narrower rows) when the size is unknown."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = getattr(text, "hidden_size", None)
    return 1.0 / (6 * hidden) if isinstance(hidden, int) and hidden > 0 else 0.0


def check_liger(on_gpu: bool) -> None:
    """`--use_liger_kernel`: Liger's Triton kernels need a CUDA GPU and the liger-kernel package."""
    import importlib.util

    if not on_gpu:
        raise LmforgeError("--use_liger_kernel needs a CUDA GPU (Liger's kernels are Triton); drop it on CPU")
    if importlib.util.find_spec("liger_kernel") is None:
        raise LmforgeError("--use_liger_kernel needs the liger-kernel package: pip install 'lmforge[liger]'")


def _columns(ds) -> list[str]:
    """Column names, also for a streamed dataset whose schema is only known after one row."""
    names = getattr(ds, "column_names", None)
    return list(names) if names else list(next(iter(ds)).keys())
