"""Teacher answers as SFT targets for `train distill-api`: questions out of chat rows, answers in
through `lmforge.teacher.TeacherClient` (concurrent, rate-limited, retried, cached on disk), and
the training rows built from them.

A row's question is its conversation up to and including its last user turn (system prompt and
earlier turns kept); its own later assistant turn(s) are dropped. The training row is the question
plus one assistant turn holding the teacher's answer (and, in reasoning mode, the teacher's
reasoning as `reasoning_content`, which the chat template renders inside `<think>...</think>`),
tokenised by the student's chat template with the loss on that last turn only (`tokenize_answers`:
earlier assistant turns of a multi-turn question stay as context, unlabelled). Under DDP only rank
0 talks to the teacher and broadcasts the answers, so every rank trains on the same rows and
nothing is paid twice.

Nothing here calls the network by itself: `TeacherClient` does (lmforge/teacher/).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.data.template import IGNORE_INDEX
from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")

FAILURES_FILE = "teacher_failures.jsonl"
STAT_FIELDS = ("requests", "cache_hits", "retries", "prompt_tokens", "completion_tokens", "cost")


@dataclass
class Answer:
    """What training needs from one teacher result (plain data: broadcast between ranks)."""

    content: str | None
    reasoning: str | None
    error: str | None
    finish_reason: str | None = None


def question_of(messages: list[dict], index: int) -> list[dict]:
    """The conversation up to and including its last user turn (canonical messages, unchanged)."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is None:
        raise LmforgeError(
            f"row {index}: distill-api needs a user turn to ask the teacher; this row has none"
        )
    return [dict(m) for m in messages[: last_user + 1]]


def _openai_message(message: dict) -> dict:
    """A canonical message as the OpenAI chat API takes it: None fields dropped, tool_calls parsed.
    Earlier turns' reasoning is not sent back (OpenAI and DeepSeek reject or ignore it)."""
    out = {"role": message["role"], "content": message.get("content") or ""}
    calls = message.get("tool_calls")
    if calls:
        try:
            parsed = json.loads(calls) if isinstance(calls, str) else calls
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            parsed = [parsed]
        if isinstance(parsed, list):
            out["tool_calls"] = [
                c if "function" in c else {"type": "function", "function": c} for c in parsed
            ]
    return out


def build_request(question: list[dict], tools: Any, cfg) -> dict:
    """One chat-completions request for `question` with the stage's sampling flags."""
    request: dict[str, Any] = {
        "messages": [_openai_message(m) for m in question],
        "temperature": cfg["api_temperature"],
        "max_tokens": cfg["api_max_tokens"],
    }
    if cfg.get("reasoning_effort"):
        request["reasoning_effort"] = cfg["reasoning_effort"]
    if tools:  # canonical rows hold the specs as JSON text (checked when the data was loaded)
        parsed = json.loads(tools) if isinstance(tools, str) else tools
        request["tools"] = parsed if isinstance(parsed, list) else [parsed]
    return request


def teacher_config(cfg):
    """`TeacherConfig` from the stage flags (api_key None: the client reads $OPENAI_API_KEY)."""
    from lmforge.teacher.client import TeacherConfig

    if not cfg.get("teacher_model"):
        raise LmforgeError(
            "train distill-api: --teacher_model is required (the model name the --base_url endpoint serves)"
        )
    if not cfg.get("base_url"):
        raise LmforgeError("train distill-api: --base_url is required (an OpenAI-compatible /v1 endpoint)")
    return TeacherConfig(
        base_url=cfg["base_url"],
        model=cfg["teacher_model"],
        api_key=cfg.get("api_key"),
        concurrency=cfg["concurrency"],
        rate_limit_delay=cfg["rate_limit_delay"],
        requests_per_minute=cfg.get("requests_per_minute"),
        max_retries=cfg["max_retries"],
        timeout=cfg["timeout"],
        cache_dir=cache_dir(cfg),
        price_prompt=cfg["price_prompt"],
        price_completion=cfg["price_completion"],
    )


def cache_dir(cfg) -> str | None:
    """`--teacher_cache_dir`: the teacher package's default when unset, off for `none`."""
    value = cfg.get("teacher_cache_dir")
    if value is None:
        from lmforge.teacher.cache import default_cache_dir

        value = default_cache_dir()
    if str(value).lower() in ("none", "off", ""):
        return None
    return os.path.expanduser(str(value))


