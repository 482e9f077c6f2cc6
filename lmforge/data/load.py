"""Load dataset specifiers into Arrow datasets of canonical rows, streaming from disk.

A specifier is a file (.jsonl, .json, .txt, .csv, .tsv, .parquet, .arrow), a folder (its data
files, sorted; a `Dataset.save_to_disk` folder reads its .arrow shards), a name in a registry file
(``dataset_info.yaml`` / ``.json``, LLaMA-Factory's layout), any of these with ``#N`` to sample N
rows, or several of them comma-separated and mixed (`specifier.py`; raw readers: `readers.py`).

Files are read row by row inside `datasets.Dataset.from_generator`, so a multi-GB JSONL never sits
in a Python list; the Arrow cache is keyed by each file's path, size and mtime, every option, and
the code fingerprint of the modules that read and convert rows (`ROW_CODE`), so editing any of
them rebuilds it. A bad row raises
its one-line `DataError` (unwrapped from datasets' `DatasetGenerationError`), or with
``skip_bad_rows`` is counted in `LoadStats` and skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmforge.data.fingerprint import code_fingerprint
from lmforge.data.formats import FORMATS, detect_format, to_canonical
from lmforge.data.readers import iter_raw
from lmforge.data.specifier import (
    MEDIA_COLUMNS,
    Part,
    has_audio,
    has_media,
    iter_raw_path,
    part_fmt,
    resolve_spec,
)
from lmforge.errors import DataError, LmforgeError

if TYPE_CHECKING:
    import datasets

MIX_STRATEGIES = ("concat", "interleave_under", "interleave_over")
_MAX_BAD_EXAMPLES = 10
# the modules whose code shapes the loaded rows (their source keys the Arrow row cache)
ROW_CODE = (
    "lmforge.data.readers",
    "lmforge.data.specifier",
    "lmforge.data.formats",
    "lmforge.data.load",
    "lmforge.data.vision",
)
__all__ = ["LoadStats", "iter_raw", "iter_raw_path", "load_rows", "load_val", "resolve_spec", "split_val"]

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
    image_rows: int = 0  # vision datasets: rows with images, and the images they list
    images: int = 0
    video_rows: int = 0
    videos: int = 0

    def add(self, other: LoadStats) -> None:
        self.num_rows += other.num_rows
        self.num_bad += other.num_bad
        self.image_rows += other.image_rows
        self.images += other.images
        self.video_rows += other.video_rows
        self.videos += other.videos
        self.bad_examples = (self.bad_examples + other.bad_examples)[:_MAX_BAD_EXAMPLES]
        for name, count in other.formats.items():
            self.formats[name] = self.formats.get(name, 0) + count


def features_for(kind: str, *, audio: bool = False, vision: bool = False) -> datasets.Features:
    """The fixed Arrow schema of canonical rows of `kind` (every string nullable); `vision` adds
    the `images` / `videos` lists of absolute paths."""
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
    if vision:
        schema["images"] = List(Value("string"))
        schema["videos"] = List(Value("string"))
    return Features(schema)


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
    media_dir = opts.pop("media_dir")
    stats, formats = LoadStats(), Counter()
    for path, _size, _mtime in files:
        folder = media_dir or os.path.dirname(os.path.abspath(path))
        for lineno, raw in iter_raw(path, kind):
            try:
                if isinstance(raw, DataError):
                    raise raw
                row = _rename(raw, columns, formatting, kind) if columns else raw
                row_fmt = fmt or detect_format(row, kind, text_column=opts.get("text_column"))
                out = to_canonical(
                    row, kind, row_fmt or None, path=path, line=lineno, media_dir=folder, **opts
                )
            except DataError as e:
                if not skip:
                    raise
                stats.num_bad += 1
                if len(stats.bad_examples) < _MAX_BAD_EXAMPLES:
                    stats.bad_examples.append(str(e))
                continue
            if audio:
                out.setdefault("audio", None)
            if opts["media"]:
                _count_media(stats, out)
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


def _count_media(stats: LoadStats, row: dict) -> None:
    images, videos = row.setdefault("images", []), row.setdefault("videos", [])
    stats.image_rows += bool(images)
    stats.images += len(images)
    stats.video_rows += bool(videos)
    stats.videos += len(videos)


def _gen_kwargs(part: Part, kind: str, fmt: str | None, opts: dict, skip: bool, stats_dir: str) -> dict:
    if kind not in FORMATS:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {', '.join(FORMATS)}")
    if fmt and fmt not in FORMATS[kind]:
        raise LmforgeError(
            f"--format {fmt!r} is not a {kind} format; expected one of {', '.join(FORMATS[kind])}"
        )
    audio = kind == "chat" and has_audio(part.files)
    media = kind != "pretrain" and has_media(part.files, part.columns)
    options = dict(opts, skip_bad_rows=skip, columns=part.columns, fmt=part_fmt(part, kind, fmt))
    options.update(formatting=part.formatting, audio=audio, tags=part.tags)
    options.update(media=media, media_dir=part.media_dir if media else None)
    if not media:  # a text dataset's options (and so its cache) stay as they were
        options.pop("image_dir", None)
    options_json = json.dumps(options, sort_keys=True, ensure_ascii=False)
    key = json.dumps([part.files, kind, options_json, code_fingerprint(ROW_CODE)])
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
    if any(set(p.column_names) != columns for p in parts):  # e.g. only a CSV part has `audio`
        parts = [_add_missing_columns(p, columns) for p in parts]
    if mix_strategy == "concat":
        return datasets.concatenate_datasets(parts)
    probs = interleave_probs
    if isinstance(probs, str):
        probs = [float(x) for x in probs.split(",") if x.strip()]
    if probs is not None and (len(probs) != len(parts) or abs(sum(probs) - 1.0) > 1e-6):
        raise LmforgeError(f"--interleave_probs needs {len(parts)} numbers that sum to 1; got {probs}")
    strategy = "first_exhausted" if mix_strategy == "interleave_under" else "all_exhausted"
    return datasets.interleave_datasets(parts, probabilities=probs, seed=seed, stopping_strategy=strategy)


def _add_missing_columns(ds, columns: set):
    """`ds` with the `audio` (None) and `images` / `videos` ([]) columns other parts have."""
    from datasets import List, Value

    missing = {
        name: (Value("string"), None) if name == "audio" else (List(Value("string")), [])
        for name in ("audio", *MEDIA_COLUMNS)
        if name in columns and name not in ds.column_names
    }
    if not missing:
        return ds
    features = ds.features.copy()
    features.update({name: feature for name, (feature, _) in missing.items()})

    def add(batch):
        n = len(next(iter(batch.values())))
        return {name: [[] if empty == [] else None for _ in range(n)] for name, (_, empty) in missing.items()}

    return ds.map(add, batched=True, features=features)


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
    image_dir: str | None = None,
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

    A part whose rows carry `images` / `videos` (a vision dataset) keeps them as lists of absolute
    paths (relative ones under `image_dir`, else the registry's or the file's folder); every row of
    it has both columns, and a bad placeholder count or unreadable file is a bad row.
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
        image_dir=image_dir,
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
        audio, vision = options["audio"], options["media"]
        fingerprint = os.path.basename(gen_kwargs["stats_path"])[: -len(".json")]
        try:
            ds = datasets.Dataset.from_generator(
                _generate_rows,
                features=features_for(kind, audio=audio, vision=vision),
                cache_dir=cache_dir,
                gen_kwargs=gen_kwargs,
                fingerprint=fingerprint,
            )
        except Exception as e:  # noqa: BLE001 - datasets wraps the generator's error; surface ours
            ours = _unwrap(e)
            if ours is None and "corresponds to no data" in str(e):  # every row skipped or empty files
                empty = features_for(kind, audio=audio, vision=vision)
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
        features = features_for(kind, audio=options["audio"], vision=options["media"])
        ds = datasets.IterableDataset.from_generator(_generate_rows, features=features, gen_kwargs=gen_kwargs)
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
