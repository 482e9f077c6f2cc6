"""mdl-toolkit's flags (reference/seed_002): aliases, and the ones with no effect here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmforge.config.aliases.transforms import none_if_none, quant_bits

ALIASES: dict[str, tuple[str | tuple[str, ...], Callable[[Any], Any] | None]] = {
    # --- mdl-toolkit (seed_002) ---
    "model_name": (("model_name_or_path", "model"), none_if_none),  # seed_002 all commands: model folder
    "train_dataset": ("dataset", None),  # seed_002 train: training data (CSV or converted folder)
    "lr": ("learning_rate", None),  # seed_002 train: learning rate
    "num_epochs": ("num_train_epochs", None),  # seed_002 train: epochs (a float is a partial epoch)
    "quantization": ("quantization_bit", quant_bits),  # seed_002 train: 8bit / 4bit weights
    "system_prompt": ("system", None),  # seed_002 inference: default system prompt (train has its own key)
}

UNAVAILABLE: dict[str, tuple[tuple[str, ...], str]] = {
    # --- mdl-toolkit (seed_002) ---
    "from_modelscope": (  # seed_002 all commands: load --model-name from ModelScope instead of the HF Hub
        ("false", "0", "no", "null", "none"),
        "ModelScope downloads are not available (lmforge loads local folders and the HF cache only); "
        "download the model first (`modelscope download --model NAME --local_dir DIR`) and pass "
        "--model-name DIR",
    ),
}
