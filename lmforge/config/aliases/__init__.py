"""Compatibility names: MiniMind, mdl-toolkit, ms-swift and LLaMA-Factory flags mapped onto lmforge's
keys, one module per reference (minimind.py, mdl.py, llamafactory.py, swift.py; shared.py: the names
ms-swift and LLaMA-Factory share; transforms.py: value spellings).

Each alias maps to (native key, or several: the first one the command has wins; value transform).
`UNAVAILABLE` lists reference flags whose effect cannot exist here (a hub download, a vendor backend
not installed): flag → (values that ask for what lmforge already does, so are accepted as they are;
the one-line reason, with what to do instead, for any other value; `{value}` in it is filled in).
One line of provenance per entry. The tables are shown by `--help` and in docs/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmforge.config.aliases import llamafactory, mdl, minimind, shared, swift
from lmforge.config.aliases.transforms import comma_list, dtype, none_if_none, resume, tuner

ALIASES: dict[str, tuple[str | tuple[str, ...], Callable[[Any], Any] | None]] = {
    **minimind.ALIASES,
    **shared.ALIASES,
    **mdl.ALIASES,
    **llamafactory.ALIASES,
    **swift.ALIASES,
}
UNAVAILABLE: dict[str, tuple[tuple[str, ...], str]] = {
    **mdl.UNAVAILABLE,
    **llamafactory.UNAVAILABLE,
    **swift.UNAVAILABLE,
}

VALUE_TRANSFORMS: dict[str, Callable[[Any], Any]] = {
    "tuner": tuner,
    "lora_target": comma_list,
    "modules_to_save": comma_list,
    "dtype": dtype,
    "model_name_or_path": none_if_none,
    "resume_from_checkpoint": lambda v: none_if_none(
        resume(v) if str(v).lower() in ("0", "1", "true", "false") else v
    ),
}
