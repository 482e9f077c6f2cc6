"""Images and videos for vision-LLM data, with one-line errors naming the file (and the row).

- `load_image`: open, convert to RGB and bound the pixel count. Resizing keeps the aspect ratio so
  that width × height lies within `min_pixels`..`max_pixels` (LLaMA-Factory's `image_min_pixels` /
  `image_max_pixels`); the model's own image processor then snaps the size to its patch grid.
- `load_video`: frames sampled at `--video_fps`, at most `--video_maxlen`, from an animated GIF, a
  folder of frame images, or (with PyAV) any video container.
- `attach_media` / `validate_row`: the `images` / `videos` lists of a row made canonical (absolute
  paths, `resolve_media_path`) and checked against the `<image>` / `<video>` placeholders and the
  files (docs/vision.md).
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

from lmforge.errors import DataError, LmforgeError


def _where(path: str, row: str | None, what: str = "image") -> str:
    return f"{row}: {what} {path}" if row else f"{what} {path}"


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
    if scale > 1:  # round up so that the product reaches min_pixels
        return math.ceil(width * scale), math.ceil(height * scale)
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


# ---------------------------------------------------------------------------------------------
# media lists of a row: normalise, resolve, count placeholders, check files

IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"
MEDIA = (("images", IMAGE_PLACEHOLDER), ("videos", VIDEO_PLACEHOLDER))
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# the message lists of a canonical row, per data kind (preference: the prompt with either side)
_CONVERSATIONS = {
    "chat": (("messages",),),
    "prompt": (("prompt",),),
    "kto": (("prompt", "completion"),),
    "preference": (("prompt", "chosen"), ("prompt", "rejected")),
}


def _err(where: tuple[str, int | None], field: str, expected: str, got: str = "") -> DataError:
    return DataError(where[0], where[1], field, expected, got)


def media_paths(value, field: str, where: tuple[str, int | None]) -> list[str]:
    """A row's `images` / `videos` value as a list of path strings.

    Accepted: null, one path, or a list of paths or ``{"path": ...}`` objects (ms-swift's
    dataset form). Embedded bytes, URLs and anything else are refused in one line."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        name = f"{field}[{i}]" if isinstance(value, list) else field
        if isinstance(item, dict) and isinstance(item.get("path"), str) and item["path"]:
            item = item["path"]
        if isinstance(item, dict) and item.get("bytes") is not None:
            raise _err(
                where,
                name,
                "must be a file path (embedded image bytes are not supported; save "
                "the images as files and list their paths)",
            )
        if isinstance(item, list) and field == "videos":  # LLaMA-Factory: a video as its frame paths
            raise _err(
                where, name, "must be one path: put the frames of a video in a folder and give the folder"
            )
        if not isinstance(item, str) or not item.strip():
            got = type(item).__name__ if not isinstance(item, str) else "an empty string"
            raise _err(where, name, 'must be a file path or {"path": PATH}', got)
        if item.startswith(("http://", "https://", "data:")):
            raise _err(
                where,
                name,
                "must be a local file path (URLs are not downloaded; fetch the file first)",
                item[:60],
            )
        out.append(item.removeprefix("file://"))
    return out


def _locate(path: str, base_dir: str | None, image_dir: str | None) -> str:
    """Absolute path of a row's media file: see `resolve_media_path`; a relative path missing
    there but present from the working directory is taken from there (LLaMA-Factory's fallback)."""
    resolved = resolve_media_path(path, base_dir=base_dir, image_dir=image_dir)
    if not os.path.exists(resolved) and not os.path.isabs(path) and os.path.exists(path):
        resolved = path
    return os.path.abspath(resolved)


def _conversations(row: dict, kind: str) -> list[list[dict]]:
    return [[m for key in keys for m in row.get(key) or []] for keys in _CONVERSATIONS.get(kind, ())]


def _count(messages: list[dict], tag: str) -> int:
    return sum((m.get("content") or "").count(tag) for m in messages)


