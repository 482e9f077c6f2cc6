"""lmforge's own PPO and SPO trainers (trl 1.16 has no PPO), on `LmforgeTrainer` so run folders, atomic
checkpoints, resume, the NaN guard, metrics.jsonl and every `--tuner` work as for the other stages.

One optimizer step per micro-batch group, as MiniMind's scripts do (one update per rollout): the
dataloader yields prompt rows (``prompt`` messages + ``answer``, passed through as lists); for each
micro-batch the current policy samples a rollout (``lmforge.rl.rollout.generate``, seeded with the
trainer's seed, the global step and the micro-batch index so a resumed run samples the same answers),
the reward functions score it (weighted by ``combine``), log-probs of the sampling policy and of the
reference are taken (reference: a frozen copy of the starting model under full tuning, the
adapter-disabled base under a PEFT tuner, none when the KL coefficient is 0), then the loss:

- PPO: a separate critic (the starting model's body with a one-output token head,
  ``AutoModelForTokenClassification``) trained in the same optimizer (its own param group,
  ``--critic_learning_rate``, the same schedule); per-token rewards = score on the last response token −
  ``--kl_coef`` · KL(π‖π_ref) (k1); GAE (``--gamma``, ``--lam``); whitened advantages; clipped policy
  loss (``--clip_epsilon``) + ``--vf_coef`` · clipped value loss (``--cliprange_value``). The importance
  ratio is taken against an "old actor" refreshed every ``--update_old_actor_freq`` steps (MiniMind's
  flag; 1: the sampling policy itself). The critic is saved as ``critic/`` in every checkpoint and in the
  run folder (``AutoModelForTokenClassification.from_pretrained(run/critic)``).
- SPO: no critic; a persistent per-prompt baseline (``ValueTracker``, EMA rate ``--spo_ema``), the
  whitened sequence advantage broadcast over the response tokens, clipped policy loss plus
  ``--beta`` · KL(π‖π_ref) (k3) in the loss. The tracker is saved as ``spo_value_tracker.json`` in every
  checkpoint and restored on resume.

Evaluation (``--val_size`` / ``--val_dataset``) generates greedy answers for the held-out prompts and
logs their mean reward as ``eval_reward`` (and ``eval_rewards/<name>/mean``).

Limits: one process (the critic and the SPO tracker are not synchronised across ranks); a PiSSA
adapter's final save bypasses the trainer, so the run folder gets no ``critic/`` then (checkpoints do).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.rl import ppo_math as pm
from lmforge.rl.rewards import combine
from lmforge.rl.rollout import (
    Rollout,
    eval_mode,
    fill_logprobs,
    generate,
    position_ids_from,
    sequence_logprobs,
)
from lmforge.training.trainer import LmforgeTrainer

log = logging.getLogger("lmforge")

CRITIC_DIR = "critic"
TRACKER_FILE = "spo_value_tracker.json"
OLD_ACTOR_FILE = "ppo_old_actor.safetensors"
SCORE_MOMENTS_FILE = "ppo_score_moments.json"


def collate_rows(rows: list[dict[str, Any]]) -> dict[str, list]:
    """Prompt rows → one dict of column lists (no tensors: the trainer renders and generates itself)."""
    return {key: [row[key] for row in rows] for key in rows[0]}


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _adapter_moves_base(model) -> bool:
    """True when disabling the adapter does not give the starting model: PiSSA / OLoRA / CorDA
    initialisations subtract the adapter's initial product from the base weights."""
    for config in getattr(model, "peft_config", {}).values():
        init = getattr(config, "init_lora_weights", True)
        if isinstance(init, str) and init.lower().startswith(("pissa", "olora", "corda")):
            return True
    return False


def _no_grad_logprobs(model, rollout: Rollout) -> torch.Tensor:
    """The rollout's response log-probs under `model` (no_grad, eval mode), as `fill_logprobs` takes them."""
    keep = rollout.input_ids.shape[1] - rollout.prompt_length
    with torch.no_grad(), eval_mode(model):
        logp = sequence_logprobs(
            model, rollout.input_ids, rollout.attention_mask, temperature=rollout.temperature, keep=keep
        )
    return logp * rollout.logprob_mask.to(logp.dtype)


