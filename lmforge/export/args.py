"""Flags of `lmforge export` (one dataclass; each field's help is its `--help` line)."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.fields import arg

FORMATS = ("hf", "gguf", "gptq", "awq", "bnb")
GGUF_TYPES = ("f16", "bf16", "q8_0", "q5_0", "q4_0", "f32")


@dataclass
class ExportArgs:
    model: str | None = arg(
        None, "Run folder, checkpoint, HF model folder or adapter folder to export; also the first positional"
    )
    adapter: str | None = arg(
        None, "PEFT adapter merged into the model first (default: the run's own adapter, if it has one)"
    )
    output_dir: str | None = arg(None, "Folder the export is written to (required)")
    format: str = arg(
        "hf", "hf (merged safetensors), gguf (+ Ollama Modelfile), gptq, awq, bnb", choices=FORMATS
    )
    gguf_type: str = arg(
        "f16",
        "GGUF weight type: f16, bf16, q8_0 (8-bit, ~half of f16), q5_0, q4_0 (~0.3 of f16), f32",
        choices=GGUF_TYPES,
    )
    quantization_bit: int = arg(4, "Bits for --format gptq / awq / bnb (4 or 8)", choices=(4, 8))
    quantization_dataset: str | None = arg(
        None, "Calibration text (.txt/.jsonl) for --format gptq / awq (default: lmforge's synthetic corpus)"
    )
    quantization_nsamples: int = arg(256, "Calibration texts read from --quantization_dataset (gptq / awq)")
    template: str | None = arg(
        None, "Chat template by name written into the exported tokenizer (default: the model's own)"
    )
    max_shard_size: str = arg(
        "50GB", "Largest safetensors file of --format hf (e.g. 2GB, 500MB); bigger models are split"
    )
    dtype: str = arg(
        "auto",
        "Weights dtype of --format hf: auto (as stored), float32, bfloat16, float16",
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    system: str | None = arg(None, "Default system prompt written into the Modelfile (default: the run's)")
    save_dir: str = arg("out", "Folder where MiniMind-style model / adapter names live")
    hidden_size: int | None = arg(None, "Hidden size in MiniMind folder names (NAME_<hidden_size>)")
    use_moe: bool = arg(False, "MiniMind folder names end in _moe")
    push_to_hub: str | None = arg(
        None, "Upload the exported folder to this Hugging Face Hub repo (explicit opt-in; needs network)"
    )
    hub_token: str | None = arg(None, "Hub access token for --push_to_hub (default: HF_TOKEN / saved login)")
    hub_private: bool = arg(True, "Create the --push_to_hub repo as private")
    overwrite: bool = arg(False, "Replace a non-empty --output_dir")
