"""Chunked linear + cross-entropy for causal-LM training: the (batch, length, vocab) logits are
never materialised.

The plain path computes `lm_head(hidden)` for every position of the batch (B x T x V floats, plus
an fp32 copy, its softmax and its gradient: four such tensors alive at the peak), then throws away
the rows whose label is -100 (prompt tokens, padding, the first token of every packed document).
Here the model runs with `logits_to_keep` set to keep no position, its final hidden state is read
from the decoder's output, only the positions that carry a label are gathered, and the head and the
loss run over them in chunks of `chunk_size` tokens. Each chunk's gradient (softmax minus one-hot,
times the optional per-token weight) is turned into the gradients of the hidden states and of the
head weight straight away, so only one (chunk, V) block is ever alive and backward is a scaling:
the same three matrix products as the plain path, none repeated.

Written by hand because no maintained library does this on CPU: liger-kernel's fused linear
cross-entropy is Triton (CUDA) only, and the plain PyTorch path always builds the full logits.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

IGNORE_INDEX = -100

# Causal-LM families whose head is exactly `logits = lm_head(hidden[:, kept])`: no soft-capping,
# logit scale or multiplier between the decoder's output and the loss (checked in transformers 5).
SUPPORTED_MODEL_TYPES = frozenset(
    {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "olmo2", "smollm3", "phi3"}
)
# Config fields that change logits after the head (any set value means: use the plain path).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_softcapping", "logit_scale", "logits_scaling")


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i w_i * CE(hidden_i @ weight.T + bias, target_i) over N labelled positions, in chunks."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, weights, chunk_size, need_h, need_w, need_b):
        n = hidden.shape[0]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for start in range(0, n, chunk_size):
            end = min(start + chunk_size, n)
            h, y = hidden[start:end], targets[start:end]
            logits = h @ weight.t()
            if bias is not None:
                logits = logits + bias
            logits = logits.float()  # (chunk, V): the only vocabulary-sized block alive
            lse = torch.logsumexp(logits, dim=-1)
            ce = lse - logits.gather(1, y[:, None]).squeeze(1)
            w = None if weights is None else weights[start:end].float()
            total += (ce if w is None else ce * w).sum()
            if not (need_h or need_w or need_b):
                continue
            grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place
            grad[torch.arange(end - start, device=grad.device), y] -= 1.0
            if w is not None:
                grad.mul_(w[:, None])
            if need_b:
                grad_b += grad.sum(0)
            grad = grad.to(hidden.dtype)
            if need_h:
                torch.mm(grad, weight, out=grad_h[start:end])
            if need_w:
                grad_w += (grad.t() @ h).float()
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        dh = None if grad_h is None else grad_h * grad_out.to(grad_h.dtype)
        dw = None if grad_w is None else (grad_w * grad_out).to(w_dtype)
        db = None if grad_b is None else (grad_b * grad_out).to(b_dtype)
        return dh, dw, db, None, None, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    chunk_size: int = 1024,
    shift: bool = True,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, int]:
    """(sum over labelled positions of weight x cross-entropy, number of labelled positions).

    hidden: (B, T, H) final hidden states; weight: the (V, H) head; labels: (B, T), `ignore_index`
    where no loss is taken; weights: optional (B, T) per-token loss weights. With `shift` (causal
    LM) position t predicts labels[t + 1], as transformers' `ForCausalLMLoss`. Packed and flattened
    rows need nothing special: their first token of every document carries `ignore_index`.
    The caller divides the sum by its normaliser (the batch's token count, or `num_items_in_batch`).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive; got {chunk_size}")
    if shift:
        hidden, labels = hidden[:, :-1], labels[:, 1:]
        weights = None if weights is None else weights[:, 1:]
    keep = labels != ignore_index  # (B, T-1)
    h = hidden[keep]  # (N, H): only positions that carry a label reach the head
    y = labels[keep].to(torch.long)
    w = None if weights is None else weights[keep]
    n = int(y.numel())
    if n == 0:  # nothing to learn here; stay connected to the graph (DDP expects every gradient)
        return hidden.sum() * 0.0 + weight.sum() * 0.0, 0
    grad_on = torch.is_grad_enabled()
    need_h, need_w = grad_on and h.requires_grad, grad_on and weight.requires_grad
    need_b = bias is not None and grad_on and bias.requires_grad
    total = _LinearCrossEntropy.apply(h, weight, bias, y, w, int(chunk_size), need_h, need_w, need_b)
    return total, n


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under DDP / accelerate / peft wrappers."""
    seen = 0
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module) and seen < 4:
        model, seen = model.module, seen + 1  # DistributedDataParallel, DataParallel
    get_base = getattr(model, "get_base_model", None)  # peft.PeftModel
    if callable(get_base) and type(model).__module__.startswith("peft"):
        model = get_base()
    return model


def head_of(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """(decoder, lm_head) when the chunked loss computes exactly this model's loss, else None.

    Needs a supported causal-LM family (no logit soft-capping or scaling after the head), a plain
    `nn.Linear` head (a LoRA-wrapped or `modules_to_save` head keeps the plain path), a decoder
    whose output is the head's input, and a forward that takes `logits_to_keep`."""
    inner = _unwrap(model)
    config = getattr(inner, "config", None)
    if config is None or getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return None
    if any(getattr(config, name, None) not in (None, 0, 1.0) for name in _LOGIT_TRANSFORMS):
        return None
    head = getattr(inner, "lm_head", None)
    if type(head) is not torch.nn.Linear:
        return None
    decoder = getattr(inner, "model", None)
    if not isinstance(decoder, torch.nn.Module):
        return None
    try:
        if "logits_to_keep" not in inspect.signature(type(inner).forward).parameters:
            return None
    except (TypeError, ValueError):
        return None
    return decoder, head


def forward_hidden(model: torch.nn.Module, decoder: torch.nn.Module, inputs: dict[str, Any]):
    """Run `model` (through any wrapper, so DDP still sees its forward) computing no logits;
    returns (outputs, final hidden states (B, T, H))."""
    captured: list[torch.Tensor] = []

    def grab(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    ids = inputs.get("input_ids", inputs.get("inputs_embeds"))
    keep_none = torch.zeros(0, dtype=torch.long, device=ids.device)  # logits for no position: (B, 0, V)
    handle = decoder.register_forward_hook(grab)
    try:
        outputs = model(**inputs, logits_to_keep=keep_none)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"expected one decoder output, got {len(captured)}")
    return outputs, captured[0]
