"""`lmforge merge`: fold a PEFT adapter into its base model and write a full Hugging Face folder.

Works for every adapter type peft's `merge_and_unload` supports (LoRA, DoRA, converted PiSSA, LoHa,
LoKr, OFT, IA3, ...). The adapter is a folder with `adapter_config.json` (an lmforge run trained with a
PEFT tuner is one) or a MiniMind-style name inside `--save_dir`; the base is `--model`, else the
adapter's `base_model_name_or_path`, else the run's `model_name_or_path`. The model is written to
`OUT.tmp-<pid>` and renamed into place only when complete, so a half-written folder never looks done.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.config.fields import arg
from lmforge.errors import LmforgeError

# Inits that rewrite the base weights: such an adapter, saved unconverted, fits only that residual base.
_RESIDUAL_INITS = ("pissa", "olora", "corda", "loftq")


@dataclass
class MergeArgs:
    adapter: str | None = arg(
        None, "Adapter folder (adapter_config.json) or its name inside --save_dir; also the first positional"
    )
    model: str | None = arg(None, "Base model (default: the adapter's base_model_name_or_path)")
    output_dir: str | None = arg(None, "Folder for the merged model (required)")
    save_dir: str = arg("out", "Folder where MiniMind-style adapter / model names live")
    hidden_size: int | None = arg(None, "Hidden size in MiniMind folder names (NAME_<hidden_size>)")
    use_moe: bool = arg(False, "MiniMind folder names end in _moe")
    dtype: str = arg(
        "auto",
        "Weights dtype: auto (the base's stored dtype), float32, bfloat16, float16",
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    overwrite: bool = arg(False, "Replace a non-empty --output_dir")


def _is_full_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        f.suffix in (".safetensors", ".bin") for f in folder.iterdir()
    )


def find_adapter(args: MergeArgs) -> Path:
    """The adapter folder `args.adapter` names (a run folder without one: its newest checkpoint's)."""
    from lmforge.models.locate import find_adapter
    from lmforge.runs import latest_checkpoint

    name = str(args.adapter)
    for cand in (Path(name), Path(args.save_dir) / name):
        if cand.is_dir() and not (cand / "adapter_config.json").exists():
            if _is_full_model(cand):
                raise LmforgeError(
                    f"{cand} is already a full model (config.json + weights, no adapter_config.json): "
                    "nothing to merge"
                )
            ckpt = latest_checkpoint(cand)
            if ckpt and (Path(ckpt) / "adapter_config.json").exists():
                return Path(ckpt)
    return Path(
        find_adapter(name, args.save_dir, hidden_size=args.hidden_size, use_moe=args.use_moe, flag="adapter")
    )


def find_base(adapter: Path, adapter_cfg: dict[str, Any], args: MergeArgs) -> str:
    """`--model`, else the adapter's `base_model_name_or_path`, else its run's `model_name_or_path`."""
    from lmforge.models.load import read_run_defaults
    from lmforge.models.locate import resolve_model_path
    from lmforge.models.weights import WeightsError

    if args.model:
        cands = [(args.model, "--model")]
    else:
        init = str(adapter_cfg.get("init_lora_weights", adapter_cfg.get("init_weights", ""))).lower()
        if init.startswith(_RESIDUAL_INITS):
            raise LmforgeError(
                f"{adapter}: a {init} adapter saved unconverted fits only the residual base written at its "
                "init; pass that model with --model, or save the adapter converted (--pissa_convert true)"
            )
        cands = [
            (adapter_cfg.get("base_model_name_or_path"), "adapter_config.json"),
            (read_run_defaults(str(adapter)).get("model_name_or_path"), "lmforge_args.yaml"),
        ]
        cands = [(n, w) for n, w in cands if n]
        if not cands:
            raise LmforgeError(f"{adapter}: adapter_config.json names no base model; pass --model BASE")
    for name, _ in cands:
        try:
            return resolve_model_path(
                str(name), save_dir=args.save_dir, hidden_size=args.hidden_size, use_moe=args.use_moe
            )
        except WeightsError:
            raise  # found, but broken: say so rather than "not found"
        except LmforgeError:
            continue
    tried = ", ".join(f"{n!r} ({w})" for n, w in cands)
    raise LmforgeError(
        f"base model not found: {tried}; pass --model BASE (a model folder, a run folder or a hub name "
        "already in the local cache: lmforge never downloads)"
    )


def _fill_generation_config(model, adapter: Path, tokenizer) -> None:
    """The adapter run's generation config if it saved one, else the base's; stops at the tokenizer's eos."""
    from transformers import GenerationConfig

    if (adapter / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(adapter))
    gc = model.generation_config
    eos = gc.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else ([] if eos is None else [eos])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    gc.eos_token_id = ids[0] if len(ids) == 1 else (ids or None)
    if gc.pad_token_id is None:
        gc.pad_token_id = tokenizer.pad_token_id


def _model_card(out: Path, base: str, adapter: Path, peft_type: str, dtype: str, n_params: int) -> str:
    return f"""---
library_name: transformers
base_model: {base}
tags: [lmforge, merged, {peft_type.lower()}]
---
# Merged model

The {peft_type} adapter `{adapter}` merged into its base model `{base}` with `lmforge merge`
({n_params / 1e6:.2f}M parameters, {dtype}). A plain Hugging Face model: no peft needed.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{out}")
tokenizer = AutoTokenizer.from_pretrained("{out}")
```
"""


def load_merged(args: MergeArgs) -> tuple[Any, Any, dict[str, Any]]:
    """The adapter `args.adapter` merged into its base: (model, tokenizer, info) where info holds
    `base`, `adapter` (Path), `peft_type`. Also used by `lmforge export`."""
    from lmforge.models.weights import check_model_files

    adapter = find_adapter(args)
    check_model_files(adapter)  # adapter_config.json and the adapter weights, one line if broken
    adapter_cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    base = find_base(adapter, adapter_cfg, args)
    if args.output_dir and Path(args.output_dir).resolve() in (adapter.resolve(), Path(base).resolve()):
        raise LmforgeError(
            f"--output_dir {args.output_dir} is the adapter or base folder itself; choose another folder"
        )

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lmforge.models.load import load_tokenizer_for
    from lmforge.models.vision import is_vision_model_dir, load_vision_model

    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    if is_vision_model_dir(base):  # its own class (AutoModelForCausalLM does not load vision LLMs)
        model = load_vision_model(base, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    try:
        with warnings.catch_warnings():  # peft's own use of deprecated transformers names
            warnings.simplefilter("ignore", FutureWarning)
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (RuntimeError, ValueError) as e:  # shape mismatch: an adapter of another model
        raise LmforgeError(f"{adapter} does not fit base model {base}: {str(e).splitlines()[0]}") from None
    has_tokenizer = (adapter / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer_for(str(adapter) if has_tokenizer else base)
    _fill_generation_config(model, adapter, tokenizer)
    peft_type = "DoRA" if adapter_cfg.get("use_dora") else str(adapter_cfg.get("peft_type", "PEFT"))
    info = {"base": base, "adapter": adapter, "peft_type": peft_type}
    if is_vision_model_dir(base):  # the merged folder gets the processor (image processor) too
        from lmforge.models.vision import load_processor

        info["processor"] = load_processor(str(adapter) if has_tokenizer else base)
    return model, tokenizer, info


def merge(args: MergeArgs) -> tuple[Path, int]:
    """Merge `args.adapter` into its base, write the full model to `args.output_dir` atomically;
    returns (output folder, parameter count)."""
    if not args.adapter:
        raise LmforgeError("merge: name the adapter: `lmforge merge ADAPTER --output_dir OUT`")
    if not args.output_dir:
        raise LmforgeError("merge: --output_dir is required (where the merged model is written)")
    from lmforge.runs import check_output, staged_folder

    out = Path(args.output_dir)
    check_output(out, args.overwrite)
    model, tokenizer, info = load_merged(args)
    base, adapter = info["base"], info["adapter"]

    n_params = sum(p.numel() for p in model.parameters())
    dtype_name = str(model.dtype).removeprefix("torch.")
    card = _model_card(out, base, adapter, info["peft_type"], dtype_name, n_params)
    with staged_folder(
        out, args.overwrite, {"command": "merge", "base": base, "adapter": str(adapter)}
    ) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if info.get("processor") is not None:
            from lmforge.training.vision import save_processor

            save_processor(info["processor"], str(tmp))
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return out, n_params
