"""Preference stages on TRL's stable trainers (DPO, KTO, reward model) with lmforge's trainer features
mixed in, plus the reference-free ORPO / SimPO / CPO trainer (lmforge/training/ref_free.py).

Rows arrive canonical (lmforge/data: `{prompt, chosen, rejected}` or `{prompt, completion, label}`
as message lists); TRL renders them with the tokenizer's chat template, which is byte-identical to
lmforge's own renderer, so preference training sees exactly the prompts SFT and chat use.
"""

from __future__ import annotations

from typing import Any

from trl import DPOTrainer, KTOTrainer, RewardTrainer

from lmforge.errors import LmforgeError
from lmforge.training.trainer import LmforgeMixin


class LmforgeDPOTrainer(LmforgeMixin, DPOTrainer):
    pass


class LmforgeKTOTrainer(LmforgeMixin, KTOTrainer):
    pass


class LmforgeRewardTrainer(LmforgeMixin, RewardTrainer):
    pass


def _common(ctx) -> dict[str, Any]:
    return {
        "model": ctx.model,
        "args": ctx.training_args,
        "train_dataset": ctx.train_dataset,
        "eval_dataset": ctx.eval_dataset,
        "processing_class": ctx.tokenizer,
        "nan_policy": ctx.cfg["nan_policy"],
        "max_nan_skips": ctx.cfg["max_nan_skips"],
    }


def reference_model(ctx):
    """`--ref_model PATH`, else None: TRL then uses the adapter-disabled base under PEFT, the
    precomputed log-probs with --precompute_ref_log_probs, or a frozen copy of the starting model."""
    path = ctx.cfg.get("ref_model")
    if not path:
        return None
    from lmforge.models.load import load_model, resolve_model_path

    cfg = ctx.cfg
    return load_model(
        resolve_model_path(
            path, save_dir=cfg["save_dir"], hidden_size=cfg["hidden_size"], use_moe=cfg["use_moe"]
        )
    )


def dpo_trainer(ctx):
    return LmforgeDPOTrainer(ref_model=reference_model(ctx), **_common(ctx))


def kto_trainer(ctx):  # its batch-size rule is checked up front (lmforge/stages/kto.py validate)
    return LmforgeKTOTrainer(ref_model=reference_model(ctx), **_common(ctx))


def reward_trainer(ctx):
    return LmforgeRewardTrainer(**_common(ctx))


def check_ref_free_flags(cfg) -> None:
    """ORPO / SimPO / CPO flag rules, checked before the model is loaded."""
    if cfg["beta"] <= 0:
        raise LmforgeError(f"--beta must be > 0; got {cfg['beta']}")
    if not 0.0 <= cfg["label_smoothing"] <= 0.5:
        raise LmforgeError(f"--label_smoothing must be in [0, 0.5]; got {cfg['label_smoothing']}")
    alpha = cfg.get("cpo_alpha")
    if alpha is not None and alpha < 0:
        raise LmforgeError(f"--cpo_alpha must be >= 0; got {alpha}")


def ref_free_trainer(ctx, kind: str):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from lmforge.training.ref_free import RefFreePreferenceTrainer

    cfg = ctx.cfg
    common = _common(ctx)
    common.pop("processing_class")
    return RefFreePreferenceTrainer(
        **common,
        processing_class=ctx.tokenizer,
        data_collator=DataCollatorForPreference(
            pad_token_id=ctx.tokenizer.pad_token_id, max_length=cfg["max_length"]
        ),
        loss_type=kind,
        beta=cfg["beta"],
        gamma=cfg.get("simpo_gamma") or 0.0,
        alpha=cfg.get("cpo_alpha") or 0.0,
        label_smoothing=cfg.get("label_smoothing") or 0.0,
    )


def tokenize_pairs(ctx, rows):
    """Canonical preference rows → `prompt_ids`, `chosen_ids`, `rejected_ids` (the completion starts
    where the rendered prompt ends; rows whose prompt alone fills --max_length are dropped)."""
    if rows is None:
        return None
    tok, max_length = ctx.tokenizer, ctx.cfg["max_length"]

    def encode(row):
        prompt = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        out = {"prompt_ids": tok(prompt, add_special_tokens=False)["input_ids"]}
        for side in ("chosen", "rejected"):
            full = tok.apply_chat_template(row["prompt"] + row[side], tokenize=False)
            if not full.startswith(prompt):
                raise LmforgeError(
                    f"{ctx.cfg['dataset']}: the chat template renders the prompt differently alone"
                )
            out[f"{side}_ids"] = tok(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        return out

    ds = rows.map(encode, remove_columns=list(rows.column_names), desc="tokenising pairs")
    ds = ds.filter(
        lambda r: len(r["prompt_ids"]) < max_length, desc="dropping prompts longer than max_length"
    )
    if len(ds) == 0:
        raise LmforgeError(f"{ctx.cfg['dataset']}: every prompt is longer than --max_length {max_length}")
    return ds
