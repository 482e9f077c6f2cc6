"""Training rows in any chat template: ids equal `apply_chat_template`, labels cover exactly the
assistant turns, on byte-level BPE and SentencePiece-style tokenizers built here."""

from __future__ import annotations

import logging

import pytest
from chat_tokenizers import make_tokenizer

from lmforge.data.chat import (
    IGNORE_INDEX,
    TemplateMismatch,
    check_rows,
    encode_completion,
    encode_prompt,
    encode_rows,
    render,
)
from lmforge.data.chat_templates import TEMPLATES, apply_template

SYS = {"role": "system", "content": "You are a helpful assistant."}
U = {"role": "user", "content": "What is the capital of France?"}
A = {"role": "assistant", "content": "The capital of France is Paris."}
U2 = {"role": "user", "content": "法国的首都是哪里？"}
A2 = {"role": "assistant", "content": "法国的首都是巴黎。"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
TOOL_FLOW = [
    U,
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": '{"weather": "sunny"}'},
    {"role": "assistant", "content": "It is sunny in Paris."},
]
# the text each family ends an answer with (trained together with the answer)
END = {
    "qwen": "<|im_end|>",
    "qwen3": "<|im_end|>",
    "llama3": "<|eot_id|>",
    "llama2": " </s>",
    "mistral": "</s>",
    "gemma": "<end_of_turn>",
    "phi3": "<|end|>",
    "deepseek3": "<｜end▁of▁sentence｜>",
    "deepseekr1": "<｜end▁of▁sentence｜>",
    "granite": "<|end_of_text|>",
    "empty": "</s>",
}
GEN_PROMPT = {
    "qwen": "<|im_start|>assistant\n",
    "qwen3": "<|im_start|>assistant\n",
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "llama2": " [/INST]",
    "mistral": " [/INST]",
    "gemma": "<start_of_turn>model\n",
    "phi3": "<|assistant|>\n",
    "deepseek3": "<｜Assistant｜>",
    "deepseekr1": "<｜Assistant｜>",
    "granite": "<|start_of_role|>assistant<|end_of_role|>",
    "empty": "?",
}
EMPTY_THINK = "<think>\n\n</think>\n\n"
KINDS = ("bpe", "sp")
FAMILIES = sorted(END)
TOOL_FAMILIES = ("qwen", "qwen3", "llama3", "granite")


def tok_for(kind: str, family: str):
    return make_tokenizer(kind, family, TEMPLATES[family])


def trained_runs(text: str, offsets, labels) -> list[str]:
    """The text of each contiguous run of trained tokens."""
    runs, cur = [], None
    for (a, b), lab in zip(offsets, labels):
        if lab != IGNORE_INDEX:
            cur = [a, b] if cur is None else [cur[0], b]
        elif cur is not None:
            runs.append(text[cur[0] : cur[1]])
            cur = None
    if cur is not None:
        runs.append(text[cur[0] : cur[1]])
    return runs


def encode_one(tok, messages, tools=None, **kw):
    out = encode_rows(tok, [{"messages": messages, "tools": tools}], with_spans=True, **kw)
    text = out["text"][0]
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return out["input_ids"][0], out["labels"][0], trained_runs(text, offsets, out["labels"][0])


def reference_ids(tok, family, messages, tools=None):
    if family == "gemma" and messages[0]["role"] == "system":  # folded by hand, as lmforge does
        first = dict(messages[1], content=messages[0]["content"] + "\n\n" + messages[1]["content"])
        messages = [first, *messages[2:]]
    return tok.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=False)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_rows_equal_template_ids_and_mask_answers(kind, family):
    tok = tok_for(kind, family)
    messages = [SYS, U, A, U2, A2]
    ids, labels, runs = encode_one(tok, messages)
    assert ids == reference_ids(tok, family, messages)
    assert len(ids) == len(labels)
    body = {"llama2": " {} </s>"}.get(family, "{}" + END[family])
    expected = [body.format(m["content"]) for m in (A, A2)]
    if family == "qwen3":  # the final answer always carries a think block
        expected[1] = EMPTY_THINK + expected[1]
    assert runs == expected  # content + end of turn, no more
    check_rows(tok, [{"messages": messages}])  # the guard passes


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_mask_history_trains_last_turn_only(kind, family):
    tok = tok_for(kind, family)
    _, labels, runs = encode_one(tok, [U, A, U2, A2], mask_history=True)
    assert len(runs) == 1 and A2["content"] in runs[0] and A["content"] not in runs[0]
    ids, all_labels, _ = encode_one(tok, [U, A, U2, A2], train_on_prompt=True)
    assert all_labels == ids  # --train_on_prompt: every token


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", TOOL_FAMILIES)
def test_tool_call_rows(kind, family):
    tok = tok_for(kind, family)
    ids, _, runs = encode_one(tok, [SYS, *TOOL_FLOW], TOOLS)
    assert ids == reference_ids(tok, family, [SYS, *TOOL_FLOW], TOOLS)
    assert len(runs) == 2 and "get_weather" in runs[0] and "Paris" in runs[0]
    last = ("It is sunny in Paris." + END[family]).strip()
    assert runs[1].strip() == (EMPTY_THINK + last if family == "qwen3" else last)
    assert not any('"sunny"' in r for r in runs)  # the tool result is not trained
    # the same row with JSON-string tools / tool_calls (how canonical rows store them) is identical
    import json

    as_strings = [
        dict(m, tool_calls=json.dumps(m["tool_calls"])) if "tool_calls" in m else m for m in TOOL_FLOW
    ]
    assert encode_one(tok, [SYS, *as_strings], json.dumps(TOOLS))[0] == ids


