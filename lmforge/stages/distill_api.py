"""Online distillation from an OpenAI-compatible teacher (MiniMind's train_distill_api).

Every prompt of the chat dataset is sent to `--teacher_model` at `--base_url`; the teacher's answer
(with `--distill_mode reasoning`, also its reasoning, inside `<think>...</think>`) becomes the
assistant turn the student learns, under the student's own chat template, loss on that turn only.
The dataset's own assistant answers are ignored: a row's question is its conversation up to its
last user turn (system prompt and earlier turns kept).

Answers are cached on disk (`--teacher_cache_dir`), so a second epoch, a resumed run or a rerun
never pays for a prompt twice. Failed calls are retried (`--max_retries`, backoff on 429/5xx/
timeouts); what still fails is listed in RUN/teacher_failures.jsonl and the run stops, unless
`--skip_failed_teacher true` trains on the rest (the count goes into the model card).

All prompts are asked before step 1 (`--concurrency` at a time), not batch by batch as MiniMind
does: training never waits on the network, failures are known before any compute is spent, the
rows are then ordinary SFT features (packing, `--tokenized_path`, exact resume all apply), and
epochs 2+ cost nothing even without the cache. The price is that step 1 waits for the last answer.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from lmforge.config.fields import arg
from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")

DATA_KIND = "chat"

DEFAULTS = {
    "learning_rate": 5e-6,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_length": 512,
    "packing": False,
    "model_name_or_path": "full_sft",
}


@dataclass
class Args:
    teacher_model: str | None = arg(None, "Teacher model name sent to --base_url (required)")
    base_url: str = arg("https://openrouter.ai/api/v1", "OpenAI-compatible endpoint of the teacher (…/v1)")
    api_key: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Teacher API key (default: $OPENAI_API_KEY); never written to the run folder",
            "secret": True,
        },
    )
    api_temperature: float = arg(0.7, "Teacher sampling temperature")
    api_max_tokens: int = arg(2048, "Longest teacher answer in tokens (reasoning included)")
    reasoning_effort: str | None = arg(
        None,
        "Sent as the request's reasoning_effort (models that take it)",
        choices=("low", "medium", "high", "minimal", "none"),
    )
    distill_mode: str = arg(
        "text_distill",
        "text_distill: learn the teacher's answer; reasoning: also its reasoning, inside <think>",
        choices=("text_distill", "reasoning"),
    )
    concurrency: int = arg(8, "Teacher requests in flight at once")
    rate_limit_delay: float = arg(0.0, "Seconds between the starts of two teacher requests")
    requests_per_minute: float | None = arg(None, "Cap on teacher requests per minute (default: none)")
    max_retries: int = arg(5, "Retries of a teacher request on 429, 5xx, timeouts and connection errors")
    timeout: float = arg(120.0, "Seconds one teacher request may take")
    teacher_cache_dir: str | None = arg(
        None,
        "Cache of teacher answers keyed by the request (default: $LMFORGE_CACHE_DIR/teacher, else "
        "~/.cache/lmforge/teacher; none: off)",
    )
    price_prompt: float = arg(0.0, "Teacher price per 1M prompt tokens, for the cost total")
    price_completion: float = arg(0.0, "Teacher price per 1M completion tokens, for the cost total")
    skip_failed_teacher: bool = arg(
        False, "Train without the prompts the teacher still failed on after retries (default: stop)"
    )


# The flags that change the training rows (the --tokenized_path fingerprint). The others only change
# how answers are fetched; the URL is left out as in the teacher cache's key (a model name is the
# same teacher wherever it is served), the API key so that it is never written to disk.
FEATURE_KEYS = (
    "teacher_model",
    "api_temperature",
    "api_max_tokens",
    "reasoning_effort",
    "distill_mode",
    "skip_failed_teacher",
)


def validate(cfg) -> None:
    from lmforge.training.distill_api import teacher_config

    teacher_config(cfg)  # --teacher_model and --base_url are required
    for flag in ("concurrency", "api_max_tokens"):
        if cfg[flag] < 1:
            raise LmforgeError(f"--{flag} must be >= 1; got {cfg[flag]}")
    if cfg["max_retries"] < 0 or cfg["timeout"] <= 0:
        raise LmforgeError("--max_retries must be >= 0 and --timeout > 0")


def trainer_config(cfg):
    return None, {}


def prepare(ctx, rows):
    import datasets

    from lmforge.data.tokenize import is_streamed
    from lmforge.training import distill_api as api

    cfg = ctx.cfg
    if is_streamed(rows):
        raise LmforgeError(
            "train distill-api: --streaming is not supported (every prompt is asked before step 1)"
        )
    split = "validation" if "teacher_prompts" in ctx.stats else "train"  # the pipeline prepares train first
    questions = [api.question_of(m, i) for i, m in enumerate(rows["messages"])]
    tools = rows["tools"] if "tools" in rows.column_names else [None] * len(rows)
    requests = [api.build_request(q, t, cfg) for q, t in zip(questions, tools)]
    log.info("teacher %s: asking %d %s prompts", cfg["teacher_model"], len(requests), split)
    answers, usage = api.fetch_answers(cfg, requests)
    kept, failures, counts = api.training_rows(questions, tools, answers, cfg["distill_mode"], split)
    _add_stats(ctx, {"teacher_prompts": len(requests), **{f"teacher_{k}": v for k, v in usage.items()}})
    _add_stats(ctx, {f"teacher_{k}": v for k, v in counts.items() if v})
    if counts["answers_cut_at_max_tokens"]:
        log.warning(
            "%d teacher answers stopped at --api_max_tokens %d; they are trained as they are",
            counts["answers_cut_at_max_tokens"],
            cfg["api_max_tokens"],
        )
    if counts["answers_without_reasoning"]:
        log.warning(
            "--distill_mode reasoning: %d teacher answers came without reasoning (trained without <think>)",
            counts["answers_without_reasoning"],
        )
    _report_failures(ctx, split, failures, len(requests))
    features = datasets.Features({k: rows.features[k] for k in ("messages", "tools") if k in rows.features})
    return api.tokenize_answers(ctx, datasets.Dataset.from_list(kept, features=features))


def _report_failures(ctx, split: str, failures: list[dict], total: int) -> None:
    """List failures in RUN/teacher_failures.jsonl; stop unless --skip_failed_teacher."""
    from lmforge.training.distill_api import FAILURES_FILE, write_failures

    cfg = ctx.cfg
    path = Path(ctx.run_dir or cfg.get("tokenized_path") or ".", FAILURES_FILE)
    if int(os.environ.get("RANK", "0")) == 0:
        if failures:
            write_failures(path, failures, append=split != "train")
        elif split == "train" and path.is_file():
            path.unlink()  # from an earlier attempt whose failures have now been answered
    if not failures:
        return
    _add_stats(ctx, {"teacher_failed_rows": len(failures)})
    first = f"first: row {failures[0]['row']}: {failures[0]['error']}"
    if len(failures) == total or not cfg["skip_failed_teacher"]:
        hint = (
            "nothing to train on"
            if len(failures) == total and cfg["skip_failed_teacher"]
            else "rerun to ask only those again (answers are cached) or pass --skip_failed_teacher true"
        )
        raise LmforgeError(
            f"{path}: the teacher failed on {len(failures)} of {total} {split} prompts after "
            f"--max_retries {cfg['max_retries']} ({first}); {hint}"
        )
    log.warning(
        "--skip_failed_teacher: training without %d of %d %s prompts (%s; all in %s)",
        len(failures),
        total,
        split,
        first,
        path,
    )


def _add_stats(ctx, values: dict) -> None:
    for key, value in values.items():
        ctx.stats[key] = ctx.stats.get(key, 0) + value


def build_trainer(ctx):
    from lmforge.training.build import default_trainer

    return default_trainer(ctx)
