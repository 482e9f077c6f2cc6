"""Reasoning distillation: SFT on rows whose answers hold `<think>…</think>` (and MiniMind's
`<answer>…</answer>`), with an optional extra loss weight on the markers.

The weight applies to every token of a whole marker (`<think>`, `</think>`, `<answer>`,
`</answer>`), found as complete token sequences in the labels; MiniMind's script instead weights
any sub-word piece that happens to match, which also up-weights unrelated tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.fields import arg
from lmforge.errors import LmforgeError

DATA_KIND = "chat"

DEFAULTS = {
    "learning_rate": 1e-6,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "max_length": 1024,
    "packing": False,
    "model_name_or_path": "dpo",
}

MARKERS = ("<think>", "</think>", "<answer>", "</answer>")


@dataclass
class Args:
    marker_weight: float = arg(1.0, "Loss weight of the think/answer marker tokens (MiniMind uses 10)")


def validate(cfg) -> None:
    if cfg["marker_weight"] < 0:
        raise LmforgeError(f"--marker_weight must be >= 0; got {cfg['marker_weight']}")


def trainer_config(cfg):
    return None, {}


def prepare(ctx, rows):
    from lmforge.data.tokenize import add_marker_weights, tokenize_chat

    ds = tokenize_chat(ctx, rows)
    weight = ctx.cfg["marker_weight"]
    if weight != 1.0:
        ds = add_marker_weights(ds, ctx.tokenizer, MARKERS, weight)
    return ds


def build_trainer(ctx):
    from lmforge.training.build import default_trainer

    return default_trainer(ctx)
