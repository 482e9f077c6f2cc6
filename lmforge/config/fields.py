"""`arg()`: a dataclass field whose metadata carries the one-line help shown by `--help`."""

from __future__ import annotations

import dataclasses
from typing import Any


def arg(default: Any = None, help: str = "", *, choices: tuple | None = None, multi: bool = False) -> Any:
    """A dataclass field with help text (and optional choices) for the CLI. `multi`: a comma list
    that takes several values after one flag (`--dataset a b`) and accumulates repeated flags."""
    meta: dict[str, Any] = {"help": help}
    if choices:
        meta["choices"] = tuple(choices)
    if multi:
        meta["multi"] = True
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
