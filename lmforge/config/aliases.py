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
    return table.get(str(v).lower(), v.lower() if isinstance(v, str) and v.lower() == "auto" else v)


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


# --- ms-swift (seed_004) value spellings -------------------------------------------------------
_SWIFT_TUNERS = {"llamapro": "llama_pro", "lora": "lora", "full": "full"}
_SWIFT_NO_TUNER = {
    "longlora": "LongLoRA's shifted sparse attention is not offered; train --sft_type lora with "
    "--rope_scaling linear|dynamic|yarn --rope_factor N for a longer context",
    "adapter": "bottleneck adapters are not offered; use --sft_type lora or ia3",
    "reft": "ReFT is not offered (it needs pyreft); use --sft_type lora or ia3",
}


def _swift_tuner(v: Any) -> Any:
    """ms-swift's --sft_type names (llamapro, longlora, adapter, reft) on top of lmforge's tuners."""
    name = _tuner(v)
    if isinstance(name, str) and name in _SWIFT_NO_TUNER:
        from lmforge.errors import LmforgeError

        raise LmforgeError(f"--sft_type {name}: {_SWIFT_NO_TUNER[name]}")
    return _SWIFT_TUNERS.get(name, name) if isinstance(name, str) else name


def _swift_targets(v: Any) -> Any:
    # ms-swift: DEFAULT/AUTO = the model's attention projections, ALL = every linear layer
    words = [str(x) for x in v] if isinstance(v, (list, tuple)) else str(v).split(",")
    table = {"default": "q_proj,k_proj,v_proj", "auto": "q_proj,k_proj,v_proj", "all": "all"}
    return ",".join(table.get(w.strip().lower(), w.strip()) for w in words if w.strip())


def _auto_none(v: Any) -> Any:
    return None if isinstance(v, str) and v.strip().lower() in ("auto", "none", "") else v


def _use_flash_attn(v: Any) -> Any:
    s = str(v).strip().lower()
    return {"true": "flash_attention_2", "1": "flash_attention_2", "false": "sdpa", "0": "sdpa"}.get(
        s, None if s in ("none", "auto") else v
    )


def _infer_backend(v: Any) -> Any:
    s = str(v).strip().lower()
    if s in ("auto", "pt", "hf", "huggingface", "transformers"):
        return "hf"
    if s == "vllm":
        return "vllm"
    from lmforge.errors import LmforgeError

    raise LmforgeError(
        f"--infer_backend {v}: lmforge serves with transformers (pt) or vLLM; "
        "pip install vllm and pass --infer_backend vllm, or drop the flag"
    )


def _all_rows(v: Any) -> Any:
    # ms-swift's -1 / None: no sampling, every row
    return None if str(v).strip().lower() in ("-1", "none", "") else v


def _eval_limit(v: Any) -> Any:
    if isinstance(v, str) and v.strip().startswith("["):
        from lmforge.errors import LmforgeError

        raise LmforgeError(f"--eval_limit {v}: give a number of rows; slices are not supported")
    return _all_rows(v)


def _check_strategy(v: Any) -> Any:
    # ms-swift's discard drops bad rows (lmforge counts and skips them); none/warning/error stop at one
    return str(v).strip().lower() == "discard"


def _truncation(v: Any) -> Any:
    # ms-swift's --truncation_strategy delete|truncation_left
    return {"truncation_left": "left", "truncation_right": "right"}.get(str(v).strip().lower(), v)


def _few_shot(v: Any) -> Any:
    return 5 if str(v).strip().lower() in ("none", "") else v


def _pixels(v: Any) -> Any:
    # LLaMA-Factory's image_resolution / video_resolution: a pixel count since 0.9.1 (512*512);
    # 0.9.0 took a side length (512), so a value under 10,000 (an image under 100x100) is squared
    n = int(float(v)) if str(v).strip().lstrip("-").replace(".", "", 1).isdigit() else v
    return n * n if isinstance(n, int) and 0 < n < 10_000 else n


def _swift_rescale(v: Any) -> Any:
    # ms-swift's --rescale_image: a pixel count; -1 / None = images are not rescaled
    s = str(v).strip().lower()
    return None if s in ("-1", "none", "") else v


