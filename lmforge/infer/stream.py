"""Answer text as front ends see it: `Completion`, `<think>` splitting (whole and incremental), stop
strings held back while they may still be forming, and `TextStream`, the iterator of text pieces of
a generation running in a background thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lmforge.infer.args import GenerationArgs

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Special tokens that carry meaning in the answer text and are therefore decoded, not skipped.
VISIBLE_SPECIAL = ("<think>", "</think>", "<tool_call>", "</tool_call>")


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


def split_thinking(text: str) -> tuple[str | None, str]:
    """`<think>r</think>a` → (r, a). A lone `</think>` (template opened the tag) also splits."""
    if THINK_CLOSE not in text:
        if text.lstrip().startswith(THINK_OPEN):  # cut off while still thinking
            return text.lstrip()[len(THINK_OPEN) :].strip(), ""
        return None, text
    head, _, answer = text.partition(THINK_CLOSE)
    start = head.find(THINK_OPEN)
    reasoning = head[start + len(THINK_OPEN) :] if start >= 0 else head
    return reasoning.strip(), answer.lstrip("\n")


class ThinkSplitter:
    """Incremental `split_thinking` for streamed pieces: `feed(piece)` → [(kind, text)], kind is
    "reasoning" or "content"; tags themselves are dropped."""

    def __init__(self) -> None:
        self.in_think = False
        self.buf = ""

    def feed(self, piece: str, final: bool = False) -> list[tuple[str, str]]:
        self.buf += piece
        out: list[tuple[str, str]] = []
        while self.buf:
            tag = THINK_CLOSE if self.in_think else THINK_OPEN
            idx = self.buf.find(tag)
            if idx < 0:
                if self.in_think and THINK_OPEN in self.buf:
                    self.buf = self.buf.replace(THINK_OPEN, "")
                keep = 0 if final else partial_suffix(self.buf, (tag,))
                text, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep :]
                if text:
                    out.append(("reasoning" if self.in_think else "content", text))
                break
            if idx:
                out.append(("reasoning" if self.in_think else "content", self.buf[:idx]))
            self.buf = self.buf[idx + len(tag) :]
            self.in_think = not self.in_think
        return out


def partial_suffix(text: str, stops: tuple[str, ...] | list[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of one of `stops`."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


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
        eng, stops = self.engine, [s for s in self.gen.stop or [] if s]
        gen_ids: list[int] = []
        committed, window_start, emitted = "", 0, 0
        stopped = hit_stop = False
        try:
            while not stopped:
                chunk = self._streamer.queue.get()
                if chunk is None:
                    break
                for tid in chunk:
                    if len(gen_ids) >= self.gen.max_new_tokens:
                        break
                    gen_ids.append(tid)
                    if tid in eng.eos_ids:
                        stopped = True
                        break
                    window = eng.decode(gen_ids[window_start:])
                    text = committed + window
                    if window.endswith("\n"):  # safe point: later tokens cannot change this text
                        committed, window_start = text, len(gen_ids)
                    hit = min(
                        (
                            text.find(s, max(0, emitted - len(s)))
                            for s in stops
                            if text.find(s, max(0, emitted - len(s))) >= 0
                        ),
                        default=-1,
                    )
                    if hit >= 0:
                        if hit > emitted:
                            yield text[emitted:hit]
                        emitted, stopped = hit, True
                        hit_stop = True
                        break
                    end = len(text) - partial_suffix(text, stops)
                    while end > emitted and text[end - 1] == "\ufffd":  # incomplete UTF-8 sequence
                        end -= 1
                    if end > emitted:
                        yield text[emitted:end]
                        emitted = end
            if not hit_stop:  # flush text held back as a possible stop-string start or partial UTF-8
                text = eng.decode(gen_ids)
                if len(text) > emitted:
                    yield text[emitted:]
        finally:
            self._cancel.set()
            self._thread.join()
        if self._error is not None:
            raise self._error
        self.completion = eng._finish(gen_ids, len(self.ids), self.gen)
