"""`--deepspeed` and `--fsdp`: check them and turn them into what `TrainingArguments` expects.

`--deepspeed` takes a shipped config by name (`zero2`, `zero2_offload`, `zero3`, `zero3_offload`:
lmforge/assets/deepspeed/NAME.json, "auto" values filled in by transformers from the run's flags)
or a path to the user's own JSON. `--fsdp` is transformers' field: `true`, or its option string
(`full_shard auto_wrap`, `shard_grad_op`, ... ; `--fsdp_config` for the rest).

Both need accelerators: accelerate runs FSDP only on GPU-like devices (on CPU it would quietly run
plain DDP instead) and DeepSpeed's ZeRO kernels are CUDA ones, so on a CPU-only machine either flag
stops with a message; multi-process CPU training is DDP (`NPROC_PER_NODE=2 lmforge train ...`).
"""

from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

DEEPSPEED_DIR = Path(__file__).resolve().parent.parent / "assets" / "deepspeed"
DEEPSPEED_PRESETS = ("zero2", "zero2_offload", "zero3", "zero3_offload")
# ms-swift's names for the same four configs (reference seed_004)
SWIFT_PRESETS = {
    "default-zero2": "zero2",
    "default-zero3": "zero3",
    "zero2-offload": "zero2_offload",
    "zero3-offload": "zero3_offload",
}
_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0", ""}


def deepspeed_config_path(value: str) -> str:
    """The JSON file `--deepspeed VALUE` names: a shipped preset, or the user's own file."""
    value = SWIFT_PRESETS.get(value, value)
    if value in DEEPSPEED_PRESETS:
        return str(DEEPSPEED_DIR / f"{value}.json")
    path = Path(value)
    if not path.is_file():
        near = difflib.get_close_matches(value, DEEPSPEED_PRESETS, n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        raise LmforgeError(
            f"--deepspeed {value}: no such file; {hint}give one of {', '.join(DEEPSPEED_PRESETS)} "
            "or the path of a DeepSpeed JSON config"
        )
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LmforgeError(f"--deepspeed {value}: not a readable JSON file ({e})") from None
    return str(path)


def fsdp_on(value: Any) -> bool:
    """Whether an `--fsdp` value asks for FSDP (a policy string, a list, or a true spelling)."""
    return bool(value) and not (isinstance(value, str) and value.strip().lower() in _FALSE)


def apply_sharding(kw: dict[str, Any], on_gpu: bool) -> None:
    """Check `--deepspeed` / `--fsdp` in the TrainingArguments fields `kw` and normalise them in place."""
    fsdp = kw.get("fsdp")
    if isinstance(fsdp, str) and fsdp.strip().lower() in _TRUE | _FALSE:
        fsdp = fsdp.strip().lower() in _TRUE
    if fsdp is False or fsdp is None:
        kw.pop("fsdp", None)
        fsdp = None
    else:
        kw["fsdp"] = fsdp
    deepspeed = kw.get("deepspeed")
    if not deepspeed:
        kw.pop("deepspeed", None)
    if deepspeed and fsdp:
        raise LmforgeError("--deepspeed and --fsdp both shard the model; choose one")
    if deepspeed:
        name = deepspeed if isinstance(deepspeed, str) else "(inline config)"
        if isinstance(deepspeed, str):
            kw["deepspeed"] = deepspeed_config_path(deepspeed)
        if importlib.util.find_spec("deepspeed") is None:
            raise LmforgeError(f'--deepspeed {name} needs DeepSpeed: pip install "lmforge[deepspeed]"')
        if not on_gpu:
            raise LmforgeError(
                f"--deepspeed {name} needs GPUs; on CPU drop it "
                "(NPROC_PER_NODE=N lmforge train ... runs plain DDP)"
            )
    if fsdp and not on_gpu:
        raise LmforgeError(
            "--fsdp needs GPUs (accelerate shards only on accelerators and would silently run DDP "
            "on CPU); on CPU drop it (NPROC_PER_NODE=N lmforge train ... runs plain DDP)"
        )
