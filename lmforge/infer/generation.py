"""`GenerationEngine`: generation over one loaded model + tokenizer, shared by chat, infer, serve,
webui and eval (`infer/engine.py`'s `Engine.from_path` loads one; audio and vision LLMs subclass it).

It offers single answers (`chat`, `complete`), streamed answers (`stream`) and batched answers
(`generate_batch`, left padding, results in input order). Everything runs on the one decode loop
(decode/loop.py, also serve's and RL rollouts'): each row samples with its own generator (seeded
`--seed + i` for input i, so a seeded answer does not depend on the batch it ran in) and stops at its
own eos, stop string or token budget; `<think>` splitting and finish reasons (infer/text.py) are the
same for every front end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.infer.args import GenerationArgs
from lmforge.infer.stream import Completion, TextStream
from lmforge.infer.text import VISIBLE_SPECIAL, split_thinking


class GenerationEngine:
    """Generation over one model + tokenizer (see module docstring)."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        system: str | None = None,
        enable_thinking: bool | None = None,
        max_length: int | None = None,
        name: str | None = None,
    ):
        """`system`: default system prompt; `enable_thinking`: False turns thinking off for every
        request (a run trained without it); `max_length`: prompt-token limit (e.g. infer's --max_length)."""
        model.eval()
        self.model, self.tokenizer = model, tokenizer
        self.system, self.enable_thinking, self.max_length = system, enable_thinking, max_length
        self.total_length: int | None = None  # prompt + answer tokens per row (infer's --max_length)
        self.name = name or getattr(model.config, "_name_or_path", None) or "model"
        self.run_args: dict[str, Any] = {}  # the run's lmforge_args.yaml, set by from_path
        self.device = next(model.parameters()).device
        gc = getattr(model, "generation_config", None)
        eos = getattr(gc, "eos_token_id", None) if gc is not None else None
        eos_ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        for tok in (tokenizer.eos_token, "<|im_end|>", "<|endoftext|>"):
            tid = tokenizer.convert_tokens_to_ids(tok) if tok else None
            if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid not in eos_ids:
                eos_ids.append(tid)
        if not eos_ids:
            raise LmforgeError("the tokenizer has no end-of-sequence token: cannot tell when an answer ends")
        self.eos_ids = eos_ids
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        keep = {tokenizer.convert_tokens_to_ids(t) for t in VISIBLE_SPECIAL if t in tokenizer.get_vocab()}
        self._hidden_ids = (set(tokenizer.all_special_ids) | set(eos_ids) | {self.pad_id}) - keep
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.context_length = int(getattr(cfg, "max_position_embeddings", 0) or 1 << 30)

    # ------------------------------------------------------------------ prompts
    def _thinking(self, gen: GenerationArgs) -> bool:
        return bool(gen.enable_thinking) and self.enable_thinking is not False

    def render(self, messages: list[dict], gen: GenerationArgs, tools: list | None = None) -> str:
        """The prompt text for `messages` (default system prompt added when none is given)."""
        if self.system and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": self.system}, *messages]
        from lmforge.data.chat import render  # the renderer training rows come from

        return render(
            self.tokenizer, messages, tools, add_generation_prompt=True, enable_thinking=self._thinking(gen)
        )

    def encode(self, item: list[dict] | str, gen: GenerationArgs, tools: list | None = None) -> list[int]:
        """Token ids of a chat (list of messages) or of raw text (bos prepended, as in pretraining)."""
        if isinstance(item, str):
            bos = self.tokenizer.bos_token
            text = item if not bos or item.startswith(bos) else bos + item
        else:
            text = self.render(item, gen, tools)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def check_length(self, ids: list[int], gen: GenerationArgs, where: str = "prompt") -> None:
        """Raise `LmforgeError` when the prompt leaves no room for `max_new_tokens` in the context."""
        limit = self.context_length - gen.max_new_tokens
        if len(ids) > limit:
            raise LmforgeError(
                f"{where} has {len(ids)} tokens; the model's context of {self.context_length} "
                f"minus --max_new_tokens {gen.max_new_tokens} allows {max(limit, 0)}"
            )
        if self.max_length is not None and len(ids) > self.max_length:
            raise LmforgeError(f"{where} has {len(ids)} tokens, more than --max_length {self.max_length}")

    # ------------------------------------------------------------------ generation
    def sampling(self, gen: GenerationArgs, max_tokens: int, seed: int | None):
        """The decode loop's `SamplingParams` for `gen` (greedy when it says so)."""
        from lmforge.decode.sampling import SamplingParams

        return SamplingParams(
            max_tokens=max_tokens,
            temperature=0.0 if gen.greedy else gen.temperature,
            top_p=gen.top_p,
            top_k=max(gen.top_k or 0, 0),
            seed=seed,
            stop=list(gen.stop or []),
            repetition_penalty=gen.repetition_penalty,
        )

    def run_jobs(self, jobs: list, extra: dict | None = None) -> list:
        """Decode `jobs` (decode/loop.py `Job`s) together; their rows in job order. `extra`: more model
        inputs for the prefill (image or audio features of these rows)."""
        import torch

        from lmforge.decode.batch import Runner
        from lmforge.decode.loop import Decoder

        runner = Runner(self.model, self.pad_id, switch_adapters=False)  # the model as it is set now
        with torch.inference_mode():
            return Decoder(self.decode, self.eos_ids).run(runner, jobs, extra)

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, keeping `<think>`/tool tags and dropping other special tokens."""
        return self.tokenizer.decode([i for i in ids if i not in self._hidden_ids], skip_special_tokens=False)

    def _finish(self, gen_ids: list[int], prompt_tokens: int, gen: GenerationArgs, reason: str) -> Completion:
        """The `Completion` of a finished row: its text cut at the first stop string."""
        text = self.decode(gen_ids)
        hits = [text.find(s) for s in gen.stop or [] if s and s in text]
        if hits:
            text = text[: min(hits)]
        reasoning, content = split_thinking(text)
        return Completion(
            text=content,
            reasoning_content=reasoning,
            finish_reason=reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(gen_ids),
            raw_text=text,
            token_ids=gen_ids,
        )

    def chat(self, messages: list[dict], gen: GenerationArgs, tools: list | None = None) -> Completion:
        """One answer to a conversation."""
        return self.generate_batch([messages], gen, batch_size=1, tools=tools)[0]

    def complete(self, prompt_text: str, gen: GenerationArgs) -> Completion:
        """Raw text continuation (pretrained base models): no chat template."""
        return self.generate_batch([prompt_text], gen, batch_size=1)[0]

    def generate_batch(
        self,
        items: list[list[dict] | str],
        gen: GenerationArgs,
        batch_size: int = 8,
        tools: list | None = None,
    ) -> list[Completion]:
        """Answers for many conversations (or raw prompts, given as str), in input order. Rows are
        sorted by length so each batch pads little; greedy results equal one-by-one generation."""
        encoded = []
        for i, item in enumerate(items):
            ids = self.encode(item, gen, tools)
            self.check_length(ids, gen, where=f"row {i}" if len(items) > 1 else "prompt")
            encoded.append(ids)
        return self.generate_ids(encoded, gen, batch_size)

    def generate_ids(
        self,
        encoded: list[list[int]],
        gen: GenerationArgs,
        batch_size: int = 8,
        extra_inputs: Callable[[list[int]], dict] | None = None,
    ) -> list[Completion]:
        """`generate_batch` on already encoded (and length-checked) prompts; `extra_inputs(rows)`
        gives more model inputs for the rows (indices into `encoded`) of one batch."""
        from lmforge.decode.loop import Job

        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        results: list[Completion | None] = [None] * len(encoded)
        for start in range(0, len(order), max(1, batch_size)):
            chunk = order[start : start + max(1, batch_size)]
            extra = extra_inputs(chunk) if extra_inputs else None
            jobs = [  # each row stops at its own cap (--max_length counts the prompt)
                Job(encoded[i], self.sampling(gen, self._answer_cap(len(encoded[i]), gen), _seed(gen, i)))
                for i in chunk
            ]
            for i, row in zip(chunk, self.run_jobs(jobs, extra)):
                results[i] = self._finish(row.generated, len(encoded[i]), gen, row.finish_reason or "stop")
        return results  # type: ignore[return-value]

    def _answer_cap(self, prompt_tokens: int, gen: GenerationArgs) -> int:
        """Most answer tokens for a prompt: --max_new_tokens, and what `total_length` leaves."""
        if self.total_length is None:
            return gen.max_new_tokens
        return max(1, min(gen.max_new_tokens, self.total_length - prompt_tokens))

    def stream(
        self, messages: list[dict] | str, gen: GenerationArgs, tools: list | None = None
    ) -> TextStream:
        """Stream an answer: iterate the result for text pieces; `.completion` is set at the end.
        A str `messages` is raw-text completion."""
        ids = self.encode(messages, gen, tools)
        self.check_length(ids, gen)
        return TextStream(self, ids, gen)


def _seed(gen: GenerationArgs, i: int) -> int | None:
    """Row i's sampling seed: --seed + i (None: from the OS)."""
    return None if gen.seed is None else gen.seed + i
