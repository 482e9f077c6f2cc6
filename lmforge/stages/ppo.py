"""PPO (Schulman et al. 2017) as MiniMind's train_ppo.py runs it: an actor and a critic, one update per
rollout, on lmforge's own trainer (lmforge/training/ppo.py; trl 1.16 has no PPO).

Each micro-batch of prompts is answered by the current policy (`--max_gen_len`, `--temperature`,
`--top_p`, `--num_generations` answers per prompt), scored by the rewards (as in `grpo`: rule rewards
`--reward_funcs`, a reward model `--reward_model_path`, `--reward_weights`, `--reasoning 1` adds the
think-format reward), and trained with token-level rewards (score on the last token − `--kl_coef` ·
KL to the reference), GAE (`--gamma`, `--lam`), the clipped policy loss (`--clip_epsilon`) and the
clipped value loss (× `--vf_coef`). The critic is the starting model's body with a one-score head,
trained at `--critic_learning_rate` in the same optimizer; it is saved as `critic/` in checkpoints and in
the run folder. `--update_old_actor_freq N` takes the importance ratio against weights refreshed every
N steps (MiniMind's old actor; 1: the sampling policy). The reference is a frozen copy of the starting
model, or the adapter-disabled base under a PEFT tuner (`--kl_coef 0`: none).

Batch sizes count prompts: `--batch_size 2 --num_generations 1` is MiniMind's default.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.fields import arg
from lmforge.errors import LmforgeError
from lmforge.rl.args import RLArgs

DATA_KIND = "prompt"

DEFAULTS = {
    "learning_rate": 8e-8,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_length": 66,
    "logging_steps": 1,
    "save_steps": 10,
    "model_name_or_path": "full_sft",
}


@dataclass
class Args(RLArgs):
    clip_epsilon: float = arg(0.1, "Clip range of the importance ratio in the policy loss")
    vf_coef: float = arg(0.5, "Weight of the critic's value loss")
    kl_coef: float = arg(0.02, "Per-token KL penalty to the reference in the reward (0: no reference kept)")
    critic_learning_rate: float = arg(8e-8, "Learning rate of the critic (value model)")
    update_old_actor_freq: int = arg(4, "Refresh the old actor (ratio denominator) every N steps; 1: always")
    cliprange_value: float = arg(0.2, "Clip range of the critic's values around the rollout-time values")
    gamma: float = arg(1.0, "Discount of the token-level rewards (GAE)")
    lam: float = arg(0.95, "GAE lambda")
    num_generations: int = arg(1, "Answers sampled per prompt")
    score_norm: bool = arg(
        False, "Normalise scores by their running mean and std before the KL penalty (LLaMA-Factory)"
    )
    whiten_rewards: bool = arg(False, "Whiten the token-level rewards (scale only) before GAE")


def validate(cfg) -> None:
    from lmforge.training.rl import check_reward_flags
    from lmforge.training.rollout_trainer import check_rollout_flags

    check_reward_flags(cfg)
    check_rollout_flags(cfg)
    if cfg["update_old_actor_freq"] < 1:
        raise LmforgeError(f"--update_old_actor_freq must be >= 1; got {cfg['update_old_actor_freq']}")
    if cfg["kl_coef"] < 0 or cfg["vf_coef"] < 0:
        raise LmforgeError("--kl_coef and --vf_coef must be >= 0")


def trainer_config(cfg):
    return None, {}


def prepare(ctx, rows):
    from lmforge.training.rl import drop_long_prompts

    return drop_long_prompts(ctx, rows)


def build_trainer(ctx):
    from lmforge.training.ppo import ppo_trainer

    return ppo_trainer(ctx)


def check_data(ctx) -> None:
    from lmforge.training.rl import check_data as check

    check(ctx)