def _empty_token(v: Any) -> Any:
    return None if str(v).strip() in ("EMPTY", "", "None", "none") else v


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
    "model_id_or_path": (("model_name_or_path", "model"), _none_if_none),  # chat/infer/serve: --model
    # swift: the checkpoint of a LoRA or full run to merge / infer / serve / export / eval
    "ckpt_dir": (("adapter", "model_name_or_path", "model"), _none_if_none),
    "sft_type": ("tuner", _swift_tuner),  # swift names (llamapro, ...) on top of lmforge's
    "finetuning_type": ("tuner", _tuner),
    "train_type": ("tuner", _tuner),
    "target_modules": ("lora_target", _swift_targets),  # swift: DEFAULT/AUTO = q,k,v; ALL = all
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
    "export_size": ("max_shard_size", _gigabytes),  # seed_003 export: shard size in GB
    "export_quantization_nsamples": ("quantization_nsamples", None),  # seed_003 export: calibration texts
    "image_resolution": ("image_max_pixels", _pixels),  # seed_003 multimodal: max pixels of an image
    "video_resolution": ("video_max_pixels", _pixels),  # seed_003 multimodal: max pixels of a frame
    # --- ms-swift (seed_004) ---
    "template_type": ("template", _auto_none),  # seed_004 sft/infer: chat template, AUTO = the model's
    "use_flash_attn": ("attn_implementation", _use_flash_attn),  # seed_004: true = flash_attention_2
    "preprocess_num_proc": ("preprocessing_num_workers", None),  # seed_004: tokenising processes
    "train_dataset_sample": ("max_samples", _all_rows),  # seed_004 (deprecated): rows used, -1 = all
    "custom_train_dataset_path": ("dataset", None),  # seed_004 (deprecated): = --dataset
    "custom_val_dataset_path": ("val_dataset", None),  # seed_004 (deprecated): = --val_dataset
    "check_dataset_strategy": ("skip_bad_rows", _check_strategy),  # seed_004: discard = skip bad rows
    "eval_batch_size": (("per_device_eval_batch_size", "batch_size"), None),  # seed_004 sft / eval
    "llamapro_num_new_blocks": ("expand_layers", None),  # seed_004: LLaMA-Pro blocks inserted
    "adalora_deltaT": ("adalora_delta_t", None),  # seed_004: steps between AdaLoRA rank updates
    "galore_optim_per_parameter": ("galore_layerwise", None),  # seed_004: one optimizer per parameter
    "use_liger": ("use_liger_kernel", None),  # seed_004: Liger kernels (transformers' flag)
    "ref_model_id_or_path": ("ref_model", None),  # seed_004 rlhf: reference model folder
    "reward_model_id_or_path": ("reward_model_path", None),  # seed_004 ppo: reward model folder
    "cliprange": (("clip_epsilon", "epsilon"), None),  # seed_004 ppo: policy clip range
    # seed_004 long context: images over this many pixels are scaled down (aspect kept), -1 = never;
    # swift's MAX_PIXELS environment variable (Qwen2-VL's processor) is not read: pass this flag
    "rescale_image": ("image_max_pixels", _swift_rescale),
    "infer_backend": ("backend", _infer_backend),  # seed_004 infer/deploy: pt → hf, vllm
    "truncation_strategy": ("truncation", _truncation),  # seed_004 sft: delete / truncation_left long rows
    "eval_limit": ("limit", _eval_limit),  # seed_004 eval: rows per benchmark
    "eval_few_shot": ("n_shot", _few_shot),  # seed_004 eval: few-shot examples, None = 5 (C-Eval's)
    "eval_token": ("api_key", _empty_token),  # seed_004 eval: key of --eval_url, EMPTY = none
    "hub_private_repo": ("hub_private", None),  # seed_004 export (train keeps transformers' own)
    "freeze_vit": ("freeze_vision_tower", None),  # seed_004 sft: keep a multimodal model's ViT frozen
}

