"""Training stages: one module per stage, looked up by name in STAGES (imported lazily).

A stage module meets the contract of contract.py: the `Stage` Protocol (``DATA_KIND``, ``DEFAULTS``,
``Args``, ``validate(cfg)`` and ``trainer_config(cfg)`` (config only, run before any loading),
``prepare(ctx, rows)``, ``build_trainer(ctx)``) and, where it needs them, the members of
`OptionalStage` (``FEATURE_KEYS``, ``load_model(cfg, path)``, ``check_data(ctx)``), read through
`contract.optional`. A test checks every registered stage, signatures included.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lmforge.errors import LmforgeError

STAGES: dict[str, str] = {
    "pretrain": "lmforge.stages.pretrain",
    "sft": "lmforge.stages.sft",
    "distill": "lmforge.stages.distill",
    "distill-reason": "lmforge.stages.distill_reason",
    "distill-api": "lmforge.stages.distill_api",
    "rm": "lmforge.stages.rm",
    "dpo": "lmforge.stages.dpo",
    "kto": "lmforge.stages.kto",
    "orpo": "lmforge.stages.orpo",
    "simpo": "lmforge.stages.simpo",
    "cpo": "lmforge.stages.cpo",
    "grpo": "lmforge.stages.grpo",
    "ppo": "lmforge.stages.ppo",
    "spo": "lmforge.stages.spo",
}


def get_stage(name: str) -> ModuleType:
    key = name.replace("_", "-")
    if key not in STAGES:
        import difflib

        near = difflib.get_close_matches(key, list(STAGES), n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise LmforgeError(f"unknown stage {name!r}{hint} (available: {', '.join(STAGES)})")
    return importlib.import_module(STAGES[key])
