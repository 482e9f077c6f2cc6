"""Reward model: a sequence-classification head (one score) on the starting model, trained on
preference pairs with TRL's RewardTrainer (Bradley-Terry loss); pair accuracy is logged on the
validation split. The saved folder loads with `AutoModelForSequenceClassification` (PPO/GRPO use it)."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.fields import arg
from lmforge.errors import LmforgeError

DATA_KIND = "preference"

DEFAULTS = {
    "learning_rate": 1e-5,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "max_length": 1024,
    "model_name_or_path": "full_sft",
}


@dataclass
class Args:
    center_rewards_coefficient: float | None = arg(
        None, "Push mean reward toward 0 with this weight (Eisenstein et al. 2023; e.g. 0.01)"
    )


def load_model(cfg, path: str):
    """The starting causal LM's body with a fresh one-output score head."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    return model


def validate(cfg) -> None:
    coef = cfg["center_rewards_coefficient"]
    if coef is not None and coef < 0:
        raise LmforgeError(f"--center_rewards_coefficient must be >= 0; got {coef}")


def trainer_config(cfg):
    from trl import RewardConfig

    return RewardConfig, {
        "center_rewards_coefficient": cfg.get("center_rewards_coefficient"),
        "max_length": cfg["max_length"],
    }


def prepare(ctx, rows):
    if rows is None:
        return None
    from lmforge.training.preference import guard_pairs

    guard_pairs(ctx, rows, ("chosen", "rejected"))
    if ctx.model.config.pad_token_id is None:
        ctx.model.config.pad_token_id = (
            ctx.tokenizer.pad_token_id
        )  # the score is read at the last non-pad token
    return rows.map(
        lambda r: {"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]},
        remove_columns=["prompt"],
        desc="joining prompts",
    )


def build_trainer(ctx):
    from lmforge.training.preference import reward_trainer

    return reward_trainer(ctx)
