"""Dataset specifiers: files, folders, registry names (LLaMA-Factory's ``dataset_info.yaml``), each
with an optional ``#N`` sample size, comma-separated → `Part`s (files with size and mtime, registry
options), plus what a part holds (audio or image / video columns)."""

from __future__ import annotations

import csv
import functools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lmforge.data import textio
from lmforge.data.formats import FORMATS
from lmforge.data.readers import _CHUNK, iter_raw
from lmforge.errors import LmforgeError

DATA_EXTS = (".jsonl", ".json", ".txt", ".csv", ".tsv", ".parquet", ".arrow")
REGISTRY_NAMES = ("dataset_info.yaml", "dataset_info.yml", "dataset_info.json")


@dataclass
class Part:
    """One comma-separated piece of a specifier: its files, sample size and registry options."""

    files: tuple
    sample: int | None = None
    columns: dict | None = None
    formatting: str | None = None
    tags: dict | None = None
    media_dir: str | None = None  # registry parts: the registry's folder (LLaMA-Factory's dataset_dir)


def _find_registry(dataset_dir: str | None) -> str | None:
    for folder in (dataset_dir, os.getcwd()):
        for name in REGISTRY_NAMES:
            if folder and os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
    return None


def _read_registry(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        if path.endswith(".json"):
            return json.load(f)
        import yaml

        return yaml.safe_load(f) or {}


def _data_files(path: str) -> tuple:
    """(path, size, mtime_ns) of a file, or of every data file in a folder (sorted)."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "lmforge_cache.json")):
            raise LmforgeError(
                f"{path}: a tokenised folder from `lmforge data convert`; pass it to `lmforge train "
                "STAGE --dataset`, which trains on it as it is (raw rows are needed here)"
            )
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(DATA_EXTS) and not n.startswith("."))
        if os.path.isfile(os.path.join(path, "state.json")):  # Dataset.save_to_disk: its .arrow shards
            names = [n for n in names if n.lower().endswith(".arrow")]
        paths = [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
        if not paths:
            raise LmforgeError(f"{path}: folder holds no data files ({', '.join(DATA_EXTS)})")
    else:
        if not path.lower().endswith(DATA_EXTS):
            raise LmforgeError(f"{path}: unsupported data file type; expected one of {', '.join(DATA_EXTS)}")
        paths = [path]
    return tuple((p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths)


def iter_raw_path(path: str, kind: str) -> Iterator[tuple[str, int, Any]]:
    """(file, line, raw row) of a file, or of every data file of a folder (sorted; none is an error)."""
    files = [p for p, _, _ in _data_files(path)] if os.path.isdir(path) else [path]
    for file in files:
        for line, row in iter_raw(file, kind):
            yield file, line, row


def resolve_spec(spec: str, dataset_dir: str | None = None) -> list[Part]:
    """Split a specifier into parts: paths, folders, registry names, each with an optional #N."""
    parts = []
    for piece in (p.strip() for p in spec.split(",")):
        if not piece:
            continue
        name, sample = piece, None
        head, sep, tail = piece.rpartition("#")
        if sep and tail.isdigit() and not os.path.exists(piece):
            name, sample = head, int(tail)
            if sample <= 0:
                raise LmforgeError(f"{piece}: the sample size after # must be a positive number of rows")
        if os.path.exists(name):
            parts.append(Part(_data_files(name), sample))
            continue
        registry = _find_registry(dataset_dir)
        entries = _read_registry(registry) if registry else {}
        if name not in entries:
            where = (
                f"and no entry {name!r} in {registry}"
                if registry
                else "and no dataset_info.yaml registry found"
            )
            raise LmforgeError(f"dataset {name!r} not found: no such file or folder, {where}")
        entry = entries[name]
        file_name = entry.get("file_name") if isinstance(entry, dict) else None
        if not file_name:
            raise LmforgeError(f'{registry}: entry {name!r} needs a "file_name"')
        file_path = os.path.join(os.path.dirname(registry), file_name)
        if not os.path.exists(file_path):
            raise LmforgeError(f"{registry}: entry {name!r}: file {file_path} does not exist")
        parts.append(
            Part(
                _data_files(file_path),
                sample or entry.get("num_samples"),
                entry.get("columns") or None,
                entry.get("formatting"),
                entry.get("tags") or None,
                os.path.dirname(os.path.abspath(registry)),
            )
        )
    if not parts:
        raise LmforgeError(f"empty dataset specifier {spec!r}")
    return parts


def part_fmt(part: Part, kind: str, fmt: str | None) -> str | None:
    """The format a registry `formatting` implies for `kind` (None → detect per row)."""
    if fmt or not part.formatting:
        return fmt
    if part.formatting in FORMATS[kind]:
        return part.formatting
    if part.formatting == "sharegpt" and kind == "prompt":
        return "minimind"  # the message parser reads from/value turns with the registry's tags
    return None


def has_audio(files: tuple) -> bool:
    for path, _, _ in files:
        if path.lower().endswith((".csv", ".tsv")):
            with textio.open_text(path, encoding="utf-8-sig", newline="") as f:
                header = next(csv.reader(f, delimiter="\t" if path.lower().endswith(".tsv") else ","), [])
            if "audio" in header:
                return True
    return False


_MEDIA_KEY = re.compile(rb'"(?:images|videos)"\s*:')
MEDIA_COLUMNS = ("images", "videos")


def has_media(files: tuple, columns: dict | None) -> bool:
    """Whether a part is a vision dataset: its registry maps an `images` / `videos` column, or a
    file holds such a key (JSON text scanned for `"images":`, Parquet / Arrow / CSV column names)."""
    if columns and any(k in columns for k in MEDIA_COLUMNS):
        return True
    return any(_file_has_media(*f) for f in files)


@functools.lru_cache(maxsize=256)
def _file_has_media(path: str, size: int, mtime: int) -> bool:
    ext = os.path.splitext(path)[1].lower()
    if ext in (".csv", ".tsv"):
        with textio.open_text(path, encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f, delimiter="\t" if ext == ".tsv" else ","), [])
        return any(c in header for c in MEDIA_COLUMNS)
    if ext in (".parquet", ".arrow"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            if ext == ".parquet":
                names = pq.read_schema(path).names
            else:
                with pa.memory_map(path) as source:
                    try:
                        names = pa.ipc.open_stream(source).schema.names
                    except pa.ArrowInvalid:
                        names = pa.ipc.open_file(source).schema.names
        except (pa.ArrowInvalid, OSError):
            return False  # the reader names the problem when it reads the file
        return any(c in names for c in MEDIA_COLUMNS)
    if ext not in (".json", ".jsonl"):
        return False
    tail = b""
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            if _MEDIA_KEY.search(tail + chunk):
                return True
            tail = chunk[-64:]
    return False
