"""`generate distill` and `generate qa`: SFT datasets written by an OpenAI-compatible teacher.

distill: every row of `--input_file` (any chat format lmforge reads) gives a question, the
conversation up to its last user turn (system prompt kept); the teacher's answer becomes the
final assistant turn. qa: for sample i the teacher first writes a question on `--topic` (the
prompt names a different facet per index, so questions differ), then answers it.

Rows are MiniMind SFT rows plus their id, `{"id", "conversations": [..., {"role": "assistant",
"content": ANSWER}]}`; in `--mode reasoning` the content is `<think>\\nREASONING\\n</think>\\n\\n
ANSWER`, the layout lmforge's chat template renders from `reasoning_content`. An answer that comes
back empty is a failure, not a row. Ids are the input's `id` field when it has one, else the row's
index (qa: the sample index); store.py keeps the output exact across kills and reruns, failures
go to OUTPUT.failed and make the command exit non-zero. MiniMind's scripts send one request at a
time, never retry, and resume by counting output lines; the flags are theirs, the behaviour is not.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lmforge.data.formats import detect_format, to_canonical
from lmforge.data.load import iter_raw
from lmforge.data.template import EMPTY_THINK
from lmforge.errors import DataError, LmforgeError
from lmforge.teacher.args import DistillArgs, GenerateArgs, QAArgs, TeacherArgs, teacher_config
from lmforge.teacher.client import TeacherClient, TeacherResult
from lmforge.teacher.store import RowStore, question_hash, row_key

log = logging.getLogger("lmforge")

FATAL_HINT = "check --base_url, --model and --api_key (or $OPENAI_API_KEY)"


@dataclass
class GenerateReport:
    """What a run did; `failed` lists (id, error) of the rows that have no answer."""

    output_file: str
    num_rows: int
    num_new: int
    num_resumed: int
    failed: list[tuple[Any, str]]
    failed_file: str
    stats: dict[str, Any] = field(default_factory=dict)
    client_summary: str = ""

    def summary(self) -> str:
        s = self.stats
        extra = []
        if s.get("truncated"):
            extra.append(f"{s['truncated']} cut at --max_tokens")
        if s.get("no_reasoning"):
            extra.append(f"{s['no_reasoning']} without reasoning")
        note = f" ({', '.join(extra)})" if extra else ""
        return (
            f"{self.num_rows} rows in {self.output_file}: {self.num_new} new, {self.num_resumed} resumed"
            f"{note}; teacher: {self.client_summary}"
        )


# ---------------------------------------------------------------------------------------------
# rows


def plain_messages(messages: list[dict]) -> list[dict]:
    """Messages as sent to the teacher and written to the row: role and content."""
    return [{"role": m["role"], "content": m["content"] or ""} for m in messages]


def assistant_text(result: TeacherResult, mode: str) -> str:
    if mode == "reasoning":
        reasoning = (result.reasoning or "").strip()
        if not reasoning:
            return EMPTY_THINK + result.content
        return f"<think>\n{reasoning}\n</think>\n\n{result.content}"
    return result.content


def _answer_error(result: TeacherResult) -> str | None:
    if not result.ok:
        return result.error or "failed"
    if not (result.content or "").strip():
        return f"the teacher's answer is empty (finish_reason {result.finish_reason})"
    return None


# ---------------------------------------------------------------------------------------------
# distill input


def _question(row: dict, path: str, line: int) -> list[dict]:
    """The conversation up to the last user turn of a chat row in any format lmforge reads."""
    fmt = detect_format(row, "prompt")
    if fmt:
        return to_canonical(row, "prompt", fmt, path=path, line=line)["prompt"]
    fmt = detect_format(row, "chat")
    if fmt not in ("alpaca", "csv"):
        keys = "[" + ", ".join(list(row)[:8]) + "]"
        raise DataError(
            path,
            line,
            "row",
            "has no question (expected conversations, messages, prompt, instruction or user_prompt)",
            f"keys {keys}",
        )
    target = "output" if fmt == "alpaca" else "prediction"
    # the answer is the teacher's to write: a placeholder lets the chat reader check the rest
    msgs = to_canonical({**row, target: row.get(target) or "-"}, "chat", fmt, path=path, line=line)[
        "messages"
    ]
    last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    return msgs[: last_user + 1]


def _row_id(row: dict, index: int, path: str, line: int) -> Any:
    if "id" not in row or row["id"] is None:
        return index
    value = row["id"]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(path, line, "id", "must be a string or an integer", type(value).__name__)
    return value


def iter_questions(path: str, max_samples: int | None) -> Iterator[tuple[int, Any, list[dict]]]:
    """(line, id, question messages) of the first `max_samples` rows of `path`."""
    if not os.path.isfile(path):
        raise LmforgeError(f"--input_file {path}: file not found")
    count = 0
    for line, row in iter_raw(path, "chat"):
        if max_samples is not None and count >= max_samples:
            return
        if isinstance(row, DataError):
            raise row
        yield line, _row_id(row, count, path, line), plain_messages(_question(row, path, line))
        count += 1


def _plan(path: str, max_samples: int | None) -> tuple[list[str], dict[str, str]]:
    """Read the input once (no API call yet): row keys in order, their question hashes; a bad
    row or a repeated id stops here, before anything is paid for."""
    keys, questions, lines = [], {}, {}
    for line, row_id, msgs in iter_questions(path, max_samples):
        key = row_key(row_id)
        if key in lines:
            raise DataError(path, line, "id", f"must be unique ({row_id!r} is also on line {lines[key]})")
        lines[key] = line
        keys.append(key)
        questions[key] = question_hash(msgs)
    if not keys:
        raise LmforgeError(f"--input_file {path}: no rows")
    return keys, questions


# ---------------------------------------------------------------------------------------------
# the run


class _Run:
    """Shared by both commands: client, store, progress bar, counters."""

    def __init__(self, teacher: TeacherArgs, gen: GenerateArgs, keys: list[str], questions, settings):
        if not gen.output_file:
            raise LmforgeError("--output_file is required (where the generated rows go)")
        if gen.max_tokens < 1:
            raise LmforgeError(f"--max_tokens {gen.max_tokens}: must be at least 1")
        self.gen = gen
        self.client = TeacherClient(teacher_config(teacher))
        self.chunk = max(64, 8 * self.client.cfg.concurrency)
        self.store = RowStore(gen.output_file, keys, questions)
        try:
            self.store.open(resume=not gen.no_resume, settings=settings)
        except BaseException:
            self.store.release()
            self.client.close()
            raise
        self.counts = {"truncated": 0, "no_reasoning": 0}
        self.bar = _progress(len(keys), self.store.num_resumed)

    def params(self, **extra: Any) -> dict[str, Any]:
        gen = self.gen
        return {
            "temperature": gen.temperature,
            "max_tokens": gen.max_tokens,
            "reasoning_effort": gen.reasoning_effort,
            **extra,
        }

    def finish_row(self, key: str, question: list[dict], result: TeacherResult) -> None:
        error = _answer_error(result)
        if error:
            self.store.fail(key, error, result.attempts)
        else:
            self.counts["truncated"] += result.finish_reason == "length"
            self.counts["no_reasoning"] += (
                self.gen.mode == "reasoning" and not (result.reasoning or "").strip()
            )
            content = assistant_text(result, self.gen.mode)
            row = {
                "id": json.loads(key),
                "conversations": [*question, {"role": "assistant", "content": content}],
            }
            self.store.add(key, row)
        if self.bar is not None:
            self.bar.update(1)

    def check_fatal(self) -> None:
        if self.client.fatal:
            raise LmforgeError(f"the teacher refused: {self.client.fatal}; {FATAL_HINT}")

    def report(self) -> GenerateReport:
        store = self.store
        stats = {"rows": store.num_rows, "new": store.num_new, "resumed": store.num_resumed}
        stats.update(self.counts, failed=len(store.failed), teacher=self.client.stats.as_dict())
        store.finish({"totals": stats})
        failed = [(json.loads(k), store.failed[k][0]) for k in store.keys if k in store.failed]
        return GenerateReport(
            self.gen.output_file,
            store.num_rows,
            store.num_new,
            store.num_resumed,
            failed,
            str(store.paths["failed"]),
            stats,
            self.client.stats.summary(),
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.client.close()
        self.store.release()


def _progress(total: int, done: int):
    if logging.getLogger("lmforge").getEffectiveLevel() > logging.INFO:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=done, desc="generate", unit="row", dynamic_ncols=True)


def _settings(command: str, teacher: TeacherArgs, gen: GenerateArgs, **more: Any) -> dict[str, Any]:
    """What shapes the rows: a rerun with other values would mix two datasets in one file."""
    keys = ("model", "extra_body")
    return {
        "command": command,
        **{k: getattr(teacher, k) for k in keys},
        **{k: getattr(gen, k) for k in ("mode", "temperature", "max_tokens", "reasoning_effort", "seed")},
        **more,
    }


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_distill(teacher: TeacherArgs, gen: GenerateArgs, args: DistillArgs) -> GenerateReport:
    if not args.input_file:
        raise LmforgeError("--input_file is required (chat rows whose questions the teacher answers)")
    if args.max_samples is not None and args.max_samples < 1:
        raise LmforgeError(f"--max_samples {args.max_samples}: must be at least 1")
    if gen.output_file and os.path.abspath(gen.output_file) == os.path.abspath(args.input_file):
        raise LmforgeError(f"--output_file {gen.output_file}: is the --input_file; write the rows elsewhere")
    keys, questions = _plan(args.input_file, args.max_samples)
    run = _Run(teacher, gen, keys, questions, _settings("generate distill", teacher, gen))
    try:
        todo = ((row_key(i), m) for _, i, m in iter_questions(args.input_file, args.max_samples))
        todo = (item for item in todo if not run.store.has(item[0]))
        for batch in _chunks(todo, run.chunk):
            requests = [{"messages": msgs, **run.params(seed=gen.seed)} for _, msgs in batch]
            run.client.complete_many(
                requests, on_result=lambda i, res, b=batch: run.finish_row(b[i][0], b[i][1], res)
            )
            run.check_fatal()
        return run.report()
    finally:
        run.close()


# ---------------------------------------------------------------------------------------------
# qa

_DIFFICULTY = {
    "en": {
        "easy": "an easy, beginner-level",
        "medium": "a medium-difficulty",
        "hard": "a hard, expert-level",
    },
    "zh": {"easy": "简单的入门级", "medium": "中等难度的", "hard": "有挑战性的专家级"},
}
_FACETS = {
    "en": (
        "a basic concept",
        "a practical example",
        "a common mistake or misconception",
        "a comparison between two related ideas",
        "a step-by-step procedure",
        "the reasons behind a rule or fact",
        "an edge case",
        "a real-world application",
        "troubleshooting a problem",
        "best practices",
        "a short calculation or estimate",
        "history or background",
    ),
    "zh": (
        "一个基础概念",
        "一个实际例子",
        "一个常见错误或误解",
        "两个相关概念的比较",
        "一个分步骤的操作过程",
        "某条规则或事实背后的原因",
        "一个边界情况",
        "一个现实中的应用",
        "排查一个问题",
        "最佳实践",
        "一个简短的计算或估算",
        "历史或背景知识",
    ),
}


def qa_question_messages(index: int, topic: str, difficulty: str, language: str) -> list[dict]:
    """The request that makes the teacher write question `index` (a facet per index, so the
    questions differ, and the index itself so no two prompts are the same)."""
    facets = _FACETS[language]
    facet = facets[index % len(facets)]
    level = _DIFFICULTY[language][difficulty]
    if language == "zh":
        text = (
            f"请围绕主题“{topic}”提出{level}问题，侧重于{facet}。这是第 {index + 1} 个问题，"
            "请让它具体、独立、与常见问题不同。只输出问题本身：不要回答，不要编号，不要任何前言。"
        )
    else:
        text = (
            f'Write {level} question about "{topic}" that focuses on {facet}. This is question '
            f"number {index + 1}: make it specific, self-contained and different from the usual ones. "
            "Reply with the question only: no answer, no numbering, no preamble."
        )
    return [{"role": "user", "content": text}]


def _clean_question(text: str) -> str:
    text = text.strip().strip('"“”').strip()
    for prefix in ("Question:", "Q:", "问题：", "问题:"):
        if text.startswith(prefix):
            text = text[len(prefix) :].strip()
    return text


def run_qa(teacher: TeacherArgs, gen: GenerateArgs, args: QAArgs) -> GenerateReport:
    if not args.topic or not str(args.topic).strip():
        raise LmforgeError("--topic is required (what the questions are about)")
    if not args.num_samples or args.num_samples < 1:
        raise LmforgeError("--num_samples is required and must be at least 1")
    keys = [row_key(i) for i in range(args.num_samples)]
    settings = _settings(
        "generate qa", teacher, gen, topic=args.topic, difficulty=args.difficulty, language=args.language
    )
    run = _Run(teacher, gen, keys, None, settings)

    def seed(i: int) -> int | None:
        return None if gen.seed is None else gen.seed + i

    try:
        todo = (i for i in range(args.num_samples) if not run.store.has(row_key(i)))
        for batch in _chunks(todo, run.chunk):
            asks = [
                {
                    "messages": qa_question_messages(i, args.topic, args.difficulty, args.language),
                    **run.params(seed=seed(i)),
                }
                for i in batch
            ]
            questions: list[tuple[int, list[dict]]] = []
            for i, res in zip(batch, run.client.complete_many(asks)):
                text = _clean_question(res.content or "") if res.ok else ""
                if text:
                    questions.append((i, [{"role": "user", "content": text}]))
                else:
                    error = res.error if not res.ok else "the teacher wrote an empty question"
                    run.finish_row(row_key(i), [], _failed(f"question: {error}", res.attempts))
            run.check_fatal()
            answers = [{"messages": q, **run.params(seed=seed(i))} for i, q in questions]
            run.client.complete_many(
                answers,
                on_result=lambda j, res, q=questions: run.finish_row(row_key(q[j][0]), q[j][1], res),
            )
            run.check_fatal()
        return run.report()
    finally:
        run.close()


def _failed(error: str, attempts: int) -> TeacherResult:
    return TeacherResult(False, None, None, None, error, False, attempts)
