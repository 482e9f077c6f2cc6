"""Synthetic corpora: determinism, documented row shapes, correct facts and sums, sizes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from lmforge.data.synth import COUNTRIES, FACTS, IDENTITY, eval_questions, synth

NAMES = ("pretrain", "sft", "reasoning", "dpo", "rlaif", "kto", "lora_identity", "tokenizer_corpus")
NAMES += ("math1_sft", "math1_rl", "math1_heldout", "dpo_heldout", "last_sft", "last_rl", "last_heldout")
NAMES += ("brief", "brief_heldout")
CJK = re.compile(r"[\u4e00-\u9fff]")
SUM = re.compile(r"(\d+) ([+-]) (\d+) = (-?\d+)")


def _rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return synth(str(tmp_path_factory.mktemp("synth")), seed=0, scale=0.1)


def _check_messages(messages, last_role="assistant"):
    assert isinstance(messages, list) and messages
    for m in messages:
        assert set(m) == {"role", "content"}
        assert m["role"] in ("system", "user", "assistant") and isinstance(m["content"], str) and m["content"]
    assert messages[-1]["role"] == last_role


def test_same_seed_byte_identical_other_seed_differs(tmp_path, small):
    a = synth(str(tmp_path / "a"), seed=0, scale=0.1)
    assert sorted(a) == sorted(NAMES)
    for name in NAMES:
        with open(a[name], "rb") as f1, open(small[name], "rb") as f2:
            assert f1.read() == f2.read(), name
    b = synth(str(tmp_path / "b"), seed=1, scale=0.1)
    with open(a["sft"], "rb") as f1, open(b["sft"], "rb") as f2:
        assert f1.read() != f2.read()


def test_determinism_across_processes(tmp_path, small):
    """String seeds must not depend on PYTHONHASHSEED."""
    code = f"from lmforge.data.synth import synth; synth({str(tmp_path)!r}, seed=0, scale=0.1)"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=os.getcwd())
    for name in NAMES:
        with open(tmp_path / os.path.basename(small[name]), "rb") as f1, open(small[name], "rb") as f2:
            assert f1.read() == f2.read(), name


def test_pretrain_and_sft_shapes(small):
    pretrain = _rows(small["pretrain"])
    assert len(pretrain) == 900
    assert all(set(r) == {"text"} and len(r["text"]) > 20 for r in pretrain)
    sft = _rows(small["sft"])
    assert len(sft) == 400
    for r in sft:
        assert set(r) == {"conversations"}
        _check_messages(r["conversations"])
    assert any(r["conversations"][0]["role"] == "system" for r in sft)
    assert any(sum(m["role"] == "assistant" for m in r["conversations"]) > 1 for r in sft)
    assert any(CJK.search(r["conversations"][-1]["content"]) for r in sft)
    assert any(not CJK.search(r["conversations"][-1]["content"]) for r in sft)


def test_answers_are_correct(small):
    capitals = {c: cap for c, cap, _, _ in COUNTRIES} | {zc: zcap for _, _, zc, zcap in COUNTRIES}
    checked = 0
    for r in _rows(small["sft"]):
        msgs = r["conversations"]
        for q, a in zip(msgs, msgs[1:]):
            if q["role"] != "user":
                continue
            for country, capital in capitals.items():
                if re.search(rf"(capital of {country}\?|^{country}的首都)", q["content"]):
                    assert capital in a["content"], (q, a)
                    checked += 1
            m = SUM.search(a["content"])
            if m:
                x, op, y, z = int(m[1]), m[2], int(m[3]), int(m[4])
                assert z == (x + y if op == "+" else x - y) and 0 <= x < 20 and 0 <= y < 20 and z >= 0
                checked += 1
            if q["content"] in ("Who are you?", "你是谁？"):
                assert a["content"] in IDENTITY.values()
    assert checked > 200


def test_reasoning_rows(small):
    rows = _rows(small["reasoning"])
    assert len(rows) == 150
    pattern = re.compile(r"<think>\n.+\n</think>\n<answer>\n.+\n</answer>", re.S)
    for r in rows:
        _check_messages(r["conversations"])
        assert pattern.fullmatch(r["conversations"][-1]["content"])


def test_preference_kto_rlaif_rows(small):
    dpo = _rows(small["dpo"])
    assert len(dpo) == 150
    for r in dpo:
        assert set(r) == {"chosen", "rejected"}
        _check_messages(r["chosen"])
        _check_messages(r["rejected"])
        assert r["chosen"][:-1] == r["rejected"][:-1]
        assert r["chosen"][-1]["content"] != r["rejected"][-1]["content"]
        m = SUM.search(r["chosen"][-1]["content"])
        if m:
            assert int(m[4]) == (int(m[1]) + int(m[3]) if m[2] == "+" else int(m[1]) - int(m[3]))
    kto = _rows(small["kto"])
    assert len(kto) == 150
    for r in kto:
        assert set(r) == {"prompt", "completion", "label"} and isinstance(r["label"], bool)
        _check_messages(r["prompt"], last_role="user")
        _check_messages(r["completion"])
    assert {r["label"] for r in kto} == {True, False}
    rlaif = _rows(small["rlaif"])
    assert len(rlaif) == 100
    for r in rlaif:
        assert set(r) == {"conversations", "gt"}
        _check_messages(r["conversations"])
        assert r["conversations"][-1]["content"] == "无"
        q = r["conversations"][-2]["content"]
        x, op, y = re.search(r"(\d+) (\+|-|加|减|plus|minus) (\d+)", q).groups()
        expected = int(x) + int(y) if op in ("+", "加", "plus") else int(x) - int(y)
        assert r["gt"] == [str(expected)]


def test_lang_filter(tmp_path):
    paths = synth(str(tmp_path / "en"), lang="en", scale=0.02)
    for name in ("pretrain", "sft", "dpo"):
        with open(paths[name], encoding="utf-8") as f:
            assert not CJK.search(f.read()), name
    paths = synth(str(tmp_path / "zh"), lang="zh", scale=0.02)
    for r in _rows(paths["sft"]):
        assert all(CJK.search(m["content"]) for m in r["conversations"] if m["role"] != "assistant")
    with pytest.raises(ValueError, match="--lang"):
        synth(str(tmp_path / "x"), lang="fr")
    with pytest.raises(ValueError, match="--scale"):
        synth(str(tmp_path / "x"), scale=0)


def test_default_scale_sizes(tmp_path):
    paths = synth(str(tmp_path))
    assert 1.5e6 <= os.path.getsize(paths["pretrain"]) <= 3e6
    assert 3000 <= len(_rows(paths["sft"])) <= 6000
    for name in ("reasoning", "dpo", "rlaif", "kto"):
        assert 1000 <= len(_rows(paths[name])) <= 2000, name


def test_eval_questions_match_sft_answers():
    assert FACTS["countries"] is COUNTRIES
    for lang in ("en", "zh"):
        pairs = eval_questions(lang)
        assert len(pairs) >= 4
        assert all(isinstance(q, str) and isinstance(s, str) for q, s in pairs)
    assert eval_questions("both") == eval_questions("en") + eval_questions("zh")
    assert ("What is the capital of France?", "Paris") in eval_questions("en")


def test_lora_identity_rows_teach_the_new_name(small):
    from lmforge.data.synth import LORA_IDENTITY

    rows = [json.loads(x) for x in open(small["lora_identity"], encoding="utf-8")]
    assert rows and all(r["conversations"][-1]["content"] in LORA_IDENTITY.values() for r in rows)
    assert {r["conversations"][-1]["content"] for r in rows} == set(LORA_IDENTITY.values())


def test_math1_rows_are_correct_one_digit_arithmetic(small):
    sft = _rows(small["math1_sft"])
    for r in sft:
        _check_messages(r["conversations"])
        a, op, b, c = SUM.search(r["conversations"][1]["content"]).groups()
        assert max(int(a), int(b)) < 10 and int(c) == (int(a) + int(b) if op == "+" else int(a) - int(b))
        assert int(c) >= 0 and f"{a}" in r["conversations"][0]["content"]
    for name in ("math1_rl", "math1_heldout"):
        for r in _rows(small[name]):
            _check_messages(r["conversations"])
            q = r["conversations"][0]["content"]
            a, b = map(int, re.findall(r"\d", q))
            assert int(r["gt"][0]) in (a + b, a - b)


def _prompts(path):
    """Every user turn of a file's rows (chat, preference or KTO rows)."""
    out = set()
    for r in _rows(path):
        for key in ("conversations", "chosen", "rejected", "prompt"):
            out |= {m["content"] for m in r.get(key, []) if m["role"] == "user"}
    return out


