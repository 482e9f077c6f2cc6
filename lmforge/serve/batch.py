"""Rows decoding together over one left-padded KV cache: prefill, join, one-token steps, leaving.

Hand-written. transformers 5.23's continuous batching (`generate_batch`, `ContinuousBatchingManager`)
was tried first: on CPU it gives the same greedy tokens as `generate`, but it applies one
`do_sample` and one global RNG seed to every request, has no per-request PEFT adapter, and ran
21 short tiny-model requests ~18x slower than plain sequential `generate` (paged cache set-up and
its scheduling loop dominate on CPU). `model.generate` itself cannot add or drop rows mid-run.

Layout (B rows, T cached positions)::

    mask    [0 0 p p p g g]   1 for a real token; prompts are left-padded, a joining batch is
    cache   (B, heads, T, d)  padded on the left too, so every row's newest token is at column T-1
    pos     per row           position id of the token fed next (= real tokens so far), so a padded
                              row sees exactly the positions it would see alone

Rows that finish are dropped from the cache at once (`keep`), and columns that no remaining row
uses are trimmed. Joining and trimming need plain `DynamicLayer` caches; models with sliding-window
or linear-attention layers still batch, but only rows that start together.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from lmforge.infer.text import RowText
from lmforge.serve.logprobs import Entry, top_entries
from lmforge.serve.sampling import SamplingParams


class Row:
    """One generated sequence: its job (what the request asked for) and its decoding state."""

    def __init__(self, job, decode, grammars=None):
        self.job = job
        self.params: SamplingParams = job.params
        self.prompt: list[int] = job.prompt
        self.generated: list[int] = []
        self.rng = self.params.generator()
        self.text = RowText(decode, self.params.stop)
        self.next = 0  # the token to feed at the next step
        self.pos = len(self.prompt)  # its position id
        self.done = False
        grammar = self.params.grammar
        self.matcher = grammars.matcher(grammar) if grammar is not None and grammars is not None else None
        self.prompt_logprobs: list[Entry | None] | None = None  # with params.prompt_logprobs


class Runner:
    """The model and how to call it for one adapter (None = the plain base model)."""

    def __init__(self, model, pad_id: int):
        self.model, self.pad_id = model, pad_id
        self.device = next(model.parameters()).device
        try:
            from peft import PeftModel

            self.peft = isinstance(model, PeftModel)
        except ImportError:  # peft is a dependency; without it there are no adapters to switch
            self.peft = False

    def __call__(self, adapter: str | None, **inputs):
        with self.using(adapter):
            return self.model(**inputs)

    @contextmanager
    def using(self, adapter: str | None) -> Iterator[None]:
        """The model with `adapter` active (None: adapters disabled) for the calls inside."""
        if not self.peft:
            yield
        elif adapter is None:
            with self.model.disable_adapter():
                yield
        else:
            if self.model.active_adapter != adapter:
                self.model.set_adapter(adapter)
            yield


def _plain(cache) -> bool:
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in cache.layers)


class Batch:
    """The running batch of one adapter (see the module docstring)."""

    def __init__(self, runner: Runner, adapter: str | None = None):
        self.runner, self.adapter = runner, adapter
        self.rows: list[Row] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # (B, T)

    @property
    def can_join(self) -> bool:
        return not self.rows or _plain(self.cache)

    def add(self, rows: list[Row]) -> torch.Tensor:
        """Prefill `rows` and append them to the batch; returns their next-token logits (n, V)."""
        dev = self.runner.device
        width = max(len(r.prompt) for r in rows)
        ids = torch.full((len(rows), width), self.runner.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r.prompt) :] = torch.tensor(r.prompt, dtype=torch.long)
            mask[i, width - len(r.prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp_min(0)  # pads get 0, as generate gives them
        echo = [r for r in rows if r.params.prompt_logprobs is not None]
        out = self.runner(
            self.adapter,
            input_ids=ids.to(dev),
            attention_mask=mask.to(dev),
            position_ids=positions.to(dev),
            use_cache=True,
            logits_to_keep=0 if echo else 1,  # every position when a row wants its prompt's log-probs
        )
        for i, r in enumerate(rows):
            if r.params.prompt_logprobs is not None:
                seen = out.logits[i, width - len(r.prompt) : width - 1]  # position t predicts token t+1
                r.prompt_logprobs = [None]
                if len(r.prompt) > 1:
                    r.prompt_logprobs += top_entries(seen, r.prompt[1:], r.params.prompt_logprobs)
        mask = mask.to(dev)
        if self.rows:
            self._merge(out.past_key_values, mask)
        else:
            self.cache, self.mask = out.past_key_values, mask
        self.rows += rows
        return out.logits[:, -1].float()

    def _merge(self, cache, mask: torch.Tensor) -> None:
        """Stack a freshly prefilled cache under the running one, left-padding the shorter."""
        width = max(self.mask.shape[1], mask.shape[1])

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - t.shape[dim]
            if not missing:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for mine, new in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([pad(mine.keys, 2), pad(new.keys, 2)])
            mine.values = torch.cat([pad(mine.values, 2), pad(new.values, 2)])
        self.mask = torch.cat([pad(self.mask, 1), pad(mask, 1)])

    def step(self) -> torch.Tensor:
        """Feed every row its next token; returns the following logits (B, V)."""
        dev = self.runner.device
        ids = torch.tensor([[r.next] for r in self.rows], dtype=torch.long, device=dev)
        positions = torch.tensor([[r.pos] for r in self.rows], dtype=torch.long, device=dev)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        out = self.runner(
            self.adapter,
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
        )
        for r in self.rows:
            r.pos += 1
        return out.logits[:, -1].float()

    def keep(self) -> None:
        """Drop finished rows from the batch and the cache; trim columns no row uses any more."""
        alive = [i for i, r in enumerate(self.rows) if not r.done]
        if len(alive) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in alive]
        if not self.rows:
            self.cache = self.mask = None
            return
        idx = torch.tensor(alive, dtype=torch.long, device=self.mask.device)
        for layer in self.cache.layers:
            layer.reorder_cache(idx)  # index_select on the batch dimension, for every layer type
        self.mask = self.mask[idx]
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0
        if start and _plain(self.cache):
            self.mask = self.mask[:, start:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
