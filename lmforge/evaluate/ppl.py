"""`--task ppl`: loss, perplexity and bits per byte of a model on text (.txt lines, or .jsonl /
.json / .csv / .parquet rows with a `text` column, `--text_column` for another).

Each document is encoded as in pretraining (`<|im_start|>` + text + `<|im_end|>`, data/template.py
`encode_text`). Documents longer than `--max_length` are read in windows that overlap by one token,
so every token after the first is predicted exactly once. Reported: `tokens` (predicted tokens),
`loss` (mean negative log-likelihood in nats), `perplexity` = exp(loss), and `bits_per_byte` = total
NLL / ln 2 / UTF-8 bytes of the documents' text, which compares models with different tokenizers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lmforge.errors import DataError, LmforgeError


def load_texts(path: str, text_column: str | None = None, limit: int | None = None) -> list[str]:
    from lmforge.data.formats import to_canonical
    from lmforge.data.load import iter_raw_path

    if not Path(path).exists():
        raise LmforgeError(f"--dataset {path}: file not found")
    texts: list[str] = []
    for file, line, row in iter_raw_path(path, "pretrain"):
        if isinstance(row, DataError):
            raise row
        texts.append(
            to_canonical(row, "pretrain", "text", path=file, line=line, text_column=text_column)["text"]
        )
        if limit and len(texts) >= limit:
            break
    if not texts:
        raise LmforgeError(f"--dataset {path}: no text rows")
    return texts


def windows(ids: list[int], max_length: int) -> list[list[int]]:
    """Slices of at most `max_length` tokens overlapping by one: each token after the first is a
    prediction target in exactly one window."""
    step = max(1, max_length - 1)
    return [ids[s : s + max_length] for s in range(0, max(1, len(ids) - 1), step)]


def nll_sums(engine, seqs: list[list[int]], batch_size: int) -> tuple[float, int]:
    """(sum of next-token NLL in nats, number of predicted tokens) over right-padded batches."""
    import torch

    total, count = 0.0, 0
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), engine.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, s in enumerate(chunk):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        with torch.inference_mode():
            logits = engine.model(
                input_ids=ids.to(engine.device), attention_mask=mask.to(engine.device)
            ).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).cpu()  # (B, T-1, V)
        target = ids[:, 1:]
        picked = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
        keep = mask[:, 1:].bool()
        total -= float(picked[keep].double().sum())
        count += int(keep.sum())
    return total, count


def perplexity(
    engine, texts: list[str], max_length: int | None = None, batch_size: int = 8
) -> dict[str, Any]:
    from lmforge.data.template import encode_text

    limit = min(max_length or 1024, engine.context_length)
    if limit < 2:
        raise LmforgeError(f"--max_length {max_length}: must be at least 2")
    seqs = [w for ids in encode_text(engine.tokenizer, texts) for w in windows(ids, limit)]
    seqs.sort(key=len)  # similar lengths together: less padding
    total, count = nll_sums(engine, seqs, max(1, batch_size))
    num_bytes = sum(len(t.encode("utf-8")) for t in texts)
    loss = total / max(1, count)
    return {
        "documents": len(texts),
        "tokens": count,
        "bytes": num_bytes,
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": total / math.log(2) / max(1, num_bytes),
    }
