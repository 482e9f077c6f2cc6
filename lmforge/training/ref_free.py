"""Reference-free preference losses: ORPO, SimPO and CPO on lmforge's own trainer.

- ORPO: Hong, Lee, Thorne 2024, "ORPO: Monolithic Preference Optimization without Reference Model",
  arXiv:2403.07691.
- SimPO: Meng, Xia, Chen 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
  arXiv:2405.14734.
- CPO: Xu et al. 2024, "Contrastive Preference Optimization: Pushing the Boundaries of LLM Performance
  in Machine Translation", arXiv:2401.08417.

Written by hand because trl 1.16 only has these trainers under `trl.experimental` (no stability
promise); the batches are TRL's stable `DataCollatorForPreference` ones, unchanged: `input_ids` (2B, T)
with the B chosen sequences first and then the B rejected ones (prompt + completion, right-padded),
`attention_mask` and `completion_mask` (1 on completion tokens). The math is `preference_loss`, a pure
function; `RefFreePreferenceTrainer` runs the forward pass and logs TRL's `rewards/*` metrics.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lmforge.errors import LmforgeError
from lmforge.training.trainer import LmforgeTrainer

KINDS = ("orpo", "simpo", "cpo")
# batch keys that are not passed to the model (the rest, e.g. pixel_values / image_grid_thw, are)
_NOT_MODEL_INPUTS = (
    "input_ids", "attention_mask", "completion_mask", "labels", "ref_chosen_logps", "ref_rejected_logps",
)  # fmt: skip


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x < 0, stable on both sides of −ln 2 (Mächler 2012). x is clamped to
    ≤ −1e-6 first, so a sequence the model is already certain of gives a finite value and gradient."""
    x = x.clamp(max=-1e-6)
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def _sigmoid_loss(x: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """−log σ(x), or with label smoothing ε: (1−ε)·(−log σ(x)) + ε·(−log σ(−x))."""
    loss = -F.logsigmoid(x)
    if label_smoothing:
        loss = (1 - label_smoothing) * loss + label_smoothing * -F.logsigmoid(-x)
    return loss


def preference_loss(
    kind: str,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    chosen_nll: torch.Tensor,
    *,
    beta: float,
    gamma: float = 0.0,
    alpha: float = 0.0,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One batch's reference-free preference loss.

    Inputs: `chosen_logps`/`rejected_logps` (B,) are per-sequence SUMS of completion-token log-probs,
    `chosen_tokens`/`rejected_tokens` (B,) the completion token counts, `chosen_nll` (scalar) the mean
    NLL over all chosen completion tokens of the batch. a_c = chosen_logps / chosen_tokens and a_r
    likewise are average per-token log-probs; L_ε(x) = (1−ε)·(−log σ(x)) + ε·(−log σ(−x)) with
    ε = `label_smoothing` (L_0(x) = −log σ(x), the papers' loss); means are over the B pairs.

    - `orpo`: log_odds = (a_c − a_r) − (log(1 − e^a_c) − log(1 − e^a_r)), the log odds ratio of
      Hong et al. eq. 4/7; loss = chosen_nll + beta · mean(L_ε(log_odds)), beta being ORPO's λ (0.1).
      Rewards beta·a_c, beta·a_r.
    - `simpo`: loss = mean(L_ε(beta·(a_c − a_r) − gamma)) + alpha·chosen_nll; beta 2.0–2.5 and the
      target margin gamma 0.5–1.5 in the paper, alpha 0 (plain SimPO). Rewards beta·a_c, beta·a_r.
    - `cpo`: loss = mean(L_ε(beta·(chosen_logps − rejected_logps))) + alpha·chosen_nll (sequence sums,
      no length normalisation); beta 0.1, alpha 1.0 in the paper. Rewards beta·chosen_logps,
      beta·rejected_logps.

    Returns `(loss, per_pair)`: a scalar tensor and a dict of (B,) tensors: `chosen_rewards`,
    `rejected_rewards`, `pref_loss` (the L_ε term before any beta/alpha weighting), and for orpo `log_odds`.
    """
    if kind not in KINDS:
        raise LmforgeError(
            f"reference-free preference loss {kind!r} is not known; expected one of {', '.join(KINDS)}"
        )
    dtype = torch.promote_types(chosen_logps.dtype, torch.float32)  # at least float32; float64 stays
    chosen_logps, rejected_logps = chosen_logps.to(dtype), rejected_logps.to(dtype)
    avg_chosen = chosen_logps / chosen_tokens.to(chosen_logps.dtype).clamp(min=1)
    avg_rejected = rejected_logps / rejected_tokens.to(rejected_logps.dtype).clamp(min=1)
    per_pair: dict[str, torch.Tensor] = {}
    if kind == "orpo":
        log_odds = (avg_chosen - avg_rejected) - (log1mexp(avg_chosen) - log1mexp(avg_rejected))
        terms = _sigmoid_loss(log_odds, label_smoothing)
        loss = chosen_nll + beta * terms.mean()
        chosen_rewards, rejected_rewards = beta * avg_chosen, beta * avg_rejected
        per_pair["log_odds"] = log_odds
    elif kind == "simpo":
        terms = _sigmoid_loss(beta * (avg_chosen - avg_rejected) - gamma, label_smoothing)
        loss = terms.mean() + alpha * chosen_nll
        chosen_rewards, rejected_rewards = beta * avg_chosen, beta * avg_rejected
    else:  # cpo
        terms = _sigmoid_loss(beta * (chosen_logps - rejected_logps), label_smoothing)
        loss = terms.mean() + alpha * chosen_nll
        chosen_rewards, rejected_rewards = beta * chosen_logps, beta * rejected_logps
    per_pair.update(chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards, pref_loss=terms)
    return loss, per_pair


def completion_logps(model, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
    """Forward a preference batch (with its image inputs, if any). Returns the per-sequence sums of completion-token log-probs (2B,),
    the completion token counts (2B,), the per-token log-probs with non-completion positions zeroed
    (2B, T−1), and the model outputs."""
    input_ids = inputs["input_ids"]
    media = {k: v for k, v in inputs.items() if k not in _NOT_MODEL_INPUTS}  # a vision LLM's images
    outputs = model(input_ids=input_ids, attention_mask=inputs["attention_mask"], use_cache=False, **media)
    logits = outputs.logits[:, :-1, :].float()  # (2B, T-1, V): position t predicts token t+1
    targets = input_ids[:, 1:]
    token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    mask = inputs["completion_mask"][:, 1:].to(token_logps.dtype)
    token_logps = token_logps * mask
    return token_logps.sum(-1), mask.sum(-1), token_logps, outputs


class PairTrainer(LmforgeTrainer):
    """Shared by lmforge's own preference trainers (this module's, training/vision_dpo.py's): batches
    of B chosen then B rejected sequences, TRL's `rewards/*` metrics, evaluation by the loss."""

    _wants_outputs = False
    # The loss is a per-micro-batch mean: Trainer divides it by the gradient accumulation steps.
    loss_is_scaled_for_ga = False

    def _set_signature_columns_if_needed(self) -> None:
        # With remove_unused_columns=True, keep the collator's columns (the model's forward has none of them).
        if self._signature_columns is None:
            self._signature_columns = ["prompt_ids", "chosen_ids", "rejected_ids"]

    def _log_metrics(self, model, chosen_logps, rejected_logps, chosen_nll, per_pair) -> None:
        mode = "train" if model.training else "eval"
        metrics = self._metrics[mode]

        def mean(x: torch.Tensor) -> float:
            return self.accelerator.gather(x.detach().reshape(-1)).float().mean().item()

        chosen, rejected = per_pair["chosen_rewards"].detach(), per_pair["rejected_rewards"].detach()
        metrics["rewards/chosen"].append(mean(chosen))
        metrics["rewards/rejected"].append(mean(rejected))
        metrics["rewards/margins"].append(mean(chosen - rejected))
        metrics["rewards/accuracies"].append(mean((chosen > rejected).float()))
        metrics["logps/chosen"].append(mean(chosen_logps))
        metrics["logps/rejected"].append(mean(rejected_logps))
        metrics["nll_loss"].append(mean(chosen_nll))
        if "log_odds" in per_pair:  # TRL ORPO's names: mean log σ(log_odds) and mean log_odds
            metrics["log_odds_ratio"].append(mean(F.logsigmoid(per_pair["log_odds"])))
            metrics["log_odds_chosen"].append(mean(per_pair["log_odds"]))

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation: the preference loss (batches have no labels, so Trainer's own would return None)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs, return_outputs=False)
        return loss.detach(), None, None


class RefFreePreferenceTrainer(PairTrainer):
    """ORPO / SimPO / CPO (`loss_type`) on `LmforgeTrainer`; feed it `DataCollatorForPreference` batches
    (or training/vision_dpo.py's `VisionPairCollator` ones for a vision LLM).

    The loss comes in through the mixin's `_stage_loss` hook, so NaN fault injection, token counting
    and aux-loss logging in `LmforgeMixin.compute_loss` all still apply."""

    def __init__(
        self,
        *args: Any,
        loss_type: str,
        beta: float,
        gamma: float = 0.0,
        alpha: float = 0.0,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ):
        if loss_type not in KINDS:
            raise LmforgeError(f"loss_type {loss_type!r} is not known; expected one of {', '.join(KINDS)}")
        self.loss_type = loss_type
        self.beta, self.gamma, self.alpha, self.label_smoothing = beta, gamma, alpha, label_smoothing
        super().__init__(*args, **kwargs)

    def _stage_loss(self, model, inputs, num_items_in_batch=None):
        """(loss, outputs) for one preference micro-batch; called by `LmforgeMixin.compute_loss`."""
        seq_logps, seq_tokens, token_logps, outputs = completion_logps(model, inputs)
        chosen_logps, rejected_logps = seq_logps.chunk(2)
        chosen_tokens, rejected_tokens = seq_tokens.chunk(2)
        chosen_nll = -token_logps.chunk(2)[0].sum() / chosen_tokens.sum().clamp(min=1)
        loss, per_pair = preference_loss(
            self.loss_type,
            chosen_logps,
            rejected_logps,
            chosen_tokens,
            rejected_tokens,
            chosen_nll,
            beta=self.beta,
            gamma=self.gamma,
            alpha=self.alpha,
            label_smoothing=self.label_smoothing,
        )
        loss = add_aux_loss(self, loss, outputs)
        self._log_metrics(model, chosen_logps, rejected_logps, chosen_nll, per_pair)
        return loss, outputs


def add_aux_loss(trainer, loss: torch.Tensor, outputs) -> torch.Tensor:
    """`loss` plus the model's router aux loss × its coefficient (MoE models), else `loss`."""
    aux = getattr(outputs, "aux_loss", None)
    # trainer.model: the forward's `model` may be a DDP wrapper without `.config`
    coef = getattr(getattr(trainer.model, "config", None), "router_aux_loss_coef", None)
    return loss + coef * aux if aux is not None and coef else loss
