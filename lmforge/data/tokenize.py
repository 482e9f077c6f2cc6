"""Canonical rows → training features (token ids, labels, position ids, loss weights).

Caching the features on disk (`--tokenized_path`, `lmforge data convert`) is `convert.py`'s job;
these functions only tokenise. `ctx` is the stage context (its `cfg`, `tokenizer` and `stats`)."""

from __future__ import annotations

from lmforge.data.chat import IGNORE_INDEX
from lmforge.errors import LmforgeError


def _num_proc(ctx) -> int | None:
    n = ctx.cfg.get("preprocessing_num_workers")
    return n if n and n > 1 else None


def is_streamed(ds) -> bool:
    import datasets

    return isinstance(ds, datasets.IterableDataset)


def map_rows(ds, fn, ctx, **kw):
    """`Dataset.map` with lmforge's worker count, or the lazy `IterableDataset.map` when streaming."""
    if kw.get("batched"):
        kw.setdefault("batch_size", ctx.cfg.get("preprocessing_batch_size") or 1000)
    if is_streamed(ds):
        kw.pop("desc", None)
        return ds.map(fn, **kw)
    return ds.map(fn, num_proc=_num_proc(ctx), **kw)


def encode_media_rows(rows, encode, ctx, *, kind: str, where: str):
    """Batched `encode(batch, indices)` over audio / image rows → `input_ids` / `labels` (and what else
    `encode` returns); rows left with no answer token are dropped and counted in
    ctx.stats["rows_without_targets"]; none left is one line naming the data and the limit."""
    ds = map_rows(
        rows,
        encode,
        ctx,
        batched=True,
        with_indices=True,
        remove_columns=list(rows.column_names),
        desc=f"tokenising {kind} rows",
    )
    before = len(ds)
    ds = ds.filter(lambda b: [any(x != IGNORE_INDEX for x in lab) for lab in b["labels"]], batched=True)
    ctx.stats["rows_without_targets"] = before - len(ds)
    if len(ds) == 0:
        raise LmforgeError(
            f"{where}: no {kind} row has an answer left within --max_length {ctx.cfg['max_length']}"
        )
    return ds


def tokenize_pretrain(ctx, rows):
    """`text` rows → packed windows (input_ids, labels, position_ids) or truncated documents."""
    from lmforge.data.template import encode_text

    tok, max_len = ctx.tokenizer, ctx.cfg["max_length"]

    docs = map_rows(
        rows,
        lambda b: {"input_ids": encode_text(tok, b["text"])},
        ctx,
        batched=True,
        remove_columns=list(rows.column_names),
        desc="tokenising",
    )
    if ctx.cfg["packing"] and is_streamed(docs):
        from lmforge.data.packing import pack_stream

        return pack_stream(docs, max_len, pad_id=tok.pad_token_id)
    if ctx.cfg["packing"]:
        from lmforge.data.packing import pack_documents

        packed, stats = pack_documents(docs, max_len, pad_id=tok.pad_token_id, num_proc=_num_proc(ctx))
        ctx.stats["packing"] = stats
        return packed

    def trunc(b):
        ids = [x[:max_len] for x in b["input_ids"]]
        return {"input_ids": ids, "labels": ids}

    return map_rows(docs, trunc, ctx, batched=True, desc="truncating")


def tokenize_chat(ctx, rows):
    """Chat rows → input_ids + labels (assistant tokens only unless --train_on_prompt)."""
    from lmforge.data.chat import encode_chat_batch

    tok, cfg = ctx.tokenizer, ctx.cfg

    def encode(batch):
        items = [{"messages": m, "tools": t} for m, t in zip(batch["messages"], batch["tools"])]
        return encode_chat_batch(
            tok,
            items,
            max_length=cfg["max_length"],
            train_on_prompt=cfg["train_on_prompt"],
            enable_thinking=cfg["enable_thinking"],
            mask_history=cfg.get("mask_history") or False,
            truncation=cfg.get("truncation") or "right",
        )

    guard_template(ctx, rows)
    ds = map_rows(rows, encode, ctx, batched=True, remove_columns=list(rows.column_names), desc="tokenising")
    if is_streamed(ds):
        return ds.filter(lambda b: [any(x != -100 for x in lab) for lab in b["labels"]], batched=True)
    before = len(ds)
    ds = ds.filter(
        lambda b: [any(x != -100 for x in lab) for lab in b["labels"]],
        batched=True,
        desc="dropping rows with no assistant tokens",
    )
    ctx.stats["rows_without_targets"] = before - len(ds)
    if len(ds) == 0:
        raise LmforgeError(
            f"{cfg['dataset']}: no row has an assistant answer left within --max_length {cfg['max_length']}"
        )
    if cfg["packing"]:
        from lmforge.data.packing import pack_documents

        ds, stats = pack_documents(ds, cfg["max_length"], pad_id=tok.pad_token_id, num_proc=_num_proc(ctx))
        ctx.stats["packing"] = stats
    return ds


def guard_template(ctx, rows, n: int = 4) -> None:
    """Before tokenising: on the first `n` rows, the inference prompt up to each assistant turn must
    be the start of the training row, the turn's trained tokens right after (data/chat.py)."""
    from lmforge.data.chat import check_rows

    if rows is not None:
        head = first_rows(rows, n)
        check_rows(
            ctx.tokenizer, head, enable_thinking=ctx.cfg["enable_thinking"], where=str(ctx.cfg["dataset"])
        )


def first_rows(rows, n: int) -> list[dict]:
    """The first `n` rows of a Dataset or a streamed IterableDataset."""
    return list(rows.take(n)) if is_streamed(rows) else [rows[i] for i in range(min(n, len(rows)))]


def marker_token_runs(tokenizer, markers: tuple[str, ...]) -> list[list[int]]:
    runs = []
    for m in markers:
        for text in (m, "\n" + m, m + "\n"):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if ids and ids not in runs:
                runs.append(ids)
    return sorted(runs, key=len, reverse=True)


def add_marker_weights(ds, tokenizer, markers: tuple[str, ...], weight: float):
    """A `loss_weights` column: `weight` on every token of each whole marker occurrence, else 1."""
    runs = marker_token_runs(tokenizer, markers)

    def weigh(batch):
        out = []
        for ids in batch["input_ids"]:
            w = [1.0] * len(ids)
            i = 0
            while i < len(ids):
                for run in runs:
                    if ids[i : i + len(run)] == run:
                        for j in range(i, i + len(run)):
                            w[j] = weight
                        i += len(run) - 1
                        break
                i += 1
            out.append(w)
        return {"loss_weights": out}

    return ds.map(weigh, batched=True, desc="weighting markers")
