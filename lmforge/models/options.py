"""Model options applied after the starting model is loaded (LLaMA-Factory's ModelArguments that
change the model or tokenizer, seed_003): new special tokens and a grown vocabulary, random
re-initialisation, the MoE load-balancing weight of a loaded MoE model, a parameter listing; and
the flag rules that need no model (packing on stages that cannot pack, the liger kernel's package).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lmforge.config.fields import arg
from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")

# Stages whose features can be packed (pretrain documents, SFT / distillation chat rows).
PACKING_KINDS = ("pretrain", "chat")


@dataclass
class ModelOptionArgs:
    new_special_tokens: str | None = arg(
        None, "Comma list of special tokens added to the tokenizer (the embeddings grow to fit)", multi=True
    )
    resize_vocab: bool = arg(
        False, "Grow the embeddings to the tokenizer's size (padded to a multiple of 64) when it is larger"
    )
    train_from_scratch: bool = arg(
        False, "Randomly initialise the weights of --model_name_or_path's architecture (keeps its tokenizer)"
    )
    buffer_size: int | None = arg(
        None, "With --streaming: shuffle the stream through a buffer of this many rows (default: in order)"
    )
    print_param_status: bool = arg(False, "Log every parameter's name, shape, dtype and trainability")


def check_options(module: Any, cfg: Any) -> None:
    """One-line errors for option combinations that would otherwise be ignored."""
    kind = module.DATA_KIND
    if cfg.get("packing") and "packing" in cfg.explicit and kind not in PACKING_KINDS:
        raise LmforgeError(
            f"train {cfg['stage']}: --packing packs pretraining / SFT sequences; {kind} rows "
            "(pairs, prompts) are batched one example per row, so drop --packing (--neat_packing)"
        )
    if cfg.get("buffer_size") and not cfg.get("streaming"):
        raise LmforgeError("--buffer_size shuffles a --streaming dataset; add --streaming true or drop it")
    if cfg.get("use_liger_kernel"):
        import importlib.util

        if importlib.util.find_spec("liger_kernel") is None:
            raise LmforgeError(
                "--enable_liger_kernel needs the liger-kernel package: pip install liger-kernel"
            )
    if cfg.get("train_from_scratch") and not cfg.get("model_name_or_path"):
        raise LmforgeError(
            "--train_from_scratch re-initialises --model_name_or_path's architecture; without a model "
            "lmforge already starts from scratch (size flags / --preset)"
        )


def special_tokens(cfg: Any) -> list[str]:
    raw = cfg.get("new_special_tokens")
    items = raw if isinstance(raw, (list, tuple)) else str(raw or "").split(",")
    return [t.strip() for t in items if str(t).strip()]


def grow_vocab(tokenizer: Any, model: Any, tokens: list[str], resize: bool) -> int:
    """Add `tokens` as special tokens; grow the embeddings when the tokenizer outgrows them (always
    after adding tokens, as LLaMA-Factory). Returns the number of tokens added."""
    added = tokenizer.add_special_tokens({"extra_special_tokens": tokens}, replace_extra_special_tokens=False)
    if added and not resize:
        log.info("--new_special_tokens: %d added; growing the embeddings (--resize_vocab)", added)
    current = model.get_input_embeddings().weight.shape[0]
    if (added or resize) and len(tokenizer) > current:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
        log.info("embeddings resized %d → %d rows", current, model.get_input_embeddings().weight.shape[0])
    return added


def reinitialise(model: Any, seed: int) -> Any:
    """A freshly initialised model of the same architecture and dtype (`--train_from_scratch`)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    fresh = AutoModelForCausalLM.from_config(model.config)
    return fresh.to(dtype=next(model.parameters()).dtype)


def set_moe_aux_loss(model: Any, coef: float) -> None:
    """`--moe_aux_loss_coef` on a loaded model: the router loss weight, with router logits on."""
    config = model.config
    if not any(getattr(config, k, None) for k in ("num_experts", "num_local_experts", "n_routed_experts")):
        raise LmforgeError(
            f"--moe_aux_loss_coef {coef}: the model is not a mixture of experts (no experts in its config)"
        )
    config.router_aux_loss_coef = float(coef)
    config.output_router_logits = True


def apply_model_options(ctx: Any, from_folder: bool) -> None:
    """Apply the options above to `ctx.model` / `ctx.tokenizer` (before data is tokenised)."""
    cfg = ctx.cfg
    if cfg.get("train_from_scratch"):
        ctx.model = reinitialise(ctx.model, cfg["seed"])
        log.info("--train_from_scratch: weights randomly initialised")
    if from_folder and "router_aux_loss_coef" in cfg.explicit and cfg.get("router_aux_loss_coef") is not None:
        set_moe_aux_loss(ctx.model, cfg["router_aux_loss_coef"])
    tokens = special_tokens(cfg)
    if tokens or cfg.get("resize_vocab"):
        grow_vocab(ctx.tokenizer, ctx.model, tokens, bool(cfg.get("resize_vocab")))
        if tokens and cfg.get("tuner") not in (None, "full", "freeze"):
            _train_embeddings(cfg)
    if cfg.get("print_param_status"):
        for name, p in ctx.model.named_parameters():
            log.info("%s %s %s trainable=%s", name, tuple(p.shape), p.dtype, p.requires_grad)


def _train_embeddings(cfg: Any) -> None:
    """New tokens need trained rows: under an adapter the embeddings and head are saved in full."""
    extra = [m for m in ("embed_tokens", "lm_head") if m not in str(cfg.get("modules_to_save") or "")]
    if extra:
        cfg.values["modules_to_save"] = ",".join(filter(None, [cfg.get("modules_to_save"), *extra]))
        log.info("--new_special_tokens under an adapter: also training %s in full", ", ".join(extra))
