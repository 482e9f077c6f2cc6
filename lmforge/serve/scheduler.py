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

Only the queueing and batching are here; tokens are chosen and rows finished by the one decode loop
(decode/loop.py), which the engines and RL rollouts use too. Hand-written: see decode/batch.py for
why transformers' continuous batching does not fit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import torch

from lmforge.decode.batch import Batch, Runner
from lmforge.decode.loop import Decoder, Job

logger = logging.getLogger("lmforge")


class Overloaded(Exception):
    """The waiting queue is full."""


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
        self.runner, self.solo = runner, solo
        self.decoder = Decoder(decode, eos_ids, grammars)
        self.max_batch_size, self.max_queue, self.batch_wait_s = max_batch_size, max_queue, batch_wait_s
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
                        self.peak_batch = max(self.peak_batch, len(self.batch.rows) + len(jobs))
                        self.decoder.start(self.batch, jobs)
                    if self.batch.rows:
                        self.decoder.step(self.batch)
                except Exception as e:  # a failed forward fails its batch, not the server
                    logger.exception("serve: generation failed")
                    failed = {id(j): j for j in [*(r.job for r in self.batch.rows), *(jobs or [])]}
                    for job in failed.values():
                        job.sink(("error", f"generation failed: {type(e).__name__}: {e}"))
                    self.batch = Batch(self.runner)
