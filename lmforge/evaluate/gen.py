"""`--task gen`: answer every prompt of a chat val set and score the answers against the reference
(the last assistant turn of each row) with ROUGE-L, BLEU-4 and exact match (metrics.py).

Rows in any chat format lmforge reads (MiniMind `conversations`, OpenAI `messages`, ShareGPT,
Alpaca); the prompt is every turn before the last assistant turn. Decoding is greedy unless the
generation flags say otherwise; a `<think>` part is not scored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.errors import DataError, LmforgeError
from lmforge.evaluate.metrics import generation_scores


def load_examples(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """[{"messages": prompt turns, "tools": ..., "reference": str, "where": file:line}]"""
    from lmforge.data.formats import to_canonical
    from lmforge.data.load import iter_raw_path

    if not Path(path).exists():
        raise LmforgeError(f"--dataset {path}: file not found")
    out = []
    for file, line, row in iter_raw_path(path, "chat"):
        if isinstance(row, DataError):
            raise row
        canon = to_canonical(row, "chat", path=file, line=line)
        msgs = canon["messages"]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        if not any(m["role"] == "user" for m in msgs[:last]):
            raise DataError(file, line, "messages", "need a user turn before the last assistant turn")
        out.append(
            {
                "messages": msgs[:last],
                "tools": canon.get("tools"),
                "reference": msgs[last]["content"],
                "where": f"{file}:{line}",
            }
        )
        if limit and len(out) >= limit:
            break
    if not out:
        raise LmforgeError(f"--dataset {path}: no rows")
    return out


def local_generator(engine, gen, batch_size: int = 8) -> Callable[[list[dict]], list[str]]:
    """Answers from a local Engine (rows with tools one by one, the rest batched)."""

    def generate(examples: list[dict]) -> list[str]:
        out: list[str | None] = [None] * len(examples)
        plain = [i for i, ex in enumerate(examples) if not ex.get("tools")]
        done = engine.generate_batch([examples[i]["messages"] for i in plain], gen, batch_size=batch_size)
        for i, completion in zip(plain, done):
            out[i] = completion.text
        for i, ex in enumerate(examples):
            if out[i] is None:
                out[i] = engine.chat(ex["messages"], gen, tools=ex["tools"]).text
        return out  # type: ignore[return-value]

    return generate


def evaluate_gen(generate: Callable[[list[dict]], list[str]], examples: list[dict]) -> dict[str, Any]:
    predictions = generate(examples)
    references = [ex["reference"] for ex in examples]
    result: dict[str, Any] = {"rows": len(examples), **generation_scores(predictions, references)}
    result["predictions"] = [
        {"where": ex["where"], "prediction": p, "reference": r}
        for ex, p, r in zip(examples, predictions, references)
    ]
    return result
