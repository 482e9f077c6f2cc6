"""Raw readers: the rows of one data file as (line or row number, dict or `DataError`), read lazily.

JSONL, a JSON list (decoded one element at a time), CSV / TSV, Parquet, Arrow IPC, and `.txt`
(pretrain text, a line per document). `iter_raw` is the one entry point; an empty file is an error.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from lmforge.data import textio
from lmforge.data.formats import parse_json_line
from lmforge.errors import DataError, LmforgeError

_CHUNK = 1 << 20


def _iter_jsonl(path: str, f) -> Iterator[tuple[int, Any]]:
    for lineno, text in textio.iter_lines(f, path):
        if not text.strip():
            continue
        try:
            yield lineno, parse_json_line(text, path, lineno)
        except DataError as e:
            yield lineno, e


def _iter_json_array(path: str, f) -> Iterator[tuple[int, Any]]:
    """Elements of a top-level JSON list, decoded one at a time (with their line numbers)."""
    decoder = json.JSONDecoder()
    buf, pos, line, eof, want = "", 0, 1, False, _CHUNK

    def refill(n: int) -> bool:
        nonlocal buf, pos
        more = f.read(n)
        buf, pos = buf[pos:] + more, 0
        return not more

    eof = refill(want)
    pos = buf.index("[") + 1
    line += buf.count("\n", 0, pos)
    while True:
        while True:  # skip whitespace and separators
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                line += buf[pos] == "\n"
                pos += 1
            if pos < len(buf) or eof:
                break
            eof = refill(want)
        if pos >= len(buf):
            yield line, DataError(path, line, "json", "must be a JSON list closed by ]")
            return
        if buf[pos] == "]":
            return
        try:
            obj, end = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError as e:
            if not eof and len(buf) - pos > textio.MAX_LINE_CHARS:  # the rest cannot be read: stop
                raise _too_long(path, line) from None
            if not eof:  # the element may just be cut by the chunk boundary: read more, retry
                want *= 2
                eof = refill(want)
                continue
            yield line, DataError(path, line, "json", f"must be a valid JSON list of objects ({e.msg})")
            return
        if end - pos > textio.MAX_LINE_CHARS:
            raise _too_long(path, line)
        want = _CHUNK
        yield line, obj if isinstance(obj, dict) else DataError(path, line, "row", "must be a JSON object")
        line += buf.count("\n", pos, end)
        pos = end
        if pos > _CHUNK and not eof:
            eof = refill(_CHUNK)


def _too_long(path: str, line: int) -> DataError:
    return DataError(path, line, "row", f"must be at most {textio.MAX_LINE_CHARS} characters of JSON")


def _iter_csv(path: str, f, delimiter: str) -> Iterator[tuple[int, Any]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.DictReader(f, delimiter=delimiter)
    start = 2  # line 1 is the header
    for row in reader:
        yield start, {k: v for k, v in row.items() if k is not None}
        start = reader.line_num + 1


def _iter_parquet(path: str) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise LmforgeError(f"{path}: not a Parquet file ({str(e).splitlines()[0]})") from None
    lineno = 0
    for batch in source.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            lineno += 1
            yield lineno, row


def _iter_arrow(path: str) -> Iterator[tuple[int, Any]]:
    """Rows of an Arrow IPC file: the stream format `datasets` writes, or the random-access one."""
    import pyarrow as pa

    with pa.memory_map(path) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            try:
                file_reader = pa.ipc.open_file(source)
            except pa.ArrowInvalid as e:
                raise LmforgeError(f"{path}: not an Arrow IPC file ({e})") from None
            reader = (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
        lineno = 0
        for batch in reader:
            for row in batch.to_pylist():
                lineno += 1
                yield lineno, row


def iter_raw(path: str, kind: str) -> Iterator[tuple[int, Any]]:
    """Raw rows of one file as (line or row number, dict or DataError), read lazily.

    A file that yields no row at all (0 bytes, blank lines only, a bare CSV header, `[]`) is an error."""
    seen = False
    for item in _iter_file(path, kind):
        seen = True
        yield item
    if not seen:
        raise textio.no_rows_error(path)


def _iter_file(path: str, kind: str) -> Iterator[tuple[int, Any]]:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".parquet":
        yield from _iter_parquet(path)
        return
    if ext == ".arrow":
        yield from _iter_arrow(path)
        return
    with textio.open_text(path, encoding="utf-8-sig", newline="" if ext in (".csv", ".tsv") else None) as f:
        if ext == ".txt":
            if kind != "pretrain":
                raise LmforgeError(
                    f"{path}: .txt files hold pretrain text; {kind} data must be .jsonl/.json/.csv"
                )
            for lineno, text in textio.iter_lines(f, path):
                text = text.rstrip("\r\n")
                if text.strip():
                    yield lineno, {"text": text}
        elif ext in (".csv", ".tsv"):
            yield from _iter_csv(path, f, "\t" if ext == ".tsv" else ",")
        elif ext == ".json" and _first_char(f) == "[":
            yield from _iter_json_array(path, f)
        else:
            yield from _iter_jsonl(path, f)


def _first_char(f) -> str:
    while True:
        c = f.read(1)
        if not c or not c.isspace() and c != "\ufeff":
            f.seek(0)
            return c
