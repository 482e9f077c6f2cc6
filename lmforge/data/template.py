"""ChatML chat format and SFT loss masks: the one definition shared by training and inference.

Text layout (Qwen-style ChatML, MiniMind token ids)::

    <|im_start|>system\n{system}\n\n# Tools ... <tools>\n{spec}\n...</tools> ...<|im_end|>\n
    <|im_start|>user\n{content}<|im_end|>\n
    <|im_start|>assistant\n<think>\n{reasoning}\n</think>\n\n{content}\n<tool_call>\n{call}\n</tool_call><|im_end|>\n
    <|im_start|>user\n<tool_response>\n{tool output}\n</tool_response><|im_end|>\n

``CHAT_TEMPLATE`` (Jinja, installed into every tokenizer we save) and ``render_chat`` (pure Python)
produce the same text; tests check this on many conversations. ``render_chat`` first parses
``tools`` / ``tool_calls`` given as JSON strings (how MiniMind and our canonical rows store them)
into lists, so a training row renders exactly like the same conversation sent by an OpenAI client
at inference. The Jinja template cannot parse JSON: a string ``tool_calls`` is inserted verbatim
inside one ``<tool_call>`` block.

``enable_thinking=False`` (Qwen3 convention) gives assistant turns without reasoning an empty
``<think>\n\n</think>\n\n`` block and appends it after the generation prompt, so the model answers
directly.

Loss masks (``encode_chatml_batch``; ``data/chat.py``'s ``encode_chat`` is the entry point): the tokens of every assistant turn from after
``<|im_start|>assistant\n`` through its ``<|im_end|>`` are trained, everything else is -100.
Each row is tokenised segment by segment, so masks are exact by construction; segments meet only
next to a special token or right after the ``\n`` of ``assistant\n``. The shipped tokenizer
isolates ``\n`` in pre-tokenisation, so the concatenated ids equal the ids of the whole rendered
text. With a foreign tokenizer the two can differ only when an assistant turn starts with
whitespace; the segment-wise ids are then the ones the model sees at inference.
"""

from __future__ import annotations

import json
from typing import Any

IGNORE_INDEX = -100
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
EMPTY_THINK = "<think>\n\n</think>\n\n"