@pytest.mark.parametrize("family", ["gemma", "mistral", "phi3", "llama2"])
def test_families_without_tools_refuse_them(family):
    with pytest.raises(Exception, match="no tool format"):
        encode_one(tok_for("bpe", family), TOOL_FLOW, TOOLS)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_preference_and_rl_prompts(kind, family):
    tok = tok_for(kind, family)
    prompt = [SYS, U]
    chosen, rejected = [A], [{"role": "assistant", "content": "London."}]
    p1, c = encode_completion(tok, prompt, chosen)
    p2, r = encode_completion(tok, prompt, rejected)
    assert p1 == p2 == encode_prompt(tok, prompt)  # chosen and rejected share the inference prompt
    assert p1 + c == reference_ids(tok, family, prompt + chosen)
    assert p2 + r == reference_ids(tok, family, prompt + rejected)
    text = render(tok, prompt, add_generation_prompt=True)
    if family != "empty":
        assert text.endswith(GEN_PROMPT[family])
    assert tok.decode(p1) == tok.decode(tok(text, add_special_tokens=False)["input_ids"])


def test_qwen_default_system_prompt():
    tok = tok_for("bpe", "qwen")
    ids, _, runs = encode_one(tok, [U, A])
    assert "You are Qwen" in render(tok, [U]) and runs == [A["content"] + "<|im_end|>"]


def test_qwen3_drops_past_reasoning():
    tok = tok_for("bpe", "qwen3")
    first = dict(A, reasoning_content="Old thought.")
    last = dict(A2, reasoning_content="New thought.")
    ids, _, runs = encode_one(tok, [U, first, U2, last])
    text = tok.decode(ids)
    assert "Old thought." not in text and "New thought." in text
    assert runs == [
        A["content"] + "<|im_end|>",
        "<think>\nNew thought.\n</think>\n\n" + A2["content"] + "<|im_end|>",
    ]
    # thinking off: the empty think block belongs to the generation prompt, so it is not trained
    ids, _, off = encode_one(tok, [U, A], enable_thinking=False)
    assert "<think>\n\n</think>\n\n" + A["content"] in tok.decode(ids)
    assert off == [A["content"] + "<|im_end|>"]
    prompt = render(tok, [U], add_generation_prompt=True, enable_thinking=False)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


LLAMA31 = TEMPLATES["llama3"].replace(
    "{%- if system_text or tools -%}",
    "{%- if true -%}{{- '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: "
    "December 2023\\nToday Date: 26 Jul 2024\\n\\n' + system_text + '<|eot_id|>' -}}{%- elif false -%}",
)


@pytest.mark.parametrize("kind", KINDS)
def test_llama31_date_header(kind):
    tok = make_tokenizer(kind, "llama3", LLAMA31)
    ids, _, runs = encode_one(tok, [U, A, U2, A2])
    assert ids == tok.apply_chat_template([U, A, U2, A2], tokenize=True, return_dict=False)
    assert ids[0] == tok.convert_tokens_to_ids("<|begin_of_text|>")
    assert ids.count(ids[0]) == 1  # one bos, not two
    assert "Today Date" in render(tok, [U, A]) and runs == [
        A["content"] + "<|eot_id|>",
        A2["content"] + "<|eot_id|>",
    ]


