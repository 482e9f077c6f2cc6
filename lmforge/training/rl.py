"""RL stages' trainers: GRPO on TRL's GRPOTrainer with lmforge's trainer features mixed in.
(PPO and SPO, lmforge's own, share lmforge/rl's rollout, reward and KL code.)"""

from __future__ import annotations

import logging

from trl import GRPOTrainer

from lmforge.errors import LmforgeError
from lmforge.training.trainer import LmforgeMixin, stage_trainer_kwargs

log = logging.getLogger("lmforge")


class LmforgeGRPOTrainer(LmforgeMixin, GRPOTrainer):
    pass


def check_reward_flags(cfg) -> None:
    """--reward_funcs / --reward_weights / --reasoning / --reward_model_path, before any loading."""
    from pathlib import Path

    from lmforge.rl.rewards import plan_rewards

    plan_rewards(
        cfg.get("reward_funcs"),
        cfg.get("reward_weights"),
        reasoning=cfg["reasoning"],
        reward_model=bool(cfg.get("reward_model_path")),
    )
    path = cfg.get("reward_model_path")
    if path and not Path(path, "config.json").is_file():  # before any model or data is loaded
        raise LmforgeError(
            f"--reward_model_path {path}: not a model folder (no config.json); train one with "
            "`lmforge train rm` or give a sequence-classification model folder"
        )


def reward_functions(ctx):
    """The stage's reward callables and weights from --reward_funcs / --reward_weights /
    --reward_model_path / --reasoning."""
    from lmforge.rl.rewards import build_reward_funcs

    cfg = ctx.cfg
    return build_reward_funcs(
        cfg.get("reward_funcs"),
        cfg.get("reward_weights"),
        reasoning=cfg["reasoning"],
        reward_model=cfg.get("reward_model_path"),
        tokenizer=ctx.tokenizer,
        clip=cfg.get("reward_clip"),
        length_target=cfg.get("length_target") or 200,
        trust_remote_code=cfg["trust_remote_code"],
    )


ANSWER_REWARDS = ("accuracy", "closeness")  # rewards that compare with the row's answer
ANSWER_COLUMNS = ("answer", "solution", "gt")


def check_data(ctx) -> None:
    """The RL stages' data check, run before the run folder is written."""
    check_reward_possible(ctx.cfg, ctx.train_dataset)


def check_reward_possible(cfg, dataset) -> None:
    """Refuse a run whose every reward is 0 by construction: only answer-comparing rewards, no
    reward model, and no row with a ground-truth answer (`gt` / `answer`)."""
    from lmforge.rl.rewards import plan_rewards

    chosen, _ = plan_rewards(
        cfg.get("reward_funcs"),
        cfg.get("reward_weights"),
        reasoning=cfg["reasoning"],
        reward_model=bool(cfg.get("reward_model_path")),
    )
    if cfg.get("reward_model_path") or any(n not in ANSWER_REWARDS for n in chosen):
        return
    names = getattr(dataset, "column_names", None) or []
    if not hasattr(dataset, "__len__"):  # streamed: its values are not known before training
        return
    if any(any(v not in (None, "", []) for v in dataset[c]) for c in ANSWER_COLUMNS if c in names):
        return
    raise LmforgeError(
        f"train {cfg['stage']}: no reward can be non-zero: {', '.join(chosen)} compare answers with the "
        f"rows' `gt`/`answer`, and {cfg['dataset']} has none; add --reward_model_path, --reasoning 1 "
        "or --reward_funcs format,length,repetition"
    )


def drop_long_prompts(ctx, rows):
    """Keep prompts whose rendered chat fits --max_length tokens (MiniMind's max_seq_len is the prompt
    budget in RL); the rest are dropped and counted."""
    if rows is None:
        return None
    from lmforge.data.chat import encode_prompt, fold_system, is_lmforge_chatml

    tok, limit, thinking = ctx.tokenizer, ctx.cfg["max_length"], ctx.cfg["enable_thinking"]

    def fits(row):
        return len(encode_prompt(tok, row["prompt"], enable_thinking=thinking)) <= limit

    kept = rows.filter(fits, desc="dropping prompts longer than max_length")
    if not is_lmforge_chatml(tok):  # TRL renders the prompts itself: give it templatable messages
        kept = kept.map(lambda r: {"prompt": fold_system(tok, r["prompt"])}, desc="folding system turns")
    if hasattr(rows, "__len__"):
        ctx.stats["prompts_too_long"] = len(rows) - len(kept)
        if len(kept) == 0:
            raise LmforgeError(
                f"{ctx.cfg['dataset']}: every prompt is longer than --max_length {limit} tokens"
            )
    return kept


def grpo_trainer(ctx):
    funcs, weights = reward_functions(ctx)
    ctx.training_args.reward_weights = weights
    return LmforgeGRPOTrainer(
        reward_funcs=funcs,
        **stage_trainer_kwargs(ctx),
    )
