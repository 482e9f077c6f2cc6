"""Compatibility names: MiniMind, mdl-toolkit, ms-swift and LLaMA-Factory flags mapped onto lmforge's keys.

Each alias maps to (native key, value transform). The table is shown by `--help` and in docs/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _none_if_none(v: Any) -> Any:
    return None if isinstance(v, str) and v.lower() in ("none", "null", "") else v


def _resume(v: Any) -> Any:
    # MiniMind: --from_resume 1 → continue from the newest checkpoint.
    if isinstance(v, str) and v.strip().lower() in ("0", "false", "no", ""):
        return None
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes"):
        return "latest"
    return "latest" if v else None


def _wandb(v: Any) -> Any:
    on = v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
    return "wandb" if on else "none"


def _dtype(v: Any) -> Any:
    table = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "half": "float16", "float": "float32"}
    return table.get(str(v).lower(), v)


def _tuner(v: Any) -> Any:
    return str(v).strip().lower().replace("-", "_") if isinstance(v, str) else v


def _flash_attn(v: Any) -> Any:
    # LLaMA-Factory's flash_attn: auto, disabled, sdpa, fa2
    table = {"auto": None, "disabled": "eager", "sdpa": "sdpa", "fa2": "flash_attention_2"}
    return table.get(str(v).strip().lower(), v)


def _comma_list(v: Any) -> Any:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v


def _quant_bits(v: Any) -> Any:
    # mdl-toolkit's --quantization 8bit|4bit (null: none)
    text = str(v).strip().lower()
    if text in ("null", "none", ""):
        return None
    return text[: -len("bit")] if text.endswith("bit") else v


# alias → (native key, or several: the first one the command has wins; value transform)
ALIASES: dict[str, tuple[str | tuple[str, ...], Callable[[Any], Any] | None]] = {
    # MiniMind trainer scripts (reference/seed_001)
    "epochs": ("num_train_epochs", None),
    "batch_size": ("per_device_train_batch_size", None),
    "accumulation_steps": ("gradient_accumulation_steps", None),
    "grad_clip": ("max_grad_norm", None),
    "log_interval": ("logging_steps", None),
    "save_interval": ("save_steps", None),
    # MiniMind: DataLoader workers; where a command has none (infer), its data-reading workers (mdl-toolkit)
    "num_workers": (("dataloader_num_workers", "preprocessing_num_workers"), None),
    "max_seq_len": ("max_length", None),
    "data_path": ("dataset", None),
    "from_weight": ("model_name_or_path", _none_if_none),
    "from_resume": ("resume_from_checkpoint", _resume),
    "use_wandb": ("report_to", _wandb),
    # MiniMind train_distillation.py (train distill): student = the stage's model, teacher its own flag
    "from_student_weight": ("model_name_or_path", _none_if_none),
    "student_hidden_size": ("hidden_size", None),
    "student_num_layers": ("num_hidden_layers", None),
    "from_teacher_weight": ("teacher_model_name_or_path", None),
    # ms-swift / LLaMA-Factory
    "model": ("model_name_or_path", _none_if_none),
    "model_name_or_path": ("model", _none_if_none),  # chat / infer call it --model
    "load_from": (("model", "model_name_or_path"), _none_if_none),  # MiniMind eval script
    "model_id_or_path": ("model_name_or_path", _none_if_none),
    "ckpt_dir": (("adapter", "model_name_or_path"), _none_if_none),  # swift: a LoRA run to merge/infer
    "sft_type": ("tuner", _tuner),
    "finetuning_type": ("tuner", _tuner),
    "train_type": ("tuner", _tuner),
    "target_modules": ("lora_target", _comma_list),
    "lora_target_modules": ("lora_target", _comma_list),
    "target_regex": ("lora_target", None),
    "additional_target": ("modules_to_save", _comma_list),
    "lora_bias_trainable": ("lora_bias", None),
    "lora_lr_ratio": ("loraplus_lr_ratio", None),
    "adapters": (("adapter_name_or_path", "adapter"), _comma_list),
    "adapter_name_or_path": ("adapter", None),  # merge's --adapter (train has its own key)
    "lora_weight": ("adapter", None),  # merge's --adapter (chat / infer have their own key)
    "export_dir": ("output_dir", None),  # LLaMA-Factory export
    "export_quantization_bit": ("quantization_bit", None),
    "export_quantization_dataset": ("quantization_dataset", None),
    "export_hub_model_id": ("push_to_hub", None),
    "hf_hub_token": ("hub_token", None),
    "output": ("output_dir", None),
    "num_expand": ("expand_layers", None),
    "galore_target_modules": ("galore_target", _comma_list),
    "galore_update_proj_gap": ("galore_update_interval", None),
    "apollo_update_proj_gap": ("apollo_update_interval", None),
    "bnb_4bit_quant_type": ("quantization_type", None),
    "bnb_4bit_use_double_quant": ("double_quantization", None),
    "reward_model": ("reward_model_path", None),  # LLaMA-Factory / ms-swift
    # ms-swift GKD's teacher folder; `train distill-api`'s own --teacher_model (an API model name) wins there
    "teacher_model": ("teacher_model_name_or_path", None),
    "max_completion_length": ("max_gen_len", None),  # TRL
    "pref_beta": ("beta", None),  # LLaMA-Factory preference flags
    "pref_loss": ("loss_type", None),
    "pref_ftx": ("rpo_alpha", None),
    "dpo_label_smoothing": ("label_smoothing", None),
    "kto_chosen_weight": ("desirable_weight", None),
    "kto_rejected_weight": ("undesirable_weight", None),
    "cutoff_len": ("max_length", None),
    "max_seq_length": ("max_length", None),
    "dataset_test_ratio": ("val_size", None),
    "num_proc": ("preprocessing_num_workers", None),  # datasets' / ms-swift's name
    "tokenizing_batch_size": ("preprocessing_batch_size", None),  # mdl-toolkit
    "dataset_num_proc": ("preprocessing_num_workers", None),
    "eval_dataset": ("val_dataset", None),  # mdl-toolkit
    "default_system": ("system", None),
    "template_system": ("system", None),
    # transformers 4.x names that users still type (v5 folded the ratio into warmup_steps < 1)
    "warmup_ratio": ("warmup_steps", None),
    "evaluation_strategy": ("eval_strategy", None),
    # LLaMA-Factory
    "plot_loss": ("plot", None),
    "flash_attn": ("attn_implementation", _flash_attn),
    "neat_packing": ("packing", None),  # lmforge's packing never attends across documents
    # --- mdl-toolkit (seed_002) ---
    "model_name": (("model_name_or_path", "model"), _none_if_none),  # seed_002 all commands: model folder
    "train_dataset": ("dataset", None),  # seed_002 train: training data (CSV or converted folder)
    "lr": ("learning_rate", None),  # seed_002 train: learning rate
    "num_epochs": ("num_train_epochs", None),  # seed_002 train: epochs (a float is a partial epoch)
    "quantization": ("quantization_bit", _quant_bits),  # seed_002 train: 8bit / 4bit weights
    "eval_batch_size": ("per_device_eval_batch_size", None),  # seed_002 train: eval batch per device
    "system_prompt": ("system", None),  # seed_002 inference: default system prompt (train has its own key)
}

# Reference flags whose effect cannot exist here (a hub download, a vendor backend not installed):
# flag → (values that ask for what lmforge already does, so are accepted as they are; the one-line
# reason, with what to do instead, for any other value). `{value}` in the reason is filled in.
# One line of provenance per entry, as for ALIASES.
UNAVAILABLE: dict[str, tuple[tuple[str, ...], str]] = {
    # --- mdl-toolkit (seed_002) ---
    "from_modelscope": (  # seed_002 all commands: load --model-name from ModelScope instead of the HF Hub
        ("false", "0", "no", "null", "none"),
        "ModelScope downloads are not available (lmforge loads local folders and the HF cache only); "
        "download the model first (`modelscope download --model NAME --local_dir DIR`) and pass "
        "--model-name DIR",
    ),
}

VALUE_TRANSFORMS: dict[str, Callable[[Any], Any]] = {
    "tuner": _tuner,
    "lora_target": _comma_list,
    "modules_to_save": _comma_list,
    "dtype": _dtype,
    "model_name_or_path": _none_if_none,
    "resume_from_checkpoint": lambda v: _none_if_none(
        _resume(v) if str(v).lower() in ("0", "1", "true", "false") else v
    ),
}
