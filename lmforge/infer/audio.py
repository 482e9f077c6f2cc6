"""Generation for audio LLMs: prompts carry one clip each; the processor's feature extractor turns
a batch of clips into encoder features, and the prompt's audio placeholder is expanded to the same
number of audio tokens as in training (`lmforge.training.audio.expand_audio`)."""

from __future__ import annotations

from typing import Any

from lmforge.infer.args import GenerationArgs
from lmforge.infer.engine import Completion, Engine


class AudioEngine(Engine):
    """`Engine` over an audio LLM and its processor; `generate_audio` is the batch entry point."""

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
        """Answers in input order; rows are sorted by length and left padded per batch."""
        import torch
        from transformers import StoppingCriteriaList

        from lmforge.infer.engine import _StopCriteria
        from lmforge.models.audio import extract_features

        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        results: list[Completion | None] = [None] * len(encoded)
        step = max(1, batch_size)
        for start in range(0, len(order), step):
            chunk = order[start : start + step]
            width = max(len(encoded[i]) for i in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]) :] = 1
            feats = extract_features(self.processor, [waves[i] for i in chunk])
            if gen.seed is not None:
                torch.manual_seed(gen.seed)
            criteria = StoppingCriteriaList(
                [_StopCriteria(self.tokenizer, list(gen.stop or []), width, None)]
            )
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    **{k: v.to(self.device) for k, v in feats.items()},
                    generation_config=self._generation_config(gen),
                    stopping_criteria=criteria,
                )
            for row, i in enumerate(chunk):
                results[i] = self._finish(out[row, width:].tolist(), len(encoded[i]), gen)
        return results  # type: ignore[return-value]
