"""`--format gguf`: a llama.cpp / Ollama GGUF file written with the `gguf` package's `GGUFWriter`.

The writer is ours (no llama.cpp checkout needed): hyper-parameters under llama.cpp's key names,
tensor names from `gguf.get_tensor_name_map` (the table llama.cpp's converter uses), and the
tokenizer as a byte-level BPE (`tokenizer.ggml.model = gpt2`) with tokens, token types, merges,
special ids and the chat template. Facts followed from llama.cpp's converter: Llama's q/k rows are
permuted from Hugging Face's rotate-half layout to interleaved pairs (Qwen3 keeps rotate-half:
llama.cpp runs it in NEOX mode); 1-D tensors (norms) stay f32; a tied output matrix is left out
(llama.cpp reuses `token_embd`); vocabulary rows beyond the tokenizer get `[PADn]` tokens typed
UNUSED; q8_0 quantises every 2-D tensor whose rows are a multiple of 32 (others f16).

Dense Llama and Qwen3 only: MoE models export as `--format hf` (llama.cpp's own converter reads it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")

ARCHES = {"llama": "llama", "qwen3": "qwen3"}  # transformers model_type → GGUF architecture


def _theta(cfg) -> float:
    rope = getattr(cfg, "rope_parameters", None) or {}
    return float(rope.get("rope_theta") or getattr(cfg, "rope_theta", None) or 10000.0)


def check_exportable(model) -> str:
    """The GGUF architecture name, or a one-line error for models this writer does not handle."""
    cfg = model.config
    arch = ARCHES.get(cfg.model_type)
    if arch is None:
        raise LmforgeError(
            f"--format gguf writes dense Llama and Qwen3 models; this is {cfg.model_type} "
            "(export it with --format hf and convert with llama.cpp's convert_hf_to_gguf.py)"
        )
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise LmforgeError("--format gguf: attention / MLP biases are not supported by this writer")
    return arch


def _write_hparams(w, cfg, arch: str, name: str, file_type: int) -> None:
    import gguf

    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_name(name)
    w.add_file_type(file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(int(cfg.max_position_embeddings))
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_rope_freq_base(_theta(cfg))
    w.add_vocab_size(cfg.vocab_size)
    if arch == "llama":
        w.add_rope_dimension_count(head_dim)
    rope = getattr(cfg, "rope_parameters", None) or {}
    kind = rope.get("rope_type", "default")
    if kind in ("linear", "yarn"):
        w.add_rope_scaling_type(
            gguf.RopeScalingType.LINEAR if kind == "linear" else gguf.RopeScalingType.YARN
        )
        w.add_rope_scaling_factor(float(rope["factor"]))
        if kind == "yarn":
            w.add_rope_scaling_orig_ctx_len(int(rope.get("original_max_position_embeddings", 2048)))
            w.add_rope_scaling_yarn_beta_fast(float(rope.get("beta_fast", 32.0)))
            w.add_rope_scaling_yarn_beta_slow(float(rope.get("beta_slow", 1.0)))
    elif kind != "default":
        log.warning("GGUF has no %s RoPE scaling; the file uses plain RoPE", kind)


def _pre_tokenizer_name(pre: Any) -> str:
    """llama.cpp's name for the split regex the merges were learned with."""
    text = json.dumps(pre)
    if r"\\p{N}{1,3}" in text:
        return "llama-bpe"
    if r"[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|" in text:
        return "qwen2"
    return "gpt-2"  # GPT-2's regex (lmforge's tokenizer: GPT-2 regex with "\n" isolated, same tokens)


def _write_tokenizer(w, tokenizer, n_vocab: int) -> None:
    import gguf

    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    model = backend.get("model", {})
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(backend.get("pre_tokenizer")):
        raise LmforgeError(
            f"--format gguf writes byte-level BPE tokenizers; this one is {model.get('type')} "
            f"with pre-tokenizer {(backend.get('pre_tokenizer') or {}).get('type')}"
        )
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= n_vocab:
        raise LmforgeError(
            f"the tokenizer has ids up to {max(vocab.values())}, beyond the model's {n_vocab} rows"
        )
    by_id = {i: t for t, i in vocab.items()}
    special = set(tokenizer.all_special_ids)
    added = set(tokenizer.added_tokens_decoder)
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            kind = gguf.TokenType.CONTROL if i in special else gguf.TokenType.USER_DEFINED
            types.append(kind if i in added or i in special else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(_pre_tokenizer_name(backend.get("pre_tokenizer")))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for attr, add in (
        ("bos_token_id", w.add_bos_token_id),
        ("eos_token_id", w.add_eos_token_id),
        ("pad_token_id", w.add_pad_token_id),
    ):
        if getattr(tokenizer, attr) is not None:
            add(getattr(tokenizer, attr))
    bos = tokenizer.bos_token_id
    w.add_add_bos_token(bos is not None and tokenizer("a")["input_ids"][:1] == [bos])
    if getattr(tokenizer, "chat_template", None):
        w.add_chat_template(tokenizer.chat_template)


def _interleave_rope_rows(weight, n_heads: int):
    """Hugging Face rotate-half rows → llama.cpp's interleaved (x0, x_half, x1, ...) rows, per head."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _tensors(model, arch: str):
    """(GGUF name, float32 numpy array) for every tensor to write."""
    import gguf

    cfg = model.config
    name_map = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), cfg.num_hidden_layers)
    tied = bool(getattr(cfg.get_text_config(), "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        stem, suffix = hf_name.rsplit(".", 1)
        name = name_map.get_name(stem)
        if name is None:
            raise LmforgeError(f"--format gguf: no GGUF name for tensor {hf_name}")
        data = tensor.detach().float().cpu().numpy()
        if arch == "llama" and name.endswith(".attn_q"):
            data = _interleave_rope_rows(data, cfg.num_attention_heads)
        elif arch == "llama" and name.endswith(".attn_k"):
            data = _interleave_rope_rows(data, cfg.num_key_value_heads)
        yield f"{name}.{suffix}", data


def write_gguf(model, tokenizer, path: Path, gguf_type: str, name: str) -> dict[str, int]:
    """Write `path`; returns how many tensors got each GGML type."""
    import gguf
    import numpy as np

    arch = check_exportable(model)
    logging.getLogger("gguf").setLevel(logging.WARNING)  # per-file "Writing the following files" notes
    q = gguf.GGMLQuantizationType
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}.get(
        gguf_type, gguf.LlamaFileType.MOSTLY_Q8_0
    )
    w = gguf.GGUFWriter(str(path), arch)
    _write_hparams(w, model.config, arch, name, int(file_type))
    _write_tokenizer(w, tokenizer, model.config.vocab_size)
    counts: dict[str, int] = {}
    for tname, data in _tensors(model, arch):
        if data.ndim == 1 or gguf_type == "f32":
            w.add_tensor(tname, data.astype(np.float32))
            kind = "F32"
        elif gguf_type == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[q.Q8_0][0] == 0:
            w.add_tensor(tname, gguf.quants.quantize(data, q.Q8_0), raw_dtype=q.Q8_0)
            kind = "Q8_0"
        else:
            w.add_tensor(tname, data.astype(np.float16))
            kind = "F16"
        counts[kind] = counts.get(kind, 0) + 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return counts
