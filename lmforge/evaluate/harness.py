"""`lmforge eval --backend lm_eval`: lm-evaluation-harness on a local model, and harness task YAMLs
for the multiple-choice folders `--task mc` reads.

The pass-through calls the harness's `simple_evaluate` with its `hf` model on the folder lmforge
resolved (a run folder, checkpoint or model folder), or with `local-completions` on `--eval_url`
(token ids from the model folder's tokenizer; `lmforge serve` answers `echo` + `logprobs`), and
writes the harness's results as `results.json`.

`mc_task_yaml` writes, per subject, the task the harness would need to score exactly what
`lmforge eval --task mc --template plain` scores: MMLU's documented prompt (description "The
following are multiple choice questions (with answers) about SUBJECT.", dev questions first-n as
shots, "Answer:" and the letter after a space; C-Eval/CMMLU with "答案：" and no space), accuracy
by the highest log-likelihood of the letters (first on ties, as both do). One difference has to be
written into the YAML: lmforge scores base models with the tokenizer's BOS first (as pretraining
saw it), while the harness prepends BOS only where the tokenizer's own `encode` adds one; so the
BOS text opens the description when the tokenizer has a BOS that its `encode` does not add.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.evaluate.bench import LETTERS, Subject
from lmforge.evaluate.mc import ANSWER_CUE, HEADER

logger = logging.getLogger("lmforge")
MISSING = 'eval --backend lm_eval needs lm-evaluation-harness: pip install "lm-eval[api]>=0.4.13"'
# column names of each layout's csv files (MMLU's have no header row)
COLUMNS = {
    "mmlu": ("question", "A", "B", "C", "D", "answer"),
    "ceval": ("question", "A", "B", "C", "D", "answer"),
    "cmmlu": ("Question", "A", "B", "C", "D", "Answer"),
}


def bos_prefix(tokenizer) -> str:
    """The BOS text to write into the description: lmforge prepends it, the tokenizer does not."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]:
        return ""
    return bos


def mc_task_yaml(
    subject: Subject, files: dict[str, Path], layout: str, lang: str, n_shot: int, bos: str = ""
) -> dict[str, Any]:
    """A harness task config (dict; dump it as YAML) for one subject of a local benchmark folder.
    `files`: {"test": path, "dev": path} (the split scored and the shots' split)."""
    q, *choices, answer = COLUMNS[layout]
    text = "{{" + q + "|string|trim}}"
    text += "".join(f"\n{letter}. {{{{{col}|string|trim}}}}" for letter, col in zip(LETTERS, choices))
    kwargs: dict[str, Any] = {"data_files": {k: str(v) for k, v in files.items()}}
    if layout == "mmlu":
        kwargs["column_names"] = list(COLUMNS["mmlu"])
    return {
        "task": f"lmforge_{layout}_{subject.name}",
        "dataset_path": "csv",
        "dataset_kwargs": kwargs,
        "test_split": "test",
        "fewshot_split": "dev",
        "fewshot_config": {"sampler": "first_n"},
        "num_fewshot": n_shot,
        "output_type": "multiple_choice",
        "description": bos + HEADER[lang].format(subject=subject.title[lang]),
        "doc_to_text": text + "\n" + ANSWER_CUE[lang],
        "doc_to_choice": list(LETTERS),
        "doc_to_target": "{{" + json.dumps(list(LETTERS)) + ".index(" + answer + "|string|trim|upper)}}",
        "target_delimiter": " " if lang == "en" else "",
        "fewshot_delimiter": "\n\n",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }


def harness_model(args) -> tuple[str, str]:
    """(harness model type, its model_args string) for a local folder or `--eval_url`."""
    if args.eval_url:
        if not args.tokenizer and not (args.model and Path(args.model).is_dir()):
            raise LmforgeError("--backend lm_eval --eval_url needs --tokenizer FOLDER (the served model's)")
        base = args.eval_url.rstrip("/")
        url = base if base.endswith("/completions") else f"{base}/completions"
        name, tok = args.model, args.tokenizer or args.model
        return "local-completions", (
            f"base_url={url},model={name},tokenizer={tok},tokenizer_backend=huggingface,tokenized_requests=True"
        )
    from lmforge.models.load import resolve_model_path

    folder = resolve_model_path(args.model or args.weight, save_dir=args.save_dir)
    extra = (
        f",peft={resolve_model_path(args.lora_weight, save_dir=args.save_dir)}" if args.lora_weight else ""
    )
    return "hf", f"pretrained={folder},dtype={args.dtype}{extra}"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_harness(args) -> dict[str, Any]:
    """lm-evaluation-harness's `simple_evaluate` on `args.tasks`: its results and per-document predictions."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise LmforgeError(MISSING) from None
    if not args.tasks:
        raise LmforgeError("--backend lm_eval needs --tasks NAME[,NAME...] (harness task names)")
    kind, model_args = harness_model(args)
    if args.eval_url and args.api_key:  # the harness's API models read the key from the environment
        import os

        os.environ["OPENAI_API_KEY"] = args.api_key
    if args.model_args:
        model_args += "," + args.model_args
    manager = None
    if args.include_path:  # the user's own tasks alone index in a moment; the harness's zoo takes a while
        manager = TaskManager(include_path=args.include_path, include_defaults=False)
        if not all(manager.match_tasks([t]) for t in args.tasks):
            manager = None
    manager = manager or TaskManager(include_path=args.include_path)
    unknown = [t for t in args.tasks if not manager.match_tasks([t])]
    if unknown:
        raise LmforgeError(
            f"--tasks {unknown[0]!r}: not a task lm-evaluation-harness knows (see `lm_eval ls tasks`)"
        )
    logger.info("eval: lm-evaluation-harness %s on %s (%s)", ",".join(args.tasks), kind, model_args)
    out = lm_eval.simple_evaluate(
        model=kind,
        model_args=model_args,
        tasks=list(args.tasks),
        num_fewshot=args.n_shot,
        batch_size=args.batch_size,
        device=args.device or ("cuda" if _cuda() else "cpu"),
        limit=args.limit,
        task_manager=manager,
        log_samples=True,
    )
    if out is None:  # not rank 0 of a distributed run
        return {}
    result = {k: out[k] for k in ("results", "versions", "n-shot", "configs") if k in out}
    result["predictions"] = [
        _prediction(task, s) for task, rows in out.get("samples", {}).items() for s in rows
    ]
    return result


def _prediction(task: str, sample: dict[str, Any]) -> dict[str, Any]:
    """One predictions.jsonl line: the document, target, model outputs (for multiple choice one
    `[log-likelihood, is_greedy]` per choice) and the document's metrics."""
    keep = {k: sample[k] for k in sample["metrics"] if k in sample}
    resps = json.loads(json.dumps(sample["filtered_resps"], default=str))
    return {"task": task, "doc_id": sample["doc_id"], "target": sample["target"], "resps": resps, **keep}
