"""The process set-up every entry point runs first: the CLI (`lmforge ...`) and the Python API
(`lmforge.pipeline.run_train`, `lmforge.pipeline_file.run_pipeline_file`) call `setup()`, so a run
started from Python behaves like the same run started from the shell.

It sets lmforge's log handler and level (`LMFORGE_LOG_LEVEL`, default INFO), quiets warnings nobody
can act on, and sets (unless already set) the environment variables that change results or
behaviour: reproducible MKL kernels, offline Hugging Face hubs, no Hub kernels (remote code), no
tokenizer thread pools, no per-file download bars. Calling it again is harmless.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

ENV_DEFAULTS = {
    "TOKENIZERS_PARALLELISM": "false",
    # MKL (PyTorch's CPU BLAS) picks kernels by buffer alignment unless told to be reproducible: two
    # runs then differ in the last bit now and then, and "resume gives bitwise the same losses" breaks.
    "MKL_CBWR": "AUTO,STRICT",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    # transformers 5 turns on Hub kernels for every from_pretrained model when the `kernels` package is
    # installed (transformers 5.25 requires it); on a GPU, model.train() then fetches and runs
    # kernels-community code — a download and remote code nobody asked for, and under HF_HUB_OFFLINE an
    # error at step 0 (seen on an H200). USE_HUB_KERNELS=1 in the environment turns them back on.
    "USE_HUB_KERNELS": "0",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    # Per-file "Loading weights" / "Writing model shards" bars are noise; the Trainer's own progress
    # bar (tqdm directly) and datasets' tokenising bars stay, unless the log level is WARNING or above.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of the record (not the one at set-up), so a
    replaced stderr (a test's capture, a closed pipe's replacement) never gets a stale stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(level: str) -> None:
    # Only lmforge's own logger prints "[lmforge] ...": the root logger is left alone, so other
    # packages' warnings keep their own look (Python's last-resort handler prints them plainly).
    logger = logging.getLogger("lmforge")
    logger.setLevel(level)
    if not any(getattr(h, "_lmforge", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[lmforge] %(message)s"))
        handler._lmforge = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    # bitsandbytes (pulled in by peft when installed) warns on CPU about 4-bit kernels nobody uses here
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def setup() -> None:
    """Logging, warning filters and environment defaults for an lmforge run (see module docstring)."""
    level = os.environ.get("LMFORGE_LOG_LEVEL", "INFO").upper()
    _setup_logging(level)
    # peft still asks transformers for the renamed `is_gradient_checkpointing` (a FutureWarning per run)
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if logging.getLevelName(level) >= logging.WARNING:
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
