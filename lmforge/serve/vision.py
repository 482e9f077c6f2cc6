"""Images in chat requests: OpenAI `image_url` content parts → PIL images under the server's media
policy, and their generation.

Accepted image references: `data:image/...;base64,...` URLs, `file://` URLs and local paths. Local
files are read only under a folder given with `--allowed_local_media_path DIR` (vLLM's flag; none by
default), after resolving symlinks and `..`, so a request can never read outside those folders.
http(s) URLs are refused: the server downloads nothing. `--limit_mm_per_prompt` (vLLM / ms-swift:
`{"image": 2}` or `image=2`) caps the images of one request. Every refusal, and an image that does not
decode, is an HTTP 400 in OpenAI's shape.

Requests with images are generated one at a time, in the scheduler's thread between batches (the
scheduler waits for the running batch to drain, then runs the job alone with `model.generate` and the
image inputs): Qwen2-VL's M-RoPE positions for image tokens differ from the text positions the
batched decoder in batch.py feeds, so image jobs do not join a batch. Text-only requests to a vision
model batch as usual. Image requests support temperature / top_p / top_k / seed / stop /
repetition_penalty / max_tokens / n; log-probs, constrained output, presence / frequency penalties
and ignore_eos are refused with a 400.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lmforge.errors import LmforgeError
from lmforge.serve.protocol import bad_request

MAX_PIXELS = 40_000_000  # a request image larger than this is refused before it is decoded
LOCAL_OFF = "local image paths are off; start the server with --allowed_local_media_path DIR"


def parse_limit_mm(spec: str | None) -> dict[str, int]:
    """`{"image": 2}` (JSON) or `image=2,video=1` → {"image": 2, ...}; None/"" → no limit."""
    if not spec or not spec.strip():
        return {}
    spec = spec.strip()
    try:
        items = json.loads(spec) if spec.startswith("{") else dict(p.split("=", 1) for p in spec.split(","))
        out = {str(k).strip(): int(v) for k, v in items.items()}
    except (ValueError, TypeError, json.JSONDecodeError):
        raise LmforgeError(
            f'--limit_mm_per_prompt {spec!r}: expected JSON like {{"image": 2}} or image=2'
        ) from None
    bad = [k for k, v in out.items() if k not in ("image", "video", "audio") or v < 0]
    if bad:
        raise LmforgeError(
            f"--limit_mm_per_prompt {spec!r}: keys are image / video / audio with counts of 0 or more"
        )
    return out


@dataclass
class MediaPolicy:
    """What image references a request may use (see the module docstring)."""

    allowed_dirs: list[Path] = field(default_factory=list)  # resolved folders
    limits: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_args(cls, allowed: str | None, limit: str | None) -> MediaPolicy:
        dirs = []
        for d in filter(None, (p.strip() for p in (allowed or "").split(","))):
            path = Path(d).expanduser().resolve()
            if not path.is_dir():
                raise LmforgeError(f"--allowed_local_media_path {d}: not a folder")
            dirs.append(path)
        return cls(dirs, parse_limit_mm(limit))

    def check_count(self, num_images: int) -> None:
        limit = self.limits.get("image")
        if limit is not None and num_images > limit:
            raise bad_request(
                f"this request has {num_images} images; at most {limit} per prompt are allowed "
                f"(--limit_mm_per_prompt)",
                param="messages",
                code="too_many_images",
            )

    def local_path(self, raw: str, param: str) -> str:
        """The real path of a local image reference, inside an allowed folder (else a 400)."""
        if not self.allowed_dirs:
            raise bad_request(LOCAL_OFF, param=param)
        real = Path(raw).expanduser().resolve()  # symlinks and .. resolved before the check
        if not any(real.is_relative_to(d) for d in self.allowed_dirs):
            raise bad_request(f"image path {raw}: outside --allowed_local_media_path", param=param)
        return str(real)


def _decode_data_url(url: str, param: str):
    from PIL import Image, UnidentifiedImageError

    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise bad_request("image data URL: expected data:image/...;base64,<data>", param=param)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("image data URL: the base64 data does not decode", param=param) from None
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.width * im.height > MAX_PIXELS:  # checked from the header, before decoding
                raise bad_request(
                    f"image data URL: {im.width}x{im.height} pixels, more than {MAX_PIXELS} allowed",
                    param=param,
                )
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise bad_request("image data URL: the data is not a readable image", param=param) from None


def load_request_image(ref: Any, policy: MediaPolicy, param: str, engine):
    """A PIL image for one content part's reference (see the module docstring); 400 on refusal."""
    if not isinstance(ref, str) or not ref:
        raise bad_request("image_url: expected a URL string", param=param)
    if ref.startswith("data:"):
        return _decode_data_url(ref, param)
    parsed = urlparse(ref)
    if parsed.scheme in ("http", "https"):
        raise bad_request(
            "image_url: http(s) URLs are not fetched by lmforge serve; send a data: URL "
            "(or a local path under --allowed_local_media_path)",
            param=param,
        )
    if parsed.scheme == "file":
        path = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:  # a one-letter scheme is a Windows drive
        raise bad_request(f"image_url: unsupported URL scheme {parsed.scheme}:", param=param)
    else:
        path = ref
    real = policy.local_path(path, param)
    try:
        return engine.load_images([real])[0]
    except LmforgeError as e:
        raise bad_request(f"image_url: {e}", param=param) from None


