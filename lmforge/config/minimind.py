"""MiniMind's commands as written (reference seed_001): stage aliases, default weight names and
the defaults that apply only when an invocation is MiniMind-style.

A `train` invocation is **MiniMind-style** when its command line uses at least one flag in a
spelling only MiniMind's trainer scripts use (`--data_path`, `--epochs`, `--from_weight`,
`--save_weight`, `--max_seq_len`, `--accumulation_steps`, ... see `MINIMIND_FLAGS`) and gives no
`--output_dir`. Such a run then behaves as MiniMind's script would:

- it is saved as `save_dir/<save_weight>_<hidden>[_moe]` with the script's default weight name
  (`pretrain`, `full_sft`, `dpo`, `reason`, `full_dist`, `ppo_actor`, `grpo`, `spo`,
  `api_distill`), so the next stage's default `--from_weight` finds it and `--from_resume 1`
  resumes it;
- `--data_path` defaults to the script's file under `dataset/` (`dataset/pretrain_hq.jsonl`, ...);
- the RL stages (ppo, grpo, spo) default to `--reasoning 1`;
- GRPO's `--batch_size` counts prompts: completions per step = batch_size x num_generations.

Any other invocation keeps lmforge's own behaviour (timestamped run folders, TRL's completion
counts, `--reasoning 0`).
"""

from __future__ import annotations

from typing import Any

# seed_001 spellings that lmforge's own flags do not use: their presence marks a MiniMind command
MINIMIND_FLAGS = frozenset(
    {
        "epochs",
        "accumulation_steps",
        "grad_clip",
        "log_interval",
        "save_interval",
        "max_seq_len",
        "data_path",
        "from_weight",
        "from_resume",
        "use_wandb",
        "save_weight",
        "lora_name",
        "from_student_weight",
        "from_teacher_weight",
        "student_hidden_size",
        "student_num_layers",
        "teacher_hidden_size",
        "teacher_num_layers",
    }
)

# lmforge stage → MiniMind's default --save_weight of that script
SAVE_WEIGHT = {
    "pretrain": "pretrain",
    "sft": "full_sft",
    "dpo": "dpo",
    "distill-reason": "reason",
    "distill": "full_dist",
    "ppo": "ppo_actor",
    "grpo": "grpo",
    "spo": "spo",
    "distill-api": "api_distill",
}

# lmforge stage → the script's default --data_path (MiniMind's `../dataset/X` run from trainer/;
# lmforge runs from the checkout's root)
DATA_PATH = {
    "pretrain": "dataset/pretrain_hq.jsonl",
    "sft": "dataset/sft_mini_512.jsonl",
    "lora": "dataset/lora_identity.jsonl",
    "dpo": "dataset/dpo.jsonl",
    "distill-reason": "dataset/r1_mix_1024.jsonl",
    "distill": "dataset/sft_mini_512.jsonl",
    "ppo": "dataset/rlaif-mini.jsonl",
    "grpo": "dataset/rlaif-mini.jsonl",
    "spo": "dataset/rlaif-mini.jsonl",
    "distill-api": "dataset/sft_mini_512.jsonl",
}

RL_STAGES = ("ppo", "grpo", "spo")

# `lmforge train NAME` for MiniMind script names that are not lmforge stage names:
# NAME → (lmforge stage, the script's defaults over the stage's)
STAGE_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    # train_lora.py: LoRA on full_sft, 50 epochs, batch 32, lr 1e-4, log every 10 steps,
    # saved as save_dir/lora/lora_identity_<hidden>
    "lora": (
        "sft",
        {
            "tuner": "lora",
            "lora_name": "lora_identity",
            "model_name_or_path": "full_sft",
            "num_train_epochs": 50,
            "per_device_train_batch_size": 32,
            "learning_rate": 1e-4,
            "logging_steps": 10,
        },
    ),
    # train_distillation.py: white-box distillation (lmforge's `distill`, whose defaults are its own)
    "distillation": ("distill", {}),
    # train_full_sft.py: `lmforge train full_sft` is `train sft`
    "full-sft": ("sft", {}),
}


def stage_alias(name: str) -> tuple[str, dict[str, Any]]:
    """(lmforge stage, extra defaults) for a stage name, MiniMind script names included."""
    key = name.replace("_", "-")
    if key in STAGE_ALIASES:
        return STAGE_ALIASES[key]
    return name, {}


def typed_keys(argv: list[str]) -> set[str]:
    """The option names as typed on the command line (before aliases are resolved)."""
    from lmforge.config.loader import split_argv

    _, pairs = split_argv(argv)
    return {str(k) for k, _ in pairs}


def is_minimind_style(typed: set[str]) -> bool:
    """See the module docstring."""
    return bool(typed & MINIMIND_FLAGS) and "output_dir" not in typed


def apply_minimind_defaults(stage: str, cfg, argv: list[str]) -> bool:
    """Set MiniMind's defaults on a resolved `train` config when the invocation is MiniMind-style
    (values the user gave win). Returns whether it was."""
    typed = typed_keys(argv)
    if not is_minimind_style(typed) or cfg.get("output_dir"):
        return False

    def default(key: str, value: Any) -> None:
        if key not in cfg.explicit:
            cfg.values[key] = value
            cfg.layered.add(key)

    if not cfg.get("save_weight") and not cfg.get("lora_name") and stage in SAVE_WEIGHT:
        default("save_weight", SAVE_WEIGHT[stage])
    if not cfg.get("dataset"):
        default("dataset", DATA_PATH["lora" if cfg.get("lora_name") else stage])
    if stage in RL_STAGES and "reasoning" in cfg.values:
        default("reasoning", True)
    if stage == "grpo" and "batch_size" in typed:  # MiniMind counts prompts, TRL completions
        prompts = cfg["per_device_train_batch_size"]
        cfg.values["per_device_train_batch_size"] = prompts * cfg["num_generations"]
    return True


# scripts/eval_llm.py's generation defaults, for a `chat` that names its model as that script does
EVAL_LLM_FLAGS = frozenset({"weight", "load_from"})
EVAL_LLM_DEFAULTS = {"top_p": 0.85, "max_new_tokens": 8192}


def chat_defaults(argv: list[str]) -> dict[str, Any] | None:
    """eval_llm.py's top_p / max_new_tokens when `chat` is given `--weight` or `--load_from`."""
    return chat_defaults_for(typed_keys(argv))


def chat_defaults_for(typed: set[str]) -> dict[str, Any] | None:
    """`chat_defaults` for the option names given (e.g. a pipeline stage's `args` keys)."""
    return dict(EVAL_LLM_DEFAULTS) if set(typed) & EVAL_LLM_FLAGS else None


# dataset/generate_*_from_api.py: seconds between API calls
RATE_LIMIT_DELAY = {"distill": 0.5, "qa": 1.0}


def generate_rate_default(command: str, cfg) -> None:
    """MiniMind's spacing of calls when `generate` talks to its default endpoint (OpenRouter, a
    rate-limited remote API) and no `--rate_limit_delay` was given; a server named with
    `--base_url` (e.g. a local one) is not slowed down."""
    if "rate_limit_delay" in cfg.explicit or "base_url" in cfg.explicit:
        return  # an unset --base_url is the default endpoint (teacher/args.py DEFAULT_BASE_URL)
    if command in RATE_LIMIT_DELAY:
        cfg.values["rate_limit_delay"] = RATE_LIMIT_DELAY[command]
