"""One path for every training stage: resolve config → tokenizer → model → data → stage trainer
→ train → save. A stage module supplies only what differs (lmforge/stages/); each step belongs to
the module that owns its concern (data/assemble.py: datasets, models/start.py: the starting model,
training/lifecycle.py: the run folder, its start and what it leaves), this one only orders them."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge import faults, runtime
from lmforge.config.loader import Config, resolve
from lmforge.config.schema import DataArgs, ModelArgs, RunArgs
from lmforge.data.assemble import load_data, prepare_datasets, stage_option_keys
from lmforge.errors import LmforgeError
from lmforge.models.options import ModelOptionArgs, apply_model_options
from lmforge.models.start import PRESET_SIZES
from lmforge.runs import is_finished, latest_checkpoint, plot_metrics, write_args
from lmforge.training.lifecycle import resolve_run_dir, save_processor_files
from lmforge.tuners.args import TunerArgs

log = logging.getLogger("lmforge")
GROUPS = [ModelArgs, DataArgs, RunArgs, TunerArgs, ModelOptionArgs]
ADAPTER_LEARNING_RATE = 1e-4
# owned by data/assemble.py and training/lifecycle.py; imported here for the CLI and web UI
__all__ = ["load_data", "prepare_datasets", "resolve_run_dir", "stage_option_keys"]


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
    from lmforge.tuners.optim import apply_scratch_optimizer

    if is_peft(cfg) and "learning_rate" not in cfg.explicit:
        cfg.values["learning_rate"] = ADAPTER_LEARNING_RATE
        cfg.layered.add("learning_rate")
    apply_scratch_optimizer(stage, cfg)
    if stage == "sft":  # audio LLMs train with mdl-toolkit's defaults (training/audio.py)
        from lmforge.training.audio import apply_audio_defaults

        apply_audio_defaults(cfg)
    scheduler_kwargs(cfg)
    return module, cfg


def load_tokenizer_and_model(cfg: Config, loader=None):
    """models/start.py's starting tokenizer and model, quantised by the tuner's config (QLoRA)."""
    from lmforge.models.start import load_tokenizer_and_model as load_start
    from lmforge.tuners.apply import quantization_config

    return load_start(cfg, loader, quantization=quantization_config)


def public_values(cfg: Config, module) -> dict[str, Any]:
    """The config to write into the run folder: without the stage's secret flags (API keys)."""
    from dataclasses import fields

    secret = {f.name for f in fields(module.Args) if f.metadata.get("secret")}
    if cfg.get("preset"):  # the preset decides the sizes nobody typed; their field defaults would win
        secret |= {k for k in PRESET_SIZES if k not in cfg.explicit}
    return {k: v for k, v in cfg.to_yaml_dict().items() if k not in secret}


def run_train(stage: str, argv: list[str] | None = None, *, cfg: Config | None = None) -> str:
    """Run one training stage; returns the run folder."""
    runtime.setup()  # the same process set-up as `lmforge train` (lmforge/runtime.py)
    from transformers import set_seed

    from lmforge.stages.contract import optional
    from lmforge.training.checks import validate_config
    from lmforge.training.lifecycle import (
        checkpoint_step,
        finish_run,
        keep_checkpoint_optimizer,
        log_start,
        num_training_steps,
    )
    from lmforge.training.trainer import MetricsCallback, SigtermCallback
    from lmforge.tuners.apply import apply_tuner

    module, cfg = resolve_train_config(stage, argv or []) if cfg is None else (_module(stage), cfg)
    stage = cfg["stage"]  # a MiniMind script name (`lora`) runs as its lmforge stage
    run_dir, ckpt = resolve_run_dir(stage, cfg)
    keep_checkpoint_optimizer(cfg, ckpt)
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
    ctx.tuned = apply_tuner(ctx.model, cfg, run_dir=run_dir, num_training_steps=num_training_steps(ctx))
    ctx.model = ctx.tuned.model
    if ctx.training_args.should_save:  # rank 0 only under DDP
        write_args(run_dir, public_values(cfg, module))
    trainer = module.build_trainer(ctx)
    if ctx.tuned.optimizer_factory is not None:
        trainer.optimizer_factory = ctx.tuned.optimizer_factory
    if ctx.processor is not None:  # checkpoint-N folders load in `chat` / `infer` with their images
        trainer.save_with_checkpoint = functools.partial(save_processor_files, ctx)
    for callback in ctx.tuned.callbacks:
        trainer.add_callback(callback)
    resumed_step = checkpoint_step(ckpt)
    sigterm = SigtermCallback()
    trainer.add_callback(MetricsCallback(trainer, run_dir, resumed_step))
    trainer.add_callback(sigterm)
    for callback in faults.training_callbacks(faults.current()):  # test hooks: none unless asked for
        trainer.add_callback(callback)
    log_start(ctx, ckpt)
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
        finish_run(ctx, trainer, result.metrics)
    return run_dir


# stages that train a vision LLM on image rows (the rest refuse one in one line naming the stage)
VISION_STAGES = ("sft", "dpo", "orpo", "simpo", "cpo")


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


def _module(stage: str):
    from lmforge.stages import get_stage

    return get_stage(stage)


def is_stage_finished(run_dir: str) -> bool:
    return is_finished(run_dir)
