"""Pretraining: next-token loss on text, packed into full sequences by default.

Each document is `<|im_start|>` + text + `<|im_end|>`; with packing (default) documents are
concatenated into `max_length` windows whose position ids restart at every document, so no label
and (with the block-diagonal mask transformers builds from position ids) no attention crosses a
document boundary. `--packing false` pads every row to its own length in the batch instead.
"""

from __future__ import annotations

from dataclasses import dataclass

DATA_KIND = "pretrain"

DEFAULTS = {
    "learning_rate": 5e-4,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 32,
    "gradient_accumulation_steps": 8,
    "max_length": 512,
    "packing": True,
}


@dataclass
class Args:
    pass


def validate(cfg) -> None:
    """No rules beyond the common ones (lmforge/pipeline.py `validate_config`)."""


def trainer_config(cfg):
    return None, {}


def prepare(ctx, rows):
    from lmforge.data.tokenize import tokenize_pretrain

    return tokenize_pretrain(ctx, rows)


def build_trainer(ctx):
    from lmforge.training.build import default_trainer

    return default_trainer(ctx)
