"""ChatML template: Jinja == Python rendering, exact loss masks, ids == whole-text ids, truncation."""

from __future__ import annotations

import json

import pytest

from lmforge.data.chat import encode_chat, encode_chat_batch
from lmforge.data.template import CHAT_TEMPLATE, IGNORE_INDEX, encode_text, render_chat
from lmforge.models.tokenizer import load_tokenizer

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "查询天气 / get the weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "add", "description": "a + b", "parameters": {"type": "object"}},
    },
]
CALL = {"name": "get_weather", "arguments": {"city": "北京"}}
OPENAI_CALL = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}

U = {"role": "user", "content": "What is the capital of France?"}
A = {"role": "assistant", "content": "The capital of France is Paris."}
U2 = {"role": "user", "content": "法国的首都是哪里？"}
A2 = {"role": "assistant", "content": "法国的首都是巴黎。"}
SYS = {"role": "system", "content": "You are a helpful assistant."}

# (messages, tools) pairs; every one is rendered with each generation-prompt / thinking setting.
CASES = {
    "single": ([U, A], None),
    "user_only": ([U], None),
    "system_multi_turn": ([SYS, U, A, U2, A2], None),
    "empty_system": ([{"role": "system", "content": ""}, U, A], None),
    "tools_no_system": ([U, A], TOOLS),
    "tools_with_system": ([SYS, U, A], TOOLS),
    "tool_call_flow": (
        [
            SYS,
            {"role": "user", "content": "北京天气怎么样？"},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "content": '{"weather": "晴", "temp": 25}'},
            {"role": "assistant", "content": "北京今天晴，25 度。"},
        ],
        TOOLS,
    ),
    "content_and_calls": (
        [U, {"role": "assistant", "content": "Let me check.", "tool_calls": [CALL, OPENAI_CALL]}],
        TOOLS,
    ),
    "none_content_parallel_tools": (
        [
            U,
            {"role": "assistant", "content": None, "tool_calls": [OPENAI_CALL, CALL]},
            {"role": "tool", "content": "3"},
            {"role": "tool", "content": "sunny"},
            A,
        ],
        TOOLS,
    ),
    "tool_first": ([{"role": "tool", "content": "x"}, A], None),
    "reasoning": ([U, {**A, "reasoning_content": "France → Paris."}, U2, A2], None),
    "think_in_content": ([U, {"role": "assistant", "content": "<think>\nhm\n</think>\n\nParis."}], None),
    "reasoning_and_call": (
        [U, {"role": "assistant", "content": "", "reasoning_content": "use tool", "tool_calls": [CALL]}],
        TOOLS,
    ),
    "minimind_answer_tags": (
        [U, {"role": "assistant", "content": "<think>\na\n</think>\n<answer>\nb\n</answer>"}],
        None,
    ),
    "whitespace_edges": (
        [{"role": "user", "content": " \n hi \n"}, {"role": "assistant", "content": "\n\n  spaced\n\n"}],
        None,
    ),
    "emoji_newlines": (
        [{"role": "user", "content": "😀\n\n\tok"}, {"role": "assistant", "content": "🎉 done\n"}],
        None,
    ),
}
SETTINGS = [
    {},
    {"add_generation_prompt": True},
    {"add_generation_prompt": True, "enable_thinking": False},
    {"enable_thinking": False},
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def _ids(params):
    return [f"{name}-{i}" for name in CASES for i in range(len(SETTINGS))], [
        (CASES[name], s) for name in CASES for s in SETTINGS
    ]


_CASE_IDS, _CASE_PARAMS = _ids(None)


@pytest.mark.parametrize(("case", "settings"), _CASE_PARAMS, ids=_CASE_IDS)
def test_jinja_template_equals_render_chat(tok, case, settings):
    messages, tools = case
    assert tok.chat_template == CHAT_TEMPLATE
    jinja = tok.apply_chat_template(messages, tools=tools, tokenize=False, **settings)
    assert jinja == render_chat(messages, tools=tools, **settings)


def test_render_chat_exact_text():
    text = render_chat([SYS, U, A], add_generation_prompt=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>\n"
    )
    assert render_chat([U], add_generation_prompt=True).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert render_chat([U], add_generation_prompt=True, enable_thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    reasoning = render_chat([U, {**A, "reasoning_content": "R"}])
    assert (
        "<|im_start|>assistant\n<think>\nR\n</think>\n\nThe capital of France is Paris.<|im_end|>"
        in reasoning
    )
    tool_turn = render_chat([{"role": "tool", "content": "42"}])
    assert tool_turn == "<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n"
    call = render_chat([{"role": "assistant", "content": "ok", "tool_calls": [CALL]}])
    assert call == (
        '<|im_start|>assistant\nok\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n'
        "</tool_call><|im_end|>\n"
    )
    with_tools = render_chat([U], tools=TOOLS[:1])
    assert with_tools.startswith("<|im_start|>system\n# Tools\n")
    assert "<tools>\n" + json.dumps(TOOLS[0], ensure_ascii=False) + "\n</tools>" in with_tools


def test_json_strings_render_like_lists(tok):
    """Canonical rows store tools / tool_calls as JSON strings; they must render like the parsed lists."""
    messages = [U, {"role": "assistant", "content": "", "tool_calls": json.dumps([CALL, OPENAI_CALL])}]
    parsed = [U, {"role": "assistant", "content": "", "tool_calls": [CALL, OPENAI_CALL]}]
    text = render_chat(messages, tools=json.dumps(TOOLS))
    assert text == render_chat(parsed, tools=TOOLS)
    assert text == tok.apply_chat_template(parsed, tools=TOOLS, tokenize=False)
    # A single call object as a string, and a non-JSON string (verbatim, like the Jinja template).
    assert render_chat([{"role": "assistant", "content": "", "tool_calls": json.dumps(CALL)}]) == render_chat(
        [{"role": "assistant", "content": "", "tool_calls": [CALL]}]
    )
    raw = [{"role": "assistant", "content": "x", "tool_calls": "not json"}]
    assert render_chat(raw) == tok.apply_chat_template(raw, tokenize=False)
    assert "x\n<tool_call>\nnot json\n</tool_call>" in render_chat(raw)


def _trained_runs(ids, labels, tok):
    """Decode each maximal run of trained positions."""
    runs, current = [], []
    for i, label in zip(ids, labels):
        if label == IGNORE_INDEX:
            if current:
                runs.append(tok.decode(current))
                current = []
        else:
            assert label == i
            current.append(i)
    if current:
        runs.append(tok.decode(current))
    return runs


def _expected_bodies(messages, tools, enable_thinking=True):
    """Assistant bodies as rendered: what lies between `<|im_start|>assistant\\n` and `<|im_end|>`."""
    text = render_chat(messages, tools=tools, enable_thinking=enable_thinking)
    parts = text.split("<|im_start|>assistant\n")[1:]
    return [p.split("<|im_end|>")[0] + "<|im_end|>" for p in parts]


@pytest.mark.parametrize("enable_thinking", [True, False])
@pytest.mark.parametrize("name", [n for n in CASES if any(m["role"] == "assistant" for m in CASES[n][0])])
def test_loss_mask_covers_exactly_assistant_turns(tok, name, enable_thinking):
    messages, tools = CASES[name]
    enc = encode_chat(tok, messages, tools=tools, enable_thinking=enable_thinking)
    assert len(enc["input_ids"]) == len(enc["labels"])
    rendered = render_chat(messages, tools=tools, enable_thinking=enable_thinking)
    assert enc["input_ids"] == tok(rendered)["input_ids"]
    assert tok.decode(enc["input_ids"]) == rendered
    runs = _trained_runs(enc["input_ids"], enc["labels"], tok)
    expected = _expected_bodies(messages, tools, enable_thinking)
    assert runs == expected
    assert len(runs) == sum(m["role"] == "assistant" for m in messages)


def test_multi_turn_masks_known_text(tok):
    enc = encode_chat(tok, [SYS, U, A, U2, A2])
    runs = _trained_runs(enc["input_ids"], enc["labels"], tok)
    assert runs == ["The capital of France is Paris.<|im_end|>", "法国的首都是巴黎。<|im_end|>"]
    # Prompt side: every role header and user/system text is masked.
    masked = tok.decode([i for i, lab in zip(enc["input_ids"], enc["labels"]) if lab == IGNORE_INDEX])
    assert masked == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "What is the capital of France?<|im_end|>\n<|im_start|>assistant\n\n<|im_start|>user\n"
        "法国的首都是哪里？<|im_end|>\n<|im_start|>assistant\n\n"
    )


def test_train_on_prompt(tok):
    enc = encode_chat(tok, [SYS, U, A], train_on_prompt=True)
    assert enc["labels"] == enc["input_ids"]


def test_truncation(tok):
    messages = [U, A, U2, A2]
    full = encode_chat(tok, messages)
    cut = encode_chat(tok, messages, max_length=len(full["input_ids"]) - 5)
    assert cut["input_ids"] == full["input_ids"][:-5]
    assert cut["labels"] == full["labels"][:-5]
    # Cut inside the first user turn: nothing trainable is left, labels are all -100.
    short = encode_chat(tok, messages, max_length=4)
    assert len(short["input_ids"]) == 4
    assert all(lab == IGNORE_INDEX for lab in short["labels"])


def test_batch_equals_single(tok):
    rows = [{"messages": CASES[name][0], "tools": CASES[name][1]} for name in CASES]
    rows.append({"conversations": [U, A]})  # MiniMind key accepted too
    batch = encode_chat_batch(tok, rows, max_length=64)
    for i, row in enumerate(rows):
        messages = row.get("messages") or row["conversations"]
        single = encode_chat(tok, messages, tools=row.get("tools"), max_length=64)
        assert batch["input_ids"][i] == single["input_ids"]
        assert batch["labels"][i] == single["labels"]
    with pytest.raises(ValueError, match="messages"):
        encode_chat_batch(tok, [{"text": "x"}])


def test_ids_equal_whole_text_on_synthetic_rows(tok, tmp_path):
    from lmforge.data.synth import synth

    paths = synth(str(tmp_path), seed=3, scale=0.05)
    rows = []
    for key in ("sft", "reasoning", "rlaif"):
        with open(paths[key], encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    batch = encode_chat_batch(tok, rows)
    texts = [render_chat(r["conversations"]) for r in rows]
    assert batch["input_ids"] == tok(texts)["input_ids"]


def test_encode_text(tok):
    bos, eos = tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")
    assert (bos, eos) == (1, 2)
    docs = encode_text(tok, ["The capital of France is Paris.", "", "法国的首都是巴黎。"])
    assert docs[0][0] == bos and docs[0][-1] == eos
    assert tok.decode(docs[0][1:-1]) == "The capital of France is Paris."
    assert docs[1] == [bos, eos]
    # MiniMind2 pretrain lines already carry ChatML markers: they become special ids, not doubled.
    mm2 = "<|im_start|>Q and A<|im_end|> <|im_start|>another<|im_end|>"
    (ids,) = encode_text(tok, [mm2])
    assert ids[0] == bos and ids[1] != bos and ids[-1] == eos and ids[-2] != eos
    assert ids.count(bos) == 2 and ids.count(eos) == 2
    assert tok.decode(ids) == mm2
