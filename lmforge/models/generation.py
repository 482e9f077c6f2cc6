"""One call of transformers' `generate` for every lmforge caller that decodes with it (the chat /
infer / eval engines in infer/generation.py and RL rollouts in rl/rollout.py): left-padding the
prompts, the `GenerationConfig` built from lmforge's sampling knobs, and the call itself. It lives
below both callers (RL may not import infer/), so the two decode paths cannot drift apart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def left_pad(batch: Sequence[Sequence[int]], pad_id: int):
    """(input_ids, attention_mask) long tensors (B, width) of the prompts, padded on the left, and width."""
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ids in enumerate(batch):
        input_ids[i, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
        mask[i, width - len(ids) :] = 1
    return input_ids, mask, width


def generation_config(
    *,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 50,
    repetition_penalty: float = 1.0,
    eos_token_id: Any = None,
    pad_token_id: int | None = None,
    bos_token_id: int | None = None,
):
    """transformers' `GenerationConfig`; the sampling knobs only apply when sampling (greedy rows
    keep transformers' neutral values, so no warper runs)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else 1.0,
        top_p=top_p if do_sample else 1.0,
        top_k=top_k if do_sample else 50,
        repetition_penalty=repetition_penalty,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
    )


def generate_padded(model, batch: Sequence[Sequence[int]], pad_id: int, config, device, **kwargs):
    """`model.generate` on the left-padded `batch` (kwargs: stopping criteria, streamer, extra model
    inputs, already on `device`). Returns (sequences, prompt input_ids, prompt mask, width); the
    caller chooses the grad / inference mode."""
    input_ids, mask, width = left_pad(batch, pad_id)
    input_ids, mask = input_ids.to(device), mask.to(device)
    out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config, **kwargs)
    return out, input_ids, mask, width
