"""One path for every training stage: resolve config → tokenizer → model → data → stage trainer
→ train → save. A stage module supplies only what differs (lmforge/stages/)."""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge import faults, runtime
from lmforge.config.loader import Config, resolve
from lmforge.config.schema import DataArgs, ModelArgs, RunArgs
from lmforge.errors import LmforgeError
from lmforge.models.options import ModelOptionArgs, apply_model_options
from lmforge.runs import (
    default_output_dir,
    is_finished,
    latest_checkpoint,
    latest_run_dir,
    mark_finished,
    plot_metrics,
    write_args,
    write_model_card,
)
from lmforge.tuners.args import TunerArgs

log = logging.getLogger("lmforge")
GROUPS = [ModelArgs, DataArgs, RunArgs, TunerArgs, ModelOptionArgs]
ADAPTER_LEARNING_RATE = 1e-4
PRESET_SIZES = (
    "hidden_size",
    "num_hidden_layers",
)  # size flags with defaults that a --preset replaces  # MiniMind train_lora, ms-swift and LLaMA-Factory LoRA examples


@dataclass
class StageContext:
    """Everything a stage needs; filled in pipeline order."""

    stage: str
    cfg: Config
    run_dir: str
    tokenizer: Any = None
    processor: Any = None  # audio / vision LLMs: the folder's processor (feature extractor or image
    # processor + tokenizer)
    model: Any = None
    tuned: Any = None  # lmforge.tuners.apply.Tuned
    train_dataset: Any = None
    eval_dataset: Any = None
    training_args: Any = None
    stats: dict[str, Any] = field(default_factory=dict)


def stage_defaults(module) -> dict[str, Any]:
    from lmforge.training.build import TRAINER_DEFAULTS

    return {**TRAINER_DEFAULTS, **module.DEFAULTS}


LLAMAFACTORY_STAGES = {"pt": "pretrain"}  # its other stage names (sft, rm, dpo, kto, ppo) are ours too
# stages that train a vision LLM on image rows (the rest refuse one in one line naming the stage)
VISION_STAGES = ("sft", "dpo", "orpo", "simpo", "cpo")


def stage_name(name: str) -> str:
    """A stage as lmforge names it (LLaMA-Factory's `stage: pt` is `pretrain`)."""
    return LLAMAFACTORY_STAGES.get(name, name).replace("_", "-")


def resolve_train_config(
    stage: str, argv: list[str], values: dict[str, Any] | None = None, values_from: str = "arguments"
) -> tuple[Any, Config]:
    from lmforge.config.minimind import apply_minimind_defaults, stage_alias
    from lmforge.stages import get_stage

    stage, alias_defaults = stage_alias(stage)  # MiniMind's `train lora`, `train distillation`
    module = get_stage(stage)
    defaults = {**stage_defaults(module), **alias_defaults}
    cfg = resolve(
        [*GROUPS, module.Args],
        argv,
        include_hf=True,
        defaults=defaults,
        max_positionals=0,
        values=values,
        values_from=values_from,
    )
    recorded = cfg.get("stage")
    if recorded and stage_name(recorded) != stage.replace("_", "-"):
        raise LmforgeError(f"config says stage {recorded!r} but the command runs {stage!r}")
    cfg.values["stage"] = stage
    apply_minimind_defaults(stage, cfg, argv)
    from lmforge.training.checks import scheduler_kwargs
    from lmforge.tuners.apply import is_peft

    if is_peft(cfg) and "learning_rate" not in cfg.explicit:
        cfg.values["learning_rate"] = ADAPTER_LEARNING_RATE
        cfg.layered.add("learning_rate")
    if stage == "sft":  # audio LLMs train with mdl-toolkit's defaults (training/audio.py)
        from lmforge.training.audio import apply_audio_defaults

        apply_audio_defaults(cfg)
    scheduler_kwargs(cfg)
    return module, cfg


