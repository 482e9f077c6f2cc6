"""Strict text reading shared by every data reader (training data, `infer`, `eval`, `data check`).

- `open_text`: open a file as UTF-8; a decoding error anywhere while it is read becomes one line,
  ``FILE:LINE: not UTF-8 text (byte 0x.. at offset N)``, found by rescanning the raw bytes.
- `iter_lines`: numbered lines, refusing a line longer than `MAX_LINE_CHARS` (a binary or
  minified file would otherwise be read into memory whole).
- `no_rows_error`: the one line for a file that holds no rows (0 bytes, blank lines, a header).
- `read_json_file`: a small JSON file (configs) read strictly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from lmforge.errors import DataError, LmforgeError

MAX_LINE_CHARS = 64 * 1024 * 1024
_SCAN_CHUNK = 1 << 20


def utf8_error(path: str | os.PathLike) -> LmforgeError:
    """The first invalid UTF-8 byte of `path` as a one-line error (line, byte value, file offset)."""
    offset, line, pending = 0, 1, b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_SCAN_CHUNK)
            buf = pending + chunk
            if not buf:
                break
            try:
                buf.decode("utf-8")
            except UnicodeDecodeError as e:
                cut_short = e.end == len(buf) and e.reason == "unexpected end of data"
                if not (cut_short and chunk):  # a real error (or a sequence cut off by the end of file)
                    line += buf.count(b"\n", 0, e.start)
                    where = offset + e.start
                    return LmforgeError(
                        f"{path}:{line}: not UTF-8 text (byte 0x{buf[e.start]:02x} at offset {where})"
                    )
                pending = buf[e.start :]  # a character split by the chunk boundary: decode it next time
                buf = buf[: e.start]
            else:
                pending = b""
            line += buf.count(b"\n")
            offset += len(buf)
            if not chunk:
                break
    return LmforgeError(f"{path}: not UTF-8 text")


@contextmanager
def open_text(path: str | os.PathLike, *, encoding: str = "utf-8", newline: str | None = None):
    """`open(path)` for reading text; invalid UTF-8 met while reading raises `utf8_error(path)`."""
    try:
        with open(path, encoding=encoding, newline=newline) as f:
            yield f
    except UnicodeDecodeError:
        raise utf8_error(path) from None


def iter_lines(f: IO[str], path: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of an open text file; a line over `MAX_LINE_CHARS` is a `DataError`."""
    lineno = 0
    while True:
        text = f.readline(MAX_LINE_CHARS + 1)
        if not text:
            return
        lineno += 1
        if len(text.rstrip("\r\n")) > MAX_LINE_CHARS:
            raise DataError(
                path, lineno, "line", f"must be at most {MAX_LINE_CHARS} characters (one row per line)"
            )
        yield lineno, text


def no_rows_error(path: str) -> LmforgeError:
    """The error for a data file that yielded no row at all."""
    size = os.path.getsize(path)
    if size == 0:
        return LmforgeError(f"{path}: empty file (0 bytes); expected data rows")
    with open(path, "rb") as f:
        blank = not f.read(_SCAN_CHUNK).strip() and size <= _SCAN_CHUNK
    what = "only blank lines" if blank else "no data rows (only a header, an empty list or blank lines)"
    return LmforgeError(f"{path}: the file holds {what}; expected data rows")


def read_json_file(path: str | os.PathLike) -> Any:
    """A small JSON file (a config) parsed, or one line naming the file and what is wrong."""
    try:
        with open_text(path) as f:
            text = f.read()
    except OSError as e:
        raise LmforgeError(f"{path}: cannot read ({e.strerror})") from None
    if not text.strip():
        raise LmforgeError(f"{path}: empty file; expected a JSON object")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LmforgeError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
