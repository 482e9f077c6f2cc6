"""`--format gguf`: a llama.cpp / Ollama GGUF file written with the `gguf` package's `GGUFWriter`.

The writer is ours (no llama.cpp checkout needed): hyper-parameters under llama.cpp's key names,
tensors from `gguf_tensors.py`, and the tokenizer as a byte-level BPE (`tokenizer.ggml.model =
gpt2`) with tokens and token types written here, and merges, special ids, `add_bos_token` and the
chat template written by the `gguf` package's `SpecialVocab` from the saved tokenizer files.

Architectures: Llama, Qwen3, Qwen3-MoE (`qwen3moe`) and Qwen2-MoE (`qwen2moe`). llama.cpp's
qwen2moe graph never renormalises the top-k routing weights, so a Qwen2-MoE with
`norm_topk_prob=True` (lmforge's minimind2-moe preset) is refused rather than written as a
different model.

The pre-tokenizer label (`tokenizer.ggml.pre`) names the llama.cpp split regex that reproduces the
tokenizer's own; unknown pre-tokenizers are refused rather than mislabelled. lmforge's shipped
tokenizer (GPT-2's regex after isolating every "\\n") is labelled `gpt-2`: GPT-2's regex only differs
by keeping "\\n" inside whitespace runs, and since no merge of the vocabulary touches "\\n" (checked
here), BPE cannot join it with a neighbour, so the ids are the same (docs/export.md; tested against
llama.cpp on adversarial strings).

transformers' GGUF reader has no `qwen3.attention.key_length` entry (Qwen3Config then defaults
head_dim to 128); the key it maps to `head_dim` is `qwen3_moe.attention.key_length`, so a dense
Qwen3 file carries that key too and `from_pretrained(dir, gguf_file=...)` builds the right shapes.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")

# transformers model_type → GGUF architecture
ARCHES = {"llama": "llama", "qwen3": "qwen3", "qwen3_moe": "qwen3moe", "qwen2_moe": "qwen2moe"}

# llama.cpp's pre-tokenizer names for the split regexes of tokenizer.json files (the regex each
# family's tokenizer.json carries; llama.cpp implements the same split under that name).
_LLAMA3_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLIT_REGEXES = {_LLAMA3_RE: "llama-bpe", _LLAMA3_RE.replace(r"\p{N}{1,3}", r"\p{N}"): "qwen2"}


def _theta(cfg) -> float:
    rope = getattr(cfg, "rope_parameters", None) or {}
    return float(rope.get("rope_theta") or getattr(cfg, "rope_theta", None) or 10000.0)


def check_exportable(model) -> str:
    """The GGUF architecture name, or a one-line error for models this writer does not handle."""
    cfg = model.config
    arch = ARCHES.get(cfg.model_type)
    if arch is None:
        raise LmforgeError(
            f"--format gguf writes Llama, Qwen3, Qwen3-MoE and Qwen2-MoE models; this is {cfg.model_type} "
            "(export it with --format hf and convert with llama.cpp's convert_hf_to_gguf.py)"
        )
    if (
        getattr(cfg, "attention_bias", False)
        or getattr(cfg, "mlp_bias", False)
        or (getattr(cfg, "qkv_bias", False) and arch != "qwen2moe")  # llama.cpp's qwen2moe adds q/k/v biases
    ):
        raise LmforgeError("--format gguf: attention / MLP biases are not supported by this writer")
    if arch.endswith("moe"):
        if getattr(cfg, "mlp_only_layers", None) or getattr(cfg, "decoder_sparse_step", 1) != 1:
            raise LmforgeError(
                "--format gguf: MoE models with dense layers (mlp_only_layers) are not supported"
            )
        if arch == "qwen2moe" and getattr(cfg, "norm_topk_prob", False):
            raise LmforgeError(
                "--format gguf: this Qwen2-MoE renormalises its top-k routing weights (norm_topk_prob), "
                "which llama.cpp's qwen2moe never does, so the file would run a different model; "
                "export it with --format hf"
            )
    return arch


def _write_moe_hparams(w, cfg, arch: str) -> None:
    w.add_expert_count(cfg.num_experts)
    w.add_expert_used_count(cfg.num_experts_per_tok)
    w.add_expert_feed_forward_length(cfg.moe_intermediate_size)
    if arch == "qwen2moe":
        w.add_expert_shared_feed_forward_length(cfg.shared_expert_intermediate_size)


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
        w.add_rope_dimension_count(head_dim)  # transformers reads head_dim from this key for llama
    if arch == "qwen3":
        w.add_uint32("qwen3_moe.attention.key_length", head_dim)  # see the module docstring
    if arch.endswith("moe"):
        _write_moe_hparams(w, cfg, arch)
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


def _is_byte_level(pre: Any, use_regex: bool) -> bool:
    return (
        isinstance(pre, dict) and pre.get("type") == "ByteLevel" and pre.get("use_regex", True) == use_regex
    )


def pre_tokenizer_name(pre: Any, merges: list[str]) -> str:
    """llama.cpp's name for the split the tokenizer's merges were learned with, or a one-line error."""
    if _is_byte_level(pre, True):
        return "gpt-2"
    steps = pre.get("pretokenizers", []) if isinstance(pre, dict) and pre.get("type") == "Sequence" else []
    if len(steps) == 2 and steps[0].get("type") == "Split" and not steps[0].get("invert"):
        split, pattern = steps[0], steps[0].get("pattern", {})
        if (
            split.get("behavior") == "Isolated"
            and pattern == {"String": "\n"}
            and _is_byte_level(steps[1], True)
        ):
            if any("Ċ" in m for m in merges):  # "\n" in GPT-2's byte alphabet
                raise LmforgeError(
                    "--format gguf: the tokenizer isolates newlines but has merges joining them, "
                    "which no llama.cpp pre-tokenizer reproduces"
                )
            return "gpt-2"
        if split.get("behavior") == "Isolated" and pattern.get("Regex") in SPLIT_REGEXES:
            if _is_byte_level(steps[1], False):
                return SPLIT_REGEXES[pattern["Regex"]]
    raise LmforgeError(
        "--format gguf: llama.cpp has no pre-tokenizer known to split text like this tokenizer "
        f"({json.dumps(pre)[:120]}); export it with --format hf"
    )


def adds_bos(tokenizer) -> bool:
    """Whether tokenizer(text) starts with BOS (a post-processor or add_bos_token), whatever a config claims."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


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
    with tempfile.TemporaryDirectory(prefix="lmforge-gguf-tok-") as folder:
        tokenizer.save_pretrained(folder)
        specials = gguf.SpecialVocab(folder, load_merges=True, n_vocab=n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre_tokenizer_name(backend.get("pre_tokenizer"), specials.merges))
    w.add_token_list(tokens)
    w.add_token_types(types)
    specials.add_special_token = {"bos": adds_bos(tokenizer)}
    specials.add_to_gguf(w, quiet=True)


def write_gguf(model, tokenizer, path: Path, gguf_type: str, name: str) -> dict[str, int]:
    """Write `path`; returns how many tensors got each GGML type."""
    import gguf

    from lmforge.export.gguf_tensors import TYPES, encode, named_tensors

    arch = check_exportable(model)
    logging.getLogger("gguf").setLevel(logging.WARNING)  # per-file "Writing the following files" notes
    w = gguf.GGUFWriter(str(path), arch)
    _write_hparams(w, model.config, arch, name, int(getattr(gguf.LlamaFileType, TYPES[gguf_type][1])))
    _write_tokenizer(w, tokenizer, model.config.vocab_size)
    counts: dict[str, int] = {}
    for tname, data in named_tensors(model, arch):
        array, raw, kind = encode(tname, data, gguf_type)
        w.add_tensor(tname, array, raw_dtype=raw)
        counts[kind] = counts.get(kind, 0) + 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return counts
