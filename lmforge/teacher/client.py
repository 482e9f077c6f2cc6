"""A client for any OpenAI-compatible chat endpoint, built for dataset generation.

`TeacherClient.complete_many` sends many chat requests with up to `concurrency` in flight (a
thread pool over one `httpx.Client`), spaced by a rate limit (`rate_limit_delay` seconds between
request starts and/or `requests_per_minute`), each with its own timeout. Failures are retried
with exponential backoff and full jitter (delay drawn from [0, min(backoff_max, backoff_base ·
2^attempt)]; a `Retry-After` header wins) on HTTP 408/409/429/5xx, timeouts, dropped connections
and malformed answers; any other 4xx fails at once with the server's message, and 401/403/404
(bad key, unknown model or endpoint) stop every later request of the client too (`fatal`), so a
wrong key costs one request, not one per row. Answers go through an on-disk cache (cache.py)
keyed by the request body (empty answers are not stored). Usage, retries and cost are totalled in `stats`.

Written by hand because the retry, rate-limit and cache policy is the point: the `openai`
package's built-in retries cannot be counted, keyed or rate limited across threads, and the API
is one POST. The reasoning of an answer is the API's `reasoning_content` (lmforge serve, vLLM,
DeepSeek) or `reasoning` (OpenRouter), else a `<think>…</think>` block at the start of content
(a lone `</think>` is left alone: without the opening tag it is ordinary text, as lmforge serve
treats it).
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.teacher.cache import ResponseCache, request_key

RETRY_STATUS = frozenset({408, 409, 429})  # and every 5xx
FATAL_STATUS = frozenset({401, 403, 404})  # the key, the model or the URL is wrong: no row can work
REQUEST_FIELDS = ("temperature", "max_tokens", "reasoning_effort", "seed")


@dataclass
class TeacherConfig:
    base_url: str  # e.g. http://127.0.0.1:8000/v1 (OpenAI-compatible)
    model: str  # model name sent in the request
    api_key: str | None = None  # None -> $OPENAI_API_KEY (may be unset for local servers)
    concurrency: int = 8  # requests in flight at once
    rate_limit_delay: float = 0.0  # seconds between request starts (MiniMind's flag)
    requests_per_minute: float | None = None  # None = unlimited
    max_retries: int = 5  # on 429 / 5xx / timeout / connection errors
    timeout: float = 120.0  # per request, seconds
    backoff_base: float = 1.0  # exponential backoff base (s), full jitter, capped by backoff_max
    backoff_max: float = 30.0
    cache_dir: str | None = None  # on-disk cache; None = no cache
    price_prompt: float = 0.0  # cost per 1M prompt tokens (for the cost total)
    price_completion: float = 0.0  # cost per 1M completion tokens
    extra_body: dict[str, Any] | None = None  # merged into every request body (provider options)

    def validate(self) -> None:
        checks = [
            (bool(self.base_url), "--base_url is required"),
            (bool(self.model), "--model is required (the teacher's model name)"),
            (self.concurrency >= 1, f"--concurrency {self.concurrency}: must be at least 1"),
            (self.rate_limit_delay >= 0, f"--rate_limit_delay {self.rate_limit_delay}: must be 0 or more"),
            (
                self.requests_per_minute is None or self.requests_per_minute > 0,
                f"--requests_per_minute {self.requests_per_minute}: must be more than 0",
            ),
            (self.max_retries >= 0, f"--max_retries {self.max_retries}: must be 0 or more"),
            (self.timeout > 0, f"--timeout {self.timeout}: must be more than 0 seconds"),
            (
                self.backoff_base >= 0 and self.backoff_max >= 0,
                "--backoff_base/--backoff_max: must be 0 or more",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise LmforgeError(message)


@dataclass
class TeacherResult:
    ok: bool
    content: str | None  # the answer text (reasoning removed)
    reasoning: str | None  # reasoning_content from the API, or text inside <think>..</think>
    usage: dict | None  # {"prompt_tokens", "completion_tokens"} (0s when cached)
    error: str | None  # one line, when not ok (after the retries)
    cached: bool
    attempts: int
    finish_reason: str | None = None  # "stop", "length", ... as the server said
    status: int | None = None  # HTTP status of the last attempt (None: no response)


@dataclass
class TeacherStats:
    """Totals over the client's life. `requests` counts HTTP requests sent, retries included."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def as_dict(self) -> dict[str, Any]:
        names = ("requests", "cache_hits", "retries", "failures", "prompt_tokens", "completion_tokens")
        return {**{n: getattr(self, n) for n in names}, "cost": round(self.cost, 6)}

    def summary(self) -> str:
        return (
            f"{self.requests} requests ({self.retries} retries), {self.cache_hits} cache hits, "
            f"{self.failures} failed; tokens: {self.prompt_tokens} prompt + {self.completion_tokens} "
            f"completion; cost {self.cost:.4f}"
        )


