"""Tokenizer training, the shipped default tokenizer, and loading with plain transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.data.template import CHAT_TEMPLATE
from lmforge.errors import LmforgeError
from lmforge.models.tokenizer import (
    SPECIAL_TOKENS,
    default_tokenizer_dir,
    iter_corpus,
    load_tokenizer,
    train_tokenizer,
)

ROUND_TRIP = [
    "Hello world",
    "法国的首都是巴黎。The capital of France is Paris.",
    "  leading spaces and trailing  ",
    "line one\nline two\n\n\nthree\r\nwindows\ttab",
    "emoji 😀🎉👍🏽 and 中文混合 text",
    "未见过的汉字：龘靐齉爨",
    "<|im_start|>user\nhi<|im_end|>\n<think>\nx\n</think>\n<tool_call>\n{}\n</tool_call>",
    "",
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_default_tokenizer_special_ids(tok):
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(token) == i
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 0)
    assert (tok.bos_token, tok.bos_token_id) == ("<|im_start|>", 1)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert tok.unk_token is None
    assert tok.chat_template == CHAT_TEMPLATE
    assert len(tok) <= 6400


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip_and_no_auto_specials(tok, text):
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    if text and not text.startswith("<|im_start|>"):
        assert ids[0] != tok.bos_token_id
        assert ids[-1] != tok.eos_token_id


def test_special_tags_are_atomic(tok):
    ids = tok(
        "<|im_start|>a<think>b</think><tool_call>c</tool_call><tool_response>d</tool_response><|im_end|>"
    )["input_ids"]
    for i in range(9):
        if i != 0:
            assert i in ids
    # Control tokens are special (dropped by skip_special_tokens); think / tool tags stay in the text.
    assert tok.decode(ids, skip_special_tokens=True) == (
        "a<think>b</think><tool_call>c</tool_call><tool_response>d</tool_response>"
    )


def test_plain_autotokenizer_loads_shipped_folder():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_tokenizer_dir())
    assert tok.is_fast
    assert tok.pad_token_id == 0 and tok.bos_token_id == 1 and tok.eos_token_id == 2
    assert tok.model_max_length == 32768
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_shipped_files_are_small():
    names = sorted(os.listdir(default_tokenizer_dir()))
    assert names == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    assert sum(os.path.getsize(os.path.join(default_tokenizer_dir(), n)) for n in names) < 1_000_000


def test_build_script_reproduces_shipped_tokenizer(tmp_path):
    """The asset is what scripts/build_default_tokenizer.py makes (catches synth/template drift)."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "build_default_tokenizer.py"
    subprocess.run([sys.executable, str(script), "--out_dir", str(tmp_path)], check=True, capture_output=True)
    for name in os.listdir(default_tokenizer_dir()):
        shipped = Path(default_tokenizer_dir(), name).read_bytes()
        assert (tmp_path / name).read_bytes() == shipped, (
            f"{name} differs: run scripts/build_default_tokenizer.py"
        )


def _write_corpus(tmp_path: Path) -> list[str]:
    txt = tmp_path / "a.txt"
    txt.write_text(
        "\n".join(f"hello world {i} 你好世界 <|im_start|>marker<|im_end|>" for i in range(300)), "utf-8"
    )
    rows = [
        {"text": "plain pretrain text, repeated"},
        {
            "conversations": [
                {"role": "user", "content": "question here"},
                {"role": "assistant", "content": "answer"},
            ]
        },
        {"conversations": [{"from": "human", "value": "sharegpt value"}, {"from": "gpt", "value": "reply"}]},
        {"messages": [{"role": "user", "content": "openai style"}]},
        {"instruction": "alpaca instruction", "output": "alpaca output", "n": 3},
    ]
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows * 50) + "\n\n", "utf-8")
    return [str(txt), str(jsonl)]


def test_iter_corpus_extracts_text_and_streams(tmp_path):
    files = _write_corpus(tmp_path)
    it = iter_corpus(files)
    assert not isinstance(it, list)
    texts = list(it)
    assert texts[0].startswith("hello world 0 你好世界 \nmarker\n")  # specials removed from training text
    joined = "\n".join(texts)
    for piece in ("plain pretrain text", "question here\nanswer", "sharegpt value\nreply", "openai style"):
        assert piece in joined
    assert "alpaca instruction\nalpaca output" in joined
    capped = list(iter_corpus(files, max_chars=100))
    assert sum(len(t) for t in capped) == 100
    with pytest.raises(LmforgeError, match="not found"):
        list(iter_corpus([str(tmp_path / "missing.txt")]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n", "utf-8")
    with pytest.raises(LmforgeError, match="bad.jsonl:1"):
        list(iter_corpus([str(bad)]))


def test_train_tokenizer_end_to_end(tmp_path):
    from transformers import AutoTokenizer

    out = train_tokenizer(_write_corpus(tmp_path), str(tmp_path / "tok"), vocab_size=400, max_chars=200_000)
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) <= 400
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(token) == i
    vocab = tok.get_vocab()
    # Marker strings in the corpus must not be learned as ordinary merges.
    assert not any("im_start" in t for t in vocab if t not in SPECIAL_TOKENS)
    for text in ROUND_TRIP:
        assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == (
        "<|im_start|>user\nx<|im_end|>\n"
    )
    with pytest.raises(LmforgeError, match="vocab_size"):
        train_tokenizer(_write_corpus(tmp_path), str(tmp_path / "t2"), vocab_size=100)


def test_load_tokenizer_installs_template_and_pad(tmp_path):
    out = train_tokenizer(_write_corpus(tmp_path), str(tmp_path / "tok"), vocab_size=300)
    config_path = Path(out, "tokenizer_config.json")
    config = json.loads(config_path.read_text("utf-8"))
    del config["chat_template"], config["pad_token"]
    config_path.write_text(json.dumps(config), "utf-8")
    Path(out, "special_tokens_map.json").unlink()
    tok = load_tokenizer(out)
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok.pad_token == "<|endoftext|>"
    with pytest.raises(LmforgeError):
        load_tokenizer(str(tmp_path / "nope"))
