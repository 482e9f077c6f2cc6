"""Fault injection for tests, in one place: production code asks `current()` once where a fault can
happen, and the tests switch faults on with environment variables (so they reach subprocesses).

- `LMFORGE_FAULT_KILL_AT_STEP=N`: SIGKILL the training process when optimizer step N begins, exactly
  like `kill -9`, so resume tests need no timing races (`training_callbacks`).
- `LMFORGE_FAULT_NAN_AT_STEP=N`: step N's loss and gradients become NaN (the NaN guard end to end);
  `LMFORGE_FAULT_NAN_KIND=loss` (only the loss value) or `grad` (only the gradients) pins each half of
  the guard on its own (`poison_loss`).
- `LMFORGE_FAULT_KILL_AFTER_ROWS=N`: the teacher store dies half-way through writing its N-th new row.

Unset (the normal case), every hook is off and costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any

from lmforge.errors import LmforgeError

NAN_KINDS = ("both", "loss", "grad")


@dataclass(frozen=True)
class Faults:
    """The faults switched on (0: off)."""

    kill_at_step: int = 0
    nan_at_step: int = 0
    nan_kind: str = "both"
    kill_after_rows: int = 0


def _int(name: str) -> int:
    value = os.environ.get(name, "") or "0"
    try:
        return int(value)
    except ValueError:
        raise LmforgeError(f"{name} must be a step or row number; got {value!r}") from None


def current() -> Faults:
    """The faults the environment asks for now."""
    kind = os.environ.get("LMFORGE_FAULT_NAN_KIND", "") or "both"
    if kind not in NAN_KINDS:
        raise LmforgeError(f"LMFORGE_FAULT_NAN_KIND must be both, loss or grad; got {kind!r}")
    return Faults(
        kill_at_step=_int("LMFORGE_FAULT_KILL_AT_STEP"),
        nan_at_step=_int("LMFORGE_FAULT_NAN_AT_STEP"),
        nan_kind=kind,
        kill_after_rows=_int("LMFORGE_FAULT_KILL_AFTER_ROWS"),
    )


def kill_process() -> None:
    """Die at once, as `kill -9` would: no cleanup, no flush."""
    os.kill(os.getpid(), signal.SIGKILL)


def training_callbacks(faults: Faults) -> list[Any]:
    """Trainer callbacks for the training faults switched on (none normally)."""
    if not faults.kill_at_step:
        return []
    from transformers import TrainerCallback

    step = faults.kill_at_step

    class KillAtStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step + 1 == step:
                kill_process()

    return [KillAtStep()]


def poison_loss(loss: Any, kind: str) -> Any:
    """`both`: NaN loss and gradients; `loss`: a NaN value over finite gradients (the constant carries
    no gradient); `grad`: a finite value over NaN gradients."""
    if kind == "loss":
        return loss + float("nan")
    if kind == "grad":
        return _nan_gradient().apply(loss)
    return loss * float("nan")


def _nan_gradient():
    import torch

    class NanGradient(torch.autograd.Function):
        """Identity forward, NaN gradients backward."""

        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * float("nan")

    return NanGradient
