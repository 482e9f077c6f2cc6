"""The tokenizer and the model a training run starts from: a model folder (causal LM, audio or
vision LLM, or what a stage's own loader builds), or a fresh model from the size flags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmforge.config.loader import Config
from lmforge.errors import LmforgeError

# size flags with defaults that a --preset replaces (MiniMind train_lora, ms-swift and LLaMA-Factory
# LoRA examples)
PRESET_SIZES = ("hidden_size", "num_hidden_layers")


def load_tokenizer_and_model(
    cfg: Config, loader=None, quantization: Callable[[Config], Any] | None = None
) -> tuple[Any, Any, str | None]:
    """(tokenizer, starting model, its folder or None) (`loader(cfg, path)` replaces the causal-LM
    load, e.g. the reward model's sequence-classification head; `quantization(cfg)` gives the
    causal LM's `quantization_config`), or a fresh model from the size flags."""
    from lmforge.models.load import load_model, load_tokenizer_for
    from lmforge.models.locate import check_sizes, resolve_model_path
    from lmforge.models.scratch import init_model
    from lmforge.models.tokenizer import load_tokenizer

    name = cfg.get("model_name_or_path")
    if name:
        path = resolve_model_path(
            name, save_dir=cfg["save_dir"], hidden_size=cfg["hidden_size"], use_moe=cfg["use_moe"]
        )
        check_sizes(path, {k: cfg[k] for k in PRESET_SIZES if k in cfg.explicit}, flags=_size_flags(cfg))
        tokenizer = (
            load_tokenizer(cfg["tokenizer_path"]) if cfg.get("tokenizer_path") else load_tokenizer_for(path)
        )
        if loader is not None:
            return tokenizer, loader(cfg, path), path
        from lmforge.models.audio import is_audio_model_dir, load_audio_model

        if is_audio_model_dir(path):
            if cfg.get("quantization_bit"):
                raise LmforgeError("--quantization_bit is not supported for audio models; use --tuner lora")
            model = load_audio_model(path, attn_implementation=cfg.get("attn_implementation"))
            return tokenizer, model, path
        from lmforge.models.vision import is_vision_model_dir, load_vision_model

        if is_vision_model_dir(path):
            if cfg.get("quantization_bit"):
                raise LmforgeError("--quantization_bit is not supported for vision models; use --tuner lora")
            model = load_vision_model(path, attn_implementation=cfg.get("attn_implementation"))
            return tokenizer, model, path
        model = load_model(
            path,
            attn_implementation=cfg.get("attn_implementation"),
            trust_remote_code=cfg["trust_remote_code"],
            quantization_config=quantization(cfg) if quantization else None,
        )
        return tokenizer, model, path
    if loader is not None:
        raise LmforgeError(
            f"train {cfg['stage']}: needs a starting model: pass --model_name_or_path (or --from_weight)"
        )
    tokenizer = load_tokenizer(cfg.get("tokenizer_path"))
    sizes = {
        k: cfg.get(k)
        for k in (
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
            "max_position_embeddings",
            "rope_theta",
            "num_experts",
            "num_experts_per_tok",
            "router_aux_loss_coef",
        )
    }
    preset = cfg.get("preset")
    for k in PRESET_SIZES:
        if not preset or k in cfg.explicit:
            sizes[k] = cfg[k]
    model = init_model(
        tokenizer,
        preset=preset,
        seed=cfg["seed"],
        arch=cfg.get("arch"),
        use_moe=cfg["use_moe"],
        rope_scaling=cfg.get("rope_scaling"),
        rope_factor=cfg.get("rope_factor"),
        attn_implementation=cfg.get("attn_implementation") or "sdpa",
        **sizes,
    )
    return tokenizer, model, None


def _size_flags(cfg: Config) -> dict[str, str]:
    """How the user spelled the size flags (MiniMind's distillation: --student_*)."""
    if cfg["stage"] == "distill":
        return {"hidden_size": "student_hidden_size", "num_hidden_layers": "student_num_layers"}
    return {}
