"""Vision-language models (Qwen2-VL layout first, LLaVA-style next): detect, load with their image
processor, and build a tiny one offline for tests and demos.

A vision LLM here is any local transformers model whose config carries a `vision_config` and an
image token id; the class is `config.architectures[0]`, else `AutoModelForImageTextToText`.

Processors: transformers' Qwen2-VL processor requires a video processor, and video processors need
torchvision. Where `AutoProcessor` cannot load for that reason (a CPU machine without torchvision),
the processor is assembled from its parts (image processor + tokenizer, no video processor): images
work, videos are refused with one line. This workaround is ours; no maintained library offers it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmforge.data.vision import IMAGE_PLACEHOLDER  # noqa: F401 - the canonical rows' marker, used by infer
from lmforge.errors import LmforgeError
from lmforge.models.media import folder_config, load_model, named_class

# Qwen2-VL's special tokens, added to lmforge's tokenizer by the tiny builder
VISION_SPECIAL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
_IMAGE_TOKEN_KEYS = ("image_token_id", "image_token_index")


def is_vision_config(config: Any) -> bool:
    return getattr(config, "vision_config", None) is not None and any(
        getattr(config, k, None) is not None for k in _IMAGE_TOKEN_KEYS
    )


def is_vision_model_dir(path: str | None) -> bool:
    """True when `path` is a local model folder whose config describes a vision LLM."""
    cfg = folder_config(path) or {}
    return "vision_config" in cfg and any(k in cfg for k in _IMAGE_TOKEN_KEYS)


def model_class(config: Any):
    """The transformers class named by `config.architectures[0]`, else AutoModelForImageTextToText."""
    import transformers

    return named_class(config, transformers.AutoModelForImageTextToText)


def load_vision_model(path: str, *, dtype=None, attn_implementation: str | None = None):
    return load_model(path, model_class, dtype=dtype, attn_implementation=attn_implementation)


def _image_only_processor_class(base):
    """`base` (a ProcessorMixin class) that accepts `video_processor=None`."""

    class ImageOnly(base):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    ImageOnly.__name__ = ImageOnly.__qualname__ = base.__name__
    return ImageOnly


def processor_from_parts(path: str, *, image_processor=None, tokenizer=None, chat_template=None):
    """The model's processor class built from its image processor and tokenizer (no video part)."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    config = AutoConfig.from_pretrained(path) if Path(path, "config.json").is_file() else None
    name = _processor_class_name(path, config)
    base = getattr(transformers, name, None) if name else None
    if base is None:
        raise LmforgeError(f"{path}: no processor class for this vision model (processor_config.json)")
    image_processor = image_processor or AutoImageProcessor.from_pretrained(path)
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
    template = chat_template or getattr(tokenizer, "chat_template", None)
    kwargs = {"image_processor": image_processor, "tokenizer": tokenizer, "chat_template": template}
    if "video_processor" in base.get_attributes():
        kwargs["video_processor"] = None
        return _image_only_processor_class(base)(**kwargs)
    return base(**kwargs)


def _processor_class_name(path: str, config) -> str | None:
    for fname in ("processor_config.json", "preprocessor_config.json"):
        f = Path(path, fname)
        if f.is_file():
            try:
                name = json.loads(f.read_text(encoding="utf-8")).get("processor_class")
            except (OSError, ValueError):
                name = None
            if name:
                return name
    model_type = getattr(config, "model_type", "")
    return {
        "qwen2_vl": "Qwen2VLProcessor",
        "qwen2_5_vl": "Qwen2_5_VLProcessor",
        "llava": "LlavaProcessor",
    }.get(model_type)


def load_processor(path: str):
    """The folder's processor (AutoProcessor, else assembled from its parts when only the video part is
    missing); it must have an image processor and an image token."""
    from transformers import AutoProcessor

    try:
        proc = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError, TypeError, AttributeError, ImportError) as e:
        try:
            proc = processor_from_parts(path)
        except (OSError, ValueError, TypeError) as e2:
            msg = " ".join(f"{e} / {e2}".split())[:240]
            raise LmforgeError(f"{path}: vision model without a loadable processor ({msg})") from None
    if getattr(proc, "image_processor", None) is None or not getattr(proc, "image_token", None):
        raise LmforgeError(
            f"{path}: the processor ({type(proc).__name__}) has no image processor / image token; a "
            "vision LLM folder needs both (preprocessor_config.json, processor_config.json)"
        )
    return proc


def supports_video(processor) -> bool:
    return getattr(processor, "video_processor", None) is not None


