"""formats.py: every input format converts to the right canonical row; every bad row is one clear line."""

import json

import pytest

from lmforge.data.formats import FORMATS, detect_format, to_canonical
from lmforge.errors import DataError


def m(role, content, reasoning=None, tool_calls=None):
    return {"role": role, "content": content, "reasoning_content": reasoning, "tool_calls": tool_calls}


TOOLS = json.dumps([{"type": "function", "function": {"name": "add", "parameters": {}}}])
CALLS = json.dumps([{"name": "add", "arguments": {"a": 1}}])


# ---------------------------------------------------------------------------- detection

DETECT_CASES = [
    ("pretrain", {"text": "x"}, "text"),
    ("chat", {"conversations": [{"role": "user", "content": "q"}]}, "minimind"),
    ("chat", {"messages": [{"role": "user", "content": "q"}]}, "openai"),
    ("chat", {"conversations": [{"from": "human", "value": "q"}]}, "sharegpt"),
    ("chat", {"instruction": "i", "input": "", "output": "o"}, "alpaca"),
    ("chat", {"user_prompt": "u", "prediction": "p"}, "csv"),
    ("preference", {"chosen": [], "rejected": []}, "minimind"),
    ("preference", {"prompt": "p", "chosen": "c", "rejected": "r"}, "trl"),
    ("preference", {"conversations": [], "chosen": {}, "rejected": {}}, "sharegpt"),
    ("preference", {"instruction": "i", "chosen": "c", "rejected": "r"}, "alpaca"),
    ("kto", {"prompt": "p", "completion": "c", "label": True}, "trl"),
    ("kto", {"messages": [], "kto_tag": True}, "sharegpt"),
    ("prompt", {"conversations": []}, "minimind"),
    ("prompt", {"messages": []}, "openai"),
    ("prompt", {"prompt": "p"}, "trl"),
    ("chat", {"foo": 1}, ""),
]


@pytest.mark.parametrize("kind,row,fmt", DETECT_CASES)
def test_detect_format(kind, row, fmt):
    assert detect_format(row, kind) == fmt
    assert fmt == "" or fmt in FORMATS[kind]


def test_detect_text_column():
    assert detect_format({"body": "x"}, "pretrain", text_column="body") == "text"
    assert detect_format({"body": "x"}, "pretrain") == ""


# ---------------------------------------------------------------------------- chat conversions


def test_minimind_chat_with_tools_and_reasoning():
    row = {
        "conversations": [
            {"role": "system", "content": "sys", "tools": TOOLS},
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "", "tool_calls": json.loads(CALLS)},
            {"role": "tool", "content": "2"},
            {
                "role": "assistant",
                "content": "<think>\nadd\n</think>\n<answer>\n2\n</answer>",
                "reasoning_content": "r",
            },
        ]
    }
    out = to_canonical(row, "chat")
    assert out["tools"] == TOOLS
    assert out["messages"] == [
        m("system", "sys"),
        m("user", "1+1?"),
        m("assistant", "", tool_calls=json.dumps(json.loads(CALLS), ensure_ascii=False)),
        m("tool", "2"),
        m("assistant", "<think>\nadd\n</think>\n<answer>\n2\n</answer>", reasoning="r"),
    ]


def test_openai_chat_content_parts_and_row_tools():
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "c", "tool_calls": CALLS},
        ],
        "tools": json.loads(TOOLS),
    }
    out = to_canonical(row, "chat")
    assert out["messages"] == [m("user", "ab"), m("assistant", "c", tool_calls=CALLS)]
    assert json.loads(out["tools"]) == json.loads(TOOLS)


