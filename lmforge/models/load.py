"""Load a model and tokenizer from what `lmforge.models.locate` resolved (an HF folder, a run
folder or checkpoint, a MiniMind weight name inside `--save_dir`, a hub name already cached).

Nothing is downloaded: hub names resolve only through the local cache (`local_files_only`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.models.locate import (  # noqa: F401  (the names callers import from here)
    find_adapter,
    latest_model_dir,
    minimind_weight_dir,
    resolve_model_path,
)


def load_model(
    path: str,
    *,
    dtype=None,
    attn_implementation: str | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    quantization_config=None,
):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if quantization_config is not None:
        kwargs.update(quantization_config=quantization_config, device_map={"": torch.cuda.current_device()})
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code, **kwargs
    )
    if device:
        model.to(device)
    return model


def load_tokenizer_for(path: str | None):
    """The tokenizer saved beside a model, else lmforge's shipped default."""
    from lmforge.models.tokenizer import load_tokenizer

    if path and Path(path, "tokenizer_config.json").exists():
        return load_tokenizer(path)
    if path and Path(path).is_dir() and Path(path).name.startswith("checkpoint-"):
        parent = Path(path).parent
        if Path(parent, "tokenizer_config.json").exists():
            return load_tokenizer(str(parent))
    return load_tokenizer(path if path and not Path(path).is_dir() else None)


def read_run_defaults(model_dir: str) -> dict[str, Any]:
    """The resolved run config (`lmforge_args.yaml`) saved with a model or its parent run folder."""
    for folder in (Path(model_dir), Path(model_dir).parent):
        if not (folder / "lmforge_args.yaml").exists():
            continue
        from lmforge.runs import read_run_args

        return dict(read_run_args(str(folder)) or {})
    return {}
