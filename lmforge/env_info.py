"""`lmforge env`: the versions users paste into bug reports (as `llamafactory-cli env`)."""

from __future__ import annotations

import importlib.metadata
import platform

# (shown name, distribution name)
PACKAGES = (
    ("transformers", "transformers"),
    ("trl", "trl"),
    ("peft", "peft"),
    ("datasets", "datasets"),
    ("accelerate", "accelerate"),
    ("deepspeed", "deepspeed"),
    ("vllm", "vllm"),
    ("bitsandbytes", "bitsandbytes"),
    ("flash-attn", "flash-attn"),
)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def env_lines() -> list[str]:
    """`name: version` lines; torch with its CUDA / MPS availability."""
    from lmforge import __version__

    lines = [
        f"lmforge: {__version__}",
        f"Python: {platform.python_version()}",
        f"Platform: {platform.platform()}",
    ]
    torch_version = _version("torch")
    lines.append(f"torch: {torch_version}")
    if torch_version != "not installed":
        import torch

        if torch.cuda.is_available():
            names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            lines.append(f"CUDA: available (CUDA {torch.version.cuda}; {names})")
        else:
            lines.append(
                f"CUDA: not available{' (built for CUDA ' + torch.version.cuda + ')' if torch.version.cuda else ''}"
            )
        mps = getattr(torch.backends, "mps", None)
        lines.append(f"MPS: {'available' if mps is not None and mps.is_available() else 'not available'}")
    lines += [f"{name}: {_version(dist)}" for name, dist in PACKAGES]
    return lines
