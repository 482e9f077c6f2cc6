"""Flags of `lmforge generate distill` and `lmforge generate qa` (MiniMind's API scripts' flags included).

`TeacherArgs` (where the teacher is, how it is called) is shared by both commands and can serve
any other command that talks to a teacher; `teacher_config` turns it into the client's
`TeacherConfig`. `--teacher_model` is another name for `--model` (`normalize_argv`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from lmforge.config.fields import arg
from lmforge.errors import LmforgeError
from lmforge.teacher.cache import default_cache_dir
from lmforge.teacher.client import TeacherConfig

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"  # MiniMind's default
MODES = ("answer_only", "reasoning")
EFFORTS = ("low", "medium", "high", "minimal", "none")


@dataclass
class TeacherArgs:
    """Where the teacher is and how it is called."""

    model: str | None = arg(None, "Teacher model name sent in each request (alias --teacher_model)")
    base_url: str = arg(
        DEFAULT_BASE_URL,
        "OpenAI-compatible endpoint; requests go to BASE_URL/chat/completions "
        "(lmforge serve / vLLM: http://127.0.0.1:8000/v1)",
    )
    api_key: str | None = arg(None, "Bearer key (default: $OPENAI_API_KEY; none for a local server)")
    concurrency: int = arg(8, "Requests in flight at once")
    rate_limit_delay: float = arg(
        0.0, "Seconds between request starts, over all requests (MiniMind: 0.5; 0 = no spacing)"
    )
    requests_per_minute: float | None = arg(None, "At most this many requests per minute (default: no limit)")
    max_retries: int = arg(
        5, "Retries of a request on HTTP 408/409/429/5xx, timeouts and dropped connections"
    )
    timeout: float = arg(120.0, "Seconds one request may take before it is retried")
    backoff_base: float = arg(
        1.0, "Retry n waits a random time in [0, min(backoff_max, backoff_base·2^n)] s (Retry-After wins)"
    )
    backoff_max: float = arg(30.0, "Longest wait between retries, seconds")
    cache_dir: str | None = arg(
        None,
        "Cache of answers keyed by the request, so a rerun never pays twice "
        "(default: $LMFORGE_CACHE_DIR/teacher, else ~/.cache/lmforge/teacher)",
    )
    no_cache: bool = arg(False, "Neither read nor write the answer cache")
    extra_body: str | None = arg(
        None, "JSON object merged into every request body, e.g. '{\"top_p\": 0.9}' or provider options"
    )
    price_prompt: float = arg(0.0, "Price per 1M prompt tokens, for the cost total")
    price_completion: float = arg(0.0, "Price per 1M completion tokens, for the cost total")


@dataclass
class GenerateArgs:
    """What is asked and where the rows go (both commands)."""

    output_file: str | None = arg(None, "JSONL file of SFT rows ({id, conversations}); required")
    mode: str = arg(
        "answer_only",
        "answer_only: the answer alone; reasoning: <think>\\nREASONING\\n</think>\\n\\nANSWER",
        choices=MODES,
    )
    temperature: float = arg(0.7, "Sampling temperature sent to the teacher")
    max_tokens: int = arg(2048, "Most tokens per answer (reasoning included)")
    reasoning_effort: str | None = arg(
        None, "Passed to the API as reasoning_effort: low, medium, high", choices=EFFORTS
    )
    seed: int | None = arg(None, "Sent as the request's seed (qa: seed + sample index)")
    no_resume: bool = arg(False, "Start over: delete the output and its progress files first")


@dataclass
class DistillArgs:
    """`generate distill`: questions from a chat dataset."""

    input_file: str | None = arg(
        None,
        "Chat rows (MiniMind conversations, OpenAI messages, ShareGPT, Alpaca, {prompt}; "
        ".jsonl/.json/.csv/.parquet); the question is every turn up to the last user turn",
    )
    max_samples: int | None = arg(None, "Use only the first N rows of --input_file")


@dataclass
class QAArgs:
    """`generate qa`: the teacher writes the questions too."""

    topic: str | None = arg(None, "What the questions are about; required")
    num_samples: int | None = arg(None, "Number of question/answer rows; required")
    difficulty: str = arg("medium", "easy, medium or hard", choices=("easy", "medium", "hard"))
    language: str = arg("zh", "Language of questions and answers: zh or en", choices=("zh", "en"))


QA_DEFAULTS = {"temperature": 0.8}  # MiniMind's generate_qa_pairs_from_api.py


def normalize_argv(argv: list[str]) -> list[str]:
    """`--teacher_model X` (also `--teacher-model=X`) → `--model X`."""
    out = []
    for tok in argv:
        head, sep, value = tok.partition("=")
        if head in ("--teacher_model", "--teacher-model"):
            tok = "--model" + sep + value
        out.append(tok)
    return out


def teacher_config(args: TeacherArgs) -> TeacherConfig:
    """The client configuration of these flags (the cache folder resolved)."""
    extra = None
    if args.extra_body:
        try:
            extra = json.loads(args.extra_body)
        except json.JSONDecodeError as e:
            raise LmforgeError(f"--extra_body: not valid JSON ({e.msg})") from None
        if not isinstance(extra, dict):
            raise LmforgeError('--extra_body: must be a JSON object, e.g. {"top_p": 0.9}')
    if not args.model:
        raise LmforgeError("--model is required: the teacher's model name (alias --teacher_model)")
    cfg = TeacherConfig(
        base_url=args.base_url,
        model=args.model,
        api_key=args.api_key,
        concurrency=args.concurrency,
        rate_limit_delay=args.rate_limit_delay,
        requests_per_minute=args.requests_per_minute,
        max_retries=args.max_retries,
        timeout=args.timeout,
        backoff_base=args.backoff_base,
        backoff_max=args.backoff_max,
        cache_dir=None if args.no_cache else os.path.expanduser(args.cache_dir or default_cache_dir()),
        price_prompt=args.price_prompt,
        price_completion=args.price_completion,
        extra_body=extra,
    )
    cfg.validate()
    return cfg
