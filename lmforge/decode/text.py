"""Incremental answer text for one generated row: tokens → text pieces, held back while they may be the
start of a stop string or inside a UTF-8 character, cut at the first stop string.

Hand-written: transformers' `TextStreamer` has no stop strings and decodes the whole answer per
token; this is the one detokeniser of the decode loop (loop.py), so chat, infer, serve, the web UI
and eval cut answers the same way.
"""

from __future__ import annotations

from collections.abc import Callable


def partial_suffix(text: str, stops: tuple[str, ...] | list[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of one of `stops`."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


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
