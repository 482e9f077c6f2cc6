"""KTO (Ethayarajh et al. 2024) on TRL's KTOTrainer: unpaired `{prompt, completion, label}` rows
(paired preference rows are split into one desirable and one undesirable row)."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.fields import arg
from lmforge.errors import LmforgeError

DATA_KIND = "kto"

DEFAULTS = {
    "learning_rate": 4e-8,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_length": 1024,
    "model_name_or_path": "full_sft",
}


@dataclass
class Args:
    beta: float = arg(0.1, "Deviation from the reference model")
    loss_type: str = arg("kto", "kto, or apo_zero_unpaired", choices=("kto", "apo_zero_unpaired"))
    desirable_weight: float = arg(1.0, "Loss weight of desirable (label true) rows")
    undesirable_weight: float = arg(1.0, "Loss weight of undesirable (label false) rows")
    ref_model: str | None = arg(None, "Reference model (default: a frozen copy of the starting model)")
    precompute_ref_log_probs: bool = arg(
        False, "Compute reference log-probs once up front; no reference in memory"
    )


def validate(cfg) -> None:
    if cfg["per_device_train_batch_size"] < 2 and cfg["loss_type"] != "apo_zero_unpaired":
        raise LmforgeError(
            "train kto: --per_device_train_batch_size must be >= 2 (the KL term pairs rows in a batch)"
        )
    if cfg["beta"] <= 0:
        raise LmforgeError(f"--beta must be > 0; got {cfg['beta']}")


def trainer_config(cfg):
    from trl import KTOConfig

    return KTOConfig, {
        "beta": cfg["beta"],
        "loss_type": cfg["loss_type"],
        "desirable_weight": cfg["desirable_weight"],
        "undesirable_weight": cfg["undesirable_weight"],
        "precompute_ref_log_probs": cfg["precompute_ref_log_probs"],
        "max_length": cfg["max_length"],
    }


def prepare(ctx, rows):
    from lmforge.training.preference import guard_pairs

    guard_pairs(ctx, rows, ("completion",))
    return rows  # TRL tokenises the rows, rendered by lmforge's renderer (training/preference.py)


def build_trainer(ctx):
    from lmforge.training.preference import kto_trainer

    return kto_trainer(ctx)