# Reference flags whose effect cannot exist here (a hub download, a vendor backend not installed):
# flag → (values that ask for what lmforge already does, so are accepted as they are; the one-line
# reason, with what to do instead, for any other value). `{value}` in the reason is filled in.
# One line of provenance per entry, as for ALIASES.
_MERGE_FIRST = (
    "merge the adapter into its base first (`lmforge merge ADAPTER --output_dir M`) and pass M as {0}"
)
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
    # --- ms-swift (seed_004) ---
    # "*": every value is what lmforge does anyway (the flag only acts with a feature that is off here)
    "model_type": (
        ("none", ""),
        "lmforge does not download models by type; pass the local folder with --model_id_or_path "
        "(its config.json names the architecture)",
    ),  # seed_004: hub model by type (accepted with a model folder, see lmforge/swift.py)
    "model_revision": (  # also seed_003 model: hub revision (main)
        ("none", "", "main"),
        "lmforge loads local folders, not hub revisions; download that revision and pass its folder",
    ),  # seed_004: hub revision
    "ref_model_type": (("none", ""), "pass the reference model's folder with --ref_model_id_or_path"),
    "ref_model_revision": (("none", ""), "pass the reference model's folder with --ref_model_id_or_path"),
    "reward_model_type": (
        ("none", "", "full"),
        "pass the reward model's folder with --reward_model_id_or_path / --reward_model (a full reward "
        "model: merge a LoRA one with `lmforge merge`); API rewards are not offered",
    ),  # seed_004 ppo: hub model type; seed_003 RLHF: lora / full / api (full accepted)
    "reward_model_revision": (("none", ""), "pass the reward model's folder with --reward_model_id_or_path"),
    "local_repo_path": (
        ("none", ""),
        "models that need a GitHub repo's code are not loaded; lmforge loads transformers-native "
        "architectures (a folder's own code with --trust_remote_code)",
    ),  # seed_004: repo of mPLUG-Owl / DeepSeek-VL / Yi-VL / LLaVA
    "model_kwargs": (("none", "{}", ""), "extra multimodal model kwargs: no multimodal models here"),
    "tuner_backend": (("peft",), "lmforge's adapters are peft's; drop the flag (unsloth: not offered)"),
    "add_output_dir_suffix": (("true", "false"), "expects true or false"),  # seed_004: lmforge/swift.py
    "resume_only_model": (
        ("false",),
        "to start from a checkpoint's weights alone pass it as --model_name_or_path",
    ),  # seed_004: lmforge/swift.py rewrites it on the command line
    "dataset_seed": (("none",), "lmforge samples and splits data with --seed; set that"),
    "val_dataset_sample": (
        ("none", "-1"),
        "deprecated in ms-swift too: sample the validation set with --val_dataset FILE#N",
    ),
    "truncation": (  # seed_004 infer: --truncation_strategy outside training (training has --truncation)
        ("delete", "right"),
        "generation never cuts a prompt: a prompt over --max_length stops with one line naming the row",
    ),
    "tools_prompt": (
        ("none", ""),
        "tools are rendered in the chat template's own tool format (choose it with --template)",
    ),
    "self_cognition_sample": (
        ("0",),
        "the self-cognition set is hub data; add rows naming your model to a JSONL in --dataset",
    ),
    "model_author": (
        ("none", ""),
        "the self-cognition set is hub data; add rows naming your model to a JSONL in --dataset",
    ),
    "quant_method": (
        ("bnb", "none", ""),
        "lmforge quantises for QLoRA with bitsandbytes only (--quant_method bnb --quantization_bit 4)",
    ),  # seed_004 sft/infer; export takes awq / gptq / bnb (lmforge/swift.py)
    "hqq_axis": (("0", "1"), "expects 0 or 1"),  # seed_004: only with --quant_method hqq, which is refused
    "hqq_dynamic_config_path": (("none", ""), "HQQ quantisation is not offered (bitsandbytes only)"),
    "bnb_4bit_comp_dtype": (("auto",), "the 4-bit compute dtype follows --dtype; set that"),
    "bnb_4bit_quant_storage": (("none",), "the 4-bit storage dtype is not configurable"),
    "lora_dtype": (("auto",), "adapters train in the model's precision (--dtype)"),
    "neftune_backend": (("transformers",), "NEFTune is transformers' (--neftune_noise_alpha)"),
    "predict_with_generate": (
        ("false",),
        "training evaluates by loss; for ROUGE/BLEU on generations run `lmforge eval RUN --task gen "
        "--dataset VAL.jsonl`",
    ),
    # generation settings of predict_with_generate (refused above): no effect in training
    "max_new_tokens": (("*",), ""),
    "do_sample": (("*",), ""),
    "temperature": (("*",), ""),
    "top_k": (("*",), ""),
    "top_p": (("*",), ""),
    "repetition_penalty": (("*",), ""),
    "num_beams": (("1",), "beam search is not offered; lmforge decodes greedily or samples"),
    "test_oom_error": (("false",), "the OOM probe is not offered; `lmforge data check` lists token lengths"),
    "lazy_tokenize": (("*",), ""),  # seed_004: lmforge tokenises once into a memory-mapped Arrow cache
    "ignore_args_error": (("false",), "lmforge stops at any unknown or bad flag"),
    "check_model_is_latest": (("*",), ""),  # seed_004: a hub check; models here are local folders
    "logging_dir": (
        ("none",),
        "logs go to the run folder (metrics.jsonl; TensorBoard events under it with --report_to tensorboard)",
    ),
    "acc_strategy": (("token",), "sentence-level accuracy is not computed"),
    "save_safetensors": (("true",), "checkpoints are always safetensors"),
    "gpu_memory_fraction": (("none",), "not offered; lower --batch_size or --max_length"),
    "train_dataset_mix_ratio": (
        ("0", "0.0", "0."),
        "deprecated in ms-swift too: mix datasets with --dataset a,b (and --mix_strategy)",
    ),
    "train_dataset_mix_ds": (("*",), ""),  # seed_004: only with train_dataset_mix_ratio, refused
    "use_loss_scale": (("false",), "agent loss scaling is not offered"),
    "loss_scale_config_path": (("none", ""), "agent loss scaling is not offered"),
    "custom_register_path": (
        ("none", ""),
        "no plugin registration; lmforge loads transformers-native models and named templates",
    ),
    "custom_dataset_info": (
        ("none", ""),
        "give data files to --dataset (FILE#N samples N rows) or describe them in "
        "DIR/dataset_info.yaml with --dataset_dir",
    ),
    "device_map_config": (
        ("none", ""),
        "the model goes on one device (--device); more GPUs: NPROC_PER_NODE=N, --deepspeed or --fsdp",
    ),
    "device_max_memory": (
        ("[]", "", "none"),
        "the model goes on one device (--device); more GPUs: NPROC_PER_NODE=N, --deepspeed or --fsdp",
    ),
    "sequence_parallel_size": (("1",), "sequence parallelism is not offered"),
    "boft_dropout": (("0", "0.0"), "BOFT dropout is not configurable"),
    "vera_projection_prng_key": (("*",), ""),  # seed_004: storage of VeRA projections, same result
    "vera_dropout": (("0", "0.0"), "VeRA dropout is not configurable"),
    "galore_with_embedding": (("false",), "GaLore projects linear layers only"),
    "galore_quantization": (("false",), "Q-GaLore is not offered (plain GaLore: --use_galore)"),
    "galore_proj_quant": (("false",), "Q-GaLore is not offered (plain GaLore: --use_galore)"),
    # Q-GaLore settings: no effect without galore_quantization (refused above)
    "galore_proj_bits": (("*",), ""),
    "galore_proj_group_size": (("*",), ""),
    "galore_cos_threshold": (("*",), ""),
    "galore_gamma_proj": (("*",), ""),
    "galore_queue_size": (("*",), ""),
    "lisa_activated_layers": (
        ("0",),
        "LISA is not offered; train layer blocks in turn with --use_badam, or a few layers with --tuner freeze",
    ),
    "lisa_step_interval": (("*",), ""),  # seed_004: only with LISA (refused above)
    "llamapro_num_groups": (("none",), "lmforge inserts each new LLaMA-Pro block on its own"),
    "adalora_beta1": (("0.85",), "AdaLoRA's EMA betas are fixed at 0.85"),
    "adalora_beta2": (("0.85",), "AdaLoRA's EMA betas are fixed at 0.85"),
    "adalora_orth_reg_weight": (("0.5",), "AdaLoRA's orthogonal regularisation weight is fixed at 0.5"),
    "ia3_feedforward_modules": (
        ("[]", "", "none"),
        "lmforge marks the MLP projections as IA3's feed-forward",
    ),
    # ReFT settings: no effect without --sft_type reft (refused)
    "reft_layers": (("*",), ""),
    "reft_rank": (("*",), ""),
    "reft_intervention_type": (("*",), ""),
    "reft_args": (("*",), ""),
    "whiten_rewards": (("false",), "reward whitening is not offered (rewards are clipped: --reward_clip)"),
    "local_rollout_forward_batch_size": (("*",), ""),  # seed_004 ppo: a memory knob, same result
    # infer / export / eval / deploy (inherit infer's flags)
    "tuner": (
        (
            *("full", "freeze", "llama_pro", "llamapro", "lora", "dora", "pissa", "qlora", "adalora"),
            *("ia3", "vera", "boft", "fourierft", "loha", "lokr", "oft", "none"),
        ),
        "lmforge reads from the folder whether it holds an adapter or a full model",
    ),  # seed_004 infer --sft_type: lmforge detects it
    "backend": (
        ("auto", "pt", "hf", "huggingface", "transformers"),
        "this command generates with transformers; vLLM serving is `lmforge serve --infer_backend vllm` "
        "(pip install vllm)",
    ),  # seed_004 --infer_backend outside serve
    "template": (("auto", "none", ""), "export keeps the run's own chat template"),
    "load_args_from_ckpt_dir": (("true",), "lmforge always reads the run's recorded template and system"),
    "load_dataset_config": (("false",), "give the data to `lmforge infer --input FILE`"),
    "eval_human": (("*",), ""),  # seed_004: lmforge/swift.py routes infer without data to chat
    "show_dataset_sample": (("-1", "none"), "cut the input file to the rows you want"),
    "val_size": (("0", "0.0", "0.01"), "infer answers every row of --input; split the file first"),
    "skip_bad_rows": (("none", "false"), "infer stops at the first malformed row"),
    "quantization_bit": (
        ("0", "none"),
        "chat/infer/serve load the stored weights; export a quantised model with `lmforge export "
        "--quant_method bnb|gptq|awq --quant_bits 4` and load that",
    ),
    "quantization_type": (("nf4",), "loading quantised weights is not offered here"),
    "double_quantization": (("true",), "loading quantised weights is not offered here"),
    "merge_lora": (
        ("false",),
        "merge first with `lmforge export CKPT --merge_lora true` (writes CKPT-merged) and load that",
    ),  # seed_004 infer --merge_lora (export: lmforge/swift.py)
    "merge_device_map": (("none", "cpu", "auto"), "lmforge merges on the CPU"),
    "overwrite_generation_config": (
        ("false",),
        "the run's generation_config.json is written at training time; pass sampling flags instead",
    ),
    "verbose": (("*",), ""),  # seed_004 infer/deploy: printing only
    "stream": (("*",), ""),  # seed_004 infer: printing of dataset answers (chat streams with --stream)
    "lora_modules": (
        ("[]", "none", ""),
        "several named adapters: `lmforge serve --lora_modules name=path`; chat/infer take one (--lora_weight)",
    ),
    "rope_scaling": (
        ("none",),
        "at inference lmforge extends the context with --inference_rope_scaling (YaRN); linear/dynamic "
        "scaling is set when training (--rope_scaling)",
    ),
    # vLLM engine settings: only with --infer_backend vllm (serve passes them on, lmforge/swift.py)
    "gpu_memory_utilization": (("*",), ""),
    "tensor_parallel_size": (("*",), ""),
    "max_num_seqs": (("*",), ""),
    "max_model_len": (("*",), ""),
    "disable_custom_all_reduce": (("*",), ""),
    "enforce_eager": (("*",), ""),
    "limit_mm_per_prompt": (("*",), ""),
    "vllm_enable_lora": (("*",), ""),
    "vllm_max_lora_rank": (("*",), ""),  # also seed_003 vLLM
    # LMDeploy engine settings: --infer_backend lmdeploy is refused with its reason
    "tp": (("*",), ""),
    "cache_max_entry_count": (("*",), ""),
    "quant_policy": (("*",), ""),
    "vision_batch_size": (("*",), ""),
    "to_peft_format": (("*",), ""),  # seed_004 export: lmforge's adapters are peft's already
    "quant_n_samples": (("256",), "the calibration sample count is fixed at 256"),
    "quant_seqlen": (("2048",), "the calibration length is fixed"),
    "quant_batch_size": (("1",), "the calibration batch size is fixed at 1"),
    "quant_device_map": (("none", "cuda:0", "auto"), "lmforge quantises on the first GPU"),
    "commit_message": (("update files",), "the hub commit message is fixed"),
    "eval_is_chat_model": (("*",), ""),  # seed_004 eval: --eval_url is called with chat completions
    "custom_eval_config": (
        ("none", ""),
        "evaluate your own data with `lmforge eval RUN --task gen --dataset FILE` (or --task ppl)",
    ),
    "eval_use_cache": (("false",), "results are recomputed each run (--overwrite for a used folder)"),
    "eval_nproc": (("*",), ""),  # seed_004: multimodal evaluation only
    "deploy_timeout": (("*",), ""),  # seed_004: lmforge eval loads the model itself, nothing deploys
    "ssl_keyfile": (("none", ""), "TLS is not built in; put a TLS proxy (caddy, nginx) in front"),
    "ssl_certfile": (("none", ""), "TLS is not built in; put a TLS proxy (caddy, nginx) in front"),
    "logging_steps": (("*",), ""),  # seed_004 deploy --log_interval (MiniMind's alias): serve logs requests
    "lang": (("en",), "the web UI is in English only"),  # seed_004 web-ui
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
