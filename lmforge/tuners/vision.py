"""What trains in a vision LLM: `--train_target` when given, else LLaMA-Factory's freeze flags
(`--freeze_vision_tower` and `--freeze_multi_modal_projector` default true, `--freeze_language_model`
false: the language model alone trains, as LLaMA-Factory and ms-swift (`--freeze_vit`) do by default).

Full tuning trains exactly those parts; freeze tuning trains its chosen decoder layers (when the
language model is not frozen) plus a freed encoder / projector; adapters go on the linear layers of
those parts (models/parts.py names them).
"""

from __future__ import annotations

from lmforge.errors import LmforgeError

_FLAG_OF = {"encoder": "freeze_vision_tower", "projector": "freeze_multi_modal_projector"}


def is_vision(model) -> bool:
    from lmforge.models.vision import is_vision_config

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return is_vision_config(base.config)


def vision_train_parts(cfg, *, adapters: bool = False) -> list[str]:
    """The parts that train: `--train_target`, else what the freeze flags leave (full / freeze tuning
    train lm_head with the language model; adapters never go on it)."""
    from lmforge.models.parts import parse_train_target

    explicit = getattr(cfg, "explicit", set())
    if cfg.get("train_target"):
        parts = parse_train_target(cfg["train_target"])
        clash = [p for p in parts if _FLAG_OF.get(p) in explicit and cfg.get(_FLAG_OF[p])]
        if "decoder" in parts and "freeze_language_model" in explicit and cfg.get("freeze_language_model"):
            clash.append("decoder")
        if clash:
            flags = ", ".join(f"--{_FLAG_OF.get(p, 'freeze_language_model')} true" for p in clash)
            raise LmforgeError(f"--train_target {cfg['train_target']} trains what {flags} freezes; drop one")
        return parts
    parts = [p for p, flag in _FLAG_OF.items() if not _flag(cfg, flag, True)]
    if not _flag(cfg, "freeze_language_model", False):
        parts += ["decoder"] if adapters else ["decoder", "lm_head"]
    if not parts:
        raise LmforgeError(
            "--freeze_vision_tower, --freeze_multi_modal_projector and --freeze_language_model are all "
            "true: nothing would train (set one of them false, or pass --train_target)"
        )
    return parts


def _flag(cfg, name: str, default: bool) -> bool:
    value = cfg.get(name)
    return default if value is None else bool(value)


def apply_vision_full(model, cfg) -> None:
    """Full tuning of a vision LLM: only the chosen parts keep requires_grad."""
    from lmforge.models.parts import set_trainable_parts

    set_trainable_parts(model, vision_train_parts(cfg))


def apply_vision_freeze(model, cfg) -> None:
    """After freeze tuning picked its decoder layers: free the encoder / projector the flags free,
    and freeze the language model when it is not among the parts."""
    from lmforge.models.parts import owner_part, part_prefixes

    parts = vision_train_parts(cfg)
    prefixes = part_prefixes(model)
    for name, p in model.named_parameters():
        owner = owner_part(name, prefixes)
        if owner in ("encoder", "projector"):
            p.requires_grad_(owner in parts)
        elif owner == "decoder" and "decoder" not in parts:
            p.requires_grad_(False)
