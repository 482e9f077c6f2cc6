"""The stage contract: what every module registered in `lmforge.stages.STAGES` provides.

`run_train` (lmforge/pipeline.py) resolves the flags, calls `validate` and `trainer_config` on the
resolved config (no model, no data yet, so a bad flag costs nothing), then loads the model and the
data, calls `prepare` on the rows and `build_trainer` on the filled context.
tests/test_cli_strict.py checks every registered stage against this Protocol.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Stage(Protocol):
    """A training stage module."""

    DATA_KIND: str  # the canonical row kind it reads (lmforge/data/__init__.py)
    DEFAULTS: dict[str, Any]  # its default flags (MiniMind's reference values)
    Args: type  # a dataclass of its own flags (may be empty)

    def validate(self, cfg: Any) -> None:
        """Raise `LmforgeError` on any bad flag or flag combination; reads only the config."""

    def trainer_config(self, cfg: Any) -> tuple[type | None, dict[str, Any]]:
        """(the TRL config class or None for `TrainingArguments`, the stage's own fields)."""

    def prepare(self, ctx: Any, rows: Any) -> Any:
        """Tokenise the loaded rows into training features (`rows` may be None: no validation set)."""

    def build_trainer(self, ctx: Any) -> Any:
        """The configured trainer over `ctx`'s model and datasets."""