def _first_user(row: dict, kind: str) -> dict | None:
    key = _CONVERSATIONS[kind][0][0]
    return next((m for m in row.get(key) or [] if m.get("role") == "user"), None)


def attach_media(
    out: dict,
    raw: dict,
    kind: str,
    *,
    where: tuple[str, int | None],
    base_dir: str | None = None,
    image_dir: str | None = None,
) -> dict:
    """Add the raw row's `images` / `videos` to the canonical row `out` as absolute paths, then
    `validate_row` it (placeholder counts, readable files); raises a one-line `DataError` naming
    file:line and the field.

    A row whose messages hold no placeholder at all for a medium gets one per file prepended to its
    first user turn, as ms-swift's `Template._add_default_tags` does (LLaMA-Factory's mm_plugin
    refuses such rows). Swift also tops up a row with some tags but fewer than its files; here that
    is an error, as is any other mismatch (a partial count is more likely a mistake in the data).
    """
    for field, tag in MEDIA:
        paths = [_locate(p, base_dir, image_dir) for p in media_paths(raw.get(field), field, where)]
        out[field] = paths
        if paths and all(_count(msgs, tag) == 0 for msgs in _conversations(out, kind)):
            user = _first_user(out, kind)
            if user is None:
                raise _err(where, field, f"needs a user turn to hold its {tag} placeholders")
            user["content"] = tag * len(paths) + (user["content"] or "")
    validate_row(out, kind, where=where)
    return out


def validate_row(row: dict, kind: str = "chat", *, where: tuple[str, int | None] = ("row", None)) -> None:
    """Check a canonical vision row: as many `<image>` / `<video>` placeholders in each conversation
    as `images` / `videos` list files, and every file readable (an image PIL opens and verifies; a
    video: a GIF, a folder of frame images, or another file when PyAV is installed). One-line
    `DataError` naming file:line (`where`) and the field otherwise."""
    for field, tag in MEDIA:
        paths = row.get(field) or []
        for msgs in _conversations(row, kind):
            found = _count(msgs, tag)
            if found != len(paths):
                raise _err(
                    where,
                    field,
                    f"lists {len(paths)} file(s) but the messages hold {found} {tag} placeholder(s)",
                )
        for i, path in enumerate(paths):
            check = check_image_file if field == "images" else check_video_file
            check(path, where=where, field=f"{field}[{i}]")


