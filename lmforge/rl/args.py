"""Flags the RL stages share: how rewards are built (grpo, ppo, spo) and how rollouts are sampled.

Each stage's `Args` subclasses these, so a flag is declared, documented and validated in one place;
what differs per stage (group size, clip ranges, KL) stays in the stage file."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.fields import arg


@dataclass
class RewardArgs:
    """The reward signal: rule rewards, a reward model, their weights (lmforge/rl/rewards.py)."""

    reasoning: bool = arg(False, "Reasoning model: add the <think> format reward (MiniMind --reasoning 1)")
    reward_funcs: str = arg(
        "accuracy", "Comma list of rule rewards: accuracy, closeness, format, length, repetition", multi=True
    )
    reward_weights: str | None = arg(
        None, "Comma list of weights, one per reward (reward model last)", multi=True
    )
    reward_model_path: str | None = arg(
        None, "Sequence-classification reward model folder (an lmforge rm run)"
    )
    reward_clip: float = arg(5.0, "Clip reward-model scores to [-clip, clip]")
    length_target: int = arg(200, "Target answer length in characters for the length reward")


@dataclass
class SamplingArgs:
    """How each rollout answer is sampled."""

    max_gen_len: int = arg(1536, "Most tokens generated per answer")
    temperature: float = arg(1.0, "Sampling temperature of the rollouts")
    top_p: float = arg(1.0, "Nucleus sampling of the rollouts")


@dataclass
class RLArgs(SamplingArgs, RewardArgs):
    """Both groups, in --help order: rewards first, then sampling."""
