"""Detect, validate and convert every supported input row to a canonical row (see `lmforge.data`).

One row in, one canonical row out, or one `DataError` naming file:line, the field and what was
expected. Formats by kind (names are what `--format` accepts and what `data check` counts):

- pretrain:   ``text`` (``{"text"}``, ``.txt`` lines, or any column via ``text_column``)
- chat:       ``minimind`` (``conversations`` of role/content), ``openai`` (``messages``),
              ``sharegpt`` (``conversations`` of from/value), ``alpaca``, ``csv`` (mdl-toolkit)
- preference: ``minimind`` (``chosen``/``rejected`` full conversations), ``trl`` (``prompt`` +
              ``chosen``/``rejected``), ``sharegpt`` (``conversations`` + chosen/rejected turns),
              ``alpaca`` (``instruction`` + chosen/rejected strings), ``swift`` (ms-swift's
              ``messages`` ending in the chosen answer + ``rejected_response``)
- kto:        ``trl`` (``prompt, completion, label``), ``sharegpt`` (``messages`` + ``kto_tag``)
- prompt:     ``minimind`` (RLAIF: last assistant turn is a placeholder), ``openai``, ``trl``

Vision rows are any of these (not pretrain) with ``images`` / ``videos`` lists (LLaMA-Factory's
multimodal sharegpt / alpaca rows, ms-swift's ``messages`` + ``images``); see `vision.attach_media`.

ShareGPT role names follow LLaMA-Factory's ``tags`` (role_tag, content_tag, user_tag,
assistant_tag, system_tag, observation_tag, function_tag); a registry entry may override them.
"""

from __future__ import annotations

import json
import os
from typing import Any

from lmforge.data.messages import (
    SHAREGPT_TAGS,
    RowRef,
    check_order,
    completion_from,
    describe,
    json_field,
    last_assistant,
    message,
    parse_messages,
    prompt_from,
    require,
    text_field,
    with_system,
)
from lmforge.errors import DataError

FORMATS: dict[str, tuple[str, ...]] = {
    "pretrain": ("text",),
    "chat": ("minimind", "openai", "sharegpt", "alpaca", "csv"),
    "preference": ("minimind", "trl", "sharegpt", "alpaca", "swift"),
    "kto": ("trl", "sharegpt"),
    "prompt": ("minimind", "openai", "trl"),
}

_FORMAT_HINTS = {
    "text": '{"text"}',
    "minimind": '{"conversations": [{role, content}]}',
    "openai": '{"messages": [{role, content}]}',
    "sharegpt": '{"conversations": [{from, value}]}',
    "alpaca": "{instruction, input, output}",
    "csv": "{user_prompt, prediction}",
    "trl": "{prompt, ...}",
}
_PREF_HINTS = {
    "minimind": '{"chosen": [msgs], "rejected": [msgs]}',
    "trl": "{prompt, chosen, rejected}",
    "sharegpt": "{conversations, chosen, rejected}",
    "alpaca": "{instruction, chosen, rejected}",
    "swift": "{messages, rejected_response}",
}
_KTO_HINTS = {"trl": "{prompt, completion, label}", "sharegpt": "{messages, kto_tag}"}


