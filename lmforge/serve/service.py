"""What the HTTP layer needs from the model: served names → adapters, prompts → token ids,
request fields → `SamplingParams` (with the context-length check), and jobs for the scheduler.

Request values win over the server's `GenerationArgs` (its command-line defaults); without either,
decoding follows `lmforge chat` (so `--temperature 0` makes greedy the default for every request).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from lmforge.decode.loop import Job
from lmforge.decode.sampling import SamplingParams
from lmforge.infer.args import GenerationArgs
from lmforge.serve.protocol import ApiError, ChatRequest, Message, Sampling, bad_request
from lmforge.serve.scheduler import Overloaded, Scheduler


class Service:
    """The served model, its names and its scheduler."""

    def __init__(
        self,
        engine,
        scheduler: Scheduler,
        models: dict[str, str | None],
        gen: GenerationArgs,
        *,
        api_key: str | None = None,
        roots: dict[str, str] | None = None,
        media=None,
    ):
        """`models` maps each served name to its PEFT adapter name (None: the base weights);
        `media`: the `serve.vision.MediaPolicy` for image parts (default: no local paths, no limit)."""
        from lmforge.serve.logprobs import Formatter
        from lmforge.serve.vision import MediaPolicy

        self.engine, self.scheduler, self.models, self.gen = engine, scheduler, models, gen
        self.grammars = scheduler.decoder.grammars or grammars_for(engine)
        scheduler.decoder.grammars = self.grammars
        self.formatter = Formatter(lambda ids: engine.tokenizer.decode(ids, skip_special_tokens=False))
        self.api_key = api_key
        self.roots = roots or {}
        self.media = media or MediaPolicy()
        self.created = int(time.time())

    # ------------------------------------------------------------------ names
    def adapter_for(self, model: str) -> str | None:
        if model not in self.models:
            raise ApiError(
                404,
                f"The model `{model}` does not exist. Served models: {', '.join(self.models)}",
                param="model",
                code="model_not_found",
            )
        return self.models[model]

    def model_cards(self) -> list[dict[str, Any]]:
        base = next((name for name, adapter in self.models.items() if adapter is None), None)
        return [
            {
                "id": name,
                "object": "model",
                "created": self.created,
                "owned_by": "lmforge",
                "root": self.roots.get(name, name),
                "parent": base if adapter is not None else None,
            }
            for name, adapter in self.models.items()
        ]

    # ------------------------------------------------------------------ prompts
    def chat_prompt(self, req: ChatRequest) -> tuple[str, list[int], bool, dict | None]:
        """(prompt text, its token ids, whether tool calls are parsed, image inputs or None) of a
        chat request; image parts are read under the media policy (serve/vision.py)."""
        from lmforge.errors import LmforgeError
        from lmforge.serve.vision import request_images

        raw = [_message(m, i, keep_parts=True) for i, m in enumerate(req.messages)]
        media = request_images(raw, self.media, self.engine)
        messages = media[0] if media else [_message(m, i) for i, m in enumerate(req.messages)]
        thinking = (req.chat_template_kwargs or {}).get("enable_thinking", self.gen.enable_thinking)
        gen = dataclasses.replace(self.gen, enable_thinking=bool(thinking))
        tools = req.tools if req.tools and req.tool_choice != "none" else None
        try:
            text = self.engine.render(messages, gen, tools)
            if media:
                prompt = self.engine.encode_vision(messages, media[1], gen, tools)
                return text, prompt.ids, tools is not None, self.engine.extra_inputs([prompt])([0])
        except LmforgeError as e:  # placeholders and images disagree, ...
            raise bad_request(f"messages: {e}", param="messages") from None
        except Exception as e:  # the chat template rejected the conversation
            raise bad_request(f"messages: the chat template failed: {e}", param="messages") from None
        ids = self.engine.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text, ids, tools is not None, None

    def text_prompts(self, prompt: Any) -> list[list[int]]:
        """Token ids of a /v1/completions `prompt` (str, list of str, token ids or lists of them)."""
        if isinstance(prompt, str):
            prompt = [prompt]
        if not prompt:
            raise bad_request("prompt: must not be empty", param="prompt")
        if all(isinstance(x, int) for x in prompt):
            prompt = [prompt]
        vocab = len(self.engine.tokenizer)
        out = []
        for p in prompt:
            ids = self.engine.encode(p, self.gen) if isinstance(p, str) else list(p)
            if not ids or any(not 0 <= t < vocab for t in ids):
                raise bad_request(f"prompt: token ids must be in [0, {vocab}) and not empty", param="prompt")
            out.append(ids)
        return out

    # ------------------------------------------------------------------ sampling
    def check_fits(self, sequences: int, param: str) -> None:
        """400 for a request that needs more sequences than the queue can ever hold (retrying a
        503 would never help it)."""
        limit = self.scheduler.max_queue
        if sequences > limit:
            raise bad_request(
                f"this request needs {sequences} sequences (prompts x n) but the server queues at "
                f"most {limit} (--max_queue {limit}); send fewer prompts or a smaller n",
                param=param,
                code="too_many_sequences",
            )

    def sampling(
        self,
        req: Sampling,
        prompt_tokens: int,
        max_tokens: int | None,
        where: str = "messages",
        max_field: str | None = None,
        score_only: bool = False,
    ) -> SamplingParams:
        """The request's decoding settings; 400 when prompt + answer cannot fit the context. The
        error's `param` is the field to change: `max_field` (the client's length field) when the
        prompt alone fits, else `where` (the prompt or messages). `score_only`: max_tokens 0 is allowed
        (an echoed prompt's log-probs, nothing generated)."""
        gen, context = self.gen, self.engine.context_length
        cause = max_field if max_field and prompt_tokens < context else where
        if max_tokens is None:
            max_tokens = min(gen.max_new_tokens, context - prompt_tokens)
            asked = f"your {where} resulted in {prompt_tokens} tokens"
        else:
            asked = (
                f"you requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {where}, "
                f"{max_tokens} in the completion)"
            )
        if max_tokens < (0 if score_only else 1) or prompt_tokens + max_tokens > context:
            raise bad_request(
                f"This model's maximum context length is {context} tokens. However, {asked}. "
                f"Please reduce the length of the {where} or completion.",
                param=cause,
                code="context_length_exceeded",
            )
        temperature = req.temperature
        if temperature is None:
            temperature = gen.temperature if gen.do_sample else 0.0
        top_k = gen.top_k if req.top_k is None else req.top_k
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=gen.top_p if req.top_p is None else req.top_p,
            top_k=max(top_k, 0),
            seed=gen.seed if req.seed is None else req.seed,
            stop=[*(gen.stop or []), *req.stops()],
            repetition_penalty=req.repetition_penalty or gen.repetition_penalty,
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            ignore_eos=req.ignore_eos,
        )

    # ------------------------------------------------------------------ jobs
    def submit(
        self,
        prompts: list[list[int]],
        params: list[SamplingParams],
        n: int,
        adapter: str | None,
        extra: dict | None = None,
    ) -> tuple[list[Job], asyncio.Queue]:
        """n jobs per prompt (choice index = prompt × n + j, seed + j); their events arrive on the
        returned queue as (choice index, event). `extra`: image inputs of a single prompt."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        jobs = []
        for p, (ids, base) in enumerate(zip(prompts, params)):
            for j in range(n):
                seed = None if base.seed is None else base.seed + j
                jobs.append(
                    Job(
                        ids,
                        dataclasses.replace(base, seed=seed),
                        adapter,
                        lambda ev, i=p * n + j: loop.call_soon_threadsafe(queue.put_nowait, (i, ev)),
                        extra=extra,
                    )
                )
        try:
            self.scheduler.submit(jobs)
        except Overloaded as e:
            raise ApiError(
                503, f"the server is overloaded: {e}; retry later", type="server_error", code="overloaded"
            ) from None
        return jobs, queue


def grammars_for(engine):
    """The constrained-decoding view of the engine's tokenizer over its model's output vocabulary."""
    from lmforge.serve.constrain import Grammars

    head = engine.model.get_output_embeddings()
    vocab = head.weight.shape[0] if head is not None else len(engine.tokenizer)
    return Grammars(engine.tokenizer, vocab, engine.eos_ids)


def _message(m: Message, i: int, keep_parts: bool = False) -> dict[str, Any]:
    """A request message → the dict the chat template expects (text parts joined; `keep_parts`:
    content parts kept as dicts, for serve/vision.py to find images in)."""
    content = m.content
    if isinstance(content, list) and keep_parts:
        content = [part.model_dump(exclude_none=True) for part in content]
    elif isinstance(content, list):
        if any(part.type != "text" for part in content):
            raise bad_request(
                f"messages[{i}].content: only text parts are supported", param=f"messages.{i}.content"
            )
        content = "".join(part.text or "" for part in content)
    out: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": content or ""}
    for key in ("name", "tool_calls", "tool_call_id", "reasoning_content"):
        if getattr(m, key) is not None:
            out[key] = getattr(m, key)
    return out
