"""A running generation as front ends consume it: `Completion` (one finished answer), the per-row
stop criteria and token queue handed to `generate`, and `TextStream`, the iterator of text pieces of
a generation running in a background thread (its text comes from infer/text.py's `RowText`)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lmforge.infer.args import GenerationArgs
from lmforge.infer.text import RowText


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


class StopCriteria:
    """Per-row stop: a stop string appeared in the generated tail, or the caller cancelled."""

    def __init__(self, tokenizer, stops: list[str], prompt_len: int, cancel: threading.Event | None = None):
        self.tokenizer, self.stops, self.prompt_len, self.cancel = tokenizer, stops, prompt_len, cancel
        # Byte-level tokens hold >= 1 byte each, so this many tokens always cover a whole stop string.
        self.tail = max((len(s.encode()) for s in stops), default=0) + 1

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.cancel is not None and self.cancel.is_set():
            return done.fill_(True)
        if self.stops:
            start = max(self.prompt_len, input_ids.shape[1] - self.tail)
            tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
            for i, t in enumerate(tails):
                done[i] = any(s in t for s in self.stops)
        return done


class QueueStreamer:
    """A `generate` streamer that hands raw token ids to the consuming thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        self.queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.queue.put(None)


class TextStream:
    """Iterator of text pieces from a generation running in a background thread (`engine`: a
    `GenerationEngine`, whose `_generate`, `decode` and `_finish` it drives).

    Pieces concatenate to `completion.raw_text` (`<think>` tags included). Text that might be the
    start of a stop string is held back until it is known not to be one. Leaving the loop early
    (`break`, `close()`) stops the generation.
    """

    def __init__(self, engine: Any, ids: list[int], gen: GenerationArgs, extra: dict | None = None):
        """`extra`: more model inputs (a vision prompt's image inputs)."""
        self.engine, self.ids, self.gen, self.extra = engine, ids, gen, extra
        self.completion: Completion | None = None
        self._cancel = threading.Event()
        self._streamer = QueueStreamer()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    @property
    def finish_reason(self) -> str | None:
        return self.completion.finish_reason if self.completion else None

    def _work(self) -> None:
        try:
            self.engine._generate(
                [self.ids], self.gen, streamer=self._streamer, cancel=self._cancel, extra=self.extra
            )
        except BaseException as e:  # surfaced in the consuming thread
            self._error = e
            self._streamer.end()

    def close(self) -> None:
        self._cancel.set()

    def __iter__(self) -> Iterator[str]:
        eng = self.engine
        row = RowText(eng.decode, list(self.gen.stop or []))
        gen_ids: list[int] = []
        ended = False  # eos, max_new_tokens or a stop string
        try:
            while not ended:
                chunk = self._streamer.queue.get()
                if chunk is None:
                    break
                for tid in chunk:
                    if len(gen_ids) >= self.gen.max_new_tokens:
                        ended = True
                        break
                    gen_ids.append(tid)
                    if tid in eng.eos_ids:
                        ended = True
                        break
                    piece = row.feed(tid)
                    if piece:
                        yield piece
                    if row.stopped:
                        ended = True
                        break
            rest = row.finish()  # text held back as a possible stop-string start or partial UTF-8
            if rest:
                yield rest
        finally:
            self._cancel.set()
            self._thread.join()
        if self._error is not None:
            raise self._error
        self.completion = eng._finish(gen_ids, len(self.ids), self.gen)
