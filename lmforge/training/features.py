"""Canonical rows → training features (token ids, labels, position ids, loss weights), with the
optional on-disk cache (`--tokenized_path`), and the batch collator."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError


def _num_proc(ctx) -> int | None:
    n = ctx.cfg.get("preprocessing_num_workers")
    return n if n and n > 1 else None


def cache_key(ctx, kind: str) -> str:
    """What a tokenised cache depends on: tokenizer, template, max length, stage kind, options."""
    tok = ctx.tokenizer
    parts = {
        "kind": kind,
        "vocab": len(tok),
        "tokenizer": hashlib.sha1(tok.backend_tokenizer.to_str().encode()).hexdigest()[:16]
        if hasattr(tok, "backend_tokenizer") else tok.name_or_path,
        "template": hashlib.sha1(str(tok.chat_template).encode()).hexdigest()[:16],
        **{k: ctx.cfg.get(k) for k in ("max_length", "packing", "train_on_prompt", "system",
                                       "enable_thinking", "dataset", "max_samples", "marker_weight")},
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def load_or_build(ctx, kind: str, build):
    """Reuse `--tokenized_path` when its key matches, else build and save it there."""
    path = ctx.cfg.get("tokenized_path")
    if not path:
        return build()
    from datasets import load_from_disk

    key = cache_key(ctx, kind)
    meta = Path(path) / "lmforge_cache.json"
    if meta.is_file() and json.loads(meta.read_text()).get("key") == key:
        return load_from_disk(path)
    ds = build()
    ds.save_to_disk(path)
    meta.write_text(json.dumps({"key": key}))
    return load_from_disk(path)


def tokenize_pretrain(ctx, rows):
    """`text` rows → packed windows (input_ids, labels, position_ids) or truncated documents."""
    from lmforge.data.template import encode_text

    tok, max_len = ctx.tokenizer, ctx.cfg["max_length"]

    def build():
        docs = rows.map(lambda b: {"input_ids": encode_text(tok, b["text"])}, batched=True,
                        remove_columns=rows.column_names, num_proc=_num_proc(ctx), desc="tokenising")
        if ctx.cfg["packing"]:
            from lmforge.data.packing import pack_documents

            packed, stats = pack_documents(docs, max_len, pad_id=tok.pad_token_id, num_proc=_num_proc(ctx))
            ctx.stats["packing"] = stats
            return packed

        def trunc(b):
            ids = [x[:max_len] for x in b["input_ids"]]
            return {"input_ids": ids, "labels": ids}

        return docs.map(trunc, batched=True, desc="truncating")

    return load_or_build(ctx, "pretrain", build)


def tokenize_chat(ctx, rows):
    """Chat rows → input_ids + labels (assistant tokens only unless --train_on_prompt)."""
    from lmforge.data.template import encode_chat_batch

    tok, cfg = ctx.tokenizer, ctx.cfg

    def encode(batch):
        items = [{"messages": m, "tools": t} for m, t in zip(batch["messages"], batch["tools"])]
        return encode_chat_batch(tok, items, max_length=cfg["max_length"],
                                 train_on_prompt=cfg["train_on_prompt"], enable_thinking=cfg["enable_thinking"])

    def build():
        ds = rows.map(encode, batched=True, remove_columns=rows.column_names, num_proc=_num_proc(ctx),
                      desc="tokenising")
        before = len(ds)
        ds = ds.filter(lambda b: [any(x != -100 for x in lab) for lab in b["labels"]], batched=True,
                       desc="dropping rows with no assistant tokens")
        ctx.stats["rows_without_targets"] = before - len(ds)
        if len(ds) == 0:
            raise LmforgeError(f"{cfg['dataset']}: no row has an assistant answer left within --max_length "
                               f"{cfg['max_length']}")
        return ds

    return load_or_build(ctx, "chat", build)


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
                    if ids[i:i + len(run)] == run:
                        for j in range(i, i + len(run)):
                            w[j] = weight
                        i += len(run) - 1
                        break
                i += 1
            out.append(w)
        return {"loss_weights": out}

    return ds.map(weigh, batched=True, desc="weighting markers")


class Collator:
    """Right-pads a batch: input_ids with the pad id, labels with −100, loss_weights with 0;
    builds attention_mask unless the rows are packed (position_ids present, all full length)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        fill = {"input_ids": self.pad_id, "labels": -100, "loss_weights": 0.0, "position_ids": 0}
        out: dict[str, Any] = {}
        for key, pad in fill.items():
            if key not in rows[0]:
                continue
            dtype = torch.float32 if key == "loss_weights" else torch.long
            out[key] = torch.tensor([list(r[key]) + [pad] * (width - len(r[key])) for r in rows], dtype=dtype)
        if "position_ids" not in out:
            out["attention_mask"] = torch.tensor(
                [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows], dtype=torch.long)
        return out
