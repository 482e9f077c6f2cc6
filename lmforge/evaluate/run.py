"""`lmforge eval`: pick the model (local Engine or --eval_url endpoint), run the task, write
`results.json` and `predictions.jsonl` (each written atomically) and format the printed table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.evaluate.args import EvalArgs


def llamafactory_task(args: EvalArgs, explicit: set[str]) -> None:
    """`--task mmlu_test|ceval_validation|cmmlu_test` as LLaMA-Factory runs it: `--task mc` on its
    --task_dir layout, English prompts unless --lang says otherwise, results into --save_dir."""
    from lmforge.evaluate.bench import llamafactory_task_dir

    folder, layout, split = llamafactory_task_dir(args.task, args.task_dir)
    args.task, args.task_dir, args.benchmark = "mc", str(folder), layout
    args.split = args.split or split
    if "lang" not in explicit:
        args.lang = "en"  # LLaMA-Factory's default
    if "save_dir" in explicit and "output_dir" not in explicit:  # its save_dir is the results folder
        args.output_dir, args.save_dir = args.save_dir, "out"


def _check(args: EvalArgs) -> None:
    harness = [f"--{k}" for k in ("tasks", "include_path", "model_args", "tokenizer") if getattr(args, k)]
    if harness:
        raise LmforgeError(f"{harness[0]} is a flag of --backend lm_eval (the default backend is lmforge)")
    if args.task == "ppl" and args.eval_url:
        raise LmforgeError(
            "--task ppl needs a local model: OpenAI-compatible servers do not return prompt log-probabilities"
        )
    if args.task in ("ppl", "gen") and not args.dataset:
        raise LmforgeError(f"--task {args.task} needs --dataset FILE")
    if not args.eval_url and not (args.model or args.weight):
        raise LmforgeError(
            "eval: name a model (`lmforge eval MODEL_OR_RUN ...`) or an endpoint (--eval_url URL)"
        )


def _output_dir(args: EvalArgs) -> Path:
    from lmforge.runs import default_output_dir

    out = Path(args.output_dir or default_output_dir(f"eval-{args.task}", args.save_dir))
    if out.exists() and not out.is_dir():
        raise LmforgeError(f"--output_dir {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise LmforgeError(f"--output_dir {out} exists and is not empty; pass --overwrite true to replace it")
    return out


def _use_chat(args: EvalArgs, engine) -> bool:
    if args.template != "auto":
        return args.template != "plain"  # chat, or a chat template's name
    if engine is None:  # a server: chat unless told --template plain
        return True
    if engine.run_args.get("stage") == "pretrain":
        return False
    return bool(getattr(engine.tokenizer, "chat_template", None))


def _load_inputs(args: EvalArgs) -> Any:
    """The task's data, read (and checked row by row) before any model is loaded."""
    if args.task == "ppl":
        from lmforge.evaluate.ppl import load_texts

        return load_texts(args.dataset, args.text_column, args.limit)
    if args.task == "gen":
        from lmforge.evaluate.gen import load_examples

        return load_examples(args.dataset, args.limit)
    from lmforge.evaluate.bench import load_benchmark, resolve_task_dir

    task_dir = resolve_task_dir(args.task_dir)
    layout = None if args.benchmark == "auto" else args.benchmark
    return task_dir, *load_benchmark(task_dir, layout, args.split, args.subjects, args.limit)


def _mc(args: EvalArgs, gen, engine, endpoint, inputs) -> dict[str, Any]:
    from lmforge.evaluate.bench import DEFAULT_LANG
    from lmforge.evaluate.mc import LocalScorer, evaluate_mc

    task_dir, layout, split, subjects = inputs
    lang = DEFAULT_LANG[layout] if args.lang == "auto" else args.lang
    chat = _use_chat(args, engine)
    if endpoint is not None:
        from lmforge.evaluate.endpoint import EndpointScorer

        scorer = EndpointScorer(endpoint, chat, args.concurrency)
    else:
        scorer = LocalScorer(engine, chat, gen, args.batch_size)
    n_shot = 5 if args.n_shot is None else max(0, args.n_shot)
    result = evaluate_mc(scorer, subjects, n_shot, lang, chat)
    head = {"benchmark": layout, "task_dir": str(task_dir), "split": split, "lang": lang, "n_shot": n_shot}
    head.update(template="chat" if chat else "plain", methods={k: v for k, v in scorer.methods.items() if v})
    return {**head, **result}


def _gen(args: EvalArgs, gen, engine, endpoint, examples) -> dict[str, Any]:
    from lmforge.evaluate.gen import evaluate_gen, local_generator

    if endpoint is not None:
        from lmforge.evaluate.endpoint import endpoint_generator

        generate = endpoint_generator(endpoint, gen, args.concurrency)
    else:
        generate = local_generator(engine, gen, args.batch_size)
    return {"dataset": args.dataset, "greedy": gen.greedy, **evaluate_gen(generate, examples)}


