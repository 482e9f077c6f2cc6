"""Preference stages on TRL's stable trainers (DPO, KTO, reward model) with lmforge's trainer features
mixed in, plus the reference-free ORPO / SimPO / CPO trainer (lmforge/training/ref_free.py).

Rows arrive canonical (lmforge/data: `{prompt, chosen, rejected}` or `{prompt, completion, label}`
as message lists). Every conversation is rendered by lmforge's one chat renderer (data/chat.py):
the ref-free stages tokenise with `encode_completion`, and TRL's DPO / KTO / reward trainers get it
in place of their own `apply_chat_template` call (`lmforge_rendering`), so preference training sees
exactly the prompts SFT, chat and serve use. `guard_pairs` checks a few rows before training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import trl.trainer.dpo_trainer as _dpo_module
import trl.trainer.kto_trainer as _kto_module
import trl.trainer.reward_trainer as _rm_module
from trl import DPOTrainer, KTOTrainer, RewardTrainer

from lmforge.errors import LmforgeError
from lmforge.training.trainer import LmforgeMixin, stage_trainer_kwargs


@contextlib.contextmanager
def lmforge_rendering(module) -> Iterator[None]:
    """Inside, TRL `module`'s dataset tokenisation renders conversations with `data.chat.render`."""
    from lmforge.data.chat import render

    original = module._tokenize

    def tokenize(processing_class, input, **kwargs):
        if not isinstance(input, list):
            return original(processing_class, input, **kwargs)
        tok = getattr(processing_class, "tokenizer", processing_class)
        text = render(
            tok,
            input,
            kwargs.get("tools"),
            add_generation_prompt=kwargs.get("add_generation_prompt", False),
            enable_thinking=kwargs.get("enable_thinking", True),
        )
        return {"input_ids": tok(text, add_special_tokens=False)["input_ids"]}

    module._tokenize = tokenize
    try:
        yield
    finally:
        module._tokenize = original


class LmforgeDPOTrainer(LmforgeMixin, DPOTrainer):
    def _prepare_dataset(self, *args, **kwargs):
        with lmforge_rendering(_dpo_module):
            return super()._prepare_dataset(*args, **kwargs)


class LmforgeKTOTrainer(LmforgeMixin, KTOTrainer):
    def _prepare_dataset(self, *args, **kwargs):
        with lmforge_rendering(_kto_module):
            return super()._prepare_dataset(*args, **kwargs)


class LmforgeRewardTrainer(LmforgeMixin, RewardTrainer):
    def _prepare_dataset(self, *args, **kwargs):
        with lmforge_rendering(_rm_module):
            return super()._prepare_dataset(*args, **kwargs)


def guard_pairs(ctx, rows, sides: tuple[str, ...], n: int = 4) -> None:
    """The template guard on the first `n` rows: each side's prompt, rendered for inference, must
    tokenise as the start of the whole conversation (data/chat.py `encode_completion`)."""
    from lmforge.data.chat import encode_completion
    from lmforge.data.tokenize import first_rows

    if rows is None:
        return
    for row in first_rows(rows, n):
        for side in sides:
            encode_completion(
                ctx.tokenizer, row["prompt"], row[side], enable_thinking=ctx.cfg["enable_thinking"]
            )


def reference_model(ctx):
    """`--ref_model PATH`, else None: TRL then uses the adapter-disabled base under PEFT, the
    precomputed log-probs with --precompute_ref_log_probs, or a frozen copy of the starting model."""
    path = ctx.cfg.get("ref_model")
    if not path:
        return None
    from lmforge.models.load import load_model
    from lmforge.models.locate import resolve_model_path
    from lmforge.models.vision import is_vision_model_dir, load_vision_model

    cfg = ctx.cfg
    if is_vision_model_dir(path):
        return load_vision_model(path)
    return load_model(
        resolve_model_path(
            path, save_dir=cfg["save_dir"], hidden_size=cfg["hidden_size"], use_moe=cfg["use_moe"]
        )
    )


