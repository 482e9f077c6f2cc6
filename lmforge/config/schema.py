"""The flag groups shared by training commands: model, data, run.

Every field is one flat flag (`--hidden_size 512`) and one YAML key (`hidden_size: 512`).
Hugging Face `TrainingArguments` fields are accepted next to these (see loader.py); stage-specific
fields live in each stage module's own dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.fields import arg


@dataclass
class ModelArgs:
    model_name_or_path: str | None = arg(
        None,
        "Start from this model: an HF folder, a run folder or checkpoint, "
        "a MiniMind name inside --save_dir (pretrain → out/pretrain_512), a "
        "cached hub name; none = from scratch",
    )
    preset: str | None = arg(
        None,
        "From-scratch size preset: tiny, minimind2-small, minimind2, minimind2-moe, "
        "minimind3, minimind3-moe (explicit size flags win)",
    )
    arch: str | None = arg(
        None,
        "From-scratch architecture: qwen3 (default), llama, qwen3_moe, qwen2_moe",
        choices=("qwen3", "llama", "qwen3_moe", "qwen2_moe"),
    )
    hidden_size: int = arg(512, "Hidden size of a from-scratch model (also picks MiniMind weight names)")
    num_hidden_layers: int = arg(8, "Transformer layers of a from-scratch model")
    num_attention_heads: int | None = arg(None, "Query heads (default: the preset's, else hidden_size/64)")
    num_key_value_heads: int | None = arg(
        None, "Key/value heads for GQA (default: the preset's, else heads/4)"
    )
    intermediate_size: int | None = arg(None, "FFN width (default: 64*ceil(hidden*8/3/64), MiniMind's rule)")
    max_position_embeddings: int | None = arg(None, "Longest position the model supports (default 32768)")
    rope_theta: float | None = arg(None, "RoPE base (default 1e6)")
    rope_scaling: str | None = arg(
        None, "RoPE scaling for training: yarn, linear or dynamic", choices=("yarn", "linear", "dynamic")
    )
    rope_factor: float | None = arg(None, "RoPE scaling factor (with --rope_scaling)")
    use_moe: bool = arg(
        False, "From-scratch mixture-of-experts model (qwen3_moe unless --arch says otherwise)"
    )
    num_experts: int | None = arg(None, "Routed experts of a MoE model (default 4)")
    num_experts_per_tok: int | None = arg(None, "Experts used per token (default 2)")
    router_aux_loss_coef: float | None = arg(None, "MoE router load-balancing loss weight (default 0.01)")
    attn_implementation: str | None = arg(
        None,
        "Attention kernel: sdpa, flash_attention_2, eager (default: sdpa)",
        choices=("sdpa", "flash_attention_2", "eager"),
    )
    tokenizer_path: str | None = arg(
        None, "Tokenizer folder (default: the model's own, else lmforge's shipped 6400-token tokenizer)"
    )
    trust_remote_code: bool = arg(
        False, "Allow model code from the model folder (off: native architectures only)"
    )


@dataclass
class DataArgs:
    dataset: str | None = arg(
        None,
        "Training data: file, folder, dataset_info.yaml name, path#N to sample N "
        "rows; comma-separate several to mix",
        multi=True,
    )
    dataset_dir: str | None = arg(None, "Folder holding dataset_info.yaml and relative data files")
    val_dataset: str | None = arg(None, "Validation data (same forms as --dataset)", multi=True)
    val_size: float = arg(
        0.0, "Hold out this fraction (<1) or number of rows (>=1) of --dataset for validation"
    )
    format: str | None = arg(
        None, "Force the input format instead of detecting it: text, minimind, openai, sharegpt, alpaca, csv"
    )
    text_column: str | None = arg(None, "Column holding the text for pretraining (default: text)")
    max_length: int = arg(512, "Longest training sequence in tokens (longer rows are truncated)")
    packing: bool | None = arg(
        None,
        "Pack rows into full sequences without cross-document attention "
        "(default: on for pretrain, off for chat stages)",
    )
    train_on_prompt: bool = arg(False, "Also train on system/user tokens (default: assistant tokens only)")
    system: str | None = arg(None, "System prompt added to chat rows that have none")
    enable_thinking: bool = arg(
        True, "Render empty <think></think> blocks as the chat template does when False"
    )
    template: str | None = arg(
        None,
        "Chat template by name (chatml, qwen, qwen3, llama3, llama2, mistral, gemma, phi3, deepseek3, "
        "deepseekr1, granite, empty); default: the tokenizer's own, else lmforge's ChatML",
    )
    mask_history: bool = arg(False, "Train only the last assistant turn of each conversation")
    truncation: str = arg(
        "right",
        "Chat rows longer than --max_length: right (cut the end), left (cut the start), delete (drop the row)",
        choices=("right", "left", "delete"),
    )
    skip_bad_rows: bool = arg(False, "Count and skip malformed rows instead of stopping at the first one")
    preprocessing_num_workers: int | None = arg(None, "Processes for tokenisation (default: 1 on <=2 cores)")
    preprocessing_batch_size: int = arg(1000, "Rows per tokenisation batch (lower it for long rows or audio)")
    streaming: bool = arg(False, "Stream the data instead of building an Arrow cache (data larger than disk)")
    mix_strategy: str = arg(
        "concat",
        "How several datasets are mixed: concat, interleave_under, interleave_over",
        choices=("concat", "interleave_under", "interleave_over"),
    )
    interleave_probs: str | None = arg(
        None, "Comma-separated sampling probabilities for interleaving", multi=True
    )
    tokenized_path: str | None = arg(None, "Folder for the tokenised Arrow cache (reused when it matches)")
    overwrite_cache: bool = arg(False, "Rebuild the --tokenized_path cache even when it matches")
    max_samples: int | None = arg(None, "Use at most this many training rows")
    system_prompt: str | None = arg(None, "CSV default system prompt for rows without a system_prompt column")
    user_prompt: str | None = arg(None, "CSV default user prompt for rows without a user_prompt column")
    base_dir: str | None = arg(
        None, "Folder that relative paths inside CSV rows (audio) are resolved against"
    )
    # vision-language data (LLaMA-Factory's names and defaults; docs/vision.md)
    image_dir: str | None = arg(
        None,
        "Folder that relative image / video paths of rows are resolved against "
        "(default: the dataset_info registry's folder, else the data file's folder)",
    )
    image_max_pixels: int | None = arg(
        768 * 768, "Shrink larger images (aspect kept) to at most this many pixels (width x height)"
    )
    image_min_pixels: int | None = arg(
        32 * 32, "Enlarge smaller images (aspect kept) to at least this many pixels"
    )
    video_fps: float = arg(2.0, "Video frames sampled per second of the video")
    video_maxlen: int = arg(128, "At most this many frames per video (sampled evenly)")
    video_max_pixels: int | None = arg(256 * 256, "Shrink larger video frames to at most this many pixels")
    video_min_pixels: int | None = arg(16 * 16, "Enlarge smaller video frames to at least this many pixels")


@dataclass
class RunArgs:
    stage: str | None = arg(None, "Stage name recorded in lmforge_args.yaml (must match the command's stage)")
    output_dir: str | None = arg(
        None,
        "Run folder (default: save_dir/<stage>-<yyyymmdd-hhmmss>, or "
        "save_dir/NAME_<hidden> with --save_weight)",
    )
    save_dir: str = arg("out", "Folder for MiniMind-style named runs (--save_weight/--from_weight)")
    save_weight: str | None = arg(None, "Name the run folder save_dir/NAME_<hidden>[_moe] (MiniMind naming)")
    nan_policy: str = arg(
        "skip", "On a NaN/Inf loss or gradient: skip the step and count it, or stop", choices=("skip", "stop")
    )
    max_nan_skips: int = arg(20, "With --nan_policy skip: stop after this many skipped steps in a row")
    dtype: str = arg(
        "auto",
        "Training precision: auto (bf16 on GPUs that support it, else fp32), float32, bfloat16, float16",
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    device: str | None = arg(None, "Device: cpu, cuda, cuda:N (default: GPU when present)")
    wandb_project: str | None = arg(None, "Weights & Biases project (with --report_to wandb)")
    plot: bool = arg(True, "Write loss.png into the run folder")
    loss_chunk_size: int = arg(
        1024,
        "LM loss in chunks of this many labelled tokens, never building the (batch, length, vocab) "
        "logits; 0 = off (plain transformers loss)",
    )
    padding_free: bool | None = arg(
        None,
        "Unpacked batches without padding: rows laid end to end, position_ids restart per row, no "
        "cross-row attention (default: on for transformers' llama/qwen/mistral-family models)",
    )
