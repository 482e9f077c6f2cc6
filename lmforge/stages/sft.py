"""Supervised fine-tuning on chat rows: loss on assistant tokens only (every assistant turn of a
multi-turn row), `--train_on_prompt` to include prompts; tool-call and reasoning rows as they come.
Audio and vision LLMs tokenise through training/audio.py and training/vision.py (their processor's
expansion of the clip / image tokens, which never carry loss) and batch with those modules' collators.

MiniMind's SFT learning rate (5e-7) assumes its 1.2 GB pretraining run; it is far too small for a
model pretrained for minutes, so pass e.g. `--learning_rate 5e-4` there (the demo does).
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.errors import LmforgeError

DATA_KIND = "chat"

DEFAULTS = {
    "learning_rate": 5e-7,
    "num_train_epochs": 2,
    "per_device_train_batch_size": 16,
    "gradient_accumulation_steps": 1,
    "max_length": 512,
    "packing": False,
    "model_name_or_path": "pretrain",
}


@dataclass
class Args:
    pass


def validate(cfg) -> None:
    """No rules beyond the common ones (lmforge/pipeline.py `validate_config`)."""


def trainer_config(cfg):
    return None, {}


def prepare(ctx, rows):
    proc = getattr(ctx, "processor", None)
    if proc is not None and getattr(proc, "image_processor", None) is not None:  # a vision LLM
        from lmforge.training.vision import tokenize_vision_chat

        if ctx.cfg["packing"]:
            raise LmforgeError("--packing is not supported for vision models (images are per row)")
        return tokenize_vision_chat(ctx, rows)
    if proc is not None:  # an audio LLM: rows carry an `audio` clip
        from lmforge.training.audio import tokenize_audio_chat

        if "audio" not in rows.column_names:
            raise LmforgeError(
                f"{ctx.cfg.get('dataset')}: this audio model needs an `audio` column (clip paths; "
                "CSV columns audio, user_prompt, prediction)"
            )
        if ctx.cfg["packing"]:
            raise LmforgeError("--packing is not supported for audio models (one clip per row)")
        return tokenize_audio_chat(ctx, rows)
    from lmforge.data.tokenize import tokenize_chat

    return tokenize_chat(ctx, rows)


def build_trainer(ctx):
    from lmforge.training.build import default_trainer

    trainer = default_trainer(ctx)
    proc = getattr(ctx, "processor", None)
    if proc is not None and getattr(proc, "image_processor", None) is not None:
        from lmforge.training.vision import VisionCollator, accepts_mm_token_types, pixel_bounds

        trainer.data_collator = VisionCollator(
            proc,
            ctx.tokenizer.pad_token_id,
            bounds=pixel_bounds(ctx.cfg),
            mm_token_types=accepts_mm_token_types(ctx.model),
        )
    elif proc is not None:
        from lmforge.training.audio import AudioCollator

        trainer.data_collator = AudioCollator(proc, ctx.tokenizer.pad_token_id)
    return trainer
