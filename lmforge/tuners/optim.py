"""Optimisers tied to tuners: LoRA+ (peft), GaLore and APOLLO (transformers' `optim` with the
galore-torch / apollo-torch packages), BAdam (the badam package), and `--optim muon` (torch's
Muon + AdamW, lmforge/tuners/muon.py). Each needs its package; a missing one is a one-line error
naming what to install."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from typing import Any

from lmforge.errors import LmforgeError

EXTRA = "pip install 'lmforge[optim]'"


def _need(module: str, flag: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise LmforgeError(f"--{flag} needs the {package} package: {EXTRA} (or pip install {package})")


def training_overrides(cfg) -> dict[str, Any]:
    """TrainingArguments fields that select GaLore / APOLLO (transformers builds those optimisers)."""
    if is_muon(cfg):  # transformers has no "muon": lmforge builds it (optimizer_factory), the field
        return {"optim": "adamw_torch"}  # only has to pass TrainingArguments' check
    for kind, module, package in (
        ("galore", "galore_torch", "galore-torch"),
        ("apollo", "apollo_torch", "apollo-torch"),
    ):
        if not cfg[f"use_{kind}"]:
            continue
        _need(module, f"use_{kind}", package)
        target = cfg[f"{kind}_target"]
        targets = (
            "all-linear" if target.strip().lower() == "all" else [t.strip() for t in target.split(",") if t]
        )
        layerwise = cfg[f"{kind}_layerwise"]
        if layerwise and cfg["gradient_accumulation_steps"] != 1:
            raise LmforgeError(
                f"--{kind}_layerwise cannot accumulate gradients: set --gradient_accumulation_steps 1"
            )
        args = {
            "rank": cfg[f"{kind}_rank"],
            "update_proj_gap": cfg[f"{kind}_update_interval"],
            "scale": cfg[f"{kind}_scale"],
        }
        if kind == "galore":
            args["proj_type"] = cfg["galore_proj_type"]
        else:
            args.update(proj=cfg["apollo_proj"], scale_type=cfg["apollo_scale_type"])
        return {
            "optim": f"{kind}_adamw" + ("_layerwise" if layerwise else ""),
            "optim_target_modules": targets,
            "optim_args": ",".join(f"{k}={v}" for k, v in args.items()),
        }
    return {}


def optimizer_factory(cfg, tuner: str) -> Callable[[Any, Any], Any] | None:
    """A `(model, training_args) -> optimizer` for LoRA+, BAdam or Muon; None: the Trainer's default."""
    if is_muon(cfg):
        from lmforge.tuners.muon import muon_optimizer

        return muon_optimizer
    if cfg.get("loraplus_lr_ratio"):
        return _loraplus(cfg)
    if cfg["use_badam"]:
        _need("badam", "use_badam", "badam")
        return _badam(cfg)
    return None


def is_muon(cfg) -> bool:
    return str(cfg.get("optim") or "").strip().lower() == "muon"


# From-scratch pretraining's learning rate under Muon, its default optimiser there (bench/README.md,
# "time_to_loss.py": reaches the end-of-epoch loss of a MiniMind-style loop, AdamW 5e-4, ×9.75
# sooner on a 5M model and ×3.69 on the 26M preset; AdamW gets slower as its rate rises)
SCRATCH_MUON_LEARNING_RATE = 8e-3


