"""What lmforge's PPO and SPO trainers share (trl 1.16 has no PPO): `RolloutTrainer`, on
`LmforgeTrainer` so run folders, atomic checkpoints, resume, the NaN guard, metrics.jsonl and every
`--tuner` work as for the other stages; the keyword arguments both builders pass; the rollout flag
checks. PPO: `ppo.py`; SPO: `spo.py`.

One optimizer step per micro-batch group, as MiniMind's scripts do (one update per rollout): the
dataloader yields prompt rows (``prompt`` messages + ``answer``, passed through as lists); for each
micro-batch the current policy samples a rollout (``lmforge.rl.rollout.generate``, seeded with the
trainer's seed, the global step and the micro-batch index so a resumed run samples the same answers),
the reward functions score it (weighted by ``combine``), log-probs of the sampling policy and of the
reference are taken (reference: a frozen copy of the starting model under full tuning, the
adapter-disabled base under a PEFT tuner, none when the KL coefficient is 0), then the stage's loss.

Evaluation (``--val_size`` / ``--val_dataset``) generates greedy answers for the held-out prompts and
logs their mean reward as ``eval_reward`` (and ``eval_rewards/<name>/mean``).

Limits: one process (the critic and the SPO tracker are not synchronised across ranks).
"""

from __future__ import annotations

import contextlib
import copy
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
    logprobs_from_logits,
    next_token_logits,
    sequence_logprobs,
)
from lmforge.training.trainer import LmforgeTrainer, stage_trainer_kwargs

log = logging.getLogger("lmforge")


def collate_rows(rows: list[dict[str, Any]]) -> dict[str, list]:
    """Prompt rows → one dict of column lists (no tensors: the trainer renders and generates itself)."""
    return {key: [row[key] for row in rows] for key in rows[0]}


def is_peft_model(model) -> bool:
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


def no_grad_logprobs(model, rollout: Rollout) -> torch.Tensor:
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
        if self.kl_coef > 0 and (not is_peft_model(self.model) or _adapter_moves_base(self.model)):
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
        logits = next_token_logits(
            model, ids, attn, temperature=rollout.temperature, keep=length - rollout.prompt_length
        )
        mask = rollout.logprob_mask
        with torch.no_grad():
            entropy = pm.entropy_from_logits(logits, mask[:, length - 1 - logits.shape[1] :])
        logp = logprobs_from_logits(logits, ids, mask)
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


def rollout_trainer_kwargs(ctx, kl_coef: float, clip_epsilon: float) -> dict[str, Any]:
    """The `RolloutTrainer` keyword arguments PPO and SPO both take from the run."""
    from lmforge.training.rl import reward_functions

    cfg = ctx.cfg
    funcs, weights = reward_functions(ctx)
    return {
        **stage_trainer_kwargs(ctx),
        "reward_funcs": funcs,
        "reward_weights": weights,
        "max_gen_len": cfg["max_gen_len"],
        "temperature": cfg["temperature"],
        "top_p": cfg["top_p"],
        "num_generations": cfg["num_generations"],
        "max_prompt_length": cfg["max_length"],
        "clip_epsilon": clip_epsilon,
        "kl_coef": kl_coef,
    }


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
