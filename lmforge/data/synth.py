"""Deterministic synthetic corpora (Chinese and English) in MiniMind file formats.

``synth(out_dir)`` writes a small world a ~1-3M parameter model can learn in a few CPU minutes:
a fixed fact table (countries → capitals, animals → sounds, things → colours), small
arithmetic (a + b, a - b with numbers below 20) and templated dialogue (greetings, "who are you").
Pretraining prose states the facts many ways; SFT asks them as questions with one consistent short
answer each, so a demo chat visibly shows what was learned (see ``eval_questions``).

Files (same seed → byte-identical files): ``pretrain.jsonl`` ``{"text"}``, ``sft.jsonl``
``{"conversations": [{"role", "content"}, ...]}``, ``reasoning.jsonl`` (assistant content
``<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>``), ``dpo.jsonl`` ``{"chosen", "rejected"}``,
``rlaif.jsonl`` (last assistant turn ``"无"`` plus ``"gt": [answer]``), ``kto.jsonl``
``{"prompt": [msgs], "completion": [msgs], "label": bool}``, ``dpo_heldout.jsonl`` (pairs on facts
held out of dpo/kto), ``brief.jsonl`` / ``brief_heldout.jsonl`` (the bare fact chosen over the full
sentence, on training / held-out facts), the RL tasks ``math1_{sft,rl,heldout}.jsonl`` and
``last_{sft,rl,heldout}.jsonl`` (``lmforge.data.synth_rl``: held-out prompts in no training file) and
``tokenizer_corpus.txt`` (plain text for ``tokenizer train``).
Only the standard library is imported.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator

from lmforge.data.synth_facts import (  # noqa: F401  (the fact tables are part of this module's API)
    ANIMALS,
    COLOURS,
    COUNTRIES,
    FACTS,
    HELDOUT_ANIMALS,
    HELDOUT_COUNTRIES,
    IDENTITY,
    LORA_IDENTITY,
    MODEL_NAME,
    SYSTEM_PROMPTS,
    arith,
    capitalise,
    pick_lang,
    qa_capital,
    qa_identity,
    qa_math,
    qa_sound,
    sft_qa,
)
from lmforge.data.synth_rl import (  # noqa: F401  (MATH1_* / LAST_* are part of this module's API)
    LAST_HELDOUT,
    LAST_RIGHT,
    MATH1_HELDOUT,
    MATH1_SPLIT,
    _last_heldout_rows,
    _last_prompt_rows,
    _last_sft_rows,
    _math1_heldout_rows,
    _math1_prompt_rows,
    _math1_sft_rows,
)

# ---------------------------------------------------------------------------------------------
# Pretraining prose


def _sentence(rng: random.Random, lang: str) -> str:
    kind = rng.random()
    if kind < 0.4:
        c, cap, zc, zcap = rng.choice(COUNTRIES)
        if lang == "zh":
            return rng.choice(
                (
                    f"{zc}的首都是{zcap}。",
                    f"{zcap}是{zc}的首都。",
                    f"{zc}的首都叫{zcap}。",
                    f"去{zc}旅行可以参观首都{zcap}。",
                )
            )
        return rng.choice(
            (
                f"The capital of {c} is {cap}.",
                f"{cap} is the capital of {c}.",
                f"{cap} is the capital city of {c}.",
                f"If you travel to {c}, you can visit its capital, {cap}.",
                f"People in {c} call {cap} their capital.",
            )
        )
    if kind < 0.55:
        a, s, za, zs = rng.choice(ANIMALS)
        if lang == "zh":
            return rng.choice((f"{za}的叫声是{zs}。", f"{za}会发出{zs}的叫声。", f"听，{za}在叫：{zs}。"))
        return rng.choice(
            (f"{capitalise(a)} says {s}.", f"The sound {a} makes is {s}.", f"When {a} speaks, it goes {s}.")
        )
    if kind < 0.67:
        t, col, zt, zcol = rng.choice(COLOURS)
        if lang == "zh":
            return rng.choice((f"{zt}是{zcol}的。", f"{zt}的颜色是{zcol}。"))
        return rng.choice((f"{capitalise(t)} is {col}.", f"The colour of {t} is {col}."))
    if kind < 0.87:
        a, op, b, c = arith(rng)
        if lang == "zh":
            word = "加" if op == "+" else "减"
            return rng.choice((f"{a}{word}{b}等于{c}。", f"{a} {op} {b} = {c}。"))
        word = "plus" if op == "+" else "minus"
        return rng.choice((f"{a} {word} {b} equals {c}.", f"{a} {op} {b} = {c}."))
    if kind < 0.92:
        if lang == "zh":
            return rng.choice((f"{MODEL_NAME} 是一个用 lmforge 训练的小模型。", IDENTITY["zh"]))
        return rng.choice((f"{MODEL_NAME} is a small model trained with lmforge.", IDENTITY["en"]))
    q, a = sft_qa(rng, lang)
    return f"问：{q} 答：{a}" if lang == "zh" else f"Q: {q} A: {a}"


def _pretrain_rows(rng: random.Random, n: int, lang: str) -> Iterator[dict]:
    for _ in range(n):
        doc_lang = pick_lang(rng, lang)
        sentences = [_sentence(rng, doc_lang) for _ in range(rng.randint(5, 12))]
        yield {"text": ("" if doc_lang == "zh" else " ").join(sentences)}


# ---------------------------------------------------------------------------------------------
# Chat-shaped corpora


def _sft_rows(rng: random.Random, n: int, lang: str) -> Iterator[dict]:
    for _ in range(n):
        row_lang = pick_lang(rng, lang)
        messages = []
        if rng.random() < 0.25:
            messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS[row_lang])})
        num_turns = 1 if rng.random() < 0.75 else rng.randint(2, 3)
        for _ in range(num_turns):
            q, a = sft_qa(rng, row_lang)
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        yield {"conversations": messages}


def _lora_identity_rows(rng: random.Random, n: int, lang: str) -> Iterator[dict]:
    for _ in range(n):
        row_lang = pick_lang(rng, lang)
        q, _ = qa_identity(rng, row_lang)
        yield {
            "conversations": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": LORA_IDENTITY[row_lang]},
            ]
        }


def _think_math(rng: random.Random, lang: str) -> tuple[str, str, str]:
    a, op, b, c = problem = arith(rng)
    q, answer = qa_math(rng, lang, problem)
    if lang == "zh":
        step = f"需要计算 {a} {'加' if op == '+' else '减'} {b}。"
        if op == "+":
            trace = f"{step}从 {a} 开始，再数 {b} 个，得到 {c}。所以 {a} + {b} = {c}。"
        else:
            trace = f"{step}从 {a} 里拿走 {b} 个，剩下 {c}。所以 {a} - {b} = {c}。"
    else:
        if op == "+":
            trace = f"I need to add {a} and {b}. Starting at {a} and counting {b} more gives {c}. So {a} + {b} = {c}."
        else:
            trace = (
                f"I need to subtract {b} from {a}. Taking {b} away from {a} leaves {c}. So {a} - {b} = {c}."
            )
    return q, trace, answer


def _think_capital(rng: random.Random, lang: str) -> tuple[str, str, str]:
    row = rng.choice(COUNTRIES)
    q, answer = qa_capital(rng, lang, row)
    if lang == "zh":
        trace = f"问题问的是{row[2]}的首都。我记得{row[2]}的首都是{row[3]}。"
    else:
        trace = f"The question asks for the capital of {row[0]}. I remember that the capital of {row[0]} is {row[1]}."
    return q, trace, answer


def _reasoning_rows(rng: random.Random, n: int, lang: str) -> Iterator[dict]:
    for _ in range(n):
        row_lang = pick_lang(rng, lang)
        make = _think_math if rng.random() < 0.75 else _think_capital
        q, trace, answer = make(rng, row_lang)
        content = f"<think>\n{trace}\n</think>\n<answer>\n{answer}\n</answer>"
        yield {"conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": content}]}


def _fact_split(held_out: bool) -> tuple[tuple, tuple]:
    """(countries, animals) of the held-out preference facts, or of the training ones."""
    countries = tuple(r for r in COUNTRIES if (r[0] in HELDOUT_COUNTRIES) == held_out)
    return countries, tuple(r for r in ANIMALS if (r[0] in HELDOUT_ANIMALS) == held_out)


def _wrong_pair(rng: random.Random, lang: str, held_out: bool = False) -> tuple[str, str, str]:
    """A question, its correct answer and a plausible wrong one: on the training facts (arithmetic,
    capitals, sounds), or with ``held_out`` on the held-out facts only (capitals and sounds)."""
    countries, animals = _fact_split(held_out)
    kind = rng.random()
    if held_out:
        kind = 0.45 + 0.55 * kind  # no arithmetic: held-out pairs are fact pairs
    if kind < 0.45:
        a, op, b, c = problem = arith(rng)
        q, good = qa_math(rng, lang, problem)
        wrong = c + rng.choice((-3, -2, -1, 1, 2, 3))
        return q, good, good.replace(f"= {c}", f"= {wrong}")
    if kind < 0.85:
        row, other = rng.sample(countries, 2)
        q, good = qa_capital(rng, lang, row)
        bad = good.replace(row[3], other[3]) if lang == "zh" else good.replace(row[1], other[1])
        return q, good, bad
    row, other = rng.sample(animals, 2)
    q, good = qa_sound(rng, lang, row)
    bad = (
        good.replace(row[3], other[3]) if lang == "zh" else good.replace(f"says {row[1]}", f"says {other[1]}")
    )
    return q, good, bad


def _dpo_rows(rng: random.Random, n: int, lang: str, held_out: bool = False) -> Iterator[dict]:
    for _ in range(n):
        q, good, bad = _wrong_pair(rng, pick_lang(rng, lang), held_out)
        user = {"role": "user", "content": q}
        yield {
            "chosen": [user, {"role": "assistant", "content": good}],
            "rejected": [user, {"role": "assistant", "content": bad}],
        }


def _dpo_heldout_rows(rng: random.Random, n: int, lang: str) -> Iterator[dict]:
    return _dpo_rows(rng, n, lang, held_out=True)


def _kto_rows(rng: random.Random, n: int, lang: str) -> Iterator[dict]:
    for _ in range(n):
        q, good, bad = _wrong_pair(rng, pick_lang(rng, lang))
        label = rng.random() < 0.5
        yield {
            "prompt": [{"role": "user", "content": q}],
            "completion": [{"role": "assistant", "content": good if label else bad}],
            "label": label,
        }


def _rlaif_rows(rng: random.Random, n: int, lang: str) -> Iterator[dict]:
    for _ in range(n):
        row_lang = pick_lang(rng, lang)
        a, op, b, c = problem = arith(rng)
        q, _ = qa_math(rng, row_lang, problem)
        messages = []
        if rng.random() < 0.2:
            messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS[row_lang])})
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": "无"}]
        yield {"conversations": messages, "gt": [str(c)]}


def _brief_rows(rng: random.Random, n: int, lang: str, held_out: bool = False) -> Iterator[dict]:
    """Preference pairs whose chosen answer is brief (just the fact: "Tokyo.") and whose rejected
    answer is SFT's full sentence with the same fact, on training facts or (``held_out``) on the
    held-out ones: a style that holds on unseen questions."""
    countries, animals = _fact_split(held_out)
    for _ in range(n):
        row_lang = pick_lang(rng, lang)
        if rng.random() < 0.7:
            row = rng.choice(countries)
            q, full = qa_capital(rng, row_lang, row)
            brief = row[3] + "。" if row_lang == "zh" else row[1] + "."
        else:
            row = rng.choice(animals)
            q, full = qa_sound(rng, row_lang, row)
            brief = row[3] + "。" if row_lang == "zh" else capitalise(row[1]) + "."
        user = {"role": "user", "content": q}
        yield {
            "chosen": [user, {"role": "assistant", "content": brief}],
            "rejected": [user, {"role": "assistant", "content": full}],
        }


def _brief_heldout_rows(rng: random.Random, n: int, lang: str) -> Iterator[dict]:
    return _brief_rows(rng, n, lang, held_out=True)


# ---------------------------------------------------------------------------------------------
# Public API

# name → (file, generator, rows at scale 1.0)
_CORPORA = {
    "pretrain": ("pretrain.jsonl", _pretrain_rows, 9000),
    "sft": ("sft.jsonl", _sft_rows, 4000),
    "reasoning": ("reasoning.jsonl", _reasoning_rows, 1500),
    "dpo": ("dpo.jsonl", _dpo_rows, 1500),
    "rlaif": ("rlaif.jsonl", _rlaif_rows, 1000),
    "kto": ("kto.jsonl", _kto_rows, 1500),
    # Preference pairs on facts no dpo/kto row mentions (HELDOUT_COUNTRIES, HELDOUT_ANIMALS).
    "dpo_heldout": ("dpo_heldout.jsonl", _dpo_heldout_rows, 600),
    "lora_identity": ("lora_identity.jsonl", _lora_identity_rows, 200),
    # The RL task: one-digit sums and differences that a tiny model half learns in a minute of SFT;
    # RL prompts with answers, and held-out prompts on problems neither of the others has (MATH1_HELDOUT).
    "math1_sft": ("math1_sft.jsonl", _math1_sft_rows, 3000),
    "math1_rl": ("math1_rl.jsonl", _math1_prompt_rows, 400),
    "math1_heldout": ("math1_heldout.jsonl", _math1_heldout_rows, 200),
    # An RL task whose skill transfers: give the last of four digits. SFT rows are noisy (LAST_RIGHT
    # of them right, the others give the first digit); held-out prompts use sequences no other row has.
    "last_sft": ("last_sft.jsonl", _last_sft_rows, 3000),
    "last_rl": ("last_rl.jsonl", _last_prompt_rows, 400),
    "last_heldout": ("last_heldout.jsonl", _last_heldout_rows, 200),
    # Preference pairs on a style (brief answer chosen over the full sentence), and the same style on
    # the held-out facts.
    "brief": ("brief.jsonl", _brief_rows, 1500),
    "brief_heldout": ("brief_heldout.jsonl", _brief_heldout_rows, 600),
}
LANGS = ("both", "en", "zh")


def _write_jsonl(path: str, rows: Iterator[dict]) -> list[dict]:
    kept = []
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            kept.append(row)
    return kept


def _write_tokenizer_corpus(path: str, pretrain: list[dict], chats: list[dict]) -> None:
    """Plain text for ``tokenizer train``: the prose, then every chat turn as ``role`` + content lines."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in pretrain:
            f.write(row["text"] + "\n")
        for row in chats:
            for message in row["conversations"]:
                f.write(message["role"] + "\n" + message["content"] + "\n")


