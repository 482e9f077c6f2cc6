"""One inference engine over a Hugging Face causal LM, shared by chat, infer, serve, webui and eval.

`Engine` wraps a model and its tokenizer and offers single answers (`chat`, `complete`), streamed
answers (`stream`) and batched answers (`generate_batch`, left padding, results in input order).
Everything runs on `model.generate`; stop strings, `<think>` splitting and finish reasons are
handled here so every front end reports them the same way.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.infer.args import GenerationArgs

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Special tokens that carry meaning in the answer text and are therefore decoded, not skipped.
VISIBLE_SPECIAL = ("<think>", "</think>", "<tool_call>", "</tool_call>")
# MiniMind's inference RoPE extrapolation: YaRN x16 over the 2048 trained positions. MiniMind sets
# attention_factor 1.0 (no logit temperature), so short prompts behave exactly as without scaling.
YARN_FACTOR, YARN_ORIGINAL_MAX = 16.0, 2048


@dataclass
class Completion:
    """One finished answer; `text` excludes the `<think>` part, which is in `reasoning_content`."""

    text: str
    reasoning_content: str | None
    finish_reason: str  # "stop" (eos or a stop string) or "length" (max_new_tokens reached)
    prompt_tokens: int
    completion_tokens: int
    raw_text: str = ""
    token_ids: list[int] = field(default_factory=list, repr=False)

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


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


class ThinkSplitter:
    """Incremental `split_thinking` for streamed pieces: `feed(piece)` → [(kind, text)], kind is
    "reasoning" or "content"; tags themselves are dropped."""

    def __init__(self) -> None:
        self.in_think = False
        self.buf = ""

    def feed(self, piece: str, final: bool = False) -> list[tuple[str, str]]:
        self.buf += piece
        out: list[tuple[str, str]] = []
        while self.buf:
            tag = THINK_CLOSE if self.in_think else THINK_OPEN
            idx = self.buf.find(tag)
            if idx < 0:
                if self.in_think and THINK_OPEN in self.buf:
                    self.buf = self.buf.replace(THINK_OPEN, "")
                keep = 0 if final else partial_suffix(self.buf, (tag,))
                text, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep :]
                if text:
                    out.append(("reasoning" if self.in_think else "content", text))
                break
            if idx:
                out.append(("reasoning" if self.in_think else "content", self.buf[:idx]))
            self.buf = self.buf[idx + len(tag) :]
            self.in_think = not self.in_think
        return out


def partial_suffix(text: str, stops: tuple[str, ...] | list[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of one of `stops`."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def _use_template(tokenizer, name: str | None) -> None:
    """`--template NAME` (or the run's) on the loaded tokenizer; nothing when neither is given."""
    if name:
        from lmforge.data.chat_templates import apply_template

        apply_template(tokenizer, name)


def resolve_device(device: str | None) -> str:
    """'auto'/None → cuda when available, else Apple's mps, else cpu."""
    import torch

    if device not in (None, "", "auto"):
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def resolve_dtype(dtype: Any, device: str):
    """'auto'/None → bf16 on GPUs that support it, else fp32; accepts bf16/fp16/fp32 spellings."""
    import torch

    if dtype is None or dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "half": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if str(dtype) not in names:
        raise LmforgeError(f"--dtype {dtype!r}: expected auto, bfloat16, float16 or float32")
    return names[str(dtype)]


class _StopCriteria:
    """Per-row stop: a stop string appeared in the generated tail, or the caller cancelled."""

    def __init__(self, tokenizer, stops: list[str], prompt_len: int, cancel: threading.Event | None = None):
        self.tokenizer, self.stops, self.prompt_len, self.cancel = tokenizer, stops, prompt_len, cancel
        # Byte-level tokens hold >= 1 byte each, so this many tokens always cover a whole stop string.
        self.tail = max((len(s.encode()) for s in stops), default=0) + 1

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.cancel is not None and self.cancel.is_set():
            return done.fill_(True)
        if self.stops:
            start = max(self.prompt_len, input_ids.shape[1] - self.tail)
            tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
            for i, t in enumerate(tails):
                done[i] = any(s in t for s in self.stops)
        return done


class _QueueStreamer:
    """A `generate` streamer that hands raw token ids to the consuming thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        self.queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.queue.put(None)


class Engine:
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

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_path(
        cls,
        model: str,
        *,
        device: str | None = None,
        dtype: Any = None,
        lora_weight: str | None = None,
        inference_rope_scaling: bool = False,
        attn_implementation: str | None = None,
        save_dir: str = "out",
        hidden_size: int | None = None,
        use_moe: bool = False,
        template: str | None = None,
        num_hidden_layers: int | None = None,
    ) -> Engine:
        """Load from an HF folder, a run folder / checkpoint, a PEFT adapter folder, a MiniMind-style
        weight name inside `save_dir`, or a cached hub name. Run folders supply defaults
        (`system`, `enable_thinking`, `lora_weight`, `template`) from their `lmforge_args.yaml`;
        `template` (a `--template` name) overrides the tokenizer's chat template."""

        from transformers import AutoConfig, AutoModelForCausalLM

        from lmforge.models.load import read_run_defaults
        from lmforge.models.locate import (
            adapter_base,
            check_sizes,
            find_adapter,
            is_adapter_dir,
            resolve_model_path,
        )
        from lmforge.models.presets import rope_parameters

        if is_adapter_dir(model):
            lora_weight = lora_weight or model  # an adapter folder: load its base model under it
            from lmforge.models.weights import check_model_files

            check_model_files(model)
            model = adapter_base(model) or ""
        path = resolve_model_path(model, save_dir=save_dir, hidden_size=hidden_size, use_moe=use_moe)
        check_sizes(path, {"hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers})
        run = read_run_defaults(path)
        lora_weight = lora_weight or run.get("lora_weight")
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        config = AutoConfig.from_pretrained(path)
        if inference_rope_scaling:
            text_cfg = config.get_text_config()
            theta = (getattr(text_cfg, "rope_parameters", None) or {}).get("rope_theta") or getattr(
                text_cfg, "rope_theta", 1e6
            )
            rope = rope_parameters(theta, "yarn", YARN_FACTOR, YARN_ORIGINAL_MAX)
            rope["attention_factor"] = 1.0
            text_cfg.rope_parameters = rope
            text_cfg.max_position_embeddings = max(
                int(text_cfg.max_position_embeddings or 0), int(YARN_FACTOR * YARN_ORIGINAL_MAX)
            )
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        from lmforge.models import audio as audio_models
        from lmforge.models import vision as vision_models

        audio = audio_models.is_audio_config(config)
        vision = not audio and vision_models.is_vision_config(config)
        net_cls = AutoModelForCausalLM
        if audio or vision:
            net_cls = (audio_models if audio else vision_models).model_class(config)
        net = net_cls.from_pretrained(path, config=config, dtype=torch_dtype, **kwargs)
        if lora_weight:
            try:
                from peft import PeftModel
            except ImportError as e:
                raise LmforgeError("--lora_weight needs peft: pip install peft") from e
            lora_weight = find_adapter(
                str(lora_weight), save_dir, path, hidden_size=hidden_size, use_moe=use_moe
            )
            net = PeftModel.from_pretrained(net, lora_weight)
        net.to(dev)
        tok_dir = (
            str(lora_weight)
            if lora_weight and (Path(str(lora_weight)) / "tokenizer_config.json").exists()
            else path
        )
        if audio:
            from lmforge.infer.audio import AudioEngine
            from lmforge.models.audio import load_processor

            proc_dir = tok_dir if (Path(tok_dir) / "preprocessor_config.json").exists() else path
            proc = load_processor(proc_dir)
            _use_template(proc.tokenizer, template or run.get("template"))
            engine = AudioEngine(
                net,
                proc,
                system=run.get("system") or None,
                enable_thinking=run.get("enable_thinking"),
                name=str(model),
            )
            engine.run_args = run
            return engine
        if vision:
            from lmforge.infer.vision import VisionEngine

            proc_dir = tok_dir if (Path(tok_dir) / "preprocessor_config.json").exists() else path
            proc = vision_models.load_processor(proc_dir)
            _use_template(proc.tokenizer, template or run.get("template"))
            engine = VisionEngine(
                net,
                proc,
                system=run.get("system") or None,
                enable_thinking=run.get("enable_thinking"),
                name=str(model),
            )
            engine.run_args = run
            # images resized as the run's training rows were (LLaMA-Factory's image_max/min_pixels)
            engine.max_pixels = run.get("image_max_pixels") or None
            engine.min_pixels = run.get("image_min_pixels") or None
            return engine
        try:
            from lmforge.models.load import load_tokenizer_for

            tokenizer = load_tokenizer_for(tok_dir)
        except ImportError:  # lmforge.models.tokenizer not available: the folder's own tokenizer
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        _use_template(tokenizer, template or run.get("template"))
        engine = cls(
            net,
            tokenizer,
            system=run.get("system") or None,
            enable_thinking=run.get("enable_thinking"),
            name=str(model),
        )
        engine.run_args = run
        return engine

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
    def _generation_config(self, gen: GenerationArgs):
        from transformers import GenerationConfig

        sample = not gen.greedy
        return GenerationConfig(
            max_new_tokens=gen.max_new_tokens,
            do_sample=sample,
            temperature=gen.temperature if sample else 1.0,
            top_p=gen.top_p if sample else 1.0,
            top_k=gen.top_k if sample else 50,
            repetition_penalty=gen.repetition_penalty,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )

    def _generate(
        self,
        batch: list[list[int]],
        gen: GenerationArgs,
        streamer=None,
        cancel: threading.Event | None = None,
        extra: dict | None = None,
    ):
        """Left-pad `batch`, run `model.generate` (`extra`: more model inputs, e.g. audio features);
        returns (sequences, padded prompt length)."""
        import torch
        from transformers import StoppingCriteriaList

        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, ids in enumerate(batch):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[i, width - len(ids) :] = 1
        if gen.seed is not None:
            torch.manual_seed(gen.seed)
        criteria = StoppingCriteriaList([_StopCriteria(self.tokenizer, list(gen.stop or []), width, cancel)])
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                generation_config=self._generation_config(gen),
                stopping_criteria=criteria,
                streamer=streamer,
                **{k: v.to(self.device) for k, v in (extra or {}).items()},
            )
        return out, width

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, keeping `<think>`/tool tags and dropping other special tokens."""
        return self.tokenizer.decode([i for i in ids if i not in self._hidden_ids], skip_special_tokens=False)

    def _finish(self, gen_ids: list[int], prompt_tokens: int, gen: GenerationArgs) -> Completion:
        """Cut generated ids at the first eos / stop string and build the `Completion`."""
        reason = "length"
        for n, tid in enumerate(gen_ids):
            if tid in self.eos_ids:
                gen_ids, reason = gen_ids[: n + 1], "stop"
                break
        text = self.decode(gen_ids)
        hits = [text.find(s) for s in gen.stop or [] if s and s in text]
        if hits:
            text, reason = text[: min(hits)], "stop"
        if reason == "length" and len(gen_ids) < gen.max_new_tokens:
            reason = "stop"
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
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        results: list[Completion | None] = [None] * len(encoded)
        for start in range(0, len(order), max(1, batch_size)):
            chunk = order[start : start + max(1, batch_size)]
            extra = extra_inputs(chunk) if extra_inputs else None
            caps = [self._answer_cap(len(encoded[i]), gen) for i in chunk]
            out, width = self._generate([encoded[i] for i in chunk], _capped(gen, max(caps)), extra=extra)
            for row, i in enumerate(chunk):  # each row stops at its own cap (--max_length counts the prompt)
                ids = out[row, width:].tolist()[: caps[row]]
                results[i] = self._finish(ids, len(encoded[i]), _capped(gen, caps[row]))
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


def _capped(gen: GenerationArgs, max_new_tokens: int) -> GenerationArgs:
    """`gen` with a smaller answer budget (the same object when nothing changes)."""
    return gen if max_new_tokens == gen.max_new_tokens else replace(gen, max_new_tokens=max_new_tokens)


class TextStream:
    """Iterator of text pieces from a generation running in a background thread.

    Pieces concatenate to `completion.raw_text` (`<think>` tags included). Text that might be the
    start of a stop string is held back until it is known not to be one. Leaving the loop early
    (`break`, `close()`) stops the generation.
    """

    def __init__(self, engine: Engine, ids: list[int], gen: GenerationArgs, extra: dict | None = None):
        """`extra`: more model inputs (a vision prompt's image inputs)."""
        self.engine, self.ids, self.gen, self.extra = engine, ids, gen, extra
        self.completion: Completion | None = None
        self._cancel = threading.Event()
        self._streamer = _QueueStreamer()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    @property
    def finish_reason(self) -> str | None:
        return self.completion.finish_reason if self.completion else None

    def _work(self) -> None:
        try:
            self.engine._generate(
                [self.ids], self.gen, streamer=self._streamer, cancel=self._cancel, extra=self.extra
            )
        except BaseException as e:  # surfaced in the consuming thread
            self._error = e
            self._streamer.end()

    def close(self) -> None:
        self._cancel.set()

    def __iter__(self) -> Iterator[str]:
        eng, stops = self.engine, [s for s in self.gen.stop or [] if s]
        gen_ids: list[int] = []
        committed, window_start, emitted = "", 0, 0
        stopped = hit_stop = False
        try:
            while not stopped:
                chunk = self._streamer.queue.get()
                if chunk is None:
                    break
                for tid in chunk:
                    if len(gen_ids) >= self.gen.max_new_tokens:
                        break
                    gen_ids.append(tid)
                    if tid in eng.eos_ids:
                        stopped = True
                        break
                    window = eng.decode(gen_ids[window_start:])
                    text = committed + window
                    if window.endswith("\n"):  # safe point: later tokens cannot change this text
                        committed, window_start = text, len(gen_ids)
                    hit = min(
                        (
                            text.find(s, max(0, emitted - len(s)))
                            for s in stops
                            if text.find(s, max(0, emitted - len(s))) >= 0
                        ),
                        default=-1,
                    )
                    if hit >= 0:
                        if hit > emitted:
                            yield text[emitted:hit]
                        emitted, stopped = hit, True
                        hit_stop = True
                        break
                    end = len(text) - partial_suffix(text, stops)
                    while end > emitted and text[end - 1] == "\ufffd":  # incomplete UTF-8 sequence
                        end -= 1
                    if end > emitted:
                        yield text[emitted:end]
                        emitted = end
            if not hit_stop:  # flush text held back as a possible stop-string start or partial UTF-8
                text = eng.decode(gen_ids)
                if len(text) > emitted:
                    yield text[emitted:]
        finally:
            self._cancel.set()
            self._thread.join()
        if self._error is not None:
            raise self._error
        self.completion = eng._finish(gen_ids, len(self.ids), self.gen)