def request_images(messages: list[dict], policy: MediaPolicy, engine) -> tuple[list[dict], list] | None:
    """(canonical messages, PIL images) when the request has image parts, else None. A text-only
    model gets a 400."""
    from lmforge.infer.vision import canonical_messages, image_ref

    parts = [
        (i, j, part)
        for i, m in enumerate(messages)
        if isinstance(m.get("content"), list)
        for j, part in enumerate(m["content"])
        if isinstance(part, dict) and part.get("type") != "text"
    ]
    if not parts:
        return None
    for i, j, part in parts:
        if image_ref(part) is None:
            raise bad_request(
                f"messages[{i}].content[{j}]: type {part.get('type')!r} is not supported "
                "(text and image_url are)",
                param=f"messages.{i}.content",
            )
    if not hasattr(engine, "encode_vision"):
        raise bad_request(
            "this model takes no images (not a vision-language model); send text content only",
            param="messages",
        )
    policy.check_count(len(parts))
    canon, refs = canonical_messages(messages)
    params = [f"messages.{i}.content.{j}.image_url" for i, j, _ in parts]
    return canon, [load_request_image(r, policy, p, engine) for r, p in zip(refs, params)]


def check_supported(params) -> None:
    """400 for request features the one-at-a-time image path does not have."""
    refused = [
        ("logprobs", params.logprobs is not None),
        ("response_format / tool_choice", params.grammar is not None),
        ("presence_penalty", bool(params.presence_penalty)),
        ("frequency_penalty", bool(params.frequency_penalty)),
        ("ignore_eos", params.ignore_eos),
    ]
    for name, on in refused:
        if on:
            raise bad_request(f"{name} is not supported for requests with images", param=name.split(" ")[0])


def solo_runner(engine, runner):
    """The scheduler's function for one image job: generate with the job's image inputs (the
    running batch has drained) and hand text pieces, then "done", to the job's sink."""
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.stream import TextStream

    def run(job) -> None:
        p = job.params
        gen = GenerationArgs(
            max_new_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k,
            do_sample=not p.greedy,
            seed=p.seed,
            stop=list(p.stop) or None,
            repetition_penalty=p.repetition_penalty,
        )
        with runner.using(job.adapter) if runner is not None else nullcontext():
            stream = TextStream(engine, job.prompt, gen, extra=job.extra)
            for piece in stream:
                if job.cancelled:
                    stream.close()
                    continue
                job.sink(("text", piece, []))
        done = stream.completion
        if done is not None:
            job.sink(("done", done.finish_reason, done.completion_tokens))
        else:
            job.sink(("done", "stop", 0))

    return run