def run_eval(args: EvalArgs, gen) -> tuple[dict[str, Any], Path]:
    """Evaluate; returns (results without per-row predictions, output folder)."""
    if args.template == "fewshot":  # LLaMA-Factory's plain few-shot prompt
        args.template = "plain"
    if args.backend == "vllm":  # ms-swift's --infer_backend vllm
        raise LmforgeError(
            "--backend vllm: lmforge eval generates with transformers; start `lmforge serve MODEL "
            "--backend vllm` (pip install vllm) and pass its URL with --eval_url"
        )
    if args.backend == "lm_eval":
        return _harness(args)
    args.backend = "lmforge"  # hf: ms-swift's --infer_backend pt|hf is lmforge's own path
    _check(args)
    out = _output_dir(args)
    inputs = _load_inputs(args)
    engine = endpoint = None
    if args.eval_url:
        from lmforge.evaluate.endpoint import Endpoint

        key = args.api_key or os.environ.get("OPENAI_API_KEY")
        endpoint = Endpoint(args.eval_url, key, args.model, args.timeout)
    else:
        from lmforge.infer.chat import load_engine

        engine = load_engine(args)  # type: ignore[arg-type]  # EvalArgs carries EngineArgs' fields
    if args.task == "ppl":
        from lmforge.evaluate.ppl import perplexity

        result: dict[str, Any] = {
            "dataset": args.dataset,
            **perplexity(engine, inputs, args.max_length, args.batch_size),
        }
    elif args.task == "mc":
        result = _mc(args, gen, engine, endpoint, inputs)
    else:
        result = _gen(args, gen, engine, endpoint, inputs)
    model = endpoint.model if endpoint else engine.name
    result = {"task": args.task, "model": model, "eval_url": args.eval_url, **result}
    predictions = result.pop("predictions", [])
    write_results(out, result, predictions)
    return result, out


def _harness(args: EvalArgs) -> tuple[dict[str, Any], Path]:
    """`--backend lm_eval`: lm-evaluation-harness's tasks; lmforge's own task flags do not apply."""
    from lmforge.evaluate.harness import run_harness

    own = [
        f"--{k}"
        for k in ("dataset", "task_dir", "subjects", "split", "text_column", "max_length")
        if getattr(args, k)
    ]
    own += [f"--{k}" for k in ("benchmark", "lang", "template") if getattr(args, k) != "auto"]
    if own:
        raise LmforgeError(f"{own[0]} is a flag of lmforge's own tasks; with --backend lm_eval name --tasks")
    if not args.eval_url and not (args.model or args.weight):
        raise LmforgeError(
            "eval: name a model (`lmforge eval MODEL_OR_RUN ...`) or an endpoint (--eval_url URL)"
        )
    out = _output_dir(args)
    result = {"task": "lm_eval", "model": args.model, "eval_url": args.eval_url, **run_harness(args)}
    predictions = result.pop("predictions", [])
    write_results(out, result, predictions)
    return result, out


def write_results(out: Path, result: dict[str, Any], predictions: list[dict]) -> None:
    from lmforge.runs import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / "results.json", json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n"
    )
    if predictions:
        text = "".join(json.dumps(p, ensure_ascii=False, default=str) + "\n" for p in predictions)
        atomic_write_text(out / "predictions.jsonl", text)


def format_table(result: dict[str, Any]) -> str:
    """The printed summary of a results dict."""
    task = result["task"]
    if task == "lm_eval":
        lines = [f"{'task':<36}{'metric':<24}{'value':>10}"]
        for name, metrics in result.get("results", {}).items():
            for key, value in metrics.items():
                if isinstance(value, float) and "stderr" not in key:
                    lines.append(f"{name:<36}{key:<24}{value:>10.4f}")
        return "\n".join(lines)
    if task == "ppl":
        return (
            f"documents {result['documents']}  tokens {result['tokens']}  loss {result['loss']:.4f}  "
            f"perplexity {result['perplexity']:.3f}  bits/byte {result['bits_per_byte']:.4f}"
        )
    if task == "gen":
        return (
            f"rows {result['rows']}  exact_match {100 * result['exact_match']:.1f}  "
            f"rouge_l {100 * result['rouge_l']:.1f}  bleu_4 {100 * result['bleu_4']:.1f}"
        )
    methods = ", ".join(f"{k} {v}" for k, v in result["methods"].items())
    lines = [
        f"{result['benchmark']} ({result['split']}, {result['n_shot']}-shot, {result['template']} prompt, "
        f"{result['lang']}; scored by {methods})",
        f"{'subject':<36}{'category':<18}{'n':>5}{'accuracy':>10}",
    ]
    for name, r in result["subjects"].items():
        lines.append(f"{name:<36}{r['category']:<18}{r['total']:>5}{100 * r['accuracy']:>10.1f}")
    if len(result["categories"]) > 1:
        for name, r in result["categories"].items():
            lines.append(f"{'category ' + name:<54}{r['total']:>5}{100 * r['accuracy']:>10.1f}")
    lines.append(f"{'overall (micro)':<54}{result['total']:>5}{100 * result['accuracy']:>10.1f}")
    lines.append(f"{'overall (macro, mean of subjects)':<59}{100 * result['macro_accuracy']:>10.1f}")
    return "\n".join(lines)
