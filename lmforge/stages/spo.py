"""SPO (single-stream policy optimisation; Xu & Ding 2025, arXiv:2509.13232) as MiniMind's train_spo.py
runs it: one answer per prompt, no critic and no group; the baseline of each prompt is a persistent
moving average of its past rewards (`--spo_ema`; an unseen prompt starts at the global mean), and the
advantage r − b, whitened over the batch, weighs every response token in the clipped policy loss
(`--clip_epsilon`) plus `--beta` · KL to the reference (k3; `--beta 0`: no reference kept). On lmforge's
own trainer (lmforge/training/spo.py); the baseline tracker is saved in each checkpoint
(`spo_value_tracker.json`) so a resumed run continues exactly.

Rewards as in `grpo`/`ppo`: `--reward_funcs`, `--reward_model_path`, `--reward_weights`, `--reasoning 1`.
Batch sizes count prompts (MiniMind: `--batch_size 2 --accumulation_steps 4`).
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.fields import arg
from lmforge.errors import LmforgeError
from lmforge.rl.args import RLArgs

DATA_KIND = "prompt"

DEFAULTS = {
    "learning_rate": 1e-7,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "max_length": 66,
    "logging_steps": 1,
    "save_steps": 10,
    "model_name_or_path": "full_sft",
}


@dataclass
class Args(RLArgs):
    beta: float = arg(0.02, "KL coefficient to the reference model in the loss (0: no reference kept)")
    spo_ema: float = arg(0.1, "Rate of the per-prompt baseline's moving average, in (0, 1]")
    clip_epsilon: float = arg(0.2, "Clip range of the importance ratio in the policy loss")
    num_generations: int = arg(1, "Answers sampled per prompt")


def validate(cfg) -> None:
    from lmforge.training.rl import check_reward_flags
    from lmforge.training.rollout_trainer import check_rollout_flags

    check_reward_flags(cfg)
    check_rollout_flags(cfg)
    if not 0 < cfg["spo_ema"] <= 1:
        raise LmforgeError(f"--spo_ema must be in (0, 1]; got {cfg['spo_ema']}")
    if cfg["beta"] < 0:
        raise LmforgeError(f"--beta must be >= 0; got {cfg['beta']}")


def trainer_config(cfg):
    return None, {}


def prepare(ctx, rows):
    from lmforge.training.rl import drop_long_prompts

    return drop_long_prompts(ctx, rows)


def build_trainer(ctx):
    from lmforge.training.spo import spo_trainer

    return spo_trainer(ctx)


def check_data(ctx) -> None:
    from lmforge.training.rl import check_data as check

    check(ctx)