def parse_json_line(text: str, path: str, line: int | None) -> dict:
    """Parse one JSONL line into a dict or raise a one-line `DataError`."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            path, line, "json", f"must be a valid JSON object ({e.msg} at column {e.colno})"
        ) from None
    if not isinstance(row, dict):
        raise DataError(path, line, "row", "must be a JSON object", describe(row))
    return row


# ---------------------------------------------------------------------------------------------
# detection


def detect_format(row: dict, kind: str, *, text_column: str | None = None) -> str:
    """Name of the format `row` is in for `kind` (one of `FORMATS[kind]`), or "" if none matches."""
    if kind not in FORMATS:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {', '.join(FORMATS)}")
    keys = row.keys()
    if kind == "pretrain":
        return "text" if (text_column or "text") in keys else ""
    convs = row.get("conversations")
    conv_fmt = ""
    if "conversations" in keys:
        first = convs[0] if isinstance(convs, list) and convs else None
        conv_fmt = (
            "sharegpt" if isinstance(first, dict) and ("from" in first or "value" in first) else "minimind"
        )
    if kind == "chat":
        if "messages" in keys:
            return "openai"
        if conv_fmt:
            return conv_fmt
        if "instruction" in keys or "output" in keys:
            return "alpaca"
        if "user_prompt" in keys or "prediction" in keys:
            return "csv"
        return ""
    if kind == "preference":
        if "rejected_response" in keys:
            return "swift"
        if "chosen" not in keys and "rejected" not in keys:
            return ""
        if "prompt" in keys:
            return "trl"
        if "conversations" in keys or "messages" in keys:
            return "sharegpt"
        if "instruction" in keys:
            return "alpaca"
        return "minimind"
    if kind == "kto":
        if "completion" in keys:
            return "trl"
        if "messages" in keys or "conversations" in keys:
            return "sharegpt"
        return "trl" if "prompt" in keys else ""
    # kind == "prompt"
    if "conversations" in keys:
        return "minimind"
    if "messages" in keys:
        return "openai"
    if "prompt" in keys:
        return "trl"
    return ""


def _no_format_error(row: dict, kind: str, ctx: RowRef) -> DataError:
    hints = {"preference": _PREF_HINTS, "kto": _KTO_HINTS}.get(kind, _FORMAT_HINTS)
    listed = ", ".join(f"{f} {hints[f]}" for f in FORMATS[kind])
    keys = "[" + ", ".join(list(row)[:8]) + "]"
    return DataError(
        ctx.path, ctx.line, "row", f"matches no {kind} format (expected {listed})", f"keys {keys}"
    )


# ---------------------------------------------------------------------------------------------
# per-kind converters


def chat_messages(row: dict, fmt: str, ctx: RowRef, opts: dict) -> tuple[list[dict], str | None]:
    """Messages + tools JSON for the chat-like formats (shared by chat, prompt and kto)."""
    tools: list = []
    if fmt in ("minimind", "sharegpt", "openai"):
        key = (
            "messages"
            if fmt == "openai" or ("messages" in row and "conversations" not in row)
            else "conversations"
        )
        msgs = parse_messages(require(row, key, ctx), key, ctx, tools=tools)
        if not msgs:
            raise ctx.err(key, "must not be an empty conversation")
        system = row.get("system")
        if system and msgs[0]["role"] != "system":
            msgs = [message("system", text_field(system, "system", ctx))] + msgs
        check_order(msgs, key, ctx, strict=fmt == "sharegpt")
    elif fmt == "alpaca":
        msgs = []
        if row.get("system"):
            msgs.append(message("system", text_field(row["system"], "system", ctx)))
        history = row.get("history") or []
        if not isinstance(history, list):
            raise ctx.err("history", "must be a list of [query, response] pairs", history)
        for i, pair in enumerate(history):
            if not (
                isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)
            ):
                raise ctx.err(f"history[{i}]", "must be a [query, response] pair of strings", pair)
            msgs += [message("user", pair[0]), message("assistant", pair[1])]
        instruction = text_field(require(row, "instruction", ctx), "instruction", ctx)
        query = row.get("input") or ""
        query = text_field(query, "input", ctx)
        user = "\n".join(s for s in (instruction, query) if s)
        if not user.strip():
            raise ctx.err("instruction", "must not be empty")
        msgs.append(message("user", user))
        if row.get("output") is not None:
            msgs.append(message("assistant", text_field(row["output"], "output", ctx)))
    elif fmt == "csv":
        msgs = []
        system = row.get("system_prompt") or opts.get("system_prompt")
        if system:
            msgs.append(message("system", text_field(system, "system_prompt", ctx)))
        user = row.get("user_prompt") or opts.get("user_prompt")
        if not user:
            raise ctx.err("user_prompt", "is missing (add the column or pass --user_prompt)")
        msgs.append(message("user", text_field(user, "user_prompt", ctx)))
        if row.get("prediction") not in (None, ""):
            msgs.append(message("assistant", text_field(row["prediction"], "prediction", ctx)))
    else:
        raise ctx.err("format", f"is not a chat format (expected one of {', '.join(FORMATS['chat'])})", fmt)
    row_tools = json_field(row.get("tools"), "tools", ctx)
    tools_json = row_tools or next((t for t in tools if t), None)
    return with_system(msgs, opts.get("system")), tools_json


def _to_chat(row: dict, fmt: str, ctx: RowRef, opts: dict) -> dict:
    msgs, tools = chat_messages(row, fmt, ctx, opts)
    if last_assistant(msgs) < 0:
        field = {"alpaca": "output", "csv": "prediction"}.get(
            fmt, "messages" if fmt == "openai" else "conversations"
        )
        raise ctx.err(field, "must contain an assistant turn (nothing to train on)")
    out = {"messages": msgs, "tools": tools}
    if fmt == "csv" and row.get("audio"):
        audio = text_field(row["audio"], "audio", ctx)
        base_dir = opts.get("base_dir")
        path = os.path.join(base_dir, audio) if base_dir and not os.path.isabs(audio) else audio
        out["audio"] = os.path.abspath(path)  # a converted dataset must not depend on the cwd
    return out


def _split_prompt(msgs: list[dict], field: str, ctx: RowRef) -> tuple[list[dict], list[dict]]:
    """(turns before the last assistant turn, the rest) for preference / KTO conversations."""
    i = last_assistant(msgs)
    if i < 0:
        raise ctx.err(field, "must contain an assistant turn")
    if i == 0 or not any(m["role"] == "user" for m in msgs[:i]):
        raise ctx.err(field, "must have a user turn before the last assistant turn")
    return msgs[:i], msgs[i:]


def _swift_pair(row: dict, ctx: RowRef) -> tuple[list[dict], list[dict], list[dict]]:
    """ms-swift's RLHF row: `messages` ending in the chosen answer, `rejected_response` a string."""
    msgs, _ = chat_messages(row, "openai", ctx, {})
    prompt, chosen = _split_prompt(msgs, "messages", ctx)
    rejected = require(row, "rejected_response", ctx)
    if not isinstance(rejected, str) or not rejected.strip():
        raise ctx.err("rejected_response", "must be a non-empty string (the rejected answer)", rejected)
    return prompt, chosen, [message("assistant", rejected)]


