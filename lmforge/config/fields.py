"""`arg()`: a dataclass field whose metadata carries the one-line help shown by `--help`."""

from __future__ import annotations

import dataclasses
from typing import Any


def arg(default: Any = None, help: str = "", *, choices: tuple | None = None) -> Any:
    """A dataclass field with help text (and optional choices) for the CLI."""
    meta = {"help": help}
    if choices:
        meta["choices"] = tuple(choices)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
