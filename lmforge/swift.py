"""ms-swift's command line (reference seed_004) translated onto lmforge's commands.

`lmforge sft|pt|rlhf|infer|deploy|app-ui|web-ui|export|eval|merge-lora ...` run as `swift ...` would:
the command words map onto lmforge's (`deploy` → `serve`, `rlhf --rlhf_type kto` → `train kto`), and
the flags whose meaning spans several lmforge flags are rewritten here, before the config resolver
sees them (`export --merge_lora true` → an HF export into CKPT-merged). One-to-one renames are
aliases, and flags with no effect here are UNAVAILABLE entries, in lmforge/config/aliases/.

swift's own command words (`lmforge sft`, `pt`, `rlhf`, `train rlhf`) also take swift's defaults
(LoRA on q/k/v with alpha 32, lr 1e-4, batch 1 x ceil(16/batch/world) accumulation, max_length 2048,
runs under output/); `lmforge train sft` / `train pt` keep lmforge's own. docs/coming-from-ms-swift.md.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

# swift's top-level commands → lmforge's command words
COMMANDS: dict[str, tuple[str, ...]] = {
    "sft": ("train", "sft"),
    "pt": ("train", "pt"),
    "rlhf": ("train", "rlhf"),
    "deploy": ("serve",),
    "app-ui": ("webui",),
    "app": ("webui",),
    "web-ui": ("webui",),
    "merge-lora": ("merge",),
}
# `rlhf --rlhf_type X` → lmforge's stage (gkd: on-policy distillation from --teacher_model)
RLHF_TYPES = {
    "dpo": "dpo",
    "orpo": "orpo",
    "simpo": "simpo",
    "kto": "kto",
    "cpo": "cpo",
    "rm": "rm",
    "ppo": "ppo",
    "grpo": "grpo",
    "gkd": "distill",
}
# swift's SftArguments defaults (seed_004), used under swift's own command words
SWIFT_DEFAULTS: dict[str, Any] = {
    "tuner": "lora",
    "lora_rank": 8,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target": "q_proj,k_proj,v_proj",  # target_modules DEFAULT: the attention projections
    "num_train_epochs": 1,
    "per_device_train_batch_size": 1,
    "max_length": 2048,
    "weight_decay": 0.1,
    "adam_beta2": 0.95,
    "warmup_steps": 0.05,  # warmup_ratio 0.05 (a value < 1 is a ratio)
    "lr_scheduler_type": "cosine",
    "max_grad_norm": 1.0,
    "eval_steps": 50,
    "save_total_limit": 2,
    "logging_steps": 5,
    "val_size": 0.01,  # dataset_test_ratio
    "gradient_checkpointing": True,
    "save_dir": "output",  # output_dir 'output' + a per-run suffix
}
PT_DEFAULTS = {"tuner": "full", "lora_target": "all", "eval_steps": 500}
ROLLOUT_STAGES = ("grpo", "ppo")  # their batch counts completions / prompts their own way
MODEL_FLAGS = ("model_id_or_path", "model_name_or_path", "model", "ckpt_dir", "from_weight", "load_from")
VLLM_FLAGS = {  # swift's vLLM engine flags → `vllm serve` spelling (None: a switch)
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "tensor_parallel_size": "--tensor-parallel-size",
    "max_num_seqs": "--max-num-seqs",
    "max_model_len": "--max-model-len",
    "disable_custom_all_reduce": None,
    "enforce_eager": None,
    "limit_mm_per_prompt": "--limit-mm-per-prompt",
    "vllm_enable_lora": None,
    "vllm_max_lora_rank": "--max-lora-rank",
}
VLLM_SWITCHES = {
    "disable_custom_all_reduce": "--disable-custom-all-reduce",
    "enforce_eager": "--enforce-eager",
    "vllm_enable_lora": "--enable-lora",
}
# flags that take several words, as swift's list arguments (`--dataset a.jsonl b.jsonl`)
MULTI = {
    "model_name", "dataset", "val_dataset", "custom_train_dataset_path", "custom_val_dataset_path",
    "eval_dataset",
}  # fmt: skip
EVAL_BENCHMARKS = ("ceval", "cmmlu", "mmlu")  # bundled samples (lmforge eval --task_dir NAME)


# --- argv helpers -----------------------------------------------------------------------------
def _key(tok: str) -> str | None:
    return tok[2:].split("=", 1)[0].replace("-", "_") if tok.startswith("--") and len(tok) > 2 else None


def take(argv: list[str], names: set[str] | tuple[str, ...]) -> tuple[list[str], dict[str, list[str]]]:
    """argv without the flags `names` (`--name v` or `--name=v`; the MULTI ones take every word up to
    the next flag), and name → its words (a flag alone gives ["true"]; given twice, the last wins)."""
    rest: list[str] = []
    found: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        key = _key(argv[i])
        if key not in names:
            rest.append(argv[i])
            i += 1
            continue
        if "=" in argv[i]:
            found[key] = [argv[i].split("=", 1)[1]]
            i += 1
            continue
        j = i + 1
        while j < len(argv) and _key(argv[j]) is None and (j == i + 1 or key in MULTI):
            j += 1
        found[key] = argv[i + 1 : j] or ["true"]
        i = j
    return rest, found


def _flag_value(argv: list[str], names: tuple[str, ...]) -> str | None:
    _, found = take(argv, set(names))
    for name in names:
        if name in found:
            return found[name][0]
    return None


def _leading_positionals(argv: list[str]) -> list[str]:
    out = []
    for tok in argv:
        if tok.startswith("--"):
            break
        out.append(tok)
    return out


def _true(words: list[str] | None) -> bool:
    return bool(words) and words[0].strip().lower() in ("1", "true", "yes", "y", "on")


def _false(words: list[str]) -> bool:
    return bool(words) and words[0].strip().lower() in ("0", "false", "no", "n", "off", "none", "")


def _one(found: dict[str, list[str]], name: str) -> str | None:
    return found[name][0] if name in found else None


# --- translation --------------------------------------------------------------------------------
def translate(argv: list[str]) -> list[str]:
    """A full command line (command words first) in swift's spelling → lmforge's."""
    if not argv:
        return argv
    swift_words = argv[0] in ("sft", "pt", "rlhf") or argv[:2] == ["train", "rlhf"]
    if argv[0] in COMMANDS:
        argv = [*COMMANDS[argv[0]], *argv[1:]]
    words, rest = argv[:1], argv[1:]
    if "--help" in rest or "-h" in rest:
        if words == ["train"] and rest[:1] == ["rlhf"]:
            flags, found = take(rest[1:], {"rlhf_type"})
            rest = [RLHF_TYPES.get((_one(found, "rlhf_type") or "dpo").lower(), "dpo"), *flags]
        return [*words, *(["pretrain", *rest[1:]] if rest[:1] == ["pt"] else rest)]
    if words == ["train"] and rest and not rest[0].startswith("-"):
        stage, flags = rest[0], rest[1:]
        if stage == "pt":
            stage = "pretrain"
        elif stage == "rlhf":
            flags, found = take(flags, {"rlhf_type"})
            rlhf_type = (_one(found, "rlhf_type") or "dpo").lower()
            if rlhf_type not in RLHF_TYPES:
                raise LmforgeError(f"--rlhf_type {rlhf_type}: expected one of {', '.join(RLHF_TYPES)}")
            stage = RLHF_TYPES[rlhf_type]
        flags = _train_flags(flags, suffix_default=swift_words)
        if swift_words:
            flags = [*swift_defaults(stage, flags, pretrain=argv[1] == "pt"), *flags]
        return ["train", stage, *flags]
    rewrite = {"export": _export_flags, "infer": _infer_flags, "serve": _serve_flags, "eval": _eval_flags}
    if words[0] in rewrite:
        rest = rewrite[words[0]](_check_model_type(rest))
        if words[0] == "infer" and rest and rest[0] == "chat":
            return rest
    elif words[0] in ("chat", "webui", "merge"):
        rest = _check_model_type(rest)
    return [*words, *rest]


def _check_model_type(argv: list[str]) -> list[str]:
    """swift's --model_type with a local model folder names what config.json already says; without
    one it would download the model, which lmforge does not do."""
    rest, found = take(argv, {"model_type"})
    value = _one(found, "model_type")
    if value is None or value.lower() in ("none", ""):
        return rest
    if _flag_value(rest, MODEL_FLAGS) is None and not _leading_positionals(rest):
        raise LmforgeError(
            f"--model_type {value}: lmforge does not download models; pass the local folder with "
            "--model_id_or_path (its config.json names the architecture)"
        )
    return rest


def _train_flags(argv: list[str], *, suffix_default: bool) -> list[str]:
    """swift training flags that span several lmforge flags."""
    argv = _check_model_type(argv)
    argv, found = take(argv, {"add_output_dir_suffix", "resume_only_model", "model_name"})
    words = found.get("model_name")
    if words is not None:
        if len(words) == 2:  # swift's self-cognition names (Chinese, English)
            raise LmforgeError(
                "--model_name: the self-cognition set is hub data; add rows naming your model to a "
                "JSONL in --dataset"
            )
        argv = [*argv, "--model_name", *words]  # another reference's --model_name (a model path)
    suffix = found.get("add_output_dir_suffix")
    if (_true(suffix) if suffix is not None else suffix_default) and _flag_value(argv, ("output_dir",)):
        # swift appends a per-run folder to --output_dir: that is lmforge's --save_dir naming
        argv, out = take(argv, {"output_dir"})
        argv = [*argv, "--save_dir", out["output_dir"][0]]
    if _true(found.get("resume_only_model")):
        argv, ckpt = take(argv, {"resume_from_checkpoint"})
        if "resume_from_checkpoint" not in ckpt:
            raise LmforgeError("--resume_only_model true needs --resume_from_checkpoint CHECKPOINT")
        argv = [*argv, "--model_name_or_path", ckpt["resume_from_checkpoint"][0]]
    for tok in argv:  # swift's hub prefixes: MS::name / HF::id
        if "MS::" in tok or "HF::" in tok:
            raise LmforgeError(
                f"--dataset {tok}: lmforge does not download hub datasets; download it and pass the "
                "local file (FILE#N samples N rows)"
            )
    sft_type = _flag_value(argv, ("sft_type", "tuner", "train_type", "finetuning_type"))
    blocks = _flag_value(argv, ("llamapro_num_new_blocks", "expand_layers", "num_expand"))
    if sft_type and sft_type.lower().replace("-", "_") in ("llamapro", "llama_pro") and blocks is None:
        argv = [*argv, "--expand_layers", "4"]  # swift's llamapro_num_new_blocks default
    return argv


def _given_keys(stage: str, argv: list[str]) -> set[str]:
    """The lmforge keys a training command line (and its config files) sets."""
    from lmforge.config.loader import (
        canonical_key,
        collect_specs,
        is_config_file,
        load_config_file,
        split_argv,
    )
    from lmforge.pipeline import GROUPS
    from lmforge.stages import get_stage

    specs = collect_specs([*GROUPS, get_stage(stage).Args], include_hf=True)
    positionals, pairs = split_argv(argv, specs)
    keys = [k for k, _ in pairs]
    for pos in positionals:
        if is_config_file(pos, specs, inputs=False) and Path(pos).is_file():
            keys += [str(k) for k in load_config_file(pos)]
    return {canonical_key(k.replace("-", "_"), specs)[0] for k in keys}


def swift_defaults(stage: str, argv: list[str], *, pretrain: bool = False) -> list[str]:
    """Flags for swift's defaults that the command line does not set itself."""
    given = _given_keys(stage, argv)
    values = {**SWIFT_DEFAULTS, **(PT_DEFAULTS if pretrain else {})}
    if stage in ROLLOUT_STAGES:
        values.pop("per_device_train_batch_size")
    tuner = _flag_value(argv, ("sft_type", "tuner", "train_type", "finetuning_type")) or values["tuner"]
    values["learning_rate"] = 1e-5 if tuner.lower() == "full" else 1e-4
    if "per_device_train_batch_size" in values or "per_device_train_batch_size" in given:
        batch = _flag_value(argv, ("batch_size", "per_device_train_batch_size"))
        world = int(os.environ.get("WORLD_SIZE") or os.environ.get("NPROC_PER_NODE") or 1)
        values["gradient_accumulation_steps"] = math.ceil(16 / float(batch or 1) / max(world, 1))
    eval_steps = _flag_value(argv, ("eval_steps",))
    values["save_steps"] = eval_steps or values["eval_steps"]
    if {"output_dir", "save_weight"} & given:
        values.pop("save_dir")
    out: list[str] = []
    for key, value in values.items():
        if key not in given:
            out += [f"--{key}", str(value)]
    return out


