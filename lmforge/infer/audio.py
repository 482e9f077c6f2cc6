"""Generation for audio LLMs: prompts carry one clip each; the processor's feature extractor turns
a batch of clips into encoder features, and the prompt's audio placeholder is expanded to the same
number of audio tokens as in training (`lmforge.training.audio.expand_audio`)."""

from __future__ import annotations

from typing import Any

from lmforge.infer.args import GenerationArgs
from lmforge.infer.generation import GenerationEngine
from lmforge.infer.stream import Completion


class AudioEngine(GenerationEngine):
    """`GenerationEngine` over an audio LLM and its processor; `generate_audio` is the batch entry point."""

    def __init__(self, model, processor, **kwargs: Any):
        super().__init__(model, processor.tokenizer, **kwargs)
        self.processor = processor

    def encode_audio(self, messages: list[dict], wave, gen: GenerationArgs) -> list[int]:
        """Prompt ids of `messages` with `wave` placed before the first user turn's text."""
        from lmforge.models.audio import audio_placeholder, num_audio_tokens
        from lmforge.training.audio import _with_audio, expand_audio

        ids = self.encode(_with_audio(messages, audio_placeholder(self.processor)), gen)
        ids, _ = expand_audio(
            ids, None, self.processor.audio_token_id, num_audio_tokens(self.processor, wave)
        )
        return ids

    def generate_audio(
        self, encoded: list[list[int]], waves: list, gen: GenerationArgs, batch_size: int = 8
    ) -> list[Completion]:
        """Answers in input order; rows are sorted by length and left padded per batch, and each
        batch's clips become its encoder features."""
        from lmforge.models.audio import extract_features

        def features(rows: list[int]) -> dict:
            return extract_features(self.processor, [waves[i] for i in rows])

        return self.generate_ids(encoded, gen, batch_size, extra_inputs=features)