def test_sharegpt_chat_roles():
    row = {
        "system": "S",
        "tools": TOOLS,
        "conversations": [
            {"from": "human", "value": "q"},
            {"from": "function_call", "value": json.dumps({"name": "add", "arguments": {}})},
            {"from": "observation", "value": "3"},
            {"from": "gpt", "value": "a"},
        ],
    }
    out = to_canonical(row, "chat")
    assert out["tools"] == TOOLS
    assert [(x["role"], x["content"]) for x in out["messages"]] == [
        ("system", "S"),
        ("user", "q"),
        ("assistant", ""),
        ("tool", "3"),
        ("assistant", "a"),
    ]
    assert json.loads(out["messages"][2]["tool_calls"]) == [{"name": "add", "arguments": {}}]


def test_alpaca_with_history_and_system():
    row = {"instruction": "Do", "input": "this", "output": "done", "system": "S", "history": [["q1", "a1"]]}
    out = to_canonical(row, "chat")
    assert out["messages"] == [
        m("system", "S"),
        m("user", "q1"),
        m("assistant", "a1"),
        m("user", "Do\nthis"),
        m("assistant", "done"),
    ]


def test_csv_defaults_and_audio(tmp_path):
    row = {"user_prompt": "", "prediction": "label A", "audio": "clips/1.wav"}
    out = to_canonical(
        row, "chat", system_prompt="You classify.", user_prompt="What is it?", base_dir="/data"
    )
    assert out["messages"] == [
        m("system", "You classify."),
        m("user", "What is it?"),
        m("assistant", "label A"),
    ]
    assert out["audio"] == "/data/clips/1.wav"


def test_default_system_inserted_only_when_missing():
    row = {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert to_canonical(row, "chat", system="D")["messages"][0] == m("system", "D")
    row["conversations"].insert(0, {"role": "system", "content": "own"})
    assert to_canonical(row, "chat", system="D")["messages"][0] == m("system", "own")


# ---------------------------------------------------------------------------- other kinds


def test_pretrain_text_column():
    assert to_canonical({"text": "hello"}, "pretrain") == {"text": "hello"}
    assert to_canonical({"body": "hi"}, "pretrain", text_column="body") == {"text": "hi"}


def test_preference_minimind_shared_prompt():
    prompt = [{"role": "user", "content": "q"}]
    row = {
        "chosen": prompt + [{"role": "assistant", "content": "good"}],
        "rejected": prompt + [{"role": "assistant", "content": "bad"}],
    }
    assert to_canonical(row, "preference") == {
        "prompt": [m("user", "q")],
        "chosen": [m("assistant", "good")],
        "rejected": [m("assistant", "bad")],
    }


def test_preference_trl_strings_and_messages():
    out = to_canonical({"prompt": "q", "chosen": "g", "rejected": "b"}, "preference", system="S")
    assert out == {
        "prompt": [m("system", "S"), m("user", "q")],
        "chosen": [m("assistant", "g")],
        "rejected": [m("assistant", "b")],
    }
    row = {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "g"}],
        "rejected": [{"role": "assistant", "content": "b"}],
    }
    assert to_canonical(row, "preference")["chosen"] == [m("assistant", "g")]


def test_preference_sharegpt_and_alpaca():
    row = {
        "conversations": [{"from": "human", "value": "q"}],
        "chosen": {"from": "gpt", "value": "g"},
        "rejected": {"from": "gpt", "value": "b"},
    }
    out = to_canonical(row, "preference")
    assert out == {
        "prompt": [m("user", "q")],
        "chosen": [m("assistant", "g")],
        "rejected": [m("assistant", "b")],
    }
    out = to_canonical({"instruction": "q", "chosen": "g", "rejected": "b"}, "preference")
    assert out["prompt"] == [m("user", "q")]


@pytest.mark.parametrize(
    "label,expected", [(True, True), (0, False), (1, True), ("true", True), ("False", False)]
)
def test_kto_labels(label, expected):
    out = to_canonical({"prompt": "q", "completion": "a", "label": label}, "kto")
    assert out == {"prompt": [m("user", "q")], "completion": [m("assistant", "a")], "label": expected}


def test_kto_sharegpt():
    row = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "kto_tag": False,
    }
    assert to_canonical(row, "kto") == {
        "prompt": [m("user", "q")],
        "completion": [m("assistant", "a")],
        "label": False,
    }


