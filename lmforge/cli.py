"""`lmforge` command line: a literal table of subcommands → handler functions.

Imports are lazy (inside handlers) so `lmforge --help` stays fast. User mistakes surface as
`LmforgeError` and are printed as one line (exit status 2), never as a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable

# (command words) → (one-line summary, handler name in this module)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("tokenizer", "train"): (
        "train a byte-level BPE tokenizer (vocab 6400, ChatML + think + tool tokens)",
        "cmd_tokenizer_train",
    ),
    ("init",): ("create a from-scratch model folder from a preset or explicit sizes", "cmd_init"),
    ("data", "synth"): ("generate the bundled synthetic corpora (zh + en)", "cmd_data_synth"),
    ("data", "check"): ("validate a dataset for a stage: counts, problems, token lengths", "cmd_data_check"),
    ("data", "convert"): (
        "pre-tokenise a dataset for a stage into a reusable Arrow cache",
        "cmd_data_convert",
    ),
    ("train",): (
        "run a training stage: pretrain, sft, distill, distill-reason, distill-api, rm, dpo, kto, orpo, "
        "simpo, cpo, grpo, ppo, spo (MiniMind's lora, distillation)",
        "cmd_train",
    ),
    ("chat",): ("interactive streaming chat in the terminal", "cmd_chat"),
    ("infer",): ("batch inference over CSV/JSONL, outputs in input order", "cmd_infer"),
    ("serve",): ("OpenAI-compatible HTTP server with dynamic batching and LoRA adapters", "cmd_serve"),
    ("webui",): ("browser UI: chat with a run/model, and a training board to launch/watch runs", "cmd_webui"),
    ("merge",): ("merge a PEFT adapter into its base model (full HF folder)", "cmd_merge"),
    ("eval",): (
        "perplexity, multiple-choice benchmarks, generation metrics, or an OpenAI endpoint",
        "cmd_eval",
    ),
    ("export",): ("export to HF safetensors, GGUF (+ Ollama Modelfile) or quantised formats", "cmd_export"),
    ("generate", "distill"): (
        "answer the questions of a chat dataset with an OpenAI-compatible teacher → SFT rows",
        "cmd_generate_distill",
    ),
    ("generate", "qa"): (
        "have an OpenAI-compatible teacher write questions on a topic and answer them → SFT rows",
        "cmd_generate_qa",
    ),
    ("import", "minimind"): (
        "convert MiniMind .pth weights into a native HF model folder",
        "cmd_import_minimind",
    ),
    ("pipeline",): ("run the stages of a pipeline YAML in order, skipping finished ones", "cmd_pipeline"),
    ("env",): ("print lmforge, Python, torch (CUDA / MPS) and library versions for bug reports", "cmd_env"),
}


def _usage() -> str:
    lines = ["usage: lmforge COMMAND [CONFIG.yaml] [--key value ...]", "", "commands:"]
    for words, (summary, _) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<18} {summary}")
    lines += [
        "",
        "ms-swift's command words work too: sft, pt, rlhf, deploy, app-ui, web-ui, merge-lora (lmforge/swift.py).",
        "Every command takes --help. Flags and YAML keys are the same; flags win.",
    ]
    return "\n".join(lines)


def _wants_help(argv: list[str]) -> bool:
    return "--help" in argv or "-h" in argv


def _print_help(prog: str, summary: str, groups: list[type], **kw) -> int:
    from lmforge.config.loader import format_help

    print(format_help(prog, summary, groups, **kw))
    return 0


# --- handlers ----------------------------------------------------------------------------------
def cmd_tokenizer_train(argv: list[str]) -> int:
    from lmforge.commands import TokenizerTrainArgs
    from lmforge.config.loader import resolve

    if _wants_help(argv):
        return _print_help(
            "lmforge tokenizer train", COMMANDS[("tokenizer", "train")][0], [TokenizerTrainArgs]
        )
    cfg = resolve([TokenizerTrainArgs], argv, max_positionals=0)
    files = _expand_files(cfg["dataset"], "tokenizer train --dataset")
    from lmforge.models.tokenizer import train_tokenizer
    from lmforge.runs import mark_finished

    out = train_tokenizer(
        files,
        cfg["output_dir"],
        vocab_size=cfg["vocab_size"],
        min_frequency=cfg["min_frequency"],
        max_chars=cfg["max_chars"],
    )
    mark_finished(out, {"command": "tokenizer train"})
    print(f"tokenizer written to {out}")
    return 0


def _expand_files(spec: str | None, what: str) -> list[str]:
    from pathlib import Path

    from lmforge.errors import LmforgeError

    if not spec:
        raise LmforgeError(f"{what} is required")
    files: list[str] = []
    for part in spec.split(","):
        p = Path(part.strip())
        if p.is_dir():
            files += sorted(str(f) for f in p.iterdir() if f.suffix in (".txt", ".jsonl", ".json"))
        elif p.is_file():
            files.append(str(p))
        else:
            raise LmforgeError(f"{what}: {p} not found")
    return files


def cmd_init(argv: list[str]) -> int:
    from lmforge.commands import InitArgs
    from lmforge.config.loader import resolve
    from lmforge.config.schema import ModelArgs

    if _wants_help(argv):
        return _print_help("lmforge init", COMMANDS[("init",)][0], [InitArgs, ModelArgs])
    cfg = resolve([InitArgs, ModelArgs], argv, max_positionals=0)
    from lmforge.models.presets import count_parameters
    from lmforge.pipeline import load_tokenizer_and_model
    from lmforge.runs import mark_finished

    cfg.values.setdefault("save_dir", "out")
    cfg.values["seed"] = cfg["seed"]
    cfg.values["model_name_or_path"] = None
    if cfg["audio"] and cfg["vision"]:
        from lmforge.errors import LmforgeError

        raise LmforgeError("init: --audio and --vision build different models; give one of them")
    if cfg["vision"]:
        from lmforge.models.tokenizer import load_tokenizer
        from lmforge.models.vision import build_tiny_vision_model, load_vision_model

        sizes = {k: cfg[k] for k in ("hidden_size", "num_hidden_layers") if k in cfg.explicit}
        build_tiny_vision_model(
            cfg["output_dir"], load_tokenizer(cfg.get("tokenizer_path")), seed=cfg["seed"], **sizes
        )
        mark_finished(cfg["output_dir"], {"command": "init --vision"})
        n = count_parameters(load_vision_model(cfg["output_dir"]))
        print(f"Qwen2VLForConditionalGeneration with {n / 1e6:.2f}M parameters → {cfg['output_dir']}")
        return 0
    if cfg["audio"]:
        from lmforge.models.audio import build_tiny_audio_model, load_audio_model
        from lmforge.models.tokenizer import load_tokenizer

        sizes = {k: cfg[k] for k in ("hidden_size", "num_hidden_layers") if k in cfg.explicit}
        build_tiny_audio_model(
            cfg["output_dir"], load_tokenizer(cfg.get("tokenizer_path")), seed=cfg["seed"], **sizes
        )
        mark_finished(cfg["output_dir"], {"command": "init --audio"})
        n = count_parameters(load_audio_model(cfg["output_dir"]))
        print(f"Qwen2AudioForConditionalGeneration with {n / 1e6:.2f}M parameters → {cfg['output_dir']}")
        return 0
    tokenizer, model, _ = load_tokenizer_and_model(cfg)
    model.save_pretrained(cfg["output_dir"])
    tokenizer.save_pretrained(cfg["output_dir"])
    mark_finished(cfg["output_dir"], {"command": "init"})
    print(
        f"{type(model).__name__} with {count_parameters(model) / 1e6:.2f}M parameters → {cfg['output_dir']}"
    )
    return 0


def cmd_data_synth(argv: list[str]) -> int:
    from lmforge.commands import SynthArgs
    from lmforge.config.loader import resolve

    if _wants_help(argv):
        return _print_help("lmforge data synth", COMMANDS[("data", "synth")][0], [SynthArgs])
    cfg = resolve([SynthArgs], argv, max_positionals=0)
    from lmforge.data.synth import synth
    from lmforge.runs import mark_finished

    files = synth(cfg["output_dir"], seed=cfg["seed"], scale=cfg["scale"], lang=cfg["lang"])
    if cfg["audio_clips"] > 0:
        from lmforge.data.audio import synth_clips

        files.update(synth_clips(cfg["output_dir"], cfg["audio_clips"], seed=cfg["seed"]))
    if cfg["images"] > 0:
        from lmforge.data.synth_vision import synth_images

        files.update(synth_images(cfg["output_dir"], cfg["images"], seed=cfg["seed"]))
    mark_finished(cfg["output_dir"], {"command": "data synth", "files": files})
    for name, path in files.items():
        print(f"{name:<12} {path}")
    return 0


def cmd_data_check(argv: list[str]) -> int:
    from lmforge.commands import DataCheckArgs
    from lmforge.config.loader import resolve
    from lmforge.config.schema import DataArgs

    if _wants_help(argv):
        return _print_help("lmforge data check", COMMANDS[("data", "check")][0], [DataCheckArgs, DataArgs])
    cfg = resolve([DataCheckArgs, DataArgs], argv)
    from lmforge.data.check import check_dataset, format_report
    from lmforge.errors import LmforgeError
    from lmforge.models.tokenizer import load_tokenizer
    from lmforge.stages import get_stage

    if cfg.positionals and not cfg.get("dataset"):
        cfg.values["dataset"] = ",".join(cfg.positionals)
    if not cfg.get("dataset"):
        raise LmforgeError("data check: --dataset is required")
    kind = get_stage(cfg["stage"]).DATA_KIND
    keys = ("text_column", "system", "system_prompt", "user_prompt", "base_dir", "image_dir")
    opts = {k: cfg.get(k) for k in keys}
    from lmforge.data.chat_templates import apply_template

    report = check_dataset(
        cfg["dataset"],
        kind,
        tokenizer=apply_template(load_tokenizer(cfg.get("tokenizer_path")), cfg.get("template")),
        max_length=cfg["max_length"],
        fmt=cfg.get("format"),
        dataset_dir=cfg.get("dataset_dir"),
        mix_strategy=cfg["mix_strategy"],
        interleave_probs=cfg.get("interleave_probs"),
        **opts,
    )
    print(format_report(report))
    if not report["num_rows"]:  # nothing a stage could train on: the report above says why
        from lmforge.data.load import LoadStats, no_usable_rows

        stats = LoadStats(num_bad=report["num_bad"], bad_examples=report["bad_rows"])
        raise no_usable_rows(cfg["dataset"], kind, stats)
    if cfg.get("plot_path"):
        from lmforge.data.check import plot_histogram

        if report.get("token_lengths"):
            print(f"  histogram: {plot_histogram(report, cfg['plot_path'])}")
    return 1 if report.get("num_bad") else 0


def _convert_argv(argv: list[str]) -> tuple[str, list[str]]:
    """`data convert [STAGE] [CONFIG.yaml] [INPUT] --output DIR ...` → (stage, `train STAGE` flags).

    STAGE is a leading stage name or `--stage` (default sft); INPUT is `--dataset`; `--output` is
    `--tokenized_path` (mdl-toolkit's `convert-dataset INPUT --output DIR`)."""
    from lmforge.config.loader import collect_specs, is_config_file, split_argv
    from lmforge.errors import LmforgeError
    from lmforge.pipeline import GROUPS
    from lmforge.stages import STAGES, get_stage

    stage = None
    if argv and not argv[0].startswith("-") and argv[0].replace("_", "-") in STAGES:
        stage, argv = argv[0], argv[1:]
    for i, tok in enumerate(argv):
        if tok.startswith("--stage="):
            stage = tok.split("=", 1)[1]
        elif tok == "--stage" and i + 1 < len(argv):
            stage = argv[i + 1]
    specs = collect_specs([*GROUPS, get_stage(stage or "sft").Args], include_hf=True)
    specs["output"] = specs["tokenized_path"]
    positionals, pairs = split_argv(argv, specs)
    flags: list[str] = []
    for key, value in pairs:
        if key == "stage":
            continue
        key = "tokenized_path" if key == "output" else key
        key = "preprocessing_num_workers" if key == "num_workers" else key  # mdl-toolkit convert-dataset
        for v in value if isinstance(value, list) else [value]:
            flags.append(f"--{key}" if v is True else f"--{key}={v}")
    configs = [p for p in positionals if is_config_file(p, specs, inputs=True)]
    inputs = [p for p in positionals if p not in configs]
    if len(inputs) > 1:
        raise LmforgeError(f"data convert: give one INPUT (comma-separate to mix); got {' '.join(inputs)}")
    if inputs:
        flags.append(f"--dataset={inputs[0]}")
    return stage or "sft", [*configs, *flags]


def _convert_tokenizer(cfg):
    """(tokenizer training will use: --tokenizer_path, else the model's, else lmforge's own; the model
    folder when it is an audio LLM, else None)."""
    from lmforge.errors import LmforgeError
    from lmforge.models.load import load_tokenizer_for
    from lmforge.models.locate import resolve_model_path
    from lmforge.models.tokenizer import load_tokenizer

    if cfg.get("tokenizer_path"):
        return load_tokenizer(cfg["tokenizer_path"]), None
    if cfg.get("model_name_or_path"):
        try:
            path = resolve_model_path(
                cfg["model_name_or_path"],
                save_dir=cfg["save_dir"],
                hidden_size=cfg["hidden_size"],
                use_moe=cfg["use_moe"],
            )
        except LmforgeError:
            if "model_name_or_path" in cfg.explicit:
                raise
            logging.getLogger("lmforge").warning(
                "data convert: the stage's default model %r is not there; tokenising with lmforge's "
                "tokenizer (pass --model_name_or_path or --tokenizer_path to match your run)",
                cfg["model_name_or_path"],
            )
        else:
            from lmforge.models.audio import is_audio_model_dir

            if is_audio_model_dir(path):  # the processor's tokenizer, with the audio tokens
                return load_tokenizer_for(path), path
            return load_tokenizer_for(path), None
    return load_tokenizer(None), None


def cmd_data_convert(argv: list[str]) -> int:
    from lmforge.errors import LmforgeError

    if _wants_help(argv) and not (argv and not argv[0].startswith("-")):
        print(
            "usage: lmforge data convert [STAGE] [CONFIG.yaml] INPUT --output DIR [flags of `lmforge "
            "train STAGE`]\n\nCSV / JSONL / JSON / Parquet / Arrow → tokenised Arrow dataset with labels "
            "(STAGE or --stage, default sft).\n`lmforge train STAGE --dataset DIR` trains on it; "
            "`--tokenized_path DIR` next to the raw --dataset reuses it while it matches.\n"
            "`lmforge data convert STAGE --help` lists every flag."
        )
        return 0
    stage, flags = _convert_argv(argv)
    if _wants_help(argv):
        return cmd_train([stage, "--help"])
    from lmforge.data import convert
    from lmforge.pipeline import StageContext, prepare_datasets, resolve_train_config, stage_option_keys

    module, cfg = resolve_train_config(stage, flags)
    if not cfg.get("dataset"):
        raise LmforgeError("data convert: give the INPUT file (or --dataset)")
    out = cfg.get("tokenized_path")
    if not out:
        raise LmforgeError("data convert: --output DIR is required (where the tokenised dataset is written)")
    if cfg["streaming"]:
        raise LmforgeError("data convert: --streaming converts nothing; drop it (convert, then train on DIR)")
    if convert.is_converted(cfg["dataset"]):
        raise LmforgeError(f"data convert: {cfg['dataset']} is already converted; train on it directly")
    convert.check_output(out)
    ctx = StageContext(stage=stage, cfg=cfg, run_dir="")
    ctx.tokenizer, audio_path = _convert_tokenizer(cfg)
    if audio_path:
        from lmforge.models.audio import load_processor

        ctx.processor = load_processor(audio_path)
        ctx.tokenizer = ctx.processor.tokenizer
    from lmforge.data.chat_templates import apply_template

    apply_template(ctx.tokenizer, cfg.get("template"))
    key = convert.fingerprint(
        cfg, ctx.tokenizer, stage, module.DATA_KIND, stage_option_keys(module), processor=ctx.processor
    )["key"]
    reused = convert.matches(out, key)
    train, val = prepare_datasets(ctx, module)
    what = "up to date" if reused else "written"
    val_text = f", {len(val)} validation" if val is not None else ""
    print(
        f"{len(train)} training sequences{val_text} ({stage}, max_length {cfg['max_length']}) {what}: {out}"
    )
    return 0


def cmd_train(argv: list[str]) -> int:
    from lmforge.errors import LmforgeError

    stage = argv[0] if argv and not argv[0].startswith("-") else None
    if stage and stage.endswith((".yaml", ".yml", ".json")):  # LLaMA-Factory: `train cfg.yaml` with `stage:`
        from lmforge.config.loader import load_config_file
        from lmforge.pipeline import stage_name

        recorded = load_config_file(stage).get("stage")
        if not recorded:
            raise LmforgeError(
                f"train: name a stage first (`lmforge train sft {stage}`) or set `stage:` in {stage}"
            )
        argv = [stage_name(str(recorded)), *argv]
        stage = argv[0]
    if not stage:
        from lmforge.stages import STAGES

        if _wants_help(argv) or not argv:
            print(
                "usage: lmforge train STAGE [CONFIG.yaml] [--key value ...]\n\nstages: "
                + ", ".join(STAGES)
                + "\n\n`lmforge train STAGE --help` lists every flag with its default."
            )
            return 0
        raise LmforgeError("train: name a stage first, e.g. `lmforge train sft --dataset data.jsonl`")
    if _wants_help(argv):
        from lmforge.config.minimind import stage_alias
        from lmforge.pipeline import GROUPS, stage_defaults
        from lmforge.stages import get_stage

        real, alias_defaults = stage_alias(stage)  # `train lora` is sft with train_lora.py's defaults
        module = get_stage(real)
        summary = (module.__doc__ or "").strip()
        return _print_help(
            f"lmforge train {stage}",
            summary,
            [*GROUPS, module.Args],
            include_hf=True,
            defaults={**stage_defaults(module), **alias_defaults},
        )
    from lmforge.launch import relaunch, wants_launch

    if wants_launch():  # NPROC_PER_NODE / NNODES: re-run under torchrun (lmforge/launch.py)
        return relaunch(["train", *argv])
    from lmforge.pipeline import run_train

    run_dir = run_train(stage, argv[1:])
    print(f"run folder: {run_dir}")
    return 0


def cmd_chat(argv: list[str]) -> int:
    from lmforge.config.loader import resolve
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.chat import ChatArgs

    if _wants_help(argv):
        return _print_help("lmforge chat", COMMANDS[("chat",)][0], [ChatArgs, GenerationArgs])
    from lmforge.config.minimind import chat_defaults

    cfg = resolve([ChatArgs, GenerationArgs], argv, max_positionals=0, defaults=chat_defaults(argv))
    from lmforge.infer.chat import run_chat

    return run_chat(cfg.group(ChatArgs), cfg.group(GenerationArgs)) or 0


def cmd_infer(argv: list[str]) -> int:
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.batch import InferArgs

    if _wants_help(argv):
        return _print_help("lmforge infer", COMMANDS[("infer",)][0], [InferArgs, GenerationArgs])
    from lmforge.infer.batch import resolve_infer_config, run_infer

    out = run_infer(*resolve_infer_config(argv))
    print(f"predictions written to {out}")
    return 0


def cmd_webui(argv: list[str]) -> int:
    from lmforge.webui.args import WebUIArgs

    if _wants_help(argv):
        return _print_help("lmforge webui", COMMANDS[("webui",)][0], [WebUIArgs])
    from lmforge.config.loader import resolve
    from lmforge.webui.app import launch

    cfg = resolve([WebUIArgs], argv, max_positionals=0)
    return launch(cfg.group(WebUIArgs))


def cmd_serve(argv: list[str]) -> int:
    from lmforge.config.loader import resolve
    from lmforge.infer.args import GenerationArgs
    from lmforge.serve.args import ServeArgs

    if _wants_help(argv):
        return _print_help("lmforge serve MODEL_OR_RUN", COMMANDS[("serve",)][0], [ServeArgs, GenerationArgs])
    cfg = resolve([ServeArgs, GenerationArgs], argv)
    from lmforge.errors import LmforgeError
    from lmforge.serve.server import run_serve

    args = cfg.group(ServeArgs)
    # vLLM's `--lora-modules a=PATH b=PATH`: the items after the first land among the positionals
    positionals = [p for p in cfg.positionals if "=" not in p]
    extra = [p for p in cfg.positionals if "=" in p]
    if extra:
        if not args.lora_modules or args.lora_modules.startswith(("{", "[")):
            raise LmforgeError(
                f"serve: unexpected argument {extra[0]!r} (adapters go in --adapters name=path,...)"
            )
        args.lora_modules = ",".join([args.lora_modules, *extra])
    if len(positionals) > 1 or (positionals and args.model):
        raise LmforgeError("serve: give one model (positional or --model)")
    args.model = args.model or (positionals[0] if positionals else None)
    return run_serve(args, cfg.group(GenerationArgs))


def cmd_merge(argv: list[str]) -> int:
    from lmforge.tuners.merge import MergeArgs

    if _wants_help(argv):
        return _print_help("lmforge merge ADAPTER", COMMANDS[("merge",)][0], [MergeArgs])
    from lmforge.config.loader import resolve
    from lmforge.errors import LmforgeError
    from lmforge.tuners.merge import merge

    cfg = resolve([MergeArgs], argv)
    args = cfg.group(MergeArgs)
    if len(cfg.positionals) > 1 or (cfg.positionals and args.adapter):
        raise LmforgeError("merge: give one adapter (positional or --adapter)")
    args.adapter = args.adapter or (cfg.positionals[0] if cfg.positionals else None)
    out, n_params = merge(args)
    print(f"merged model ({n_params / 1e6:.2f}M parameters) written to {out}")
    return 0


EVAL_DEFAULTS = {"do_sample": False, "temperature": 0.0, "max_new_tokens": 256}  # greedy, reproducible


def cmd_eval(argv: list[str]) -> int:
    from lmforge.evaluate.args import EvalArgs
    from lmforge.infer.args import GenerationArgs

    groups = [EvalArgs, GenerationArgs]
    if _wants_help(argv):
        return _print_help(
            "lmforge eval MODEL_OR_RUN", COMMANDS[("eval",)][0], groups, defaults=EVAL_DEFAULTS
        )
    from lmforge.config.loader import resolve
    from lmforge.errors import LmforgeError
    from lmforge.evaluate.run import format_table, run_eval

    cfg = resolve(groups, argv, defaults=EVAL_DEFAULTS)
    args = cfg.group(EvalArgs)
    if len(cfg.positionals) > 1 or (cfg.positionals and args.model):
        raise LmforgeError("eval: give one model (positional or --model)")
    args.model = args.model or (cfg.positionals[0] if cfg.positionals else None)
    if args.task not in ("ppl", "mc", "gen"):  # LLaMA-Factory's task names
        from lmforge.evaluate.run import llamafactory_task

        llamafactory_task(args, cfg.explicit)
    result, out = run_eval(args, cfg.group(GenerationArgs))
    print(format_table(result))
    print(f"results written to {out / 'results.json'}")
    return 0


def cmd_export(argv: list[str]) -> int:
    from lmforge.export.args import ExportArgs

    if _wants_help(argv):
        return _print_help("lmforge export RUN_OR_MODEL", COMMANDS[("export",)][0], [ExportArgs])
    from lmforge.config.loader import resolve
    from lmforge.errors import LmforgeError
    from lmforge.export.run import export

    cfg = resolve([ExportArgs], argv)
    args = cfg.group(ExportArgs)
    if args.adapter and not args.model and not cfg.positionals:  # swift's --ckpt_dir: a run's adapter
        args.model, args.adapter = args.adapter, None
    if len(cfg.positionals) > 1 or (cfg.positionals and args.model):
        raise LmforgeError("export: give one model (positional or --model)")
    args.model = args.model or (cfg.positionals[0] if cfg.positionals else None)
    if "quantization_bit" in cfg.explicit and "format" not in cfg.explicit:
        args.format = "gptq"  # LLaMA-Factory's export_quantization_bit: a GPTQ export
    out, what, url = export(args)
    print(f"{what} written to {out}" + (f"; pushed to {url}" if url else ""))
    return 0


def _generate(words: tuple[str, str], argv: list[str]) -> int:
    """`generate distill` / `generate qa`: flags → lmforge.teacher.generate; exit 1 if rows failed."""
    from lmforge.teacher.args import (
        QA_DEFAULTS,
        DistillArgs,
        GenerateArgs,
        QAArgs,
        TeacherArgs,
        normalize_argv,
    )

    own, defaults = (DistillArgs, None) if words[1] == "distill" else (QAArgs, QA_DEFAULTS)
    groups = [own, GenerateArgs, TeacherArgs]
    if _wants_help(argv):
        return _print_help(f"lmforge {' '.join(words)}", COMMANDS[words][0], groups, defaults=defaults)
    from lmforge.config.loader import resolve
    from lmforge.errors import LmforgeError
    from lmforge.teacher import generate

    cfg = resolve(groups, normalize_argv(argv), defaults=defaults, max_positionals=0)
    from lmforge.config.minimind import generate_rate_default

    generate_rate_default(words[1], cfg)
    if cfg.positionals:
        raise LmforgeError(f"{' '.join(words)}: unexpected argument {cfg.positionals[0]!r}")
    run = generate.run_distill if words[1] == "distill" else generate.run_qa
    report = run(cfg.group(TeacherArgs), cfg.group(GenerateArgs), cfg.group(own))
    print(report.summary())
    if report.failed:
        first_id, first_error = report.failed[0]
        print(
            f"lmforge: {len(report.failed)} rows failed (first: id {first_id!r}: "
            f"{first_error}); listed in {report.failed_file}; run the same command again to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_generate_distill(argv: list[str]) -> int:
    return _generate(("generate", "distill"), argv)


def cmd_generate_qa(argv: list[str]) -> int:
    return _generate(("generate", "qa"), argv)


def cmd_import_minimind(argv: list[str]) -> int:
    from lmforge.models.minimind_import import ImportArgs

    if _wants_help(argv):
        return _print_help(
            "lmforge import minimind PATH.pth", COMMANDS[("import", "minimind")][0], [ImportArgs]
        )
    from lmforge.config.loader import resolve
    from lmforge.errors import LmforgeError
    from lmforge.models.minimind_import import import_minimind

    cfg = resolve([ImportArgs], argv)
    args = cfg.group(ImportArgs)
    if len(cfg.positionals) > 1 or (cfg.positionals and args.checkpoint):
        raise LmforgeError("import minimind: give one checkpoint (positional or --checkpoint)")
    args.checkpoint = args.checkpoint or (cfg.positionals[0] if cfg.positionals else None)
    out, _, layout = import_minimind(args)
    print(f"{layout.family} checkpoint imported as {out}")
    return 0


def cmd_pipeline(argv: list[str]) -> int:
    from lmforge.commands import PipelineArgs
    from lmforge.config.loader import resolve

    if _wants_help(argv):
        return _print_help("lmforge pipeline FILE.yaml", COMMANDS[("pipeline",)][0], [PipelineArgs])
    cfg = resolve([PipelineArgs], argv, yaml_positional=False)
    from lmforge.errors import LmforgeError
    from lmforge.pipeline_file import run_pipeline_file

    if len(cfg.positionals) != 1:
        raise LmforgeError("pipeline: give exactly one pipeline YAML file")
    return run_pipeline_file(cfg.positionals[0], dry_run=cfg["dry_run"])


def cmd_env(argv: list[str]) -> int:
    from lmforge.errors import LmforgeError

    if _wants_help(argv):
        print(f"usage: lmforge env\n\n{COMMANDS[('env',)][0]}")
        return 0
    if argv:
        raise LmforgeError(f"env: unexpected argument {argv[0]!r} (it takes none)")
    from lmforge.env_info import env_lines

    print("\n".join(env_lines()))
    return 0


# --- entry point -------------------------------------------------------------------------------
def find_command(argv: list[str]) -> tuple[tuple[str, ...] | None, list[str]]:
    for n in (2, 1):
        words = tuple(argv[:n])
        if words in COMMANDS:
            return words, argv[n:]
    return None, argv


def dispatch(argv: list[str]) -> int:
    from lmforge.swift import translate

    words, rest = find_command(translate(argv))  # ms-swift's spellings (lmforge/swift.py)
    if words is None:
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(_usage())
            return 0
        if argv[0] in ("--version", "-V"):
            from lmforge import __version__

            print(f"lmforge {__version__}")
            return 0
        groups = sorted({w[0] for w in COMMANDS if len(w) == 2 and w[0] == argv[0]})
        if groups:
            subs = [w[1] for w in COMMANDS if w[0] == argv[0]]
            print(f"usage: lmforge {argv[0]} {{{','.join(subs)}}} ...", file=sys.stderr)
            return 2
        import difflib

        names = [" ".join(w) for w in COMMANDS]
        near = difflib.get_close_matches(argv[0], [w[0] for w in COMMANDS], n=1)
        hint = f" Did you mean `lmforge {near[0]}`?" if near else ""
        print(f"lmforge: unknown command {argv[0]!r}.{hint} Commands: {', '.join(names)}", file=sys.stderr)
        return 2
    handler: Callable[[list[str]], int] = globals()[COMMANDS[words][1]]
    return handler(rest)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of the record (not the one at set-up), so a
    replaced stderr (a test's capture, a closed pipe's replacement) never gets a stale stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging() -> None:
    level = os.environ.get("LMFORGE_LOG_LEVEL", "INFO").upper()
    # Only lmforge's own logger prints "[lmforge] ...": the root logger is left alone, so other
    # packages' warnings keep their own look (Python's last-resort handler prints them plainly).
    logger = logging.getLogger("lmforge")
    logger.setLevel(level)
    if not any(getattr(h, "_lmforge", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[lmforge] %(message)s"))
        handler._lmforge = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    # bitsandbytes (pulled in by peft when installed) warns on CPU about 4-bit kernels nobody uses here
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # peft still asks transformers for the renamed `is_gradient_checkpointing` (a FutureWarning per run)
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # MKL (PyTorch's CPU BLAS) picks kernels by buffer alignment unless told to be reproducible: two
    # runs then differ in the last bit now and then, and "resume gives bitwise the same losses" breaks.
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # Per-file "Loading weights" / "Writing model shards" bars are noise; the Trainer's own progress
    # bar (tqdm directly) and datasets' tokenising bars stay, unless the log level is WARNING or above.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if logging.getLevelName(level) >= logging.WARNING:
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    from lmforge.errors import LmforgeError

    try:
        code = dispatch(argv)
    except LmforgeError as e:
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lmforge ... --help | head`: the reader left; not an error
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