def check_image_file(path: str, *, where: tuple[str, int | None], field: str = "images") -> None:
    """A one-line `DataError` unless `path` is an image file PIL can open and verify."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise _err(
            where,
            field,
            f"file {path} not found (relative paths follow --image_dir, else the dataset's folder)",
        )
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise _err(
            where, field, f"file {path} is not a readable image ({' '.join(str(e).split())[:80]})"
        ) from None


def check_video_file(path: str, *, where: tuple[str, int | None], field: str = "videos") -> None:
    """A one-line `DataError` unless `path` is a video `load_video` can read."""
    if os.path.isdir(path):
        if not _frame_files(path):
            raise _err(where, field, f"folder {path} holds no frame images ({', '.join(IMAGE_EXTS)})")
        return
    if not os.path.isfile(path):
        raise _err(
            where,
            field,
            f"file {path} not found (relative paths follow --image_dir, else the dataset's folder)",
        )
    if path.lower().endswith(".gif"):
        check_image_file(path, where=where, field=field)
    elif importlib.util.find_spec("av") is None:
        raise _err(
            where,
            field,
            f"file {path}: reading {Path(path).suffix or 'this'} video needs PyAV: "
            "pip install av (animated GIFs and folders of frames work without it)",
        )


# ---------------------------------------------------------------------------------------------
# videos: frames sampled at --video_fps, at most --video_maxlen


def sample_indices(total_frames: int, duration_s: float | None, fps: float, maxlen: int) -> list[int]:
    """Which of `total_frames` frames to keep: `duration × fps` of them (at least 1; all frames when
    the duration is unknown), at most `maxlen`, spread evenly from first to last (LLaMA-Factory's
    `_get_video_sample_indices`)."""
    if total_frames <= 0:
        return []
    wanted = total_frames if duration_s is None else max(1, math.floor(duration_s * fps))
    n = max(1, min(total_frames, maxlen, wanted))
    if n == 1:
        return [0]
    return [round(i * (total_frames - 1) / (n - 1)) for i in range(n)]


def _frame_files(folder: str) -> list[str]:
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTS) and not n.startswith("."))
    return [os.path.join(folder, n) for n in names]


def _resize(image, max_pixels: int | None, min_pixels: int | None):
    from PIL import Image

    size = fit_pixels(*image.size, max_pixels=max_pixels, min_pixels=min_pixels)
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


def _gif_frames(path: str, row: str | None, fps: float, maxlen: int) -> list:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            durations = [frame.info.get("duration", 0) or 0 for frame in ImageSequence.Iterator(im)]
            total = len(durations)
            duration_s = sum(durations) / 1000 if sum(durations) else None
            keep = sample_indices(total, duration_s, fps, maxlen)
            frames = []
            for i in keep:
                im.seek(i)
                frames.append(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as e:
        raise LmforgeError(
            f"{_where(path, row, 'video')}: not a readable video ({' '.join(str(e).split())[:120]})"
        ) from None
    return frames


def _folder_frames(path: str, row: str | None, fps: float, maxlen: int) -> list:
    files = _frame_files(path)
    if not files:
        raise LmforgeError(
            f"{_where(path, row, 'video')}: the folder holds no frame images ({', '.join(IMAGE_EXTS)})"
        )
    return [load_image(files[i], row=row) for i in sample_indices(len(files), None, fps, maxlen)]


def _av_frames(path: str, row: str | None, fps: float, maxlen: int) -> list:
    try:
        import av
    except ImportError:
        raise LmforgeError(
            f"{_where(path, row, 'video')}: reading {Path(path).suffix or 'this'} video needs PyAV: pip install av "
            "(animated GIFs and folders of frame images work without it)"
        ) from None
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            total = stream.frames
            duration = float(stream.duration * stream.time_base) if stream.duration else None
            if not total:  # some containers do not record the frame count: decode to count
                decoded = [f.to_image() for f in container.decode(stream)]
                return [decoded[i] for i in sample_indices(len(decoded), duration, fps, maxlen)]
            keep = set(sample_indices(total, duration, fps, maxlen))
            return [f.to_image() for i, f in enumerate(container.decode(stream)) if i in keep]
    except Exception as e:  # noqa: BLE001 - PyAV raises its own error classes
        raise LmforgeError(
            f"{_where(path, row, 'video')}: not a readable video ({' '.join(str(e).split())[:120]})"
        ) from None


def load_video(
    path: str,
    *,
    row: str | None = None,
    fps: float = 2.0,
    maxlen: int = 128,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
) -> list:
    """PIL RGB frames of a video, sampled at `fps` frames per second of its duration and at most
    `maxlen` of them (`--video_fps` / `--video_maxlen`), each resized within the pixel bounds
    (`--video_max_pixels` / `--video_min_pixels`).

    Sources: an animated GIF (PIL; its frame durations give the timing), a folder of frame images
    (sorted by name; no timing is known, so every frame counts, capped at `maxlen`), or any container
    PyAV opens (MP4, WebM, ...; needs `pip install av`)."""
    if fps <= 0 or maxlen < 1:
        raise LmforgeError(f"--video_fps must be > 0 and --video_maxlen >= 1; got {fps} and {maxlen}")
    if os.path.isdir(path):
        frames = _folder_frames(path, row, fps, maxlen)
    elif not os.path.isfile(path):
        raise LmforgeError(f"{_where(path, row, 'video')}: file not found")
    elif path.lower().endswith(".gif"):
        frames = _gif_frames(path, row, fps, maxlen)
    else:
        frames = _av_frames(path, row, fps, maxlen)
    return [_resize(f.convert("RGB"), max_pixels, min_pixels) for f in frames]
