"""The one decode loop: every lmforge answer is generated here, by serve's scheduler, the chat /
infer / eval / web UI engines (infer/generation.py) and PPO / SPO rollouts (rl/rollout.py).

A `Job` is one sequence to generate: prompt ids, its `SamplingParams`, the adapter it runs under,
its media inputs and a `sink` that receives its events as they happen:

    ("text", piece, [log-prob entries of the tokens since the last event])
    ("done", finish_reason, completion_tokens)      finish_reason: "stop" (eos, stop string) or "length"
    ("error", message)                              a grammar the answer broke (serve)

`Decoder.start` prefills jobs into a `Batch` (batch.py) and takes their first tokens; `Decoder.step`
feeds every row its last token and takes the next: grammar masks (when a `grammars` object is given),
per-row penalties and sampling (sampling.py), log-prob entries, then eos / stop strings / max tokens,
and rows that finish leave the batch at once. `Decoder.run` does both until every row is done; serve
interleaves them with admitting new requests. Hand-written for the reasons in batch.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lmforge.decode.batch import Batch, Row, Runner
from lmforge.decode.sampling import Entry, SamplingParams, next_tokens, top_entries

Event = tuple


def _drop(event: Event) -> None:
    """The sink of a job nobody listens to while it runs (its `Row` holds the result)."""


@dataclass(eq=False)
class Job:
    """One sequence to generate (a request with n choices is n jobs)."""

    prompt: list[int]
    params: SamplingParams
    adapter: str | None = None
    sink: Callable[[Event], None] = _drop
    cancelled: bool = False
    prompt_logprobs: list | None = None  # set once the prompt is prefilled (params.prompt_logprobs)
    extra: dict | None = None  # media inputs for the prefill (pixel values, audio features)
    arrived: float = field(default_factory=time.monotonic)


class Decoder:
    """Token choice and row bookkeeping for a `Batch` (see the module docstring)."""

    def __init__(self, decode: Callable[[list[int]], str] | None, eos_ids, grammars=None):
        """`decode(ids) -> str`: the answer text (None: tokens only, no text events); `grammars`:
        an object with `matcher(grammar)`, `mask(logits, rows)` and `advance(row, token)`."""
        self.decode, self.eos, self.grammars = decode, set(eos_ids), grammars

    def start(self, batch: Batch, jobs: list[Job], extra: dict | None = None) -> list[Row]:
        """Prefill `jobs` into `batch` (`extra`: their media inputs) and take their first tokens."""
        rows = [Row(j, self.decode, self.grammars) for j in jobs]
        logits = batch.add(rows, extra)
        for row in rows:
            row.job.prompt_logprobs = row.prompt_logprobs
        self._accept(batch, rows, *self._choose(logits, rows))
        return rows

    def step(self, batch: Batch) -> None:
        """One more token for every row of `batch`."""
        rows = list(batch.rows)
        self._accept(batch, rows, *self._choose(batch.step(), rows))

    def run(self, runner: Runner, jobs: list[Job], extra: dict | None = None) -> list[Row]:
        """Generate `jobs` together until all are done; their rows, in job order."""
        batch = Batch(runner, jobs[0].adapter)
        rows = self.start(batch, jobs, extra)
        while batch.rows:
            self.step(batch)
        return rows

    def _choose(self, logits: torch.Tensor, rows: list[Row]) -> tuple[list[int], list[list[Entry]]]:
        """Each row's next token (grammar masks applied) and, for rows that asked, its log-prob entry."""
        wanted = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
        raw = logits[wanted].clone() if wanted else None  # before penalties and masks modify logits
        if self.grammars is not None:
            self.grammars.mask(logits, rows)
        tokens = next_tokens(logits, rows)
        entries: list[list[Entry]] = [[] for _ in rows]
        for j, i in enumerate(wanted):
            entries[i] = top_entries(raw[j : j + 1], [tokens[i]], rows[i].params.logprobs)
        return tokens, entries

    def _accept(self, batch: Batch, rows: list[Row], tokens: list[int], entries: list[list[Entry]]) -> None:
        """Record each row's new token, hand out its text, finish rows that are done, drop them."""
        for row, tok, entry in zip(rows, tokens, entries):
            if row.params.max_tokens == 0:  # echo only: the prompt was scored, nothing is generated
                self._finish(row, "length")
                continue
            row.generated.append(tok)
            row.next = tok
            broken = self.grammars.advance(row, tok) if self.grammars is not None else None
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
                piece = row.text.feed(tok) if row.text is not None else ""
                if piece or entry:
                    row.job.sink(("text", piece, entry))
                if row.text is not None and row.text.stopped:
                    self._finish(row, "stop")
                elif len(row.generated) >= row.params.max_tokens:
                    self._finish(row, "length")
        batch.keep()

    @staticmethod
    def _finish(row: Row, reason: str) -> None:
        piece = row.text.finish() if row.text is not None else ""
        if piece:
            row.job.sink(("text", piece, []))
        row.finish_reason = reason
        row.job.sink(("done", reason, len(row.generated)))
        row.done = True
