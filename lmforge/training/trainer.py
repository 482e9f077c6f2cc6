"""`LmforgeTrainer`: transformers' Trainer plus the reliability features lmforge promises.

- Atomic checkpoints: each checkpoint is written into a staging folder and renamed into place,
  so a kill mid-save never leaves a `checkpoint-N` that looks complete (SPEC §11). The staging
  folders of dead processes (`.staging-PID`, a save killed mid-write) are removed when training
  starts or resumes and at each save; those of live processes are left alone.
- NaN/Inf guard: the gradient norm (and step loss) are checked before `optimizer.step()`; a bad
  step is skipped and counted (`--nan_policy skip`) or the run stops with a message (`stop`).
- Exact per-step metrics: the loss of every optimizer step is written to metrics.jsonl at full
  float precision (Trainer's own log rounds and averages), so resumed runs can be compared bitwise.
- SIGTERM: finish the current step, save a checkpoint, stop; the CLI then exits 0.
- Optional per-token loss weights (`loss_weights` column), used by distill-reason.
- Chunked loss (`--loss_chunk_size N`, default 1024; 0 = off): for the plain causal-LM loss
  (pretrain, SFT, distill-reason's weighted loss) the head and cross-entropy run in chunks of N
  labelled tokens (lmforge/training/loss.py), so the (batch, length, vocab) logits never exist and
  prompt/padding positions never reach the head. Same loss and gradients as the plain path; the
  plain path is kept for callers that want logits (evaluation), label smoothing, Liger kernels,
  --torch_compile, FSDP/DeepSpeed, and models whose logits are not just `lm_head(hidden)`.
- Packed and padding-free rows (position_ids, no attention_mask) always run with `use_cache=False`: transformers
  builds its per-document block mask only when no KV cache exists (Trainer turns the cache off
  unless `--use_cache true`; with it, packed documents would attend to each other).
- Under DDP the per-step loss and token count in metrics.jsonl are reduced over all ranks, so
  they equal a single-process run with the same global batch; checkpoints are staged in one
  folder shared by all ranks and promoted by rank 0 once every rank has written its part.
- Debug hook (env LMFORGE_DEBUG_BATCH_DIR=DIR): each rank appends, per micro-batch, a short hash
  of every training row to DIR/rank<R>.jsonl (tests check that ranks see disjoint data).
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from lmforge import faults
from lmforge.errors import LmforgeError
from lmforge.runs import MetricsLog, promote_staged_checkpoint, remove_stale_staging

# Labelled tokens per head + cross-entropy chunk (`--loss_chunk_size`): see lmforge/training/loss.py.
DEFAULT_LOSS_CHUNK_SIZE = 1024


def scheduler_kwargs_for(args, num_training_steps: int) -> dict[str, Any]:
    """`--lr_scheduler_kwargs` completed where a transformers schedule has a required argument:
    warmup_stable_decay decays over the last 10% of the steps unless `num_decay_steps` is given."""
    kwargs = dict(args.lr_scheduler_kwargs or {})
    if str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)) == "warmup_stable_decay":
        kwargs.setdefault("num_decay_steps", max(1, num_training_steps // 10))
    return kwargs


class LmforgeMixin:
    """lmforge's reliability features on top of any `transformers.Trainer` subclass (TRL's included):
    put it first in the bases, e.g. `class LmforgeDPOTrainer(LmforgeMixin, DPOTrainer)`.

    Stage metrics (rewards/chosen, accuracies, ...) go into `self._metrics[mode][name]` lists, TRL's
    convention; `end_step` averages what one optimizer step added into its metrics.jsonl record."""

    # Plain Trainer: ask for outputs to read MoE aux_loss. TRL trainers recompute outputs when asked.
    _wants_outputs = False

    def __init__(
        self,
        *args: Any,
        nan_policy: str = "skip",
        max_nan_skips: int = 20,
        loss_chunk_size: int = DEFAULT_LOSS_CHUNK_SIZE,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if loss_chunk_size < 0:
            raise LmforgeError(f"--loss_chunk_size must be 0 (off) or positive; got {loss_chunk_size}")
        self.loss_chunk_size = loss_chunk_size
        # The chunked loss replaces transformers' own LM loss only, never a TRL trainer's.
        parent = next(c for c in type(self).__mro__[type(self).__mro__.index(LmforgeMixin) + 1 :]
                      if "compute_loss" in c.__dict__)  # fmt: skip
        self._plain_lm_loss = parent is Trainer
        self._heads: dict[int, Any] = {}
        if not isinstance(getattr(self, "_metrics", None), dict):
            self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._metric_marks: dict[str, int] = {}
        self.nan_policy = nan_policy
        self.max_nan_skips = max_nan_skips
        self.num_nan_skipped = 0
        self._nan_in_a_row = 0
        self._step_loss = 0.0
        self._step_aux = 0.0
        self._step_tokens = 0
        self._last_grad_norm: float | None = None
        self.last_step_record: dict[str, Any] = {}
        self._faults = faults.current()  # test hooks (lmforge/faults.py): off unless asked for
        # (model, args) -> optimizer, set by the pipeline for tuners with their own optimizer (LoRA+, BAdam)
        self.optimizer_factory: Any = None
        # (checkpoint folder) -> None: writes what else a checkpoint needs (an audio / vision processor)
        self.save_with_checkpoint: Any = None

    # --- loss -------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop("loss_weights", None)
        if "position_ids" in inputs and "attention_mask" not in inputs:
            inputs["use_cache"] = False  # packed rows: a KV cache would switch off the document mask
        head = self._chunked_head(model, inputs, return_outputs)
        if head is not None:
            loss, outputs = self._chunked_loss(model, inputs, head, weights, num_items_in_batch)
        elif weights is not None:
            loss, outputs = self._weighted_loss(model, inputs, weights, num_items_in_batch)
        elif hasattr(self, "_stage_loss"):  # a stage's own loss: (loss, outputs or None)
            loss, outputs = self._stage_loss(model, inputs, num_items_in_batch)
        elif self._wants_outputs or return_outputs:
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        else:
            loss, outputs = super().compute_loss(model, inputs, False, num_items_in_batch), None
        if self._faults.nan_at_step and self.state.global_step + 1 == self._faults.nan_at_step:
            loss = faults.poison_loss(loss, self._faults.nan_kind)
        aux = getattr(outputs, "aux_loss", None)
        if aux is not None:
            self._step_aux += float(aux.detach()) / self.args.gradient_accumulation_steps
        if model.training:
            self._step_tokens += _target_tokens(inputs)
        return (loss, outputs) if return_outputs else loss

    def _chunked_head(self, model, inputs, return_outputs):
        """(decoder, lm_head) when this batch's loss can be chunked, else None (the plain path)."""
        if (
            not self.loss_chunk_size
            or return_outputs  # the caller wants logits (evaluation's prediction_step)
            or not self._plain_lm_loss
            or hasattr(self, "_stage_loss")  # a stage's own loss (ORPO/SimPO, PPO, ...)
            or "labels" not in inputs
            or self.label_smoother is not None
            or self.compute_loss_func is not None
            or getattr(self.args, "use_liger_kernel", False)  # Liger fuses the head and loss itself
            or getattr(self.args, "torch_compile", False)  # a hook per call would break the graph
            or getattr(self, "is_fsdp_enabled", False)  # sharded head weight
            or getattr(self, "is_deepspeed_enabled", False)
        ):
            return None
        key = id(model)
        if key not in self._heads:
            from lmforge.training.loss import head_of

            self._heads[key] = head_of(model)
        return self._heads[key]

    def _chunked_loss(self, model, inputs, head, weights, num_items_in_batch):
        """The plain path's loss (or `_weighted_loss`'s) without the (B, T, V) logits."""
        from lmforge.training.loss import forward_hidden, linear_cross_entropy

        decoder, lm_head = head
        labels = inputs.pop("labels")
        try:
            outputs, hidden = forward_hidden(model, decoder, inputs)
        finally:
            inputs["labels"] = labels
        total, n = linear_cross_entropy(
            hidden,
            lm_head.weight,
            labels,
            bias=lm_head.bias,
            weights=weights,
            chunk_size=self.loss_chunk_size,
        )
        aux = getattr(outputs, "aux_loss", None)
        coef = getattr(self.model.config, "router_aux_loss_coef", 0) if aux is not None else 0
        if weights is not None:  # as _weighted_loss
            denom = num_items_in_batch if num_items_in_batch is not None else n
            loss = total / torch.as_tensor(denom, device=total.device).clamp(min=1)
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
            return (loss + coef * aux if coef else loss), outputs
        # as Trainer.compute_loss over the model's ForCausalLMLoss (sum / num_items_in_batch, or mean)
        by_items = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        denom = num_items_in_batch if by_items else n
        loss = total / torch.as_tensor(denom, device=total.device).clamp(min=1)
        if coef:
            loss = loss + coef * aux.to(loss.device)
        if by_items and self.args.average_tokens_across_devices:
            tp = self.get_tp_size() if hasattr(self, "get_tp_size") else 1
            loss = loss * (self.accelerator.num_processes // tp if self.args.n_gpu <= 1 else self.args.n_gpu)
        return loss, outputs

    def _weighted_loss(self, model, inputs, weights, num_items_in_batch):
        """Cross-entropy with a per-token weight (labels −100 are ignored)."""
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits[:, :-1, :].float()  # (B, T-1, V)
        target = labels[:, 1:]
        w = weights[:, 1:].to(logits.dtype)
        mask = target != -100
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), target.clamp(min=0).reshape(-1), reduction="none"
        )
        ce = ce.view_as(target) * w * mask
        denom = num_items_in_batch if num_items_in_batch is not None else mask.sum()
        loss = ce.sum() / torch.as_tensor(denom, device=ce.device).clamp(min=1)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # denom counts the tokens of every rank and DDP averages gradients: as Trainer's own loss
            loss = loss * self.accelerator.num_processes
        inputs["labels"] = labels
        coef = getattr(self.model.config, "router_aux_loss_coef", 0)  # self.model: never a DDP wrapper
        if getattr(outputs, "aux_loss", None) is not None and coef:
            loss = loss + coef * outputs.aux_loss
        return loss, outputs

    def training_step(self, model, inputs, num_items_in_batch=None):
        if os.environ.get("LMFORGE_DEBUG_BATCH_DIR"):
            _dump_batch(os.environ["LMFORGE_DEBUG_BATCH_DIR"], self.state.global_step + 1, inputs)
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._step_loss += float(loss)
        return loss

    # --- NaN guard --------------------------------------------------------------------------
    def _get_grad_norm(self, model, grad_norm=None):
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        self._last_grad_norm = float(norm) if norm is not None else None
        return norm

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.optimizer_factory is not None:
            self.optimizer = self.optimizer_factory(self.model if model is None else model, self.args)
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if not getattr(optimizer, "_lmforge_guarded", False):
            inner_step = optimizer.step

            def guarded_step(*a: Any, **kw: Any):
                if self._step_is_finite():
                    self._nan_in_a_row = 0
                    return inner_step(*a, **kw)
                self._on_bad_step()
                optimizer.zero_grad(set_to_none=True)
                return None

            optimizer.step = guarded_step
            optimizer._lmforge_guarded = True
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        self.args.lr_scheduler_kwargs = scheduler_kwargs_for(self.args, num_training_steps)
        return super().create_scheduler(num_training_steps, optimizer)

    def _step_is_finite(self) -> bool:
        norm = self._last_grad_norm
        return math.isfinite(self._step_loss) and (norm is None or math.isfinite(norm))

    def _on_bad_step(self) -> None:
        step = self.state.global_step + 1
        what = f"loss={self._step_loss} grad_norm={self._last_grad_norm}"
        if self.nan_policy == "stop":
            raise LmforgeError(
                f"step {step}: non-finite {what}; stopped before the optimizer step "
                "(the last checkpoint is intact; --nan_policy skip skips such steps)"
            )
        self.num_nan_skipped += 1
        self._nan_in_a_row += 1
        if self._nan_in_a_row > self.max_nan_skips:
            raise LmforgeError(
                f"step {step}: {self._nan_in_a_row} non-finite steps in a row ({what}); "
                "stopping. Lower --learning_rate or check the data"
            )

    def end_step(self) -> dict[str, Any]:
        """Called by MetricsCallback after each optimizer step: the step's record, then reset."""
        if self.args.world_size > 1:
            self._reduce_step_totals()
        rec = {
            "step": self.state.global_step,
            "loss": self._step_loss,
            "grad_norm": self._last_grad_norm,
            "learning_rate": self._get_learning_rate(),
            "epoch": self.state.epoch,
            "tokens": self._step_tokens,
        }
        if self._step_aux:
            rec["aux_loss"] = self._step_aux
        rec.update(self._new_metrics("train"))
        if self.num_nan_skipped:
            rec["nan_skipped"] = self.num_nan_skipped
        self._step_loss, self._step_aux, self._step_tokens = 0.0, 0.0, 0
        self.last_step_record = rec
        return rec

    def _reduce_step_totals(self) -> None:
        """Rank r's loss is its share of the global token-mean times world_size (Trainer's
        `average_tokens_across_devices`), so the mean over ranks is the global batch's loss."""
        totals = torch.tensor(
            [self._step_loss, self._step_aux, float(self._step_tokens)], dtype=torch.float64
        )
        torch.distributed.all_reduce(totals)
        n = self.args.world_size
        self._step_loss, self._step_aux = float(totals[0]) / n, float(totals[1]) / n
        self._step_tokens = int(totals[2])

    def _new_metrics(self, mode: str) -> dict[str, float]:
        """Means of the stage metrics appended since the last call (one optimizer step's worth)."""
        out = {}
        for key, values in self._metrics[mode].items():
            mark = self._metric_marks.get(key, 0)
            fresh = values[mark:] if mark <= len(values) else values
            if fresh:
                out[key] = sum(float(v) for v in fresh) / len(fresh)
            self._metric_marks[key] = len(values)
        return out

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        super().log(logs, *args, **kwargs)
        self._metric_marks.clear()  # TRL's log() empties the metric lists

    # --- atomic checkpoints -----------------------------------------------------------------
    def train(self, *args: Any, **kwargs: Any):
        """Start or resume; first clear what an earlier save that was killed left behind."""
        self._clear_stale_staging()
        return super().train(*args, **kwargs)

    def _clear_stale_staging(self) -> None:
        if self.args.should_save:  # one process per run folder (rank 0)
            remove_stale_staging(self.args.output_dir)

    def _save_checkpoint(self, model, trial):
        run_dir = self.args.output_dir
        self._clear_stale_staging()
        staging = os.path.join(run_dir, f".staging-{self._staging_tag()}")
        self.args.output_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.output_dir = run_dir
        if self.args.world_size > 1:
            torch.distributed.barrier()  # every rank's files (its rng state) are in before the rename
        if self.args.should_save:
            name = f"checkpoint-{self.state.global_step}"
            if self.save_with_checkpoint is not None:  # e.g. a vision LLM's image processor
                self.save_with_checkpoint(str(Path(staging, name)))
            promote_staged_checkpoint(Path(staging, name), Path(run_dir, name))
            import shutil

            shutil.rmtree(staging, ignore_errors=True)  # leftovers, e.g. TRL's per-checkpoint model card
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(
                output_dir=run_dir, save_total_limit=self.args.save_total_limit, use_mtime=False
            )
        if self.args.world_size > 1:
            torch.distributed.barrier()

    def _staging_tag(self) -> str:
        """This run's staging-folder name: rank 0's process id, the same on every rank."""
        if getattr(self, "_staging", None) is None:
            tag = [str(os.getpid())]
            if self.args.world_size > 1:
                torch.distributed.broadcast_object_list(tag, src=0)
            self._staging = tag[0]
        return self._staging


