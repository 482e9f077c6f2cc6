"""lmforge's PPO trainer (on `RolloutTrainer`, `rollout_trainer.py`, which describes the rollout).

A separate critic (the starting model's body with a one-output token head,
``AutoModelForTokenClassification``) trained in the same optimizer (its own param group,
``--critic_learning_rate``, the same schedule); per-token rewards = score on the last response token −
``--kl_coef`` · KL(π‖π_ref) (k1); GAE (``--gamma``, ``--lam``); whitened advantages; clipped policy
loss (``--clip_epsilon``) + ``--vf_coef`` · clipped value loss (``--cliprange_value``). The importance
ratio is taken against an "old actor" refreshed every ``--update_old_actor_freq`` steps (MiniMind's
flag; 1: the sampling policy itself). The critic is saved as ``critic/`` in every checkpoint and in the
run folder (``AutoModelForTokenClassification.from_pretrained(run/critic)``).

Limits: one process (the critic is not synchronised across ranks); a PiSSA adapter's final save
bypasses the trainer, so the run folder gets no ``critic/`` then (checkpoints do).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.rl import ppo_math as pm
from lmforge.rl.rollout import Rollout, eval_mode, position_ids_from
from lmforge.training.rollout_trainer import (
    RolloutTrainer,
    is_peft_model,
    no_grad_logprobs,
    rollout_trainer_kwargs,
)

log = logging.getLogger("lmforge")

CRITIC_DIR = "critic"
OLD_ACTOR_FILE = "ppo_old_actor.safetensors"
SCORE_MOMENTS_FILE = "ppo_score_moments.json"


def build_critic(model, path: str | None = None):
    """The value model: the starting causal LM's body with a fresh one-output token head (no dropout).
    Under full / freeze tuning it copies the in-memory model (so LLaMA-Pro's expanded blocks are kept);
    under a PEFT tuner (or a quantised base) it is loaded in float32 from the base model folder."""
    from transformers import AutoModelForTokenClassification

    quantised = getattr(model, "is_quantized", False) or getattr(model, "quantization_method", None)
    if is_peft_model(model) or quantised:
        if not path:
            raise LmforgeError("PPO's critic under an adapter tuner is loaded from --model_name_or_path")
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path, num_labels=1)
        config.classifier_dropout = 0.0
        critic = AutoModelForTokenClassification.from_pretrained(path, config=config, dtype=torch.float32)
    else:
        config = copy.deepcopy(model.config)
        config.num_labels, config.classifier_dropout = 1, 0.0
        try:
            critic = AutoModelForTokenClassification.from_config(config)
        except ValueError as e:
            raise LmforgeError(f"PPO's critic: no token-classification head for this model ({e})") from None
        critic.base_model.load_state_dict(model.base_model.state_dict())
        critic.to(dtype=next(model.parameters()).dtype)
    critic.config.use_cache = False
    return critic


class PPOTrainer(RolloutTrainer):
    """Actor (``self.model``) + critic (``self.critic``) in one optimizer; see the module docstring."""

    def __init__(
        self,
        *,
        critic,
        critic_learning_rate: float,
        vf_coef: float = 0.5,
        cliprange_value: float = 0.2,
        gamma: float = 1.0,
        lam: float = 0.95,
        update_old_actor_freq: int = 1,
        score_norm: bool = False,
        whiten_rewards: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if update_old_actor_freq < 1:
            raise LmforgeError(f"--update_old_actor_freq must be >= 1; got {update_old_actor_freq}")
        self.critic = critic.to(self.args.device)
        self.critic.train()
        self.critic_learning_rate = float(critic_learning_rate)
        self.vf_coef, self.cliprange_value = float(vf_coef), float(cliprange_value)
        self.gamma, self.lam = float(gamma), float(lam)
        self.update_old_actor_freq = int(update_old_actor_freq)
        self.score_norm, self.whiten_rewards = bool(score_norm), bool(whiten_rewards)
        self._score_moments = [0, 0.0, 0.0]  # count, mean, sum of squared deviations (Welford)
        self._old_params: dict[str, torch.Tensor] | None = None  # the old actor's trainable weights
        self._old_step: int | None = None

    # --- optimizer: the critic as a second param group --------------------------------------
    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if not getattr(optimizer, "_lmforge_critic", False):
            params = [p for p in self.critic.parameters() if p.requires_grad]
            optimizer.add_param_group(
                {"params": params, "lr": self.critic_learning_rate, "weight_decay": self.args.weight_decay}
            )
            inner_step = optimizer.step

            def step(*a: Any, **kw: Any):
                try:
                    return inner_step(*a, **kw)
                finally:  # Trainer zeroes only the actor's gradients
                    self.critic.zero_grad(set_to_none=True)

            optimizer.step = step
            optimizer._lmforge_critic = True
        return optimizer

    def _get_grad_norm(self, model, grad_norm=None):
        """The actor's norm (clipped by Trainer) as usual; the critic is clipped on its own to the same
        --max_grad_norm, and a non-finite critic norm makes the NaN guard skip the step."""
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        max_norm = (
            self.args.max_grad_norm if self.args.max_grad_norm and self.args.max_grad_norm > 0 else math.inf
        )
        params = [p for p in self.critic.parameters() if p.grad is not None]
        if params:
            critic_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            self._metrics["train"]["critic_grad_norm"].append(critic_norm)
            if not math.isfinite(critic_norm):
                self._last_grad_norm = critic_norm
        return norm

    # --- the old actor ----------------------------------------------------------------------
    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def _old_logprobs(self, rollout: Rollout) -> torch.Tensor:
        if self.update_old_actor_freq == 1:
            return rollout.old_logprobs
        step = self.state.global_step
        if self._old_params is None or (step % self.update_old_actor_freq == 0 and step != self._old_step):
            self._old_params = {n: p.detach().clone() for n, p in self._trainable().items()}
            self._old_step = step
        current = self._trainable()
        with torch.no_grad():
            saved = {n: p.detach().clone() for n, p in current.items()}
            try:
                for n, p in current.items():
                    p.copy_(self._old_params[n])
                return no_grad_logprobs(self.model, rollout)
            finally:
                for n, p in current.items():
                    p.copy_(saved[n])

    # --- loss -------------------------------------------------------------------------------
    def _values(self, rollout: Rollout) -> torch.Tensor:
        """(B, L − 1) critic values aligned with the log-prob columns (V of the state before each
        response token), 0 outside the response."""
        attn = rollout.attention_mask
        values = self.critic(
            input_ids=rollout.input_ids,
            attention_mask=attn,
            position_ids=position_ids_from(attn),
            use_cache=False,
        ).logits[..., 0]
        values = values[:, :-1].float()
        return torch.where(
            rollout.logprob_mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device)
        )

    def _stage_loss(self, model, inputs, num_items_in_batch=None):
        rollout, scores, _ = self._experience(inputs)
        mask = rollout.logprob_mask
        old_logp = self._old_logprobs(rollout)
        with torch.no_grad(), eval_mode(self.critic):
            old_values = self._values(rollout)
            if rollout.ref_logprobs is not None:
                kl = pm.kl_estimate(rollout.old_logprobs, rollout.ref_logprobs, "k1", mask)
            else:
                kl = torch.zeros_like(old_values)
            if self.score_norm:
                scores, self._score_moments = pm.running_normalise(scores, self._score_moments)
            rewards = pm.token_rewards(scores, kl, mask, self.kl_coef)
            if self.whiten_rewards:
                rewards = pm.masked_whiten(rewards, mask, shift_mean=False)
            advantages, returns = pm.gae(rewards, old_values, mask, self.gamma, self.lam)
            advantages = pm.masked_whiten(advantages, mask)
        logp, entropy = self._policy_logprobs(model, rollout)
        p_loss, p_stats = pm.policy_loss(logp, old_logp, advantages, mask, self.clip_epsilon)
        self.critic.train()
        values = self._values(rollout)
        v_loss, v_stats = pm.value_loss(values, old_values, returns, mask, self.cliprange_value)
        loss = p_loss + self.vf_coef * v_loss
        self._log_policy(p_stats, entropy, p_loss)
        metrics = self._metrics["train"]
        metrics["value_loss"].append(float(v_loss.detach()))
        metrics["value_clip_fraction"].append(v_stats["value_clip_fraction"])
        metrics["values/mean"].append(float(pm.masked_mean(old_values, mask)))
        metrics["returns/mean"].append(float(pm.masked_mean(returns, mask)))
        return loss, None

    # --- checkpoints ------------------------------------------------------------------------
    def _save_extras(self, out: Path, *, checkpoint: bool) -> None:
        self.critic.save_pretrained(str(out / CRITIC_DIR))
        if checkpoint and self.score_norm:  # --ppo_score_norm's running moments resume exactly
            (out / SCORE_MOMENTS_FILE).write_text(json.dumps(self._score_moments))
        if checkpoint and self._old_params is not None:
            from safetensors.torch import save_file

            tensors = {n: t.detach().cpu().contiguous() for n, t in self._old_params.items()}
            save_file(tensors, str(out / OLD_ACTOR_FILE), metadata={"step": str(self._old_step)})

    def _load_extras(self, ckpt: Path) -> None:
        from transformers import AutoModelForTokenClassification

        folder = ckpt / CRITIC_DIR
        if not folder.is_dir():
            raise LmforgeError(f"{ckpt}: no {CRITIC_DIR}/ folder; it is not a PPO checkpoint")
        dtype = next(self.critic.parameters()).dtype
        loaded = AutoModelForTokenClassification.from_pretrained(str(folder), dtype=dtype)
        self.critic.load_state_dict(loaded.state_dict())
        del loaded
        if (ckpt / SCORE_MOMENTS_FILE).is_file():
            self._score_moments = json.loads((ckpt / SCORE_MOMENTS_FILE).read_text())
        old = ckpt / OLD_ACTOR_FILE
        if old.is_file() and self.update_old_actor_freq > 1:
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(old), "pt") as fh:
                self._old_step = int((fh.metadata() or {}).get("step", 0))
            device = next(self.model.parameters()).device
            self._old_params = {n: t.to(device) for n, t in load_file(str(old)).items()}
            missing = set(self._trainable()) - set(self._old_params)
            if missing:
                log.warning("%s: old actor lacks %d weights; it is refreshed now", old, len(missing))
                self._old_params, self._old_step = None, None


def ppo_trainer(ctx) -> PPOTrainer:
    cfg = ctx.cfg
    critic = build_critic(ctx.model, cfg.get("model_name_or_path"))
    return PPOTrainer(
        critic=critic,
        critic_learning_rate=cfg["critic_learning_rate"],
        vf_coef=cfg["vf_coef"],
        cliprange_value=cfg["cliprange_value"],
        gamma=cfg["gamma"],
        lam=cfg["lam"],
        update_old_actor_freq=cfg["update_old_actor_freq"],
        score_norm=cfg["score_norm"],
        whiten_rewards=cfg["whiten_rewards"],
        **rollout_trainer_kwargs(ctx, cfg["kl_coef"], cfg["clip_epsilon"]),
    )
