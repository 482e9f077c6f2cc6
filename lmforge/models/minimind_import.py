"""`lmforge import minimind`: MiniMind `.pth` weights → a native Hugging Face model folder.

MiniMind saves plain PyTorch state dicts whose key names already follow Hugging Face's
(`model.layers.L.self_attn.q_proj.weight`, ...). The four generations map onto stock
`transformers` architectures, so the output loads with `AutoModelForCausalLM` and no remote code:

    MiniMind2 dense       → LlamaForCausalLM      (rotate-half RoPE, GQA, SwiGLU, RMSNorm eps 1e-5)
    MiniMind2-MoE         → Qwen2MoeForCausalLM   (softmax top-k routing + ungated shared experts)
    minimind-3 dense      → Qwen3ForCausalLM      (per-head q/k RMSNorm, eps 1e-6)
    minimind-3-MoE        → Qwen3MoeForCausalLM   (top-k routing, no shared expert)

Two details are not plain renames:
- Qwen2-MoE gates its shared expert with `sigmoid(W x)`. MiniMind2 adds its shared experts
  ungated, so W is set to zero (gate 0.5) and the shared down projection doubled; several shared
  experts are concatenated along the FFN width (their outputs add up, as in MiniMind).
- MiniMind2 renormalises the top-k weights only when k > 1, minimind-3 always; `norm_topk_prob`
  is set to match (`--norm_topk_prob` overrides).

Sizes come from tensor shapes. What shapes cannot tell is taken from flags or MiniMind's fixed
values: the number of attention heads of a MiniMind2 model (8), experts per token (MiniMind2 2,
minimind-3 1), RoPE theta (1e6). Written by hand: no library reads MiniMind checkpoints.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.config.fields import arg
from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")

FAMILIES = ("minimind2", "minimind2-moe", "minimind3", "minimind3-moe")
ARCH_OF = {
    "minimind2": "llama",
    "minimind2-moe": "qwen2_moe",
    "minimind3": "qwen3",
    "minimind3-moe": "qwen3_moe",
}
MINIMIND2_HEADS = 8  # every MiniMind2 size uses 8 query heads


@dataclass
class ImportArgs:
    checkpoint: str | None = arg(None, "MiniMind weights (.pth state dict); also the first positional")
    output_dir: str | None = arg(None, "Folder for the Hugging Face model (required)")
    family: str = arg(
        "auto",
        "Which MiniMind: auto (from the keys), minimind2, minimind2-moe, minimind3, minimind3-moe",
        choices=("auto", *FAMILIES),
    )
    hidden_size: int | None = arg(None, "Check: the hidden size the checkpoint must have")
    num_hidden_layers: int | None = arg(None, "Check: the number of layers the checkpoint must have")
    num_attention_heads: int | None = arg(
        None, "Query heads (not in the shapes of a MiniMind2 checkpoint; default 8, MiniMind's value)"
    )
    num_key_value_heads: int | None = arg(None, "Check: key/value heads (derived from the k_proj shape)")
    num_experts_per_tok: int | None = arg(None, "MoE experts per token (default: MiniMind2 2, minimind-3 1)")
    norm_topk_prob: bool | None = arg(
        None, "Renormalise top-k routing weights (default: MiniMind2 when k > 1, minimind-3 always)"
    )
    rope_theta: float = arg(1e6, "RoPE base (MiniMind: 1e6)")
    rms_norm_eps: float | None = arg(None, "RMSNorm epsilon (default: MiniMind2 1e-5, minimind-3 1e-6)")
    max_position_embeddings: int = arg(32768, "Context length written to config.json (MiniMind: 32768)")
    tokenizer: str | None = arg(
        None, "Tokenizer folder saved with the model (default: lmforge's; a real MiniMind needs MiniMind's)"
    )
    dtype: str = arg(
        "auto",
        "Weights dtype: auto (as stored in the .pth), float32, bfloat16, float16",
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    overwrite: bool = arg(False, "Replace a non-empty --output_dir")


@dataclass
class Layout:
    """What the checkpoint's keys and shapes say (plus the flags shapes cannot replace)."""

    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    tied: bool
    num_experts: int = 0
    num_shared: int = 0


