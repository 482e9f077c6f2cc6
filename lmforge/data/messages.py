"""Turns → canonical messages (`lmforge.data`), with one-line `DataError`s naming file:line and
the field: role/content and ShareGPT from/value turns (LLaMA-Factory's role ``tags``), OpenAI
content parts, tool calls, the turn order a conversation must keep, prompt / completion fields."""

from __future__ import annotations

import json
from typing import Any

from lmforge.errors import DataError

ROLES = ("system", "user", "assistant", "tool")

SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "system_tag": "system",
    "observation_tag": "observation",
    "function_tag": "function_call",
}


def describe(value: Any) -> str:
    """Short description of a bad value for the `; got ...` part of an error."""
    name = type(value).__name__
    if value is None:
        return "null"
    if isinstance(value, (str, int, float, bool)):
        text = repr(value) if not isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return f"{name} {text[:40]}" + ("..." if len(text) > 40 else "")
    return name


class RowRef:
    """Where a row came from, so every error can name file:line."""

    def __init__(self, path: str, line: int | None, tags: dict | None = None):
        self.path, self.line = path, line
        self.tags = tags

    def err(self, field: str, expected: str, got: Any = ...) -> DataError:
        return DataError(self.path, self.line, field, expected, "" if got is ... else describe(got))


def message(
    role: str, content: str, reasoning_content: str | None = None, tool_calls: str | None = None
) -> dict:
    """A canonical message (all four keys always present, so Arrow sees one schema)."""
    return {
        "role": role,
        "content": content,
        "reasoning_content": reasoning_content,
        "tool_calls": tool_calls,
    }


_MEDIA_PARTS = ("image", "image_url", "input_image", "video", "video_url", "audio", "input_audio")


def text_field(value: Any, field: str, ctx: RowRef, *, allow_none: bool = False) -> str:
    """A string field; OpenAI content-part lists are joined."""
    if isinstance(value, str):
        return value
    if value is None and allow_none:
        return ""
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        parts = []
        for p in value:
            if p.get("type") in _MEDIA_PARTS:  # never drop an image silently
                raise DataError(
                    ctx.path,
                    ctx.line,
                    field,
                    'must be text: give images as "<image>" in the text plus an "images" list of '
                    "paths (videos: <video> and videos)",
                    f"a content part of type {p['type']}",
                )
            if p.get("type", "text") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
        return "".join(parts)
    raise ctx.err(field, "must be a string", value)


