"""On-disk cache of teacher answers, keyed by the exact request, so nothing is paid for twice.

The key is the sha256 of the request body as sent (model, messages, temperature, max_tokens,
reasoning_effort, seed and any extra parameter), serialised canonically (sorted keys, no
whitespace). The endpoint URL is not part of the key: a model name means the same teacher
wherever it is served (and a local server started with `--port 0` keeps its cache). One JSON
file per answer (`ROOT/ab/abcdef....json`), written to a temporary file, fsynced and renamed,
so a killed process never leaves a half entry behind; only successful answers are stored.
Written by hand: it is a few lines over `os.replace`, and no maintained library offers an
fsync-safe, multi-process, per-entry file cache without a server.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

KEY_VERSION = 1  # bump when the meaning of a cached entry changes


def default_cache_dir() -> str:
    """$LMFORGE_CACHE_DIR/teacher, else ~/.cache/lmforge/teacher."""
    root = os.environ.get("LMFORGE_CACHE_DIR")
    if root:
        return os.path.join(root, "teacher")
    return os.path.join(os.path.expanduser("~"), ".cache", "lmforge", "teacher")


def request_key(body: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a request body (`stream` left out: it changes no answer)."""
    payload = {k: v for k, v in body.items() if k != "stream"}
    text = json.dumps(
        {"v": KEY_VERSION, "request": payload}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """get/put of JSON answers by request key; safe across threads and processes."""

    def __init__(self, root: str):
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            with open(path, encoding="utf-8") as f:
                entry = json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError):  # unreadable or damaged by hand: ask again
            return None
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{key}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(entry, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
