"""Tiny tokenizers built in tests: byte-level BPE and SentencePiece-style (Metaspace + Unigram),
each with the control tokens of the chat-template families and a chosen bos / eos; and byte-level
BPE tokenizers in the layout of Llama 3 and Qwen2 (their split regex, specials, BOS rule)."""

from __future__ import annotations

FAMILY_TOKENS = [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
    "<tool_response>", "</tool_response>",
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>",
    "<s>", "</s>", "[INST]", "[/INST]",
    "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
    "<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>", "<|tool_call|>", "<unk>",
]  # fmt: skip

CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "You are a helpful assistant. Answer briefly and politely.",
    "法国的首都是哪里？法国的首都是巴黎。北京今天晴，25 度。",
    '{"name": "get_weather", "arguments": {"city": "Paris"}} {"weather": "sunny", "temp": 25}',
    "Let me think about this step by step. France, Paris, capital city, weather today.",
    "system user assistant model tool ipython Tools function call response",
    "Cutting Knowledge Date: December 2023 Today Date: 26 Jul 2024 London Old New thought",
    "one line\ntwo lines\n\nthree → four",
] * 20

# (bos, eos) each family's tokenizer declares
SPECIALS = {
    "qwen": (None, "<|im_end|>"),
    "qwen3": (None, "<|im_end|>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama2": ("<s>", "</s>"),
    "mistral": ("<s>", "</s>"),
    "gemma": ("<bos>", "<eos>"),
    "phi3": (None, "<|end|>"),
    "deepseek3": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "deepseekr1": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "granite": (None, "<|end_of_text|>"),
    "empty": ("<s>", "</s>"),
}


def _backend(kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=600,
            special_tokens=FAMILY_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:  # SentencePiece-style: Metaspace (▁ for spaces, prefix on the first word) + Unigram
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.UnigramTrainer(
            vocab_size=400, special_tokens=FAMILY_TOKENS, unk_token="<unk>", show_progress=False
        )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


_CACHE: dict = {}


def make_tokenizer(kind: str, family: str, template: str | None = None):
    """A PreTrainedTokenizerFast of `kind` ("bpe" or "sp") with `family`'s bos/eos and `template`."""
    from transformers import PreTrainedTokenizerFast

    if kind not in _CACHE:
        _CACHE[kind] = _backend(kind).to_str()
    from tokenizers import Tokenizer

    bos, eos = SPECIALS.get(family, (None, "<|im_end|>"))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_CACHE[kind]),
        bos_token=bos,
        eos_token=eos,
        pad_token="<|endoftext|>",
        unk_token="<unk>",
    )
    if template is not None:
        tok.chat_template = template
    return tok


# The split regexes of Meta Llama 3's and Qwen2's tokenizer.json files (their published pre_tokenizer).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Text with what split regexes treat differently: digit runs, contractions, whitespace and newline
# runs, CJK, emoji, code.
CORPUS_EXTRA = [
    "Numbers: 1234567 89 2024-12-04 3.14159 1,000,000 and 42nd.",
    "Contractions: don't can't I'LL we've She'S it'd you're THEY'RE.",
    "Spaces:   a   b\t\tc  \n\n  d\r\n\r\ne    \n\n\n",
    "日本語のテキスト。中文测试，北京欢迎你！한국어 텍스트입니다.",
    "Emoji 🙂👍🏽🇫🇷 and symbols ©®™ → ← ∑ ∞.",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
]


def split_bpe(split: str, specials: list[str], ignore_merges: bool):
    """A byte-level BPE whose pre-tokenizer is `split` (isolated) then ByteLevel without its regex."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS + CORPUS_EXTRA * 20, trainer=trainer)
    return tok


def llama3_tokenizer():
    """Llama-3 layout: its split regex, ignore_merges, a BOS added by a post-processor, <|eot_id|>."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from lmforge.data.chat_templates import TEMPLATES

    specials = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ]
    backend = split_bpe(LLAMA3_SPLIT, specials, ignore_merges=True)
    backend.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>",
    )
    tok.chat_template = TEMPLATES["llama3"]
    return tok


def qwen2_tokenizer():
    """Qwen2 layout: its split regex, no BOS, ChatML markers, <|im_end|> ends a turn."""
    from transformers import PreTrainedTokenizerFast

    from lmforge.data.chat_templates import TEMPLATES

    backend = split_bpe(QWEN2_SPLIT, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], ignore_merges=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = TEMPLATES["qwen"]
    return tok
