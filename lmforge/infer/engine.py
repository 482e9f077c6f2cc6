"""`Engine`: load a model for inference (HF folder, run folder or checkpoint, PEFT adapter, MiniMind
weight name, cached hub name) and generate with it (`GenerationEngine`, `infer/generation.py`).

`Engine.from_path` picks the engine of the model's kind: `AudioEngine` (infer/audio.py) and
`VisionEngine` (infer/vision.py) for audio and vision LLMs, `Engine` for text models. The answer
types and text helpers (`Completion`, `TextStream`, `split_thinking`, `ChatDeltas`, ...) are importable
from here too; they live in `infer/stream.py` and `infer/text.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.infer.generation import GenerationEngine
from lmforge.infer.stream import Completion, TextStream  # noqa: F401  (re-exported: every engine's answer types)
from lmforge.infer.text import (  # noqa: F401  (re-exported)
    THINK_CLOSE,
    THINK_OPEN,
    VISIBLE_SPECIAL,
    ChatDeltas,
    split_thinking,
)

# MiniMind's inference RoPE extrapolation: YaRN x16 over the 2048 trained positions. MiniMind sets
# attention_factor 1.0 (no logit temperature), so short prompts behave exactly as without scaling.
YARN_FACTOR, YARN_ORIGINAL_MAX = 16.0, 2048


def _use_template(tokenizer, name: str | None) -> None:
    """`--template NAME` (or the run's) on the loaded tokenizer; nothing when neither is given."""
    if name:
        from lmforge.data.chat_templates import apply_template

        apply_template(tokenizer, name)


def resolve_device(device: str | None) -> str:
    """'auto'/None → cuda when available, else Apple's mps, else cpu."""
    import torch

    if device not in (None, "", "auto"):
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def resolve_dtype(dtype: Any, device: str):
    """'auto'/None → bf16 on GPUs that support it, else fp32; accepts bf16/fp16/fp32 spellings."""
    import torch

    if dtype is None or dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "half": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if str(dtype) not in names:
        raise LmforgeError(f"--dtype {dtype!r}: expected auto, bfloat16, float16 or float32")
    return names[str(dtype)]


class Engine(GenerationEngine):
    """A text model's `GenerationEngine`, and the loader of every kind (`from_path`)."""

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_path(
        cls,
        model: str,
        *,
        device: str | None = None,
        dtype: Any = None,
        lora_weight: str | None = None,
        inference_rope_scaling: bool = False,
        attn_implementation: str | None = None,
        save_dir: str = "out",
        hidden_size: int | None = None,
        use_moe: bool = False,
        template: str | None = None,
        num_hidden_layers: int | None = None,
    ) -> GenerationEngine:
        """Load from an HF folder, a run folder / checkpoint, a PEFT adapter folder, a MiniMind-style
        weight name inside `save_dir`, or a cached hub name. Run folders supply defaults
        (`system`, `enable_thinking`, `lora_weight`, `template`) from their `lmforge_args.yaml`;
        `template` (a `--template` name) overrides the tokenizer's chat template."""

        from transformers import AutoConfig

        from lmforge.models.load import read_run_defaults
        from lmforge.models.locate import check_sizes, find_adapter, is_adapter_dir, resolve_model_path

        if is_adapter_dir(model):
            lora_weight = lora_weight or model  # an adapter folder: load its base model under it
            model = _adapter_base(model)
        path = resolve_model_path(model, save_dir=save_dir, hidden_size=hidden_size, use_moe=use_moe)
        check_sizes(path, {"hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers})
        run = read_run_defaults(path)
        lora_weight = lora_weight or run.get("lora_weight")
        if lora_weight:
            lora_weight = find_adapter(
                str(lora_weight), save_dir, path, hidden_size=hidden_size, use_moe=use_moe
            )
        dev = resolve_device(device)
        config = AutoConfig.from_pretrained(path)
        if inference_rope_scaling:
            _yarn(config.get_text_config())
        kind = _kind(config)
        net = _load_net(path, config, kind, resolve_dtype(dtype, dev), attn_implementation, lora_weight).to(
            dev
        )
        files = Path(str(lora_weight)) if lora_weight else None
        tok_dir = str(files) if files and (files / "tokenizer_config.json").exists() else path
        common = {
            "system": run.get("system") or None,
            "enable_thinking": run.get("enable_thinking"),
            "name": str(model),
        }
        if kind == "text":
            tokenizer = _text_tokenizer(tok_dir)
            _use_template(tokenizer, template or run.get("template"))
            engine = cls(net, tokenizer, **common)
        else:
            engine = _media_engine(kind, net, tok_dir, path, template or run.get("template"), run, common)
        engine.run_args = run
        return engine


def _adapter_base(adapter: str) -> str:
    """The base model named by a PEFT adapter folder (its files checked first)."""
    from lmforge.models.locate import adapter_base
    from lmforge.models.weights import check_model_files

    check_model_files(adapter)
    return adapter_base(adapter) or ""


def _yarn(text_cfg) -> None:
    """MiniMind's `--inference_rope_scaling`: YaRN over the trained positions, no logit temperature."""
    from lmforge.models.presets import rope_parameters

    theta = (getattr(text_cfg, "rope_parameters", None) or {}).get("rope_theta") or getattr(
        text_cfg, "rope_theta", 1e6
    )
    rope = rope_parameters(theta, "yarn", YARN_FACTOR, YARN_ORIGINAL_MAX)
    rope["attention_factor"] = 1.0
    text_cfg.rope_parameters = rope
    text_cfg.max_position_embeddings = max(
        int(text_cfg.max_position_embeddings or 0), int(YARN_FACTOR * YARN_ORIGINAL_MAX)
    )


def _kind(config) -> str:
    """ "audio", "vision" or "text": which engine a model config gets."""
    from lmforge.models import audio, vision

    if audio.is_audio_config(config):
        return "audio"
    return "vision" if vision.is_vision_config(config) else "text"


def _load_net(path: str, config, kind: str, torch_dtype, attn_implementation: str | None, lora_weight):
    """The model of folder `path` (its audio / vision class for those kinds), under `lora_weight`."""
    from transformers import AutoModelForCausalLM

    from lmforge.models import audio, vision

    net_cls = AutoModelForCausalLM
    if kind != "text":
        net_cls = (audio if kind == "audio" else vision).model_class(config)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    net = net_cls.from_pretrained(path, config=config, dtype=torch_dtype, **kwargs)
    if not lora_weight:
        return net
    try:
        from peft import PeftModel
    except ImportError as e:
        raise LmforgeError("--lora_weight needs peft: pip install peft") from e
    return PeftModel.from_pretrained(net, lora_weight)


def _text_tokenizer(tok_dir: str):
    try:
        from lmforge.models.load import load_tokenizer_for

        return load_tokenizer_for(tok_dir)
    except ImportError:  # lmforge.models.tokenizer not available: the folder's own tokenizer
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(tok_dir)


def _media_engine(kind: str, net, tok_dir: str, path: str, template: str | None, run: dict, common: dict):
    """An `AudioEngine` / `VisionEngine` over `net` and its folder's processor."""
    from lmforge.infer.audio import AudioEngine
    from lmforge.infer.vision import VisionEngine
    from lmforge.models import audio, vision

    proc_dir = tok_dir if (Path(tok_dir) / "preprocessor_config.json").exists() else path
    proc = (audio if kind == "audio" else vision).load_processor(proc_dir)
    _use_template(proc.tokenizer, template)
    if kind == "audio":
        return AudioEngine(net, proc, **common)
    engine = VisionEngine(net, proc, **common)
    # images resized as the run's training rows were (LLaMA-Factory's image_max/min_pixels)
    engine.max_pixels = run.get("image_max_pixels") or None
    engine.min_pixels = run.get("image_min_pixels") or None
    return engine