def json_field(value: Any, field: str, ctx: RowRef) -> str | None:
    """tools / tool_calls: a JSON string (validated) or a list/dict (serialised)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError:
            raise ctx.err(field, "must be valid JSON (a list of OpenAI tool specs / calls)", value) from None
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    raise ctx.err(field, "must be a JSON string or a list", value)


def _role_map(tags: dict) -> dict[str, str]:
    return {
        tags["user_tag"]: "user",
        tags["assistant_tag"]: "assistant",
        tags["system_tag"]: "system",
        tags["observation_tag"]: "tool",
        tags["function_tag"]: "function_call",
    }


def _one_message(turn: Any, field: str, ctx: RowRef, out: list[dict], tools: list) -> None:
    """Append the canonical form of one turn (role/content or from/value dict) to `out`."""
    tags = ctx.tags
    if not isinstance(turn, dict):
        raise ctx.err(field, "must be a {role, content} object", turn)
    if tags is None:
        tags = SHAREGPT_TAGS if "from" in turn else None
    if tags is not None and tags.get("role_tag", "from") in turn:
        role_key, content_key, roles = tags["role_tag"], tags["content_tag"], _role_map(tags)
    else:
        role_key, content_key, roles = "role", "content", {r: r for r in ROLES}
        roles.update({"function": "tool", "observation": "tool", "human": "user", "gpt": "assistant"})
    if role_key not in turn:
        raise ctx.err(f"{field}.{role_key}", "is missing")
    raw_role = turn[role_key]
    role = roles.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        names = ROLES if role_key == "role" else tuple(roles)
        raise ctx.err(f"{field}.{role_key}", f"must be one of {', '.join(names)}", raw_role)
    if content_key not in turn and not turn.get("tool_calls"):
        raise ctx.err(f"{field}.{content_key}", "is missing")
    content = text_field(turn.get(content_key), f"{field}.{content_key}", ctx, allow_none=True)
    if role == "function_call":  # ShareGPT: the assistant's tool call is a turn of its own
        calls = json_field(content, f"{field}.{content_key}", ctx)
        parsed = json.loads(calls) if calls else []
        calls = json.dumps(parsed if isinstance(parsed, list) else [parsed], ensure_ascii=False)
        out.append(message("assistant", "", tool_calls=calls))
        return
    if role == "system" and turn.get("tools") is not None:
        tools.append(json_field(turn["tools"], f"{field}.tools", ctx))
    reasoning = turn.get("reasoning_content")
    if reasoning is not None and not isinstance(reasoning, str):
        raise ctx.err(f"{field}.reasoning_content", "must be a string", reasoning)
    calls = json_field(turn.get("tool_calls"), f"{field}.tool_calls", ctx)
    out.append(message(role, content, reasoning or None, calls))


def parse_messages(value: Any, field: str, ctx: RowRef, *, tools: list | None = None) -> list[dict]:
    """A list of turns in any supported dialect → canonical messages (no ordering checks)."""
    if not isinstance(value, list):
        raise ctx.err(field, "must be a list of {role, content}", value)
    out: list[dict] = []
    sink = tools if tools is not None else []
    for i, turn in enumerate(value):
        _one_message(turn, f"{field}[{i}]", ctx, out, sink)
    return out


def check_order(msgs: list[dict], field: str, ctx: RowRef, *, strict: bool) -> None:
    """System first only; user opens; tool follows an assistant/tool; strict → user/assistant alternate."""
    prev = None
    for i, m in enumerate(msgs):
        role = m["role"]
        where = f"{field}[{i}].role"
        if role == "system" and i != 0:
            raise ctx.err(where, "may be system only for the first turn", role)
        if role == "tool" and prev not in ("assistant", "tool"):
            raise ctx.err(where, "tool turns must follow an assistant turn", role)
        if role == "assistant" and prev in (None, "system"):
            raise ctx.err(where, "must not open the conversation (a user turn comes first)", role)
        if strict and prev not in (None, "system"):
            allowed = {"user": ("assistant",), "assistant": ("user", "tool"), "tool": ("assistant", "tool")}
            ok = allowed.get(role, ())
            # two assistant turns in a row are fine when the first one is a tool call (ShareGPT function_call)
            if role == "assistant" and prev == "assistant" and msgs[i - 1]["tool_calls"]:
                ok = ("assistant",)
            if prev not in ok:
                raise DataError(
                    ctx.path, ctx.line, where, "must alternate user/assistant", f"{prev} then {role}"
                )
        prev = role


def with_system(msgs: list[dict], system: str | None) -> list[dict]:
    if system and not (msgs and msgs[0]["role"] == "system"):
        return [message("system", system)] + msgs
    return msgs


def prompt_from(value: Any, field: str, ctx: RowRef) -> list[dict]:
    """A prompt given as a string (one user turn) or as messages."""
    if isinstance(value, str):
        if not value.strip():
            raise ctx.err(field, "must not be empty")
        return [message("user", value)]
    msgs = parse_messages(value, field, ctx)
    if not msgs:
        raise ctx.err(field, "must not be empty")
    check_order(msgs, field, ctx, strict=False)
    return msgs


def completion_from(value: Any, field: str, ctx: RowRef) -> list[dict]:
    """A completion given as a string (one assistant turn), a turn dict, or assistant messages."""
    if isinstance(value, str):
        return [message("assistant", value)]
    msgs = parse_messages([value] if isinstance(value, dict) else value, field, ctx)
    if not msgs:
        raise ctx.err(field, "must not be empty")
    for i, m in enumerate(msgs):
        if m["role"] not in ("assistant", "tool"):
            raise ctx.err(f"{field}[{i}].role", "must be assistant (the response only)", m["role"])
    return msgs


def require(row: dict, key: str, ctx: RowRef) -> Any:
    if key not in row or row[key] is None:
        raise ctx.err(key, "is missing")
    return row[key]


def last_assistant(msgs: list[dict]) -> int:
    return max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=-1)