def synth(out_dir: str, seed: int = 0, scale: float = 1.0, lang: str = "both") -> dict[str, str]:
    """Write the synthetic corpora into ``out_dir``; returns ``{name: path}``.

    ``scale`` multiplies every row count (1.0: ~9k pretrain docs ≈ 2.5 MB, 4k SFT conversations,
    1-1.5k rows for the others); ``lang`` is "both", "en" or "zh". Each file has its own random
    stream derived from ``seed``, so files are byte-identical across runs.
    """
    if lang not in LANGS:
        raise ValueError(f'data synth: --lang must be one of {", ".join(LANGS)}; got "{lang}"')
    if scale <= 0:
        raise ValueError(f"data synth: --scale must be > 0; got {scale}")
    os.makedirs(out_dir, exist_ok=True)
    paths: dict[str, str] = {}
    written: dict[str, list[dict]] = {}
    for name, (file_name, make_rows, base_rows) in _CORPORA.items():
        rng = random.Random(f"lmforge-synth-{seed}-{name}")  # str seeds hash with sha512: stable
        paths[name] = os.path.join(out_dir, file_name)
        written[name] = _write_jsonl(paths[name], make_rows(rng, max(1, round(base_rows * scale)), lang))
    paths["tokenizer_corpus"] = os.path.join(out_dir, "tokenizer_corpus.txt")
    _write_tokenizer_corpus(
        paths["tokenizer_corpus"], written["pretrain"], written["sft"] + written["reasoning"]
    )
    return paths


def eval_questions(lang: str = "both") -> list[tuple[str, str]]:
    """A few ``(question, expected substring of a correct answer)`` pairs for demos and smoke tests."""
    en = [
        ("What is the capital of France?", "Paris"),
        ("What is the capital of Japan?", "Tokyo"),
        ("What is 3 + 4?", "= 7"),
        ("What sound does a cat make?", "meow"),
        ("Who are you?", MODEL_NAME),
    ]
    zh = [
        ("法国的首都是哪里？", "巴黎"),
        ("日本的首都是哪里？", "东京"),
        ("3 加 4 等于几？", "= 7"),
        ("猫怎么叫？", "喵喵"),
        ("你是谁？", MODEL_NAME),
    ]
    if lang not in LANGS:
        raise ValueError(f'--lang must be one of {", ".join(LANGS)}; got "{lang}"')
    return {"en": en, "zh": zh, "both": en + zh}[lang]
