"""Flags of `lmforge serve` (with `EngineArgs` for the model and `GenerationArgs` for the defaults)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.infer.args import EngineArgs


@dataclass
class ServeArgs(EngineArgs):
    """Where to listen, who may call, what is served under which name, how requests are batched."""

    host: str = field(
        default="127.0.0.1", metadata={"help": "Address to bind; 0.0.0.0 exposes the server to the network."}
    )
    port: int = field(
        default=8000, metadata={"help": "TCP port (0 picks a free one; the log line names it)."}
    )
    api_key: str | None = field(
        default=None,
        metadata={
            "help": "Require `Authorization: Bearer KEY` on /v1 (default: $LMFORGE_API_KEY, else "
            "$OPENAI_API_KEY, else no key)."
        },
    )
    served_model_name: str | None = field(
        default=None,
        metadata={"help": "Name clients pass as `model` (default: the model argument as typed)."},
    )
    adapters: str | None = field(
        default=None,
        metadata={
            "help": "Extra PEFT adapters served by name: name=path,name2=path2 (a path alone is named "
            "after its folder); each is a `model` of its own."
        },
    )
    lora_modules: str | None = field(
        default=None,
        metadata={"help": 'vLLM\'s name for --adapters (name=path,... or JSON {"name", "path"}).'},
    )
    system: str | None = field(
        default=None, metadata={"help": "System prompt for chats without one (default: the run's, if any)."}
    )
    max_batch_size: int = field(
        default=16, metadata={"help": "Most sequences decoded together (1 = one request at a time)."}
    )
    max_queue: int = field(
        default=256, metadata={"help": "Most sequences waiting for a batch; more get HTTP 503."}
    )
    batch_wait_ms: float = field(
        default=5.0, metadata={"help": "How long a request waits for others to batch with (milliseconds)."}
    )
    backend: str = field(
        default="hf",
        metadata={
            "help": "hf (transformers, dynamic batching, CPU or GPU) or vllm (needs vLLM and CUDA).",
            "choices": ("hf", "vllm"),
        },
    )
    allowed_local_media_path: str | None = field(
        default=None,
        metadata={
            "help": "Folder(s), comma separated, that image_url file:// URLs and local paths may read "
            "from (vLLM's flag; default none: local image paths are refused)."
        },
    )
    limit_mm_per_prompt: str | None = field(
        default=None,
        metadata={
            "help": "Most images per request, as vLLM / ms-swift write it: '{\"image\": 2}' or image=2 "
            "(default: no limit but the context length)."
        },
    )
    vllm_args: str | None = field(
        default=None,
        metadata={"help": "With --backend vllm: extra `vllm serve` flags, passed on as written."},
    )

    def validate(self) -> None:
        checks = [
            (0 <= self.port <= 65535, f"--port {self.port}: must be 0-65535"),
            (self.max_batch_size >= 1, f"--max_batch_size {self.max_batch_size}: must be at least 1"),
            (self.max_queue >= 1, f"--max_queue {self.max_queue}: must be at least 1"),
            (self.batch_wait_ms >= 0, f"--batch_wait_ms {self.batch_wait_ms}: must be 0 or more"),
        ]
        for ok, message in checks:
            if not ok:
                raise LmforgeError(message)


def parse_adapters(*specs: str | None) -> dict[str, str]:
    """`name=path,name2=path2` (and vLLM's JSON `{"name": ..., "path": ...}` items) → {name: path}."""
    out: dict[str, str] = {}
    for spec in specs:
        if not spec:
            continue
        spec = spec.strip()
        if spec.startswith(("{", "[")):
            try:
                items = json.loads(spec)
            except json.JSONDecodeError as e:
                raise LmforgeError(f"--lora_modules: not valid JSON ({e.msg})") from None
            pairs = [(i.get("name"), i.get("path")) for i in (items if isinstance(items, list) else [items])]
        else:
            pairs = []
            for part in filter(None, (p.strip() for p in spec.split(","))):
                name, sep, path = part.partition("=")
                pairs.append((name.strip(), path.strip()) if sep else (Path(part).name, part))
        for name, path in pairs:
            if not name or not path:
                raise LmforgeError(f"--adapters {spec!r}: expected name=path items separated by commas")
            if name in out:
                raise LmforgeError(f"--adapters: the name {name!r} is given twice")
            out[name] = path
    return out
