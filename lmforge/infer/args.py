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
