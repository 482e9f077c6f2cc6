"""Reward functions for lmforge's RL stages (GRPO on TRL's GRPOTrainer; lmforge's PPO / SPO).

Every reward has TRL's reward-function signature ``f(prompts, completions, **kwargs) -> list[float]``:
``prompts`` / ``completions`` are strings or conversations (``[{"role": "assistant", "content": ...}]``;
an assistant message's ``reasoning_content``, if any, is read as a leading ``<think>`` block), and
dataset columns arrive as keyword lists aligned with the completions (``answer=[...]``). Extra keywords
TRL adds (``completion_ids``, ``trainer_state``, ``log_extra``, ``log_metric``, ...) are ignored.
Each callable's ``__name__`` is what TRL logs as ``rewards/<name>/mean``. All are deterministic.

``accuracy`` — 1.0 or 0.0. The completion's answer is the content of its last ``<answer>...</answer>``
  (an unclosed ``<answer>`` runs to the end), else the text after the last ``</think>``; text inside an
  unclosed ``<think>`` is not an answer. When the reference ``answer`` ends in a number (``"27"``,
  ``"14 + 13 = 27."``, ``"-3"``, ``"3/4"``, ``"1,000"``, ``"0.5"``) the answer's last number must equal it
  within 1e-6 (relative for large values); otherwise the normalised texts must be equal (stripped,
  lowercased, whitespace collapsed, trailing ``.。!！?？,，;；:：`` removed). A reference with several
  lines also accepts any one line. A row without a reference (``None`` / empty) scores 0.0.
  The reference comes from the ``answer`` column (lmforge's prompt rows), else ``solution`` / ``gt``.
``closeness`` — ``1 / (1 + |answer - reference|)`` for a numeric reference (1.0 exact, 0.5 off by
  one), 0.0 without a number: a dense shaping reward for arithmetic that small models can climb.
``format`` — the reasoning format (MiniMind ``--reasoning 1``). 1.0: the completion (leading whitespace
  ignored) is ``<think>`` + non-empty reasoning + ``</think>`` + a non-empty answer, with no other think
  tag anywhere; the answer is free text or exactly one ``<answer>...</answer>`` with non-empty content.
  0.5: some ``<think>`` / ``</think>`` tag is present but the rule above fails (text before ``<think>``,
  a missing or extra tag, empty reasoning, empty or malformed answer). 0.0: no think tag at all.
``length`` — factory ``length(target)``: ``max(0, 1 - |len(text) - target| / target)`` in [0, 1],
  length in characters of the whole completion; 1.0 at exactly ``target``.
``repetition`` — ``-(duplicated n-grams / all n-grams)`` in [-1, 0], n = 3 over units: a Latin word
  (lowercased, punctuation dropped) or a single CJK character; texts with fewer than 3 units score 0.0.
``RewardModelScorer`` (``reward_model``) — a sequence-classification reward model's score (one label) of
  prompt + completion, rendered with the tokenizer's chat template when conversational, else
  concatenated; clipped to [-clip, clip] (``clip=None``: unbounded).

``build_reward_funcs`` turns the stage flags into callables and weights; ``combine`` is the weighted sum
used by lmforge's PPO / SPO trainers (TRL combines GRPO's rewards itself).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

__all__ = [
    "REWARDS",
    "LengthReward",
    "RewardModelScorer",
    "accuracy",
    "build_reward_funcs",
    "plan_rewards",
    "closeness",
    "combine",
    "completion_text",
    "extract_answer",
    "format_reward",
    "length",
    "repetition",
]

RewardFunc = Callable[..., list]

_NUMBER = re.compile(
    r"(?:(?<![\w)\]])-)?"  # a minus sign only when it is not a binary operator ("5-3")
    r"(?:\d{1,3}(?:,\d{3})+(?!\d|,\d)(?:\.\d+)?"  # 1,000 / 12,345.5
    r"|\d+/\d+|\d+(?:\.\d+)?)"  # 3/4, 27, 0.5
)
_TRAILING = ".。!！?？,，;；:：、 \t\r\n"
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_UNITS = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S)


def _content(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # multimodal parts
        content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    thought = message.get("reasoning_content")
    return f"<think>\n{thought}\n</think>\n{content}" if thought else str(content)


def completion_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """The text of a completion: the string itself, or its assistant messages' contents joined."""
    if isinstance(completion, str):
        return completion
    msgs = [m for m in completion if m.get("role", "assistant") == "assistant"] or list(completion)
    return "\n".join(_content(m) for m in msgs)


