"""The math of lmforge's PPO and SPO trainers: advantages, KL estimates, clipped losses, baselines.

Written by hand because no maintained library provides PPO / SPO for Hugging Face causal LMs with
trl 1.16 (it ships GRPO, but no PPO trainer, not even under ``trl.experimental``); MiniMind
likewise hand-writes both scripts.

Conventions: every tensor is (B, T) — one row per sampled response, one column per next-token
position — and ``mask`` is 1 on response tokens and 0 on prompt / padding positions. Response tokens
are contiguous in each row (left context and right padding are both fine). Masked positions never
reach a result: they are zeroed or excluded from every mean, so garbage there is harmless.

PPO (Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv:1707.06347) in its
RLHF form: the reward of a response is the sequence score on its last token minus a per-token KL
penalty to a frozen reference (``token_rewards``); a critic's values turn these into token-level
advantages with GAE (Schulman et al. 2015, "High-Dimensional Continuous Control Using Generalized
Advantage Estimation", arXiv:1506.02438; ``gae``); the actor minimises the clipped surrogate
(``policy_loss``) and the critic a clipped squared error (``value_loss``). MiniMind's flags map onto
the arguments: ``--clip_epsilon`` → ``clip_eps``, ``--kl_coef`` → ``kl_coef``, ``--vf_coef``
weighs ``value_loss``; ``--update_old_actor_freq`` decides how often ``old_logp`` is refreshed.

SPO (single-stream policy optimisation; Xu & Ding 2025, arXiv:2509.13232) drops both the critic and
GRPO's groups: one sample per prompt, and the baseline comes from a persistent per-prompt value
tracker instead of sibling samples, with advantages normalised over the whole batch. MiniMind's
``train_spo.py`` exposes only ``--beta`` (KL coefficient) and ``--reasoning`` in its documented
flags, so lmforge's tracker (``ValueTracker``) is the simple form: the baseline of prompt p is an
exponential moving average of p's past rewards at rate ``--spo_ema`` (default 0.1), a prompt never
seen before starts from the global running mean of all rewards, and the advantage is
``r − b_p`` whitened over the batch. Its state is plain JSON so a resumed run restores it exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch

__all__ = [
    "ValueTracker",
    "entropy_from_logits",
    "gae",
    "kl_estimate",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "policy_loss",
    "prompt_key",
    "running_normalise",
    "token_rewards",
    "value_loss",
]


def _zero_outside(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` where ``mask`` is set, 0 elsewhere (NaN / inf in masked slots do not leak)."""
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ(x·m) / Σm over ``dim`` (all elements when None); 0 where the mask is empty."""
    m = mask.to(x.dtype)
    if dim is None:
        return _zero_outside(x, mask).sum() / m.sum().clamp_min(1e-8)
    return _zero_outside(x, mask).sum(dim) / m.sum(dim).clamp_min(1e-8)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the masked elements, Σm(x−μ)²/(n−1) (Bessel-corrected when ``unbiased``)."""
    mean = masked_mean(x, mask)
    n = mask.to(x.dtype).sum()
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x − μ)/√(σ² + 1e-8) with μ, σ² over the masked elements; with ``shift_mean=False`` μ is
    added back (only the scale changes). Positions outside the mask are 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return _zero_outside(out, mask)


@torch.no_grad()
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level generalised advantage estimation; returns (advantages, returns), both (B, T).

    With m the mask and, beyond the last column, V = A = 0::

        δ_t = r_t + γ · m_{t+1} · V_{t+1} − V_t
        A_t = m_t · (δ_t + γλ · A_{t+1})
        R_t = m_t · (A_t + V_t)

    so the value after the last response token is bootstrapped as 0 (the episode ends there) and
    prompt / padding positions get A = R = 0. ``rewards`` carries the sequence score on the last
    response token and the KL penalties elsewhere (see ``token_rewards``). Inputs are treated as
    constants (no gradient flows through).
    """
    m = mask.to(values.dtype)
    rewards, values = _zero_outside(rewards.to(values.dtype), mask), _zero_outside(values, mask)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = m[:, t] * (delta + gamma * lam * next_adv)
        advantages[:, t] = next_adv
        next_value = values[:, t]  # already 0 where the mask is 0, which gives the m_{t+1} factor
    return advantages, (advantages + values) * m


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) column of each row's last masked position (0 for an empty row)."""
    cols = torch.arange(mask.shape[1], device=mask.device)
    return (mask.bool() * (cols + 1)).argmax(dim=1)


def token_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards (B, T): r_t = −kl_coef · kl_t on response tokens, plus ``score`` (B,) on
    each row's last response token; 0 outside the mask."""
    rewards = _zero_outside(-kl_coef * kl, mask)
    has_tokens = mask.bool().any(dim=1)
    bonus = torch.where(has_tokens, score.to(rewards.dtype), torch.zeros_like(rewards[:, 0]))
    return rewards.scatter_add(1, last_token_index(mask)[:, None], bonus[:, None])


