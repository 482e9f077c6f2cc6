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


def _negate(v: Any) -> Any:
    # LLaMA-Factory's disable_* flags: true → the native switch off
    if isinstance(v, str) and v.strip().lower() in (
        "1",
        "true",
        "yes",
        "y",
        "on",
        "0",
        "false",
        "no",
        "n",
        "off",
    ):
        return v.strip().lower() not in ("1", "true", "yes", "y", "on")
    return not v if isinstance(v, bool) else v


def _gigabytes(v: Any) -> Any:
    # LLaMA-Factory's export_size: a whole number of GB per shard
    return f"{v}GB" if str(v).strip().isdigit() else v


def _backend(v: Any) -> Any:
    return "hf" if str(v).strip().lower() in ("huggingface", "hf", "transformers") else v


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
    # --- LLaMA-Factory (seed_003) ---
    "ppo_score_norm": ("score_norm", None),  # seed_003 RLHF: PPO scores over their running mean / std
    "ppo_whiten_rewards": ("whiten_rewards", None),  # seed_003 RLHF: whiten PPO's token rewards
    "enable_liger_kernel": ("use_liger_kernel", None),  # seed_003 model: liger kernels (TrainingArguments)
    "moe_aux_loss_coef": ("router_aux_loss_coef", None),  # seed_003 model: MoE load-balancing loss weight
    "disable_gradient_checkpointing": (
        "gradient_checkpointing",
        _negate,
    ),  # seed_003 model: LF checkpoints unless true
    "infer_dtype": ("dtype", _dtype),  # seed_003 model: weights / activations dtype when generating
    "compute_dtype": ("dtype", _dtype),  # seed_003 model: dtype of the model's computation
    "model_max_length": ("max_length", None),  # seed_003 model: longest input (LF derives it from cutoff_len)
    "infer_backend": ("backend", _backend),  # seed_003 model: huggingface → serve's hf; UNAVAILABLE elsewhere
    "export_size": ("max_shard_size", _gigabytes),  # seed_003 export: shard size in GB
    "export_quantization_nsamples": ("quantization_nsamples", None),  # seed_003 export: calibration texts
}

# Reference flags whose effect cannot exist here (a hub download, a vendor backend not installed):
# flag → (values that ask for what lmforge already does, so are accepted as they are; the one-line
# reason, with what to do instead, for any other value). `{value}` in the reason is filled in.
# One line of provenance per entry, as for ALIASES.
_MERGE_FIRST = (
    "merge the adapter into its base first (`lmforge merge ADAPTER --output_dir M`) and pass M as {0}"
)
_NO_VISION = "lmforge trains text and audio models; image / video inputs are not supported"
_VLLM = "vLLM runs only behind `lmforge serve MODEL --backend vllm` (pip install vllm); pass its settings in --vllm_args"
UNAVAILABLE: dict[str, tuple[tuple[str, ...], str]] = {
    # --- mdl-toolkit (seed_002) ---
    "from_modelscope": (  # seed_002 all commands: load --model-name from ModelScope instead of the HF Hub
        ("false", "0", "no", "null", "none"),
        "ModelScope downloads are not available (lmforge loads local folders and the HF cache only); "
        "download the model first (`modelscope download --model NAME --local_dir DIR`) and pass "
        "--model-name DIR",
    ),
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
    "reward_model_type": (
        ("full",),
        "--reward_model is a full reward-model folder (an lmforge rm run; merge a LoRA one with `lmforge merge`); API rewards are not offered",
    ),  # seed_003 RLHF: lora / full / api
    "badam_update_ratio": (
        (),
        "ratio-mode BAdam is not offered (its sparse gradients bypass clipping); use --badam_mode layer",
    ),  # seed_003 BAdam: ratio mode
    "badam_mask_mode": (
        ("adjacent",),
        "ratio-mode BAdam (and its mask modes) is not offered; use --badam_mode layer",
    ),  # seed_003 BAdam: ratio mode
    "image_dir": (("none", ""), _NO_VISION),  # seed_003 data: image / video folder
    "image_resolution": ((), _NO_VISION),  # seed_003 multimodal
    "video_resolution": ((), _NO_VISION),  # seed_003 multimodal
    "video_fps": ((), _NO_VISION),  # seed_003 multimodal
    "video_maxlen": ((), _NO_VISION),  # seed_003 multimodal
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
    "model_revision": (
        ("main",),
        "nothing is downloaded here; check the revision out locally and pass its folder",
    ),  # seed_003 model: hub revision
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
    "vllm_max_lora_rank": (("none",), _VLLM),  # seed_003 vLLM
    "vllm_config": (("none", ""), _VLLM),  # seed_003 vLLM
    "backend": (
        ("hf", "huggingface"),
        "chat, infer and eval run on transformers; for vLLM use `lmforge serve MODEL --backend vllm` (pip install vllm)",
    ),  # seed_003 infer_backend outside serve
    "tuner": (
        ("lora", "full", "freeze", "oft", "none"),
        "outside training the model and --adapter_name_or_path decide; drop it",
    ),  # seed_003 finetuning_type on chat / infer / eval / export
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
    "num_beams": (("1",), "beam search is not offered (greedy or sampling)"),  # seed_003 generation
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
