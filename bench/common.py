"""Pieces every bench script shares: machine description, per-process figures (peak memory, wall
time, load) and a random-init model folder. Bench scripts run as `python bench/NAME.py`, so this
folder is on sys.path and `import common` finds this file."""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any


def machine() -> dict[str, Any]:
    """Python, platform, cores (all and usable), torch version and threads, GPU name if any."""
    import torch

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def emit(report: dict[str, Any]) -> None:
    """Print a bench's one JSON line, stamped with the machine, the command line and the date."""
    import json
    import shlex

    report.update(
        machine=machine(),
        command=shlex.join([sys.executable, *sys.argv]),
        date=time.strftime("%Y-%m-%d", time.gmtime()),
    )
    print(json.dumps(report), flush=True)


def process_figures(start: float) -> dict[str, Any]:
    """This process's peak RSS (imports and data included), wall time since `start`, CPU seconds
    per wall second, the machine's 1-minute load and, on CUDA, peak allocated GPU memory."""
    import resource

    import torch

    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.time() - start
    out = {
        "peak_rss_mb": usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10),  # KiB on Linux
        "wall_s": wall,
        # well below the thread count while load_1m is above the core count: others were competing
        "cpu_busy": (usage.ru_utime + usage.ru_stime) / max(wall, 1e-9),
        "load_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def make_model(preset: str, out_dir: str, seed: int = 0) -> str:
    """A random-init lmforge preset with the shipped tokenizer, saved to `out_dir`."""
    from lmforge.models.scratch import init_model
    from lmforge.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    init_model(tokenizer, preset=preset, seed=seed).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


CHILD_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "LMFORGE_LOG_LEVEL": "WARNING",
    "TQDM_DISABLE": "1",
}


def run_child(cmd: list[str], mode: str, prefix: str) -> dict[str, Any]:
    """Run one mode in its own process (offline, quiet); its result is the last stdout line that
    starts with `prefix`, as JSON. A failed mode stops the bench with its output tail."""
    import json
    import shlex
    import subprocess

    print(f"bench: running {mode}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **CHILD_ENV})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(prefix)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-6000:] + proc.stdout[-2000:])
        raise SystemExit(f"bench: mode {mode} failed (exit {proc.returncode}): {shlex.join(cmd)}")
    return json.loads(lines[-1][len(prefix) :])