# --- a tiny model, built offline -------------------------------------------------------------
def build_tiny_vision_model(
    out_dir: str,
    tokenizer=None,
    *,
    hidden_size: int = 128,
    num_hidden_layers: int = 2,
    vision_dim: int = 64,
    vision_layers: int = 2,
    min_pixels: int = 56 * 56,
    max_pixels: int = 112 * 112,
    seed: int = 42,
) -> str:
    """A Qwen2-VL-layout model (ViT with 14-px patches and a 2×2 patch merger, Qwen2 decoder with
    M-RoPE) with lmforge's tokenizer plus Qwen2-VL's four vision tokens, and a Qwen2-VL image
    processor bounded to `min_pixels`..`max_pixels` (a 56×56 image becomes 4 image tokens). Saved
    with its processor files; returns `out_dir`."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    try:
        from transformers import Qwen2VLImageProcessorPil as ImageProcessor
    except ImportError:  # pragma: no cover - transformers without the PIL backend split
        from transformers import Qwen2VLImageProcessor as ImageProcessor

    from lmforge.models.scratch import default_generation_config
    from lmforge.models.tokenizer import load_tokenizer

    tok = tokenizer if tokenizer is not None else load_tokenizer(None)
    missing = [t for t in VISION_SPECIAL_TOKENS if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    ids = {t: tok.convert_tokens_to_ids(t) for t in VISION_SPECIAL_TOKENS}
    heads = max(1, hidden_size // 32)
    head_dim = hidden_size // heads
    half = head_dim // 2  # M-RoPE: (temporal, height, width) sections sum to head_dim / 2, as 1:1.5:1.5
    hw = (half - half // 4) // 2
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": (len(tok) + 63) // 64 * 64,
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": max(1, heads // 2),
            "max_position_embeddings": 2048,
            "rope_scaling": {"type": "mrope", "mrope_section": [half - 2 * hw, hw, hw]},
            "tie_word_embeddings": False,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        vision_config={
            "depth": vision_layers,
            "embed_dim": vision_dim,
            "hidden_size": hidden_size,
            "num_heads": max(1, vision_dim // 32),
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config = default_generation_config(
        {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    )
    image_processor = ImageProcessor(
        min_pixels=min_pixels, max_pixels=max_pixels, patch_size=14, merge_size=2
    )
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    image_processor.save_pretrained(out_dir)
    Path(out_dir, "processor_config.json").write_text(
        json.dumps({"processor_class": "Qwen2VLProcessor"}, indent=2) + "\n", encoding="utf-8"
    )
    return out_dir


# --- images → model inputs (shared by inference and training) -----------------------------------


def image_markup(processor) -> str:
    """Text standing for one image in a rendered prompt: Qwen2-VL's
    `<|vision_start|><|image_pad|><|vision_end|>` when the tokenizer has those tokens, else the
    processor's image token (LLaVA's `<image>`); `expand_image_tokens` then repeats the image token."""
    vocab = processor.tokenizer.get_vocab()
    start, end = "<|vision_start|>", "<|vision_end|>"
    if start in vocab and end in vocab:
        return f"{start}{processor.image_token}{end}"
    return processor.image_token


def image_token_id(processor) -> int:
    tid = getattr(processor, "image_token_id", None)
    return int(tid if tid is not None else processor.tokenizer.convert_tokens_to_ids(processor.image_token))


def image_inputs(processor, images: list) -> dict:
    """The model's image inputs for PIL `images` (Qwen2-VL: `pixel_values` (patches, C·T·P·P) and
    `image_grid_thw` (N, 3)) from the processor's image processor; {} for no image."""
    if not images:
        return {}
    return dict(processor.image_processor(images=list(images), return_tensors="pt"))


def image_token_counts(processor, images: list, inputs: dict) -> list[int]:
    """Image tokens each image becomes: grid cells / merge² (Qwen2-VL), else what the processor says."""
    grid = inputs.get("image_grid_thw")
    if grid is not None:
        merge = int(getattr(processor.image_processor, "merge_size", 1) or 1)
        return [int(g.prod()) // merge**2 for g in grid]
    sizes = [(im.height, im.width) for im in images]
    return [int(n) for n in processor._get_num_multimodal_tokens(image_sizes=sizes)["num_image_tokens"]]


def expand_image_tokens(
    processor, ids: list[int], counts: list[int], labels: list[int] | None = None
) -> tuple[list[int], list[int] | None]:
    """Repeat the k-th image token of `ids` `counts[k]` times (as the processor does to text);
    `labels` (if given) get -100 there. The number of image tokens must equal len(counts)."""
    tid = image_token_id(processor)
    found = sum(1 for t in ids if t == tid)
    if found != len(counts):
        raise LmforgeError(
            f"the prompt has {found} image token(s) ({processor.image_token}) but {len(counts)} image(s)"
        )
    out_ids: list[int] = []
    out_labels: list[int] | None = [] if labels is not None else None
    k = 0
    for j, t in enumerate(ids):
        n = 1
        if t == tid:
            n, k = counts[k], k + 1
        out_ids += [t] * n
        if out_labels is not None:
            out_labels += [-100] * n if t == tid else [labels[j]]
    return out_ids, out_labels


def uses_token_types(processor) -> bool:
    """Whether the model wants `mm_token_type_ids` (Qwen2-VL's M-RoPE: 1 marks image tokens)."""
    return "mm_token_type_ids" in (getattr(processor, "model_input_names", None) or [])
