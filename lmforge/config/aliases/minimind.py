"""MiniMind's trainer script flags (reference/seed_001), as lmforge keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmforge.config.aliases.transforms import none_if_none, resume, wandb

ALIASES: dict[str, tuple[str | tuple[str, ...], Callable[[Any], Any] | None]] = {
    # MiniMind trainer scripts (reference/seed_001)
    "epochs": ("num_train_epochs", None),
    "batch_size": ("per_device_train_batch_size", None),
    "accumulation_steps": ("gradient_accumulation_steps", None),
    "grad_clip": ("max_grad_norm", None),
    "log_interval": ("logging_steps", None),
    "save_interval": ("save_steps", None),
    # MiniMind: DataLoader workers; where a command has none (infer), its data-reading workers (mdl-toolkit)
    "num_workers": (("dataloader_num_workers", "preprocessing_num_workers"), None),
    "max_seq_len": ("max_length", None),
    "data_path": ("dataset", None),
    "from_weight": ("model_name_or_path", none_if_none),
    "from_resume": ("resume_from_checkpoint", resume),
    "use_wandb": ("report_to", wandb),
    # MiniMind train_distillation.py (train distill): student = the stage's model, teacher its own flag
    "from_student_weight": ("model_name_or_path", none_if_none),
    "student_hidden_size": ("hidden_size", None),
    "student_num_layers": ("num_hidden_layers", None),
    "from_teacher_weight": ("teacher_model_name_or_path", None),
}