def fetch_answers(cfg, requests: list[dict]) -> tuple[list[Answer], dict[str, Any]]:
    """Ask the teacher every request (rank 0 only under DDP); answers in input order + usage totals."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _fetch(cfg, requests)
    from datetime import timedelta

    import torch.distributed as dist
    from accelerate import PartialState

    # The process group TrainingArguments would make (and then reuses). Like any preprocessing on
    # the main process, a fetch longer than --ddp_timeout needs a larger one (or a warm cache).
    state = PartialState(
        cpu=str(cfg.get("device") or "").startswith("cpu"),
        backend=cfg.get("ddp_backend"),
        timeout=timedelta(seconds=cfg.get("ddp_timeout") or 1800),
    )
    if state.num_processes <= 1:
        return _fetch(cfg, requests)
    box: list[Any] = [None]
    if state.is_main_process:
        try:
            box[0] = _fetch(cfg, requests)
        except Exception as e:  # every rank raises it, none waits forever for the answers
            box[0] = e
    dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], Exception):
        raise box[0]
    return box[0]


def _fetch(cfg, requests: list[dict]) -> tuple[list[Answer], dict[str, Any]]:
    from lmforge.teacher.client import TeacherClient

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one INFO line per request
    with TeacherClient(teacher_config(cfg)) as client:
        return _ask(client, requests)


def _ask(client, requests: list[dict]) -> tuple[list[Answer], dict[str, Any]]:
    total = len(requests)
    every = max(100, total // 10)  # progress at each tenth of a long fetch
    done = 0

    def progress(_index: int, _result) -> None:
        nonlocal done
        done += 1
        if done % every == 0:
            s = client.stats
            log.info(
                "teacher: %d/%d answers (requests %d, cache hits %d, failures %d)",
                done,
                total,
                s.requests,
                s.cache_hits,
                s.failures,
            )

    results = client.complete_many(requests, on_result=progress)
    answers = [
        Answer(
            r.content, r.reasoning, None if r.ok else " ".join((r.error or "failed").split()), r.finish_reason
        )
        for r in results
    ]
    stats = {name: getattr(client.stats, name) for name in STAT_FIELDS}
    log.info("teacher usage: %s", client.stats.summary())
    return answers, stats


def check_answer(answer: Answer) -> str | None:
    """Why `answer` cannot be a training target (None: it can)."""
    if answer.error:
        return answer.error
    if not (answer.content or "").strip():
        return f"empty answer from the teacher (finish_reason {answer.finish_reason}); nothing to learn"
    return None


def training_message(answer: Answer, mode: str) -> dict:
    """The assistant turn the student learns: the answer, plus the reasoning in reasoning mode."""
    reasoning = answer.reasoning if mode == "reasoning" and (answer.reasoning or "").strip() else None
    return {
        "role": "assistant",
        "content": answer.content,
        "reasoning_content": reasoning,
        "tool_calls": None,
    }


def training_rows(
    questions: list[list[dict]], tools: list, answers: list[Answer], mode: str, split: str
) -> tuple[list[dict], list[dict], dict[str, int]]:
    """(chat rows to train on, failure records, counts of answers cut short / without reasoning)."""
    kept, failures = [], []
    counts = {"answers_cut_at_max_tokens": 0, "answers_without_reasoning": 0}
    for i, (question, answer) in enumerate(zip(questions, answers)):
        why = check_answer(answer)
        if why:
            failures.append(failure_record(i, split, question, why))
            continue
        message = training_message(answer, mode)
        counts["answers_cut_at_max_tokens"] += answer.finish_reason == "length"
        counts["answers_without_reasoning"] += mode == "reasoning" and not message["reasoning_content"]
        kept.append({"messages": [*question, message], "tools": tools[i]})
    return kept, failures, counts


def write_failures(path: Path, failures: list[dict], append: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for row in failures:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def failure_record(index: int, split: str, question: list[dict], error: str) -> dict:
    asked = next((m.get("content") or "" for m in reversed(question) if m.get("role") == "user"), "")
    return {"split": split, "row": index, "error": error, "question": asked[:200]}


def last_run_only(labels: list[int]) -> list[int]:
    """Labels with only their last run of trained tokens kept (the final assistant turn)."""
    end = len(labels)
    while end and labels[end - 1] == IGNORE_INDEX:
        end -= 1
    start = end
    while start and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    return [IGNORE_INDEX] * start + labels[start:end] + [IGNORE_INDEX] * (len(labels) - end)


def tokenize_answers(ctx, rows):
    """`tokenize_chat` with only the last assistant turn (the teacher's answer) labelled: earlier
    assistant turns of a multi-turn question are context written by the dataset, not targets.
    Rows are encoded whole, masked, then cut at --max_length, so a cut can never make an earlier
    turn the labelled one; rows whose answer is cut away entirely are dropped and counted."""
    from lmforge.data.chat import encode_chat_batch

    tok, cfg = ctx.tokenizer, ctx.cfg
    max_len = cfg["max_length"]

    def encode(batch):
        items = [{"messages": m, "tools": t} for m, t in zip(batch["messages"], batch["tools"])]
        out = encode_chat_batch(
            tok, items, train_on_prompt=cfg["train_on_prompt"], enable_thinking=cfg["enable_thinking"]
        )
        if not cfg["train_on_prompt"]:
            out["labels"] = [last_run_only(labels) for labels in out["labels"]]
        return {k: [x[:max_len] for x in v] for k, v in out.items()}

    ds = rows.map(encode, batched=True, remove_columns=list(rows.column_names), desc="tokenising")
    before = len(ds)
    ds = ds.filter(lambda b: [any(x != IGNORE_INDEX for x in lab) for lab in b["labels"]], batched=True)
    ctx.stats["rows_without_targets"] = ctx.stats.get("rows_without_targets", 0) + before - len(ds)
    if len(ds) == 0:
        raise LmforgeError(f"{cfg['dataset']}: no teacher answer starts within --max_length {max_len}")
    if cfg["packing"]:
        from lmforge.data.packing import pack_documents

        ds, ctx.stats["packing"] = pack_documents(ds, max_len, pad_id=tok.pad_token_id)
    return ds
