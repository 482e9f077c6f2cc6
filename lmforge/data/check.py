"""`lmforge data check`: validate a dataset against a stage's format and summarise it.

The report counts rows, rows per detected format, rows with images / videos (vision datasets) and
bad rows (with their one-line messages, file:line: a placeholder count that does not match the
`images` list, an unreadable image), and, given a tokenizer, a token-length histogram (printed, and as a PNG with
`plot_histogram`) and which rows exceed `max_length` (1-based positions in the loaded data).
Rows are rendered by lmforge's chat renderer (data/chat.py) in the tokenizer's template (`--template`
to choose one), so the lengths are the ones training will see; the first row is shown as the model
learns it, with the trained tokens between ⟦ and ⟧.
"""

from __future__ import annotations

import os
from typing import Any

from lmforge.data.load import load_rows

_MAX_LISTED = 10


def _render(messages: list[dict], tokenizer: Any, tools: Any = None) -> str:
    from lmforge.data.chat import render

    return render(tokenizer, messages, tools)


def marked_row(row: dict, kind: str, tokenizer: Any) -> str | None:
    """The row's training text with its trained tokens between ⟦ and ⟧ (chat / preference / KTO)."""
    from lmforge.data.chat import IGNORE_INDEX, encode_chat_batch, encode_completion

    if kind == "chat":
        enc = encode_chat_batch(tokenizer, [row])
        ids, labels = enc["input_ids"][0], enc["labels"][0]
    elif kind in ("preference", "kto"):
        prompt, answer = encode_completion(
            tokenizer, row["prompt"], row["chosen" if kind == "preference" else "completion"]
        )
        ids, labels = prompt + answer, [IGNORE_INDEX] * len(prompt) + answer
    else:
        return None
    out, start = [], 0
    for k in range(1, len(ids) + 1):
        if k == len(ids) or (labels[k] == IGNORE_INDEX) != (labels[start] == IGNORE_INDEX):
            text = tokenizer.decode(ids[start:k])
            out.append(text if labels[start] == IGNORE_INDEX else f"⟦{text}⟧")
            start = k
    return "".join(out)


def _texts(row: dict, kind: str, tokenizer: Any) -> list[str]:
    """The sequence(s) a row becomes; preference/KTO rows give one per side."""
    if kind == "pretrain":
        return [row["text"]]
    if kind == "chat":
        return [_render(row["messages"], tokenizer, row.get("tools"))]
    if kind == "preference":
        return [_render(row["prompt"] + row[side], tokenizer) for side in ("chosen", "rejected")]
    if kind == "kto":
        return [_render(row["prompt"] + row["completion"], tokenizer)]
    return [_render(row["prompt"], tokenizer)]


def _histogram(lengths: list[int]) -> list[tuple[int, int, int]]:
    """(low, high, count) buckets with power-of-two edges from 32 up to the longest row."""
    edges = [0, 32]
    while edges[-1] < max(lengths):
        edges.append(edges[-1] * 2)
    counts = [0] * (len(edges) - 1)
    for n in lengths:
        i = next(j for j in range(len(edges) - 1) if n <= edges[j + 1])
        counts[i] += 1
    return [(edges[i], edges[i + 1], c) for i, c in enumerate(counts)]