def _dump_batch(out_dir: str, step: int, inputs: dict[str, Any]) -> None:
    """Debug hook: one line per micro-batch with a short hash of each row (see module docstring)."""
    import hashlib
    import json

    rank = int(os.environ.get("RANK", "0"))
    rows = [hashlib.sha1(str(r.tolist()).encode()).hexdigest()[:16] for r in inputs["input_ids"]]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(out_dir, f"rank{rank}.jsonl"), "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": step, "rows": rows}) + "\n")


def _target_tokens(inputs: dict[str, Any]) -> int:
    """Tokens the loss is computed on: labels, else the completion mask (preference batches)."""
    if "labels" in inputs:
        return int((inputs["labels"] != -100).sum())
    for key in ("completion_mask", "attention_mask"):
        if key in inputs:
            return int(inputs[key].sum())
    return 0


def stage_trainer_kwargs(ctx) -> dict[str, Any]:
    """The keyword arguments every stage's trainer takes from the run (pipeline.StageContext): the
    model, TrainingArguments, datasets, tokenizer and the NaN policy of `LmforgeMixin`."""
    return {
        "model": ctx.model,
        "args": ctx.training_args,
        "train_dataset": ctx.train_dataset,
        "eval_dataset": ctx.eval_dataset,
        "processing_class": ctx.tokenizer,
        "nan_policy": ctx.cfg["nan_policy"],
        "max_nan_skips": ctx.cfg["max_nan_skips"],
    }


