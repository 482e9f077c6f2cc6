"""Rollouts for lmforge's PPO and SPO trainers: sample responses, mask them, score their tokens.

Written by hand (like ``ppo_math``) because trl 1.16 has no PPO / SPO trainer to borrow it from.

Layout of a ``Rollout`` of B rows, prompt width P and response width T (L = P + T)::

    input_ids       [pad pad p p p | r r r EOS pad]     left-padded prompts, right-padded responses
    attention_mask  [ 0   0  1 1 1 | 1 1 1  1   0 ]
    response_mask   [ 0   0  0 0 0 | 1 1 1  1   0 ]     generated tokens up to and including the stop
    old_logprobs    (B, L − 1): column j is log π(input_ids[:, j+1] | input_ids[:, ≤j]), 0 outside
                    the response; its mask is ``response_mask[:, 1:]`` (``Rollout.logprob_mask``).

Position ids are ``cumsum(attention_mask) − 1`` (clamped at 0), so a left-padded row scores exactly
as it would unpadded. Log-probs use ``logits / temperature``, the distribution the tokens were
sampled from, as PPO's importance ratio requires (Schulman et al. 2017, arXiv:1707.06347).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Rollout", "fill_logprobs", "generate", "response_mask_from", "sequence_logprobs", "stop_ids"]

Prompt = Sequence[dict[str, Any]] | str


@dataclass
class Rollout:
    """One batch of sampled responses; see the module docstring for the layout."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prompt_length: int
    responses: list[str]
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    prompts: list[str] = field(default_factory=list)
    """The rendered prompt text of each row (prompts repeated ``num_samples`` times)."""
    temperature: float = 1.0
    """The sampling temperature (1.0 for greedy); log-probs are taken at it."""

    @property
    def logprob_mask(self) -> torch.Tensor:
        """(B, L − 1) mask aligned with ``old_logprobs``: 1 where the predicted token is a response token."""
        return self.response_mask[:, 1:]

    @property
    def response_ids(self) -> torch.Tensor:
        """(B, T) the response part of ``input_ids`` (pad after the stop token)."""
        return self.input_ids[:, self.prompt_length :]

    @property
    def response_lengths(self) -> torch.Tensor:
        """(B,) number of response tokens per row, stop token included."""
        return self.response_mask.sum(dim=1)

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def stop_ids(tokenizer, model=None, extra: Sequence[int] | None = None) -> list[int]:
    """Token ids that end a response: ``extra`` when given, else the tokenizer's eos (``<|im_end|>``
    for ChatML tokenizers) plus the model's generation-config eos ids."""
    if extra:
        return list(dict.fromkeys(int(i) for i in extra))
    ids = [tokenizer.eos_token_id]
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += gen_eos if isinstance(gen_eos, list) else [gen_eos]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def response_mask_from(generated: torch.Tensor, stops: Sequence[int]) -> torch.Tensor:
    """(B, T) long mask over generated ids: 1 up to and including each row's first stop token, 0 after
    (all ones for a row that never stops)."""
    is_stop = torch.isin(generated, torch.tensor(list(stops), device=generated.device))
    # Number of stop tokens strictly before each position: a position is kept while that is 0.
    before = is_stop.long().cumsum(dim=1) - is_stop.long()
    return (before == 0).long()


def _encode(tokenizer, prompt: Prompt, chat_template_kwargs: dict[str, Any] | None) -> tuple[str, list[int]]:
    from lmforge.data.chat import render

    if isinstance(prompt, str):
        text = prompt
    else:
        kwargs = chat_template_kwargs or {}
        text = render(
            tokenizer,
            list(prompt),
            kwargs.get("tools"),
            add_generation_prompt=True,
            enable_thinking=kwargs.get("enable_thinking", True),
        )
    return text, tokenizer(text, add_special_tokens=False)["input_ids"]