# --------------------------------------------------------------------------------------- reading
def read_state_dict(path: str) -> dict[str, Any]:
    """The tensors of a MiniMind `.pth` (also a resume checkpoint's `model` entry); DDP
    (`module.`) and torch.compile (`_orig_mod.`) prefixes are dropped."""
    import pickle

    import torch

    if not Path(path).is_file():
        raise LmforgeError(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LmforgeError(f"{path}: not a PyTorch state dict that loads safely ({first[:200]})") from None
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "module"):
            if isinstance(obj.get(key), dict) and any(isinstance(v, torch.Tensor) for v in obj[key].values()):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise LmforgeError(
            f"{path}: expected a dict of tensors (a MiniMind state dict); got {type(obj).__name__}"
        )
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise LmforgeError(f"{path}: entry {key!r} is {type(value).__name__}, not a tensor")
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def _shape(sd: dict[str, Any], path: str, key: str, expected: tuple, what: str) -> tuple:
    """The shape of `key`; `expected` holds ints to check and None for sizes still unknown."""
    if key not in sd:
        want = "(" + ", ".join("?" if d is None else str(d) for d in expected) + ")"
        raise LmforgeError(f"{path}: missing {key} (expected shape {want}, {what})")
    shape = tuple(sd[key].shape)
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        want = "(" + ", ".join("?" if d is None else str(d) for d in expected) + ")"
        raise LmforgeError(f"{path}: {key} has shape {shape}; expected {want} ({what})")
    return shape


def _detect_family(sd: dict[str, Any], path: str) -> str:
    keys = list(sd)
    if any(k.startswith(("tok_embeddings.", "layers.")) for k in keys):
        raise LmforgeError(
            f"{path}: MiniMind v1 key names (tok_embeddings / layers.N.attention.wq); only MiniMind2 and "
            "minimind-3 checkpoints (model.embed_tokens, model.layers.N.self_attn...) are supported"
        )
    if "model.embed_tokens.weight" not in sd:
        raise LmforgeError(
            f"{path}: missing model.embed_tokens.weight (expected shape (vocab_size, hidden_size)): "
            "not a MiniMind2 / minimind-3 state dict"
        )
    qk_norm = any(k.endswith("self_attn.q_norm.weight") for k in keys)
    moe = any(re.search(r"\.mlp\.experts\.\d+\.", k) for k in keys)
    shared = any(".mlp.shared_experts." in k for k in keys)
    if qk_norm:
        if shared:
            raise LmforgeError(f"{path}: q/k norms (minimind-3) together with shared experts (MiniMind2-MoE)")
        return "minimind3-moe" if moe else "minimind3"
    return "minimind2-moe" if moe else "minimind2"


def inspect_layout(sd: dict[str, Any], args: ImportArgs, path: str) -> Layout:
    """Sizes from shapes; every key checked, unknown keys refused (naming the key)."""
    family = _detect_family(sd, path) if args.family == "auto" else args.family
    vocab, hidden = _shape(sd, path, "model.embed_tokens.weight", (None, None), "vocab_size × hidden_size")
    if args.hidden_size and args.hidden_size != hidden:
        raise LmforgeError(
            f"{path}: model.embed_tokens.weight says hidden_size {hidden}; --hidden_size is {args.hidden_size}"
        )
    layer_ids = {int(m.group(1)) for k in sd if (m := re.match(r"model\.layers\.(\d+)\.", k))}
    num_layers = len(layer_ids)
    if not num_layers or layer_ids != set(range(num_layers)):
        raise LmforgeError(f"{path}: layers must be numbered 0..N-1; found {sorted(layer_ids)[:10]}")
    if args.num_hidden_layers and args.num_hidden_layers != num_layers:
        raise LmforgeError(
            f"{path}: has {num_layers} layers; --num_hidden_layers is {args.num_hidden_layers}"
        )
    heads, kv, head_dim = _head_sizes(sd, path, family, hidden, args)
    inter, experts, shared = _ffn_sizes(sd, path, family, hidden)
    tied = "lm_head.weight" not in sd
    if not tied:
        _shape(sd, path, "lm_head.weight", (vocab, hidden), "vocab_size × hidden_size")
        tied = bool((sd["lm_head.weight"] == sd["model.embed_tokens.weight"]).all())
    layout = Layout(family, vocab, hidden, num_layers, heads, kv, head_dim, inter, tied, experts, shared)
    _check_all_keys(sd, layout, path)
    return layout


