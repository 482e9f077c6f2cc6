"""Generation settings shared by `chat`, `infer`, `serve`, `webui` and `eval`.

One dataclass, `GenerationArgs`; each field's `metadata["help"]` is the `--help` line the CLI prints.
The defaults follow MiniMind's `eval_llm.py` (temperature 0.85) with HF's usual top-k 50 and
top-p 0.95 (MiniMind uses 0.85; 0.95 keeps more of the tail of a small model's distribution).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerationArgs:
    """How tokens are chosen and when generation stops."""

    max_new_tokens: int = field(default=512, metadata={"help": "Most tokens generated per answer."})
    temperature: float = field(
        default=0.85, metadata={"help": "Sampling temperature; 0 means greedy (deterministic) decoding."}
    )
    top_p: float = field(
        default=0.95,
        metadata={"help": "Nucleus sampling: keep the smallest token set whose probability sums to top_p."},
    )
    top_k: int = field(
        default=50, metadata={"help": "Sample only among the top_k most likely tokens (0 disables the cut)."}
    )
    repetition_penalty: float = field(
        default=1.0, metadata={"help": "Penalty > 1 for tokens already in the context (1.0 = off)."}
    )
    do_sample: bool = field(
        default=True,
        metadata={"help": "Sample from the distribution; false (or temperature 0) decodes greedily."},
    )
    seed: int | None = field(default=None, metadata={"help": "Random seed for reproducible sampling."})
    stop: list[str] | None = field(
        default=None,
        metadata={"help": "Strings that end the answer when generated (not included in the output)."},
    )
    enable_thinking: bool = field(
        default=True, metadata={"help": "Let a reasoning model think in <think>...</think> before answering."}
    )
    show_thinking: bool = field(
        default=True, metadata={"help": "Show the <think> part in chat output (dimmed); false hides it."}
    )

    @property
    def greedy(self) -> bool:
        """True when decoding picks the most likely token at every step."""
        return not self.do_sample or self.temperature <= 0


@dataclass
class EngineArgs:
    """Which model to load and how (shared by chat, infer and later serve / eval)."""

    model: str | None = field(
        default=None,
        metadata={
            "help": "Model folder, run folder or checkpoint, or a weight name inside --save_dir "
            "(aliases: --load_from, --model_name_or_path)."
        },
    )
    weight: str | None = field(
        default=None,
        metadata={
            "help": "MiniMind weight name: loads --save_dir/NAME_<hidden_size>[_moe] when --model is not given."
        },
    )
    save_dir: str = field(
        default="out", metadata={"help": "Folder where --weight / --lora_weight names live."}
    )
    hidden_size: int | None = field(
        default=None,
        metadata={
            "help": "Hidden size in MiniMind weight folder names (NAME_<hidden_size>; default: the one "
            "NAME_<n> there); checked against the loaded model"
        },
    )
    num_hidden_layers: int | None = field(
        default=None,
        metadata={"help": "Check: the layers the loaded model must have (MiniMind's eval_llm.py flag)."},
    )
    use_moe: bool = field(default=False, metadata={"help": "MiniMind weight folder names end in _moe."})
    lora_weight: str | None = field(
        default=None,
        metadata={"help": "PEFT LoRA adapter folder (or its name inside --save_dir) applied on the model."},
    )
    device: str | None = field(
        default=None, metadata={"help": "cuda, cuda:N, cpu or mps (default: cuda if available)."}
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "auto (bf16 on capable GPUs, else fp32), bfloat16, float16, float32."},
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "sdpa, flash_attention_2 or eager."}
    )
    inference_rope_scaling: bool = field(
        default=False,
        metadata={"help": "Extrapolate the context with YaRN x16 over 2048 trained positions (MiniMind)."},
    )
    template: str | None = field(
        default=None,
        metadata={
            "help": "Chat template by name (chatml, qwen, qwen3, llama3, llama2, mistral, gemma, phi3, "
            "deepseek3, deepseekr1, granite, empty); default: the model's own (the one it was trained with)."
        },
    )
