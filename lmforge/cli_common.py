"""The `lmforge` command table and the help helpers every command handler shares.

`COMMANDS` maps command words to a one-line summary and the handler (`cli_data` builds data,
tokenizers and models; `cli_run` trains, serves, evaluates and exports; `cli` runs pipelines and is
the entry point). Handlers import their libraries lazily so `lmforge --help` stays fast.
"""

from __future__ import annotations

# (command words) → (one-line summary, handler: MODULE.FUNCTION under lmforge, taking argv)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("tokenizer", "train"): (
        "train a byte-level BPE tokenizer (vocab 6400, ChatML + think + tool tokens)",
        "cli_data.cmd_tokenizer_train",
    ),
    ("init",): ("create a from-scratch model folder from a preset or explicit sizes", "cli_data.cmd_init"),
    ("data", "synth"): ("generate the bundled synthetic corpora (zh + en)", "cli_data.cmd_data_synth"),
    ("data", "check"): (
        "validate a dataset for a stage: counts, problems, token lengths",
        "cli_data.cmd_data_check",
    ),
    ("data", "convert"): (
        "pre-tokenise a dataset for a stage into a reusable Arrow cache",
        "cli_data.cmd_data_convert",
    ),
    ("train",): (
        "run a training stage: pretrain, sft, distill, distill-reason, distill-api, rm, dpo, kto, orpo, "
        "simpo, cpo, grpo, ppo, spo (MiniMind's lora, distillation)",
        "cli_run.cmd_train",
    ),
    ("chat",): ("interactive streaming chat in the terminal", "cli_run.cmd_chat"),
    ("infer",): ("batch inference over CSV/JSONL, outputs in input order", "cli_run.cmd_infer"),
    ("serve",): (
        "OpenAI-compatible HTTP server with dynamic batching and LoRA adapters",
        "cli_run.cmd_serve",
    ),
    ("webui",): (
        "browser UI: chat with a run/model, and a training board to launch/watch runs",
        "cli_run.cmd_webui",
    ),
    ("merge",): ("merge a PEFT adapter into its base model (full HF folder)", "cli_run.cmd_merge"),
    ("eval",): (
        "perplexity, multiple-choice benchmarks, generation metrics, or an OpenAI endpoint",
        "cli_run.cmd_eval",
    ),
    ("export",): (
        "export to HF safetensors, GGUF (+ Ollama Modelfile) or quantised formats",
        "cli_run.cmd_export",
    ),
    ("generate", "distill"): (
        "answer the questions of a chat dataset with an OpenAI-compatible teacher → SFT rows",
        "cli_run.cmd_generate_distill",
    ),
    ("generate", "qa"): (
        "have an OpenAI-compatible teacher write questions on a topic and answer them → SFT rows",
        "cli_run.cmd_generate_qa",
    ),
    ("import", "minimind"): (
        "convert MiniMind .pth weights into a native HF model folder",
        "cli_run.cmd_import_minimind",
    ),
    ("pipeline",): ("run the stages of a pipeline YAML in order, skipping finished ones", "cli.cmd_pipeline"),
    ("env",): (
        "print lmforge, Python, torch (CUDA / MPS) and library versions for bug reports",
        "cli_run.cmd_env",
    ),
}


def usage() -> str:
    lines = ["usage: lmforge COMMAND [CONFIG.yaml] [--key value ...]", "", "commands:"]
    for words, (summary, _) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<18} {summary}")
    lines += [
        "",
        "ms-swift's command words work too: sft, pt, rlhf, deploy, app-ui, web-ui, merge-lora (lmforge/swift.py).",
        "Every command takes --help. Flags and YAML keys are the same; flags win.",
    ]
    return "\n".join(lines)


def wants_help(argv: list[str]) -> bool:
    return "--help" in argv or "-h" in argv


def print_help(prog: str, summary: str, groups: list[type], **kw) -> int:
    from lmforge.config.loader import format_help

    print(format_help(prog, summary, groups, **kw))
    return 0
