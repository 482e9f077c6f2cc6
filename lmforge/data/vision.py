"""Images for vision-LLM data: open, convert to RGB and bound the pixel count, with one-line errors
naming the file (and the row when the caller passes it).

Resizing keeps the aspect ratio so that width × height lies within `min_pixels`..`max_pixels`
(LLaMA-Factory's `image_min_pixels` / `image_max_pixels`); the model's own image processor then
snaps the size to its patch grid.
"""

from __future__ import annotations

import math
from pathlib import Path

from lmforge.errors import LmforgeError


def _where(path: str, row: str | None) -> str:
    return f"{row}: image {path}" if row else f"image {path}"


def fit_pixels(width: int, height: int, *, max_pixels: int | None = None, min_pixels: int | None = None):
    """(width, height) scaled by one factor so that their product lies within the bounds."""
    area = width * height
    scale = 1.0
    if max_pixels and area > max_pixels:
        scale = math.sqrt(max_pixels / area)
    elif min_pixels and area < min_pixels:
        scale = math.sqrt(min_pixels / area)
    if scale == 1.0:
        return width, height
    return max(1, int(width * scale)), max(1, int(height * scale))


def load_image(
    path: str, *, row: str | None = None, max_pixels: int | None = None, min_pixels: int | None = None
):
    """A PIL RGB image from `path`, resized within the pixel bounds."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise LmforgeError(f"{_where(path, row)}: file not found")
    try:
        with Image.open(path) as im:
            im.load()
            image = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise LmforgeError(
            f"{_where(path, row)}: not a readable image ({' '.join(str(e).split())[:120]})"
        ) from None
    size = fit_pixels(*image.size, max_pixels=max_pixels, min_pixels=min_pixels)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


def resolve_media_path(path: str, *, base_dir: str | None = None, image_dir: str | None = None) -> str:
    """Where a row's image / video path points: an absolute path as given;
    relative ones under `image_dir` (LLaMA-Factory's `--image_dir`) when set, else under the folder
    of the dataset file (`base_dir`)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return str(p)
    root = image_dir or base_dir
    return str(Path(root, p)) if root else str(p)
