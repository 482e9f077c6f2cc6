"""Train, save and load lmforge tokenizers (byte-level BPE, MiniMind-compatible special ids).

``train_tokenizer`` streams ``.txt`` / ``.jsonl`` files into the ``tokenizers`` BPE trainer and
writes a plain Hugging Face tokenizer folder (``tokenizer.json`` + ``tokenizer_config.json`` with
our ChatML template) that ``transformers.AutoTokenizer.from_pretrained`` loads without
``trust_remote_code``. The project ships one such tokenizer in ``lmforge/assets/tokenizer``,
rebuilt by ``scripts/build_default_tokenizer.py``.

Design choices:
- Special ids are fixed (MiniMind's first three, then the reasoning / tool tags), see ``SPECIAL_TOKENS``.
  ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` are *special* (dropped by
  ``skip_special_tokens``); the think / tool tags are atomic but not special, as in Qwen3, so
  decoded text keeps them for reasoning and tool-call parsers.
- ``\\n`` is its own pre-token, so tokenising a chat segment by segment (for exact loss masks) gives
  the same ids as tokenising the whole text.
- No normaliser, no prefix space, no post-processor: ``decode(encode(x)) == x`` and nothing is
  added on encode; bos/eos are added explicitly by the data code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)
"""Fixed ids 0..8, in this order."""
CONTROL_TOKENS = SPECIAL_TOKENS[:3]
"""The tokens marked special (skipped by ``decode(..., skip_special_tokens=True)``)."""

DEFAULT_MODEL_MAX_LENGTH = 32768


def default_tokenizer_dir() -> str:
    """Folder of the tokenizer shipped with lmforge."""
    return str(Path(__file__).resolve().parent.parent / "assets" / "tokenizer")


def _row_text(row: Any) -> str:
    """The trainable text of one JSON row: ``text``, else chat contents, else all string values."""
    if not isinstance(row, dict):
        return row if isinstance(row, str) else ""
    if isinstance(row.get("text"), str):
        return row["text"]
    for key in ("conversations", "messages"):
        turns = row.get(key)
        if isinstance(turns, list):
            parts = []
            for turn in turns:
                if isinstance(turn, dict):
                    for field in ("content", "value", "reasoning_content"):
                        if isinstance(turn.get(field), str):
                            parts.append(turn[field])
            return "\n".join(parts)
    return "\n".join(v for v in row.values() if isinstance(v, str))


def iter_corpus(files: list[str], max_chars: int | None = None) -> Iterator[str]:
    """Stream training texts from files (one line at a time), stopping after ``max_chars``."""
    total = 0
    for path in files:
        if not os.path.isfile(path):
            raise LmforgeError(f"tokenizer train: file not found: {path}")
        is_jsonl = path.endswith((".jsonl", ".json"))
        from lmforge.data.textio import iter_lines, open_text

        with open_text(path) as f:
            for line_no, line in iter_lines(f, path):
                if is_jsonl:
                    if not line.strip():
                        continue
                    try:
                        text = _row_text(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise LmforgeError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
                else:
                    text = line
                # Special-token strings would otherwise be learned as ordinary merges ("<|", "im", ...).
                for token in SPECIAL_TOKENS:
                    if token in text:
                        text = text.replace(token, "\n")
                if not text:
                    continue
                if max_chars is not None and total + len(text) > max_chars:
                    remaining = max_chars - total
                    if remaining > 0:
                        yield text[:remaining]
                    return
                total += len(text)
                yield text


def _build_backend(vocab_size: int, min_frequency: int) -> tuple[Any, Any]:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=t in CONTROL_TOKENS, normalized=False) for t in SPECIAL_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tok, trainer


def tokenizer_config(model_max_length: int = DEFAULT_MODEL_MAX_LENGTH) -> dict:
    """The ``tokenizer_config.json`` we ship: plain fast tokenizer, ChatML template, no auto bos/eos."""
    from lmforge.data.template import BOS_TOKEN, CHAT_TEMPLATE, EOS_TOKEN, PAD_TOKEN

    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": t in CONTROL_TOKENS,
            }
            for i, t in enumerate(SPECIAL_TOKENS)
        },
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "padding_side": "right",
        "chat_template": CHAT_TEMPLATE,
    }


def train_tokenizer(
    files: list[str],
    out_dir: str,
    vocab_size: int = 6400,
    min_frequency: int = 2,
    max_chars: int | None = None,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
) -> str:
    """Train a byte-level BPE tokenizer on ``files`` (.txt lines / .jsonl rows) into ``out_dir``.

    Returns ``out_dir``. ``max_chars`` caps how much text is read (the files are streamed).
    """
    if not files:
        raise LmforgeError("tokenizer train: give at least one file with --files")
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise LmforgeError(f"tokenizer train: --vocab_size must be at least {len(SPECIAL_TOKENS) + 256}")
    tok, trainer = _build_backend(vocab_size, min_frequency)
    tok.train_from_iterator(iter_corpus(files, max_chars), trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, f"special token {t} got id {tok.token_to_id(t)}"
    # BpeTrainer marks every token it was given as special; the think / tool tags should not be.
    spec = json.loads(tok.to_str())
    for entry in spec["added_tokens"]:
        entry["special"] = entry["content"] in CONTROL_TOKENS
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False, indent=2)
        f.write("\n")
    config = tokenizer_config(model_max_length)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
        f.write("\n")
    special_map = {k: config[k] for k in ("bos_token", "eos_token", "pad_token")}
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(special_map, f, ensure_ascii=False, indent=2)
        f.write("\n")
    return out_dir


def load_tokenizer(path: str | None = None) -> Any:
    """Load a tokenizer folder (``None`` → the shipped default) with ``AutoTokenizer``.

    Sets a pad token when missing (``<|endoftext|>`` if the vocabulary has it, else eos) and installs
    lmforge's ChatML template when the tokenizer has none.
    """
    from transformers import AutoTokenizer

    from lmforge.data.template import CHAT_TEMPLATE, PAD_TOKEN

    path = path or default_tokenizer_dir()
    if (os.path.isabs(path) or path.startswith(".")) and not os.path.isdir(path):
        raise LmforgeError(f"tokenizer folder not found: {path}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise LmforgeError(f"cannot load a tokenizer from {path!r}: {e}") from None
    if tokenizer.pad_token is None:
        if PAD_TOKEN in tokenizer.get_vocab():
            tokenizer.pad_token = PAD_TOKEN
        elif tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