class _Retry(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class _Fail(Exception):
    """An attempt failed in a way no retry can fix (4xx other than 408/409/429)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class RateLimiter:
    """Spaces request starts at least `interval` seconds apart, across threads (a token bucket of
    size one: bursts would break per-minute limits that providers count over sliding windows)."""

    def __init__(self, interval: float, clock=time.monotonic):
        self.interval, self.clock = interval, clock
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> None:
        if self.interval <= 0:
            return
        with self._lock:  # reserve a slot, then sleep outside the lock
            now = self.clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            stop.wait(start - now)


def split_reasoning(message: dict[str, Any]) -> tuple[str, str | None]:
    """(answer, reasoning or None) of an OpenAI chat message."""
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if not isinstance(reasoning, str):
        reasoning = None
    if reasoning is None and content.lstrip().startswith("<think>") and "</think>" in content:
        inside, _, answer = content.lstrip()[len("<think>") :].partition("</think>")
        return answer.strip(), inside.strip()
    return content.strip(), reasoning.strip() if reasoning is not None else None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(resp) -> str:
    try:
        err = resp.json().get("error")
        message = err.get("message") if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        message = None
    text = str(message) if message else (resp.text or resp.reason_phrase or "")
    return " ".join(text.split())[:300]


class TeacherClient:
    def __init__(self, cfg: TeacherConfig):
        try:
            import httpx
        except ImportError:
            raise LmforgeError('the teacher client needs httpx: pip install "lmforge[api]"') from None
        cfg.validate()
        self.cfg = cfg
        self.stats = TeacherStats()
        self.fatal: str | None = None  # set by a 401/403/404: every later request fails with it
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        api_key = cfg.api_key if cfg.api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._httpx = httpx
        if logging.getLogger("httpx").level == logging.NOTSET:  # one INFO line per request otherwise
            logging.getLogger("httpx").setLevel(logging.WARNING)
        self._http = httpx.Client(
            timeout=httpx.Timeout(cfg.timeout),
            limits=httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency),
        )
        self.cache = ResponseCache(cfg.cache_dir) if cfg.cache_dir else None
        interval = cfg.rate_limit_delay
        if cfg.requests_per_minute:
            interval = max(interval, 60.0 / cfg.requests_per_minute)
        self._limiter = RateLimiter(interval)
        self._stop = threading.Event()

    # --- public -------------------------------------------------------------------------------
    def body(self, request: dict[str, Any]) -> dict[str, Any]:
        """The JSON body sent for `request` (also what the cache key is made of)."""
        body: dict[str, Any] = {"model": self.cfg.model, "messages": request["messages"]}
        body.update(self.cfg.extra_body or {})
        for name, value in request.items():
            if name != "messages" and value is not None:
                body[name] = value
        return body

    def complete(self, request: dict[str, Any]) -> TeacherResult:
        """One request, with the cache, rate limit and retries of `complete_many`."""
        return self._complete(request)

    def complete_many(self, requests: list[dict], on_result=None) -> list[TeacherResult]:
        """Each request: {"messages": [...], plus optional "temperature", "max_tokens",
        "reasoning_effort", "seed" or any other body field}. Returns results in INPUT ORDER; runs
        up to `concurrency` at once; `on_result(index, result)` is called in the calling thread
        as each finishes (completion order)."""
        results: list[TeacherResult | None] = [None] * len(requests)
        pool = ThreadPoolExecutor(max_workers=self.cfg.concurrency, thread_name_prefix="teacher")
        try:
            futures = {pool.submit(self._complete, req): i for i, req in enumerate(requests)}
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                if on_result is not None:
                    on_result(i, results[i])
        except BaseException:
            self._stop.set()  # wake sleeping retries so the threads end soon
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self._stop.set()
        self._http.close()

    def __enter__(self) -> TeacherClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- one request --------------------------------------------------------------------------
    def _complete(self, request: dict[str, Any]) -> TeacherResult:
        try:
            body = self.body(request)
            key = request_key(body)
            if self.cache is not None:
                entry = self.cache.get(key)
                if entry is not None and isinstance(entry.get("content"), str):
                    self.stats.add(cache_hits=1)
                    return TeacherResult(
                        True,
                        entry["content"],
                        entry.get("reasoning"),
                        {"prompt_tokens": 0, "completion_tokens": 0},
                        None,
                        True,
                        0,
                        entry.get("finish_reason"),
                        200,
                    )
            return self._send(body, key)
        except Exception as e:  # never lose a row to an unexpected error: report it as a failure
            self.stats.add(failures=1)
            return TeacherResult(False, None, None, None, f"{type(e).__name__}: {e}", False, 0)

    def _send(self, body: dict[str, Any], key: str) -> TeacherResult:
        cfg = self.cfg
        error, status, sent = "not sent", None, 0
        for attempt in range(cfg.max_retries + 1):
            if self.fatal or self._stop.is_set():
                error = self.fatal or "stopped"
                break
            self._limiter.wait(self._stop)
            self.stats.add(requests=1)
            sent += 1
            try:
                return self._attempt(body, key, sent)
            except _Retry as e:
                error, status = str(e), e.status
                if attempt == cfg.max_retries:
                    break
                self.stats.add(retries=1)
                delay = random.uniform(0, min(cfg.backoff_max, cfg.backoff_base * 2**attempt))
                if e.retry_after is not None:
                    delay = min(e.retry_after, 600.0)
                self._stop.wait(delay)
            except _Fail as e:
                error, status = str(e), e.status
                break
        self.stats.add(failures=1)
        return TeacherResult(False, None, None, None, error, False, sent, None, status)

    def _attempt(self, body: dict[str, Any], key: str, attempts: int) -> TeacherResult:
        httpx = self._httpx
        try:
            resp = self._http.post(self.url, json=body, headers=self._headers)
        except httpx.TimeoutException:
            raise _Retry(f"timed out after {self.cfg.timeout:g}s") from None
        except httpx.TransportError as e:
            raise _Retry(f"connection error: {type(e).__name__}: {e}".rstrip(": ")) from None
        status = resp.status_code
        if status != 200:
            message = f"HTTP {status}: {_error_message(resp)}"
            if status in RETRY_STATUS or status >= 500:
                raise _Retry(message, status, _retry_after(resp.headers.get("retry-after")))
            if status in FATAL_STATUS:
                self.fatal = f"{message} ({self.url}, model {self.cfg.model!r})"
            raise _Fail(message, status)
        try:
            data = resp.json()
            choice = data["choices"][0]
            message = choice["message"]
            content, reasoning = split_reasoning(message)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Retry(f"malformed answer (HTTP 200): {resp.text[:120]!r}", status) from None
        usage = data.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        cost = (prompt * self.cfg.price_prompt + completion * self.cfg.price_completion) / 1e6
        if not cost and isinstance(usage.get("cost"), (int, float)):
            cost = float(usage["cost"])  # OpenRouter reports the charge itself
        self.stats.add(prompt_tokens=prompt, completion_tokens=completion, cost=cost)
        finish = choice.get("finish_reason")
        if self.cache is not None and content.strip():  # an empty answer is asked again next time
            self.cache.put(
                key,
                {
                    "content": content,
                    "reasoning": reasoning,
                    "finish_reason": finish,
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
                    "model": data.get("model"),
                },
            )
        usage_out = {"prompt_tokens": prompt, "completion_tokens": completion}
        return TeacherResult(True, content, reasoning, usage_out, None, False, attempts, finish, status)