def resolve_run_dir(stage: str, cfg: Config) -> tuple[str, str | None]:
    """The run folder and the checkpoint to resume from (None: start fresh)."""
    from lmforge.models.locate import minimind_weight_dir

    resume = cfg.get("resume_from_checkpoint")
    if cfg.get("output_dir"):
        run_dir = cfg["output_dir"]
    elif cfg.get("lora_name"):  # MiniMind train_lora: save_dir/lora/NAME_<hidden>
        run_dir = str(
            minimind_weight_dir(
                Path(cfg["save_dir"], "lora"), cfg["lora_name"], cfg["hidden_size"], cfg["use_moe"]
            )
        )
    elif cfg.get("save_weight"):
        run_dir = str(
            minimind_weight_dir(cfg["save_dir"], cfg["save_weight"], cfg["hidden_size"], cfg["use_moe"])
        )
    elif resume == "latest":
        run_dir = latest_run_dir(cfg["save_dir"], stage) or default_output_dir(stage, cfg["save_dir"])
    else:
        run_dir = default_output_dir(stage, cfg["save_dir"])
    ckpt = None
    if resume == "latest":
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            log.info("no checkpoint in %s yet: starting from the beginning", run_dir)
    elif resume:
        if not Path(resume, "trainer_state.json").is_file():
            raise LmforgeError(f"--resume_from_checkpoint {resume}: not a complete checkpoint folder")
        ckpt = resume
    return run_dir, ckpt


def load_tokenizer_and_model(cfg: Config, loader=None):
    """The tokenizer and the starting model (`loader(cfg, path)` replaces the causal-LM load, e.g. the
    reward model's sequence-classification head), or a fresh model from the size flags."""
    from lmforge.models.load import load_model, load_tokenizer_for
    from lmforge.models.locate import check_sizes, resolve_model_path
    from lmforge.models.scratch import init_model
    from lmforge.models.tokenizer import load_tokenizer

    name = cfg.get("model_name_or_path")
    if name:
        path = resolve_model_path(
            name, save_dir=cfg["save_dir"], hidden_size=cfg["hidden_size"], use_moe=cfg["use_moe"]
        )
        check_sizes(path, {k: cfg[k] for k in PRESET_SIZES if k in cfg.explicit}, flags=_size_flags(cfg))
        tokenizer = (
            load_tokenizer(cfg["tokenizer_path"]) if cfg.get("tokenizer_path") else load_tokenizer_for(path)
        )
        from lmforge.tuners.apply import quantization_config

        if loader is not None:
            return tokenizer, loader(cfg, path), path
        from lmforge.models.audio import is_audio_model_dir, load_audio_model

        if is_audio_model_dir(path):
            if cfg.get("quantization_bit"):
                raise LmforgeError("--quantization_bit is not supported for audio models; use --tuner lora")
            model = load_audio_model(path, attn_implementation=cfg.get("attn_implementation"))
            return tokenizer, model, path
        from lmforge.models.vision import is_vision_model_dir, load_vision_model

        if is_vision_model_dir(path):
            if cfg.get("quantization_bit"):
                raise LmforgeError("--quantization_bit is not supported for vision models; use --tuner lora")
            model = load_vision_model(path, attn_implementation=cfg.get("attn_implementation"))
            return tokenizer, model, path
        model = load_model(
            path,
            attn_implementation=cfg.get("attn_implementation"),
            trust_remote_code=cfg["trust_remote_code"],
            quantization_config=quantization_config(cfg),
        )
        return tokenizer, model, path
    if loader is not None:
        raise LmforgeError(
            f"train {cfg['stage']}: needs a starting model: pass --model_name_or_path (or --from_weight)"
        )
    tokenizer = load_tokenizer(cfg.get("tokenizer_path"))
    sizes = {
        k: cfg.get(k)
        for k in (
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
            "max_position_embeddings",
            "rope_theta",
            "num_experts",
            "num_experts_per_tok",
            "router_aux_loss_coef",
        )
    }
    preset = cfg.get("preset")
    for k in PRESET_SIZES:
        if not preset or k in cfg.explicit:
            sizes[k] = cfg[k]
    model = init_model(
        tokenizer,
        preset=preset,
        seed=cfg["seed"],
        arch=cfg.get("arch"),
        use_moe=cfg["use_moe"],
        rope_scaling=cfg.get("rope_scaling"),
        rope_factor=cfg.get("rope_factor"),
        attn_implementation=cfg.get("attn_implementation") or "sdpa",
        **sizes,
    )
    return tokenizer, model, None


