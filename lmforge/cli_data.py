"""Command handlers that build inputs: `tokenizer train`, `init`, `data synth`, `data check`,
`data convert`. Each `cmd_*` takes the command's argv; `do_*` takes its resolved config (the
pipeline runner calls those)."""

from __future__ import annotations

import logging

from lmforge.cli_common import COMMANDS, print_help, wants_help


def cmd_tokenizer_train(argv: list[str]) -> int:
    from lmforge.commands import TokenizerTrainArgs
    from lmforge.config.loader import resolve

    if wants_help(argv):
        return print_help(
            "lmforge tokenizer train", COMMANDS[("tokenizer", "train")][0], [TokenizerTrainArgs]
        )
    cfg = resolve([TokenizerTrainArgs], argv, max_positionals=0)
    return do_tokenizer_train(cfg)


def do_tokenizer_train(cfg) -> int:
    """`tokenizer train` on a resolved config."""
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

    if wants_help(argv):
        return print_help("lmforge init", COMMANDS[("init",)][0], [InitArgs, ModelArgs])
    cfg = resolve([InitArgs, ModelArgs], argv, max_positionals=0)
    return do_init(cfg)


def do_init(cfg) -> int:
    """`init` on a resolved config."""
    from lmforge.models.presets import count_parameters
    from lmforge.pipeline import load_tokenizer_and_model
    from lmforge.runs import mark_finished

    cfg.values.setdefault("save_dir", "out")
    cfg.values["seed"] = cfg["seed"]
    cfg.values["model_name_or_path"] = None
    if cfg["audio"] and cfg["vision"]:
        from lmforge.errors import LmforgeError

        raise LmforgeError("init: --audio and --vision build different models; give one of them")
    for kind in ("vision", "audio"):
        if cfg[kind]:
            return _init_media(cfg, kind)
    tokenizer, model, _ = load_tokenizer_and_model(cfg)
    model.save_pretrained(cfg["output_dir"])
    tokenizer.save_pretrained(cfg["output_dir"])
    mark_finished(cfg["output_dir"], {"command": "init"})
    print(
        f"{type(model).__name__} with {count_parameters(model) / 1e6:.2f}M parameters → {cfg['output_dir']}"
    )
    return 0


def _init_media(cfg, kind: str) -> int:
    """`init --vision` / `init --audio`: the tiny Qwen2-VL / Qwen2-Audio layout with lmforge's tokenizer."""
    from lmforge.models import audio, vision
    from lmforge.models.presets import count_parameters
    from lmforge.models.tokenizer import load_tokenizer
    from lmforge.runs import mark_finished

    build, load, name = {
        "vision": (
            vision.build_tiny_vision_model,
            vision.load_vision_model,
            "Qwen2VLForConditionalGeneration",
        ),
        "audio": (audio.build_tiny_audio_model, audio.load_audio_model, "Qwen2AudioForConditionalGeneration"),
    }[kind]
    sizes = {k: cfg[k] for k in ("hidden_size", "num_hidden_layers") if k in cfg.explicit}
    build(cfg["output_dir"], load_tokenizer(cfg.get("tokenizer_path")), seed=cfg["seed"], **sizes)
    mark_finished(cfg["output_dir"], {"command": f"init --{kind}"})
    n = count_parameters(load(cfg["output_dir"]))
    print(f"{name} with {n / 1e6:.2f}M parameters → {cfg['output_dir']}")
    return 0


def cmd_data_synth(argv: list[str]) -> int:
    from lmforge.commands import SynthArgs
    from lmforge.config.loader import resolve

    if wants_help(argv):
        return print_help("lmforge data synth", COMMANDS[("data", "synth")][0], [SynthArgs])
    cfg = resolve([SynthArgs], argv, max_positionals=0)
    return do_data_synth(cfg)


def do_data_synth(cfg) -> int:
    """`data synth` on a resolved config."""
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

    if wants_help(argv):
        return print_help("lmforge data check", COMMANDS[("data", "check")][0], [DataCheckArgs, DataArgs])
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

    if wants_help(argv) and not (argv and not argv[0].startswith("-")):
        print(
            "usage: lmforge data convert [STAGE] [CONFIG.yaml] INPUT --output DIR [flags of `lmforge "
            "train STAGE`]\n\nCSV / JSONL / JSON / Parquet / Arrow → tokenised Arrow dataset with labels "
            "(STAGE or --stage, default sft).\n`lmforge train STAGE --dataset DIR` trains on it; "
            "`--tokenized_path DIR` next to the raw --dataset reuses it while it matches.\n"
            "`lmforge data convert STAGE --help` lists every flag."
        )
        return 0
    stage, flags = _convert_argv(argv)
    if wants_help(argv):
        from lmforge.cli_run import cmd_train

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
