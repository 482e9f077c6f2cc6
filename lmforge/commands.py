"""Flag groups of the non-training commands (tokenizer, init, data, pipeline)."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.fields import arg


@dataclass
class TokenizerTrainArgs:
    dataset: str | None = arg(
        None, "Text to learn from: .txt/.jsonl files or folders, comma-separated", multi=True
    )
    output_dir: str = arg("out/tokenizer", "Where the tokenizer folder is written")
    vocab_size: int = arg(6400, "Vocabulary size, special tokens included (MiniMind: 6400)")
    min_frequency: int = arg(2, "Ignore merges seen fewer times than this")
    max_chars: int | None = arg(None, "Read at most this many characters of text (default: all)")


@dataclass
class InitArgs:
    output_dir: str = arg("out/init", "Folder for the new model (HF format)")
    seed: int = arg(42, "Seed of the random initialisation")
    audio: bool = arg(
        False,
        "Build a tiny audio LLM instead (Qwen2-Audio layout: Whisper-style encoder, projector, decoder of "
        "--hidden_size/--num_hidden_layers) with its processor, 2 s feature window",
    )
    vision: bool = arg(
        False,
        "Build a tiny vision LLM instead (Qwen2-VL layout: ViT with 14-px patches and a 2x2 merger, "
        "decoder of --hidden_size/--num_hidden_layers) with its image processor (56x56 to 112x112 pixels)",
    )


@dataclass
class SynthArgs:
    output_dir: str = arg("data/synth", "Folder for the generated corpora")
    seed: int = arg(0, "Same seed, same bytes")
    scale: float = arg(1.0, "Multiply the number of rows (1.0 ≈ a few MB, a CPU demo's worth)")
    lang: str = arg("both", "Languages: both, en, zh", choices=("both", "en", "zh"))
    audio_clips: int = arg(
        0, "Also write N labelled tone clips (clips/*.wav) and audio_train.csv / audio_test.csv"
    )
    images: int = arg(
        0,
        "Also write N small pictures (images/*.png) with colour / shape / count questions answerable only "
        "from the picture: vision_train.jsonl and a held-out vision_test.jsonl (a fifth, unseen images), "
        "and N preference rows on other pictures (chosen right, rejected wrong): vision_pref_train / _test.jsonl",
    )


@dataclass
class DataCheckArgs:
    stage: str = arg("sft", "Check against this stage's format (pretrain, sft, distill-reason, ...)")
    tokenizer_path: str | None = arg(None, "Tokenizer for the length histogram (default: lmforge's)")
    plot_path: str | None = arg(None, "Also write the token-length histogram as this PNG file")


@dataclass
class PipelineArgs:
    dry_run: bool = arg(False, "Print the stages and their state (done / resumable / new) and exit")
