"""Flags of `lmforge eval` (the model flags come from `EngineArgs`, shared with chat / infer)."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.fields import arg
from lmforge.infer.args import EngineArgs

TEMPLATE_NAMES = (
    "chatml",
    "qwen",
    "qwen2_5",
    "qwen3",
    "llama3",
    "llama2",
    "mistral",
    "gemma",
    "phi3",
    "deepseek3",
    "deepseekr1",
    "granite",
    "empty",
)  # fmt: skip  (lmforge/data/chat_templates.py TEMPLATES; kept here so --help stays import-light)


@dataclass
class EvalArgs(EngineArgs):
    model: str | None = arg(
        None,
        "Model folder, run folder or checkpoint (also the first positional); with --eval_url: the "
        "served model name (default: the first of /v1/models)",
    )
    task: str = arg(
        "mc",
        "ppl (perplexity on text), mc (multiple-choice benchmark), gen (generation metrics); "
        "mmlu_test, ceval_validation, cmmlu_test: mc on LLaMA-Factory's --task_dir layout "
        "(default evaluation/NAME/)",
        choices=("ppl", "mc", "gen", "mmlu_test", "ceval_validation", "cmmlu_test"),
    )
    dataset: str | None = arg(
        None, "ppl: text file (.txt/.jsonl/...); gen: chat val set (.jsonl/.json); or a folder of them"
    )
    text_column: str | None = arg(None, "ppl: column holding the text (default: text)")
    task_dir: str | None = arg(
        None,
        "mc: benchmark folder in C-Eval / CMMLU / MMLU layout; ceval, cmmlu or mmlu = the bundled samples",
    )
    benchmark: str = arg(
        "auto",
        "mc: folder layout: auto (detected), ceval, cmmlu, mmlu",
        choices=("auto", "ceval", "cmmlu", "mmlu"),
    )
    split: str | None = arg(None, "mc: split to score (default: C-Eval val, CMMLU test, MMLU test)")
    subjects: list[str] | None = arg(None, "mc: only these subjects (comma-separated file stems)")
    n_shot: int | None = arg(
        None, "mc: solved dev questions shown before each question (default 5); lm_eval: the tasks' own"
    )
    lang: str = arg(
        "auto",
        "mc: prompt language: auto (zh for C-Eval/CMMLU, en for MMLU), en, zh",
        choices=("auto", "en", "zh"),
    )
    template: str = arg(
        "auto",
        "mc: chat (through the chat template), plain (raw text), auto (plain for pretrain runs and models "
        "without a chat template, else chat); or a chat template's name (chatml, qwen, llama3, ...: "
        "chat prompts in that template); fewshot = plain (LLaMA-Factory's name)",
        choices=("auto", "chat", "plain", "fewshot", *TEMPLATE_NAMES),
    )
    limit: int | None = arg(None, "Score at most N questions per subject / N rows (quick checks)")
    batch_size: int = arg(8, "Prompts per forward pass (local models)")
    max_length: int | None = arg(None, "ppl: window length in tokens (default: min(context, 1024))")
    output_dir: str | None = arg(
        None, "Folder for results.json and predictions.jsonl (default: out/eval-TASK-<time>)"
    )
    overwrite: bool = arg(False, "Replace a non-empty --output_dir")
    eval_url: str | None = arg(
        None, "Evaluate an OpenAI-compatible server instead (e.g. http://127.0.0.1:8000/v1)"
    )
    api_key: str | None = arg(None, "Bearer key for --eval_url (default: $OPENAI_API_KEY)")
    concurrency: int = arg(4, "Requests in flight at once with --eval_url")
    timeout: float = arg(120.0, "Seconds per request with --eval_url")
    backend: str = arg(
        "lmforge",
        "lmforge (the tasks above) or lm_eval (lm-evaluation-harness's tasks, --tasks; needs lm-eval); "
        "hf (ms-swift's --infer_backend pt) is lmforge's own transformers path",
        choices=("lmforge", "lm_eval", "hf", "vllm"),
    )
    tasks: list[str] | None = arg(
        None, "lm_eval: harness task names (comma-separated), e.g. hellaswag,arc_easy"
    )
    include_path: str | None = arg(None, "lm_eval: folder of extra task YAMLs for the harness")
    model_args: str | None = arg(None, "lm_eval: extra harness model_args (key=value,...)")
    tokenizer: str | None = arg(
        None, "lm_eval with --eval_url: the served model's tokenizer folder (the harness sends token ids)"
    )
