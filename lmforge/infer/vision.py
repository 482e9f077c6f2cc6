"""Generation for vision LLMs (Qwen2-VL and LLaVA-style models, both tested): prompts carry images.

Messages use the canonical form: text with `<image>` placeholders plus a list of images (paths or
PIL images) in placeholder order; OpenAI-style content parts (`image_url` / `image` and `text`) are
converted to it by `canonical_messages`. When no message has a placeholder, the images go before
the first user turn's text (LLaMA-Factory's rule). The model's own chat template renders the text
with each placeholder replaced by the image markup (Qwen2-VL:
`<|vision_start|><|image_pad|><|vision_end|>`); the image token is then repeated as many times as the
image has tokens after the processor's patch merge (`lmforge.models.vision.expand_image_tokens`).
Batches go through `Engine.generate_ids` with the batch's `pixel_values` / `image_grid_thw` (and the
left-padded `mm_token_type_ids` M-RoPE needs) as extra inputs; greedy answers equal plain
transformers `generate` on the processor's output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.infer.args import GenerationArgs
from lmforge.infer.generation import GenerationEngine
from lmforge.infer.stream import Completion, TextStream
from lmforge.models.vision import IMAGE_PLACEHOLDER


@dataclass
class VisionPrompt:
    """One encoded prompt: token ids (image tokens expanded) and its images' model inputs, or (a
    `lazy` encoding) the image paths they are computed from when the prompt's batch runs."""

    ids: list[int]
    pixels: dict | None = field(default_factory=dict, repr=False)  # {}: no image; None: from `paths`
    paths: list[str] = field(default_factory=list)


def count_placeholders(messages: list[dict]) -> int:
    return sum(str(m.get("content") or "").count(IMAGE_PLACEHOLDER) for m in messages)


def place_images(messages: list[dict], num_images: int) -> list[dict]:
    """`messages` with `num_images` placeholders before the first user turn's text when none has a
    placeholder; otherwise the counts must match (one-line error)."""
    found = count_placeholders(messages)
    if found == num_images:
        return messages
    if found:
        raise LmforgeError(
            f"messages have {found} {IMAGE_PLACEHOLDER} placeholder(s) but {num_images} image(s)"
        )
    first = next((i for i, m in enumerate(messages) if m.get("role") == "user"), None)
    if first is None:
        raise LmforgeError(f"{num_images} image(s) but no user turn to put them in")
    out = [dict(m) for m in messages]
    out[first]["content"] = IMAGE_PLACEHOLDER * num_images + str(out[first].get("content") or "")
    return out


def image_ref(part: dict) -> str | None:
    """The image URL / path of an OpenAI content part (`image_url`, or swift's `image`), else None."""
    kind = part.get("type")
    if kind == "image_url":
        value = part.get("image_url")
        return value.get("url") if isinstance(value, dict) else value
    if kind in ("image", "input_image"):
        value = part.get("image", part.get("image_url"))
        return value.get("url") if isinstance(value, dict) else value
    return None


def canonical_messages(messages: list[dict]) -> tuple[list[dict], list[Any]]:
    """OpenAI content parts → (messages with `<image>` placeholders, image refs in order). Text
    content passes through; its own placeholders are left for the caller's image list."""
    out, refs = [], []
    for i, m in enumerate(messages):
        content = m.get("content")
        if isinstance(content, list):
            text = []
            for j, part in enumerate(content):
                if not isinstance(part, dict):
                    raise LmforgeError(f"messages[{i}].content[{j}]: expected an object with a type")
                if part.get("type") == "text":
                    text.append(str(part.get("text") or ""))
                elif (ref := image_ref(part)) is not None:
                    text.append(IMAGE_PLACEHOLDER)
                    refs.append(ref)
                else:
                    raise LmforgeError(
                        f"messages[{i}].content[{j}]: type {part.get('type')!r} is not supported "
                        "(text and image_url are)"
                    )
            m = {**m, "content": "".join(text)}
        out.append(m)
    return out, refs


