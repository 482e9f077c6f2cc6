"""Value transforms for aliased flags: a reference's spelling of a value → lmforge's (MiniMind's
`--from_resume 1`, ms-swift's `--train_type llamapro`, LLaMA-Factory's `--export_size 5`)."""

from __future__ import annotations

from typing import Any


def none_if_none(v: Any) -> Any:
    return None if isinstance(v, str) and v.lower() in ("none", "null", "") else v


def resume(v: Any) -> Any:
    # MiniMind: --from_resume 1 → continue from the newest checkpoint.
    if isinstance(v, str) and v.strip().lower() in ("0", "false", "no", ""):
        return None
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes"):
        return "latest"
    return "latest" if v else None


def wandb(v: Any) -> Any:
    on = v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
    return "wandb" if on else "none"


def dtype(v: Any) -> Any:
    table = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "half": "float16", "float": "float32"}
    return table.get(str(v).lower(), v.lower() if isinstance(v, str) and v.lower() == "auto" else v)


def tuner(v: Any) -> Any:
    return str(v).strip().lower().replace("-", "_") if isinstance(v, str) else v


def flash_attn(v: Any) -> Any:
    # LLaMA-Factory's flash_attn: auto, disabled, sdpa, fa2
    table = {"auto": None, "disabled": "eager", "sdpa": "sdpa", "fa2": "flash_attention_2"}
    return table.get(str(v).strip().lower(), v)


def comma_list(v: Any) -> Any:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v


def quant_bits(v: Any) -> Any:
    # mdl-toolkit's --quantization 8bit|4bit (null: none)
    text = str(v).strip().lower()
    if text in ("null", "none", ""):
        return None
    return text[: -len("bit")] if text.endswith("bit") else v


def negate(v: Any) -> Any:
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


def gigabytes(v: Any) -> Any:
    # LLaMA-Factory's export_size: a whole number of GB per shard
    return f"{v}GB" if str(v).strip().isdigit() else v


# --- ms-swift (seed_004) value spellings -------------------------------------------------------
SWIFT_TUNERS = {"llamapro": "llama_pro", "lora": "lora", "full": "full"}
SWIFT_NO_TUNER = {
    "longlora": "LongLoRA's shifted sparse attention is not offered; train --sft_type lora with "
    "--rope_scaling linear|dynamic|yarn --rope_factor N for a longer context",
    "adapter": "bottleneck adapters are not offered; use --sft_type lora or ia3",
    "reft": "ReFT is not offered (it needs pyreft); use --sft_type lora or ia3",
}


def swift_tuner(v: Any) -> Any:
    """ms-swift's --sft_type names (llamapro, longlora, adapter, reft) on top of lmforge's tuners."""
    name = tuner(v)
    if isinstance(name, str) and name in SWIFT_NO_TUNER:
        from lmforge.errors import LmforgeError

        raise LmforgeError(f"--sft_type {name}: {SWIFT_NO_TUNER[name]}")
    return SWIFT_TUNERS.get(name, name) if isinstance(name, str) else name


def swift_targets(v: Any) -> Any:
    # ms-swift: DEFAULT/AUTO = the model's attention projections, ALL = every linear layer
    words = [str(x) for x in v] if isinstance(v, (list, tuple)) else str(v).split(",")
    table = {"default": "q_proj,k_proj,v_proj", "auto": "q_proj,k_proj,v_proj", "all": "all"}
    return ",".join(table.get(w.strip().lower(), w.strip()) for w in words if w.strip())


def auto_none(v: Any) -> Any:
    return None if isinstance(v, str) and v.strip().lower() in ("auto", "none", "") else v


def use_flash_attn(v: Any) -> Any:
    s = str(v).strip().lower()
    return {"true": "flash_attention_2", "1": "flash_attention_2", "false": "sdpa", "0": "sdpa"}.get(
        s, None if s in ("none", "auto") else v
    )


def infer_backend(v: Any) -> Any:
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


def all_rows(v: Any) -> Any:
    # ms-swift's -1 / None: no sampling, every row
    return None if str(v).strip().lower() in ("-1", "none", "") else v


def eval_limit(v: Any) -> Any:
    if isinstance(v, str) and v.strip().startswith("["):
        from lmforge.errors import LmforgeError

        raise LmforgeError(f"--eval_limit {v}: give a number of rows; slices are not supported")
    return all_rows(v)


def check_strategy(v: Any) -> Any:
    # ms-swift's discard drops bad rows (lmforge counts and skips them); none/warning/error stop at one
    return str(v).strip().lower() == "discard"


def truncation(v: Any) -> Any:
    # ms-swift's --truncation_strategy delete|truncation_left
    return {"truncation_left": "left", "truncation_right": "right"}.get(str(v).strip().lower(), v)


def few_shot(v: Any) -> Any:
    return 5 if str(v).strip().lower() in ("none", "") else v


def pixels(v: Any) -> Any:
    # LLaMA-Factory's image_resolution / video_resolution: a pixel count since 0.9.1 (512*512);
    # 0.9.0 took a side length (512), so a value under 10,000 (an image under 100x100) is squared
    n = int(float(v)) if str(v).strip().lstrip("-").replace(".", "", 1).isdigit() else v
    return n * n if isinstance(n, int) and 0 < n < 10_000 else n


def swift_rescale(v: Any) -> Any:
    # ms-swift's --rescale_image: a pixel count; -1 / None = images are not rescaled
    s = str(v).strip().lower()
    return None if s in ("-1", "none", "") else v


def empty_token(v: Any) -> Any:
    return None if str(v).strip() in ("EMPTY", "", "None", "none") else v
