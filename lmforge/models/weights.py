"""Check a model or adapter folder's files before any library loads them.

A truncated or corrupt `model.safetensors` otherwise surfaces as a traceback from deep inside
transformers / safetensors / peft. `check_model_files(folder)` reads only the small parts that
tell (each safetensors header, the shard index, config.json, a .bin file's zip directory) and
raises a `WeightsError` naming the file and what is wrong. The safetensors rules are the format's
own: an 8-byte little-endian header size, a JSON header of tensors with dtype, shape and
data offsets, tensors packed back to back, the data ending exactly at the end of the file.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

from lmforge.errors import LmforgeError

_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}
_MAX_HEADER = 100_000_000  # the safetensors library's own limit


class WeightsError(LmforgeError):
    """A model file that cannot be loaded (corrupt, truncated, missing shard)."""


def _bad(path: Path, why: str) -> WeightsError:
    return WeightsError(f"{path}: corrupt or truncated weights file ({why}); re-save or re-copy it")


def _read_header(path: Path) -> tuple[dict, int]:
    """(header dict, bytes of tensor data the file holds after the header)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _bad(path, f"{size} bytes, shorter than the 8-byte header size")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, _MAX_HEADER):
            raise _bad(path, f"header size {n} bytes, but the file holds {size - 8} after it")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _bad(path, "its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _bad(path, "its header is not a JSON object")
    return header, size - 8 - n


def _tensor_span(path: Path, name: str, info: object) -> tuple[int, int]:
    """(begin, end) of one tensor's data, checked against its dtype and shape."""
    ok = isinstance(info, dict) and isinstance(info.get("shape"), list) and isinstance(info.get("dtype"), str)
    offsets = info.get("data_offsets") if isinstance(info, dict) else None
    if not ok or not (isinstance(offsets, list) and len(offsets) == 2):
        raise _bad(path, f"tensor {name!r} has no dtype, shape and data_offsets")
    begin, end = offsets
    shape = info["shape"]
    if not all(isinstance(x, int) and x >= 0 for x in (begin, end, *shape)) or end < begin:
        raise _bad(path, f"tensor {name!r} has invalid offsets or shape")
    width = _DTYPE_BYTES.get(info["dtype"])
    if width is not None and end - begin != math.prod(shape) * width:
        raise _bad(
            path,
            f"tensor {name!r} {info['dtype']}{shape} needs {math.prod(shape) * width} bytes, has {end - begin}",
        )
    return begin, end


def check_safetensors(path: str | Path) -> None:
    """Raise `WeightsError` unless `path` is a well-formed safetensors file (data not read)."""
    path = Path(path)
    header, data_bytes = _read_header(path)
    spans = sorted(_tensor_span(path, k, v) for k, v in header.items() if k != "__metadata__")
    pos = 0
    for begin, end in spans:
        if begin != pos:
            raise _bad(path, f"tensor data is not contiguous at byte {pos}")
        pos = end
    if pos > data_bytes:
        raise _bad(path, f"its tensors need {pos} bytes of data, the file holds {data_bytes}")
    if pos < data_bytes:
        raise _bad(path, f"{data_bytes - pos} bytes after the last tensor")


def _check_json(path: Path) -> dict:
    from lmforge.data.textio import read_json_file

    try:
        data = read_json_file(path)
    except WeightsError:
        raise
    except LmforgeError as e:  # a WeightsError, so that callers trying other candidates stop here
        raise WeightsError(str(e)) from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: must be a JSON object")
    return data


def _check_index(index: Path) -> None:
    weight_map = _check_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise WeightsError(f'{index}: no "weight_map" object')
    for shard in sorted(set(map(str, weight_map.values()))):
        if not (index.parent / shard).is_file():
            raise WeightsError(f"{index}: shard {shard} is missing from {index.parent}")


def check_model_files(folder: str | Path) -> None:
    """Check the config, weights and shard index of a model or adapter folder (a no-op elsewhere)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for name in ("config.json", "adapter_config.json"):
        if (folder / name).is_file():
            _check_json(folder / name)
    for file in sorted(folder.iterdir()):
        if not file.is_file():
            continue
        if file.suffix == ".safetensors":
            check_safetensors(file)
        elif file.name.endswith((".safetensors.index.json", ".bin.index.json")):
            _check_index(file)
        elif file.suffix == ".bin":
            _check_bin(file)


def _check_bin(path: Path) -> None:
    """A PyTorch .bin: not empty, and (the zip format of torch.save) its zip directory readable."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if not magic:
        raise _bad(path, "0 bytes")
    if magic == b"PK" and not zipfile.is_zipfile(path):
        raise _bad(path, "an incomplete zip archive")