def check_dataset(
    spec: str,
    kind: str,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    batch_size: int = 1000,
    **load_kwargs: Any,
) -> dict:
    """Load `spec` with bad rows skipped and counted; return the report dict (see `format_report`)."""
    load_kwargs.setdefault("skip_bad_rows", True)
    load_kwargs.setdefault("allow_empty", True)  # the report lists the bad rows; the CLI then refuses
    ds, stats = load_rows(spec, kind, **load_kwargs)
    report: dict[str, Any] = {
        "spec": spec,
        "kind": kind,
        "num_rows": len(ds),
        "num_bad": stats.num_bad,
        "bad_rows": list(stats.bad_examples),
        "formats": dict(stats.formats),
    }
    if "images" in ds.column_names:  # a vision dataset: how many rows show images / videos
        report["media"] = {k: getattr(stats, k) for k in ("image_rows", "images", "video_rows", "videos")}
    if tokenizer is None or len(ds) == 0:
        return report
    if hasattr(tokenizer, "decode"):
        report["first_row"] = marked_row(ds[0], kind, tokenizer)
    lengths: list[int] = []
    for start in range(0, len(ds), batch_size):
        rows = ds.select(range(start, min(start + batch_size, len(ds))))
        texts = [t for row in rows for t in _texts(row, kind, tokenizer)]
        per_side = len(texts) // len(rows)
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        for i in range(len(rows)):  # a preference row is as long as its longer side
            lengths.append(max(len(e) for e in encoded[i * per_side : (i + 1) * per_side]))
    report["lengths"] = {
        "min": min(lengths),
        "max": max(lengths),
        "mean": sum(lengths) / len(lengths),
        "p95": sorted(lengths)[int(0.95 * (len(lengths) - 1))],
        "histogram": _histogram(lengths),
    }
    if max_length:
        over = [i + 1 for i, n in enumerate(lengths) if n > max_length]
        report["max_length"] = max_length
        report["num_over_max_length"] = len(over)
        report["over_max_length_rows"] = over[:_MAX_LISTED]
    report["token_lengths"] = lengths
    return report


def plot_histogram(report: dict, path: str) -> str:
    """Write the token-length histogram (and the max_length line) as a PNG; returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = report.get("token_lengths")
    if not lengths:
        raise ValueError("the report has no token lengths (no tokenizer, or no rows)")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(lengths, bins=min(50, max(5, len(set(lengths)))), color="#4477aa")
    if report.get("max_length"):
        ax.axvline(report["max_length"], color="#cc3311", linestyle="--", label="max_length")
        ax.legend()
    ax.set_xlabel("tokens per row")
    ax.set_ylabel("rows")
    ax.set_title(f"{os.path.basename(str(report['spec']))} ({report['kind']}, {len(lengths)} rows)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def format_report(report: dict) -> str:
    """The report as the few aligned lines `lmforge data check` prints."""
    lines = [f"{report['spec']}  ({report['kind']})"]
    formats = ", ".join(f"{name} {count}" for name, count in sorted(report["formats"].items())) or "-"
    lines.append(f"  rows: {report['num_rows']}   bad: {report['num_bad']}   formats: {formats}")
    media = report.get("media")
    if media:
        lines.append(
            f"  rows with images: {media['image_rows']} ({media['images']} images)   "
            f"rows with videos: {media['video_rows']} ({media['videos']} videos)"
        )
    for msg in report["bad_rows"]:
        lines.append(f"  bad: {msg}")
    if report["num_bad"] > len(report["bad_rows"]):
        lines.append(f"  ... and {report['num_bad'] - len(report['bad_rows'])} more bad rows")
    lengths = report.get("lengths")
    if lengths:
        lines.append(
            f"  tokens per row: min {lengths['min']}  mean {lengths['mean']:.1f}  "
            f"p95 {lengths['p95']}  max {lengths['max']}"
        )
        width = max(c for _, _, c in lengths["histogram"]) or 1
        for low, high, count in lengths["histogram"]:
            bar = "#" * round(40 * count / width)
            lines.append(f"  {low:>7}-{high:<7} {count:>9}  {bar}")
    if report.get("first_row"):
        lines.append("  first row as trained (⟦...⟧ = tokens with loss):")
        lines.extend("    " + line for line in report["first_row"].splitlines())
    if "num_over_max_length" in report:
        lines.append(f"  over max_length {report['max_length']}: {report['num_over_max_length']} rows")
        listed = report.get("over_max_length_rows") or []
        if listed:
            more = report["num_over_max_length"] - len(listed)
            tail = f" and {more} more" if more > 0 else ""
            lines.append(
                f"  rows over max_length (truncated in training): {', '.join(map(str, listed))}{tail}"
            )
    return "\n".join(lines)
