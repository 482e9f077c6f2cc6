"""A running generation as front ends consume it: `Completion` (one finished answer) and
`TextStream`, the iterator of text pieces of one answer decoded in a background thread by the decode
loop (decode/loop.py), whose `RowText` holds back possible stop-string starts and partial UTF-8."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lmforge.infer.args import GenerationArgs


@dataclass
class Completion:
    """One finished answer; `text` excludes the `<think>` part, which is in `reasoning_content`."""

    text: str
    reasoning_content: str | None
    finish_reason: str  # "stop" (eos or a stop string) or "length" (max_new_tokens reached)
    prompt_tokens: int
    completion_tokens: int
    raw_text: str = ""
    token_ids: list[int] = field(default_factory=list, repr=False)

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


class TextStream:
    """Iterator of text pieces from one answer decoded in a background thread (`engine`: a
    `GenerationEngine`, whose `run_jobs`, `sampling` and `_finish` it uses).

    Pieces concatenate to `completion.raw_text` (`<think>` tags included). Text that might be the
    start of a stop string is held back until it is known not to be one. Leaving the loop early
    (`break`, `close()`) stops the generation.
    """

    def __init__(self, engine: Any, ids: list[int], gen: GenerationArgs, extra: dict | None = None):
        """`extra`: more model inputs (a vision prompt's image inputs)."""
        from lmforge.decode.loop import Job

        self.engine, self.ids, self.gen = engine, ids, gen
        self.completion: Completion | None = None
        self._events: queue.Queue = queue.Queue()
        self._job = Job(ids, engine.sampling(gen, gen.max_new_tokens, gen.seed), sink=self._events.put)
        self._rows: list = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, args=(extra,), daemon=True)
        self._thread.start()

    @property
    def finish_reason(self) -> str | None:
        return self.completion.finish_reason if self.completion else None

    def _work(self, extra: dict | None) -> None:
        try:
            self._rows = self.engine.run_jobs([self._job], extra)
        except BaseException as e:  # surfaced in the consuming thread
            self._error = e
        finally:
            self._events.put(None)

    def close(self) -> None:
        self._job.cancelled = True

    def __iter__(self) -> Iterator[str]:
        try:
            while (event := self._events.get()) is not None:
                if event[0] == "text" and event[1]:
                    yield event[1]
        finally:
            self._job.cancelled = True
            self._thread.join()
        if self._error is not None:
            raise self._error
        row = self._rows[0]
        self.completion = self.engine._finish(
            row.generated, len(self.ids), self.gen, row.finish_reason or "stop"
        )
