"""Per-row sampling for rows that decode in one batch: every row has its own temperature, top-k,
top-p, penalties and random generator; `top_entries` gives the log-prob entries serve reports.

Hand-written because `model.generate`'s logits processors (and transformers' continuous batching)
apply one generation config and one global RNG to the whole batch, and a served request must get
the same answer for the same `seed` whoever else shares its batch. The order of the warpers is
transformers' (repetition penalty, temperature, top-k, top-p), and greedy rows take the plain
argmax of the float32 logits, as `generate` does.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    """How one row chooses its tokens and when it stops."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False
    logprobs: int | None = None  # report each generated token's log-prob and this many top tokens
    prompt_logprobs: int | None = None  # the same for the prompt's tokens (`echo` in /v1/completions)
    grammar: str | None = None  # an llguidance grammar the answer must follow (constrain.py)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def generator(self) -> torch.Generator | None:
        """The row's own RNG: seeded by `seed`, or from the OS when none is given; None for greedy."""
        if self.greedy:
            return None
        seed = self.seed if self.seed is not None else secrets.randbits(63)
        return torch.Generator().manual_seed(seed)


def _apply_penalties(logits: torch.Tensor, params: SamplingParams, prompt: list[int], generated: list[int]):
    """In place on one row (V,): HF's repetition penalty over prompt + answer, then OpenAI's presence
    and frequency penalties over the answer."""
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(prompt) | set(generated)), dtype=torch.long, device=logits.device)
        score = logits[seen]
        p = params.repetition_penalty
        logits[seen] = torch.where(score < 0, score * p, score / p)
    if (params.presence_penalty or params.frequency_penalty) and generated:
        ids = torch.tensor(generated, dtype=torch.long, device=logits.device)
        counts = torch.bincount(ids, minlength=logits.shape[-1]).to(logits.dtype)
        logits -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0).to(logits.dtype)


def _warp(logits: torch.Tensor, temps: torch.Tensor, top_ks: torch.Tensor, top_ps: torch.Tensor):
    """(S, V) logits of the sampled rows → probabilities after temperature, top-k and top-p."""
    logits = logits / temps[:, None]
    ordered, order = logits.sort(dim=-1, descending=True)  # (S, V)
    rank = torch.arange(logits.shape[-1], device=logits.device)[None, :]
    drop = (top_ks[:, None] > 0) & (rank >= top_ks[:, None])
    probs = ordered.masked_fill(drop, float("-inf")).softmax(dim=-1)
    # top-p: drop a token when the more likely ones already reach top_p (the first is always kept)
    drop |= (probs.cumsum(dim=-1) - probs) > top_ps[:, None]
    ordered = ordered.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, ordered).softmax(dim=-1)


def next_tokens(logits: torch.Tensor, rows: list) -> list[int]:
    """One token per row from (B, V) float32 logits. `rows[i]` has `.params` (SamplingParams),
    `.prompt` and `.generated` (token id lists) and `.rng` (torch.Generator or None)."""
    logits = logits.float()
    for i, row in enumerate(rows):
        p = row.params
        if p.repetition_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
            _apply_penalties(logits[i], p, row.prompt, row.generated)
    out = logits.argmax(dim=-1).tolist()
    sampled = [i for i, row in enumerate(rows) if not row.params.greedy]
    if sampled:
        params = [rows[i].params for i in sampled]
        dev = logits.device
        probs = _warp(
            logits[sampled],
            torch.tensor([p.temperature for p in params], dtype=logits.dtype, device=dev),
            torch.tensor([max(p.top_k, 0) for p in params], device=dev),
            torch.tensor([p.top_p for p in params], dtype=logits.dtype, device=dev),
        ).cpu()  # the rows' generators live on the CPU
        for j, i in enumerate(sampled):
            out[i] = int(torch.multinomial(probs[j], 1, generator=rows[i].rng))
    return out


# A token's log-prob entry: (token id, log-prob, [(id, log-prob), ...the top n]); computed on the
# model's raw float32 logits, before penalties, temperature and grammar masks (serve/logprobs.py).
Entry = tuple[int, float, list[tuple[int, float]]]


def top_entries(logits: torch.Tensor, chosen: list[int], top: int) -> list[Entry]:
    """Entries for (N, V) logits whose sampled/actual next tokens are `chosen` (N,)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, torch.tensor(chosen, device=logp.device)[:, None])[:, 0].tolist()
    if top > 0:
        values, ids = logp.topk(min(top, logp.shape[-1]), dim=-1)
        tops = [list(zip(i, v)) for i, v in zip(ids.tolist(), values.tolist())]
    else:
        tops = [[] for _ in chosen]
    return [(t, p, k) for t, p, k in zip(chosen, picked, tops)]