def _device(model) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """Eval mode (no dropout) inside, the previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def generate(
    policy,
    tokenizer,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    do_sample: bool = True,
    num_samples: int = 1,
    stop_token_ids: Sequence[int] | None = None,
    max_prompt_length: int | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> Rollout:
    """Sample ``num_samples`` responses per prompt (rows of one prompt are consecutive).

    Conversations (lists of ``{"role", "content"}``) are rendered with the tokenizer's chat template
    and ``add_generation_prompt=True`` (``chat_template_kwargs``, e.g. ``enable_thinking``, are
    passed on); strings are used as already-rendered text. ``max_prompt_length`` keeps each prompt's
    last tokens (MiniMind's ``--max_seq_len``). Generation runs under ``no_grad`` in eval mode; the
    policy's train / eval mode is restored afterwards. A response ends at its first stop token
    (``stop_ids``); everything after it is set to the pad id and masked out.
    """
    if num_samples < 1:
        raise ValueError("num_samples must be ≥ 1")
    from lmforge.decode.batch import Runner, left_pad
    from lmforge.decode.loop import Decoder, Job
    from lmforge.decode.sampling import SamplingParams

    texts, encoded = [], []
    for prompt in prompts:
        text, ids = _encode(tokenizer, prompt, chat_template_kwargs)
        if max_prompt_length is not None:
            ids = ids[-max_prompt_length:]
        texts += [text] * num_samples
        encoded += [ids] * num_samples
    stops = stop_ids(tokenizer, policy, stop_token_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    # each row samples with its own generator, seeded from torch's RNG: the run's --seed (and a
    # resumed run's restored RNG state) still decides every rollout
    seeds = torch.randint(0, 2**62, (len(encoded),)).tolist() if do_sample else [None] * len(encoded)
    jobs = [
        Job(
            ids,
            SamplingParams(
                max_tokens=max_new_tokens,
                temperature=temperature if do_sample else 0.0,
                top_p=top_p,
                top_k=max(top_k, 0),
                seed=seed,
            ),
        )
        for ids, seed in zip(encoded, seeds)
    ]
    with torch.no_grad(), eval_mode(policy):
        rows = Decoder(None, stops).run(Runner(policy, pad_id, switch_adapters=False), jobs)
    prompt_ids, prompt_mask, width = left_pad(encoded, pad_id)
    longest = max(len(r.generated) for r in rows)
    generated = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        generated[i, : len(r.generated)] = torch.tensor(r.generated, dtype=torch.long)
    device = _device(policy)  # where the rollout's tensors live, as `generate` left them
    prompt_ids, prompt_mask, generated = prompt_ids.to(device), prompt_mask.to(device), generated.to(device)
    gen_mask = response_mask_from(generated, stops)
    generated = generated.masked_fill(gen_mask == 0, pad_id)
    responses = tokenizer.batch_decode(
        [row[m.bool()].tolist() for row, m in zip(generated, gen_mask)], skip_special_tokens=True
    )
    return Rollout(
        input_ids=torch.cat([prompt_ids, generated], dim=1),
        attention_mask=torch.cat([prompt_mask, gen_mask], dim=1),
        response_mask=torch.cat([torch.zeros_like(prompt_mask), gen_mask], dim=1),
        prompt_length=width,
        responses=responses,
        prompts=texts,
        temperature=temperature if do_sample else 1.0,
    )


def position_ids_from(attention_mask: torch.Tensor) -> torch.Tensor:
    """cumsum(attention_mask) − 1, clamped at 0: real tokens count from 0 whatever the left padding."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp_min(0)


def next_token_logits(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    keep: int | None = None,
) -> torch.Tensor:
    """(B, W, V) float logits / temperature that predict tokens L − W … L − 1 of ``input_ids`` (W = L − 1,
    or ``keep`` when given: the model is then asked for ``logits_to_keep = keep + 1``, sparing the
    prompt's vocab-sized logits). Position ids restart at each row's first real token (left padding)."""
    length = input_ids.shape[1]
    kwargs = {"logits_to_keep": keep + 1} if keep is not None and keep + 1 < length else {}
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from(attention_mask),
        use_cache=False,
        **kwargs,
    ).logits
    return logits[:, :-1].float() / temperature


def logprobs_from_logits(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L − 1) log softmax(logits)[next token] from `next_token_logits`' (B, W, V) output, 0 in the
    L − 1 − W columns it did not compute and wherever ``mask`` (B, L − 1) is 0."""
    length, width = input_ids.shape[1], logits.shape[1]
    targets = input_ids[:, length - width :]
    logp = logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    if width < length - 1:
        logp = torch.cat([logp.new_zeros(logp.shape[0], length - 1 - width), logp], dim=1)
    return torch.where(mask.bool(), logp, torch.zeros((), dtype=logp.dtype, device=logp.device))


def sequence_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    keep: int | None = None,
) -> torch.Tensor:
    """(B, L − 1) log-probs of the next tokens, log softmax(logits_j / temperature)[input_ids_{j+1}].

    Positions whose target is padding (``attention_mask[:, 1:] == 0``) are 0. With ``keep`` only the
    last ``keep`` columns are computed and the earlier columns are 0. Differentiable unless called
    under ``no_grad``; the model's mode is left as it is. The one log-prob helper of lmforge's RL
    (rollouts, reference, the PPO / SPO policy update).
    """
    logits = next_token_logits(model, input_ids, attention_mask, temperature=temperature, keep=keep)
    return logprobs_from_logits(logits, input_ids, attention_mask[:, 1:])


def _batched_logprobs(model, rollout: Rollout, batch_size: int | None) -> torch.Tensor:
    """``sequence_logprobs`` of the rollout's rows under no_grad / eval mode, zero outside the response."""
    device = _device(model)
    keep = rollout.input_ids.shape[1] - rollout.prompt_length
    step = batch_size or len(rollout)
    chunks = []
    with torch.no_grad(), eval_mode(model):
        for i in range(0, len(rollout), step):
            ids = rollout.input_ids[i : i + step].to(device)
            mask = rollout.attention_mask[i : i + step].to(device)
            chunks.append(sequence_logprobs(model, ids, mask, temperature=rollout.temperature, keep=keep))
    logp = torch.cat(chunks).to(rollout.input_ids.device)
    return logp * rollout.logprob_mask.to(logp.dtype)


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def fill_logprobs(
    rollout: Rollout,
    policy,
    ref=None,
    *,
    ref_context: Callable[[], contextlib.AbstractContextManager] | None = None,
    use_adapter_disabled: bool = True,
    batch_size: int | None = None,
) -> Rollout:
    """Set ``rollout.old_logprobs`` (the policy's) and ``rollout.ref_logprobs``; returns the rollout.

    The reference is, in order: the model ``ref``; else the policy inside ``ref_context()`` (any
    context manager factory that turns the policy into the reference); else, for a peft ``PeftModel``
    policy with ``use_adapter_disabled``, the policy inside ``policy.disable_adapter()`` (the frozen base,
    no second copy in memory); else there is none and ``ref_logprobs`` is None. Both are computed under
    no_grad in eval mode at the rollout's temperature, ``batch_size`` rows at a time.
    """
    rollout.old_logprobs = _batched_logprobs(policy, rollout, batch_size)
    if ref is not None:
        rollout.ref_logprobs = _batched_logprobs(ref, rollout, batch_size)
    elif ref_context is not None or (use_adapter_disabled and _is_peft(policy)):
        with ref_context() if ref_context is not None else policy.disable_adapter():
            rollout.ref_logprobs = _batched_logprobs(policy, rollout, batch_size)
    else:
        rollout.ref_logprobs = None
    return rollout