def _export_flags(argv: list[str]) -> list[str]:
    """`export --merge_lora / --quant_bits N --quant_method M / --to_ollama` → lmforge export's
    --format, with swift's default folders beside the checkpoint."""
    names = {
        "merge_lora", "quant_bits", "quant_method", "to_ollama", "ollama_output_dir",
        "quant_output_dir", "dataset", "push_to_hub", "hub_model_id",
    }  # fmt: skip
    argv, found = take(argv, names)
    ckpt = _flag_value(argv, ("ckpt_dir", "model_id_or_path", "model", "adapter"))
    ckpt = ckpt or next(iter(_leading_positionals(argv)), None)
    bits = int(float(_one(found, "quant_bits") or 0))
    method = (_one(found, "quant_method") or "awq").lower()
    out = _one(found, "quant_output_dir") or _one(found, "ollama_output_dir")
    flags: list[str] = []
    if _true(found.get("to_ollama")):
        flags += ["--format", "gguf"]  # GGUF + Ollama Modelfile
        default = f"{Path(ckpt).name}-ollama" if ckpt else None
    elif bits > 0:
        if method not in ("awq", "gptq", "bnb"):
            raise LmforgeError(f"--quant_method {method}: export quantises with awq, gptq or bnb")
        flags += ["--format", method, "--quantization_bit", str(bits)]
        default = f"{ckpt.rstrip('/')}-{method}-int{bits}" if ckpt else None
    elif _true(found.get("merge_lora")):
        flags += ["--format", "hf"]
        default = f"{ckpt.rstrip('/')}-merged" if ckpt else None
    else:
        default = None
    if not _flag_value(argv, ("output_dir", "export_dir", "output")) and (out or default):
        flags += ["--output_dir", out or default]
    if "dataset" in found:
        flags += ["--quantization_dataset", ",".join(found["dataset"])]
    if _true(found.get("push_to_hub")):
        repo = _one(found, "hub_model_id")
        if not repo:
            raise LmforgeError("--push_to_hub true needs --hub_model_id (the repository to push to)")
        flags += ["--push_to_hub", repo]
    elif "push_to_hub" in found and not _false(found["push_to_hub"]):  # lmforge's --push_to_hub REPO
        flags += ["--push_to_hub", found["push_to_hub"][0]]
    elif "hub_model_id" in found and "push_to_hub" not in found:
        flags += ["--push_to_hub", found["hub_model_id"][0]]
    return [*argv, *flags]


