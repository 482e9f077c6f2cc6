"""GRPO (Shao et al. 2024, DeepSeekMath) on TRL's GRPOTrainer: `--num_generations` answers per
prompt, group-normalised rewards, clipped policy loss, optional KL to the reference (`--beta`).

Rewards (lmforge/rl/rewards.py): named rule rewards (`accuracy` against the row's answer, `format`
for `<think>` answers, `length`, `repetition`) and/or a reward model (`--reward_model_path`: an
lmforge `rm` run or any sequence-classification folder), weighted by `--reward_weights`.
`--reasoning 1` adds the think-format reward as MiniMind does.

`--per_device_train_batch_size` counts completions, as in TRL; MiniMind's `--batch_size` counts
prompts in a MiniMind-style invocation (lmforge/config/minimind.py): `--batch_size 2
--num_generations 8` is 16 completions per step, as `--per_device_train_batch_size 16` (the default).
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
    "per_device_train_batch_size": 16,
    "gradient_accumulation_steps": 1,
    "max_length": 66,
    "logging_steps": 1,
    "save_steps": 10,
    "model_name_or_path": "full_sft",
}

LOSSES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")


@dataclass
class Args(RLArgs):
    num_generations: int = arg(8, "Answers sampled per prompt (the group)")
    beta: float = arg(0.02, "KL coefficient to the reference model (0: no reference kept)")
    loss_type: str = arg("dapo", f"Policy loss: {', '.join(LOSSES)}", choices=LOSSES)
    epsilon: float = arg(0.2, "PPO-style clip range of the importance ratio")
    scale_rewards: str = arg(
        "group", "Divide advantages by the std of: group, batch, or none", choices=("group", "batch", "none")
    )
    use_vllm: bool = arg(False, "Generate with vLLM (GPU; pip install vllm)")


def validate(cfg) -> None:
    from lmforge.training.rl import check_reward_flags

    check_reward_flags(cfg)
    per_step = cfg["per_device_train_batch_size"] * cfg["gradient_accumulation_steps"]
    if cfg["num_generations"] < 2 or per_step % cfg["num_generations"]:
        raise LmforgeError(
            f"--num_generations {cfg['num_generations']} must be >= 2 and divide the completions per step "
            f"(per_device_train_batch_size x gradient_accumulation_steps = {per_step})"
        )


def trainer_config(cfg):
    from trl import GRPOConfig

    return GRPOConfig, {
        "num_generations": cfg["num_generations"],
        "beta": cfg["beta"],
        "max_completion_length": cfg["max_gen_len"],
        "loss_type": cfg["loss_type"],
        "temperature": cfg["temperature"],
        "top_p": cfg["top_p"],
        "epsilon": cfg["epsilon"],
        "scale_rewards": cfg["scale_rewards"],
        "use_vllm": cfg["use_vllm"],
    }


def prepare(ctx, rows):
    from lmforge.training.rl import drop_long_prompts

    return drop_long_prompts(ctx, rows)


def build_trainer(ctx):
    from lmforge.training.rl import grpo_trainer

    return grpo_trainer(ctx)


def check_data(ctx) -> None:
    from lmforge.training.rl import check_data as check

    check(ctx)
