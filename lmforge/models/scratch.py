"""Create a from-scratch model: config from a preset or sizes, random init, special token ids
taken from the tokenizer, and a generation config that stops at `<|im_end|>`."""

from __future__ import annotations

from typing import Any

from lmforge.models.presets import PRESETS, build_config


def special_ids(tokenizer) -> dict[str, Any]:
    eos = tokenizer.eos_token_id
    eos_ids = [eos]
    end_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if isinstance(end_text, int) and end_text not in eos_ids and end_text != tokenizer.unk_token_id:
        eos_ids.append(end_text)
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": eos_ids,
    }


def init_model(
    tokenizer,
    *,
    preset: str | None = None,
    seed: int = 42,
    dtype=None,
    attn_implementation: str | None = None,
    **config_kwargs: Any,
):
    """A randomly initialised `AutoModelForCausalLM` sized by `preset` / `config_kwargs`."""
    import torch
    from transformers import AutoModelForCausalLM

    # Without a preset the embedding fits the tokenizer (rounded up to a multiple of 64 for fast
    # matmuls) unless the caller sizes it.
    # A preset keeps its vocabulary (MiniMind: 6400) when the tokenizer fits in it.
    fitted = -(-len(tokenizer) // 64) * 64
    if config_kwargs.get("vocab_size") is None:
        preset_vocab = PRESETS.get(preset or "", {}).get("vocab_size", 6400) if preset else 0
        config_kwargs["vocab_size"] = max(fitted, preset_vocab)
    config = build_config(preset, **config_kwargs)
    ids = special_ids(tokenizer)
    config.pad_token_id, config.bos_token_id = ids["pad_token_id"], ids["bos_token_id"]
    config.eos_token_id = ids["eos_token_id"][0]
    torch.manual_seed(seed)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32, **kwargs)
    model.generation_config = default_generation_config(ids)
    return model


def default_generation_config(ids: dict, top_p: float = 0.95):
    """Sampling defaults saved with every model lmforge creates (MiniMind's temperature 0.85)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        pad_token_id=ids["pad_token_id"],
        bos_token_id=ids["bos_token_id"],
        eos_token_id=ids["eos_token_id"],
        do_sample=True,
        temperature=0.85,
        top_p=top_p,
        max_new_tokens=512,
    )
