"""Preference pairs for the reference-free stages (orpo, simpo, cpo), text or image: the model's
processor decides which tokeniser and collator a run uses (text: training/preference.py; a vision
LLM's image pairs: training/vision_dpo.py)."""

from __future__ import annotations

from lmforge.training import preference, vision_dpo


def tokenize_pairs(ctx, rows):
    """Canonical preference rows → token ids, with the images' tokens for a vision LLM."""
    if rows is not None and vision_dpo.is_vision_processor(getattr(ctx, "processor", None)):
        return vision_dpo.tokenize_vision_pairs(ctx, rows)
    return preference.tokenize_pairs(ctx, rows)


def ref_free_trainer(ctx, kind: str):
    """The ORPO / SimPO / CPO trainer, batching image pairs with the image processor when there are images."""
    vision = vision_dpo.is_vision_processor(getattr(ctx, "processor", None))
    return preference.ref_free_trainer(ctx, kind, vision_dpo.pair_collator(ctx) if vision else None)