def kl_estimate(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    kind: Literal["k1", "k2", "k3"] = "k1",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from the sampled token's log-probs (Schulman's
    approximators, http://joschu.net/blog/kl-approx.html). With d = log π − log π_ref:

    - ``k1`` = d (unbiased, can be negative);
    - ``k2`` = d² / 2 (low variance, biased);
    - ``k3`` = exp(−d) + d − 1 = exp(ref − logp) − (ref − logp) − 1 (unbiased and ≥ 0; GRPO's).

    All three are exactly 0 where logp == ref_logp. With ``mask`` positions outside it are 0.
    """
    d = logp - ref_logp
    if kind == "k1":
        kl = d
    elif kind == "k2":
        kl = 0.5 * d**2
    elif kind == "k3":
        kl = torch.expm1(-d) + d
    else:
        raise ValueError(f"unknown KL estimator {kind!r}; use k1, k2 or k3")
    return kl if mask is None else _zero_outside(kl, mask)


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate, minimised: with ρ = exp(logp − old_logp) and A detached,

        L = mean_mask max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)).

    Stats: ``clip_fraction`` (share of tokens where the clipped term is the larger, i.e. active),
    ``approx_kl`` = mean_mask((ρ − 1) − log ρ) (k3 of the old policy to the new) and ``ratio`` =
    mean_mask ρ.
    """
    log_ratio = _zero_outside(logp - old_logp, mask)
    ratio = torch.exp(log_ratio)
    adv = advantages.detach()
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clip_fraction": masked_mean((clipped > unclipped).float(), mask).item(),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask).item(),
            "ratio": masked_mean(ratio, mask).item(),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps_value: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped critic loss, L = ½ · mean_mask max((v − R)², (v_clip − R)²) with
    v_clip = v_old + clip(v − v_old, −ε, ε). Stats: ``value_clip_fraction`` (share of tokens where
    the clipped error is the larger) and ``value_mean``."""
    returns, old_values = returns.detach(), old_values.detach()
    v_clip = old_values + torch.clamp(values - old_values, -clip_eps_value, clip_eps_value)
    err, err_clip = (values - returns) ** 2, (v_clip - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clip), mask)
    with torch.no_grad():
        stats = {
            "value_clip_fraction": masked_mean((err_clip > err).float(), mask).item(),
            "value_mean": masked_mean(values, mask).item(),
        }
    return loss, stats


def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the mask of the token entropy H = logsumexp(z) − Σ softmax(z)·z of (B, T, V) logits."""
    z = logits.float()
    entropy = torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(dim=-1)
    return masked_mean(entropy, mask)


def prompt_key(prompt: Sequence[dict[str, Any]] | str) -> str:
    """A stable key for ``ValueTracker``: sha1 of the prompt text or of the canonical JSON of a chat."""
    text = prompt if isinstance(prompt, str) else json.dumps(list(prompt), sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class ValueTracker:
    """SPO's persistent per-prompt baseline (see the module docstring).

    For each reward r of prompt p, in order: b_p ← (1 − α)·b_p + α·r, where an unseen prompt's
    b_p starts at the global running mean ḡ of all rewards seen so far (0 before any), and then ḡ
    absorbs r. ``advantages`` uses the baselines from *before* the batch's update, so a sample
    never serves as its own baseline.
    """

    def __init__(self, rate: float = 0.1) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"ValueTracker rate must be in (0, 1], got {rate}")
        self.rate = float(rate)
        self.values: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.global_mean = 0.0
        self.global_count = 0

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def baseline(self, keys: Sequence[str]) -> torch.Tensor:
        """(B,) float32 baselines b_p (the global mean for unseen prompts)."""
        return torch.tensor([self.values.get(k, self.global_mean) for k in keys], dtype=torch.float32)

    def update(self, keys: Sequence[str], rewards: torch.Tensor | Sequence[float]) -> None:
        """Fold one reward per key into the per-prompt EMA and the global mean."""
        values = rewards.detach().float().cpu().tolist() if torch.is_tensor(rewards) else list(rewards)
        if len(values) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(values)} rewards")
        for key, r in zip(keys, values):
            prior = self.values.get(key, self.global_mean)
            self.values[key] = (1.0 - self.rate) * prior + self.rate * float(r)
            self.counts[key] = self.counts.get(key, 0) + 1
            self.global_count += 1
            self.global_mean += (float(r) - self.global_mean) / self.global_count

    def advantages(
        self,
        keys: Sequence[str],
        rewards: torch.Tensor | Sequence[float],
        normalize: bool = True,
        update: bool = True,
    ) -> torch.Tensor:
        """(B,) advantages A = r − b_p (baselines before this batch), then the tracker is updated
        (``update``) and, with ``normalize``, A is whitened over the batch: (A − mean)/(std + 1e-8)
        (a batch of one keeps its raw advantage). Returned on ``rewards``' device when a tensor."""
        r = (
            rewards.detach().float()
            if torch.is_tensor(rewards)
            else torch.tensor(rewards, dtype=torch.float32)
        )
        adv = r - self.baseline(keys).to(r.device)
        if update:
            self.update(keys, r)
        if normalize and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
        return adv

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (floats round-trip exactly through ``json``)."""
        return {
            "rate": self.rate,
            "values": dict(self.values),
            "counts": dict(self.counts),
            "global_mean": self.global_mean,
            "global_count": self.global_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rate = float(state["rate"])
        self.values = {str(k): float(v) for k, v in state["values"].items()}
        self.counts = {str(k): int(v) for k, v in state.get("counts", {}).items()}
        self.global_mean = float(state["global_mean"])
        self.global_count = int(state["global_count"])


def running_normalise(scores: torch.Tensor, moments: list) -> tuple[torch.Tensor, list]:
    """(scores − running mean) / running std over every score seen so far, this batch included
    (LLaMA-Factory's ppo_score_norm). `moments` = [count, mean, sum of squared deviations] (Welford);
    returns the normalised scores and the updated moments."""
    n, mean, m2 = moments
    for x in scores.detach().float().cpu().tolist():
        n += 1
        delta = x - mean
        mean += delta / n
        m2 += delta * (x - mean)
    std = math.sqrt(m2 / (n - 1)) if n > 1 else 1.0
    return (scores - mean) / (std + 1e-8), [n, mean, m2]
