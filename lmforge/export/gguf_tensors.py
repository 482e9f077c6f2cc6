"""GGUF tensors of a transformers model: names, layouts and weight types (used by `gguf_file.py`).

Facts followed from llama.cpp's converter: Llama's q/k rows are permuted from Hugging Face's
rotate-half layout to interleaved pairs (Qwen3 / Qwen MoE keep rotate-half: llama.cpp runs them in
NEOX mode); 1-D tensors (norms) and MoE routers stay f32; a tied output matrix is left out (llama.cpp
reuses `token_embd`) except for `qwen2moe`, whose llama.cpp loader requires `output.weight`;
transformers 5 stores a MoE layer's experts fused (`experts.gate_up_proj` [E, 2I, H], gate rows
first, `experts.down_proj` [E, H, I]), which become `ffn_{gate,up,down}_exps` [E, ., .]; the
shared-expert gate [1, H] becomes the 1-D `ffn_gate_inp_shexp`. A quantised type applies to every
other 2-D tensor whose rows are a multiple of the type's block (32); the rest are f16.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from lmforge.errors import LmforgeError

# --gguf_type → (GGML type name for 2-D tensors, LlamaFileType name)
TYPES = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q5_0": ("Q5_0", "MOSTLY_Q5_0"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}
_EXPERTS = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)")
_KEEP_F32 = (".ffn_gate_inp.", ".ffn_gate_inp_shexp.")  # routers: tiny, and routing is precision-sensitive


def _interleave_rope_rows(weight, n_heads: int):
    """Hugging Face rotate-half rows → llama.cpp's interleaved (x0, x_half, x1, ...) rows, per head."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def named_tensors(model, arch: str) -> Iterator[tuple[str, Any]]:
    """(GGUF name, float32 numpy array) for every tensor to write."""
    import gguf

    cfg = model.config
    name_map = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), cfg.num_hidden_layers)
    tied = bool(getattr(cfg.get_text_config(), "tie_word_embeddings", False))
    state = model.state_dict()
    for hf_name, tensor in state.items():
        data = tensor.detach().float().cpu().numpy()
        if m := _EXPERTS.fullmatch(hf_name):
            block = f"blk.{m.group(1)}"
            if m.group(2) == "down_proj":
                yield f"{block}.ffn_down_exps.weight", data
            else:
                half = data.shape[1] // 2
                yield f"{block}.ffn_gate_exps.weight", data[:, :half]
                yield f"{block}.ffn_up_exps.weight", data[:, half:]
            continue
        if hf_name == "lm_head.weight" and tied:
            if arch == "qwen2moe":  # its llama.cpp loader has no tied-output fallback
                yield "output.weight", data
            continue
        stem, suffix = hf_name.rsplit(".", 1)
        name = name_map.get_name(stem)
        if name is None:
            raise LmforgeError(f"--format gguf: no GGUF name for tensor {hf_name}")
        if name.endswith(".ffn_gate_inp_shexp"):
            data = data.reshape(-1)
        elif arch == "llama" and name.endswith(".attn_q"):
            data = _interleave_rope_rows(data, cfg.num_attention_heads)
        elif arch == "llama" and name.endswith(".attn_k"):
            data = _interleave_rope_rows(data, cfg.num_key_value_heads)
        yield f"{name}.{suffix}", data


def encode(name: str, data, gguf_type: str) -> tuple[Any, Any, str]:
    """(array to write, raw GGML type or None, type name) for one tensor under `--gguf_type`."""
    import gguf
    import numpy as np

    q = gguf.GGMLQuantizationType
    kind = TYPES[gguf_type][0]
    if data.ndim == 1 or kind == "F32" or any(k in name for k in _KEEP_F32):
        return data.astype(np.float32), None, "F32"
    if kind == "F16":
        return data.astype(np.float16), None, "F16"
    qtype = getattr(q, kind)
    if kind != "BF16" and data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        return data.astype(np.float16), None, "F16"
    return gguf.quants.quantize(np.ascontiguousarray(data), qtype), qtype, kind