def _size_flags(cfg: Config) -> dict[str, str]:
    """How the user spelled the size flags (MiniMind's distillation: --student_*)."""
    if cfg["stage"] == "distill":
        return {"hidden_size": "student_hidden_size", "num_hidden_layers": "student_num_layers"}
    return {}


def load_data(ctx: StageContext, kind: str):
    from lmforge.data.load import load_rows, split_val

    cfg = ctx.cfg
    if not cfg.get("dataset"):
        raise LmforgeError(f"train {ctx.stage}: --dataset (or --data_path) is required")
    opts = _load_options(cfg)
    if cfg["streaming"]:
        return _load_streaming(ctx, kind, opts)
    rows, stats = load_rows(cfg["dataset"], kind, **opts)
    ctx.stats["rows"] = len(rows)
    if getattr(stats, "num_bad", 0):
        ctx.stats["bad_rows_skipped"] = stats.num_bad
        log.warning("skipped %d bad rows (first: %s)", stats.num_bad, (stats.bad_examples or [""])[0])
    if cfg.get("max_samples"):
        rows = rows.select(range(min(cfg["max_samples"], len(rows))))
    val = None
    if cfg.get("val_dataset"):
        val, _ = load_rows(cfg["val_dataset"], kind, **opts)
    elif cfg.get("val_size"):
        rows, val = split_val(rows, cfg["val_size"], cfg["seed"])
    return rows, val


def stage_option_keys(module) -> tuple[str, ...]:
    """The stage's own flags that may change its features (e.g. distill-reason's marker_weight): all
    of them, or the ones the stage names in `FEATURE_KEYS` (distill-api leaves out its API key)."""
    from dataclasses import fields

    keys = getattr(module, "FEATURE_KEYS", None)
    return tuple(keys) if keys is not None else tuple(f.name for f in fields(module.Args))


def public_values(cfg: Config, module) -> dict[str, Any]:
    """The config to write into the run folder: without the stage's secret flags (API keys)."""
    from dataclasses import fields

    secret = {f.name for f in fields(module.Args) if f.metadata.get("secret")}
    if cfg.get("preset"):  # the preset decides the sizes nobody typed; their field defaults would win
        secret |= {k for k in PRESET_SIZES if k not in cfg.explicit}
    return {k: v for k, v in cfg.to_yaml_dict().items() if k not in secret}


def _prepare(ctx: StageContext, module, rows):
    """`module.prepare` with the stage's own on-disk cache off: `prepare_datasets` owns caching."""
    if rows is None:
        return None
    _check_image_rows(ctx, rows)
    saved = ctx.cfg.values.get("tokenized_path")
    ctx.cfg.values["tokenized_path"] = None
    try:
        return module.prepare(ctx, rows)
    finally:
        ctx.cfg.values["tokenized_path"] = saved


def _check_image_rows(ctx: StageContext, rows) -> None:
    """Rows with images need a vision LLM: a text model would read their `<image>` as plain text."""
    if getattr(ctx.processor, "image_processor", None) is not None or "images" not in (
        rows.column_names or ()
    ):
        return
    if hasattr(rows, "__len__") and any(rows["images"]):
        cfg = ctx.cfg
        raise LmforgeError(
            f"train {ctx.stage}: {cfg.get('dataset')} has rows with images but {cfg['model_name_or_path']} "
            "is a text model (train a vision LLM on them: docs/vision-training.md)"
        )


def prepare_datasets(ctx: StageContext, module):
    """(train, eval) features: from a converted `--dataset` folder, from a matching
    `--tokenized_path` cache, or by loading and tokenising (and then caching) the raw data."""
    from lmforge.data import convert

    cfg = ctx.cfg
    if convert.is_converted(cfg.get("dataset")):
        return _from_converted(ctx, module)
    path = cfg.get("tokenized_path")
    if not path or cfg["streaming"]:
        rows, val_rows = load_data(ctx, module.DATA_KIND)
        return _prepare(ctx, module, rows), _prepare(ctx, module, val_rows)
    meta = convert.fingerprint(
        cfg, ctx.tokenizer, ctx.stage, module.DATA_KIND, stage_option_keys(module), processor=ctx.processor
    )
    if convert.matches(path, meta["key"]) and not cfg["overwrite_cache"]:
        train, val, record = convert.load_converted(path)
        ctx.stats["rows"] = record.get("num_rows", len(train))
        log.info("tokenised data: reusing %s (fingerprint matches)", path)
        return train, val
    if convert.is_converted(path):
        log.info("tokenised data: %s was built with other data, tokenizer or options; rebuilding", path)
    rows, val_rows = load_data(ctx, module.DATA_KIND)
    train, val = _prepare(ctx, module, rows), _prepare(ctx, module, val_rows)
    convert.save_converted(path, train, val, dict(meta, num_rows=ctx.stats.get("rows")))
    train, val, _ = convert.load_converted(path)
    return train, val


