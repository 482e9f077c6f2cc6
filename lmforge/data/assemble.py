"""A stage's datasets end to end: load the `--dataset` rows (or stream them), cap them at
`--max_samples`, split off or load the validation rows, tokenise them with the stage's `prepare`,
and keep the features in the one tokenised cache (`convert.py`: `--tokenized_path`, or a
`--dataset` folder from `lmforge data convert`).

`ctx` is the stage context (its `stage`, `cfg`, `tokenizer`, `processor` and `stats`); `module`
is the stage module (its `DATA_KIND`, `prepare`, `Args` and optional `FEATURE_KEYS`).
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

from lmforge.data import convert
from lmforge.data.load import iter_rows_streaming, load_rows, load_val, split_val
from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")
_ROW_OPTIONS = ("text_column", "system", "system_prompt", "user_prompt", "base_dir", "image_dir")


def stage_option_keys(module) -> tuple[str, ...]:
    """The stage's own flags that may change its features (e.g. distill-reason's marker_weight): all
    of them, or the ones the stage names in `FEATURE_KEYS` (distill-api leaves out its API key)."""
    keys = getattr(module, "FEATURE_KEYS", None)
    return tuple(keys) if keys is not None else tuple(f.name for f in fields(module.Args))


def load_options(cfg) -> dict[str, Any]:
    """`load_rows` keyword arguments from the run's config (all but `seed`)."""
    opts = {k: cfg.get(k) for k in _ROW_OPTIONS}
    opts.update(
        fmt=cfg.get("format"),
        skip_bad_rows=cfg["skip_bad_rows"],
        dataset_dir=cfg.get("dataset_dir"),
        mix_strategy=cfg["mix_strategy"],
        interleave_probs=cfg.get("interleave_probs"),
    )
    return opts


def load_data(ctx, kind: str):
    """(train rows, validation rows or None) of `--dataset`, as canonical `kind` rows."""
    cfg = ctx.cfg
    if not cfg.get("dataset"):
        raise LmforgeError(f"train {ctx.stage}: --dataset (or --data_path) is required")
    opts = load_options(cfg)
    if cfg["streaming"]:
        return load_streaming(cfg, kind, opts)
    rows, stats = load_rows(cfg["dataset"], kind, seed=cfg["seed"], **opts)
    ctx.stats["rows"] = len(rows)
    if getattr(stats, "num_bad", 0):
        ctx.stats["bad_rows_skipped"] = stats.num_bad
        log.warning("skipped %d bad rows (first: %s)", stats.num_bad, (stats.bad_examples or [""])[0])
    if cfg.get("max_samples"):
        rows = rows.select(range(min(cfg["max_samples"], len(rows))))
    return load_val(
        rows,
        kind,
        val_dataset=cfg.get("val_dataset"),
        val_size=cfg.get("val_size") or 0,
        seed=cfg["seed"],
        **opts,
    )


def load_streaming(cfg, kind: str, opts: dict[str, Any]):
    """`--streaming`: rows are read, converted and tokenised on the fly; nothing is cached."""
    # --max_steps and no --val_size: checked by validate_config
    rows = iter_rows_streaming(cfg["dataset"], kind, seed=cfg["seed"], **opts)
    if cfg.get("buffer_size"):  # LLaMA-Factory: a stream is shuffled through a buffer of this many rows
        rows = rows.shuffle(seed=cfg["seed"], buffer_size=cfg["buffer_size"])
    if cfg.get("max_samples"):
        rows = rows.take(cfg["max_samples"])
    val = None
    if cfg.get("val_dataset"):
        val = iter_rows_streaming(cfg["val_dataset"], kind, seed=cfg["seed"], **opts)
    return rows, val


def _prepare(ctx, module, rows):
    """`module.prepare` with `--tokenized_path` hidden: that folder belongs to the cache, which
    replaces it whole (a stage writing a side file there, e.g. distill-api's failures, would lose it
    or make `save_converted` refuse the folder)."""
    if rows is None:
        return None
    _check_image_rows(ctx, rows)
    saved = ctx.cfg.values.get("tokenized_path")
    ctx.cfg.values["tokenized_path"] = None
    try:
        return module.prepare(ctx, rows)
    finally:
        ctx.cfg.values["tokenized_path"] = saved


def _check_image_rows(ctx, rows) -> None:
    """Rows with images need a vision LLM: a text model would read their `<image>` as plain text."""
    if getattr(ctx.processor, "image_processor", None) is not None or "images" not in (
        rows.column_names or ()
    ):
        return
    if hasattr(rows, "__len__") and any(rows["images"]):
        cfg = ctx.cfg
        raise LmforgeError(
            f"train {ctx.stage}: {cfg.get('dataset')} has rows with images but {cfg['model_name_or_path']} "
            "is a text model (train a vision LLM on them: docs/vision-training.md)"
        )


def prepare_datasets(ctx, module):
    """(train, eval) features: from a converted `--dataset` folder, from a matching
    `--tokenized_path` cache, or by loading and tokenising (and then caching) the raw data."""
    cfg = ctx.cfg
    if convert.is_converted(cfg.get("dataset")):
        return _from_converted(ctx, module)
    path = cfg.get("tokenized_path")
    if not path or cfg["streaming"]:
        rows, val_rows = load_data(ctx, module.DATA_KIND)
        return _prepare(ctx, module, rows), _prepare(ctx, module, val_rows)
    meta = convert.fingerprint(
        cfg, ctx.tokenizer, ctx.stage, module.DATA_KIND, stage_option_keys(module), processor=ctx.processor
    )
    if convert.matches(path, meta["key"]) and not cfg["overwrite_cache"]:
        train, val, record = convert.load_converted(path)
        ctx.stats["rows"] = record.get("num_rows", len(train))
        log.info("tokenised data: reusing %s (fingerprint matches)", path)
        return train, val
    if convert.is_converted(path):
        log.info("tokenised data: %s was built with other data, tokenizer or options; rebuilding", path)
    rows, val_rows = load_data(ctx, module.DATA_KIND)
    train, val = _prepare(ctx, module, rows), _prepare(ctx, module, val_rows)
    convert.save_converted(path, train, val, dict(meta, num_rows=ctx.stats.get("rows")))
    train, val, _ = convert.load_converted(path)
    return train, val


def _from_converted(ctx, module):
    """`--dataset DIR` where DIR came from `lmforge data convert`: its features as they are."""
    cfg, path = ctx.cfg, ctx.cfg["dataset"]
    if cfg["streaming"]:
        raise LmforgeError(f"--dataset {path} is already tokenised; drop --streaming to train on it")
    train, val, meta = convert.load_converted(path)
    convert.check_usable(path, meta, ctx.tokenizer, module.DATA_KIND, cfg.get("max_length"))
    ctx.stats["rows"] = meta.get("num_rows") or len(train)
    if cfg.get("max_samples"):
        train = train.select(range(min(cfg["max_samples"], len(train))))
    if cfg.get("val_dataset"):
        vpath = cfg["val_dataset"]
        if convert.is_converted(vpath):
            val, _, vmeta = convert.load_converted(vpath)
            convert.check_usable(vpath, vmeta, ctx.tokenizer, module.DATA_KIND, cfg.get("max_length"))
        else:
            val_rows, _ = load_rows(vpath, module.DATA_KIND, seed=cfg["seed"], **load_options(cfg))
            val = _prepare(ctx, module, val_rows)
    elif cfg.get("val_size"):
        train, val = split_val(train, cfg["val_size"], cfg["seed"])
    return train, val
