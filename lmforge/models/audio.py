"""Audio-language models (Qwen2-Audio layout and alike): detect, load with their processor, name
their parts for `--train_target`, and build a tiny one offline for tests and demos.

An audio LLM here is any local transformers model whose config carries an `audio_config` (or an
audio token index) and whose folder holds a processor with a feature extractor. The model class is
the config's `architectures[0]` (e.g. `Qwen2AudioForConditionalGeneration`); parts are found by
attribute name, so other encoder + projector + decoder models with the usual names work too.
"""

from __future__ import annotations

from typing import Any

from lmforge.errors import LmforgeError
from lmforge.models.media import folder_config, load_model, named_class
from lmforge.models.parts import (  # noqa: F401  (re-exported for audio callers)
    DEFAULT_TRAIN_TARGET,
    TRAIN_TARGETS,
    parse_train_target,
    part_prefixes,
    set_trainable_parts,
    train_target_modules,
)

AUDIO_SPECIAL_TOKENS = ("<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>")


def is_audio_config(config: Any) -> bool:
    return any(
        getattr(config, k, None) is not None for k in ("audio_config", "audio_token_index", "audio_token_id")
    )


def is_audio_model_dir(path: str | None) -> bool:
    """True when `path` is a local model folder whose config describes an audio LLM."""
    cfg = folder_config(path) or {}
    return any(k in cfg for k in ("audio_config", "audio_token_index", "audio_token_id"))


def model_class(config: Any):
    """The transformers class named by `config.architectures[0]`, else AutoModelForMultimodalLM."""
    cls = named_class(config)
    if cls is not None:
        return cls
    try:
        from transformers import AutoModelForMultimodalLM

        return AutoModelForMultimodalLM
    except ImportError:  # pragma: no cover - older transformers
        raise LmforgeError(
            f"audio model of type {getattr(config, 'model_type', '?')}: config.json names no "
            "transformers class in `architectures`"
        ) from None


def load_audio_model(path: str, *, dtype=None, attn_implementation: str | None = None):
    return load_model(path, model_class, dtype=dtype, attn_implementation=attn_implementation)


def load_processor(path: str):
    """The folder's processor; it must have a feature extractor and an audio token."""
    from transformers import AutoProcessor

    try:
        proc = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError, TypeError) as e:
        msg = " ".join(str(e).split())[:200]
        raise LmforgeError(f"{path}: audio model without a loadable processor ({msg})") from None
    if getattr(proc, "feature_extractor", None) is None or not getattr(proc, "audio_token", None):
        raise LmforgeError(
            f"{path}: the processor ({type(proc).__name__}) has no feature extractor / audio token; "
            "an audio LLM folder needs both (preprocessor_config.json, processor_config.json)"
        )
    return proc


def sampling_rate(processor) -> int:
    return int(getattr(processor.feature_extractor, "sampling_rate", 16000))


def audio_placeholder(processor) -> str:
    """What marks the clip in a user turn before expansion: bos + one audio token + eos."""
    bos = getattr(processor, "audio_bos_token", "") or ""
    eos = getattr(processor, "audio_eos_token", "") or ""
    return f"{bos}{processor.audio_token}{eos}"


def num_audio_tokens(processor, wave) -> int:
    """Audio tokens the processor expands one clip into (its own rule, by calling it)."""
    out = processor(text=[processor.audio_token], audio=[wave], sampling_rate=sampling_rate(processor))
    return int(sum(1 for t in out["input_ids"][0] if t == processor.audio_token_id))


def extract_features(processor, waves: list) -> dict[str, Any]:
    """Batch features for the model's forward: input_features + feature_attention_mask (torch)."""
    fe = processor.feature_extractor
    out = fe(
        waves,
        sampling_rate=sampling_rate(processor),
        return_attention_mask=True,
        padding="max_length",
        return_tensors="pt",
    )
    return {"input_features": out["input_features"], "feature_attention_mask": out["attention_mask"]}


# --- a tiny model, built offline -------------------------------------------------------------
def build_tiny_audio_model(
    out_dir: str,
    tokenizer=None,
    *,
    hidden_size: int = 128,
    num_hidden_layers: int = 2,
    encoder_dim: int = 64,
    encoder_layers: int = 2,
    num_mel_bins: int = 80,
    chunk_seconds: int = 2,
    seed: int = 42,
) -> str:
    """A Qwen2-Audio-layout model (Whisper-style encoder, linear projector, Qwen2 decoder) with
    lmforge's tokenizer plus the three audio tokens, and a `WhisperFeatureExtractor` that pads clips
    to `chunk_seconds` (Qwen2-Audio's own is 30 s, far too slow for a CPU test). Saved with its
    processor; returns `out_dir`."""
    import torch
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    from lmforge.models.tokenizer import load_tokenizer

    tok = tokenizer if tokenizer is not None else load_tokenizer(None)
    missing = [t for t in AUDIO_SPECIAL_TOKENS if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    fe = WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=16000, chunk_length=chunk_seconds)
    vocab = (len(tok) + 63) // 64 * 64
    heads = max(1, hidden_size // 32)
    config = Qwen2AudioConfig(
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "num_mel_bins": num_mel_bins,
            "encoder_layers": encoder_layers,
            "encoder_attention_heads": max(1, encoder_dim // 32),
            "encoder_ffn_dim": 2 * encoder_dim,
            "d_model": encoder_dim,
            "max_source_positions": fe.nb_max_frames // 2,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": vocab,
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": max(1, heads // 2),
            "max_position_embeddings": 1024,
            "tie_word_embeddings": False,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config)
    from lmforge.models.scratch import default_generation_config

    model.generation_config = default_generation_config(
        {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    )
    proc = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template=tok.chat_template)
    model.save_pretrained(out_dir)
    proc.save_pretrained(out_dir)
    return out_dir