class LmforgeTrainer(LmforgeMixin, Trainer):
    """transformers' Trainer with lmforge's features (pretrain, SFT, distill-reason, ...)."""

    _wants_outputs = True

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v}
        logs.update({f"eval_{k}" if mode == "eval" else k: v for k, v in metrics.items()})
        super().log(logs, *args, **kwargs)
        self._metrics[mode].clear()


class MetricsCallback(TrainerCallback):
    """Writes one metrics.jsonl line per optimizer step, plus eval results."""

    def __init__(self, trainer: LmforgeTrainer, run_dir: str, resumed_step: int = 0):
        self.trainer = trainer
        self.log = MetricsLog(run_dir)
        self.t0 = time.time()
        if trainer.args.should_save:
            self.log.truncate_after(resumed_step) if resumed_step else self.log.path.unlink(missing_ok=True)

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.time()  # a record's "time": seconds since the training loop began (this process)

    def on_step_end(self, args, state, control, **kwargs):
        rec = self.trainer.end_step()
        rec["time"] = round(time.time() - self.t0, 3)
        if args.should_save:
            self.log.append(rec)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if args.should_save and metrics:
            self.log.append(
                {
                    "step": state.global_step,
                    **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                }
            )


class SigtermCallback(TrainerCallback):
    """SIGTERM (SIGBREAK on Windows) → save a checkpoint at the end of the current step and stop."""

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGBREAK") if hasattr(signal, n))

    def __init__(self):
        self.received = False
        self._previous: dict[int, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        def handler(signum, frame):
            self.received = True

        try:
            self._previous = {sig: signal.signal(sig, handler) for sig in self.SIGNALS}
        except ValueError:  # not the main thread (e.g. a web UI worker): leave signals alone
            self._previous = {}

    def on_step_end(self, args, state, control, **kwargs):
        if self.received:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
