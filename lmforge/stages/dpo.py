"""DPO (Rafailov et al. 2023) on TRL's DPOTrainer: every TRL DPO loss through `--loss_type`
(sigmoid, hinge, ipo, exo_pair, nca_pair, robust, bco_pair, sppo_hard, aot, aot_unpaired,
apo_zero, apo_down, discopop, sigmoid_norm; comma-separate to combine), `--rpo_alpha` adds the
chosen-answer NLL (RPO; LLaMA-Factory's pref_ftx). The reference is a frozen copy of the starting
model, the adapter-disabled base under a PEFT tuner (no second model in memory), `--ref_model PATH`,
or log-probs computed once before training (`--precompute_ref_log_probs`). Vision LLMs train on
image pairs with lmforge's own DPO trainer (training/vision_dpo.py: sigmoid, hinge, ipo, rpo).

MiniMind's train_dpo defaults (lr 4e-8, batch 4, seq 1024, beta 0.1, from full_sft) assume its
full-size SFT model; a model trained for minutes needs a larger rate (e.g. 5e-5).
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.fields import arg
from lmforge.errors import LmforgeError

DATA_KIND = "preference"

DEFAULTS = {
    "learning_rate": 4e-8,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_length": 1024,
    "model_name_or_path": "full_sft",
}

LOSSES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm", "sft",
)  # fmt: skip


@dataclass
class Args:
    beta: float = arg(0.1, "Deviation from the reference: higher keeps the policy closer (IPO: its tau)")
    loss_type: str = arg("sigmoid", f"DPO loss, or several comma-separated: {', '.join(LOSSES)}", multi=True)
    loss_weights: str | None = arg(
        None, "Comma-separated weights when --loss_type combines several losses", multi=True
    )
    label_smoothing: float = arg(0.0, "Probability a preference label is flipped (robust / exo_pair losses)")
    rpo_alpha: float | None = arg(None, "Add this weight x the chosen answers' NLL (RPO; pref_ftx)")
    ref_model: str | None = arg(None, "Reference model (default: a frozen copy of the starting model)")
    precompute_ref_log_probs: bool = arg(
        False, "Compute reference log-probs once up front; no reference in memory"
    )


def dpo_losses(cfg) -> tuple[list[str], list[float] | None]:
    """(the TRL loss list, their weights or None): `--rpo_alpha` adds the `sft` term."""
    losses = [x.strip() for x in cfg["loss_type"].split(",") if x.strip()]
    bad = [x for x in losses if x not in LOSSES]
    if bad:
        hint = " (use `lmforge train orpo|simpo`)" if set(bad) & {"orpo", "simpo", "kto_pair"} else ""
        raise LmforgeError(f"--loss_type {bad[0]!r} is not a DPO loss{hint}; choose from {', '.join(LOSSES)}")
    try:
        weights = [float(x) for x in cfg["loss_weights"].split(",")] if cfg.get("loss_weights") else None
    except ValueError:
        raise LmforgeError(
            f"--loss_weights {cfg['loss_weights']!r}: expected comma-separated numbers"
        ) from None
    if cfg.get("rpo_alpha"):
        weights = (weights or [1.0] * len(losses)) + [cfg["rpo_alpha"]]
        losses.append("sft")
    if weights is not None and len(weights) != len(losses):
        raise LmforgeError(f"--loss_weights has {len(weights)} values for {len(losses)} losses")
    return losses, weights


def validate(cfg) -> None:
    dpo_losses(cfg)
    if cfg["beta"] <= 0:
        raise LmforgeError(f"--beta must be > 0; got {cfg['beta']}")


def trainer_config(cfg):
    from trl import DPOConfig

    losses, weights = dpo_losses(cfg)
    return DPOConfig, {
        "beta": cfg["beta"],
        "loss_type": losses,
        "loss_weights": weights,
        "label_smoothing": cfg["label_smoothing"],
        "precompute_ref_log_probs": cfg["precompute_ref_log_probs"],
        "max_length": cfg["max_length"],
    }


def prepare(ctx, rows):
    from lmforge.training.preference import guard_pairs
    from lmforge.training.vision_dpo import check_vision_dpo_flags, is_vision_processor, tokenize_vision_pairs

    if is_vision_processor(ctx.processor):  # a vision LLM: image pairs on lmforge's own DPO trainer
        check_vision_dpo_flags(ctx.cfg, dpo_losses(ctx.cfg)[0])
        return tokenize_vision_pairs(ctx, rows)
    guard_pairs(ctx, rows, ("chosen", "rejected"))
    return rows  # TRL tokenises the rows, rendered by lmforge's renderer (training/preference.py)


def build_trainer(ctx):
    from lmforge.training.preference import dpo_trainer
    from lmforge.training.vision_dpo import is_vision_processor, vision_dpo_trainer

    if is_vision_processor(ctx.processor):
        return vision_dpo_trainer(ctx, *dpo_losses(ctx.cfg))
    return dpo_trainer(ctx)
