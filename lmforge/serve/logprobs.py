"""Token log-probabilities: computed in the model thread, shaped as OpenAI's two response formats.

Values are the model's own distribution, `log_softmax` of the float32 logits, before penalties,
temperature, top-k/top-p and grammar masks (vLLM's default "raw" logprobs), so the same prompt
gives the same numbers whatever the sampling settings. An entry is `(token id, log-prob, [(id,
log-prob), ...top n])`; a prompt's first token has none (None).

Chat (`logprobs: true`, `top_logprobs: n`): `choices[].logprobs.content[]` of
`{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}`. Completions (`logprobs: n`):
`choices[].logprobs` = `{tokens, token_logprobs, top_logprobs, text_offset}`, where each
`top_logprobs` dict holds the n most likely tokens plus the chosen one (so up to n+1 keys), and
with `echo` the prompt's tokens come first (the first with `null`), which is what
lm-evaluation-harness's `local-completions` model reads for loglikelihood.
Tokens are shown as the tokenizer decodes each id alone.
"""

from __future__ import annotations

from collections.abc import Callable

from lmforge.decode.sampling import Entry

MAX_TOP = 20  # OpenAI's limit for chat top_logprobs (vLLM's default max_logprobs is 20 too)


class Formatter:
    """Entries → OpenAI's JSON, with token strings cached per id."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode = decode
        self.cache: dict[int, str] = {}

    def token(self, tid: int) -> str:
        if tid not in self.cache:
            self.cache[tid] = self.decode([tid])
        return self.cache[tid]

    def _item(self, tid: int, logprob: float) -> dict:
        text = self.token(tid)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    def chat(self, entries: list[Entry]) -> list[dict]:
        """`logprobs.content` items of a chat answer."""
        return [
            {**self._item(t, p), "top_logprobs": [self._item(i, v) for i, v in top]} for t, p, top in entries
        ]

    def completion(self, entries: list[Entry | None], offset: int = 0) -> dict:
        """A completions `logprobs` object; `offset`: characters before the first token."""
        tokens, values, tops, offsets = [], [], [], []
        for entry in entries:
            if entry is None:  # a prompt's first token: nothing before it to predict it
                continue
            tid, logprob, top = entry
            text = self.token(tid)
            tokens.append(text)
            values.append(logprob)
            tops.append({**{self.token(i): v for i, v in top}, text: logprob})
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}

    def prompt(self, ids: list[int], entries: list[Entry | None]) -> dict:
        """The echoed prompt's `logprobs` object: its first token with null values."""
        first = self.token(ids[0])
        rest = self.completion(entries[1:], len(first))
        return {
            "tokens": [first, *rest["tokens"]],
            "token_logprobs": [None, *rest["token_logprobs"]],
            "top_logprobs": [None, *rest["top_logprobs"]],
            "text_offset": [0, *rest["text_offset"]],
        }


def join(parts: list[dict]) -> dict:
    """Concatenate completions `logprobs` objects (echoed prompt, then the answer's pieces)."""
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for part in parts:
        for key in out:
            out[key] += part[key]
    return out
