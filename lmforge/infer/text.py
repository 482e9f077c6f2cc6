"""Answer text → what every front end shows (chat, infer, serve, webui): one owner for it.

The pieces come from the decode loop's `RowText` (decode/text.py: stop strings, partial UTF-8).
- `ChatDeltas` turns those pieces into chat deltas: `reasoning_content` split out of
  `<think>…</think>`, and `<tool_call>{json}</tool_call>` blocks held back and returned as
  `tool_calls`; `split_thinking` is the same split on a whole answer. A stream therefore always
  concatenates to the whole answer, wherever it is shown.

Hand-written: the OpenAI delta protocol and lmforge's think / tool-call markup are lmforge's own;
transformers' `TextIteratorStreamer` knows neither stop strings nor per-row batches.
"""

from __future__ import annotations

import json
import re
import uuid

from lmforge.decode.text import partial_suffix

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Special tokens that carry meaning in the answer text and are therefore decoded, not skipped.
VISIBLE_SPECIAL = ("<think>", "</think>", "<tool_call>", "</tool_call>")
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
_TOOL_BLOCK = re.compile(re.escape(TOOL_OPEN) + r"\s*(.*?)\s*" + re.escape(TOOL_CLOSE), re.DOTALL)


def split_thinking(text: str) -> tuple[str | None, str]:
    """`<think>r</think>a` → (r, a). A lone `</think>` (template opened the tag) also splits."""
    if THINK_CLOSE not in text:
        if text.lstrip().startswith(THINK_OPEN):  # cut off while still thinking
            return text.lstrip()[len(THINK_OPEN) :].strip(), ""
        return None, text
    head, _, answer = text.partition(THINK_CLOSE)
    start = head.find(THINK_OPEN)
    reasoning = head[start + len(THINK_OPEN) :] if start >= 0 else head
    return reasoning.strip(), answer.lstrip("\n")


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
