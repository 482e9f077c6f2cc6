"""The Training tab's form, derived from the config dataclasses `lmforge train STAGE` reads.

Every field of the shared groups (model, data, run, tuner), of each stage's own `Args` and of a
short list of common `TrainingArguments` becomes one `FormField` (name, kind, help, choices,
section). A stage's defaults are the field defaults with the stage's `DEFAULTS` on top, exactly as
the CLI resolves them, so the form only passes flags whose value differs from that default.
`plan_run` turns the form into the `lmforge train` command and validates it with the CLI's own
resolver, so a bad value is the same one-line error the CLI would print. No Gradio in here.
"""

from __future__ import annotations

import functools
import math
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

from lmforge.config.loader import Spec, hf_training_specs, specs_of
from lmforge.errors import LmforgeError
from lmforge.webui.guard import Access, check_flags, check_train

# Shown at the top of the form for every stage; everything else sits in a section's accordion.
MAIN_FIELDS = (
    "model_name_or_path",
    "preset",
    "dataset",
    "output_dir",
    "tuner",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "logging_steps",
    "save_steps",
)
# The TrainingArguments worth a form field; any other one goes in the "extra flags" box.
TRAINER_FIELDS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "warmup_steps",
    "lr_scheduler_type",
    "weight_decay",
    "max_grad_norm",
    "optim",
    "seed",
    "eval_steps",
    "gradient_checkpointing",
    "resume_from_checkpoint",
    "report_to",
)
HIDDEN_FIELDS = ("stage",)  # set by the command itself
STAGE_SECTION = "stage"


@dataclass
class FormField:
    """One form input. kind: bool, tristate (bool or unset), int, float, choice, text."""

    name: str
    kind: str
    help: str
    section: str
    optional: bool
    choices: tuple = ()
    stages: set[str] = field(default_factory=set)  # stage-specific fields only; empty: every stage

    def shown_for(self, stage: str) -> bool:
        return not self.stages or stage in self.stages


def _alternatives(spec: Spec) -> list[str]:
    text = spec.type_text.replace("typing.", "").replace("Optional[", "").rstrip("]").lower()
    return [a.strip() for a in text.split("|") if a.strip()]


def _kind(spec: Spec) -> tuple[str, bool]:
    alts = _alternatives(spec)
    optional = any(a in ("none", "nonetype") for a in alts)
    rest = [a for a in alts if a not in ("none", "nonetype")]
    if spec.choices:
        return "choice", optional or spec.default is None
    if rest == ["bool"]:
        return ("tristate" if optional else "bool"), optional
    if rest in (["int"], ["float"]):
        return rest[0], optional
    return "text", optional


def _field(spec: Spec, section: str) -> FormField:
    kind, optional = _kind(spec)
    choices = tuple(str(c) for c in spec.choices or ())
    return FormField(spec.name, kind, spec.help, section, optional, choices)


def stage_names() -> list[str]:
    from lmforge.stages import STAGES

    return list(STAGES)


@functools.cache
def all_fields() -> dict[str, FormField]:
    """Every form field, in display order: shared groups, stage options, trainer settings.
    Cached: callers must not modify the result."""
    from lmforge.pipeline import GROUPS
    from lmforge.stages import get_stage

    fields: dict[str, FormField] = {}
    for cls in GROUPS:
        section = cls.__name__.removesuffix("Args")
        for name, spec in specs_of(cls, cls.__name__).items():
            if name not in HIDDEN_FIELDS:
                fields[name] = _field(spec, section)
    for stage in stage_names():
        for name, spec in specs_of(get_stage(stage).Args, stage).items():
            fields.setdefault(name, _field(spec, STAGE_SECTION)).stages.add(stage)
    hf = hf_training_specs()
    for name in TRAINER_FIELDS:
        fields.setdefault(name, _field(hf[name], "Trainer"))
    for name in MAIN_FIELDS:
        fields[name].section = "main"
    return fields


def stage_defaults(stage: str, tuner: str | None = None) -> dict[str, Any]:
    """Each field's default for `stage` as the CLI resolves it (a PEFT tuner lowers the default
    learning rate, as `lmforge train` does when --learning_rate is not given)."""
    from lmforge.pipeline import ADAPTER_LEARNING_RATE, GROUPS
    from lmforge.pipeline import stage_defaults as command_defaults
    from lmforge.stages import get_stage
    from lmforge.tuners.args import PEFT_TUNERS
    from lmforge.tuners.optim import scratch_optimizer

    module = get_stage(stage)
    specs: dict[str, Spec] = {}
    for cls in [*GROUPS, module.Args]:
        specs.update(specs_of(cls, cls.__name__))
    hf = hf_training_specs()
    out = {}
    for name in all_fields():
        if name in specs or name in hf:  # fields of other stages are absent
            out[name] = (specs[name] if name in specs else hf[name]).default
    out.update({k: v for k, v in command_defaults(module).items() if k in out})
    if (tuner or out["tuner"]) in PEFT_TUNERS:
        out["learning_rate"] = ADAPTER_LEARNING_RATE
    out.update(scratch_optimizer(stage, {**out, "tuner": tuner or out["tuner"]}))
    return out


