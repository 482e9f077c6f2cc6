"""LLaMA-Pro block expansion (Wu et al. 2024, "LLaMA Pro: Progressive LLaMA with Block Expansion",
arXiv:2401.02415).

The L decoder blocks are split into N equal groups and a copy of each group's last block is inserted
after it with its output projections zeroed (attention `o_proj`; MLP `down_proj`, which for MoE
blocks covers every routed expert's fused `experts.down_proj` and the shared expert's). A pre-norm
block then adds exactly zero to the residual stream, so the expanded model computes what the original
did; training only the new blocks adds capacity without disturbing the old ones.

Written by hand because no maintained library does this in place on a loaded transformers model
(LLaMA-Factory's version is a standalone script that writes a new checkpoint).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from lmforge.errors import LmforgeError

_ZEROED = ("o_proj", "down_proj")  # the projections that write into the residual stream


def _decoder_layers(model) -> nn.ModuleList:
    owners = (model.get_decoder() if hasattr(model, "get_decoder") else None, getattr(model, "model", None))
    for owner in owners:
        if isinstance(getattr(owner, "layers", None), nn.ModuleList):
            return owner.layers
    raise LmforgeError(
        f"--expand_layers needs a decoder with a `layers` list; {type(model).__name__} has none"
    )


def _zero_outputs(block: nn.Module) -> None:
    """Zero every parameter under an `o_proj` / `down_proj`, so `block` is the identity."""
    hit: set[str] = set()
    with torch.no_grad():
        for name, param in block.named_parameters():
            found = set(_ZEROED) & set(name.split("."))
            if found:
                param.zero_()
                hit |= found
    if hit != set(_ZEROED):
        raise LmforgeError(
            f"--expand_layers: {type(block).__name__} has no {' / '.join(sorted(set(_ZEROED) - hit))} "
            "to zero, so a copied block would not be an identity map"
        )


def _is_sparse(cfg, i: int) -> bool:
    """transformers' Qwen-MoE rule for whether block `i` is built with the experts MLP."""
    return i not in cfg.mlp_only_layers and cfg.num_experts > 0 and (i + 1) % cfg.decoder_sparse_step == 0


def expand_layers(model, num_new: int) -> list[int]:
    """Insert `num_new` copies of decoder blocks, initialised to the identity, one after each of
    `num_new` equal groups of the original blocks; returns the indices (in the new layer list) of the
    inserted blocks. The model's outputs are unchanged; the new blocks are trainable and nothing is
    frozen here. Attention `layer_idx`, `num_hidden_layers` and the per-layer config lists are
    updated so the KV cache works and `save_pretrained` reloads the same model."""
    layers = _decoder_layers(model)
    cfg = model.config.get_text_config()
    total = len(layers)
    assert total == cfg.num_hidden_layers, (total, cfg.num_hidden_layers)
    if num_new < 1:
        raise LmforgeError(f"--expand_layers N must be at least 1 (blocks to insert); got {num_new}")
    if total % num_new:
        raise LmforgeError(f"--expand_layers N must divide the model's {total} layers; got {num_new}")
    if getattr(cfg, "is_heterogeneous", False):
        raise LmforgeError(
            "--expand_layers does not support configs with per-layer overrides (per_layer_config)"
        )

    group = total // num_new
    sources = [i for g in range(num_new) for i in [*range(g * group, (g + 1) * group), (g + 1) * group - 1]]
    new_ids = [(g + 1) * (group + 1) - 1 for g in range(num_new)]
    moe_rule = all(hasattr(cfg, k) for k in ("mlp_only_layers", "decoder_sparse_step", "num_experts"))
    sparse = [_is_sparse(cfg, s) for s in sources] if moe_rule else []

    originals = list(layers)
    for pos in new_ids:  # ascending: each index is final once the earlier copies are in
        block = copy.deepcopy(originals[sources[pos]])
        _zero_outputs(block)
        block.requires_grad_(True)
        layers.insert(pos, block)
    for pos, block in enumerate(layers):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = pos

    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = [cfg.layer_types[s] for s in sources]
    cfg.num_hidden_layers = len(layers)
    # A reload rebuilds each block as dense or MoE from these fields: keep every copy like its source.
    if moe_rule and [_is_sparse(cfg, p) for p in range(len(layers))] != sparse:
        cfg.mlp_only_layers = [p for p, s in enumerate(sparse) if not s]
        cfg.decoder_sparse_step = 1
    return new_ids