class RolloutTrainer(LmforgeTrainer):
    """What PPO and SPO share: rollouts, rewards, the reference, the policy's differentiable log-probs,
    eval rewards, and the hooks that save / restore a stage's extra state inside checkpoints."""

    _wants_outputs = False

    def __init__(
        self,
        *,
        model,
        args,
        train_dataset,
        eval_dataset=None,
        processing_class,
        reward_funcs: list,
        reward_weights: list[float],
        max_gen_len: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        num_generations: int = 1,
        max_prompt_length: int | None = None,
        clip_epsilon: float = 0.2,
        kl_coef: float = 0.0,
        nan_policy: str = "skip",
        max_nan_skips: int = 20,
    ):
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=collate_rows,
            processing_class=processing_class,
            nan_policy=nan_policy,
            max_nan_skips=max_nan_skips,
        )
        if len(reward_funcs) != len(reward_weights):
            raise LmforgeError(f"{len(reward_funcs)} reward functions but {len(reward_weights)} weights")
        self.reward_funcs, self.reward_weights = list(reward_funcs), [float(w) for w in reward_weights]
        self.max_gen_len, self.temperature, self.top_p = int(max_gen_len), float(temperature), float(top_p)
        self.num_generations = int(num_generations)
        self.max_prompt_length = max_prompt_length
        self.clip_epsilon = float(clip_epsilon)
        self.kl_coef = float(kl_coef)
        # The reference: a frozen copy of the starting model under full / freeze tuning (and PiSSA-like
        # adapters, whose disabled base is a residual); none under other PEFT tuners (the
        # adapter-disabled base is used) or when the KL coefficient is 0.
        self.ref_model = None
        if self.kl_coef > 0 and (not _is_peft(self.model) or _adapter_moves_base(self.model)):
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        if self.args.world_size > 1:
            log.warning(
                "%s on %d processes: the critic and the SPO baseline are per-process (not synchronised)",
                type(self).__name__,
                self.args.world_size,
            )
        self._seed_step: int | None = None
        self._micro = 0
        self._rollout_tokens = 0
        self._num_params = sum(p.numel() for p in self.model.parameters())

    # --- rollouts ---------------------------------------------------------------------------
    def _next_seed(self) -> int:
        """args.seed + a counter of micro-batches: the same rollout for the same step on resume."""
        step = self.state.global_step
        if step != self._seed_step:
            self._seed_step, self._micro = step, 0
        else:
            self._micro += 1
        ga = max(1, self.args.gradient_accumulation_steps)
        return self.args.seed + 1_000_003 * self.args.process_index + step * ga + self._micro

    @contextlib.contextmanager
    def _seeded(self, seed: int) -> Iterator[None]:
        """Sample under `seed` without disturbing the global RNG streams."""
        device = self.args.device
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def _expand(self, inputs: dict[str, Any], n: int) -> tuple[list, dict[str, list]]:
        prompts = [p for p in inputs["prompt"] for _ in range(n)]
        columns = {
            k: [v for v in values for _ in range(n)]
            for k, values in inputs.items()
            if k != "prompt" and isinstance(values, list)
        }
        return prompts, columns

    def _generate(self, prompts: list, *, sample: bool, num_samples: int) -> Rollout:
        return generate(
            self.model,
            self.processing_class,
            prompts,
            max_new_tokens=self.max_gen_len,
            temperature=self.temperature,
            top_p=self.top_p,
            do_sample=sample,
            num_samples=num_samples,
            max_prompt_length=self.max_prompt_length,
        )

    def _score(
        self, prompts: list, responses: list[str], columns: dict[str, list], mode: str
    ) -> torch.Tensor:
        """(B,) combined rewards; each function's mean is logged as ``rewards/<name>/mean``."""
        conversational = bool(prompts) and not isinstance(prompts[0], str)
        completions = (
            [[{"role": "assistant", "content": r}] for r in responses] if conversational else list(responses)
        )
        per_func = []
        for func in self.reward_funcs:
            values = func(prompts=prompts, completions=completions, **columns)
            values = [float("nan") if v is None else float(v) for v in values]
            per_func.append(values)
            finite = [v for v in values if math.isfinite(v)]
            if finite:
                self._metrics[mode][f"rewards/{func.__name__}/mean"].append(sum(finite) / len(finite))
        return torch.tensor(combine(per_func, self.reward_weights), dtype=torch.float32)

    def _experience(self, inputs: dict[str, Any]) -> tuple[Rollout, torch.Tensor, list]:
        """Sample, score and take the sampling policy's and the reference's log-probs for one micro-batch."""
        n = self.num_generations
        prompts, columns = self._expand(inputs, n)
        with self._seeded(self._next_seed()):
            rollout = self._generate(list(inputs["prompt"]), sample=True, num_samples=n)
        scores = self._score(prompts, rollout.responses, columns, "train")
        fill_logprobs(rollout, self.model, self.ref_model, use_adapter_disabled=self.kl_coef > 0)
        device = rollout.input_ids.device
        scores = scores.to(device)
        inputs["completion_mask"] = rollout.response_mask  # the mixin counts these as the step's tokens
        self._rollout_tokens = int(rollout.attention_mask.sum())
        metrics = self._metrics["train"]
        metrics["reward/mean"].append(float(scores.mean()))
        metrics["reward/std"].append(float(scores.std(unbiased=False)))
        metrics["response_length"].append(float(rollout.response_lengths.float().mean()))
        mask = rollout.logprob_mask
        if rollout.ref_logprobs is not None:
            kl = pm.kl_estimate(rollout.old_logprobs, rollout.ref_logprobs, "k1", mask)
            metrics["kl"].append(float(pm.masked_mean(kl, mask)))
        return rollout, scores, prompts

    def _policy_logprobs(self, model, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable (B, L − 1) response log-probs of the policy (same layout as the rollout's) and
        the mean token entropy of the sampling distribution (no grad)."""
        ids, attn = rollout.input_ids, rollout.attention_mask
        length = ids.shape[1]
        keep = length - rollout.prompt_length
        kwargs = {"logits_to_keep": keep + 1} if keep + 1 < length else {}
        logits = model(
            input_ids=ids,
            attention_mask=attn,
            position_ids=position_ids_from(attn),
            use_cache=False,
            **kwargs,
        ).logits
        logits = logits[:, :-1].float() / rollout.temperature
        width = logits.shape[1]
        targets = ids[:, length - width :]
        logp = logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        mask = rollout.logprob_mask
        with torch.no_grad():
            entropy = pm.entropy_from_logits(logits, mask[:, length - 1 - width :])
        if width < length - 1:
            logp = torch.cat([logp.new_zeros(logp.shape[0], length - 1 - width), logp], dim=1)
        logp = torch.where(mask.bool(), logp, torch.zeros((), dtype=logp.dtype, device=logp.device))
        return logp, entropy

    def _log_policy(self, stats: dict[str, float], entropy: torch.Tensor, loss: torch.Tensor) -> None:
        metrics = self._metrics["train"]
        metrics["policy_loss"].append(float(loss.detach()))
        metrics["entropy"].append(float(entropy))
        for key in ("clip_fraction", "approx_kl", "ratio"):
            metrics[key].append(stats[key])

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        return 6 * self._rollout_tokens * self._num_params  # forward + backward of the update (rough)

    # --- evaluation -------------------------------------------------------------------------
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Greedy answers to the eval prompts; their rewards go to ``eval_reward``."""
        prompts, columns = self._expand(inputs, 1)
        rollout = self._generate(prompts, sample=False, num_samples=1)
        scores = self._score(prompts, rollout.responses, columns, "eval")
        self._metrics["eval"]["reward"].append(float(scores.mean()))
        self._metrics["eval"]["response_length"].append(float(rollout.response_lengths.float().mean()))
        return None, None, None

    # --- extra state in checkpoints ---------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self._save_extras(Path(output_dir or self.args.output_dir), checkpoint=_internal_call)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_extras(Path(resume_from_checkpoint))

    def _save_extras(self, out: Path, *, checkpoint: bool) -> None:
        pass

    def _load_extras(self, ckpt: Path) -> None:
        pass


def build_critic(model, path: str | None = None):
    """The value model: the starting causal LM's body with a fresh one-output token head (no dropout).
    Under full / freeze tuning it copies the in-memory model (so LLaMA-Pro's expanded blocks are kept);
    under a PEFT tuner (or a quantised base) it is loaded in float32 from the base model folder."""
    from transformers import AutoModelForTokenClassification

    quantised = getattr(model, "is_quantized", False) or getattr(model, "quantization_method", None)
    if _is_peft(model) or quantised:
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
                return _no_grad_logprobs(self.model, rollout)
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


# --- builders used by the stage modules ---------------------------------------------------
def _common(ctx, kl_coef: float, clip_epsilon: float) -> dict[str, Any]:
    from lmforge.training.rl import reward_functions

    cfg = ctx.cfg
    funcs, weights = reward_functions(ctx)
    return {
        "model": ctx.model,
        "args": ctx.training_args,
        "train_dataset": ctx.train_dataset,
        "eval_dataset": ctx.eval_dataset,
        "processing_class": ctx.tokenizer,
        "reward_funcs": funcs,
        "reward_weights": weights,
        "max_gen_len": cfg["max_gen_len"],
        "temperature": cfg["temperature"],
        "top_p": cfg["top_p"],
        "num_generations": cfg["num_generations"],
        "max_prompt_length": cfg["max_length"],
        "clip_epsilon": clip_epsilon,
        "kl_coef": kl_coef,
        "nan_policy": cfg["nan_policy"],
        "max_nan_skips": cfg["max_nan_skips"],
    }


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
        **_common(ctx, cfg["kl_coef"], cfg["clip_epsilon"]),
    )


def spo_trainer(ctx) -> SPOTrainer:
    cfg = ctx.cfg
    return SPOTrainer(spo_ema=cfg["spo_ema"], **_common(ctx, cfg["beta"], cfg["clip_epsilon"]))


def check_rollout_flags(cfg) -> None:
    """One-line errors for the rollout flags PPO and SPO share."""
    if cfg["num_generations"] < 1:
        raise LmforgeError(f"--num_generations must be >= 1; got {cfg['num_generations']}")
    if cfg["max_gen_len"] < 1:
        raise LmforgeError(f"--max_gen_len must be >= 1; got {cfg['max_gen_len']}")
    if cfg["temperature"] <= 0:
        raise LmforgeError(f"--temperature must be > 0; got {cfg['temperature']}")
    if not 0 < cfg["top_p"] <= 1:
        raise LmforgeError(f"--top_p must be in (0, 1]; got {cfg['top_p']}")