class VisionEngine(GenerationEngine):
    """`GenerationEngine` over a vision LLM and its processor (see the module docstring)."""

    def __init__(self, model, processor, **kwargs: Any):
        from lmforge.models.vision import image_markup, image_token_id, uses_token_types

        super().__init__(model, processor.tokenizer, **kwargs)
        self.processor = processor
        self.image_token_id = image_token_id(processor)
        self.markup = image_markup(processor)
        self.token_types = uses_token_types(processor)
        self.max_pixels: int | None = None  # images are shrunk to this before the processor's own bounds
        self.min_pixels: int | None = None

    # ------------------------------------------------------------------ prompts
    def load_images(self, images: list, where: str | None = None) -> list:
        """PIL images from paths (via `load_image`, one-line errors naming `where`) or PIL images."""
        from lmforge.data.vision import load_image

        return [
            load_image(im, row=where, max_pixels=self.max_pixels, min_pixels=self.min_pixels)
            if isinstance(im, str)
            else im.convert("RGB")
            for im in images
        ]

    def encode_vision(
        self,
        messages: list[dict],
        images: list | None,
        gen: GenerationArgs,
        tools: list | None = None,
        where: str | None = None,
        lazy: bool = False,
    ) -> VisionPrompt:
        """Prompt ids of `messages` with `images` (paths or PIL) in place of their placeholders.
        `lazy` (all images given as paths): the images are read and checked now, but their model
        inputs are computed only when the prompt's batch runs (infer keeps many prompts at once)."""
        from lmforge.models.vision import expand_image_tokens, image_inputs, image_token_counts

        messages, refs = canonical_messages(messages)
        if refs and images:
            raise LmforgeError("give images either as content parts or as a list, not both")
        images = list(refs or images or [])
        messages = place_images(messages, len(images))
        pil = self.load_images(images, where)
        marked = [
            {**m, "content": m["content"].replace(IMAGE_PLACEHOLDER, self.markup)}
            if isinstance(m.get("content"), str)
            else m
            for m in messages
        ]
        ids = self.tokenizer(self.render(marked, gen, tools), add_special_tokens=False)["input_ids"]
        lazy = lazy and bool(images) and all(isinstance(im, str) for im in images)
        pixels = None if lazy else image_inputs(self.processor, pil)
        try:  # token counts from the image sizes alone when lazy
            counts = image_token_counts(self.processor, pil, pixels or {})
            ids, _ = expand_image_tokens(self.processor, ids, counts)
        except LmforgeError as e:  # e.g. the user typed the image token itself
            raise LmforgeError(f"{where}: {e}" if where else str(e)) from None
        return VisionPrompt(ids, pixels, list(images) if lazy else [])

    def _pixels(self, prompt: VisionPrompt) -> dict:
        from lmforge.models.vision import image_inputs

        if prompt.pixels is not None:
            return prompt.pixels
        return image_inputs(self.processor, self.load_images(prompt.paths))

    def extra_inputs(self, prompts: list[VisionPrompt]) -> Callable[[list[int]], dict]:
        """`generate_ids`'s per-batch inputs: the rows' image inputs in row order, and
        `mm_token_type_ids` left padded like the ids."""
        import torch

        def extra(rows: list[int]) -> dict:
            feats = [f for f in (self._pixels(prompts[i]) for i in rows) if f]
            if not feats:
                return {}
            out = {k: torch.cat([f[k] for f in feats]) for k in feats[0]}
            if self.token_types:
                width = max(len(prompts[i].ids) for i in rows)
                types = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    ids = torch.tensor(prompts[i].ids, dtype=torch.long)
                    types[r, width - len(ids) :] = (ids == self.image_token_id).long()
                out["mm_token_type_ids"] = types
            return out

        return extra

    # ------------------------------------------------------------------ generation
    def generate_vision(
        self, prompts: list[VisionPrompt], gen: GenerationArgs, batch_size: int = 8
    ) -> list[Completion]:
        """Answers in input order (rows sorted by length, left padded per batch)."""
        return self.generate_ids([p.ids for p in prompts], gen, batch_size, self.extra_inputs(prompts))

    def chat(
        self, messages: list[dict], gen: GenerationArgs, tools: list | None = None, images: list | None = None
    ) -> Completion:
        prompt = self.encode_vision(messages, images, gen, tools)
        self.check_length(prompt.ids, gen)
        return self.generate_vision([prompt], gen, batch_size=1)[0]

    def stream(
        self,
        messages: list[dict] | str,
        gen: GenerationArgs,
        tools: list | None = None,
        images: list | None = None,
    ) -> TextStream:
        if isinstance(messages, str):
            return super().stream(messages, gen, tools)
        prompt = self.encode_vision(messages, images, gen, tools)
        self.check_length(prompt.ids, gen)
        return TextStream(self, prompt.ids, gen, extra=self.extra_inputs([prompt])([0]))
