"""The tokenised dataset folder that `lmforge data convert` writes and `train` reuses.

Layout of a converted folder (mdl-toolkit's `convert-dataset`, LLaMA-Factory's `tokenized_path`)::

    DIR/lmforge_cache.json   fingerprint + what it was built with (stage, kind, tokenizer, max length)
    DIR/train/               Arrow dataset of training features (input_ids, labels, ...)
    DIR/validation/          optional: the held-out rows (--val_size / --val_dataset), tokenised

The fingerprint covers everything the features depend on: the tokenizer's vocabulary and merges,
its chat template, max length, the data and conversion flags, the stage's own flags, the data
files' size and mtime, and the code fingerprint (`fingerprint.py`) of the modules that load and
tokenise rows: data's own (`FEATURE_CODE`) and the stage module with what it imports.
`train --tokenized_path DIR` reuses DIR when the fingerprint matches and rebuilds it otherwise;
`train --dataset DIR` trains on a converted folder as it is (its conversion options win, as in
mdl-toolkit), after checking that it was made for the same kind of stage with the same tokenizer.
This is lmforge's one tokenised cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import fields
from typing import Any

from lmforge.data.fingerprint import code_fingerprint, with_imports
from lmforge.data.load import ROW_CODE
from lmforge.data.specifier import resolve_spec
from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")

META_NAME = "lmforge_cache.json"
FORMAT_VERSION = 1
# DataArgs fields that do not change the features (where the cache goes, how fast it is built)
_NOT_IN_KEY = {
    "tokenized_path",
    "preprocessing_num_workers",
    "preprocessing_batch_size",
    "streaming",
    "dataset_dir",
    "overwrite_cache",
}
# data's modules whose code shapes the features (the stage's own come from `stage_code`)
FEATURE_CODE = (
    *ROW_CODE,
    "lmforge.data.chat",
    "lmforge.data.template",
    "lmforge.data.packing",
    "lmforge.data.tokenize",
)


def is_converted(path: str | None) -> bool:
    """True for a folder written by `lmforge data convert` (or by `train --tokenized_path`)."""
    return bool(path) and os.path.isfile(os.path.join(str(path), META_NAME))


def tokenizer_hash(tokenizer: Any) -> str:
    """A short hash of the vocabulary and merges (the fast tokenizer's JSON) or the tokenizer's name."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else str(getattr(tokenizer, "name_or_path", ""))
    return hashlib.sha256(f"{len(tokenizer)}|{text}".encode()).hexdigest()[:16]


def template_hash(tokenizer: Any) -> str:
    return hashlib.sha256(str(getattr(tokenizer, "chat_template", None)).encode()).hexdigest()[:16]


def stage_code(stage: str) -> list[str]:
    """The stage's module and the lmforge modules it imports (its tokenising code among them)."""
    return with_imports(f"lmforge.stages.{stage.replace('-', '_')}")


def _spec_files(spec: str | None, dataset_dir: str | None) -> list:
    """(path, size, mtime) of every file a specifier names, so an edited file rebuilds the cache."""
    if not spec:
        return []
    return [[list(f) for f in part.files] for part in resolve_spec(spec, dataset_dir)]


def fingerprint(
    cfg: Any, tokenizer: Any, stage: str, kind: str, stage_fields: tuple[str, ...], processor: Any = None
) -> dict:
    """What the features depend on, as a JSON-able dict whose `key` is the hash of the rest (for
    audio LLMs also the feature extractor, which decides how many audio tokens a clip becomes)."""
    from lmforge.config.schema import DataArgs

    data_keys = [f.name for f in fields(DataArgs) if f.name not in _NOT_IN_KEY]
    options = {k: cfg.get(k) for k in sorted({*data_keys, *stage_fields, "seed"})}
    parts = {
        "version": FORMAT_VERSION,
        "stage": stage,
        "kind": kind,
        "tokenizer": tokenizer_hash(tokenizer),
        "template": template_hash(tokenizer),
        "options": options,
        "files": _spec_files(cfg.get("dataset"), cfg.get("dataset_dir")),
        "val_files": _spec_files(cfg.get("val_dataset"), cfg.get("dataset_dir")),
        "code": code_fingerprint([*FEATURE_CODE, *stage_code(stage)]),
    }
    if processor is not None:
        fe = processor.feature_extractor.to_json_string()
        parts["audio"] = hashlib.sha256(f"{processor.audio_token}|{fe}".encode()).hexdigest()[:16]
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return {"key": hashlib.sha256(blob.encode()).hexdigest(), **parts}


def read_meta(path: str) -> dict:
    try:
        with open(os.path.join(path, META_NAME), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise LmforgeError(f"{path}/{META_NAME}: unreadable converted-dataset record ({e})") from None
    if not isinstance(meta, dict):
        raise LmforgeError(f"{path}/{META_NAME}: must be a JSON object")
    return meta


def matches(path: str | None, key: str) -> bool:
    """True when `path` holds a converted dataset built with fingerprint `key`."""
    if not is_converted(path) or not os.path.isdir(os.path.join(str(path), "train")):
        return False
    try:
        return read_meta(str(path)).get("key") == key
    except LmforgeError:
        return False


def load_converted(path: str) -> tuple[Any, Any, dict]:
    """(train, validation or None, meta) of a converted folder."""
    from datasets import load_from_disk

    meta = read_meta(path)
    train_dir = os.path.join(path, "train")
    if not os.path.isdir(train_dir):
        raise LmforgeError(
            f"{path}: converted dataset has no train/ folder; run `lmforge data convert` again"
        )
    val_dir = os.path.join(path, "validation")
    val = load_from_disk(val_dir) if os.path.isdir(val_dir) else None
    return load_from_disk(train_dir), val, meta


def check_usable(path: str, meta: dict, tokenizer: Any, kind: str, max_length: int | None) -> None:
    """A converted folder used as `--dataset` must match the stage's data kind and the tokenizer."""
    if meta.get("kind") != kind:
        raise LmforgeError(
            f"{path}: converted for stage {meta.get('stage')!r} ({meta.get('kind')} rows); "
            f"this stage needs {kind} rows: convert again with --stage"
        )
    if meta.get("tokenizer") != tokenizer_hash(tokenizer):
        raise LmforgeError(
            f"{path}: converted with a different tokenizer than this run's; convert again with this "
            "run's --model_name_or_path or --tokenizer_path"
        )
    built = (meta.get("options") or {}).get("max_length")
    if max_length and built and built != max_length:
        log.warning(
            "%s was converted with max_length %s; using it as it is (not %s)", path, built, max_length
        )


def check_output(path: str) -> None:
    """Refuse to replace anything but a converted folder (or an empty one)."""
    if os.path.isdir(path) and not is_converted(path) and os.listdir(path):
        raise LmforgeError(
            f"{path}: folder exists and is not a converted dataset; refusing to overwrite it "
            "(choose an empty or new --output / --tokenized_path)"
        )
    if os.path.exists(path) and not os.path.isdir(path):
        raise LmforgeError(f"{path}: exists and is a file; --output / --tokenized_path must be a folder")


def save_converted(path: str, train: Any, val: Any, meta: dict) -> None:
    """Write train (+ validation) and the record next to a temporary folder, then swap it in."""
    check_output(path)
    tmp = f"{os.path.abspath(path).rstrip(os.sep)}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    train.save_to_disk(os.path.join(tmp, "train"))
    if val is not None:
        val.save_to_disk(os.path.join(tmp, "validation"))
    record = dict(meta, num_train=len(train), num_validation=None if val is None else len(val))
    with open(os.path.join(tmp, META_NAME), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, ensure_ascii=False, default=str)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(tmp, path)
