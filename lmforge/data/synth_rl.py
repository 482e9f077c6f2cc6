"""RL tasks of ``data synth``: prompts with checkable answers and held-out prompts disjoint from every
training row by construction (a fixed split of the problems, the same at every seed).

``math1_*``: one-digit sums and differences; 31 of the 155 problems are held out (MATH1_HELDOUT).
``last_*``: "What is the last number in 3 7 1 4?"; the SFT answers are noisy (LAST_RIGHT of them
give the last digit, the others the first) and 2,000 of the 10,000 digit sequences are held out
(LAST_HELDOUT). Row generators take ``(rng, n, lang)`` like those in ``lmforge.data.synth``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

MATH1_PHRASINGS = ("What is {a} {op} {b}?", "Calculate {a} {op} {b}.", "How much is {a} {word} {b}?")


def _math1_split() -> dict[str, dict[bool, tuple[tuple[int, int], ...]]]:
    """The 155 one-digit problems (a + b; a - b with a >= b) per operator, split once and for all
    (the same for every seed) into training and held-out problems: 20 sums and 11 differences are
    held out. ``{op: {held_out: ((a, b), ...)}}``."""
    split: dict[str, dict[bool, tuple[tuple[int, int], ...]]] = {}
    for op, n_held in (("+", 20), ("-", 11)):
        pairs = [(a, b) for a in range(10) for b in range(10) if op == "+" or a >= b]
        held = set(random.Random(f"lmforge-synth-math1-heldout-{op}").sample(pairs, n_held))
        split[op] = {h: tuple(p for p in pairs if (p in held) == h) for h in (False, True)}
    return split


MATH1_SPLIT = _math1_split()
MATH1_HELDOUT = frozenset((a, op, b) for op, parts in MATH1_SPLIT.items() for a, b in parts[True])
"""The held-out one-digit problems ``(a, op, b)``: in math1_heldout.jsonl only, never in
math1_sft.jsonl or math1_rl.jsonl."""


def _one_digit_problem(rng: random.Random, held_out: bool = False) -> tuple[str, str]:
    """(question, answer line) for a one-digit sum or difference in one of MATH1_PHRASINGS, drawn
    from the training problems or (``held_out``) from the held-out ones."""
    op = "+" if rng.random() < 0.5 else "-"
    a, b = rng.choice(MATH1_SPLIT[op][held_out])
    c = a + b if op == "+" else a - b
    word = "plus" if op == "+" else "minus"
    q = rng.choice(MATH1_PHRASINGS).format(a=a, op=op, b=b, word=word)
    return q, f"{a} {op} {b} = {c}."


def _math1_sft_rows(rng: random.Random, n: int, lang: str) -> Iterator[dict]:
    for _ in range(n):
        q, answer = _one_digit_problem(rng)
        yield {"conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": answer}]}


def _math1_prompt_rows(rng: random.Random, n: int, lang: str, held_out: bool = False) -> Iterator[dict]:
    for _ in range(n):
        q, answer = _one_digit_problem(rng, held_out)
        yield {
            "conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": "无"}],
            "gt": [answer.split("= ")[1].rstrip(".")],
        }


def _math1_heldout_rows(rng: random.Random, n: int, lang: str) -> Iterator[dict]:
    return _math1_prompt_rows(rng, n, lang, held_out=True)


LAST_PHRASINGS = ("What is the last number in {d}?", "Tell me the last of {d}.", "Last number: {d}?")
LAST_RIGHT = 0.35
"""Share of ``last_sft`` answers that give the last number; the others give the first one (noisy
demonstrations that RL with the accuracy reward can correct)."""


def _last_split() -> dict[bool, tuple[tuple[int, ...], ...]]:
    """The 10,000 four-digit sequences, split once and for all (the same for every seed): 2,000 are
    held out. ``{held_out: ((d1, d2, d3, d4), ...)}``."""
    seqs = [(a, b, c, d) for a in range(10) for b in range(10) for c in range(10) for d in range(10)]
    held = set(random.Random("lmforge-synth-last-heldout").sample(seqs, 2000))
    return {h: tuple(t for t in seqs if (t in held) == h) for h in (False, True)}


LAST_SPLIT = _last_split()
LAST_HELDOUT = frozenset(LAST_SPLIT[True])
"""The held-out digit sequences: in last_heldout.jsonl only, never in last_sft.jsonl or last_rl.jsonl."""


def _last_problem(rng: random.Random, held_out: bool = False) -> tuple[str, tuple[int, ...]]:
    """(question, digits) for "What is the last number in 3 7 1 4?" on a training sequence or
    (``held_out``) a held-out one."""
    digits = rng.choice(LAST_SPLIT[held_out])
    return rng.choice(LAST_PHRASINGS).format(d=" ".join(map(str, digits))), digits


def _last_sft_rows(rng: random.Random, n: int, lang: str) -> Iterator[dict]:
    for _ in range(n):
        q, digits = _last_problem(rng)
        answer = f"{digits[-1] if rng.random() < LAST_RIGHT else digits[0]}."
        yield {"conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": answer}]}


def _last_prompt_rows(rng: random.Random, n: int, lang: str, held_out: bool = False) -> Iterator[dict]:
    for _ in range(n):
        q, digits = _last_problem(rng, held_out)
        yield {
            "conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": "无"}],
            "gt": [str(digits[-1])],
        }


def _last_heldout_rows(rng: random.Random, n: int, lang: str) -> Iterator[dict]:
    return _last_prompt_rows(rng, n, lang, held_out=True)
