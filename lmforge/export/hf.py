"""`--format hf`: merged safetensors, tokenizer (with its chat template), generation config and a
model card; a plain Hugging Face folder that loads without peft or lmforge."""

from __future__ import annotations

from pathlib import Path

from lmforge.export.source import Source


def model_card(src: Source, what: str, n_params: int, extra: str = "") -> str:
    base = f"base_model: {src.path}\n" if src.adapter else ""
    return f"""---
library_name: transformers
{base}tags: [lmforge]
---
# Exported model

{what} written by `lmforge export` from `{src.description}` ({n_params / 1e6:.2f}M parameters).
{extra}"""


def write_hf(src: Source, folder: Path, max_shard_size: str = "50GB") -> list[str]:
    """Write the HF folder into `folder` (a staging folder); returns the files written."""
    src.model.save_pretrained(str(folder), safe_serialization=True, max_shard_size=max_shard_size)
    src.tokenizer.save_pretrained(str(folder))
    n_params = sum(p.numel() for p in src.model.parameters())
    dtype = str(src.model.dtype).removeprefix("torch.")
    usage = f"""
```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH")
tokenizer = AutoTokenizer.from_pretrained("PATH")
```
Weights: {dtype} safetensors. Chat template: `tokenizer.apply_chat_template(messages, add_generation_prompt=True)`.
"""
    (folder / "README.md").write_text(
        model_card(src, "A Hugging Face model", n_params, usage), encoding="utf-8"
    )
    return sorted(p.name for p in folder.iterdir())