def _from_converted(ctx: StageContext, module):
    """`--dataset DIR` where DIR came from `lmforge data convert`: its features as they are."""
    from lmforge.data import convert
    from lmforge.data.load import split_val

    cfg, path = ctx.cfg, ctx.cfg["dataset"]
    if cfg["streaming"]:
        raise LmforgeError(f"--dataset {path} is already tokenised; drop --streaming to train on it")
    train, val, meta = convert.load_converted(path)
    convert.check_usable(path, meta, ctx.tokenizer, module.DATA_KIND, cfg.get("max_length"))
    ctx.stats["rows"] = meta.get("num_rows") or len(train)
    if cfg.get("max_samples"):
        train = train.select(range(min(cfg["max_samples"], len(train))))
    if cfg.get("val_dataset"):
        vpath = cfg["val_dataset"]
        if convert.is_converted(vpath):
            val, _, vmeta = convert.load_converted(vpath)
            convert.check_usable(vpath, vmeta, ctx.tokenizer, module.DATA_KIND, cfg.get("max_length"))
        else:
            from lmforge.data.load import load_rows

            val_rows, _ = load_rows(vpath, module.DATA_KIND, **_load_options(cfg))
            val = _prepare(ctx, module, val_rows)
    elif cfg.get("val_size"):
        train, val = split_val(train, cfg["val_size"], cfg["seed"])
    return train, val


def _load_options(cfg: Config) -> dict[str, Any]:
    keys = ("text_column", "system", "system_prompt", "user_prompt", "base_dir", "image_dir")
    opts = {k: cfg.get(k) for k in keys}
    opts.update(
        fmt=cfg.get("format"),
        skip_bad_rows=cfg["skip_bad_rows"],
        seed=cfg["seed"],
        dataset_dir=cfg.get("dataset_dir"),
        mix_strategy=cfg["mix_strategy"],
        interleave_probs=cfg.get("interleave_probs"),
    )
    return opts


def _load_streaming(ctx: StageContext, kind: str, opts: dict[str, Any]):
    """`--streaming`: rows are read, converted and tokenised on the fly; nothing is cached."""
    from lmforge.data.load import iter_rows_streaming

    cfg = ctx.cfg  # --max_steps and no --val_size: checked by validate_config
    rows = iter_rows_streaming(cfg["dataset"], kind, **opts)
    if cfg.get("buffer_size"):  # LLaMA-Factory: a stream is shuffled through a buffer of this many rows
        rows = rows.shuffle(seed=cfg["seed"], buffer_size=cfg["buffer_size"])
    if cfg.get("max_samples"):
        rows = rows.take(cfg["max_samples"])
    val = iter_rows_streaming(cfg["val_dataset"], kind, **opts) if cfg.get("val_dataset") else None
    return rows, val


