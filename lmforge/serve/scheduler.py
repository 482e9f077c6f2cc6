"""Dynamic batching: one thread owns the model and decodes every admitted request together.

Requests wait in a bounded FIFO (`submit` raises `Overloaded` past `max_queue`). When the model is
idle the scheduler waits up to `batch_wait` after the oldest request for up to `max_batch_size`
requests of the same adapter, prefills them together and decodes one token per row per step. While
a batch runs, requests of its adapter join it (after their own short wait, or at once when they fill
the free slots); a request for another adapter waits until the batch drains, and requests behind it
wait too, so no adapter starves. A job with image inputs (`extra`, serve/vision.py) runs alone once
the batch has drained, through the `solo` function, and the queue behind it waits for it. Every
token is handed to its request's `sink` as text as soon as it is final; rows leave the batch the
moment they finish.

Hand-written: see `batch.py` for why transformers' continuous batching does not fit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lmforge.serve.batch import Batch, Row, Runner
from lmforge.serve.constrain import advance, mask_rows
from lmforge.serve.logprobs import Entry, top_entries
from lmforge.serve.sampling import SamplingParams, next_tokens

logger = logging.getLogger("lmforge")

# What a sink receives: ("text", piece, [logprob entries of the tokens since the last event]),
# ("done", finish_reason, completion_tokens), ("error", message)
Event = tuple


class Overloaded(Exception):
    """The waiting queue is full."""


@dataclass(eq=False)
class Job:
    """One sequence to generate (a request with n choices is n jobs)."""

    prompt: list[int]
    params: SamplingParams
    adapter: str | None
    sink: Callable[[Event], None]
    cancelled: bool = False
    prompt_logprobs: list | None = None  # set once the prompt is prefilled (params.prompt_logprobs)
    extra: dict | None = None  # image inputs: the job runs alone through Scheduler.solo
    arrived: float = field(default_factory=time.monotonic)


class Scheduler:
    """Owns the model thread (see the module docstring)."""

    def __init__(
        self,
        runner: Runner,
        decode: Callable[[list[int]], str],
        eos_ids: list[int],
        *,
        max_batch_size: int = 16,
        max_queue: int = 256,
        batch_wait_s: float = 0.005,
        grammars=None,
        solo: Callable[[Job], None] | None = None,
    ):
        """`solo(job)`: generates a job with image inputs by itself (serve/vision.py)."""
        self.runner, self.decode, self.eos = runner, decode, set(eos_ids)
        self.solo = solo
        self.max_batch_size, self.max_queue, self.batch_wait_s = max_batch_size, max_queue, batch_wait_s
        self.grammars = grammars  # constrain.Grammars, for rows with a grammar
        self.waiting: deque[Job] = deque()
        self.cond = threading.Condition()
        self.batch = Batch(runner)
        self.stopping = False
        self.peak_batch = 0  # most rows ever decoded together (reported by /health)
        self.thread = threading.Thread(target=self._run, name="lmforge-scheduler", daemon=True)

    # ------------------------------------------------------------------ public
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(timeout=30)

    def submit(self, jobs: list[Job]) -> None:
        with self.cond:
            if len(self.waiting) + len(jobs) > self.max_queue:
                raise Overloaded(f"{len(self.waiting)} sequences are waiting (--max_queue {self.max_queue})")
            self.waiting.extend(jobs)
            self.cond.notify()

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.batch.rows)

    # ------------------------------------------------------------------ the model thread
    def _admit(self) -> list[Job] | None:
        """Jobs to add to the batch now ([] = none yet); None when the server stops."""
        with self.cond:
            while not self.stopping:
                while self.waiting and self.waiting[0].cancelled:
                    self.waiting.popleft()
                running = bool(self.batch.rows)
                if not self.waiting:
                    if running:
                        return []
                    self.cond.wait()
                    continue
                head = self.waiting[0]
                if head.extra is not None:  # an image job: alone, once the batch has drained
                    if running:
                        return []
                    return [self.waiting.popleft()]
                room = self.max_batch_size - len(self.batch.rows)
                if running and (head.adapter != self.batch.adapter or not self.batch.can_join or room <= 0):
                    return []
                same = [
                    j
                    for j in self.waiting
                    if j.adapter == head.adapter and not j.cancelled and j.extra is None
                ][:room]
                left = head.arrived + self.batch_wait_s - time.monotonic()
                if len(same) < room and left > 0:
                    if running:
                        return []  # keep decoding; they join once their wait is over
                    self.cond.wait(left)
                    continue
                taken = set(map(id, same))
                self.waiting = deque(j for j in self.waiting if id(j) not in taken)
                return same
            return None

    def _run(self) -> None:
        with torch.inference_mode():
            while (jobs := self._admit()) is not None:
                try:
                    if jobs and jobs[0].extra is not None:
                        if self.solo is None:
                            raise RuntimeError("this server has no image generation path")
                        self.solo(jobs[0])
                        continue
                    if jobs:
                        if not self.batch.rows:
                            self.batch = Batch(self.runner, jobs[0].adapter)
                        rows = [Row(j, self.decode, self.grammars) for j in jobs]
                        logits = self.batch.add(rows)
                        for row in rows:
                            row.job.prompt_logprobs = row.prompt_logprobs
                        self.peak_batch = max(self.peak_batch, len(self.batch.rows))
                        self._accept(rows, *self._choose(logits, rows))
                    if self.batch.rows:
                        rows = list(self.batch.rows)
                        self._accept(rows, *self._choose(self.batch.step(), rows))
                except Exception as e:  # a failed forward fails its batch, not the server
                    logger.exception("serve: generation failed")
                    failed = {id(j): j for j in [*(r.job for r in self.batch.rows), *(jobs or [])]}
                    for job in failed.values():
                        job.sink(("error", f"generation failed: {type(e).__name__}: {e}"))
                    self.batch = Batch(self.runner)

    @staticmethod
    def _choose(logits, rows: list[Row]) -> tuple[list[int], list[list[Entry]]]:
        """Each row's next token (grammar masks applied) and, for rows that asked, its log-prob entry."""
        wanted = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
        raw = logits[wanted].clone() if wanted else None  # before penalties and masks modify logits
        mask_rows(logits, rows)
        tokens = next_tokens(logits, rows)
        entries: list[list[Entry]] = [[] for _ in rows]
        for j, i in enumerate(wanted):
            entries[i] = top_entries(raw[j : j + 1], [tokens[i]], rows[i].params.logprobs)
        return tokens, entries

    def _accept(self, rows: list[Row], tokens: list[int], entries: list[list[Entry]]) -> None:
        """Record each row's new token, hand out its text, finish rows that are done, drop them."""
        for row, tok, entry in zip(rows, tokens, entries):
            if row.params.max_tokens == 0:  # echo only: the prompt was scored, nothing is generated
                self._finish(row, "length")
                continue
            row.generated.append(tok)
            row.next = tok
            broken = advance(row, tok)
            if row.job.cancelled:
                row.done = True
            elif broken:
                row.job.sink(("error", broken))
                row.done = True
            elif tok in self.eos and not row.params.ignore_eos:
                if entry:
                    row.job.sink(("text", "", entry))
                self._finish(row, "stop")
            else:
                piece = row.text.feed(tok)
                if piece or entry:
                    row.job.sink(("text", piece, entry))
                if row.text.stopped:
                    self._finish(row, "stop")
                elif len(row.generated) >= row.params.max_tokens:
                    self._finish(row, "length")
        self.batch.keep()

    @staticmethod
    def _finish(row: Row, reason: str) -> None:
        piece = row.text.finish()
        if piece:
            row.job.sink(("text", piece, []))
        row.job.sink(("done", reason, len(row.generated)))
        row.done = True