def _head_sizes(
    sd: dict[str, Any], path: str, family: str, hidden: int, args: ImportArgs
) -> tuple[int, int, int]:
    """(query heads, key/value heads, head_dim): minimind-3's q_norm gives head_dim; a MiniMind2
    checkpoint does not say, so its head count is --num_attention_heads or MiniMind's 8."""
    attn = "model.layers.0.self_attn"
    q_rows = _shape(sd, path, f"{attn}.q_proj.weight", (None, hidden), "heads·head_dim × hidden")[0]
    k_rows = _shape(sd, path, f"{attn}.k_proj.weight", (None, hidden), "kv_heads·head_dim × hidden")[0]
    if family.startswith("minimind3"):
        head_dim = _shape(sd, path, f"{attn}.q_norm.weight", (None,), "head_dim: minimind-3 q/k norm")[0]
        if q_rows % head_dim or k_rows % head_dim:
            raise LmforgeError(
                f"{path}: q_proj/k_proj rows {q_rows}/{k_rows} are not multiples of head_dim {head_dim}"
            )
        heads = q_rows // head_dim
        if args.num_attention_heads and args.num_attention_heads != heads:
            raise LmforgeError(
                f"{path}: has {heads} query heads (q_norm); --num_attention_heads is {args.num_attention_heads}"
            )
    else:
        heads = args.num_attention_heads or MINIMIND2_HEADS
        if q_rows != hidden or hidden % heads:
            raise LmforgeError(
                f"{path}: {attn}.q_proj.weight has shape ({q_rows}, {hidden}); a MiniMind2 model expects "
                f"({hidden}, {hidden}) split into {heads} heads (set --num_attention_heads)"
            )
        head_dim = hidden // heads
        if not args.num_attention_heads:
            log.info(
                "assuming %d attention heads (MiniMind2's value; --num_attention_heads to change)", heads
            )
    if k_rows % head_dim or heads % (k_rows // head_dim or 1) or not k_rows:
        raise LmforgeError(
            f"{path}: {attn}.k_proj.weight rows {k_rows} do not split into heads of {head_dim}"
        )
    kv = k_rows // head_dim
    if args.num_key_value_heads and args.num_key_value_heads != kv:
        raise LmforgeError(
            f"{path}: k_proj gives {kv} key/value heads; --num_key_value_heads is {args.num_key_value_heads}"
        )
    return heads, kv, head_dim


def _ffn_sizes(sd: dict[str, Any], path: str, family: str, hidden: int) -> tuple[int, int, int]:
    """(FFN width, routed experts, shared experts)."""
    moe = family.endswith("-moe")
    if moe:
        experts = _shape(
            sd, path, "model.layers.0.mlp.gate.weight", (None, hidden), "router: experts × hidden"
        )[0]
        inter = _shape(
            sd, path, "model.layers.0.mlp.experts.0.gate_proj.weight", (None, hidden), "expert FFN × hidden"
        )[0]
        shared = len(
            {m.group(1) for k in sd if (m := re.match(r"model\.layers\.0\.mlp\.shared_experts\.(\d+)\.", k))}
        )
        if shared and family != "minimind2-moe":
            raise LmforgeError(
                f"{path}: shared experts found; only MiniMind2-MoE has them (--family {family})"
            )
    else:
        inter = _shape(sd, path, "model.layers.0.mlp.gate_proj.weight", (None, hidden), "FFN × hidden")[0]
        experts = shared = 0
    return inter, experts, shared


def expected_shapes(lay: Layout) -> dict[str, tuple[int, ...]]:
    """Every key a checkpoint of this layout holds, with its shape."""
    h, hd, i = lay.hidden_size, lay.head_dim, lay.intermediate_size
    out: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (lay.vocab_size, h),
        "model.norm.weight": (h,),
    }
    for n in range(lay.num_layers):
        p = f"model.layers.{n}"
        out.update(
            {
                f"{p}.self_attn.q_proj.weight": (lay.num_heads * hd, h),
                f"{p}.self_attn.k_proj.weight": (lay.num_kv_heads * hd, h),
                f"{p}.self_attn.v_proj.weight": (lay.num_kv_heads * hd, h),
                f"{p}.self_attn.o_proj.weight": (h, lay.num_heads * hd),
                f"{p}.input_layernorm.weight": (h,),
                f"{p}.post_attention_layernorm.weight": (h,),
            }
        )
        if lay.family.startswith("minimind3"):
            out[f"{p}.self_attn.q_norm.weight"] = (hd,)
            out[f"{p}.self_attn.k_norm.weight"] = (hd,)
        mlps = [f"{p}.mlp"]
        if lay.num_experts:
            out[f"{p}.mlp.gate.weight"] = (lay.num_experts, h)
            mlps = [f"{p}.mlp.experts.{e}" for e in range(lay.num_experts)]
            mlps += [f"{p}.mlp.shared_experts.{e}" for e in range(lay.num_shared)]
        for m in mlps:
            out.update(
                {
                    f"{m}.gate_proj.weight": (i, h),
                    f"{m}.up_proj.weight": (i, h),
                    f"{m}.down_proj.weight": (h, i),
                }
            )
    return out


