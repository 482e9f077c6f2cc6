"""Command handlers that use a model: `train`, `chat`, `infer`, `serve`, `webui`, `merge`, `eval`,
`export`, `generate`, `import minimind`, and `env`. Each `cmd_*` takes the command's argv; `do_*`
takes its resolved config (the pipeline runner calls those)."""

from __future__ import annotations

import sys

from lmforge.cli_common import COMMANDS, print_help, wants_help


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

        if wants_help(argv) or not argv:
            print(
                "usage: lmforge train STAGE [CONFIG.yaml] [--key value ...]\n\nstages: "
                + ", ".join(STAGES)
                + "\n\n`lmforge train STAGE --help` lists every flag with its default."
            )
            return 0
        raise LmforgeError("train: name a stage first, e.g. `lmforge train sft --dataset data.jsonl`")
    if wants_help(argv):
        from lmforge.config.minimind import stage_alias
        from lmforge.pipeline import GROUPS, stage_defaults
        from lmforge.stages import get_stage

        real, alias_defaults = stage_alias(stage)  # `train lora` is sft with train_lora.py's defaults
        module = get_stage(real)
        summary = (module.__doc__ or "").strip()
        return print_help(
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

    if wants_help(argv):
        return print_help("lmforge chat", COMMANDS[("chat",)][0], [ChatArgs, GenerationArgs])
    from lmforge.config.minimind import chat_defaults

    cfg = resolve([ChatArgs, GenerationArgs], argv, max_positionals=0, defaults=chat_defaults(argv))
    return do_chat(cfg)


def do_chat(cfg) -> int:
    """`chat` on a resolved config."""
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.chat import ChatArgs, run_chat

    return run_chat(cfg.group(ChatArgs), cfg.group(GenerationArgs)) or 0


def cmd_infer(argv: list[str]) -> int:
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.batch import InferArgs

    if wants_help(argv):
        return print_help("lmforge infer", COMMANDS[("infer",)][0], [InferArgs, GenerationArgs])
    from lmforge.infer.batch import resolve_infer_config

    return do_infer(*resolve_infer_config(argv))


def do_infer(args, gen) -> int:
    """`infer` on its resolved flag groups."""
    from lmforge.infer.batch import run_infer

    print(f"predictions written to {run_infer(args, gen)}")
    return 0


def cmd_webui(argv: list[str]) -> int:
    from lmforge.webui.args import WebUIArgs

    if wants_help(argv):
        return print_help("lmforge webui", COMMANDS[("webui",)][0], [WebUIArgs])
    from lmforge.config.loader import resolve
    from lmforge.webui.app import launch

    cfg = resolve([WebUIArgs], argv, max_positionals=0)
    return launch(cfg.group(WebUIArgs))


def cmd_serve(argv: list[str]) -> int:
    from lmforge.config.loader import resolve
    from lmforge.infer.args import GenerationArgs
    from lmforge.serve.args import ServeArgs

    if wants_help(argv):
        return print_help("lmforge serve MODEL_OR_RUN", COMMANDS[("serve",)][0], [ServeArgs, GenerationArgs])
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

    if wants_help(argv):
        return print_help("lmforge merge ADAPTER", COMMANDS[("merge",)][0], [MergeArgs])
    from lmforge.config.loader import resolve

    cfg = resolve([MergeArgs], argv)
    return do_merge(cfg)


def do_merge(cfg) -> int:
    """`merge` on a resolved config (the adapter positional or --adapter)."""
    from lmforge.errors import LmforgeError
    from lmforge.tuners.merge import MergeArgs, merge

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
    if wants_help(argv):
        return print_help("lmforge eval MODEL_OR_RUN", COMMANDS[("eval",)][0], groups, defaults=EVAL_DEFAULTS)
    from lmforge.config.loader import resolve

    cfg = resolve(groups, argv, defaults=EVAL_DEFAULTS)
    return do_eval(cfg)


def do_eval(cfg) -> int:
    """`eval` on a resolved config (the model positional or --model)."""
    from lmforge.errors import LmforgeError
    from lmforge.evaluate.args import EvalArgs
    from lmforge.evaluate.run import format_table, run_eval
    from lmforge.infer.args import GenerationArgs

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

    if wants_help(argv):
        return print_help("lmforge export RUN_OR_MODEL", COMMANDS[("export",)][0], [ExportArgs])
    from lmforge.config.loader import resolve

    cfg = resolve([ExportArgs], argv)
    return do_export(cfg)


def do_export(cfg) -> int:
    """`export` on a resolved config (the model positional or --model)."""
    from lmforge.errors import LmforgeError
    from lmforge.export.args import ExportArgs
    from lmforge.export.run import export

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
    if wants_help(argv):
        return print_help(f"lmforge {' '.join(words)}", COMMANDS[words][0], groups, defaults=defaults)
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

    if wants_help(argv):
        return print_help(
            "lmforge import minimind PATH.pth", COMMANDS[("import", "minimind")][0], [ImportArgs]
        )
    from lmforge.config.loader import resolve

    cfg = resolve([ImportArgs], argv)
    return do_import_minimind(cfg)


def do_import_minimind(cfg) -> int:
    """`import minimind` on a resolved config."""
    from lmforge.errors import LmforgeError
    from lmforge.models.minimind_import import ImportArgs, import_minimind

    args = cfg.group(ImportArgs)
    if len(cfg.positionals) > 1 or (cfg.positionals and args.checkpoint):
        raise LmforgeError("import minimind: give one checkpoint (positional or --checkpoint)")
    args.checkpoint = args.checkpoint or (cfg.positionals[0] if cfg.positionals else None)
    out, _, layout = import_minimind(args)
    print(f"{layout.family} checkpoint imported as {out}")
    return 0


def cmd_env(argv: list[str]) -> int:
    from lmforge.errors import LmforgeError

    if wants_help(argv):
        print(f"usage: lmforge env\n\n{COMMANDS[('env',)][0]}")
        return 0
    if argv:
        raise LmforgeError(f"env: unexpected argument {argv[0]!r} (it takes none)")
    from lmforge.env_info import env_lines

    print("\n".join(env_lines()))
    return 0
