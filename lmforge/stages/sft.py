"""Supervised fine-tuning on chat rows: loss on assistant tokens only (every assistant turn of a
multi-turn row), `--train_on_prompt` to include prompts; tool-call and reasoning rows as they come.

MiniMind's SFT learning rate (5e-7) assumes its 1.2 GB pretraining run; it is far too small for a
model pretrained for minutes, so pass e.g. `--learning_rate 5e-4` there (the demo does).
"""

from __future__ import annotations

from dataclasses import dataclass

DATA_KIND = "chat"

DEFAULTS = {
    "learning_rate": 5e-7,
    "num_train_epochs": 2,
    "per_device_train_batch_size": 16,
    "gradient_accumulation_steps": 1,
    "max_length": 512,
    "packing": False,
    "model_name_or_path": "pretrain",
}


@dataclass
class Args:
    pass


def prepare(ctx, rows):
    from lmforge.training.features import tokenize_chat

    return tokenize_chat(ctx, rows)


def build_trainer(ctx):
    from lmforge.training.build import default_trainer

    return default_trainer(ctx)