def _infer_flags(argv: list[str]) -> list[str]:
    """swift's `infer --val_dataset FILE` answers FILE; `infer --ckpt_dir X` without data is a chat."""
    data = ("dataset", "val_dataset", "custom_train_dataset_path", "custom_val_dataset_path")
    argv, found = take(argv, {*data, "eval_human"})
    files = [w for k in data for w in found.get(k, [])]
    files = [p for w in files for p in w.split(",") if p]
    if len(files) > 1:
        raise LmforgeError(f"infer: give one data file (got {', '.join(files)}); run infer once per file")
    if files and "#" in files[0]:
        raise LmforgeError(
            f"infer: {files[0]}: infer answers every row of a file; cut it to the rows you want "
            "instead of FILE#N"
        )
    if files:
        return [*argv, "--input", files[0]]
    swift_call = any(_key(t) in ("ckpt_dir", "model_id_or_path") for t in argv) or "eval_human" in found
    has_input = _leading_positionals(argv) or _flag_value(argv, ("input",)) is not None
    if swift_call and not has_input and (not found.get("eval_human") or _true(found["eval_human"])):
        return ["chat", *argv]  # swift infer without a dataset: an interactive chat
    return argv


def _serve_flags(argv: list[str]) -> list[str]:
    """swift's vLLM engine flags go on to `vllm serve` (with --infer_backend vllm)."""
    argv, found = take(argv, set(VLLM_FLAGS))
    backend = (_flag_value(argv, ("infer_backend", "backend")) or "").lower()
    if backend != "vllm":  # swift ignores them without vLLM too, but lmforge's own server caps images
        kept = found.get("limit_mm_per_prompt")
        return [*argv, f"--limit_mm_per_prompt={' '.join(kept)}"] if kept else argv
    extra: list[str] = []
    for key, words in found.items():
        if key in VLLM_SWITCHES:
            extra += [VLLM_SWITCHES[key]] if _true(words) else []
        else:
            extra += [VLLM_FLAGS[key] or "", " ".join(words)]
    argv, given = take(argv, {"vllm_args"})
    joined = " ".join([*given.get("vllm_args", []), *extra]).strip()
    return [*argv, f"--vllm_args={joined}"] if joined else argv


def _eval_flags(argv: list[str]) -> list[str]:
    """swift's --eval_dataset NAME (a bundled benchmark) and --eval_output_dir/--name."""
    argv, found = take(argv, {"eval_dataset", "eval_output_dir", "name"})
    names = [p for w in found.get("eval_dataset", []) for p in w.split(",") if p]
    if len(names) > 1:
        raise LmforgeError(f"--eval_dataset: one benchmark per run (got {', '.join(names)})")
    if names:
        name = names[0].lower()
        if name not in EVAL_BENCHMARKS and not Path(names[0]).is_dir():
            raise LmforgeError(
                f"--eval_dataset {names[0]}: not bundled; lmforge has {', '.join(EVAL_BENCHMARKS)} "
                "(or give a benchmark folder in C-Eval / CMMLU / MMLU layout)"
            )
        argv = [*argv, "--task", "mc", "--task_dir", name if name in EVAL_BENCHMARKS else names[0]]
    if ("eval_output_dir" in found or "name" in found) and not _flag_value(argv, ("output_dir",)):
        folder = Path(_one(found, "eval_output_dir") or "eval_outputs", _one(found, "name") or "default")
        argv = [*argv, "--output_dir", str(folder)]
    return argv
