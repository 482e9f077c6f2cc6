"""lmforge's SPO trainer (on `RolloutTrainer`, `rollout_trainer.py`, which describes the rollout).

No critic; a persistent per-prompt baseline (``ValueTracker``, EMA rate ``--spo_ema``), the
whitened sequence advantage broadcast over the response tokens, clipped policy loss plus
``--beta`` · KL(π‖π_ref) (k3) in the loss. The tracker is saved as ``spo_value_tracker.json`` in every
checkpoint and restored on resume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.rl import ppo_math as pm
from lmforge.training.rollout_trainer import RolloutTrainer, rollout_trainer_kwargs

TRACKER_FILE = "spo_value_tracker.json"


class SPOTrainer(RolloutTrainer):
    """Single-stream policy optimisation with a persistent per-prompt baseline; see the module docstring."""

    def __init__(self, *, spo_ema: float = 0.1, **kwargs: Any):
        super().__init__(**kwargs)
        self.tracker = pm.ValueTracker(spo_ema)

    def _stage_loss(self, model, inputs, num_items_in_batch=None):
        rollout, scores, prompts = self._experience(inputs)
        mask = rollout.logprob_mask
        keys = [pm.prompt_key(p) for p in prompts]
        baseline = self.tracker.baseline(keys).to(scores.device)
        advantage = self.tracker.advantages(keys, scores, normalize=True, update=True).to(scores.device)
        token_adv = advantage[:, None] * mask.to(advantage.dtype)
        logp, entropy = self._policy_logprobs(model, rollout)
        p_loss, p_stats = pm.policy_loss(logp, rollout.old_logprobs, token_adv, mask, self.clip_epsilon)
        loss = p_loss
        if self.kl_coef > 0 and rollout.ref_logprobs is not None:
            kl = pm.masked_mean(pm.kl_estimate(logp, rollout.ref_logprobs, "k3", mask), mask)
            loss = loss + self.kl_coef * kl
            self._metrics["train"]["kl_loss"].append(float(kl.detach()))
        self._log_policy(p_stats, entropy, p_loss)
        metrics = self._metrics["train"]
        metrics["baseline/mean"].append(float(baseline.mean()))
        metrics["advantage/mean"].append(float((scores - baseline).mean()))
        return loss, None

    def _save_extras(self, out: Path, *, checkpoint: bool) -> None:
        if checkpoint:
            from lmforge.runs import atomic_write_text

            atomic_write_text(out / TRACKER_FILE, json.dumps(self.tracker.state_dict()))

    def _load_extras(self, ckpt: Path) -> None:
        path = ckpt / TRACKER_FILE
        if not path.is_file():
            raise LmforgeError(f"{ckpt}: no {TRACKER_FILE}; it is not an SPO checkpoint")
        self.tracker.load_state_dict(json.loads(path.read_text(encoding="utf-8")))


def spo_trainer(ctx) -> SPOTrainer:
    cfg = ctx.cfg
    return SPOTrainer(spo_ema=cfg["spo_ema"], **rollout_trainer_kwargs(ctx, cfg["beta"], cfg["clip_epsilon"]))
