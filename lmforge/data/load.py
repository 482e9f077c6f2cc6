"""Load dataset specifiers into Arrow datasets of canonical rows, streaming from disk.

A specifier is a file (.jsonl, .json, .txt, .csv, .tsv, .parquet, .arrow), a folder (its data
files, sorted; a `Dataset.save_to_disk` folder reads its .arrow shards), a name in a registry file (``dataset_info.yaml`` / ``.json``, LLaMA-Factory's layout),
any of these with ``#N`` to sample N rows, or several of them comma-separated and mixed.

Files are read row by row inside `datasets.Dataset.from_generator`, so a multi-GB JSONL never sits
in a Python list; the Arrow cache is keyed by each file's path, size and mtime, every option, and
the source of this module and `formats.py`, so editing any of them rebuilds it. A bad row raises
its one-line `DataError` (unwrapped from datasets' `DatasetGenerationError`), or with
``skip_bad_rows`` is counted in `LoadStats` and skipped.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmforge.data import textio
from lmforge.data.formats import FORMATS, detect_format, parse_json_line, to_canonical
from lmforge.errors import DataError, LmforgeError

if TYPE_CHECKING:
    import datasets

DATA_EXTS = (".jsonl", ".json", ".txt", ".csv", ".tsv", ".parquet", ".arrow")
REGISTRY_NAMES = ("dataset_info.yaml", "dataset_info.yml", "dataset_info.json")
MIX_STRATEGIES = ("concat", "interleave_under", "interleave_over")
_MAX_BAD_EXAMPLES = 10
_CHUNK = 1 << 20

# LLaMA-Factory registry column names → the field names formats.py reads, per `formatting`
_COLUMN_TARGETS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "history": "history"},
    "sharegpt": {"messages": "conversations"},
}
_COMMON_TARGETS = {
    "system": "system",
    "tools": "tools",
    "chosen": "chosen",
    "rejected": "rejected",
    "kto_tag": "kto_tag",
}


@dataclass
class LoadStats:
    """What loading found: rows kept, rows skipped (first few messages kept), rows per format.

    `num_rows` is the final dataset's length (after `#N` sampling and mixing); `num_bad` and
    `formats` count the rows read from the files.
    """

    num_rows: int = 0
    num_bad: int = 0
    bad_examples: list[str] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)

    def add(self, other: LoadStats) -> None:
        self.num_rows += other.num_rows
        self.num_bad += other.num_bad
        self.bad_examples = (self.bad_examples + other.bad_examples)[:_MAX_BAD_EXAMPLES]
        for name, count in other.formats.items():
            self.formats[name] = self.formats.get(name, 0) + count


def features_for(kind: str, *, audio: bool = False, images: bool = False) -> datasets.Features:
    """The fixed Arrow schema of canonical rows of `kind` (every string nullable)."""
    from datasets import Features, List, Value

    msg = {k: Value("string") for k in ("role", "content", "reasoning_content", "tool_calls")}
    schemas = {
        "pretrain": {"text": Value("string")},
        "chat": {"messages": List(msg), "tools": Value("string")},
        "preference": {"prompt": List(msg), "chosen": List(msg), "rejected": List(msg)},
        "kto": {"prompt": List(msg), "completion": List(msg), "label": Value("bool")},
        "prompt": {"prompt": List(msg), "answer": Value("string")},
    }
    if kind not in schemas:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {', '.join(schemas)}")
    schema = dict(schemas[kind])
    if audio:
        schema["audio"] = Value("string")
    if images:  # vision rows: absolute image paths, in placeholder order
        schema["images"] = List(Value("string"))
    return Features(schema)


# ---------------------------------------------------------------------------------------------
# raw readers: yield (line number, raw row dict | DataError)


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


def _rename(row: dict, columns: dict, formatting: str | None, kind: str = "") -> dict:
    """Apply a registry `columns` mapping (LLaMA-Factory names → our field names). For pretraining
    LLaMA-Factory reads the document from the `prompt` column (`"columns": {"prompt": "text"}`)."""
    targets = {**_COMMON_TARGETS, **_COLUMN_TARGETS.get(formatting or "", {})}
    if kind == "pretrain":
        targets["prompt"] = "text"
    source_cols = set(columns.values())
    out = {k: v for k, v in row.items() if k not in source_cols}
    for std, col in columns.items():
        if col in row:
            out[targets.get(std, std)] = row[col]
    return out


def _generate_rows(files: tuple, kind: str, options: str, stats_path: str) -> Iterator[dict]:
    """The `from_generator` generator: canonical rows of every file; writes LoadStats at the end."""
    opts = json.loads(options)
    skip, columns, fmt = opts.pop("skip_bad_rows"), opts.pop("columns"), opts.pop("fmt")
    formatting, audio = opts.pop("formatting"), opts.pop("audio")
    images = opts.pop("images", False)
    stats, formats = LoadStats(), Counter()
    for path, _size, _mtime in files:
        for lineno, raw in iter_raw(path, kind):
            try:
                if isinstance(raw, DataError):
                    raise raw
                row = _rename(raw, columns, formatting, kind) if columns else raw
                row_fmt = fmt or detect_format(row, kind, text_column=opts.get("text_column"))
                out = to_canonical(row, kind, row_fmt or None, path=path, line=lineno, **opts)
            except DataError as e:
                if not skip:
                    raise
                stats.num_bad += 1
                if len(stats.bad_examples) < _MAX_BAD_EXAMPLES:
                    stats.bad_examples.append(str(e))
                continue
            if audio:
                out.setdefault("audio", None)
            if images:
                out["images"] = _image_paths(raw, path)
            formats[row_fmt] += 1
            stats.num_rows += 1
            yield out
    stats.formats = dict(formats)
    if stats_path:
        os.makedirs(os.path.dirname(stats_path), exist_ok=True)
        tmp = f"{stats_path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(stats.__dict__, f)
        os.replace(tmp, stats_path)


# ---------------------------------------------------------------------------------------------
# specifiers


@dataclass
class _Part:
    """One comma-separated piece of a specifier: its files, sample size and registry options."""

    files: tuple
    sample: int | None = None
    columns: dict | None = None
    formatting: str | None = None
    tags: dict | None = None


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


def resolve_spec(spec: str, dataset_dir: str | None = None) -> list[_Part]:
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
            parts.append(_Part(_data_files(name), sample))
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
            _Part(
                _data_files(file_path),
                sample or entry.get("num_samples"),
                entry.get("columns") or None,
                entry.get("formatting"),
                entry.get("tags") or None,
            )
        )
    if not parts:
        raise LmforgeError(f"empty dataset specifier {spec!r}")
    return parts


def _part_fmt(part: _Part, kind: str, fmt: str | None) -> str | None:
    """The format a registry `formatting` implies for `kind` (None → detect per row)."""
    if fmt or not part.formatting:
        return fmt
    if part.formatting in FORMATS[kind]:
        return part.formatting
    if part.formatting == "sharegpt" and kind == "prompt":
        return "minimind"  # the message parser reads from/value turns with the registry's tags
    return None


def _image_paths(raw: dict, path: str) -> list[str]:
    """A JSON row's `images` list as absolute paths (relative ones under the file's folder)."""
    from lmforge.data.vision import resolve_media_path

    value = raw.get("images") or []
    value = [value] if isinstance(value, str) else value
    base = os.path.dirname(os.path.abspath(path))
    return [os.path.abspath(resolve_media_path(str(p), base_dir=base)) for p in value]


def _has_images(files: tuple) -> bool:
    """Whether the first row of a JSON / JSONL file carries an `images` list (vision rows)."""
    for path, _, _ in files:
        if path.lower().endswith((".json", ".jsonl")):
            try:
                for _, raw in iter_raw(path, "chat"):
                    if isinstance(raw, dict) and "images" in raw:
                        return True
                    break
            except LmforgeError:  # an empty or unreadable file: reported where its rows are read
                continue
    return False


def _has_audio(files: tuple) -> bool:
    for path, _, _ in files:
        if path.lower().endswith((".csv", ".tsv")):
            with textio.open_text(path, encoding="utf-8-sig", newline="") as f:
                header = next(csv.reader(f, delimiter="\t" if path.lower().endswith(".tsv") else ","), [])
            if "audio" in header:
                return True
    return False


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    h = hashlib.sha256()
    for mod in ("formats.py", "load.py"):
        with open(os.path.join(os.path.dirname(__file__), mod), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def _gen_kwargs(part: _Part, kind: str, fmt: str | None, opts: dict, skip: bool, stats_dir: str) -> dict:
    if kind not in FORMATS:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {', '.join(FORMATS)}")
    if fmt and fmt not in FORMATS[kind]:
        raise LmforgeError(
            f"--format {fmt!r} is not a {kind} format; expected one of {', '.join(FORMATS[kind])}"
        )
    audio = kind == "chat" and _has_audio(part.files)
    images = kind == "chat" and _has_images(part.files)
    options = dict(opts, skip_bad_rows=skip, columns=part.columns, fmt=_part_fmt(part, kind, fmt))
    options.update(formatting=part.formatting, audio=audio, images=images, tags=part.tags)
    options_json = json.dumps(options, sort_keys=True, ensure_ascii=False)
    key = json.dumps([part.files, kind, options_json, _code_hash()])
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:32]
    stats_path = os.path.join(stats_dir, f"{fingerprint}.json") if stats_dir else ""
    return {"files": part.files, "kind": kind, "options": options_json, "stats_path": stats_path}


def _unwrap(exc: BaseException) -> LmforgeError | None:
    """Our error inside datasets' wrapper exceptions (raised from / during the generator)."""
    seen: BaseException | None = exc
    for _ in range(20):
        if seen is None:
            return None
        if isinstance(seen, LmforgeError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _sample(ds, n: int, seed: int):
    """N rows drawn without replacement (or whole copies plus a random remainder when N > len)."""
    import numpy as np

    if len(ds) == 0:
        return ds
    rng = np.random.default_rng(seed)
    copies, rest = divmod(n, len(ds))
    idx = [np.arange(len(ds))] * copies + [rng.permutation(len(ds))[:rest]]
    return ds.select(np.concatenate(idx).tolist())


def _mix(parts: list, mix_strategy: str, interleave_probs, seed: int):
    import datasets

    if len(parts) == 1:
        return parts[0]
    if mix_strategy not in MIX_STRATEGIES:
        raise LmforgeError(f"--mix_strategy {mix_strategy!r} is not one of {', '.join(MIX_STRATEGIES)}")
    columns = {c for p in parts for c in p.column_names}
    for name in ("audio", "images"):  # e.g. only a CSV part has `audio`, only a vision part `images`
        if name in columns:
            parts = [p if name in p.column_names else _add_none_column(p, name) for p in parts]
    if mix_strategy == "concat":
        return datasets.concatenate_datasets(parts)
    probs = interleave_probs
    if isinstance(probs, str):
        probs = [float(x) for x in probs.split(",") if x.strip()]
    if probs is not None and (len(probs) != len(parts) or abs(sum(probs) - 1.0) > 1e-6):
        raise LmforgeError(f"--interleave_probs needs {len(parts)} numbers that sum to 1; got {probs}")
    strategy = "first_exhausted" if mix_strategy == "interleave_under" else "all_exhausted"
    return datasets.interleave_datasets(parts, probabilities=probs, seed=seed, stopping_strategy=strategy)


def _add_none_column(ds, name: str):
    from datasets import List, Value

    features = ds.features.copy()
    features[name] = List(Value("string")) if name == "images" else Value("string")
    return ds.map(lambda b: {name: [None] * len(next(iter(b.values())))}, batched=True, features=features)


def load_rows(
    spec: str,
    kind: str,
    *,
    fmt: str | None = None,
    text_column: str | None = None,
    system: str | None = None,
    system_prompt: str | None = None,
    user_prompt: str | None = None,
    base_dir: str | None = None,
    skip_bad_rows: bool = False,
    cache_dir: str | None = None,
    seed: int = 0,
    dataset_dir: str | None = None,
    mix_strategy: str = "concat",
    interleave_probs: list[float] | str | None = None,
    streaming: bool = False,
    allow_empty: bool = False,
) -> tuple[datasets.Dataset | datasets.IterableDataset, LoadStats]:
    """Load `spec` as an Arrow dataset of canonical `kind` rows (see module docstring).

    Raises the first bad row's `DataError` unless `skip_bad_rows`; then the count and the first
    messages are in the returned `LoadStats`.

    `streaming=True` gives an `IterableDataset` instead and caches nothing (`cache_dir` unused,
    empty stats): `#N` takes the first N rows of a part (a stream cannot be sampled uniformly
    without a full pass), and a bad row raises its `DataError` during iteration.

    A file with no rows at all is an error; so is a dataset whose every row was skipped as bad,
    unless `allow_empty` (`data check` reports first, then refuses: see `no_usable_rows`).
    """
    import datasets

    if kind not in FORMATS:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {', '.join(FORMATS)}")
    opts = dict(
        text_column=text_column,
        system=system,
        system_prompt=system_prompt,
        user_prompt=user_prompt,
        base_dir=base_dir,
    )
    if streaming:
        return _stream_parts(
            spec, kind, fmt, opts, skip_bad_rows, dataset_dir, mix_strategy, interleave_probs, seed
        ), LoadStats()
    stats_dir = os.path.join(cache_dir or datasets.config.HF_DATASETS_CACHE, "lmforge_stats")
    total, loaded = LoadStats(), []
    for part in resolve_spec(spec, dataset_dir):
        gen_kwargs = _gen_kwargs(part, kind, fmt, opts, skip_bad_rows, str(stats_dir))
        options = json.loads(gen_kwargs["options"])
        audio, images = options["audio"], options.get("images", False)
        fingerprint = os.path.basename(gen_kwargs["stats_path"])[: -len(".json")]
        try:
            ds = datasets.Dataset.from_generator(
                _generate_rows,
                features=features_for(kind, audio=audio, images=images),
                cache_dir=cache_dir,
                gen_kwargs=gen_kwargs,
                fingerprint=fingerprint,
            )
        except Exception as e:  # noqa: BLE001 - datasets wraps the generator's error; surface ours
            ours = _unwrap(e)
            if ours is None and "corresponds to no data" in str(e):  # every row skipped or empty files
                empty = features_for(kind, audio=audio, images=images)
                ds = datasets.Dataset.from_dict({k: [] for k in empty}, features=empty)
            elif ours is None:
                raise
            else:
                raise ours.with_traceback(None) from None
        total.add(_read_stats(gen_kwargs["stats_path"], len(ds)))
        if part.sample:
            ds = _sample(ds, part.sample, seed)
        loaded.append(ds)
    mixed = _mix(loaded, mix_strategy, interleave_probs, seed)
    total.num_rows = len(mixed)
    if not total.num_rows and not allow_empty:
        raise no_usable_rows(spec, kind, total)
    return mixed, total


def no_usable_rows(spec: str, kind: str, stats: LoadStats) -> LmforgeError:
    """The error for a dataset that loaded no row (every row bad and skipped)."""
    first = f"; first: {stats.bad_examples[0]}" if stats.bad_examples else ""
    return LmforgeError(f"{spec}: no usable {kind} rows ({stats.num_bad} bad rows skipped{first})")


def _stream_parts(spec, kind, fmt, opts, skip_bad_rows, dataset_dir, mix_strategy, interleave_probs, seed):
    import datasets

    parts = []
    for part in resolve_spec(spec, dataset_dir):
        gen_kwargs = _gen_kwargs(part, kind, fmt, opts, skip_bad_rows, "")
        options = json.loads(gen_kwargs["options"])
        audio, images = options["audio"], options.get("images", False)
        ds = datasets.IterableDataset.from_generator(
            _generate_rows, features=features_for(kind, audio=audio, images=images), gen_kwargs=gen_kwargs
        )
        parts.append(ds.take(part.sample) if part.sample else ds)
    return _mix(parts, mix_strategy, interleave_probs, seed)


def _read_stats(path: str, num_rows: int) -> LoadStats:
    try:
        with open(path) as f:
            return LoadStats(**json.load(f))
    except (OSError, ValueError, TypeError):
        return LoadStats(num_rows=num_rows)


def iter_rows_streaming(spec: str, kind: str, **kwargs) -> datasets.IterableDataset:
    """`--streaming`: the rows `load_rows` gives, as an `IterableDataset` (same keyword arguments)."""
    return load_rows(spec, kind, streaming=True, **kwargs)[0]


def split_val(
    ds: datasets.Dataset, val_size: float | int, seed: int = 0
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, val): `val_size` in (0, 1) is a fraction of the rows, an integer >= 1 a row count."""
    n = len(ds)
    if isinstance(val_size, float) and 0 < val_size < 1:
        num_val = max(1, round(n * val_size))
    elif float(val_size).is_integer() and val_size >= 1:
        num_val = int(val_size)
    else:
        raise LmforgeError(f"--val_size must be a fraction in (0, 1) or a row count >= 1; got {val_size}")
    if num_val >= n:
        raise LmforgeError(f"--val_size {val_size} leaves no training rows (dataset has {n} rows)")
    split = ds.train_test_split(test_size=num_val, seed=seed, shuffle=True)
    return split["train"], split["test"]


def load_val(
    train: datasets.Dataset,
    kind: str,
    *,
    val_dataset: str | None = None,
    val_size: float | int = 0,
    seed: int = 0,
    **load_kwargs: Any,
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """(train, val): `--val_dataset` is loaded like the train spec; else `--val_size` splits train."""
    if val_dataset:
        val, _ = load_rows(val_dataset, kind, seed=seed, **load_kwargs)
        return train, val
    if val_size:
        return split_val(train, val_size, seed)
    return train, None
