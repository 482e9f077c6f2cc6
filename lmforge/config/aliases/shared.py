"""Flag names ms-swift and LLaMA-Factory share (both on transformers' `TrainingArguments`), and
transformers 4.x names users still type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmforge.config.aliases.transforms import comma_list, none_if_none, swift_targets, swift_tuner, tuner

ALIASES: dict[str, tuple[str | tuple[str, ...], Callable[[Any], Any] | None]] = {
    # ms-swift / LLaMA-Factory
    "model": ("model_name_or_path", none_if_none),
    "model_name_or_path": ("model", none_if_none),  # chat / infer call it --model
    "load_from": (("model", "model_name_or_path"), none_if_none),  # MiniMind eval script
    "model_id_or_path": (("model_name_or_path", "model"), none_if_none),  # chat/infer/serve: --model
    # swift: the checkpoint of a LoRA or full run to merge / infer / serve / export / eval
    "ckpt_dir": (("adapter", "model_name_or_path", "model"), none_if_none),
    "sft_type": ("tuner", swift_tuner),  # swift names (llamapro, ...) on top of lmforge's
    "finetuning_type": ("tuner", tuner),
    "train_type": ("tuner", tuner),
    "target_modules": ("lora_target", swift_targets),  # swift: DEFAULT/AUTO = q,k,v; ALL = all
    "lora_target_modules": ("lora_target", comma_list),
    "target_regex": ("lora_target", None),
    "additional_target": ("modules_to_save", comma_list),
    "lora_bias_trainable": ("lora_bias", None),
    "lora_lr_ratio": ("loraplus_lr_ratio", None),
    "adapters": (("adapter_name_or_path", "adapter"), comma_list),
    "adapter_name_or_path": (
        ("adapter", "lora_weight"),
        None,
    ),  # merge/export --adapter, chat/infer/eval --lora_weight
    "lora_weight": ("adapter", None),  # merge's --adapter (chat / infer have their own key)
    "export_dir": ("output_dir", None),  # LLaMA-Factory export
    "export_quantization_bit": ("quantization_bit", None),
    "export_quantization_dataset": ("quantization_dataset", None),
    "export_hub_model_id": ("push_to_hub", None),
    "hf_hub_token": ("hub_token", None),
    "output": ("output_dir", None),
    "num_expand": ("expand_layers", None),
    "galore_target_modules": ("galore_target", comma_list),
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
}
