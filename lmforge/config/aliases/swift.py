"""ms-swift's flags (reference/seed_004): aliases, and the ones with no effect here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmforge.config.aliases.transforms import (
    all_rows,
    auto_none,
    check_strategy,
    empty_token,
    eval_limit,
    few_shot,
    infer_backend,
    swift_rescale,
    truncation,
    use_flash_attn,
)

ALIASES: dict[str, tuple[str | tuple[str, ...], Callable[[Any], Any] | None]] = {
    # --- ms-swift (seed_004) ---
    "template_type": ("template", auto_none),  # seed_004 sft/infer: chat template, AUTO = the model's
    "use_flash_attn": ("attn_implementation", use_flash_attn),  # seed_004: true = flash_attention_2
    "preprocess_num_proc": ("preprocessing_num_workers", None),  # seed_004: tokenising processes
    "train_dataset_sample": ("max_samples", all_rows),  # seed_004 (deprecated): rows used, -1 = all
    "custom_train_dataset_path": ("dataset", None),  # seed_004 (deprecated): = --dataset
    "custom_val_dataset_path": ("val_dataset", None),  # seed_004 (deprecated): = --val_dataset
    "check_dataset_strategy": ("skip_bad_rows", check_strategy),  # seed_004: discard = skip bad rows
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
    "rescale_image": ("image_max_pixels", swift_rescale),
    "infer_backend": ("backend", infer_backend),  # seed_004 infer/deploy: pt → hf, vllm
    "truncation_strategy": ("truncation", truncation),  # seed_004 sft: delete / truncation_left long rows
    "eval_limit": ("limit", eval_limit),  # seed_004 eval: rows per benchmark
    "eval_few_shot": ("n_shot", few_shot),  # seed_004 eval: few-shot examples, None = 5 (C-Eval's)
    "eval_token": ("api_key", empty_token),  # seed_004 eval: key of --eval_url, EMPTY = none
    "hub_private_repo": ("hub_private", None),  # seed_004 export (train keeps transformers' own)
    "freeze_vit": ("freeze_vision_tower", None),  # seed_004 sft: keep a multimodal model's ViT frozen
}

UNAVAILABLE: dict[str, tuple[tuple[str, ...], str]] = {
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