def test_prompt_rlaif_placeholder_and_gt():
    row = {
        "conversations": [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "无"}],
        "gt": ["5"],
    }
    assert to_canonical(row, "prompt") == {"prompt": [m("user", "2+3?")], "answer": "5"}
    row = {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}
    assert to_canonical(row, "prompt") == {"prompt": [m("user", "q")], "answer": None}


def test_prompt_plain_and_messages():
    assert to_canonical({"prompt": "q", "answer": 7}, "prompt") == {"prompt": [m("user", "q")], "answer": "7"}
    out = to_canonical({"messages": [{"role": "user", "content": "q"}], "gt": ["a", "b"]}, "prompt")
    assert out == {"prompt": [m("user", "q")], "answer": "a\nb"}


# ---------------------------------------------------------------------------- bad rows

BAD_CASES = [
    ("chat", {"conversations": "hello"}, '"conversations" must be a list of {role, content}; got str'),
    ("chat", {"conversations": []}, '"conversations" must not be an empty conversation'),
    ("chat", {"conversations": [{"role": "bot", "content": "x"}]}, '"conversations[0].role" must be one of'),
    ("chat", {"conversations": [{"role": "user"}]}, '"conversations[0].content" is missing'),
    ("chat", {"messages": [{"role": "user", "content": "q"}]}, '"messages" must contain an assistant turn'),
    (
        "chat",
        {"conversations": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]},
        "must be a string",
    ),
    (
        "chat",
        {
            "conversations": [
                {"from": "human", "value": "a"},
                {"from": "human", "value": "b"},
                {"from": "gpt", "value": "c"},
            ]
        },
        '"conversations[1].role" must alternate user/assistant',
    ),
    ("chat", {"conversations": [{"role": "assistant", "content": "a"}]}, "must not open the conversation"),
    ("chat", {"instruction": "q"}, '"output" must contain an assistant turn'),
    ("chat", {"foo": "bar"}, '"row" matches no chat format (expected minimind'),
    ("chat", {"prediction": "x"}, '"user_prompt" is missing'),
    (
        "chat",
        {
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "tools": "{oops",
        },
        '"tools" must be valid JSON',
    ),
    ("pretrain", {"text": "   "}, '"text" must not be empty'),
    ("pretrain", {"text": 5}, '"text" must be a string'),
    ("pretrain", {"body": "x"}, '"row" matches no pretrain format'),
    ("kto", {"prompt": "q", "completion": "a", "label": "maybe"}, '"label" must be a boolean'),
    ("kto", {"prompt": "q", "completion": "a"}, '"label" is missing'),
    (
        "preference",
        {
            "chosen": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "g"}],
            "rejected": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "b"}],
        },
        '"rejected" must share the prompt of "chosen"',
    ),
    (
        "preference",
        {"chosen": [{"role": "user", "content": "q"}], "rejected": []},
        '"chosen" must contain an assistant turn',
    ),
    ("preference", {"prompt": "q", "chosen": "g"}, '"rejected" is missing'),
    ("preference", {"prompt": "", "chosen": "g", "rejected": "b"}, '"prompt" must not be empty'),
    (
        "prompt",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "assistant", "content": "x"},
            ]
        },
        "must end with a user turn",
    ),
    ("prompt", {"answer": "x"}, '"row" matches no prompt format'),
]


@pytest.mark.parametrize("kind,row,needle", BAD_CASES)
def test_bad_rows_one_line(kind, row, needle):
    with pytest.raises(DataError) as info:
        to_canonical(row, kind, path="data/sft.jsonl", line=118)
    msg = str(info.value)
    assert msg.startswith("data/sft.jsonl:118: ")
    assert needle in msg
    assert "\n" not in msg


def test_unknown_format_override_is_user_error():
    with pytest.raises(ValueError, match="not a chat format"):
        to_canonical({"text": "x"}, "chat", fmt="trl")