def scratch_optimizer(stage: str, values: dict[str, Any], given: set[str] | frozenset = frozenset()) -> dict:
    """The optimiser values to set for from-scratch pretraining (no starting model), or {}: Muon at
    SCRATCH_MUON_LEARNING_RATE when neither `--optim` nor `--learning_rate` is given (`given`: the
    keys the user set), and that rate for `--optim muon` there without one. A learning rate the
    user gave is one for the optimiser every peer uses, so it keeps AdamW; so does every set-up
    Muon cannot train (an adapter tuner, GaLore / APOLLO / BAdam, DeepSpeed / FSDP, a torch
    without torch.optim.Muon)."""
    from lmforge.training.sharding import fsdp_on

    if stage != "pretrain" or values.get("model_name_or_path") or "learning_rate" in given:
        return {}
    if "optim" in given and not is_muon(values):
        return {}
    if values.get("tuner", "full") != "full" or any(
        values.get(k) for k in ("use_galore", "use_apollo", "use_badam")
    ):
        return {}
    if values.get("deepspeed") or fsdp_on(values.get("fsdp")):
        return {}
    import torch

    if not hasattr(torch.optim, "Muon"):
        return {}
    return {"optim": "muon", "learning_rate": SCRATCH_MUON_LEARNING_RATE}


def apply_scratch_optimizer(stage: str, cfg) -> None:
    """`scratch_optimizer` on a resolved config."""
    chosen = scratch_optimizer(stage, cfg.values, cfg.explicit)
    cfg.values.update(chosen)
    cfg.layered |= set(chosen)


def check_muon(cfg, tuner: str) -> None:
    """`--optim muon` where it cannot work: one line saying why."""
    if not is_muon(cfg):
        return
    others = [k for k in ("use_galore", "use_apollo", "use_badam") if cfg[k]]
    if others:
        raise LmforgeError(f"--optim muon and --{others[0]} are two optimisers: choose one")
    if tuner not in ("full", "freeze", "llama_pro"):
        raise LmforgeError(
            f"--optim muon orthogonalises the updates of whole weight matrices; --tuner {tuner} trains "
            "adapters instead: use --tuner full (or freeze / llama_pro)"
        )
    from lmforge.training.sharding import fsdp_on

    sharded = "--fsdp" if fsdp_on(cfg.get("fsdp")) else "--deepspeed" if cfg.get("deepspeed") else None
    if sharded:
        raise LmforgeError(
            f"--optim muon needs each weight matrix whole on every rank (its Newton-Schulz step works on "
            f"the full matrix) and {sharded} shards them: train with plain DDP (NPROC_PER_NODE=N) instead"
        )


def _adamw_kwargs(args) -> dict[str, Any]:
    return {
        "betas": (args.adam_beta1, args.adam_beta2),
        "eps": args.adam_epsilon,
        "weight_decay": args.weight_decay,
    }


def _loraplus(cfg):
    def make(model, args):
        import torch
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(
            model=model,
            optimizer_cls=torch.optim.AdamW,
            lr=args.learning_rate,
            loraplus_lr_ratio=cfg["loraplus_lr_ratio"],
            loraplus_lr_embedding=cfg["loraplus_lr_embedding"],
            **_adamw_kwargs(args),
        )

    return make


def _badam(cfg):
    def make(model, args):
        import torch
        from badam import BlockOptimizer

        from lmforge.models.parts import decoder_layers

        prefix = _layer_prefix(model, decoder_layers(model))
        blocks = [[f"{prefix}.{i}."] for i in range(len(decoder_layers(model)))]
        base = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=args.learning_rate, **_adamw_kwargs(args)
        )
        with warnings.catch_warnings():  # its fp32 notice: lmforge keeps fp32 master weights under amp
            warnings.filterwarnings("ignore", message="BAdam expect model")
            return BlockOptimizer(
                base_optimizer=base,
                named_parameters_list=list(model.named_parameters()),
                block_prefix_list=blocks,
                switch_block_every=cfg["badam_switch_interval"],
                start_block=cfg.get("badam_start_block"),
                switch_mode=cfg["badam_switch_mode"],
                verbose=cfg["badam_verbose"],
            )

    return make


def _layer_prefix(model, layers) -> str:
    first = layers[0]
    for name, mod in model.named_modules():
        if mod is first:
            return name.rsplit(".", 1)[0]
    raise LmforgeError("BAdam: cannot find the decoder layers' parameter names")
