"""The FastAPI app: `/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/health`.

Streams are server-sent events, one `chat.completion.chunk` (or `text_completion`) per piece of
text, a last chunk per choice carrying `finish_reason`, an optional usage chunk with empty
`choices` (`stream_options.include_usage`), then `data: [DONE]`. A non-streamed answer is the
concatenation of the same pieces. Every error, including FastAPI's own validation and routing
errors, has OpenAI's body; a client that leaves a stream cancels its generation. Log-probs
(logprobs.py) ride on the chunk of the text their tokens produced; `response_format` and a forcing
`tool_choice` become a grammar (constrain.py) checked before the request is queued.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.infer.text import ChatDeltas, opens_think
from lmforge.serve.constrain import forced_tools, response_format_schema
from lmforge.serve.logprobs import Formatter, join
from lmforge.serve.protocol import ApiError, ChatRequest, CompletionRequest, bad_request, validation_error
from lmforge.serve.service import Service

logger = logging.getLogger("lmforge")


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def key_matches(token: str, key: str) -> bool:
    """Constant-time comparison of the bytes the client sent with the key's UTF-8 bytes.

    HTTP header values reach us as latin-1 text (one char per byte), so encoding them back as
    latin-1 gives the exact bytes sent; a UTF-8 key typed by a client therefore matches, and any
    other byte string (non-ASCII included) is simply a mismatch, never an exception."""
    try:
        sent = token.strip().encode("latin-1")
    except UnicodeEncodeError:  # not from a real header: compare its UTF-8 bytes
        sent = token.strip().encode("utf-8", "surrogateescape")
    return secrets.compare_digest(sent, key.encode("utf-8", "surrogateescape"))


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        err = validation_error(list(exc.errors()))
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = f"{exc.detail}: {request.method} {request.url.path}"
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(ApiError(exc.status_code, message, type=kind).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception):
        logger.exception("serve: request failed")
        err = ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error")
        return JSONResponse(err.body(), status_code=500)


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="lmforge serve", docs_url=None, redoc_url=None)
    _install_errors(app)

    async def check_key(authorization: str | None = Header(default=None)) -> None:
        if service.api_key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key_matches(token, service.api_key):
            raise ApiError(
                401,
                "Incorrect API key provided: pass it as `Authorization: Bearer KEY`.",
                code="invalid_api_key",
            )

    @app.get("/health")
    async def health() -> dict:
        sched = service.scheduler
        return {
            "status": "ok",
            "running": sched.num_running,
            "waiting": sched.num_waiting,
            "peak_batch": sched.peak_batch,
        }

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])

    @v1.get("/models")
    async def models() -> dict:
        return {"object": "list", "data": service.model_cards()}

    @v1.post("/chat/completions")
    async def chat(req: ChatRequest):
        return await chat_completion(service, req)

    @v1.post("/completions")
    async def completions(req: CompletionRequest):
        return await text_completion(service, req)

    app.include_router(v1)
    return app


async def chat_completion(service: Service, req: ChatRequest):
    adapter = service.adapter_for(req.model)
    if req.top_logprobs is not None and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs: true", param="top_logprobs")
    service.check_fits(req.n, "n")
    schema = response_format_schema(req.response_format)
    functions = forced_tools(req.tools, req.tool_choice)
    if schema is not None and functions is not None:
        raise bad_request("response_format cannot be combined with a forced tool_choice", param="tool_choice")
    text, ids, tools, extra = service.chat_prompt(req)
    grammar = service.grammars.build(schema, functions, "tool_choice" if functions else "response_format")
    if grammar is not None and opens_think(text):
        raise bad_request(
            "constrained output cannot follow a prompt that opens <think>: pass "
            'chat_template_kwargs {"enable_thinking": false}',
            param="chat_template_kwargs",
        )
    params = service.sampling(
        req, len(ids), req.max_completion_tokens or req.max_tokens, "messages", _max_field(req)
    )
    top = (req.top_logprobs or 0) if req.logprobs else None
    params = dataclasses.replace(params, logprobs=top, grammar=grammar)
    if extra is not None:
        from lmforge.serve.vision import check_supported

        check_supported(params)
    jobs, queue = service.submit([ids], [params], req.n, adapter, extra)
    deltas = [ChatDeltas(think_open=opens_think(text), tools=tools) for _ in jobs]
    meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": req.model}
    events = _events(jobs, queue)
    fmt = service.formatter if req.logprobs else None
    if req.stream:
        usage = bool(req.stream_options and req.stream_options.include_usage)
        return _stream(_chat_chunks(events, deltas, meta, len(ids), usage, fmt))
    response = await _chat_response(events, deltas, meta, len(ids), fmt)
    if req.return_token_ids:
        response["prompt_token_ids"] = list(ids)
    return response


async def text_completion(service: Service, req: CompletionRequest):
    adapter = service.adapter_for(req.model)
    if req.suffix is not None:
        raise bad_request("suffix is not supported by lmforge serve", param="suffix")
    if req.best_of not in (None, req.n):
        raise bad_request("best_of must equal n (lmforge serve returns every sample)", param="best_of")
    if req.max_tokens == 0 and not req.echo:
        raise bad_request(
            "max_tokens 0 is only useful with echo (the prompt's log-probs)", param="max_tokens"
        )
    service.check_fits(_prompt_count(req.prompt) * req.n, "prompt")
    grammar = service.grammars.build(response_format_schema(req.response_format), None, "response_format")
    prompts = service.text_prompts(req.prompt)
    top = req.logprobs
    params = [
        dataclasses.replace(
            service.sampling(req, len(ids), req.max_tokens, "prompt", _max_field(req), score_only=req.echo),
            logprobs=top,
            prompt_logprobs=top if req.echo else None,
            grammar=grammar,
        )
        for ids in prompts
    ]
    jobs, queue = service.submit(prompts, params, req.n, adapter)
    echo = [service.engine.decode(ids) if req.echo else "" for ids in prompts for _ in range(req.n)]
    meta = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": req.model}
    num_prompt = sum(map(len, prompts))
    events = _events(jobs, queue)
    text = _TextChoices(echo, jobs, service.formatter if top is not None else None)
    if req.stream:
        usage = bool(req.stream_options and req.stream_options.include_usage)
        return _stream(_text_chunks(events, text, meta, num_prompt, usage))
    return await _text_response(events, text, meta, num_prompt)


def _prompt_count(prompt) -> int:
    """How many prompts a /v1/completions `prompt` holds (a flat list of ints is one prompt)."""
    if isinstance(prompt, str) or (prompt and all(isinstance(x, int) for x in prompt)):
        return 1
    return max(len(prompt), 1)


def _max_field(req) -> str | None:
    """The request field that set the completion length, when the client set one."""
    for name in ("max_completion_tokens", "max_tokens"):
        if name in req.model_fields_set and getattr(req, name, None) is not None:
            return name
    return None


def _stream(chunks: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _events(jobs, queue) -> AsyncIterator[tuple]:
    """(choice index, event) until every job is done; cancels what is left if the consumer stops."""
    left = len(jobs)
    try:
        while left:
            index, event = await queue.get()
            if event[0] in ("done", "error"):
                left -= 1
            yield index, event
    finally:
        for job in jobs:
            job.cancelled = True


def _error_of(event: tuple) -> ApiError:
    return ApiError(500, event[1], type="server_error")


# ---------------------------------------------------------------------------------------- chat
def _chat_chunk(
    meta: dict, index: int, delta: dict, finish: str | None = None, usage: bool = False, logprobs=None
) -> str:
    chunk = {
        **meta,
        "object": "chat.completion.chunk",
        "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
    }
    if usage:
        chunk["usage"] = None
    return _sse(chunk)


def _tool_delta(calls: list[dict]) -> dict:
    return {"tool_calls": [{"index": k, **call} for k, call in enumerate(calls)]}


async def _chat_chunks(
    events, deltas: list[ChatDeltas], meta: dict, prompt: int, usage: bool, fmt: Formatter | None
):
    completion = 0
    pending: list[list] = [[] for _ in deltas]  # log-prob entries not yet sent, per choice

    def chunk(i: int, delta: dict, finish: str | None = None) -> str:
        logprobs = None
        if fmt is not None and (pending[i] or finish):
            logprobs, pending[i] = {"content": fmt.chat(pending[i]), "refusal": None}, []
        return _chat_chunk(meta, i, delta, finish, usage, logprobs)

    for i in range(len(deltas)):
        yield _chat_chunk(meta, i, {"role": "assistant", "content": ""}, usage=usage)
    async with aclosing(events):
        async for i, event in events:
            if event[0] == "error":
                yield _sse(_error_of(event).body())
                continue
            final = event[0] == "done"
            if not final:
                pending[i] += event[2]
            for delta in deltas[i].feed(event[1] if not final else "", final=final):
                yield chunk(i, delta)
            if final:
                completion += event[2]
                reason = event[1]
                if deltas[i].tool_calls:
                    yield chunk(i, _tool_delta(deltas[i].tool_calls))
                    reason = "tool_calls"
                yield chunk(i, {}, reason)
    if usage:
        yield _sse(
            {**meta, "object": "chat.completion.chunk", "choices": [], "usage": _usage(prompt, completion)}
        )
    yield "data: [DONE]\n\n"


async def _chat_response(
    events, deltas: list[ChatDeltas], meta: dict, prompt: int, fmt: Formatter | None
) -> dict:
    parts: list[dict[str, str]] = [{"content": "", "reasoning_content": ""} for _ in deltas]
    entries: list[list] = [[] for _ in deltas]
    reasons, completion = [""] * len(deltas), 0
    async with aclosing(events):
        async for i, event in events:
            if event[0] == "error":
                raise _error_of(event)
            final = event[0] == "done"
            if not final:
                entries[i] += event[2]
            for delta in deltas[i].feed(event[1] if not final else "", final=final):
                for key, value in delta.items():
                    parts[i][key] += value
            if final:
                reasons[i], completion = event[1], completion + event[2]
    choices = []
    for i, d in enumerate(deltas):
        message = {"role": "assistant", "content": parts[i]["content"]}
        if d.seen_think:
            message["reasoning_content"] = parts[i]["reasoning_content"]
        if d.tool_calls:
            message["tool_calls"] = d.tool_calls
            message["content"] = message["content"] or None
            reasons[i] = "tool_calls"
        logprobs = {"content": fmt.chat(entries[i]), "refusal": None} if fmt is not None else None
        choices.append({"index": i, "message": message, "logprobs": logprobs, "finish_reason": reasons[i]})
    return {**meta, "object": "chat.completion", "choices": choices, "usage": _usage(prompt, completion)}


# ---------------------------------------------------------------------------------------- text
class _TextChoices:
    """Per choice of a text completion: the echoed prompt and, with `logprobs`, the log-prob objects
    (the echoed prompt's first, then one per piece of answer, `text_offset` counted from the start)."""

    def __init__(self, echo: list[str], jobs: list, fmt: Formatter | None):
        self.echo, self.jobs, self.fmt = echo, jobs, fmt
        self.offset = [len(e) for e in echo]  # characters sent so far, per choice

    def prompt_logprobs(self, i: int) -> dict | None:
        job = self.jobs[i]
        if self.fmt is None or job.prompt_logprobs is None:
            return None
        return self.fmt.prompt(job.prompt, job.prompt_logprobs)

    def piece_logprobs(self, i: int, entries: list, text: str) -> dict | None:
        if self.fmt is None:
            return None
        out = self.fmt.completion(entries, self.offset[i])
        self.offset[i] += len(text)
        return out


def _text_chunk(
    meta: dict, index: int, text: str, finish: str | None = None, usage: bool = False, logprobs=None
) -> str:
    chunk = {
        **meta,
        "object": "text_completion",
        "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}],
    }
    if usage:
        chunk["usage"] = None
    return _sse(chunk)


async def _text_chunks(events, choices: _TextChoices, meta: dict, prompt: int, usage: bool):
    completion, echoed = 0, [False] * len(choices.echo)

    def echo(i: int) -> str | None:  # the echoed prompt goes first, once its log-probs are known
        if echoed[i] or not choices.echo[i]:
            return None
        echoed[i] = True
        return _text_chunk(meta, i, choices.echo[i], usage=usage, logprobs=choices.prompt_logprobs(i))

    async with aclosing(events):
        async for i, event in events:
            if (first := echo(i)) is not None:
                yield first
            if event[0] == "error":
                yield _sse(_error_of(event).body())
            elif event[0] == "text":
                logprobs = choices.piece_logprobs(i, event[2], event[1])
                yield _text_chunk(meta, i, event[1], usage=usage, logprobs=logprobs)
            else:
                completion += event[2]
                yield _text_chunk(meta, i, "", event[1], usage=usage)
    if usage:
        yield _sse({**meta, "object": "text_completion", "choices": [], "usage": _usage(prompt, completion)})
    yield "data: [DONE]\n\n"


async def _text_response(events, choices: _TextChoices, meta: dict, prompt: int) -> dict:
    texts, reasons, completion = list(choices.echo), [""] * len(choices.echo), 0
    parts: list[list[dict]] = [[] for _ in texts]
    async with aclosing(events):
        async for i, event in events:
            if event[0] == "error":
                raise _error_of(event)
            if event[0] == "text":
                texts[i] += event[1]
                if (lp := choices.piece_logprobs(i, event[2], event[1])) is not None:
                    parts[i].append(lp)
            else:
                reasons[i], completion = event[1], completion + event[2]
    out = []
    for i, (t, r) in enumerate(zip(texts, reasons)):
        logprobs = None
        if choices.fmt is not None:
            head = choices.prompt_logprobs(i)
            logprobs = join(([head] if head else []) + parts[i])
        out.append({"index": i, "text": t, "logprobs": logprobs, "finish_reason": r})
    return {**meta, "object": "text_completion", "choices": out, "usage": _usage(prompt, completion)}