TOOLS_HEADER = "# Tools\n\nYou may call one or more of these functions:\n<tools>"
TOOLS_FOOTER = (
    "\n</tools>\n\nTo call a function, reply with <tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)

# Jinja mirror of `_segments` below. trim_blocks/lstrip_blocks plus `-` markers strip all layout
# whitespace, so only the quoted strings reach the output.
CHAT_TEMPLATE = (
    r"""{%- if messages and messages[0]['role'] == 'system' -%}
  {%- set system_text = messages[0]['content'] if messages[0]['content'] is string else '' -%}
  {%- set loop_messages = messages[1:] -%}
{%- else -%}
  {%- set system_text = none -%}
  {%- set loop_messages = messages -%}
{%- endif -%}
{%- if tools -%}
  {{- '<|im_start|>system\n' -}}
  {%- if system_text -%}{{- system_text + '\n\n' -}}{%- endif -%}
  {{- '"""
    + TOOLS_HEADER.replace("\n", "\\n")
    + r"""' -}}
  {%- if tools is string -%}
    {{- '\n' + tools -}}
  {%- else -%}
    {%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
  {%- endif -%}
  {{- '"""
    + TOOLS_FOOTER.replace("\n", "\\n")
    + r"""<|im_end|>\n' -}}
{%- elif system_text is not none -%}
  {{- '<|im_start|>system\n' + system_text + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in loop_messages -%}
  {%- set content = message['content'] if message['content'] is string else '' -%}
  {%- if message['role'] == 'assistant' -%}
    {%- set reasoning = message['reasoning_content'] if message['reasoning_content'] is string else '' -%}
    {%- set answer = content -%}
    {%- if '<think>' not in content -%}
      {%- if reasoning -%}
        {%- set content = '<think>\n' + reasoning + '\n</think>\n\n' + content -%}
      {%- elif enable_thinking is defined and enable_thinking is false -%}
        {%- set content = '<think>\n\n</think>\n\n' + content -%}
      {%- endif -%}
    {%- endif -%}
    {{- '<|im_start|>assistant\n' + content -}}
    {%- set calls = message['tool_calls'] if message['tool_calls'] is defined and message['tool_calls'] else [] -%}
    {%- if calls is string -%}
      {%- if answer -%}{{- '\n' -}}{%- endif -%}
      {{- '<tool_call>\n' + calls + '\n</tool_call>' -}}
    {%- else -%}
      {%- for call in calls -%}
        {%- if answer or not loop.first -%}{{- '\n' -}}{%- endif -%}
        {%- set fn = call['function'] if call['function'] is defined else call -%}
        {%- set args = fn['arguments'] if fn['arguments'] is defined else {} -%}
        {{- '<tool_call>\n{"name": ' + (fn['name'] | tojson) + ', "arguments": ' -}}
        {%- if args is string -%}{{- args -}}{%- else -%}{{- args | tojson -}}{%- endif -%}
        {{- '}\n</tool_call>' -}}
      {%- endfor -%}
    {%- endif -%}
    {{- '<|im_end|>\n' -}}
  {%- elif message['role'] == 'tool' -%}
    {%- if loop.first or loop_messages[loop.index0 - 1]['role'] != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
    {{- '\n<tool_response>\n' + content + '\n</tool_response>' -}}
    {%- if loop.last or loop_messages[loop.index0 + 1]['role'] != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
  {%- else -%}
    {{- '<|im_start|>' + message['role'] + '\n' + content + '<|im_end|>\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\n' -}}
  {%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\n\n</think>\n\n' -}}{%- endif -%}
{%- endif -%}"""
)


# ---------------------------------------------------------------------------------------------
# Rendering


def _parse_json_list(value: Any) -> Any:
    """A JSON string of a list (or one object) → list; anything else unchanged (rendered verbatim)."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if isinstance(parsed, dict):
            return [parsed]
        return parsed if isinstance(parsed, list) else value
    return value


def _dumps(value: Any) -> str:
    # Same as transformers' `tojson` filter in chat templates.
    return json.dumps(value, ensure_ascii=False)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _reasoning(message: dict) -> str:
    # transformers aliases `thinking` / `reasoning` to `reasoning_content` before rendering.
    for key in ("reasoning_content", "thinking", "reasoning"):
        if message.get(key) is not None:
            return _text(message[key])
    return ""


def _system_turn(system_text: str | None, tools: Any) -> str:
    if tools:
        out = "<|im_start|>system\n" + (system_text + "\n\n" if system_text else "") + TOOLS_HEADER
        if isinstance(tools, str):
            out += "\n" + tools
        else:
            out += "".join("\n" + _dumps(tool) for tool in tools)
        return out + TOOLS_FOOTER + "<|im_end|>\n"
    if system_text is not None:
        return f"<|im_start|>system\n{system_text}<|im_end|>\n"
    return ""


def _assistant_body(message: dict, enable_thinking: bool) -> str:
    content = answer = _text(message.get("content"))
    if "<think>" not in content:
        reasoning = _reasoning(message)
        if reasoning:
            content = f"<think>\n{reasoning}\n</think>\n\n{content}"
        elif not enable_thinking:
            content = EMPTY_THINK + content
    calls = _parse_json_list(message.get("tool_calls")) or []
    if isinstance(calls, str):
        return content + ("\n" if answer else "") + f"<tool_call>\n{calls}\n</tool_call>"
    for i, call in enumerate(calls):
        if answer or i > 0:  # a think block alone already ends in a blank line
            content += "\n"
        fn = call.get("function", call)
        args = fn.get("arguments", {})
        args_text = args if isinstance(args, str) else _dumps(args)
        content += (
            '<tool_call>\n{"name": '
            + _dumps(fn.get("name"))
            + ', "arguments": '
            + args_text
            + "}\n</tool_call>"
        )
    return content


def chat_segments(
    messages: list[dict],
    tools: Any = None,
    add_generation_prompt: bool = False,
    enable_thinking: bool = True,
) -> list[tuple[str, bool]]:
    """Render a conversation as ``(text, trainable)`` segments; joined they are ``render_chat``'s text.

    Trainable segments are assistant bodies plus their ``<|im_end|>``. Adjacent prompt pieces are
    merged, so segments alternate prompt / assistant.
    """
    tools = _parse_json_list(tools)
    segments: list[tuple[str, bool]] = []

    def emit(text: str, trainable: bool = False) -> None:
        if segments and segments[-1][1] == trainable:
            segments[-1] = (segments[-1][0] + text, trainable)
        elif text:
            segments.append((text, trainable))

    if messages and messages[0].get("role") == "system":
        emit(_system_turn(_text(messages[0].get("content")), tools))
        messages = messages[1:]
    else:
        emit(_system_turn(None, tools))
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "assistant":
            emit("<|im_start|>assistant\n")
            emit(_assistant_body(message, enable_thinking) + "<|im_end|>", True)
            emit("\n")
        elif role == "tool":
            if i == 0 or messages[i - 1].get("role") != "tool":
                emit("<|im_start|>user")
            emit("\n<tool_response>\n" + _text(message.get("content")) + "\n</tool_response>")
            if i == len(messages) - 1 or messages[i + 1].get("role") != "tool":
                emit("<|im_end|>\n")
        else:
            emit(f"<|im_start|>{role}\n{_text(message.get('content'))}<|im_end|>\n")
    if add_generation_prompt:
        emit("<|im_start|>assistant\n" + ("" if enable_thinking else EMPTY_THINK))
    return segments


def render_chat(
    messages: list[dict],
    tools: Any = None,
    add_generation_prompt: bool = False,
    enable_thinking: bool = True,
) -> str:
    """The ChatML text of a conversation; equal to ``CHAT_TEMPLATE`` rendered on the same input.

    ``tools`` is a list of OpenAI tool specs or its JSON string; message ``tool_calls`` likewise.
    """
    return "".join(text for text, _ in chat_segments(messages, tools, add_generation_prompt, enable_thinking))


# ---------------------------------------------------------------------------------------------
# Tokenisation


def _encode_many(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Batch-encode without adding special tokens, through the Rust tokenizer when there is one.

    Repeated texts (the ``\n`` after every assistant turn, shared prompts) are encoded once.
    """
    unique = list(dict.fromkeys(texts))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # fast: no offsets
        ids = [enc.ids for enc in encode(unique, add_special_tokens=False)]
    else:
        ids = tokenizer(unique, add_special_tokens=False)["input_ids"]
    if len(unique) == len(texts):
        return ids
    by_text = dict(zip(unique, ids))
    return [by_text[t] for t in texts]


def _row_messages(row: dict) -> tuple[list[dict], Any]:
    messages = row.get("messages")
    if messages is None:
        messages = row.get("conversations")
    if messages is None:
        raise ValueError(f"chat row needs a 'messages' list; got keys {sorted(row)}")
    return messages, row.get("tools")


def encode_chatml_batch(
    tokenizer: Any,
    rows: list[dict],
    train_on_prompt: bool = False,
    enable_thinking: bool = True,
    mask_history: bool = False,
) -> dict[str, list[list[int]]]:
    """Tokenise canonical chat rows (``{"messages": [...], "tools": ...}``) in lmforge's ChatML, segment
    by segment, with SFT loss masks (see the module docstring); one tokenizer call covers every
    segment of every row. Other templates, and truncation, are `data/chat.py`'s `encode_chat_batch`."""
    all_segments = []
    for row in rows:
        messages, tools = _row_messages(row)
        all_segments.append(chat_segments(messages, tools, enable_thinking=enable_thinking))
    flat_ids = _encode_many(tokenizer, [text for segs in all_segments for text, _ in segs])
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
    pos = 0
    for segs in all_segments:
        input_ids: list[int] = []
        labels: list[int] = []
        trained = [k for k, (_, trainable) in enumerate(segs) if trainable]
        last = trained[-1] if (mask_history and trained) else -1
        floor = trained[-2] + 1 if (mask_history and len(trained) > 1) else 0
        for k, (_, trainable) in enumerate(segs):
            ids = flat_ids[pos]
            pos += 1
            input_ids.extend(ids)
            keep = (trainable and (last < 0 or k == last)) or (
                train_on_prompt and not trainable and k >= floor
            )
            labels.extend(ids if keep else [IGNORE_INDEX] * len(ids))
        out["input_ids"].append(input_ids)
        out["labels"].append(labels)
    return out


def truncate_rows(
    out: dict[str, list[list[int]]], max_length: int | None, how: str
) -> dict[str, list[list[int]]]:
    """Rows over ``max_length``: right keeps the start, left keeps the end (ms-swift's
    truncation_left), delete keeps the start with no trainable label so the caller drops the row."""
    if max_length is None or max_length < 0:
        return out
    cut = {"input_ids": [], "labels": []}
    for ids, labels in zip(out["input_ids"], out["labels"]):
        too_long = len(ids) > max_length
        if how == "left":
            ids, labels = ids[-max_length:], labels[-max_length:]
        else:
            ids, labels = ids[:max_length], labels[:max_length]
        if how == "delete" and too_long:
            labels = [IGNORE_INDEX] * len(labels)
        cut["input_ids"].append(ids)
        cut["labels"].append(labels)
    return cut


def _special_id(tokenizer: Any, attr: str, fallback: str) -> int:
    token_id = getattr(tokenizer, attr, None)
    if token_id is None:
        token_id = tokenizer.convert_tokens_to_ids(fallback)
    if token_id is None:
        raise ValueError(f"tokenizer has no {fallback} token; train one with `lmforge tokenizer train`")
    return token_id


def encode_text(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Pretraining documents → ``[<|im_start|>] + ids + [<|im_end|>]`` each (minimind-3 style).

    ChatML markers already in the text (MiniMind2 ``pretrain_hq`` lines) become their special ids;
    a document that already starts with bos / ends with eos does not get a second one.
    """
    bos = _special_id(tokenizer, "bos_token_id", BOS_TOKEN)
    eos = _special_id(tokenizer, "eos_token_id", EOS_TOKEN)
    out = []
    for ids in _encode_many(tokenizer, list(texts)):
        if not ids or ids[0] != bos:
            ids = [bos] + ids
        if ids[-1] != eos or len(ids) == 1:
            ids = ids + [eos]
        out.append(ids)
    return out
