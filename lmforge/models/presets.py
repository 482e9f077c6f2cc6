"""Model presets as native `transformers` configs (no custom modelling code).

MiniMind2 sizes map onto Llama (dense) and Qwen2-MoE (MoE with a shared expert), minimind-3 sizes
onto Qwen3 / Qwen3-MoE; `tiny` is a Qwen3 for tests and the CPU demo. Parameter counts match
MiniMind's published figures within 1% (tests/test_models.py checks them).
"""

from __future__ import annotations

import math
from typing import Any

ARCHS = {
    "qwen3": "Qwen3Config",
    "llama": "LlamaConfig",
    "qwen3_moe": "Qwen3MoeConfig",
    "qwen2_moe": "Qwen2MoeConfig",
}

# Fields shared by every preset (MiniMind: pre-norm RMSNorm, SwiGLU, RoPE theta 1e6, tied embeddings).
_COMMON: dict[str, Any] = {
    "vocab_size": 6400,
    "hidden_act": "silu",
    "rope_theta": 1e6,
    "tie_word_embeddings": True,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-5,
}

_MINIMIND3: dict[str, Any] = {
    "arch": "qwen3",
    "hidden_size": 768,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-6,
    "ffn_rule": "pi",
}

PRESETS: dict[str, dict[str, Any]] = {
    # ~0.5M parameters, most of them the 6400-token embedding: unit tests and the CPU demo.
    "tiny": {
        "arch": "qwen3",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 192,
    },
    "minimind2-small": {
        "arch": "llama",
        "hidden_size": 512,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
    },
    "minimind2": {
        "arch": "llama",
        "hidden_size": 768,
        "num_hidden_layers": 16,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
    },
    "minimind2-moe": {
        "arch": "qwen2_moe",
        "hidden_size": 640,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "num_shared_experts": 1,
        "router_aux_loss_coef": 0.01,
    },
    "minimind3": _MINIMIND3,
    "minimind3-moe": {
        **_MINIMIND3,
        "arch": "qwen3_moe",
        "num_experts": 4,
        "num_experts_per_tok": 1,
        "router_aux_loss_coef": 5e-4,
    },
}


def ffn_width(hidden_size: int, rule: str = "8/3") -> int:
    """MiniMind's FFN width: 64*ceil(h*8/3/64) (MiniMind2) or 64*ceil(h*pi/64) (minimind-3)."""
    ratio = math.pi if rule == "pi" else 8 / 3
    return 64 * math.ceil(hidden_size * ratio / 64)


def resolve_arch(arch: str | None, use_moe: bool) -> str:
    arch = arch or ("qwen3_moe" if use_moe else "qwen3")
    if arch not in ARCHS:
        from lmforge.errors import LmforgeError

        raise LmforgeError(f"--arch {arch!r} is not known; expected one of {', '.join(ARCHS)}")
    return arch


def build_config(
    preset: str | None = None,
    *,
    arch: str | None = None,
    use_moe: bool = False,
    rope_scaling: str | None = None,
    rope_factor: float | None = None,
    original_max_position_embeddings: int | None = None,
    **sizes: Any,
):
    """A transformers config from a preset and/or explicit sizes (explicit values win).

    `sizes` takes the usual config names (hidden_size, num_hidden_layers, num_attention_heads,
    num_key_value_heads, intermediate_size, vocab_size, num_experts, num_experts_per_tok,
    num_shared_experts, router_aux_loss_coef, rope_theta, max_position_embeddings, head_dim...);
    None values are ignored.
    """
    import transformers

    from lmforge.errors import LmforgeError

    spec: dict[str, Any] = dict(_COMMON)
    if preset:
        if preset not in PRESETS:
            raise LmforgeError(f"--preset {preset!r} is not known; expected one of {', '.join(PRESETS)}")
        spec.update(PRESETS[preset])
    spec.update({k: v for k, v in sizes.items() if v is not None})
    if arch:
        spec["arch"] = arch
    name = resolve_arch(spec.pop("arch", None), use_moe)
    rule = spec.pop("ffn_rule", "8/3")
    hidden = spec["hidden_size"]
    spec.setdefault("num_attention_heads", max(1, hidden // 64))
    spec.setdefault("num_key_value_heads", max(1, spec["num_attention_heads"] // 4))
    if hidden % spec["num_attention_heads"]:
        raise LmforgeError(
            f"--hidden_size {hidden} must be divisible by --num_attention_heads {spec['num_attention_heads']}"
        )
    if spec["num_attention_heads"] % spec["num_key_value_heads"]:
        raise LmforgeError("--num_attention_heads must be a multiple of --num_key_value_heads")
    spec.setdefault("head_dim", hidden // spec["num_attention_heads"])
    spec.setdefault("intermediate_size", ffn_width(hidden, rule))
    theta = spec.pop("rope_theta")
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": theta}
    if rope_scaling:
        rope = rope_parameters(
            theta, rope_scaling, rope_factor or 4.0, original_max_position_embeddings or 2048
        )
    spec["rope_parameters"] = rope

    num_experts = spec.pop("num_experts", None)
    top_k = spec.pop("num_experts_per_tok", None)
    shared = spec.pop("num_shared_experts", 0)
    aux = spec.pop("router_aux_loss_coef", None)
    if name in ("qwen3_moe", "qwen2_moe"):
        spec.update(
            num_experts=num_experts or 4,
            num_experts_per_tok=top_k or 2,
            norm_topk_prob=True,
            moe_intermediate_size=spec.pop("intermediate_size"),
            decoder_sparse_step=1,
            router_aux_loss_coef=0.01 if aux is None else aux,
            output_router_logits=True,
        )
        if name == "qwen2_moe":
            # MiniMind2-MoE's shared expert has the routed experts' width (qkv_bias off: MiniMind has none).
            spec.update(
                shared_expert_intermediate_size=spec["moe_intermediate_size"] * max(shared, 1), qkv_bias=False
            )
            spec["intermediate_size"] = spec["moe_intermediate_size"]
            spec.pop("head_dim", None)
        else:
            spec["intermediate_size"] = spec["moe_intermediate_size"]
    elif name == "llama":
        spec["attention_bias"] = False
        spec["mlp_bias"] = False
    cls = getattr(transformers, ARCHS[name])
    return cls(**spec)


def rope_parameters(theta: float, kind: str, factor: float, original_max: int) -> dict[str, Any]:
    """RoPE scaling in transformers 5's `rope_parameters` form (yarn/linear/dynamic)."""
    from lmforge.errors import LmforgeError

    if kind not in ("yarn", "linear", "dynamic"):
        raise LmforgeError(f"--rope_scaling {kind!r}: expected yarn, linear or dynamic")
    rope: dict[str, Any] = {"rope_type": kind, "rope_theta": theta, "factor": float(factor)}
    if kind in ("yarn", "dynamic"):
        rope["original_max_position_embeddings"] = int(original_max)
    if kind == "yarn":
        rope.update(beta_fast=32.0, beta_slow=1.0)
    return rope


def count_parameters(model) -> int:
    """Unique parameters (a tied embedding counts once, as MiniMind reports)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