def run_train(stage: str, argv: list[str] | None = None, *, cfg: Config | None = None) -> str:
    """Run one training stage; returns the run folder."""
    runtime.setup()  # the same process set-up as `lmforge train` (lmforge/runtime.py)
    from transformers import set_seed

    from lmforge.stages.contract import optional
    from lmforge.training.checks import validate_config
    from lmforge.training.trainer import MetricsCallback, SigtermCallback
    from lmforge.tuners.apply import apply_tuner

    module, cfg = resolve_train_config(stage, argv or []) if cfg is None else (_module(stage), cfg)
    stage = cfg["stage"]  # a MiniMind script name (`lora`) runs as its lmforge stage
    run_dir, ckpt = resolve_run_dir(stage, cfg)
    ctx = StageContext(stage=stage, cfg=cfg, run_dir=run_dir)
    ctx.training_args = validate_config(module, cfg, run_dir)  # before any model or data is loaded
    flush_denormals()
    set_seed(cfg["seed"])
    ctx.tokenizer, ctx.model, base_path = load_tokenizer_and_model(cfg, optional(module, "load_model"))
    if base_path:
        cfg.values["model_name_or_path"] = base_path
        ctx.processor = _model_processor(base_path, ctx)
    apply_model_options(ctx, from_folder=bool(base_path))
    from lmforge.data.chat_templates import apply_template

    apply_template(ctx.tokenizer, cfg.get("template"))  # saved with the run's tokenizer
    ctx.train_dataset, ctx.eval_dataset = prepare_datasets(ctx, module)
    if optional(module, "check_data"):  # e.g. RL: some reward can be non-zero
        module.check_data(ctx)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    set_seed(cfg["seed"])  # adapter initialisation does not depend on how much data was read
    ctx.tuned = apply_tuner(ctx.model, cfg, run_dir=run_dir, num_training_steps=_num_steps(ctx))
    ctx.model = ctx.tuned.model
    if ctx.training_args.should_save:  # rank 0 only under DDP
        write_args(run_dir, public_values(cfg, module))
    trainer = module.build_trainer(ctx)
    if ctx.tuned.optimizer_factory is not None:
        trainer.optimizer_factory = ctx.tuned.optimizer_factory
    if ctx.processor is not None:  # checkpoint-N folders load in `chat` / `infer` with their images
        trainer.save_with_checkpoint = functools.partial(_save_processor, ctx)
    for callback in ctx.tuned.callbacks:
        trainer.add_callback(callback)
    resumed_step = _checkpoint_step(ckpt)
    sigterm = SigtermCallback()
    trainer.add_callback(MetricsCallback(trainer, run_dir, resumed_step))
    trainer.add_callback(sigterm)
    for callback in faults.training_callbacks(faults.current()):  # test hooks: none unless asked for
        trainer.add_callback(callback)
    _log_start(ctx, ckpt)
    result = trainer.train(resume_from_checkpoint=ckpt)
    if cfg["plot"] and trainer.args.should_save:
        plot_metrics(run_dir)
    if sigterm.received:
        log.warning(
            "SIGTERM: saved %s and stopped; resume with --resume_from_checkpoint latest --output_dir %s",
            latest_checkpoint(run_dir),
            run_dir,
        )
        return run_dir
    if trainer.args.should_save:
        _finish(ctx, trainer, result.metrics)
    return run_dir


def _model_processor(path: str, ctx: StageContext):
    """An audio or vision LLM's processor (its tokenizer then replaces ctx.tokenizer), else None."""
    from lmforge.models import audio, vision

    if audio.is_audio_model_dir(path):
        if ctx.stage != "sft":
            raise LmforgeError(
                f"train {ctx.stage}: audio models are trained with `train sft` (CSV with an audio column)"
            )
        proc = audio.load_processor(path)
    elif vision.is_vision_model_dir(path):
        if ctx.stage not in VISION_STAGES:
            raise LmforgeError(
                f"train {ctx.stage}: vision models (rows with `images`) are trained with `train sft`, "
                "`train dpo` or `train orpo|simpo|cpo`"
            )
        proc = vision.load_processor(path)
    else:
        if ctx.cfg.get("train_target"):
            raise LmforgeError(
                f"--train_target applies to audio and vision models; {path} is a text model (use "
                "--lora_target and --modules_to_save to choose what trains)"
            )
        return None
    if not ctx.cfg.get("tokenizer_path"):
        ctx.tokenizer = proc.tokenizer
    return proc


def flush_denormals() -> None:
    """Treat denormal floats as zero on CPU: small models' optimizer states drift into denormals and
    every op on them gets ~20x slower (measured: 0.76 s vs 14.9 s for 20 tiny-model steps)."""
    import torch

    torch.set_flush_denormal(True)


def _num_steps(ctx: StageContext) -> int:
    """Optimizer steps the run will take (AdaLoRA schedules its rank budget over them)."""
    import math

    args = ctx.training_args
    if args.max_steps and args.max_steps > 0:
        return args.max_steps
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
    return max(1, math.ceil(len(ctx.train_dataset) / per_step) * math.ceil(args.num_train_epochs))


