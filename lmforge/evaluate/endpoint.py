"""`--eval_url`: the multiple-choice and generation tasks against any OpenAI-compatible server
(vLLM, llama.cpp server, Ollama, `lmforge serve`, hosted APIs), over plain HTTP (urllib).

Multiple choice asks for one token with `logprobs` (chat: `logprobs` + `top_logprobs`;
plain: `/v1/completions` with `logprobs: 20`) and picks the letter with the best log-probability,
as the local scorer does. A server that refuses log-probabilities (HTTP 400) or leaves every letter
out of its top tokens is asked to answer greedily instead (`max_tokens` 8, temperature 0) and the
answer's first letter A-D is taken; results say which method was used. Perplexity needs prompt
log-probabilities that the OpenAI API does not offer, so `--task ppl` stays local.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.evaluate.bench import LETTERS
from lmforge.evaluate.mc import MCPrompt, pick

_LETTER = re.compile(r"\b([ABCD])\b")


class EndpointError(LmforgeError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Endpoint:
    """A minimal OpenAI-compatible client: JSON POSTs with a bearer key."""

    def __init__(
        self, url: str, api_key: str | None = None, model: str | None = None, timeout: float = 120.0
    ):
        base = url.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        self.api_key, self.timeout = api_key, timeout
        self.model = model or self._first_model()

    def _request(self, path: str, payload: dict | None = None) -> dict:
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.base + path, data=data, method="POST" if data else "GET")
        req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            body = e.read().decode("utf-8", "replace")
            try:
                message = json.loads(body)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = body[:200] or e.reason
            raise EndpointError(e.code, f"--eval_url {self.base}{path}: HTTP {e.code}: {message}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise LmforgeError(f"--eval_url {self.base}: cannot connect ({reason})") from None
        except json.JSONDecodeError:
            raise LmforgeError(f"--eval_url {self.base}{path}: the reply is not JSON") from None

    def _first_model(self) -> str:
        models = self._request("/models").get("data") or []
        if not models:
            raise LmforgeError(f"--eval_url {self.base}: /models lists no model; pass --model NAME")
        return str(models[0]["id"])

    def chat(self, messages: list[dict], max_tokens: int, **extra: Any) -> dict:
        payload = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            **extra,
        }
        return self._request("/chat/completions", payload)["choices"][0]

    def complete(self, prompt: str, max_tokens: int, **extra: Any) -> dict:
        payload = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **extra}
        return self._request("/completions", payload)["choices"][0]


def _letter_scores(top: dict[str, float]) -> list[float] | None:
    """Best log-probability of each letter among the returned top tokens (None if no letter is there)."""
    scores = [
        max((lp for tok, lp in top.items() if tok.strip() == letter), default=float("-inf"))
        for letter in LETTERS
    ]
    return None if all(s == float("-inf") for s in scores) else scores


def first_letter(text: str) -> str | None:
    stripped = text.strip()
    if stripped[:1] in LETTERS:
        return stripped[0]
    m = _LETTER.search(stripped)
    return m.group(1) if m else None


class EndpointScorer:
    """`choose()` for evaluate_mc: log-probabilities when the server gives them, else the answer's letter."""

    def __init__(self, endpoint: Endpoint, chat: bool, concurrency: int = 4):
        self.endpoint, self.chat, self.concurrency = endpoint, chat, max(1, concurrency)
        self.use_logprobs = True
        self.methods: dict[str, int] = {}

    def _top_logprobs(self, prompt: MCPrompt) -> dict[str, float] | None:
        try:
            if self.chat:
                choice = self.endpoint.chat(prompt.messages or [], 1, logprobs=True, top_logprobs=20)
                content = (choice.get("logprobs") or {}).get("content") or []
                return (
                    {t["token"]: t["logprob"] for t in content[0].get("top_logprobs", [])}
                    if content
                    else None
                )
            choice = self.endpoint.complete(prompt.text or "", 1, logprobs=20)
            tops = (choice.get("logprobs") or {}).get("top_logprobs") or []
            return dict(tops[0]) if tops else None
        except EndpointError as e:
            if e.status != 400:
                raise
            self.use_logprobs = False  # the server refuses logprobs: answer-letter mode from now on
            return None

    def _one(self, prompt: MCPrompt) -> tuple[str, list[float] | None, str]:
        if self.use_logprobs:
            top = self._top_logprobs(prompt)
            scores = _letter_scores(top) if top else None
            if scores is not None:
                return pick(scores), scores, "logprobs"
        if self.chat:
            text = self.endpoint.chat(prompt.messages or [], 8)["message"].get("content") or ""
        else:
            text = self.endpoint.complete(prompt.text or "", 8)["text"]
        letter = first_letter(text)
        return (letter or "-"), None, "generated letter" if letter else "no letter in answer"

    def choose(self, prompts: list[MCPrompt]) -> list[tuple[str, list[float] | None]]:
        if prompts and self.use_logprobs:  # probe once, so a refusing server is asked only once
            first = [self._one(prompts[0])]
            rest = prompts[1:]
        else:
            first, rest = [], prompts
        with ThreadPoolExecutor(self.concurrency) as pool:
            done = first + list(pool.map(self._one, rest))
        for _, _, method in done:
            self.methods[method] = self.methods.get(method, 0) + 1
        return [(letter, scores) for letter, scores, _ in done]


def endpoint_generator(endpoint: Endpoint, gen, concurrency: int = 4):
    """Answers to chat prompts from the server (greedy unless the generation flags sample)."""

    def one(example: dict) -> str:
        extra: dict[str, Any] = {"temperature": gen.temperature if not gen.greedy else 0}
        if not gen.greedy:
            extra["top_p"] = gen.top_p
        if gen.stop:
            extra["stop"] = gen.stop
        if example.get("tools"):
            tools = example["tools"]
            extra["tools"] = json.loads(tools) if isinstance(tools, str) else tools
        message = endpoint.chat(example["messages"], gen.max_new_tokens, **extra)["message"]
        return message.get("content") or ""

    def generate(examples: list[dict]) -> list[str]:
        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            return list(pool.map(one, examples))

    return generate
