"""The stage contract: what every module registered in `lmforge.stages.STAGES` provides.

`run_train` (lmforge/pipeline.py) resolves the flags, calls `validate` and `trainer_config` on the
resolved config (no model, no data yet, so a bad flag costs nothing), then loads the model and the
data, calls `prepare` on the rows and `build_trainer` on the filled context.

`Stage` lists the members every stage has; `OptionalStage` the ones a stage may leave out, read
only through `optional(stage, name)`, which gives the default when the stage has none. The module
docstring is the stage's `--help` summary. `problems(stage)` checks a module against both
(presence, value types, parameter names); tests run it on every registered stage.
"""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Stage(Protocol):
    """A training stage module (`ctx`: `lmforge.pipeline.StageContext`; `cfg`: the resolved config)."""

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


class OptionalStage(Protocol):
    """Members a stage may define; read them with `optional(stage, name)`."""

    # The stage flags that change its tokenised features (the cache fingerprint); default None:
    # every field of `Args` (distill-api leaves out its API key).
    FEATURE_KEYS: tuple[str, ...] | None

    def load_model(self, cfg: Any, path: str) -> Any:
        """The starting model from folder `path` (the reward model's value head); default None:
        the causal-LM load."""

    def check_data(self, ctx: Any) -> None:
        """Raise `LmforgeError` when the prepared data cannot train (RL: no reward can be non-zero);
        default None: no check."""


OPTIONAL_DEFAULTS: dict[str, Any] = {"FEATURE_KEYS": None, "load_model": None, "check_data": None}
_TYPES = {"DATA_KIND": str, "DEFAULTS": dict, "Args": type, "FEATURE_KEYS": tuple}


def optional(stage: ModuleType, name: str) -> Any:
    """The stage's optional member `name`, or its default (`OPTIONAL_DEFAULTS`)."""
    if name not in OPTIONAL_DEFAULTS:
        raise KeyError(f"{name!r} is not an optional stage member ({', '.join(OPTIONAL_DEFAULTS)})")
    return getattr(stage, name, OPTIONAL_DEFAULTS[name])


def _members(protocol: type) -> dict[str, Any]:
    """Data members (name → None) and methods (name → signature without `self`) of a protocol."""
    out: dict[str, Any] = dict.fromkeys(protocol.__annotations__)
    for name, value in vars(protocol).items():
        if inspect.isfunction(value) and not name.startswith("_"):
            params = list(inspect.signature(value).parameters.values())[1:]
            out[name] = [p.name for p in params]
    return out


def _member_problems(stage: ModuleType, name: str, expected: Any) -> list[str]:
    value = getattr(stage, name)
    if expected is None:
        kind = _TYPES[name]
        ok = isinstance(value, kind) and (kind is not tuple or all(isinstance(v, str) for v in value))
        return [] if ok else [f"{name} must be a {kind.__name__}; got {type(value).__name__}"]
    if not callable(value):
        return [f"{name} must be a function"]
    params = [p.name for p in inspect.signature(value).parameters.values()]
    return (
        [] if params == expected else [f"{name}({', '.join(params)}): expected {name}({', '.join(expected)})"]
    )


def problems(stage: ModuleType) -> list[str]:
    """What `stage` lacks or has wrong against `Stage` / `OptionalStage` (empty: it meets the contract)."""
    out = [] if (stage.__doc__ or "").strip() else ["no module docstring (the stage's --help summary)"]
    for name, expected in _members(Stage).items():
        if not hasattr(stage, name):
            out.append(f"missing {name}")
        else:
            out += _member_problems(stage, name, expected)
    for name, expected in _members(OptionalStage).items():
        if getattr(stage, name, None) is not None:
            out += _member_problems(stage, name, expected)
    return [f"{stage.__name__}: {p}" for p in out]