def _to_preference(row: dict, fmt: str, ctx: RowRef, opts: dict) -> dict:
    if fmt == "minimind":
        sides = {}
        for key in ("chosen", "rejected"):
            msgs = parse_messages(require(row, key, ctx), key, ctx)
            if not msgs:
                raise ctx.err(key, "must not be an empty conversation")
            check_order(msgs, key, ctx, strict=False)
            sides[key] = _split_prompt(msgs, key, ctx)
        prompt = sides["chosen"][0]
        if [(m["role"], m["content"]) for m in sides["rejected"][0]] != [
            (m["role"], m["content"]) for m in prompt
        ]:
            raise ctx.err(
                "rejected", 'must share the prompt of "chosen" (every turn before the last assistant turn)'
            )
        chosen, rejected = sides["chosen"][1], sides["rejected"][1]
    elif fmt == "swift":
        prompt, chosen, rejected = _swift_pair(row, ctx)
    else:
        if fmt == "trl":
            prompt = prompt_from(require(row, "prompt", ctx), "prompt", ctx)
        elif fmt in ("sharegpt", "alpaca"):
            prompt, _ = chat_messages(row, fmt if fmt == "alpaca" else "sharegpt", ctx, {})
            if prompt[-1]["role"] == "assistant":
                raise ctx.err("conversations", "must end with the user turn that chosen/rejected answer")
        else:
            raise ctx.err("format", f"is not a preference format ({', '.join(FORMATS['preference'])})", fmt)
        chosen = completion_from(require(row, "chosen", ctx), "chosen", ctx)
        rejected = completion_from(require(row, "rejected", ctx), "rejected", ctx)
    return {"prompt": with_system(prompt, opts.get("system")), "chosen": chosen, "rejected": rejected}


