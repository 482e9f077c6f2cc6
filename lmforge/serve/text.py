"""Generated token ids → the text pieces a client sees.

`RowText` turns one row's tokens into text incrementally (a piece is released only once later tokens
cannot change it: no half UTF-8 character, nothing that may still become a stop string) and cuts at
the first stop string. `ChatDeltas` turns those pieces into OpenAI chat deltas: `reasoning_content`
split out of `<think>…</think>`, and `<tool_call>{json}</tool_call>` blocks held back and returned
as `tool_calls`. The non-streamed answer is built from the same pieces and deltas, so a stream
always concatenates to the whole answer.

Hand-written: the OpenAI delta protocol and lmforge's think / tool-call markup are this server's
own; transformers' `TextIteratorStreamer` knows neither stop strings nor per-row batches.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable

from lmforge.infer.stream import THINK_CLOSE, THINK_OPEN, partial_suffix

TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
_TOOL_BLOCK = re.compile(re.escape(TOOL_OPEN) + r"\s*(.*?)\s*" + re.escape(TOOL_CLOSE), re.DOTALL)


class RowText:
    """Incremental detokenisation of one generated row, cut at the first stop string.

    `feed(token)` returns the text that became final; `finish()` the rest once the row ends.
    Decoding works on a short window of recent tokens (the text of `ids[prefix:]` minus that of
    `ids[prefix:read]`), so each token costs O(window), not O(answer).
    """

    def __init__(self, decode: Callable[[list[int]], str], stops: list[str]):
        self.decode, self.stops = decode, [s for s in stops if s]
        self.ids: list[int] = []
        self.prefix = self.read = 0
        self.text = ""  # decoded so far (may end with a held-back stop-string start)
        self.emitted = 0  # characters of `text` already released
        self.stopped = False  # a stop string was generated

    def feed(self, token: int) -> str:
        self.ids.append(token)
        before = self.decode(self.ids[self.prefix : self.read])
        after = self.decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):  # not inside a UTF-8 character
            self.text += after[len(before) :]
            self.prefix, self.read = self.read, len(self.ids)
        return self._release(final=False)

    def finish(self) -> str:
        """The text still held back when the row ends (eos or length)."""
        if self.stopped:
            return ""
        full = self.decode(self.ids)
        if full.startswith(self.text):
            self.text = full
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        longest = max((len(s) for s in self.stops), default=0)
        start = max(0, self.emitted - longest + 1)
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            end, self.stopped = min(hits), True
        else:
            end = len(self.text) - (0 if final else partial_suffix(self.text, self.stops))
        piece = self.text[self.emitted : end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return piece


class ChatDeltas:
    """Raw answer pieces → OpenAI chat deltas (`{"content": ...}`, `{"reasoning_content": ...}`).

    Whitespace is trimmed as `split_thinking` trims it: reasoning loses its leading and trailing
    whitespace, the answer after a think block its leading newlines, whitespace before a `<think>`
    is dropped. A `</think>` with no `<think>` before it stays text unless the prompt itself opened
    the block (`think_open`): streamed content cannot be held back waiting for a tag that may never
    come (`split_thinking`, which sees the whole answer, takes it as reasoning). With `tools`, text from the first `<tool_call>` on is held back; the final `feed`
    parses it into `tool_calls` (or releases it as content when it is not valid JSON).
    """

    def __init__(self, think_open: bool = False, tools: bool = False):
        self.in_think = self.seen_think = think_open  # the prompt opened <think> (DeepSeek-R1 style)
        self.tools = tools
        self.buf = ""  # text that may be the start of a think tag
        self.reasoning_open = self.content_open = False
        self.pending_ws = ""  # reasoning whitespace that may turn out to be trailing
        self.pre_ws = ""  # answer whitespace that a <think> may still follow
        self.tool_buf: str | None = None  # text from the first <tool_call> on
        self.tail = ""  # content held back as a possible start of <tool_call>
        self.tool_calls: list[dict] = []

    def feed(self, piece: str, final: bool = False) -> list[dict]:
        out: list[dict] = []
        self.buf += piece
        while self.buf:
            tag = THINK_CLOSE if self.in_think else THINK_OPEN
            at = self.buf.find(tag)
            if at < 0:
                keep = 0 if final else partial_suffix(self.buf, [tag])
                text, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep :]
                self._text(text, out)
                break
            self._text(self.buf[:at], out)
            self.buf = self.buf[at + len(tag) :]
            self.in_think = not self.in_think
            if self.in_think:
                self.seen_think, self.pre_ws = True, ""
            else:
                self.pending_ws = ""  # the think block closed: its trailing whitespace goes
        if final:
            self._content("", out, final=True)
        return out

    def _text(self, text: str, out: list[dict]) -> None:
        if text:
            (self._reasoning if self.in_think else self._content)(text, out)

    def _reasoning(self, text: str, out: list[dict]) -> None:
        if not self.reasoning_open:
            text = text.lstrip()
        body = (self.pending_ws + text).rstrip()
        self.pending_ws = (self.pending_ws + text)[len(body) :]
        if body:
            self.reasoning_open = True
            out.append({"reasoning_content": body})

    def _content(self, text: str, out: list[dict], final: bool = False) -> None:
        if not self.content_open:
            if self.seen_think:
                text = text.lstrip("\n")
            elif not final and not (self.pre_ws + text).strip():
                self.pre_ws += text
                return
            text, self.pre_ws = self.pre_ws + text, ""
            self.content_open = bool(text)
        if self.tools:
            text = self._hold_tools(text, final)
        if text:
            out.append({"content": text})

    def _hold_tools(self, text: str, final: bool) -> str:
        if self.tool_buf is not None:
            self.tool_buf += text
            return self._flush_tools() if final else ""
        text, self.tail = self.tail + text, ""
        at = text.find(TOOL_OPEN)
        if at >= 0:
            self.tool_buf = text[at:]
            return text[:at] + (self._flush_tools() if final else "")
        keep = 0 if final else partial_suffix(text, [TOOL_OPEN])
        self.tail = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def _flush_tools(self) -> str:
        """Parse the held-back tool calls; returns what must still be shown as content."""
        buf, self.tool_buf = self.tool_buf or "", None
        calls, rest = parse_tool_calls(buf)
        if calls is None:
            return buf
        self.tool_calls = calls
        return rest


def parse_tool_calls(text: str) -> tuple[list[dict] | None, str]:
    """`<tool_call>{"name", "arguments"}</tool_call>` blocks → (OpenAI tool calls, text outside
    them); (None, text) when a block is not a JSON object with a name."""
    calls = []
    for body in _TOOL_BLOCK.findall(text):
        try:
            obj = json.loads(body)
        except json.JSONDecodeError:
            return None, text
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return None, text
        args = obj.get("arguments", obj.get("parameters", {}))
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": obj["name"],
                    "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False),
                },
            }
        )
    if not calls:
        return None, text
    return calls, _TOOL_BLOCK.sub("", text).strip()


def opens_think(prompt_text: str) -> bool:
    """True when the rendered prompt ends inside an open `<think>` block."""
    tail = prompt_text.rstrip()
    return tail.endswith(THINK_OPEN) or (
        THINK_OPEN in tail and tail.rfind(THINK_OPEN) > tail.rfind(THINK_CLOSE)
    )
