"""What audio and vision LLMs share when lmforge detects and loads them: a local folder's config.json
read without transformers, the class a config names in `architectures`, and loading with that class
(or the modality's Auto class when the config names none that transformers has)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def folder_config(path: str | None) -> dict | None:
    """The parsed config.json of a local model folder, or None (no folder, no file, not JSON)."""
    if not path or not Path(path, "config.json").is_file():
        return None
    try:
        return json.loads(Path(path, "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def named_class(config: Any, fallback=None):
    """The transformers class named by `config.architectures[0]` (the first transformers has), else
    `fallback` (None when there is none)."""
    import transformers

    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    return fallback


def load_model(path: str, class_for, *, dtype=None, attn_implementation: str | None = None):
    """`class_for(config).from_pretrained(path)` in `dtype` (default float32)."""
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return class_for(config).from_pretrained(path, dtype=dtype or torch.float32, **kwargs)
