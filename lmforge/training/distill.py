"""White-box knowledge distillation: the teacher's next-token distributions teach the student.

Off-policy (the default) trains on the dataset's chat rows, on the assistant tokens that SFT trains
on (labels != -100), with Hinton et al. 2015's loss, per token:

    alpha * CE(student, label) + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T)

where p^T = softmax(logits / T). The T^2 keeps the soft term's gradient on the scale of the hard
one as T changes. Both models see the same input ids and the same attention layout (padding mask,
or the position_ids of packed / padding-free rows); the KL is taken at exactly the label positions
of the CE, the same shifted position t -> token t+1 for teacher and student, so prompt, padding and
first-token-of-a-packed-row positions never enter it. Both sums are divided by the same token count
as the SFT loss (`num_items_in_batch`), so alpha=1 is SFT's loss exactly. A teacher whose embedding
has more rows than the student's (a vocabulary padded for speed) is compared over the student's rows;
ids a smaller teacher lacks get probability 0 (plain path).

Memory: the default path never builds the (batch, length, vocab) logits. The student's CE runs
through lmforge's chunked linear cross-entropy (training/loss.py) and the KL through TRL's
`ChunkedDivergenceFunction` (trl/kernels/chunked_divergence.py: forward KL from both models' hidden
states and heads, in tiles, gradient to the student only), both over the labelled positions only,
`--loss_chunk_size` tokens at a time. Models whose logits are not plain `lm_head(hidden)` (LoRA on
the head, logit soft-capping, ...), `--loss_chunk_size 0`, Liger, torch.compile, FSDP and DeepSpeed
take the plain path: full logits, gathered at the label positions, the same formula in torch ops.
The teacher is a frozen copy on every process (not sharded).

Written by hand (the CE + T^2-scaled forward KL mix and its masking): TRL's DistillationTrainer
is on-policy only (the student generates; no dataset answers, no CE term). That trainer is used as
it is for `--distill_on_policy` (`LmforgeDistillationTrainer` below).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lmforge.errors import LmforgeError
from lmforge.training.loss import IGNORE_INDEX
from lmforge.training.trainer import LmforgeMixin, LmforgeTrainer, stage_trainer_kwargs

log = logging.getLogger("lmforge")

# Logit given to vocabulary rows a (smaller) teacher lacks: softmax makes them exactly 0 in fp32, and
# unlike -inf it keeps 0 * log(0) terms finite.
_MISSING_LOGIT = -1e4


# --- the loss ---------------------------------------------------------------------------------
def label_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep (B, T-1) bool, targets (N,)): position t predicts labels[t+1]; N = labelled tokens."""
    shifted = labels[:, 1:]
    keep = shifted != IGNORE_INDEX
    return keep, shifted[keep].to(torch.long)