def form_values(stage: str, tuner: str | None = None) -> dict[str, Any]:
    """What each input shows for `stage`: its default, displayed; a field that belongs to other
    stages only (hidden) shows its default there."""
    fields, out = all_fields(), {}
    own = stage_defaults(stage, tuner)
    own["tuner"] = tuner or own["tuner"]
    for name, f in fields.items():
        if name not in own:
            own.update({k: v for k, v in stage_defaults(min(f.stages)).items() if k not in own})
        out[name] = display(f, own[name])
    return out


def display(f: FormField, value: Any) -> Any:
    """A config value as its form input shows it."""
    if f.kind == "tristate":
        return "" if value is None else ("true" if value else "false")
    if f.kind == "choice":
        return "" if value is None else str(value)
    if f.kind == "text":
        if value is None:
            return ""
        if isinstance(value, (list, tuple)):
            return ",".join(map(str, value))
        if isinstance(value, dict):
            import json

            return json.dumps(value)
        return str(value)
    return value


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.10g}"


def _normal(f: FormField, raw: Any) -> Any:
    """What a form input holds, reduced to a comparable value (None: empty)."""
    if f.kind == "bool":
        return bool(raw)
    if f.kind in ("int", "float"):
        if raw is None or raw == "" or (isinstance(raw, float) and math.isnan(raw)):
            return None
        return float(raw)
    text = "" if raw is None else str(raw).strip()
    return text or None


def form_flags(stage: str, values: dict[str, Any], extra: str = "") -> list[str]:
    """`--name value` pairs for every field of `stage` whose input differs from the stage default,
    then the free-form `extra` flags as typed."""
    fields = all_fields()
    tuner = _normal(fields["tuner"], values.get("tuner")) if "tuner" in values else None
    defaults = stage_defaults(stage, tuner)
    flags: list[str] = []
    for name, f in fields.items():
        if name not in values or not f.shown_for(stage):
            continue
        got, default = _normal(f, values[name]), _normal(f, display(f, defaults[name]))
        if got == default:
            continue
        if got is None:
            if not f.optional or default is None:
                continue  # a cleared required field means "the default"
            text = "null"
        elif f.kind == "bool":
            text = "true" if got else "false"
        elif f.kind in ("int", "float"):
            text = _number_text(got)
        else:
            text = got
        flags += [f"--{name}", text]
    try:
        flags += shlex.split(extra or "")
    except ValueError as e:
        raise LmforgeError(f"extra flags: {e}") from None
    return flags


@dataclass
class RunPlan:
    """A validated `lmforge train` invocation: argv to run, the command to show, its run folder."""

    stage: str
    flags: list[str]
    run_dir: str

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "lmforge", "train", self.stage, *self.flags]

    @property
    def cli(self) -> str:
        return shlex.join(["lmforge", "train", self.stage, *self.flags])


def plan_run(stage: str, flags: list[str], runs_dir: str, access: Access | None = None) -> RunPlan:
    """Validate `flags` with the CLI's resolver and fix the run folder, so the UI knows where the
    metrics will appear: a run that would get a timestamped folder gets `--output_dir` under
    `runs_dir` (or under `--save_dir` when the form sets it). With `access`, a run that would
    reach outside its folders or run a model folder's code is refused (guard.py)."""
    from lmforge.pipeline import resolve_run_dir, resolve_train_config
    from lmforge.runs import default_output_dir

    if stage not in stage_names():
        raise LmforgeError(f"unknown stage {stage!r}; choose one of {', '.join(stage_names())}")
    if access is not None:
        check_flags(list(flags))
    _, cfg = resolve_train_config(stage, list(flags))
    named = cfg.get("output_dir") or cfg.get("save_weight") or cfg.get("lora_name")
    if not named and cfg.get("resume_from_checkpoint") != "latest":
        base = cfg["save_dir"] if "save_dir" in cfg.explicit else runs_dir
        flags = [*flags, "--output_dir", default_output_dir(stage, base)]
        _, cfg = resolve_train_config(stage, flags)
    if access is not None:
        check_train(stage, cfg, access)
    run_dir, _ = resolve_run_dir(stage, cfg)
    if access is not None:
        access.check_run_dir(run_dir)
    return RunPlan(stage, list(flags), run_dir)