def _module(stage: str):
    from lmforge.stages import get_stage

    return get_stage(stage)


def _checkpoint_step(ckpt: str | None) -> int:
    if not ckpt:
        return 0
    state = json.loads(Path(ckpt, "trainer_state.json").read_text())
    return int(state.get("global_step", 0))


def _log_start(ctx: StageContext, ckpt: str | None) -> None:
    from lmforge.models.presets import count_parameters

    n = count_parameters(ctx.model)
    num_seq = len(ctx.train_dataset) if hasattr(ctx.train_dataset, "__len__") else "streamed"
    log.info(
        "stage %s → %s | params %.2fM | rows %s | train sequences %s%s",
        ctx.stage,
        ctx.run_dir,
        n / 1e6,
        ctx.stats.get("rows", "streamed"),
        num_seq,
        f" | resuming {ckpt}" if ckpt else "",
    )
    report = ctx.tuned.report if ctx.tuned else {}
    if report:
        log.info(
            "tuner %s: trainable params %s of %s (%.4g%%)%s",
            report["tuner"],
            f"{report['trainable params']:,}",
            f"{report['all params']:,}",
            report["trainable %"],
            f" | new layers {report['expanded layers']}" if "expanded layers" in report else "",
        )
    packing = ctx.stats.get("packing")
    if packing is not None:
        log.info("packing: %s", packing)


def _finish(ctx: StageContext, trainer, metrics: dict[str, Any]) -> None:
    run_dir = ctx.run_dir
    # What Hugging Face / LLaMA-Factory users look for in a run folder
    trainer.state.save_to_json(os.path.join(run_dir, "trainer_state.json"))
    trainer.save_metrics("train", metrics)  # train_results.json + all_results.json
    if ctx.cfg.get("merge_lora") and ctx.tuned and hasattr(ctx.model, "merge_and_unload"):
        _save_merged(ctx, trainer)
    elif ctx.tuned and ctx.tuned.save:
        ctx.tuned.save(run_dir)
    else:
        trainer.save_model(run_dir)
    _save_processor(ctx, run_dir)
    state = trainer.state
    losses = [r["loss"] for r in _read_metrics(run_dir) if "loss" in r]
    summary = {
        "steps": state.global_step,
        "first loss": _fmt(losses[0] if losses else None),
        "last loss": _fmt(losses[-1] if losses else None),
        "nan steps skipped": trainer.num_nan_skipped,
        **(
            {k: ctx.tuned.report[k] for k in ("tuner", "trainable params", "trainable %")}
            if ctx.tuned
            else {}
        ),
        **{k: v for k, v in ctx.stats.items() if isinstance(v, (int, float, str))},
    }
    write_model_card(run_dir, ctx.stage, ctx.cfg.values, summary)
    mark_finished(run_dir, {"stage": ctx.stage, "global_step": state.global_step})
    log.info("finished %s: %s", ctx.stage, run_dir)


def _save_processor(ctx: StageContext, run_dir: str) -> None:
    """The tokenizer, or an audio / vision LLM's whole processor, beside the saved model."""
    proc = ctx.processor
    if proc is not None and getattr(proc, "image_processor", None) is not None:
        from lmforge.training.vision import save_processor

        save_processor(proc, run_dir)
    else:
        (proc or ctx.tokenizer).save_pretrained(run_dir)


def _save_merged(ctx: StageContext, trainer) -> None:
    """`--merge_lora`: the adapter goes to RUN/adapter, the merged full model to RUN itself."""
    run_dir = ctx.run_dir
    if ctx.tuned.save:
        ctx.tuned.save(os.path.join(run_dir, "adapter"))
    else:
        trainer.save_model(os.path.join(run_dir, "adapter"))
    merged = ctx.model.merge_and_unload()
    merged.save_pretrained(run_dir)
    log.info("--merge_lora: full model in %s (adapter in %s/adapter)", run_dir, run_dir)


def _read_metrics(run_dir: str) -> list[dict[str, Any]]:
    from lmforge.runs import MetricsLog

    return MetricsLog(run_dir).read()


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def is_stage_finished(run_dir: str) -> bool:
    return is_finished(run_dir)
