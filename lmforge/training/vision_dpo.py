"""Preference training on image rows for vision LLMs: `train dpo` (and `train orpo|simpo|cpo`).

Rows are canonical preference rows with `images` (LLaMA-Factory's sharegpt preference rows, ms-swift's
`messages` + `rejected_response`, ...): the `<image>` placeholders sit in the prompt. Each pair is
tokenised as text DPO tokenises it (training/preference.py `encode_pair`: the prompt rendered for
inference, then each answer), with each placeholder turned into the model's image markup and its image
token repeated as SFT does it (training/vision.py, models/vision.py): one implementation of both. The
batch is B chosen then B rejected sequences (prompt + answer, right-padded) with `completion_mask` on
the answer tokens only, plus the image processor's inputs for each sequence's images
(`VisionPairCollator`, built on SFT's `VisionCollator`).

The DPO loss is our own small trainer (`VisionDPOTrainer`). TRL 1.16's DPOTrainer does forward
`pixel_values` / `image_grid_thw` to the policy and the reference, but only through its own vision
collator: that one renders prompts with the processor's chat template (not lmforge's renderer, which
SFT, chat and serve use), wants decoded images in the dataset rows and tokenises every batch itself.
Reusing lmforge's image-row tokenisation and writing the few lines of DPO math here is simpler and
keeps training and inference prompts identical. Losses: `sigmoid` (with `--label_smoothing`),
`hinge`, `ipo`, and `--rpo_alpha` (the chosen answers' NLL), weighted by `--loss_weights`. The
reference is the frozen starting model, the adapter-disabled base under a PEFT tuner, or
`--ref_model PATH`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.training.ref_free import PairTrainer, _sigmoid_loss, add_aux_loss, completion_logps

VISION_LOSSES = ("sigmoid", "hinge", "ipo", "sft")


def is_vision_processor(proc) -> bool:
    return proc is not None and getattr(proc, "image_processor", None) is not None


# --- rows → ids --------------------------------------------------------------------------------
def tokenize_vision_pairs(ctx, rows):
    """Canonical preference rows with `images` → `chosen_input_ids` / `chosen_labels`,
    `rejected_input_ids` / `rejected_labels` (labels on the answer only) and `images` (paths)."""
    if rows is None:
        return None
    from lmforge.data.tokenize import map_rows

    where, max_len = ctx.cfg.get("dataset"), ctx.cfg["max_length"]
    encode_row = _pair_encoder(
        ctx, has_images="images" in rows.column_names, has_videos="videos" in rows.column_names
    )
    ds = map_rows(
        rows,
        encode_row,
        ctx,
        with_indices=True,
        remove_columns=list(rows.column_names),
        desc="tokenising image pairs",
    )
    before = len(ds)
    ds = ds.filter(lambda r: _has_target(r["chosen_labels"]) and _has_target(r["rejected_labels"]))
    ctx.stats["rows_without_targets"] = before - len(ds)
    if len(ds) == 0:
        raise LmforgeError(f"{where}: no image pair has both answers left within --max_length {max_len}")
    return ds


def _has_target(labels: list[int]) -> bool:
    from lmforge.training.vision import IGNORE_INDEX

    return any(x != IGNORE_INDEX for x in labels)


def _pair_encoder(ctx, *, has_images: bool, has_videos: bool):
    """The per-row function of `tokenize_vision_pairs`."""
    from lmforge.data.vision import load_image
    from lmforge.models.vision import image_markup
    from lmforge.training.preference import encode_pair
    from lmforge.training.vision import (
        IGNORE_INDEX,
        PLACEHOLDER,
        ImageTokenCounter,
        expand_images,
        pixel_bounds,
        truncate_image_row,
        with_markup,
    )

    proc, cfg = ctx.processor, ctx.cfg
    markup, bounds, count_tokens = image_markup(proc), pixel_bounds(cfg), ImageTokenCounter(proc)

    def encode(row: dict, i: int) -> dict:
        name, paths = (
            f"{cfg.get('dataset')}: row {i + 1}",
            list((row["images"] if has_images else None) or []),
        )
        if has_videos and row["videos"]:
            raise LmforgeError(f"{name}: video rows are not trained yet (images only); drop its videos")
        prompt, n = with_markup(row["prompt"], markup)
        if n != len(paths):
            raise LmforgeError(
                f"{name}: {n} {PLACEHOLDER} placeholders in the prompt but {len(paths)} images "
                "(images belong to the prompt, not to the chosen / rejected answers)"
            )
        counts = [count_tokens(load_image(p, row=name, **bounds)) for p in paths]
        prompt_ids, chosen, rejected = encode_pair(
            proc.tokenizer, {**row, "prompt": prompt}, cfg["enable_thinking"], name
        )
        prompt_ids, _ = expand_images(proc, prompt_ids, [IGNORE_INDEX] * len(prompt_ids), counts, name)
        out: dict[str, Any] = {"images": paths}
        for side, answer in (("chosen", chosen), ("rejected", rejected)):
            ids, labels = prompt_ids + answer, [IGNORE_INDEX] * len(prompt_ids) + answer
            ids, labels = truncate_image_row(ids, labels, proc.image_token_id, cfg["max_length"], cfg, name)
            out[f"{side}_input_ids"], out[f"{side}_labels"] = ids, labels
        return out

    return encode


class VisionPairCollator:
    """B pairs → one batch of B chosen then B rejected sequences: SFT's `VisionCollator` batch (ids,
    attention mask, image inputs, mm_token_type_ids) with `completion_mask` (1 on answer tokens) in
    place of labels."""

    def __init__(self, processor, pad_id: int, *, bounds: dict | None = None, mm_token_types: bool = False):
        from lmforge.training.vision import VisionCollator

        self.inner = VisionCollator(processor, pad_id, bounds=bounds, mm_token_types=mm_token_types)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        from lmforge.training.vision import IGNORE_INDEX

        sides = [
            {"input_ids": f[f"{side}_input_ids"], "labels": f[f"{side}_labels"], "images": f["images"]}
            for side in ("chosen", "rejected")
            for f in features
        ]
        batch = self.inner(sides)
        batch["completion_mask"] = (batch.pop("labels") != IGNORE_INDEX).long()
        return batch


def pair_collator(ctx) -> VisionPairCollator:
    from lmforge.training.vision import accepts_mm_token_types, pixel_bounds

    return VisionPairCollator(
        ctx.processor,
        ctx.tokenizer.pad_token_id,
        bounds=pixel_bounds(ctx.cfg),
        mm_token_types=accepts_mm_token_types(ctx.model),
    )


# --- the DPO loss ----------------------------------------------------------------------------------
def check_vision_dpo_flags(cfg, losses: list[str]) -> None:
    """What DPO on image rows supports (`losses`: the stage's TRL loss list), checked before the rows
    are tokenised."""
    bad = [x for x in losses if x not in VISION_LOSSES]
    if bad:
        raise LmforgeError(
            f"--loss_type {bad[0]}: DPO on image rows supports sigmoid, hinge and ipo (plus --rpo_alpha)"
        )
    if cfg.get("precompute_ref_log_probs"):
        raise LmforgeError(
            "--precompute_ref_log_probs is not supported on image rows (the reference runs per batch)"
        )


def dpo_loss(
    losses: list[str],
    weights: list[float] | None,
    logps: tuple[torch.Tensor, torch.Tensor],
    ref_logps: tuple[torch.Tensor, torch.Tensor],
    tokens: tuple[torch.Tensor, torch.Tensor],
    chosen_nll: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One batch's DPO loss. `logps` / `ref_logps` are (chosen, rejected) per-sequence sums of answer
    log-probs (B,) under the policy / reference, `tokens` the answer token counts, `chosen_nll` the
    mean NLL over the chosen answer tokens. With h = (π_c − ref_c) − (π_r − ref_r):
    sigmoid L_ε(β·h) (Rafailov et al. 2023; ε = label_smoothing), hinge max(0, 1 − β·h), ipo
    (h̄ − 1/(2β))² with h̄ on per-token means (Azar et al. 2023), sft the chosen NLL (RPO); the
    weighted sum of the pair means. Rewards β·(π − ref) per side, as TRL logs them."""
    (pc, pr), (rc, rr) = logps, ref_logps
    h = (pc - rc) - (pr - rr)
    terms = {
        "sigmoid": lambda: _sigmoid_loss(beta * h, label_smoothing).mean(),
        "hinge": lambda: torch.relu(1 - beta * h).mean(),
        "ipo": lambda: (((pc - rc) / tokens[0] - (pr - rr) / tokens[1]) - 1 / (2 * beta)).pow(2).mean(),
        "sft": lambda: chosen_nll,
    }
    weights = weights or [1.0] * len(losses)
    loss = sum(w * terms[name]() for name, w in zip(losses, weights))
    return loss, {"chosen_rewards": beta * (pc - rc), "rejected_rewards": beta * (pr - rr)}


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


class VisionDPOTrainer(PairTrainer):
    """DPO on `VisionPairCollator` batches; the loss comes in through `LmforgeMixin`'s `_stage_loss`
    hook (NaN guard, token counts, metrics.jsonl as every stage)."""

    def __init__(
        self,
        *args: Any,
        ref_model=None,
        losses: list[str],
        weights: list[float] | None,
        beta: float,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.losses, self.weights, self.beta, self.label_smoothing = losses, weights, beta, label_smoothing
        if ref_model is None and not _is_peft(self.model):
            ref_model = copy.deepcopy(self.model)  # the starting model, frozen
        self.ref_model = ref_model
        if ref_model is not None:
            ref_model.to(self.args.device).eval().requires_grad_(False)

    @torch.no_grad()
    def _reference_logps(self, model, inputs) -> torch.Tensor:
        if self.ref_model is not None:
            return completion_logps(self.ref_model, inputs)[0]
        with self.accelerator.unwrap_model(model).disable_adapter():  # the base under the adapters
            return completion_logps(model, inputs)[0]

    def _stage_loss(self, model, inputs, num_items_in_batch=None):
        seq_logps, seq_tokens, token_logps, outputs = completion_logps(model, inputs)
        ref_logps = self._reference_logps(model, inputs).to(seq_logps.dtype)
        chosen_tokens, rejected_tokens = seq_tokens.chunk(2)
        chosen_nll = -token_logps.chunk(2)[0].sum() / chosen_tokens.sum().clamp(min=1)
        loss, per_pair = dpo_loss(
            self.losses,
            self.weights,
            seq_logps.chunk(2),
            ref_logps.chunk(2),
            (chosen_tokens.clamp(min=1), rejected_tokens.clamp(min=1)),
            chosen_nll,
            beta=self.beta,
            label_smoothing=self.label_smoothing,
        )
        loss = add_aux_loss(self, loss, outputs)
        self._log_metrics(model, *seq_logps.chunk(2), chosen_nll, per_pair)
        return loss, outputs


def vision_dpo_trainer(ctx, losses: list[str], weights: list[float] | None) -> VisionDPOTrainer:
    """DPO on image pairs; `losses` / `weights` as the dpo stage resolved them (its `dpo_losses`)."""
    from lmforge.training.preference import reference_model
    from lmforge.training.trainer import stage_trainer_kwargs

    return VisionDPOTrainer(
        ref_model=reference_model(ctx),
        data_collator=pair_collator(ctx),
        losses=losses,
        weights=weights,
        beta=ctx.cfg["beta"],
        label_smoothing=ctx.cfg["label_smoothing"],
        **stage_trainer_kwargs(ctx),
    )