def test_gemma_folds_system_once(caplog, monkeypatch):
    from lmforge.data import chat

    monkeypatch.setattr(chat, "_folded_logged", set())  # earlier tests already said it
    tok = tok_for("sp", "gemma")
    with caplog.at_level(logging.INFO, logger="lmforge"):
        encode_one(tok, [SYS, U, A])
        text = render(tok, [SYS, U], add_generation_prompt=True)
    assert "<start_of_turn>user\n" + SYS["content"] + "\n\n" + U["content"] in text
    assert sum("no system role" in r.message for r in caplog.records) == 1


def test_guard_names_template_and_token():
    # "assistant: " then the answer: byte-level BPE merges the space with the answer's first word,
    # so the inference prompt's last token is not the training row's.
    glued = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    tok = make_tokenizer("bpe", "qwen", glued)
    with pytest.raises(TemplateMismatch, match=r"model's own chat template.*token \d+: .*\(inference\) vs"):
        check_rows(tok, [{"messages": [U, A]}])


def test_apply_template_names():
    tok = make_tokenizer("bpe", "llama3")
    apply_template(tok, "Llama3")
    assert tok.chat_template == TEMPLATES["llama3"]
    with pytest.raises(Exception, match="unknown template"):
        apply_template(tok, "nope")


def test_data_check_marks_the_trained_span(tmp_path):
    import json

    from lmforge.data.check import check_dataset, format_report

    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": [SYS, U, A]}) + "\n")
    report = check_dataset(str(data), "chat", tokenizer=tok_for("bpe", "llama3"))
    shown = format_report(report)
    assert "⟦" + A["content"] + "<|eot_id|>⟧" in shown
    assert (
        report["first_row"].count("⟦") == 1
        and "<|start_header_id|>assistant<|end_header_id|>\n\n⟦" in report["first_row"]
    )


def test_eval_template_names_match_the_registry():
    from lmforge.evaluate.args import TEMPLATE_NAMES

    assert set(TEMPLATE_NAMES) == set(TEMPLATES)


def test_chatml_fast_path_mask_history_and_saved_template(tokenizer, tmp_path):
    from lmforge.data.chat import encode_chat_batch
    from lmforge.models.tokenizer import load_tokenizer

    rows = [{"messages": [U, A, U2, A2], "tools": None}]
    full = encode_chat_batch(tokenizer, rows)
    last = encode_chat_batch(tokenizer, rows, mask_history=True)
    assert full["input_ids"] == last["input_ids"]
    trained = [i for i, x in enumerate(last["labels"][0]) if x != IGNORE_INDEX]
    assert (
        trained
        and tokenizer.decode([last["input_ids"][0][i] for i in trained]) == A2["content"] + "<|im_end|>"
    )
    # --template NAME is saved with the tokenizer and comes back with no flag
    tok = load_tokenizer(None)
    apply_template(tok, "gemma")
    tok.save_pretrained(tmp_path)
    assert load_tokenizer(str(tmp_path)).chat_template == TEMPLATES["gemma"]


def test_apply_template_warns_about_missing_markers(tokenizer, caplog):
    from lmforge.models.tokenizer import load_tokenizer

    with caplog.at_level(logging.WARNING, logger="lmforge"):
        apply_template(load_tokenizer(None), "llama3")  # the shipped vocabulary has no llama3 markers
        apply_template(make_tokenizer("bpe", "llama3"), "llama3")
    warned = [r.message for r in caplog.records if "not in the tokenizer's vocabulary" in r.message]
    assert len(warned) == 1 and "<|eot_id|>" in warned[0]


def test_template_that_ignores_tools_is_refused():
    silent = "{% for m in messages %}{{ m['role'] + ': ' + (m['content'] or '') + '\\n' }}{% endfor %}"
    tok = make_tokenizer("bpe", "qwen", silent)
    with pytest.raises(Exception, match="'get_weather' does not appear"):
        encode_one(tok, TOOL_FLOW, TOOLS)
    with pytest.raises(Exception, match="'get_weather' does not appear"):
        render(tok, [U], TOOLS, add_generation_prompt=True)
    assert encode_one(tok, [U, A])[2]  # without tools the template is fine
