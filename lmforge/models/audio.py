"""Audio-language models (Qwen2-Audio layout and alike): detect, load with their processor, name
their parts for `--train_target`, and build a tiny one offline for tests and demos.

An audio LLM here is any local transformers model whose config carries an `audio_config` (or an
audio token index) and whose folder holds a processor with a feature extractor. The model class is
the config's `architectures[0]` (e.g. `Qwen2AudioForConditionalGeneration`); parts are found by
attribute name, so other encoder + projector + decoder models with the usual names work too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

AUDIO_SPECIAL_TOKENS = ("<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>")
TRAIN_TARGETS = ("encoder", "projector", "decoder", "embed_tokens", "lm_head")
DEFAULT_TRAIN_TARGET = "encoder,projector,decoder"  # mdl-toolkit's default
# Attribute names of each part, searched on the model and its `.model`
_PART_NAMES = {
    "encoder": ("audio_tower", "audio_encoder", "audio_model", "encoder"),
    "projector": ("multi_modal_projector", "audio_projector", "mm_projector", "projector"),
    "decoder": ("language_model", "text_model", "decoder"),
}


def is_audio_config(config: Any) -> bool:
    return any(
        getattr(config, k, None) is not None for k in ("audio_config", "audio_token_index", "audio_token_id")
    )


def is_audio_model_dir(path: str | None) -> bool:
    """True when `path` is a local model folder whose config describes an audio LLM."""
    if not path or not Path(path, "config.json").is_file():
        return False
    import json

    try:
        cfg = json.loads(Path(path, "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(k in cfg for k in ("audio_config", "audio_token_index", "audio_token_id"))


def model_class(config: Any):
    """The transformers class named by `config.architectures[0]`."""
    import transformers

    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
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
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return model_class(config).from_pretrained(path, dtype=dtype or torch.float32, **kwargs)


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


# --- parts ------------------------------------------------------------------------------------
def _find_part(model, names: tuple[str, ...]) -> tuple[str, Any] | None:
    for prefix, owner in (("", model), ("model.", getattr(model, "model", None))):
        if owner is None:
            continue
        for name in names:
            mod = getattr(owner, name, None)
            if mod is not None and hasattr(mod, "named_modules"):
                return prefix + name, mod
    return None


def part_prefixes(model) -> dict[str, str]:
    """Full module-name prefixes of encoder / projector / decoder / embed_tokens / lm_head."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = {id(m): n for n, m in base.named_modules()}
    out = {}
    for part, candidates in _PART_NAMES.items():
        found = _find_part(base, candidates)
        if found:
            out[part] = found[0]
    emb, head = base.get_input_embeddings(), base.get_output_embeddings()
    if isinstance(emb, torch.nn.Module) and id(emb) in names:
        out["embed_tokens"] = names[id(emb)]
    if isinstance(head, torch.nn.Module) and id(head) in names:
        out["lm_head"] = names[id(head)]
    return out


def parse_train_target(spec: str | None) -> list[str]:
    targets = [t.strip() for t in (spec or DEFAULT_TRAIN_TARGET).split(",") if t.strip()]
    bad = [t for t in targets if t not in TRAIN_TARGETS]
    if bad or not targets:
        raise LmforgeError(
            f"--train_target {spec}: unknown part {', '.join(bad) or '(none)'}; "
            f"expected a comma list of {', '.join(TRAIN_TARGETS)}"
        )
    return targets


def train_target_modules(model, spec: str | None) -> tuple[str | None, list[str]]:
    """(regex of the linear layers that get adapters, modules trained in full) for `--train_target`.

    encoder / projector / decoder: every linear layer inside them (attention and MLP projections
    both); embed_tokens / lm_head: trained in full and saved with the adapter (as mdl-toolkit)."""
    import torch

    targets = parse_train_target(spec)
    prefixes = part_prefixes(model)
    missing = [t for t in targets if t not in prefixes]
    if missing:
        raise LmforgeError(
            f"--train_target {','.join(targets)}: this model ({type(model).__name__}) has no "
            f"{', '.join(missing)} part (found: {', '.join(prefixes) or 'none'})"
        )
    skip = {prefixes[k] for k in ("embed_tokens", "lm_head") if k in prefixes}
    linear_parts = [prefixes[t] for t in targets if t in ("encoder", "projector", "decoder")]
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
        and n not in skip
        and any(n == p or n.startswith(p + ".") for p in linear_parts)
    ]
    regex = "^(" + "|".join(re.escape(n) for n in names) + ")$" if names else None
    full = [prefixes[t].split(".")[-1] for t in targets if t in ("embed_tokens", "lm_head")]
    return regex, full


def set_trainable_parts(model, spec: str | None) -> None:
    """Full/freeze tuning of an audio LLM: only the `--train_target` parts keep requires_grad."""
    targets = parse_train_target(spec)
    prefixes = part_prefixes(model)
    keep = [prefixes[t] for t in targets if t in prefixes]
    for n, p in model.named_parameters():
        p.requires_grad_(any(n == k or n.startswith(k + ".") for k in keep))


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