def _problems(text):
    return {(int(a), op, int(b)) for a, op, b in re.findall(r"(\d+) (\+|-|plus|minus) (\d+)", text)}


def test_held_out_sets_share_no_prompt_with_training_data(tmp_path):
    """Held out by construction, at every seed: the same held-out prompts for seed 0 and seed 1,
    none of them (nor their problems / facts) in any training file of either seed."""
    from lmforge.data.synth import ANIMALS, HELDOUT_ANIMALS, HELDOUT_COUNTRIES, LAST_HELDOUT, MATH1_HELDOUT

    seeds = [synth(str(tmp_path / str(s)), seed=s, scale=0.5) for s in (0, 1)]
    sym = {"plus": "+", "minus": "-"}
    for paths in seeds:
        held = _prompts(paths["math1_heldout"])
        problems = {(a, sym.get(op, op), b) for q in held for a, op, b in _problems(q)}
        assert len(held) >= 50 and len(problems) >= 25 and problems <= MATH1_HELDOUT
        for other in seeds:
            for name in ("math1_sft", "math1_rl"):
                train = _prompts(other[name])
                assert not held & train, name
                seen = {(a, sym.get(op, op), b) for q in train for a, op, b in _problems(q)}
                assert not problems & seen, name
        pairs = _prompts(paths["dpo_heldout"])
        assert len(pairs) >= 40
        facts = HELDOUT_COUNTRIES + tuple(a.split()[-1] for a in HELDOUT_ANIMALS)
        facts += tuple(z for c, _, z, _ in COUNTRIES if c in HELDOUT_COUNTRIES)
        facts += tuple(z for a, _, z, _ in ANIMALS if a in HELDOUT_ANIMALS)
        assert all(any(f in q for f in facts) for q in pairs)
        brief = _prompts(paths["brief_heldout"])
        assert len(brief) >= 40 and all(any(f in q for f in facts) for q in brief)
        for other in seeds:
            for name in ("dpo", "kto", "brief"):
                train = _prompts(other[name])
                assert not (pairs | brief) & train, name
                assert not [q for q in train if any(f in q for f in facts)], name
        held = _prompts(paths["last_heldout"])
        sequences = {_digits(q) for q in held}
        assert len(held) >= 50 and len(sequences) >= 50 and sequences <= LAST_HELDOUT
        for other in seeds:
            for name in ("last_sft", "last_rl"):
                train = _prompts(other[name])
                assert not held & train and not sequences & {_digits(q) for q in train}, name


def _digits(question):
    return tuple(int(d) for d in re.findall(r"\d", question))


def test_last_and_brief_rows(small):
    """last_*: four digits, the reference is the last; SFT answers give the last or the first digit.
    brief*: the chosen answer is the rejected sentence's fact alone."""
    from lmforge.data.synth import LAST_RIGHT

    sft = _rows(small["last_sft"])
    right = 0
    for r in sft:
        _check_messages(r["conversations"])
        digits = _digits(r["conversations"][0]["content"])
        answer = r["conversations"][1]["content"]
        assert len(digits) == 4 and answer in (f"{digits[-1]}.", f"{digits[0]}.")
        right += answer == f"{digits[-1]}."
    assert abs(right / len(sft) - LAST_RIGHT) < 0.1
    for name in ("last_rl", "last_heldout"):
        for r in _rows(small[name]):
            assert r["gt"] == [str(_digits(r["conversations"][0]["content"])[-1])]
    for name in ("brief", "brief_heldout"):
        for r in _rows(small[name]):
            assert r["chosen"][:-1] == r["rejected"][:-1]
            brief, full = r["chosen"][-1]["content"], r["rejected"][-1]["content"]
            assert brief[:-1].lower() in full.lower() and len(brief) < len(full), (brief, full)
