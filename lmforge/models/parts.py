"""The parts of a multimodal LLM (audio or vision): encoder, projector, decoder, embed_tokens, lm_head,
found by attribute name, for `--train_target` and the freeze flags.

Layouts covered: Qwen2-Audio (`audio_tower`, `multi_modal_projector`, `language_model`), LLaVA-style
(`vision_tower`, `multi_modal_projector`, `language_model`) and Qwen2-VL / Qwen2.5-VL (`visual`
holding its projector `visual.merger`, `language_model`). A parameter belongs to the most specific
of encoder / projector / decoder whose prefix it has, so Qwen2-VL's merger is the projector and not
the encoder; embed_tokens and lm_head are extra parts on top (inside the decoder or beside it).
"""

from __future__ import annotations

import re
from typing import Any

from lmforge.errors import LmforgeError

TRAIN_TARGETS = ("encoder", "projector", "decoder", "embed_tokens", "lm_head")
DEFAULT_TRAIN_TARGET = "encoder,projector,decoder"  # mdl-toolkit's default
BODY_PARTS = ("encoder", "projector", "decoder")
# Attribute names of each part, searched on the model and its `.model`
_PART_NAMES = {
    "encoder": (
        "audio_tower",
        "audio_encoder",
        "audio_model",
        "vision_tower",
        "visual",
        "vision_model",
        "encoder",
    ),
    "projector": ("multi_modal_projector", "audio_projector", "mm_projector", "projector"),
    "decoder": ("language_model", "text_model", "decoder"),
}
# A projector that lives inside the encoder (Qwen2-VL / Qwen2.5-VL: `visual.merger`)
_NESTED_PROJECTOR = ("merger", "multi_modal_projector", "projector")


def _find_part(model, names: tuple[str, ...]) -> tuple[str, Any] | None:
    for prefix, owner in (("", model), ("model.", getattr(model, "model", None))):
        if owner is None:
            continue
        for name in names:
            mod = getattr(owner, name, None)
            if mod is not None and hasattr(mod, "named_modules"):
                return prefix + name, mod
    return None


def part_prefixes(model) -> dict[str, str]:
    """Full module-name prefixes of encoder / projector / decoder / embed_tokens / lm_head."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = {id(m): n for n, m in base.named_modules()}
    out = {}
    for part, candidates in _PART_NAMES.items():
        found = _find_part(base, candidates)
        if found:
            out[part] = found[0]
    if "projector" not in out and "encoder" in out:
        encoder = base.get_submodule(out["encoder"])
        for name in _NESTED_PROJECTOR:
            if isinstance(getattr(encoder, name, None), torch.nn.Module):
                out["projector"] = f"{out['encoder']}.{name}"
                break
    emb, head = base.get_input_embeddings(), base.get_output_embeddings()
    if isinstance(emb, torch.nn.Module) and id(emb) in names:
        out["embed_tokens"] = names[id(emb)]
    if isinstance(head, torch.nn.Module) and id(head) in names:
        out["lm_head"] = names[id(head)]
    return out


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def owner_part(name: str, prefixes: dict[str, str]) -> str | None:
    """The encoder / projector / decoder that module or parameter `name` belongs to (the most
    specific prefix wins), else None."""
    hits = [(len(prefixes[p]), p) for p in BODY_PARTS if p in prefixes and _under(name, prefixes[p])]
    return max(hits)[1] if hits else None


def parse_train_target(spec: str | list[str] | None) -> list[str]:
    if isinstance(spec, list):
        spec = ",".join(spec)
    targets = [t.strip() for t in (spec or DEFAULT_TRAIN_TARGET).split(",") if t.strip()]
    bad = [t for t in targets if t not in TRAIN_TARGETS]
    if bad or not targets:
        raise LmforgeError(
            f"--train_target {spec}: unknown part {', '.join(bad) or '(none)'}; "
            f"expected a comma list of {', '.join(TRAIN_TARGETS)}"
        )
    return targets


def _checked_prefixes(model, targets: list[str]) -> dict[str, str]:
    prefixes = part_prefixes(model)
    missing = [t for t in targets if t not in prefixes]
    if missing:
        raise LmforgeError(
            f"--train_target {','.join(targets)}: this model ({type(model).__name__}) has no "
            f"{', '.join(missing)} part (found: {', '.join(prefixes) or 'none'})"
        )
    return prefixes


def train_target_modules(model, spec: str | None) -> tuple[str | None, list[str]]:
    """(regex of the linear layers that get adapters, modules trained in full) for `--train_target`.

    encoder / projector / decoder: every linear layer inside them (attention and MLP projections
    both); embed_tokens / lm_head: trained in full and saved with the adapter (as mdl-toolkit)."""
    import torch

    targets = parse_train_target(spec)
    prefixes = _checked_prefixes(model, targets)
    skip = {prefixes[k] for k in ("embed_tokens", "lm_head") if k in prefixes}
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n not in skip and owner_part(n, prefixes) in targets
    ]
    regex = "^(" + "|".join(re.escape(n) for n in names) + ")$" if names else None
    full = [prefixes[t].split(".")[-1] for t in targets if t in ("embed_tokens", "lm_head")]
    return regex, full


def set_trainable_parts(model, spec: str | list[str] | None) -> None:
    """Full/freeze tuning: only the parameters of the `--train_target` parts keep requires_grad."""
    targets = parse_train_target(spec)
    prefixes = _checked_prefixes(model, targets)
    extra = [prefixes[t] for t in targets if t in ("embed_tokens", "lm_head")]
    for n, p in model.named_parameters():
        keep = owner_part(n, prefixes) in targets or any(_under(n, k) for k in extra)
        p.requires_grad_(keep)


def decoder_layers(model):
    """The decoder's list of transformer blocks (`model.model.layers` or the `get_decoder()` one), for
    the freeze flags and BAdam's blocks."""
    inner = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise LmforgeError(f"{type(model).__name__}: no decoder layer list (model.model.layers) to freeze by")
    return layers