def parse_label(value: Any, field: str, ctx: RowRef) -> bool:
    """KTO label: a bool, 0/1, or "true"/"false" (also "1"/"0", "yes"/"no")."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ctx.err(field, "must be a boolean (true/false or 1/0)", value)


def _to_kto(row: dict, fmt: str, ctx: RowRef, opts: dict) -> dict:
    if fmt == "trl":
        prompt = prompt_from(require(row, "prompt", ctx), "prompt", ctx)
        completion = completion_from(require(row, "completion", ctx), "completion", ctx)
        label = parse_label(require(row, "label", ctx), "label", ctx)
    elif fmt == "sharegpt":
        msgs, _ = chat_messages(row, "sharegpt", ctx, {})
        key = "kto_tag" if "kto_tag" in row else "label"
        prompt, completion = _split_prompt(
            msgs, "conversations" if "conversations" in row else "messages", ctx
        )
        label = parse_label(require(row, key, ctx), key, ctx)
    else:
        raise ctx.err("format", f"is not a kto format ({', '.join(FORMATS['kto'])})", fmt)
    return {"prompt": with_system(prompt, opts.get("system")), "completion": completion, "label": label}


def _answer(row: dict, ctx: RowRef) -> str | None:
    """Optional ground truth: `answer` or `gt`; a list gives its only element or the elements joined."""
    key = "answer" if row.get("answer") is not None else "gt"
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, list):
        if not all(isinstance(v, (str, int, float)) for v in value):
            raise ctx.err(key, "must be a string or a list of strings", value)
        return "\n".join(str(v) for v in value) if value else None
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ctx.err(key, "must be a string or a list of strings", value)


def _to_prompt(row: dict, fmt: str, ctx: RowRef, opts: dict) -> dict:
    if fmt == "trl":
        prompt = prompt_from(require(row, "prompt", ctx), "prompt", ctx)
    elif fmt in ("minimind", "openai"):
        key = "messages" if fmt == "openai" else "conversations"
        msgs = parse_messages(require(row, key, ctx), key, ctx)
        if not msgs:
            raise ctx.err(key, "must not be an empty conversation")
        if row.get("system") and msgs[0]["role"] != "system":
            msgs = [message("system", text_field(row["system"], "system", ctx))] + msgs
        check_order(msgs, key, ctx, strict=False)
        # RLAIF rows end with an assistant placeholder ("无"); the prompt is everything before it
        prompt = msgs[: last_assistant(msgs)] if msgs[-1]["role"] == "assistant" else msgs
        if not prompt or prompt[-1]["role"] not in ("user", "tool"):
            raise ctx.err(
                key, "must end with a user turn (optionally followed by a placeholder assistant turn)"
            )
    else:
        raise ctx.err("format", f"is not a prompt format ({', '.join(FORMATS['prompt'])})", fmt)
    return {"prompt": with_system(prompt, opts.get("system")), "answer": _answer(row, ctx)}


def _to_pretrain(row: dict, fmt: str, ctx: RowRef, opts: dict) -> dict:
    column = opts.get("text_column") or "text"
    value = require(row, column, ctx)
    if not isinstance(value, str):
        raise ctx.err(column, "must be a string", value)
    if not value.strip():
        raise ctx.err(column, "must not be empty")
    return {"text": value}


_CONVERTERS = {
    "pretrain": _to_pretrain,
    "chat": _to_chat,
    "preference": _to_preference,
    "kto": _to_kto,
    "prompt": _to_prompt,
}


def to_canonical(
    row: dict,
    kind: str,
    fmt: str | None = None,
    *,
    path: str = "<row>",
    line: int | None = None,
    system: str | None = None,
    text_column: str | None = None,
    system_prompt: str | None = None,
    user_prompt: str | None = None,
    base_dir: str | None = None,
    tags: dict | None = None,
    media: bool = False,
    media_dir: str | None = None,
    image_dir: str | None = None,
) -> dict:
    """Convert one input row to the canonical row of `kind`, or raise `DataError` (file:line, field).

    `fmt` skips detection. `system` is inserted as the first turn when the row has none
    (LLaMA-Factory's `default_system`). `system_prompt`/`user_prompt` are the CSV defaults used
    when those columns are missing or empty; `base_dir` resolves relative CSV `audio` paths.
    `tags` overrides the ShareGPT role/content key names (LLaMA-Factory registry `tags`).

    `media` (a vision dataset: some row has `images` / `videos`): the row's media lists are added
    as absolute paths (relative ones under `image_dir`, else `media_dir`, the dataset's folder) and
    checked against the `<image>` / `<video>` placeholders and the files (`vision.attach_media`).
    """
    if kind not in _CONVERTERS:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {', '.join(FORMATS)}")
    ctx = RowRef(path, line, {**SHAREGPT_TAGS, **tags} if tags else None)
    if not isinstance(row, dict):
        raise ctx.err("row", "must be a JSON object", row)
    fmt = fmt or detect_format(row, kind, text_column=text_column)
    if not fmt:
        raise _no_format_error(row, kind, ctx)
    if fmt not in FORMATS[kind]:
        raise ValueError(
            f"--format {fmt!r} is not a {kind} format; expected one of {', '.join(FORMATS[kind])}"
        )
    opts = {
        "system": system,
        "text_column": text_column,
        "system_prompt": system_prompt,
        "user_prompt": user_prompt,
        "base_dir": base_dir,
    }
    out = _CONVERTERS[kind](row, fmt, ctx, opts)
    if media and kind != "pretrain":
        from lmforge.data.vision import attach_media

        attach_media(out, row, kind, where=(path, line), base_dir=media_dir, image_dir=image_dir)
    return out
