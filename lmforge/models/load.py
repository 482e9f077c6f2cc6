"""Load a model and tokenizer from an HF folder, an lmforge run folder (or a checkpoint in it),
MiniMind-style `--from_weight NAME` inside `--save_dir`, or a hub name the user already has cached.

Nothing is downloaded: hub names resolve only through the local cache (`local_files_only`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError


def minimind_weight_dir(save_dir: str, name: str, hidden_size: int | None, use_moe: bool) -> Path:
    """MiniMind's naming: `--save_weight NAME` → `save_dir/NAME_<hidden_size>[_moe]`."""
    suffix = f"_{hidden_size}" if hidden_size else ""
    return Path(save_dir) / f"{name}{suffix}{'_moe' if use_moe else ''}"


def latest_model_dir(path: Path) -> Path | None:
    """A folder holding weights: the folder itself, else its newest complete checkpoint."""
    if (path / "config.json").exists():
        return path
    from lmforge.runs import latest_checkpoint

    ckpt = latest_checkpoint(path)
    return Path(ckpt) if ckpt else None


def resolve_model_path(
    name_or_path: str, *, save_dir: str = "out", hidden_size: int | None = None, use_moe: bool = False
) -> str:
    """Turn what the user typed into a loadable folder or a cached hub name (its files checked:
    `lmforge.models.weights`)."""
    candidates = [Path(name_or_path)]
    if save_dir and os.sep not in name_or_path and "/" not in name_or_path:
        candidates.append(minimind_weight_dir(save_dir, name_or_path, hidden_size, use_moe))
        candidates.append(Path(save_dir) / name_or_path)
    from lmforge.models.weights import check_model_files

    for cand in candidates:
        if cand.is_dir():
            found = latest_model_dir(cand)
            if found is None:
                raise LmforgeError(f"{cand}: no config.json and no complete checkpoint-N folder inside")
            check_model_files(found)  # a corrupt or truncated file: one line naming it
            return str(found)
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download

            cached = snapshot_download(name_or_path, local_files_only=True)
        except Exception:
            cached = None
        if cached:
            check_model_files(cached)
            return cached
    tried = ", ".join(str(c) for c in candidates)
    raise LmforgeError(
        f"model {name_or_path!r} not found (looked at {tried}; hub names must already be "
        "in the local cache: lmforge never downloads; --from_weight none starts from scratch)"
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


def find_adapter(
    name: str,
    save_dir: str,
    model_dir: str | None = None,
    *,
    hidden_size: int | None = None,
    use_moe: bool = False,
    flag: str = "--lora_weight",
) -> str:
    """A PEFT adapter folder: as given, inside `save_dir` (also MiniMind's `save_dir/lora/NAME_<hidden>
    [_moe]`), or beside / inside the model's run folder."""
    cands = [
        Path(name),
        Path(save_dir) / name,
        minimind_weight_dir(f"{save_dir}/lora", name, hidden_size, use_moe),
    ]
    if model_dir and not Path(name).is_absolute():
        cands += [Path(model_dir) / name, Path(model_dir).parent / name]
    for cand in cands:
        if (cand / "adapter_config.json").exists():
            from lmforge.models.weights import check_model_files

            check_model_files(cand)
            return str(cand)
    raise LmforgeError(f"{flag} {name!r}: no adapter_config.json in {', '.join(map(str, cands))}")