def match_vocab(teacher_logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Teacher logits over the student's vocabulary: rows beyond it (a padded embedding) are
    dropped, rows the teacher lacks get a logit whose probability is 0."""
    have = teacher_logits.shape[-1]
    if have > vocab_size:
        return teacher_logits[..., :vocab_size]
    if have < vocab_size:
        return F.pad(teacher_logits, (0, vocab_size - have), value=_MISSING_LOGIT)
    return teacher_logits


def kd_terms(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of CE, sum of KL(p_t^T || p_s^T)) over N labelled positions, from (N, V) logits."""
    s = student_logits.float()
    t = match_vocab(teacher_logits.detach().float(), s.shape[-1])
    ce = F.cross_entropy(s, targets, reduction="sum")
    log_ps = F.log_softmax(s / temperature, dim=-1)
    log_pt = F.log_softmax(t / temperature, dim=-1)
    kl = F.kl_div(log_ps, log_pt, log_target=True, reduction="sum")  # sum p_t (log p_t - log p_s)
    return ce, kl


def chunked_kd_terms(
    student_hidden: torch.Tensor,
    student_head: torch.nn.Linear,
    teacher_hidden: torch.Tensor,
    teacher_head: torch.nn.Linear,
    targets: torch.Tensor,
    temperature: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`kd_terms` from (N, H_s) / (N, H_t) hidden states and the two heads, `chunk_size` tokens at
    a time: no (N, V) logits are kept for backward. The teacher's head may have more rows than the
    student's (only the student's vocabulary is compared), not fewer (use the plain path)."""
    from trl.kernels.chunked_divergence import ChunkedDivergenceFunction

    from lmforge.training.loss import linear_cross_entropy

    ce, _ = linear_cross_entropy(
        student_hidden,
        student_head.weight,
        targets,
        bias=student_head.bias,
        chunk_size=chunk_size,
        shift=False,
    )
    kl = student_hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, student_hidden.shape[0], chunk_size):
        end = start + chunk_size
        divergence, _entropy = ChunkedDivergenceFunction.apply(
            student_hidden[start:end],
            student_head.weight,
            student_head.bias,
            teacher_hidden[start:end].detach(),
            teacher_head.weight.detach(),
            None if teacher_head.bias is None else teacher_head.bias.detach(),
            0.0,  # beta 0: forward KL(teacher || student)
            temperature,
        )
        kl = kl + divergence.sum()
    return ce, kl


# --- the teacher ------------------------------------------------------------------------------
def load_teacher(cfg, tokenizer, *, dtype: torch.dtype, device) -> tuple[Any, str]:
    """(the frozen teacher in eval mode on `device`, its folder). Checks that it shares the
    student's tokenizer; warns when MiniMind's --teacher_hidden_size / --teacher_num_layers, when
    given, do not describe it (its folder's config decides, as MiniMind's would fail to load)."""
    from lmforge.models.load import load_model
    from lmforge.models.locate import minimind_weight_dir, resolve_model_path

    name = cfg.get("teacher_model_name_or_path")
    if not name:
        raise LmforgeError(
            "train distill: needs a teacher: --teacher_model_name_or_path DIR (or MiniMind's --from_teacher_weight NAME)"
        )
    save_dir, hidden, moe = cfg["save_dir"], cfg["teacher_hidden_size"], cfg["use_moe"]
    try:
        path = resolve_model_path(name, save_dir=save_dir, hidden_size=hidden, use_moe=moe)
    except LmforgeError:
        named = minimind_weight_dir(save_dir, name, hidden, moe)
        raise LmforgeError(
            f"--teacher_model_name_or_path {name}: no model there, nor at {named} (a MiniMind name with "
            "--teacher_hidden_size) or in the local hub cache"
        ) from None
    check_same_tokenizer(tokenizer, path, student_where=_student_where(cfg))
    teacher = load_model(
        path,
        dtype=dtype,
        attn_implementation=cfg.get("attn_implementation"),
        trust_remote_code=cfg["trust_remote_code"],
    )
    _check_teacher_shape(cfg, teacher, path, len(tokenizer))
    teacher.requires_grad_(False)
    teacher.eval()
    teacher.to(device)
    return teacher, path


def _student_where(cfg) -> str:
    return (
        cfg.get("tokenizer_path") or cfg.get("model_name_or_path") or "the shipped tokenizer (from scratch)"
    )


def _teacher_tokenizer_dir(path: str) -> str | None:
    for folder in (Path(path), Path(path).parent if Path(path).name.startswith("checkpoint-") else None):
        if folder is not None and (folder / "tokenizer_config.json").exists():
            return str(folder)
    return None


def check_same_tokenizer(tokenizer, teacher_path: str, *, student_where: str) -> None:
    """Stop unless the teacher folder's tokenizer maps every token to the same id as the student's,
    with the same special tokens: the loss compares the two distributions id by id."""
    from lmforge.models.tokenizer import load_tokenizer

    folder = _teacher_tokenizer_dir(teacher_path)
    if folder is None:
        log.warning(
            "teacher %s has no tokenizer files; assuming it uses the student's tokenizer", teacher_path
        )
        return
    theirs = load_tokenizer(folder)
    why = tokenizer_difference(tokenizer, theirs)
    if why:
        raise LmforgeError(
            f"teacher {teacher_path} and student {student_where} use different tokenizers ({why}); white-box "
            "distillation compares next-token distributions id by id, so both need the same tokenizer "
            "(use `train distill-api` or `generate distill` for a teacher with another tokenizer)"
        )


def tokenizer_difference(ours, theirs) -> str | None:
    """A short description of the first difference between two tokenizers, or None."""
    a, b = ours.get_vocab(), theirs.get_vocab()
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} tokens"
    for token, idx in a.items():
        if b.get(token) != idx:
            return f"token {token!r} is id {idx} vs {b.get(token)}"
    for attr in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if getattr(ours, attr, None) != getattr(theirs, attr, None):
            return f"{attr} {getattr(ours, attr, None)!r} vs {getattr(theirs, attr, None)!r}"
    return None


def _check_teacher_shape(cfg, teacher, path: str, num_tokens: int) -> None:
    config = (
        teacher.config.get_text_config() if hasattr(teacher.config, "get_text_config") else teacher.config
    )
    for flag, field in (("teacher_hidden_size", "hidden_size"), ("teacher_num_layers", "num_hidden_layers")):
        want, have = cfg.get(flag), getattr(config, field, None)
        if flag in cfg.explicit and have is not None and want != have:  # the folder's config decides
            log.warning("--%s %s: teacher %s has %s %s; using it as it is", flag, want, path, field, have)
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and vocab < num_tokens:
        raise LmforgeError(
            f"teacher {path}: vocab_size {vocab} is smaller than the tokenizer's {num_tokens} tokens"
        )


def teacher_dtype(args) -> torch.dtype:
    """The teacher only runs forward: keep it in the training precision (bf16/fp16 halve its memory)."""
    if getattr(args, "bf16", False):
        return torch.bfloat16
    if getattr(args, "fp16", False):
        return torch.float16
    return torch.float32


# --- the off-policy trainer -------------------------------------------------------------------
class KDTrainer(LmforgeTrainer):
    """`LmforgeTrainer` whose loss is the KD mix above (through the mixin's `_stage_loss` hook, so
    NaN guard, token counting and metrics.jsonl work as for SFT). Logs `ce` and `kl` (per-token
    means; `kl` without the T^2 factor) next to `loss`."""

    _wants_outputs = False

    def __init__(self, *args: Any, teacher, alpha: float, temperature: float, **kwargs: Any):
        if not 0.0 <= alpha <= 1.0:
            raise LmforgeError(f"--alpha must be in [0, 1]; got {alpha}")
        if temperature <= 0:
            raise LmforgeError(f"--temperature must be > 0; got {temperature}")
        self.teacher, self.alpha, self.temperature = teacher, float(alpha), float(temperature)
        super().__init__(*args, **kwargs)
        self.teacher.to(self.args.device)
        self._kd_pairs: dict[int, Any] = {}

    def _head_pairs(self, model):
        """((student decoder, head), (teacher decoder, head)) when the chunked path applies, else None."""
        key = id(model)
        if key not in self._kd_pairs:
            from lmforge.training.loss import head_of

            plain = (
                not self.loss_chunk_size
                or self.label_smoother is not None
                or getattr(self.args, "use_liger_kernel", False)
                or getattr(self.args, "torch_compile", False)
                or getattr(self, "is_fsdp_enabled", False)
                or getattr(self, "is_deepspeed_enabled", False)
            )
            student, teacher = (None, None) if plain else (head_of(model), head_of(self.teacher))
            ok = student is not None and teacher is not None
            ok = ok and teacher[1].weight.shape[0] >= student[1].weight.shape[0]
            self._kd_pairs[key] = (student, teacher) if ok else None
        return self._kd_pairs[key]

    def _stage_loss(self, model, inputs, num_items_in_batch=None):
        labels = inputs["labels"]
        keep, targets = label_positions(labels)
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        teacher_inputs = {
            k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs
        }
        teacher_inputs["use_cache"] = False
        heads = self._head_pairs(model)
        if heads is not None:
            ce_sum, kl_sum, outputs = self._chunked_terms(
                model, model_inputs, teacher_inputs, keep, targets, heads
            )
        else:
            outputs = model(**model_inputs)
            with torch.no_grad():
                teacher_logits = self.teacher(**teacher_inputs).logits[:, :-1][keep]  # (N, V_t)
            student_logits = outputs.logits[:, :-1][keep]  # (N, V)
            ce_sum, kl_sum = kd_terms(student_logits, teacher_logits, targets, self.temperature)
        t2 = self.temperature**2
        total = self.alpha * ce_sum + (1.0 - self.alpha) * t2 * kl_sum
        loss = self._normalise(total, int(targets.numel()), num_items_in_batch)
        aux = getattr(outputs, "aux_loss", None)
        coef = (
            getattr(getattr(self.model, "config", None), "router_aux_loss_coef", 0) if aux is not None else 0
        )
        if coef:
            loss = loss + coef * aux.to(loss.device)
        self._log_terms(model, ce_sum, kl_sum, targets.numel())
        return loss, outputs

    def _chunked_terms(self, model, model_inputs, teacher_inputs, keep, targets, heads):
        from lmforge.training.loss import forward_hidden

        (s_decoder, s_head), (t_decoder, t_head) = heads
        outputs, s_hidden = forward_hidden(model, s_decoder, model_inputs)  # (B, T, H_s)
        with torch.no_grad():
            _, t_hidden = forward_hidden(self.teacher, t_decoder, teacher_inputs)  # (B, T, H_t)
        if targets.numel() == 0:  # nothing labelled: stay connected to the graph (DDP)
            zero = s_hidden.sum() * 0.0 + s_head.weight.sum() * 0.0
            return zero, zero.detach(), outputs
        ce_sum, kl_sum = chunked_kd_terms(
            s_hidden[:, :-1][keep],
            s_head,
            t_hidden[:, :-1][keep],
            t_head,
            targets,
            self.temperature,
            self.loss_chunk_size,
        )
        return ce_sum, kl_sum, outputs

    def _normalise(self, total: torch.Tensor, n: int, num_items_in_batch) -> torch.Tensor:
        """As the SFT loss (`LmforgeMixin._chunked_loss`): sum / the accumulated batch's labelled
        tokens when the model takes loss kwargs, else / this micro-batch's."""
        by_items = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        denom = num_items_in_batch if by_items else n
        loss = total / torch.as_tensor(denom, device=total.device).clamp(min=1)
        if by_items and self.args.average_tokens_across_devices:
            tp = self.get_tp_size() if hasattr(self, "get_tp_size") else 1
            loss = loss * (self.accelerator.num_processes // tp if self.args.n_gpu <= 1 else self.args.n_gpu)
        return loss

    def _log_terms(self, model, ce_sum, kl_sum, n) -> None:
        sums = torch.stack([ce_sum.detach().float(), kl_sum.detach().float(), ce_sum.new_tensor(float(n))])
        sums = self.accelerator.gather(sums.reshape(1, 3)).reshape(-1, 3).sum(0)
        count = max(float(sums[2]), 1.0)
        metrics = self._metrics["train" if model.training else "eval"]
        metrics["ce"].append(float(sums[0]) / count)
        metrics["kl"].append(float(sums[1]) / count)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation: the KD loss (and its ce / kl metrics); no logits are returned."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs, return_outputs=False)
        return loss.detach(), None, None


def kd_trainer(ctx, teacher) -> KDTrainer:
    """The off-policy trainer over ctx's tokenised chat rows (SFT's collators: padded, packed, or
    padding-free when both models are transformers' own causal LMs)."""
    from lmforge.training.build import default_trainer, padding_free_rows

    cfg = ctx.cfg
    # the teacher might ignore position_ids and let padding-free rows attend to each other
    allow = cfg.get("padding_free") is not None or padding_free_rows(cfg, teacher)[0]
    return default_trainer(
        ctx,
        KDTrainer,
        allow_padding_free=allow,
        teacher=teacher,
        alpha=cfg["alpha"],
        temperature=cfg["temperature"],
    )


# --- on-policy (TRL) --------------------------------------------------------------------------
def _on_policy_trainer_class():
    from trl import DistillationTrainer

    class LmforgeDistillationTrainer(LmforgeMixin, DistillationTrainer):
        """TRL's on-policy DistillationTrainer (the student samples, the teacher scores every token
        of the samples, generalized JSD by `beta`) with lmforge's trainer features."""

    return LmforgeDistillationTrainer


def on_policy_trainer(ctx, teacher):
    student_vocab = ctx.model.config.get_text_config().vocab_size
    teacher_vocab = teacher.config.get_text_config().vocab_size
    if student_vocab != teacher_vocab:
        raise LmforgeError(
            f"--distill_on_policy: TRL's trainer needs equal vocab_size; student has {student_vocab}, teacher "
            f"{teacher_vocab} (off-policy distillation handles a padded vocabulary)"
        )
    trainer_cls = _on_policy_trainer_class()
    return trainer_cls(
        teacher_model=teacher,
        **stage_trainer_kwargs(ctx),
    )