def _check_all_keys(sd: dict[str, Any], lay: Layout, path: str) -> None:
    want = expected_shapes(lay)
    for key, shape in want.items():
        _shape(sd, path, key, shape, f"{lay.family}, hidden {lay.hidden_size}")
    extra = [k for k in sd if k not in want and k != "lm_head.weight"]
    if extra:
        raise LmforgeError(
            f"{path}: unexpected key {extra[0]} (shape {tuple(sd[extra[0]].shape)}) for a {lay.family} checkpoint"
        )


# ------------------------------------------------------------------------------------ converting
def build_hf_config(lay: Layout, args: ImportArgs):
    """The transformers config of the target architecture."""
    from lmforge.models.presets import build_config

    v2 = lay.family.startswith("minimind2")
    sizes: dict[str, Any] = dict(
        hidden_size=lay.hidden_size,
        num_hidden_layers=lay.num_layers,
        num_attention_heads=lay.num_heads,
        num_key_value_heads=lay.num_kv_heads,
        intermediate_size=lay.intermediate_size,
        vocab_size=lay.vocab_size,
        head_dim=lay.head_dim,
        rope_theta=args.rope_theta,
        max_position_embeddings=args.max_position_embeddings,
        rms_norm_eps=args.rms_norm_eps or (1e-5 if v2 else 1e-6),
        tie_word_embeddings=lay.tied,
    )
    top_k = None
    if lay.num_experts:
        top_k = args.num_experts_per_tok or (2 if v2 else 1)
        if not 1 <= top_k <= lay.num_experts:
            raise LmforgeError(f"--num_experts_per_tok {top_k}: the checkpoint has {lay.num_experts} experts")
        sizes.update(
            num_experts=lay.num_experts, num_experts_per_tok=top_k, num_shared_experts=max(lay.num_shared, 1)
        )
    config = build_config(arch=ARCH_OF[lay.family], **sizes)
    if lay.num_experts:
        norm = args.norm_topk_prob
        config.norm_topk_prob = (top_k > 1 if v2 else True) if norm is None else bool(norm)
        config.output_router_logits = False
    return config


def convert_state_dict(sd: dict[str, Any], lay: Layout) -> dict[str, Any]:
    """MiniMind tensors → the target model's parameter names (fused expert tensors for MoE)."""
    out = {
        k: v.float() for k, v in sd.items() if ".mlp.experts." not in k and ".mlp.shared_experts." not in k
    }
    out["lm_head.weight"] = sd.get("lm_head.weight", sd["model.embed_tokens.weight"]).float()
    for n in range(lay.num_layers if lay.num_experts else 0):
        out.update(_moe_layer(sd, f"model.layers.{n}.mlp", lay))
    return out


def _moe_layer(sd: dict[str, Any], p: str, lay: Layout) -> dict[str, Any]:
    """One MoE block: experts stacked as transformers 5 stores them; MiniMind2's shared experts
    concatenated into Qwen2-MoE's single shared expert."""
    import torch

    def w(name: str) -> Any:
        return sd[f"{p}.{name}.weight"].float()

    experts = range(lay.num_experts)
    out = {
        f"{p}.experts.gate_up_proj": torch.stack(
            [torch.cat([w(f"experts.{e}.gate_proj"), w(f"experts.{e}.up_proj")]) for e in experts]
        ),  # (E, 2I, H)
        f"{p}.experts.down_proj": torch.stack([w(f"experts.{e}.down_proj") for e in experts]),  # (E, H, I)
    }
    if lay.family != "minimind2-moe":
        return out
    shared = range(lay.num_shared)
    if lay.num_shared:
        gate = torch.cat([w(f"shared_experts.{e}.gate_proj") for e in shared])  # (S·I, H)
        up = torch.cat([w(f"shared_experts.{e}.up_proj") for e in shared])
        # sigmoid(0) = 0.5 scales Qwen2-MoE's shared expert: double its output projection.
        down = 2.0 * torch.cat([w(f"shared_experts.{e}.down_proj") for e in shared], dim=1)  # (H, S·I)
    else:  # no shared expert: a zero one adds nothing
        gate = up = torch.zeros(lay.intermediate_size, lay.hidden_size)
        down = torch.zeros(lay.hidden_size, lay.intermediate_size)
    out[f"{p}.shared_expert.gate_proj.weight"] = gate
    out[f"{p}.shared_expert.up_proj.weight"] = up
    out[f"{p}.shared_expert.down_proj.weight"] = down
    out[f"{p}.shared_expert_gate.weight"] = torch.zeros(1, lay.hidden_size)
    return out