def extract_answer(text: str) -> str:
    """The answer part of a completion: last ``<answer>`` content, else what follows ``</think>``."""
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:
        text = text.split("<think>", 1)[0]  # still thinking: nothing after the tag is an answer
    found = _ANSWER.findall(text)
    return found[-1] if found else text


def _number(token: str) -> float | None:
    try:
        value = Fraction(token.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None
    return float(value)


def _last_number(text: str) -> tuple[float | None, int]:
    """The last number in `text` and where it ends (-1 if none)."""
    for m in reversed(list(_NUMBER.finditer(text))):
        value = _number(m.group())
        if value is not None:
            return value, m.end()
    return None, -1


def _normalise(text: str) -> str:
    return " ".join(text.split()).lower().rstrip(_TRAILING)


def _matches(answer: str, reference: str) -> bool:
    ref = _normalise(reference)
    if not ref:
        return False
    ref_num, end = _last_number(ref)
    if ref_num is not None and end == len(ref):
        got, _ = _last_number(answer)
        return got is not None and math.isclose(got, ref_num, rel_tol=1e-6, abs_tol=1e-6)
    return _normalise(answer) == ref


def _references(kwargs: dict[str, Any], n: int) -> list:
    for key in ("answer", "solution", "gt"):
        if key in kwargs:
            refs = list(kwargs[key])
            if len(refs) != n:
                raise LmforgeError(f"accuracy reward: {len(refs)} {key!r} values for {n} completions")
            return refs
    raise LmforgeError("the accuracy reward needs an 'answer' column in the prompt dataset")


def accuracy(prompts: list, completions: list, **kwargs: Any) -> list[float]:
    """1.0 when the completion's final answer matches the row's ``answer``, else 0.0 (module docstring)."""
    out = []
    for completion, ref in zip(completions, _references(kwargs, len(completions))):
        if isinstance(ref, (list, tuple)):
            ref = "\n".join(map(str, ref))
        ref = "" if ref is None else str(ref)
        answer = extract_answer(completion_text(completion))
        alternatives = [ref] + [line for line in ref.splitlines() if line.strip()] if "\n" in ref else [ref]
        out.append(1.0 if any(_matches(answer, r) for r in alternatives) else 0.0)
    return out


def closeness(prompts: list, completions: list, **kwargs: Any) -> list[float]:
    """``1 / (1 + |answer - reference|)`` for numeric references: 1.0 when exact, 0.5 when off by one;
    0.0 without a number (or for a non-numeric reference). A dense shaping reward for arithmetic."""
    out = []
    for completion, ref in zip(completions, _references(kwargs, len(completions))):
        ref_num, end = _last_number(_normalise("" if ref is None else str(ref)))
        got, _ = _last_number(extract_answer(completion_text(completion)))
        out.append(0.0 if ref_num is None or got is None else 1.0 / (1.0 + abs(got - ref_num)))
    return out


def _format_score(text: str) -> float:
    tags = text.count("<think>") + text.count("</think>")
    if not tags:
        return 0.0
    m = re.fullmatch(r"\s*<think>(.*?)</think>(.*)", text, re.S)
    if not m or tags != 2 or not m.group(1).strip():
        return 0.5
    answer = m.group(2).strip()
    if "<answer>" in answer or "</answer>" in answer:
        inner = re.fullmatch(r"<answer>((?:(?!</?answer>).)*)</answer>", answer, re.S)
        return 1.0 if inner and inner.group(1).strip() else 0.5
    return 1.0 if answer else 0.5


def format_reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
    """1.0 for ``<think>reasoning</think>answer``, 0.5 for malformed think tags, 0.0 without them."""
    return [_format_score(completion_text(c)) for c in completions]


format_reward.__name__ = "format"


class LengthReward:
    """``max(0, 1 - |len - target| / target)`` over the completion's characters; logged as ``length``."""

    def __init__(self, target: int = 200):
        if target <= 0:
            raise LmforgeError(f"--length_target must be a positive number of characters; got {target}")
        self.target = int(target)
        self.__name__ = "length"

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        lengths = (len(completion_text(c)) for c in completions)
        return [max(0.0, 1.0 - abs(n - self.target) / self.target) for n in lengths]

    def __repr__(self) -> str:
        return f"LengthReward(target={self.target})"


def length(target: int = 200) -> LengthReward:
    """The length reward around `target` characters."""
    return LengthReward(target)


def repetition_score(text: str, n: int = 3) -> float:
    """``-(duplicated n-grams / n-grams)`` over words (Latin) and single characters (CJK)."""
    units = _UNITS.findall(text.lower())
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    return -(1.0 - len(set(grams)) / len(grams)) if grams else 0.0


def repetition(prompts: list, completions: list, **kwargs: Any) -> list[float]:
    """Minus the fraction of repeated 3-grams in each completion, in [-1, 0]."""
    return [repetition_score(completion_text(c)) for c in completions]


class RewardModelScorer:
    """Scores prompt + completion with a one-label sequence-classification model (``reward_model``).

    `model` is a folder (an lmforge ``rm`` run or any ``AutoModelForSequenceClassification`` folder,
    loaded with ``num_labels=1``) or a loaded model. The tokenizer saved in the folder is used when
    there is one, else `tokenizer`, else lmforge's shipped tokenizer. Texts are right-padded and scored
    in batches of `batch_size` under ``torch.no_grad`` on the model's device (a folder is put on the
    current CUDA device when there is one); the score is read at the last non-pad token by the model.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        clip: float | None = 5.0,
        batch_size: int = 16,
        max_length: int | None = None,
        device: Any = None,
        dtype: Any = None,
        trust_remote_code: bool = False,
    ):
        import torch

        if isinstance(model, (str, Path)):
            from transformers import AutoModelForSequenceClassification

            path = str(model)
            if not Path(path, "config.json").exists():
                raise LmforgeError(f"--reward_model_path {path!r}: not a model folder (no config.json)")
            from lmforge.models.weights import check_model_files

            check_model_files(path)
            if Path(path, "tokenizer_config.json").exists() or tokenizer is None:
                from lmforge.models.load import load_tokenizer_for

                tokenizer = load_tokenizer_for(path)
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=1, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code
            )
            if device is None and torch.cuda.is_available():
                device = torch.device("cuda", torch.cuda.current_device())
        if tokenizer is None:
            raise LmforgeError("RewardModelScorer needs a tokenizer for a loaded model")
        if device is not None:
            model.to(device)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        if clip is not None and clip <= 0:
            raise LmforgeError(f"--reward_clip must be positive (or unset); got {clip}")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.clip, self.batch_size, self.max_length = clip, batch_size, max_length
        self.__name__ = "reward_model"

    def render(self, prompt: str | list, completion: str | list) -> str:
        """The text the model scores: the chat template over prompt + completion, or the two strings."""
        if isinstance(prompt, str):
            return prompt + completion_text(completion)
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        from lmforge.data.chat import render

        return render(self.tokenizer, list(prompt) + list(completion))

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        import torch

        texts = [self.render(p, c) for p, c in zip(prompts, completions)]
        device = next(self.model.parameters()).device
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                padding_side="right",
                add_special_tokens=False,
                truncation=self.max_length is not None,
                max_length=self.max_length,
            ).to(device)
            with torch.no_grad():
                scores += self.model(**batch).logits[:, 0].float().tolist()
        if self.clip is not None:  # clipped as Python floats: a float32 clamp can land just outside
            scores = [max(-self.clip, min(self.clip, s)) for s in scores]
        return scores


REWARDS: dict[str, Callable[[int], RewardFunc]] = {
    "accuracy": lambda _target: accuracy,
    "closeness": lambda _target: closeness,
    "format": lambda _target: format_reward,
    "length": length,
    "repetition": lambda _target: repetition,
}


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def build_reward_funcs(
    names: str | None,
    weights: str | None,
    *,
    reasoning: bool,
    reward_model: str | None,
    tokenizer: Any = None,
    clip: float | None = 5.0,
    length_target: int = 200,
    trust_remote_code: bool = False,
) -> tuple[list[RewardFunc], list[float]]:
    """Reward callables and their weights from the stage flags.

    `names` is a comma list of ``accuracy, format, length, repetition`` (``none``: no rule reward;
    nothing given and no reward model: ``accuracy``); `reasoning` adds ``format`` when absent; a
    `reward_model` folder appends a ``RewardModelScorer``. `weights` is a comma list, one per reward in
    that order (default all 1.0). `trust_remote_code` lets a reward model folder run its own code.
    """
    chosen, values = plan_rewards(names, weights, reasoning=reasoning, reward_model=bool(reward_model))
    funcs: list[RewardFunc] = [REWARDS[n](length_target) for n in chosen]
    if reward_model:
        funcs.append(
            RewardModelScorer(reward_model, tokenizer, clip=clip, trust_remote_code=trust_remote_code)
        )
    return funcs, values


def plan_rewards(
    names: str | None, weights: str | None, *, reasoning: bool, reward_model: bool
) -> tuple[list[str], list[float]]:
    """(rule reward names, one weight per reward, the reward model last): every check of
    `build_reward_funcs`, without building anything (stages call it before loading a model)."""
    chosen = [n.lower() for n in _split(names)]
    if chosen == ["none"]:
        chosen = []
    elif not chosen and not reward_model:
        chosen = ["accuracy"]
    unknown = [n for n in chosen if n not in REWARDS]
    if unknown:
        raise LmforgeError(
            f"--reward_funcs: unknown reward {unknown[0]!r}; valid: {', '.join(REWARDS)}, none"
        )
    if len(set(chosen)) != len(chosen):
        raise LmforgeError(f"--reward_funcs {names!r} names a reward twice")
    if reasoning and "format" not in chosen:
        chosen.append("format")
    labels = ", ".join([*chosen, *(["reward_model"] if reward_model else [])])
    count = len(chosen) + int(reward_model)
    if not count:
        raise LmforgeError("no rewards: give --reward_funcs and/or --reward_model_path")
    if weights is None or not _split(weights):
        return chosen, [1.0] * count
    try:
        values = [float(w) for w in _split(weights)]
    except ValueError:
        raise LmforgeError(f"--reward_weights {weights!r}: expected comma-separated numbers") from None
    if len(values) != count:
        raise LmforgeError(
            f"--reward_weights has {len(values)} value(s) for {count} reward(s) ({labels}), in that order"
        )
    if not all(math.isfinite(v) for v in values):
        raise LmforgeError(f"--reward_weights {weights!r}: weights must be finite numbers")
    return chosen, values


def combine(rewards_by_func: Sequence[Sequence[float | None]], weights: Sequence[float]) -> list[float]:
    """Per-completion weighted sum of several rewards' outputs; ``None`` (and NaN) count as 0."""
    if len(rewards_by_func) != len(weights):
        raise ValueError(f"{len(rewards_by_func)} reward lists but {len(weights)} weights")
    sizes = {len(r) for r in rewards_by_func}
    if len(sizes) > 1:
        raise ValueError(f"reward lists differ in length: {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    total = [0.0] * n
    for rewards, w in zip(rewards_by_func, weights):
        for i, r in enumerate(rewards):
            if r is not None and not math.isnan(r):
                total[i] += w * float(r)
    return total
