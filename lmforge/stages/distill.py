"""White-box knowledge distillation (Hinton et al. 2015) from a teacher model folder into the
student: `alpha * CE + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T)` on the assistant tokens
of chat rows (lmforge/training/distill.py). Teacher and student may differ in size; they must share
the tokenizer. MiniMind's train_distillation.py flags work: `--from_student_weight full_sft
--student_hidden_size 512` is the student `out/full_sft_512`, `--from_teacher_weight full_sft
--teacher_hidden_size 768` the teacher `out/full_sft_768`.

`--distill_on_policy true`: on-policy distillation (GKD, Agarwal et al. 2024) on TRL's
DistillationTrainer: the student samples answers to the rows' prompts (up to `--max_gen_len`
tokens at `--temperature`, default 1.0 there) and learns the teacher's distribution on every
sampled token, by the generalized Jensen-Shannon divergence `--beta` (0 forward KL, 1 reverse KL).

MiniMind's learning rate (5e-6) assumes its large pretraining run; a model trained for minutes
needs more (e.g. `--learning_rate 5e-4`), as for SFT.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.fields import arg
from lmforge.errors import LmforgeError

DATA_KIND = "chat"

DEFAULTS = {
    "learning_rate": 5e-6,
    "num_train_epochs": 6,
    "per_device_train_batch_size": 32,
    "gradient_accumulation_steps": 1,
    "max_length": 512,
    "packing": False,
    "save_steps": 500,
    "model_name_or_path": "full_sft",
}

# Flags that change the tokenised data (the rest, alpha, temperature, the teacher, do not): a
# `--tokenized_path` cache is reused across them.
FEATURE_KEYS = ("distill_on_policy",)


@dataclass
class Args:
    teacher_model_name_or_path: str | None = arg(
        "full_sft",
        "Teacher: an HF folder, a run folder or checkpoint, or a MiniMind name inside --save_dir "
        "(full_sft → out/full_sft_<teacher_hidden_size>); same tokenizer as the student",
    )
    teacher_hidden_size: int = arg(
        768, "Teacher hidden size: picks MiniMind names (full_sft_768); checked if given"
    )
    teacher_num_layers: int = arg(
        16, "Teacher layers (MiniMind's flag): checked against the teacher if given"
    )
    alpha: float = arg(0.5, "Weight of the cross-entropy on the data's answers; 1 - alpha weighs T²·KL")
    temperature: float = arg(
        1.5,
        "Softmax temperature of both models in the KL term; on-policy: sampling and loss (default 1.0 there)",
    )
    distill_on_policy: bool = arg(
        False, "On-policy (GKD) distillation on TRL's DistillationTrainer: the student samples the answers"
    )
    beta: float = arg(1.0, "On-policy: generalized JSD interpolation (0 forward KL, 0.5 JSD, 1 reverse KL)")
    max_gen_len: int = arg(256, "On-policy: most tokens the student samples per answer")


def trainer_config(cfg):
    """TRL's DistillationConfig for the on-policy variant; the off-policy trainer takes plain
    TrainingArguments."""
    if not cfg["distill_on_policy"]:
        return None, {}
    from trl import DistillationConfig

    return DistillationConfig, {
        "beta": cfg["beta"],
        "temperature": cfg["temperature"] if "temperature" in cfg.explicit else 1.0,
        "max_completion_length": cfg["max_gen_len"],
        # off unless asked for, as in lmforge's other stages (TRL's configs default it on)
        "activation_checkpointing": bool(
            cfg.get("activation_checkpointing") or cfg.get("gradient_checkpointing")
        ),
    }


def validate(cfg) -> None:
    """Flags of the other variant stop the run when set to anything but their default (a saved
    lmforge_args.yaml holds every flag, so being present alone means nothing)."""
    if not 0.0 <= cfg["alpha"] <= 1.0:
        raise LmforgeError(f"--alpha must be in [0, 1]; got {cfg['alpha']}")
    if cfg["temperature"] <= 0:
        raise LmforgeError(f"--temperature must be > 0; got {cfg['temperature']}")
    on_policy = cfg["distill_on_policy"]
    if on_policy and cfg["alpha"] != _default("alpha"):
        raise LmforgeError(
            "--alpha weighs the cross-entropy on the data's answers; --distill_on_policy trains on the "
            "student's own samples, which have none (drop --alpha, or --distill_on_policy)"
        )
    for flag in ("beta", "max_gen_len"):
        if not on_policy and cfg[flag] != _default(flag):
            raise LmforgeError(f"--{flag} applies to --distill_on_policy true only (off-policy uses --alpha)")
    if not 0.0 <= cfg["beta"] <= 1.0:
        raise LmforgeError(f"--beta must be in [0, 1]; got {cfg['beta']}")


def _default(name: str):
    from dataclasses import fields

    return next(f.default for f in fields(Args) if f.name == name)


def prepare(ctx, rows):
    if ctx.cfg["distill_on_policy"]:
        from lmforge.training.rl import drop_long_prompts

        prompts = rows.map(_to_prompt, remove_columns=rows.column_names).filter(
            lambda r: len(r["prompt"]) > 0
        )
        return drop_long_prompts(ctx, prompts)
    from lmforge.data.tokenize import tokenize_chat

    return tokenize_chat(ctx, rows)


def _to_prompt(row):
    """A chat row's conversation up to its last assistant turn: what the student answers on-policy."""
    messages = row["messages"]
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    return {"prompt": messages[:last]}


def build_trainer(ctx):
    from lmforge.training import distill

    if ctx.processor is not None:
        raise LmforgeError("train distill: audio models are not supported (use train sft)")
    teacher, _ = distill.load_teacher(
        ctx.cfg,
        ctx.tokenizer,
        dtype=distill.teacher_dtype(ctx.training_args),
        device=ctx.training_args.device,
    )
    if ctx.cfg["distill_on_policy"]:
        return distill.on_policy_trainer(ctx, teacher)
    return distill.kd_trainer(ctx, teacher)
