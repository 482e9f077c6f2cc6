"""Rows decoding together over one left-padded KV cache: prefill, join, one-token steps, leaving.

The decode loop (loop.py) drives it for every caller: serve's scheduler, the chat / infer / eval /
web UI engines and RL rollouts. Hand-written. transformers 5.23's continuous batching (`generate_batch`, `ContinuousBatchingManager`)
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

Media models get their inputs (pixel values, audio features) at prefill only, as `generate` gives
them. Qwen2-VL-style models place image tokens with 3-D M-RoPE: the prefill takes the model's own
`get_rope_index` positions, and each later token's position is its text position plus the row's
offset (`Row.delta`), which is what `generate` computes from the model's stored `rope_deltas`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from lmforge.decode.sampling import Entry, SamplingParams, top_entries
from lmforge.decode.text import RowText


class Row:
    """One generated sequence: its job (what the request asked for) and its decoding state."""

    def __init__(self, job, decode=None, grammars=None):
        """`decode(ids) -> str` gives the row its text (None: tokens only, as RL rollouts want)."""
        self.job = job
        self.params: SamplingParams = job.params
        self.prompt: list[int] = job.prompt
        self.generated: list[int] = []
        self.rng = self.params.generator()
        self.text = RowText(decode, self.params.stop) if decode is not None else None
        self.next = 0  # the token to feed at the next step
        self.pos = len(self.prompt)  # its position id
        self.delta = 0  # M-RoPE: what the row's image tokens moved its later positions by
        self.done = False
        self.finish_reason: str | None = None  # "stop" or "length" once done (None: cancelled)
        grammar = self.params.grammar
        self.matcher = grammars.matcher(grammar) if grammar is not None and grammars is not None else None
        self.prompt_logprobs: list[Entry | None] | None = None  # with params.prompt_logprobs


class Runner:
    """The model and how to call it for one adapter (None = the plain base model)."""

    def __init__(self, model, pad_id: int, switch_adapters: bool = True):
        """`switch_adapters`: requests name their adapter (serve); False runs the model as it is set
        (an engine's merged or active adapter, an RL policy)."""
        import inspect

        self.model, self.pad_id = model, pad_id
        self.device = next(model.parameters()).device
        try:
            from peft import PeftModel

            is_peft = isinstance(model, PeftModel)
        except ImportError:  # peft is a dependency; without it there are no adapters to switch
            is_peft = False
        self.peft = is_peft and switch_adapters
        base = model.get_base_model() if is_peft else model
        accepted = inspect.signature(base.forward).parameters
        # transformers 5.25 renamed `past_key_values` to `cache` (the old name is deprecated)
        self.cache_arg = "cache" if "cache" in accepted else "past_key_values"
        self.keep_arg = "logits_to_keep" in accepted  # audio LLMs compute every position
        self.rope_index = _rope_index_of(base)

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


def _rope_index_of(model):
    """The model's M-RoPE `get_rope_index` (Qwen2-VL family), or None for 1-D positions."""
    for owner in (model, getattr(model, "model", None)):
        fn = getattr(owner, "get_rope_index", None)
        if callable(fn):
            return fn
    return None


ROPE_INPUTS = ("mm_token_type_ids", "image_grid_thw", "video_grid_thw", "second_per_grid_ts")


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


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
        self.mrope = False  # positions are 3-D (rows with images in a Qwen2-VL-style model)

    @property
    def can_join(self) -> bool:
        return not self.rows or (_plain(self.cache) and not self.mrope)

    def add(self, rows: list[Row], extra: dict | None = None) -> torch.Tensor:
        """Prefill `rows` and append them to the batch; returns their next-token logits (n, V).
        `extra`: more model inputs for these rows at prefill (pixel values, audio features)."""
        run = self.runner
        dev = run.device
        ids, mask, width = left_pad([r.prompt for r in rows], run.pad_id)
        ids, mask = ids.to(dev), mask.to(dev)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)  # pads get 0, as generate gives them
        inputs = {k: v.to(dev) for k, v in (extra or {}).items()}
        media = "image_grid_thw" in inputs or "video_grid_thw" in inputs
        if run.rope_index is not None and "mm_token_type_ids" in inputs and media:
            spatial, deltas = run.rope_index(
                ids, attention_mask=mask, **{k: inputs[k] for k in ROPE_INPUTS if k in inputs}
            )
            positions = torch.cat([positions[None], spatial.to(positions.dtype)])  # (4, n, width)
            for r, d in zip(rows, deltas.view(-1).tolist()):
                r.delta = int(d)
            self.mrope = True
        echo = [r for r in rows if r.params.prompt_logprobs is not None]
        if run.keep_arg:
            inputs["logits_to_keep"] = (
                0 if echo else 1
            )  # every position when a row wants its prompt's log-probs
        out = run(
            self.adapter,
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **inputs,
        )
        for i, r in enumerate(rows):
            if r.params.prompt_logprobs is not None:
                seen = out.logits[i, width - len(r.prompt) : width - 1]  # position t predicts token t+1
                r.prompt_logprobs = [None]
                if len(r.prompt) > 1:
                    r.prompt_logprobs += top_entries(seen, r.prompt[1:], r.params.prompt_logprobs)
        if self.rows:
            self._merge(_cache_of(out), mask)
        else:
            self.cache, self.mask = _cache_of(out), mask
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
        if self.mrope:  # text position, then the three M-RoPE axes moved by each row's offset
            moved = positions + torch.tensor([[r.delta] for r in self.rows], dtype=torch.long, device=dev)
            positions = torch.cat([positions[None], moved[None].expand(3, -1, -1)])
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        out = self.runner(
            self.adapter,
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=positions,
            use_cache=True,
            **{self.runner.cache_arg: self.cache},
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
        if start and _plain(self.cache) and not self.mrope:
            self.mask = self.mask[:, start:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(input_ids, attention_mask) long tensors (B, width) of the prompts padded on the left, and width."""
    width = max(len(ids) for ids in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[i, width - len(prompt) :] = 1
    return ids, mask, width