def dpo_trainer(ctx):
    return LmforgeDPOTrainer(ref_model=reference_model(ctx), **stage_trainer_kwargs(ctx))


def kto_trainer(ctx):  # its batch-size rule is checked up front (lmforge/stages/kto.py validate)
    return LmforgeKTOTrainer(ref_model=reference_model(ctx), **stage_trainer_kwargs(ctx))


def reward_trainer(ctx):
    return LmforgeRewardTrainer(**stage_trainer_kwargs(ctx))


def check_ref_free_flags(cfg) -> None:
    """ORPO / SimPO / CPO flag rules, checked before the model is loaded."""
    if cfg["beta"] <= 0:
        raise LmforgeError(f"--beta must be > 0; got {cfg['beta']}")
    if not 0.0 <= cfg["label_smoothing"] <= 0.5:
        raise LmforgeError(f"--label_smoothing must be in [0, 0.5]; got {cfg['label_smoothing']}")
    alpha = cfg.get("cpo_alpha")
    if alpha is not None and alpha < 0:
        raise LmforgeError(f"--cpo_alpha must be >= 0; got {alpha}")


def ref_free_trainer(ctx, kind: str, collator=None):
    """ORPO / SimPO / CPO (`kind`) on text pairs, or on what `collator` batches (image pairs:
    training/pairs.py passes training/vision_dpo's)."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from lmforge.training.ref_free import RefFreePreferenceTrainer

    cfg = ctx.cfg
    common = stage_trainer_kwargs(ctx)
    common.pop("processing_class")
    if collator is None:
        collator = DataCollatorForPreference(
            pad_token_id=ctx.tokenizer.pad_token_id, max_length=cfg["max_length"]
        )
    return RefFreePreferenceTrainer(
        **common,
        processing_class=ctx.tokenizer,
        data_collator=collator,
        loss_type=kind,
        beta=cfg["beta"],
        gamma=cfg.get("simpo_gamma") or 0.0,
        alpha=cfg.get("cpo_alpha") or 0.0,
        label_smoothing=cfg.get("label_smoothing") or 0.0,
    )


def encode_pair(tok, row: dict, thinking: bool, where: str | None):
    """(prompt ids, chosen ids, rejected ids) of a canonical preference row (data/chat.py
    `encode_completion`); the prompt must tokenise the same before either answer."""
    from lmforge.data.chat import encode_completion

    prompt_ids, chosen = encode_completion(tok, row["prompt"], row["chosen"], enable_thinking=thinking)
    again, rejected = encode_completion(tok, row["prompt"], row["rejected"], enable_thinking=thinking)
    if again != prompt_ids:
        raise LmforgeError(
            f"{where}: the prompt tokenises differently before the chosen and the rejected answer"
        )
    return prompt_ids, chosen, rejected


def tokenize_pairs(ctx, rows):
    """Canonical preference rows → `prompt_ids`, `chosen_ids`, `rejected_ids` (the completion starts
    where the rendered prompt ends; rows whose prompt alone fills --max_length are dropped). Text
    pairs only: training/pairs.py sends a vision LLM's image pairs to training/vision_dpo.py."""
    if rows is None:
        return None
    tok, max_length, thinking = ctx.tokenizer, ctx.cfg["max_length"], ctx.cfg["enable_thinking"]

    def encode(row):
        prompt_ids, chosen, rejected = encode_pair(tok, row, thinking, ctx.cfg["dataset"])
        return {"prompt_ids": prompt_ids, "chosen_ids": chosen, "rejected_ids": rejected}

    ds = rows.map(encode, remove_columns=list(rows.column_names), desc="tokenising pairs")
    ds = ds.filter(
        lambda r: len(r["prompt_ids"]) < max_length, desc="dropping prompts longer than max_length"
    )
    if len(ds) == 0:
        raise LmforgeError(f"{ctx.cfg['dataset']}: every prompt is longer than --max_length {max_length}")
    return ds
