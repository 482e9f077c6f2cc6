"""Vision-LLM training features: canonical vision rows (`messages` with `<image>` placeholders +
`images` paths) → token ids in which each placeholder is the model's own image markup with its image
token repeated as many times as the processor expands that image to, labels on the answer only
(never on image tokens); and the collator that reads the images and runs the image processor per
batch (pixel_values, image_grid_thw or whatever the model's image processor returns).

Processor-generic: the markup is Qwen-VL's `<|vision_start|><image token><|vision_end|>` when the
tokenizer has those tokens, else the processor's image token alone (LLaVA-style); the count of image
tokens per image comes from calling the processor on that image, never from a model-specific rule.
Pixels are computed in the collator, not stored (as audio features in training/audio.py).
"""

from __future__ import annotations

from typing import Any

from lmforge.data.chat import IGNORE_INDEX
from lmforge.data.vision import IMAGE_PLACEHOLDER as PLACEHOLDER
from lmforge.errors import LmforgeError
from lmforge.models.vision import expand_image_tokens, image_inputs, image_markup


def pixel_bounds(cfg) -> dict[str, int | None]:
    """`--image_max_pixels` / `--image_min_pixels` when the config has them (None: no bound)."""
    return {"max_pixels": cfg.get("image_max_pixels"), "min_pixels": cfg.get("image_min_pixels")}


class ImageTokenCounter:
    """Image tokens the processor expands one image into, by calling it (cached by image size)."""

    def __init__(self, processor):
        self.processor, self.cache = processor, {}

    def __call__(self, image) -> int:
        if image.size not in self.cache:
            proc = self.processor
            out = proc(text=[proc.image_token], images=[image])
            self.cache[image.size] = int(sum(1 for t in out["input_ids"][0] if t == proc.image_token_id))
        return self.cache[image.size]


def with_markup(messages: list[dict], markup: str) -> tuple[list[dict], int]:
    """Messages with every `<image>` replaced by `markup`, and the number replaced."""
    out, count = [], 0
    for m in messages:
        text = m.get("content") or ""
        n = text.count(PLACEHOLDER)
        if n:
            m = {**m, "content": text.replace(PLACEHOLDER, markup)}
            count += n
        out.append(m)
    return out, count


def expand_images(processor, ids: list[int], labels: list[int], counts: list[int], row: str):
    """Each image token k of `ids` repeated counts[k] times (labels -100 there)."""
    try:
        return expand_image_tokens(processor, ids, counts, labels)
    except LmforgeError as e:
        raise LmforgeError(
            f"{row}: {e} after the chat template (is an <image> placeholder inside a turn the template drops?)"
        ) from None


def truncate_image_row(ids, labels, image_id: int, max_len: int | None, cfg, row: str):
    """`ids` / `labels` cut to --max_length (never through an image; `--truncation delete`: no labels)."""
    if not max_len or len(ids) <= max_len:
        return ids, labels
    if image_id in ids:
        last = len(ids) - 1 - ids[::-1].index(image_id)
        if last >= max_len:
            raise LmforgeError(
                f"{row}: its images and prompt take {last + 1} tokens, more than --max_length {max_len} "
                "(raise --max_length or bound the images with --image_max_pixels)"
            )
        if cfg.get("truncation") == "left":
            raise LmforgeError(
                f"{row}: {len(ids)} tokens, over --max_length {max_len}; --truncation left would cut "
                "an image (use right or delete for image rows)"
            )
    ids, labels = ids[:max_len], labels[:max_len]
    if cfg.get("truncation") == "delete":  # dropped with the rows that train nothing
        labels = [IGNORE_INDEX] * len(labels)
    return ids, labels


def tokenize_vision_chat(ctx, rows):
    """Canonical vision rows → input_ids, labels, images (paths kept for the collator)."""
    from lmforge.data.chat import encode_chat_batch
    from lmforge.data.tokenize import encode_media_rows
    from lmforge.data.vision import load_image

    proc, cfg = ctx.processor, ctx.cfg
    tok, max_len, where = proc.tokenizer, cfg["max_length"], cfg.get("dataset")
    markup, image_id, bounds = image_markup(proc), proc.image_token_id, pixel_bounds(cfg)
    count_tokens = ImageTokenCounter(proc)
    has_images, has_videos = "images" in rows.column_names, "videos" in rows.column_names

    def encode(batch, idx):
        items, counts, paths_col = [], [], []
        images_col = batch["images"] if has_images else [None] * len(idx)
        videos_col = batch["videos"] if has_videos else [None] * len(idx)
        for messages, tools, paths, videos, i in zip(
            batch["messages"], batch["tools"], images_col, videos_col, idx
        ):
            row, paths = f"{where}: row {i + 1}", list(paths or [])
            if videos:
                raise LmforgeError(f"{row}: video rows are not trained yet (images only); drop its videos")
            messages, n = with_markup(messages, markup)
            if n != len(paths):
                raise LmforgeError(f"{row}: {n} {PLACEHOLDER} placeholders but {len(paths)} images")
            counts.append([count_tokens(load_image(p, row=row, **bounds)) for p in paths])
            items.append({"messages": messages, "tools": tools})
            paths_col.append(paths)
        enc = encode_chat_batch(
            tok,
            items,
            max_length=None,
            train_on_prompt=cfg["train_on_prompt"],
            enable_thinking=cfg["enable_thinking"],
            mask_history=cfg.get("mask_history") or False,
        )
        out = {"input_ids": [], "labels": [], "images": paths_col}
        for ids, labels, ns, i in zip(enc["input_ids"], enc["labels"], counts, idx):
            row = f"{where}: row {i + 1}"
            ids, labels = expand_images(proc, ids, labels, ns, row)
            ids, labels = truncate_image_row(ids, labels, image_id, max_len, cfg, row)
            out["input_ids"].append(ids)
            out["labels"].append(labels)
        return out

    return encode_media_rows(rows, encode, ctx, kind="image", where=where)


def accepts_mm_token_types(model) -> bool:
    """Whether the model's forward takes `mm_token_type_ids` (Qwen2-VL's M-RoPE needs them)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "mm_token_type_ids" in inspect.signature(base.forward).parameters


class VisionCollator:
    """Right-pads ids/labels, reads the batch's images and runs the image processor on them."""

    def __init__(self, processor, pad_id: int, *, bounds: dict | None = None, mm_token_types: bool = False):
        self.processor, self.pad_id = processor, pad_id
        self.bounds, self.mm_token_types = bounds or {}, mm_token_types

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        from lmforge.data.vision import load_image

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)  # (B, T)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        paths = [p for f in features for p in (f.get("images") or [])]
        if paths:
            out.update(image_inputs(self.processor, [load_image(p, **self.bounds) for p in paths]))
        if self.mm_token_types:  # 0 text, 1 image (transformers' convention)
            out["mm_token_type_ids"] = (ids == self.processor.image_token_id).long()
        return out


def save_processor(processor, out_dir: str) -> None:
    """Save a vision processor so that `load_processor(out_dir)` reloads it; one assembled without a
    video part (models/vision.py) is saved as its parts: tokenizer, image processor, processor class."""
    import json
    from pathlib import Path

    if getattr(processor, "video_processor", "absent") is not None:
        processor.save_pretrained(out_dir)
        return
    processor.tokenizer.save_pretrained(out_dir)
    processor.image_processor.save_pretrained(out_dir)
    Path(out_dir, "processor_config.json").write_text(
        json.dumps({"processor_class": type(processor).__name__}, indent=2) + "\n", encoding="utf-8"
    )
