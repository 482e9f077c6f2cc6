"""Multiple-choice evaluation: few-shot prompts and answer-letter likelihood scoring.

Prompts follow the benchmarks' own evaluation scripts: a header naming the subject ("The following
are multiple choice questions (with answers) about …" / "以下是中国关于…考试的单项选择题，请选出其中的正确
答案。"), `--n_shot` solved dev questions, then the question with its options and "Answer:" /
"答案：". A base model reads this as plain text (bos first, as in pretraining) and each letter is
scored as the next token (" A" after "Answer:", "A" after "答案："); a chat model gets the same
content as a conversation through its chat template (shots as earlier user/assistant turns) and the
letter is scored as the first token of the answer. The prediction is the letter with the highest
log-probability; exact ties go to the earliest letter (so a model with uniform output always answers
A). Letters that tokenise into several tokens are scored by their summed log-probability.
Shots that would overflow the model's context are dropped, oldest first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmforge.evaluate.bench import LETTERS, Question, Subject

HEADER = {
    "en": "The following are multiple choice questions (with answers) about {subject}.\n\n",
    "zh": "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n",
}
ANSWER_CUE = {"en": "Answer:", "zh": "答案："}


@dataclass
class MCPrompt:
    """One question ready to score: plain `text` (base models) or `messages` (chat models)."""

    text: str | None
    messages: list[dict] | None
    prefix: str  # what precedes the letter in the answer: " " after "Answer:" in plain English prompts

    @property
    def candidates(self) -> list[str]:
        return [self.prefix + letter for letter in LETTERS]


def question_text(q: Question, lang: str) -> str:
    options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices))
    return f"{q.question.strip()}{options}\n{ANSWER_CUE[lang]}"


def build_prompt(subject: Subject, q: Question, shots: list[Question], lang: str, chat: bool) -> MCPrompt:
    header = HEADER[lang].format(subject=subject.title[lang])
    if chat:
        messages: list[dict] = []
        for i, shot in enumerate(shots):
            messages.append(
                {"role": "user", "content": (header if i == 0 else "") + question_text(shot, lang)}
            )
            messages.append({"role": "assistant", "content": shot.answer})
        messages.append({"role": "user", "content": (header if not shots else "") + question_text(q, lang)})
        return MCPrompt(None, messages, "")
    prefix = " " if lang == "en" else ""
    solved = "".join(question_text(s, lang) + prefix + s.answer + "\n\n" for s in shots)
    return MCPrompt(header + solved + question_text(q, lang), None, prefix)


def build_prompts(
    subject: Subject, n_shot: int, lang: str, chat: bool, fits: Callable[[MCPrompt], bool] | None = None
) -> list[MCPrompt]:
    out = []
    for q in subject.questions:
        shots = subject.dev[:n_shot]
        prompt = build_prompt(subject, q, shots, lang, chat)
        while shots and fits is not None and not fits(prompt):
            shots = shots[1:]
            prompt = build_prompt(subject, q, shots, lang, chat)
        out.append(prompt)
    return out


def pick(scores: list[float]) -> str:
    """The best letter; exact ties go to the earliest letter."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return LETTERS[best]


class LocalScorer:
    """Answer-letter log-probabilities from a local `Engine`'s model, `batch_size` prompts a forward."""

    def __init__(self, engine, chat: bool, gen=None, batch_size: int = 8):
        """`gen`: the generation flags (their `enable_thinking` shapes chat prompts)."""
        from dataclasses import replace

        from lmforge.infer.args import GenerationArgs

        self.engine, self.chat, self.batch_size = engine, chat, max(1, batch_size)
        self.gen = replace(gen or GenerationArgs(), max_new_tokens=1, do_sample=False)
        self.methods = {"likelihood": 0}

    def encode(self, prompt: MCPrompt) -> list[int]:
        return self.engine.encode(prompt.messages if self.chat else prompt.text, self.gen)

    def fits(self, prompt: MCPrompt) -> bool:
        return len(self.encode(prompt)) + 4 <= self.engine.context_length

    def _forward(self, seqs: list[list[int]]):
        """Log-softmax over the vocabulary at every position of right-padded `seqs`: (B, T, V)."""
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.engine.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        device = self.engine.device
        with torch.inference_mode():
            logits = self.engine.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    def scores(self, prompts: list[MCPrompt]) -> list[list[float]]:
        """Per prompt, the log-probability of each letter as the answer's first token(s)."""
        tok = self.engine.tokenizer
        out: list[list[float]] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            cands = [[tok(c, add_special_tokens=False)["input_ids"] for c in p.candidates] for p in chunk]
            encoded = [self.encode(p) for p in chunk]
            if all(len(c) == 1 for cs in cands for c in cs):  # one forward, next-token log-probs
                logp = self._forward(encoded)
                for i, ids in enumerate(encoded):
                    out.append([float(logp[i, len(ids) - 1, c[0]]) for c in cands[i]])
                continue
            seqs = [ids + c for ids, cs in zip(encoded, cands) for c in cs]
            logp = self._forward(seqs)
            for i, (ids, cs) in enumerate(zip(encoded, cands)):
                row = []
                for j, c in enumerate(cs):
                    k = i * len(cs) + j
                    row.append(sum(float(logp[k, len(ids) - 1 + t, c[t]]) for t in range(len(c))))
                out.append(row)
        return out

    def choose(self, prompts: list[MCPrompt]) -> list[tuple[str, list[float] | None]]:
        self.methods["likelihood"] += len(prompts)
        return [(pick(s), s) for s in self.scores(prompts)]


def evaluate_mc(scorer: Any, subjects: list[Subject], n_shot: int, lang: str, chat: bool) -> dict[str, Any]:
    """Accuracy per subject, per category and overall (micro: all questions; macro: mean of subjects)."""
    per_subject: dict[str, dict[str, Any]] = {}
    predictions = []
    for subject in subjects:
        fits = getattr(scorer, "fits", None)
        prompts = build_prompts(subject, n_shot, lang, chat, fits)
        chosen = scorer.choose(prompts)
        correct = 0
        for q, (letter, scores) in zip(subject.questions, chosen):
            correct += letter == q.answer
            predictions.append(
                {
                    "subject": subject.name,
                    "where": q.where,
                    "answer": q.answer,
                    "prediction": letter,
                    "scores": scores,
                }
            )
        n = len(subject.questions)
        per_subject[subject.name] = {
            "category": subject.category,
            "correct": correct,
            "total": n,
            "accuracy": correct / n if n else 0.0,
        }
    categories: dict[str, dict[str, Any]] = {}
    for res in per_subject.values():
        cat = categories.setdefault(res["category"], {"correct": 0, "total": 0})
        cat["correct"] += res["correct"]
        cat["total"] += res["total"]
    for cat in categories.values():
        cat["accuracy"] = cat["correct"] / cat["total"] if cat["total"] else 0.0
    total = sum(r["total"] for r in per_subject.values())
    correct = sum(r["correct"] for r in per_subject.values())
    return {
        "accuracy": correct / total if total else 0.0,
        "macro_accuracy": sum(r["accuracy"] for r in per_subject.values()) / max(1, len(per_subject)),
        "correct": correct,
        "total": total,
        "subjects": per_subject,
        "categories": categories,
        "predictions": predictions,
    }
