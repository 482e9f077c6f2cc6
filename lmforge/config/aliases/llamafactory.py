"""LLaMA-Factory's flags (reference/seed_003): aliases, and the ones with no effect here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmforge.config.aliases.transforms import dtype, flash_attn, gigabytes, negate, pixels

_MERGE_FIRST = (
    "merge the adapter into its base first (`lmforge merge ADAPTER --output_dir M`) and pass M as {0}"
)
_VLLM = "vLLM runs only behind `lmforge serve MODEL --backend vllm` (pip install vllm); pass its settings in --vllm_args"

ALIASES: dict[str, tuple[str | tuple[str, ...], Callable[[Any], Any] | None]] = {
    # LLaMA-Factory
    "plot_loss": ("plot", None),
    "flash_attn": ("attn_implementation", flash_attn),
    "neat_packing": ("packing", None),  # lmforge's packing never attends across documents
    # --- LLaMA-Factory (seed_003) ---
    "ppo_score_norm": ("score_norm", None),  # seed_003 RLHF: PPO scores over their running mean / std
    "ppo_whiten_rewards": ("whiten_rewards", None),  # seed_003 RLHF: whiten PPO's token rewards
    "enable_liger_kernel": ("use_liger_kernel", None),  # seed_003 model: liger kernels (TrainingArguments)
    "moe_aux_loss_coef": ("router_aux_loss_coef", None),  # seed_003 model: MoE load-balancing loss weight
    "disable_gradient_checkpointing": (
        "gradient_checkpointing",
        negate,
    ),  # seed_003 model: LF checkpoints unless true
    "infer_dtype": ("dtype", dtype),  # seed_003 model: weights / activations dtype when generating
    "compute_dtype": ("dtype", dtype),  # seed_003 model: dtype of the model's computation
    "model_max_length": ("max_length", None),  # seed_003 model: longest input (LF derives it from cutoff_len)
    "export_size": ("max_shard_size", gigabytes),  # seed_003 export: shard size in GB
    "export_quantization_nsamples": ("quantization_nsamples", None),  # seed_003 export: calibration texts
    "image_resolution": ("image_max_pixels", pixels),  # seed_003 multimodal: max pixels of an image
    "video_resolution": ("video_max_pixels", pixels),  # seed_003 multimodal: max pixels of a frame
}

UNAVAILABLE: dict[str, tuple[tuple[str, ...], str]] = {
    # --- LLaMA-Factory (seed_003) ---
    "ppo_buffer_size": (
        ("1",),
        "lmforge's PPO updates once per rollout batch (MiniMind's train_ppo.py); size it with --per_device_train_batch_size",
    ),  # seed_003 RLHF: mini-batches per PPO step
    "ppo_epochs": (
        ("1",),
        "lmforge's PPO takes one pass per rollout (MiniMind's train_ppo.py); --update_old_actor_freq N keeps the ratio against older weights",
    ),  # seed_003 RLHF: passes per rollout
    "ppo_target": (
        (),
        "lmforge's PPO has a fixed KL weight, no adaptive KL controller; set --kl_coef",
    ),  # seed_003 RLHF: adaptive-KL target
    "ref_model_adapters": (
        ("none", ""),
        _MERGE_FIRST.format("--ref_model"),
    ),  # seed_003 RLHF: adapter on the reference
    "reward_model_adapters": (
        ("none", ""),
        _MERGE_FIRST.format("--reward_model"),
    ),  # seed_003 RLHF: adapter on the reward model
    "ref_model_quantization_bit": (
        ("none",),
        "the reference model loads unquantised (under --tuner lora the adapter-disabled base is the reference)",
    ),  # seed_003 RLHF
    "reward_model_quantization_bit": (("none",), "the reward model loads unquantised"),  # seed_003 RLHF
    "badam_update_ratio": (
        (),
        "ratio-mode BAdam is not offered (its sparse gradients bypass clipping); use --badam_mode layer",
    ),  # seed_003 BAdam: ratio mode
    "badam_mask_mode": (
        ("adjacent",),
        "ratio-mode BAdam (and its mask modes) is not offered; use --badam_mode layer",
    ),  # seed_003 BAdam: ratio mode
    "eval_num_beams": (
        ("none", "1"),
        "beam search is not offered; evaluation decodes greedily or samples",
    ),  # seed_003 data
    "ignore_pad_token_for_loss": (("true",), "padding never counts in lmforge's loss"),  # seed_003 data
    "tool_format": (
        ("none", ""),
        "tool calls are rendered by the chat template (--template); there is no separate tool format",
    ),  # seed_003 data
    "adapter_folder": (
        ("none", ""),
        "give the adapter folder itself with --adapter_name_or_path",
    ),  # seed_003 model
    "cache_dir": (
        ("none", ""),
        "nothing is downloaded here; pass a local model folder (the HF cache is read from HF_HOME)",
    ),  # seed_003 model: hub cache
    "use_fast_tokenizer": (("true",), "lmforge loads fast (Rust) tokenizers only"),  # seed_003 model
    "split_special_tokens": (("false",), "special tokens are never split into pieces here"),  # seed_003 model
    "low_cpu_mem_usage": (("true",), "transformers 5 always loads with low memory use"),  # seed_003 model
    "shift_attn": (
        ("false",),
        "S^2-Attn is not offered; extend the context with --rope_scaling",
    ),  # seed_003 model
    "mixture_of_depths": (("none", ""), "mixture-of-depths models are not offered"),  # seed_003 model
    "use_unsloth": (("false",), "unsloth is not used here; LoRA runs on peft"),  # seed_003 model
    "use_unsloth_gc": (
        ("false",),
        "unsloth is not used here; use --gradient_checkpointing true",
    ),  # seed_003 model
    "upcast_layernorm": (
        ("false",),
        "norms keep the model's dtype; train with --dtype float32 for float32 norms",
    ),  # seed_003 model
    "upcast_lmhead_output": (
        ("false", "true"),
        "the loss always reads the LM head's logits in float32",
    ),  # seed_003 model (always on here)
    "offload_folder": (("offload", "none", ""), "weights are never offloaded to disk here"),  # seed_003 model
    "ms_hub_token": (("none", ""), "nothing is downloaded from ModelScope here"),  # seed_003 model: hub token
    "om_hub_token": (("none", ""), "nothing is downloaded from Modelers here"),  # seed_003 model: hub token
    "device_map": (
        ("auto", "none", ""),
        "lmforge places the model itself; choose the device with --device",
    ),  # seed_003 model
    "block_diag_attn": (
        ("true",),
        "lmforge's packing always keeps documents apart (block-diagonal attention)",
    ),  # seed_003 model
    "vllm_maxlen": (("none",), _VLLM),  # seed_003 vLLM
    "vllm_gpu_util": (("none",), _VLLM),  # seed_003 vLLM
    "vllm_enforce_eager": (("false",), _VLLM),  # seed_003 vLLM
    "vllm_config": (("none", ""), _VLLM),  # seed_003 vLLM
    "quantization_method": (
        ("bitsandbytes", "bnb"),
        "--quantization_bit quantises with bitsandbytes; hqq / eetq are not offered",
    ),  # seed_003 quantization
    "quantization_device_map": (
        ("auto", "none", ""),
        "lmforge places the quantised model itself",
    ),  # seed_003 quantization
    "export_device": (("cpu", "auto"), "export runs on the CPU"),  # seed_003 export
    "export_quantization_maxlen": (
        ("1024",),
        "calibration texts are read whole; shorten them in --quantization_dataset",
    ),  # seed_003 export
    "export_legacy_format": (
        ("false",),
        "exports are safetensors only (.bin is not written)",
    ),  # seed_003 export
    "download_mode": (
        ("reuse_dataset_if_exists",),
        "nothing is downloaded here; the files are read from --task_dir",
    ),  # seed_003 eval
    "length_penalty": (
        ("1", "1.0"),
        "length_penalty applies to beam search, which is not offered",
    ),  # seed_003 generation
    "max_length": (
        (),
        "chat and serve cap the answer with --max_new_tokens (which overrides max_length in LLaMA-Factory too)",
    ),  # seed_003 generation: prompt + answer length, on commands without a max_length of their own
    "overwrite_output_dir": (
        ("true",),
        "training writes into an existing --output_dir (and resumes with --resume_from_checkpoint); pick a new folder",
    ),  # LF example configs (transformers 4.x TrainingArguments): train into a non-empty folder
}