# --------------------------------------------------------------------------------------- writing
def _model_card(src: str, lay: Layout, arch: str, n_params: int) -> str:
    return f"""---
library_name: transformers
tags: [lmforge, minimind]
---
# {lay.family} imported from MiniMind

`{src}` converted by `lmforge import minimind` into a native `{arch}` model
({n_params / 1e6:.2f}M parameters; hidden {lay.hidden_size}, {lay.num_layers} layers,
{lay.num_heads} q / {lay.num_kv_heads} kv heads{f", {lay.num_experts} experts" if lay.num_experts else ""}).
Loads with `AutoModelForCausalLM.from_pretrained` and no remote code.
"""


def _load_tokenizer(args: ImportArgs, vocab_size: int):
    from lmforge.models.tokenizer import load_tokenizer

    if args.tokenizer and not Path(args.tokenizer, "tokenizer_config.json").is_file():
        raise LmforgeError(f"--tokenizer {args.tokenizer}: no tokenizer_config.json there")
    tokenizer = load_tokenizer(args.tokenizer)
    if len(tokenizer) > vocab_size:
        raise LmforgeError(
            f"--tokenizer has {len(tokenizer)} tokens but the checkpoint's embedding only {vocab_size}; "
            "pass the tokenizer the model was trained with (--tokenizer DIR)"
        )
    if not args.tokenizer:
        log.info("saving lmforge's tokenizer; a MiniMind-trained model needs MiniMind's (--tokenizer DIR)")
    return tokenizer


def build_model(sd: dict[str, Any], lay: Layout, args: ImportArgs, tokenizer):
    """The target model with the converted weights, in `--dtype`, with a generation config that
    stops at the tokenizer's end-of-turn (MiniMind's sampling defaults: temperature / top_p 0.85)."""
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.models.scratch import default_generation_config, special_ids

    config = build_hf_config(lay, args)
    ids = special_ids(tokenizer)
    config.pad_token_id, config.bos_token_id = ids["pad_token_id"], ids["bos_token_id"]
    config.eos_token_id = ids["eos_token_id"][0]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(convert_state_dict(sd, lay), strict=False)
    assert not unexpected and not [m for m in missing if m != "lm_head.weight"], (missing, unexpected)
    if lay.tied:
        model.tie_weights()
    stored = next(iter(sd.values())).dtype
    model.to(stored if args.dtype == "auto" else getattr(torch, args.dtype)).eval()
    model.generation_config = default_generation_config(ids, top_p=0.85)  # MiniMind's eval top_p
    return model


def import_minimind(args: ImportArgs) -> tuple[Path, Any, Layout]:
    """Convert `args.checkpoint`, write the HF folder atomically; returns (folder, model, layout)."""
    from lmforge.models.presets import count_parameters
    from lmforge.runs import check_output, staged_folder

    if not args.checkpoint:
        raise LmforgeError(
            "import minimind: name the weights: `lmforge import minimind PATH.pth --output_dir OUT`"
        )
    if not args.output_dir:
        raise LmforgeError("import minimind: --output_dir is required (where the HF model is written)")
    out = Path(args.output_dir)
    check_output(out, args.overwrite)
    sd = read_state_dict(args.checkpoint)
    lay = inspect_layout(sd, args, args.checkpoint)
    tokenizer = _load_tokenizer(args, lay.vocab_size)
    model = build_model(sd, lay, args, tokenizer)
    card = _model_card(args.checkpoint, lay, type(model).__name__, count_parameters(model))
    info = {"command": "import minimind", "checkpoint": str(args.checkpoint), "family": lay.family}
    with staged_folder(out, args.overwrite, info) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return out, model, lay
