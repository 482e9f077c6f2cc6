"""ms-swift's partial full tuning (reference seed_004): with `--tuner full`, freeze parameters by name
prefix (`--freeze_parameters`) or the bottom fraction of all parameters (`--freeze_parameters_ratio`),
then unfreeze named ones again (`--additional_trainable_parameters`)."""

from __future__ import annotations

from lmforge.errors import LmforgeError


def _prefixes(value) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    return [p.strip() for p in items if p and p.strip() and p.strip() not in ("[]", "none")]


def wants_partial(cfg) -> bool:
    return bool(
        _prefixes(cfg.get("freeze_parameters"))
        or (cfg.get("freeze_parameters_ratio") or 0) > 0
        or _prefixes(cfg.get("additional_trainable_parameters"))
    )


def check_partial(cfg, tuner: str) -> None:
    """Before loading: the flags act on full tuning only, and the ratio is a fraction."""
    ratio = cfg.get("freeze_parameters_ratio") or 0
    if not 0 <= ratio <= 1:
        raise LmforgeError(f"--freeze_parameters_ratio {ratio}: must be between 0 and 1")
    if wants_partial(cfg) and tuner != "full":
        raise LmforgeError(
            "--freeze_parameters / --freeze_parameters_ratio / --additional_trainable_parameters act "
            f"on full tuning (--sft_type full), not --tuner {tuner}"
        )


def apply_partial(model, cfg) -> list[str]:
    """Freeze as asked; returns the names of the parameters left trainable."""
    named = list(model.named_parameters())
    frozen = _prefixes(cfg.get("freeze_parameters"))
    extra = _prefixes(cfg.get("additional_trainable_parameters"))
    for prefix in frozen + extra:
        if not any(name.startswith(prefix) for name, _ in named):
            raise LmforgeError(f"no parameter name starts with {prefix!r} (e.g. {named[0][0]})")
    ratio = cfg.get("freeze_parameters_ratio") or 0
    budget = ratio * sum(p.numel() for _, p in named)
    seen = 0
    for name, p in named:  # in module order: embeddings and the first layers come first
        freeze = seen < budget or any(name.startswith(f) for f in frozen)
        seen += p.numel()
        if freeze and not any(name.startswith(e) for e in extra):
            p.requires_grad_(False)
        elif any(name.startswith(e) for e in extra):
            p.requires_grad_(True)
    return [name for name, p in model.named_parameters() if p.requires_grad]
