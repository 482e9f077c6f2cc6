"""Apply `--tuner` to a loaded model, independent of the stage: full, freeze, LLaMA-Pro, or a PEFT
adapter (peft does the adapters; lmforge maps the flags, picks targets and reports what trains).

`apply_tuner` returns a `Tuned`: the model to train plus what the pipeline must wire in — trainer
callbacks (AdaLoRA's rank budget), an optimizer factory (LoRA+, BAdam) and, for PiSSA, the final
save that converts the adapter back to plain LoRA on the original base.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.models.parts import decoder_layers
from lmforge.tuners.args import PEFT_TUNERS
from lmforge.tuners.optim import check_muon, is_muon, optimizer_factory

log = logging.getLogger("lmforge")

_REGEX_CHARS = set("^$*+?()[]{}|\\")


@dataclass
class Tuned:
    model: Any
    report: dict[str, Any]
    callbacks: list[Any] = field(default_factory=list)
    optimizer_factory: Callable[[Any, Any], Any] | None = None
    save: Callable[[str], None] | None = None  # replaces trainer.save_model for the final save


def tuner_name(cfg) -> str:
    """The effective tuner: MiniMind's --lora_name and a set --quantization_bit imply adapters."""
    name = cfg["tuner"]
    if cfg.get("lora_name") and name == "full":
        name = "lora"
    if cfg.get("quantization_bit") and name == "lora":
        name = "qlora"
    return name


def is_peft(cfg) -> bool:
    return tuner_name(cfg) in PEFT_TUNERS


def check_tuner_config(cfg, *, has_base: bool) -> None:
    """Errors that should stop a run before any data is read."""
    name = tuner_name(cfg)
    if name in PEFT_TUNERS and not has_base:
        raise LmforgeError(
            f"--tuner {name} adapts an existing model, but none was given: pass --model_name_or_path "
            "(or MiniMind's --from_weight NAME)"
        )
    # a recorded lmforge_args.yaml holds every key: only a value other than the default was asked for
    lora_flags = [
        k
        for k in ("lora_rank", "lora_alpha", "lora_dropout")
        if k in cfg.explicit and cfg[k] != cfg.specs[k].default
    ]
    if lora_flags and name not in PEFT_TUNERS:
        raise LmforgeError(
            f"--{lora_flags[0]} {cfg[lora_flags[0]]}: no adapter is trained with --tuner {name}; "
            f"add --tuner lora (or drop --{lora_flags[0]})"
        )
    if name == "llama_pro" and cfg["expand_layers"] < 1:
        raise LmforgeError(
            "--tuner llama_pro needs --expand_layers N (blocks to insert, N divides the layer count)"
        )
    if name == "qlora" or cfg.get("quantization_bit"):
        check_quantization(cfg)
    if cfg.get("freeze_parameters_ratio") is not None:
        from lmforge.tuners.partial import check_partial

        check_partial(cfg, name)
    optims = [k for k in ("use_galore", "use_apollo", "use_badam") if cfg[k]]
    if len(optims) > 1:
        raise LmforgeError(f"choose one of --{', --'.join(optims)}")
    if optims and name != "full":
        raise LmforgeError(f"--{optims[0]} trains the whole model: use it with --tuner full, not {name}")
    check_muon(cfg, name)
    if cfg.get("loraplus_lr_ratio") and name not in ("lora", "dora", "pissa", "qlora"):
        raise LmforgeError(f"--loraplus_lr_ratio applies to LoRA adapters, not --tuner {name}")
    if cfg["pissa_init"] or name == "pissa":
        if not cfg["pissa_convert"]:
            raise LmforgeError(
                "--pissa_convert false would save an adapter that only fits PiSSA's residual base, "
                "which is not saved; keep the default (true)"
            )


def check_quantization(cfg) -> None:
    import torch

    bits = cfg.get("quantization_bit")
    if bits not in (4, 8):
        raise LmforgeError(f"--quantization_bit must be 4 or 8 for QLoRA; got {bits!r}")
    if not torch.cuda.is_available():
        raise LmforgeError(
            f"--quantization_bit {bits} (QLoRA) needs a CUDA GPU: bitsandbytes' quantised training "
            "kernels run on CUDA only. On CPU use --tuner lora without --quantization_bit"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise LmforgeError("--quantization_bit needs bitsandbytes: pip install 'lmforge[bnb]'") from None


def quantization_config(cfg):
    """The `BitsAndBytesConfig` for loading a QLoRA base (None without --quantization_bit)."""
    if not cfg.get("quantization_bit"):
        return None
    import torch
    from transformers import BitsAndBytesConfig

    check_quantization(cfg)
    if cfg["quantization_bit"] == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg["quantization_type"],
        bnb_4bit_use_double_quant=cfg["double_quantization"],
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
    )


def apply_tuner(model, cfg, *, run_dir: str, num_training_steps: int) -> Tuned:
    """Make only what `--tuner` names trainable (wrapping in a PeftModel for adapters)."""
    from lmforge.tuners import vision

    name = tuner_name(cfg)
    tuned = Tuned(model, {})
    vision_model = vision.is_vision(model)
    if name == "full" and vision_model:
        vision.apply_vision_full(model, cfg)
    elif name == "full" and cfg.get("train_target"):
        from lmforge.models.parts import set_trainable_parts

        set_trainable_parts(model, cfg["train_target"])
    if name == "full" and cfg.get("freeze_parameters_ratio") is not None:
        from lmforge.tuners.partial import apply_partial, wants_partial

        if wants_partial(cfg):
            apply_partial(model, cfg)
    if name == "freeze":
        _freeze(model, cfg, _trainable_layer_ids(model, cfg["freeze_trainable_layers"]))
        if vision_model:
            vision.apply_vision_freeze(model, cfg)
    elif name == "llama_pro":
        from lmforge.tuners.llama_pro import expand_layers

        new = expand_layers(model, cfg["expand_layers"])
        _freeze(model, cfg, new)
        tuned.report["expanded layers"] = ",".join(map(str, new))
    elif name in PEFT_TUNERS:
        tuned = _apply_peft(model, cfg, name, run_dir, num_training_steps)
    tuned.optimizer_factory = optimizer_factory(cfg, name)
    tuned.report.update(trainable_report(tuned.model))
    tuned.report["tuner"] = name + "".join(
        f" + {k[4:]}" for k in ("use_galore", "use_apollo", "use_badam") if cfg[k]
    )
    if is_muon(cfg):
        tuned.report["tuner"] += " + Muon (AdamW outside the blocks' matrices)"
    if cfg.get("loraplus_lr_ratio"):
        tuned.report["tuner"] += f" + LoRA+ (ratio {cfg['loraplus_lr_ratio']:g})"
    return tuned


def trainable_report(model) -> dict[str, Any]:
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return {
        "trainable params": trainable,
        "all params": total,
        "trainable %": round(100.0 * trainable / max(total, 1), 4),
    }


# --- freeze ---------------------------------------------------------------------------------
def _trainable_layer_ids(model, n: int) -> list[int]:
    num = len(decoder_layers(model))
    if n == 0 or abs(n) > num:
        raise LmforgeError(
            f"--freeze_trainable_layers must be 1..{num} or -1..-{num} for this model; got {n}"
        )
    return list(range(num - n, num)) if n > 0 else list(range(-n))


def _freeze(model, cfg, layer_ids: list[int]) -> None:
    """Train only the given decoder layers (their `freeze_trainable_modules`) + `freeze_extra_modules`."""
    layers = decoder_layers(model)
    modules = _split(cfg["freeze_trainable_modules"])
    extra = _split(cfg.get("freeze_extra_modules"))
    for p in model.parameters():
        p.requires_grad_(False)
    for i in layer_ids:
        names = dict(layers[i].named_modules())
        wanted = ["all"] if modules == ["all"] else modules
        for m in wanted:
            if m == "all":
                target = layers[i]
            elif m in names:
                target = names[m]
            else:
                tops = sorted({n.split(".")[0] for n in names if n})
                raise LmforgeError(
                    f"--freeze_trainable_modules: no module {m!r} in a decoder layer (has: {', '.join(tops)})"
                )
            for p in target.parameters():
                p.requires_grad_(True)
    if extra:
        named = dict(model.named_modules())
        for m in extra:
            hits = [mod for n, mod in named.items() if n == m or n.endswith("." + m)]
            if not hits:
                raise LmforgeError(
                    f"--freeze_extra_modules: no module named {m!r} (try embed_tokens, norm, lm_head)"
                )
            for mod in hits:
                for p in mod.parameters():
                    p.requires_grad_(True)


# --- PEFT -------------------------------------------------------------------------------------
def parse_targets(spec: str | None):
    """`all` → every linear layer but the head; a regex stays a string (peft full-matches it);
    otherwise a list of module-name suffixes."""
    spec = (spec or "all").strip()
    if spec.lower() in ("all", "all-linear", "all_linear", "default"):
        return "all-linear"
    if _REGEX_CHARS & set(spec) or ".*" in spec:
        return spec
    return _split(spec)


def _split(spec: str | None) -> list[str]:
    return [s.strip() for s in (spec or "").split(",") if s.strip()]


def _modules_to_save(model, spec: str | None) -> list[str] | None:
    names = []
    for m in _split(spec):
        if m.upper() == "EMBEDDING":
            emb = model.get_input_embeddings()
            m = next(n for n, mod in model.named_modules() if mod is emb).split(".")[-1]
        names.append(m)
    return names or None


def _linear_leaf_names(model) -> list[str]:
    import torch

    head = model.get_output_embeddings()
    return sorted(
        {
            n.split(".")[-1]
            for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m is not head
        }
    )


def _feedforward_names(model, targets) -> list[str]:
    """IA3 scales the input of feed-forward layers: the targeted linear layers inside an MLP block."""
    import torch

    out = set()
    for n, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and (".mlp." in n or ".feed_forward." in n):
            leaf = n.split(".")[-1]
            if targets == "all-linear" or (isinstance(targets, list) and leaf in targets):
                out.add(leaf)
            elif isinstance(targets, str) and re.fullmatch(targets, n):
                out.add(leaf)
    return sorted(out)


def peft_config(model, cfg, name: str, num_training_steps: int):
    import peft

    targets = parse_targets(cfg["lora_target"])
    to_save = _modules_to_save(model, cfg.get("modules_to_save"))
    from lmforge.models.audio import is_audio_config
    from lmforge.models.parts import train_target_modules
    from lmforge.tuners.vision import is_vision, vision_train_parts

    multimodal = is_audio_config(model.config) or is_vision(model)
    if multimodal and ("lora_target" not in cfg.explicit or cfg.get("train_target")):
        spec = vision_train_parts(cfg, adapters=True) if is_vision(model) else cfg.get("train_target")
        targets, full = train_target_modules(model, spec)
        to_save = sorted({*(to_save or []), *full}) or None
        if targets is None:  # only embed_tokens / lm_head: nothing gets an adapter
            raise LmforgeError(
                f"--train_target {cfg.get('train_target')}: adapters need encoder, projector or decoder; "
                "to train only embed_tokens/lm_head use --tuner full --train_target ..."
            )
    common = {
        "target_modules": targets,
        "modules_to_save": to_save,
        "task_type": "CAUSAL_LM",
    }
    r = cfg["lora_rank"]
    alpha = cfg.get("lora_alpha") or 2 * r
    if name in ("lora", "dora", "pissa", "qlora"):
        init: Any = cfg["init_lora_weights"]
        init = {"true": True, "false": False}.get(str(init).lower(), init)
        if name == "pissa" or cfg["pissa_init"]:
            init = "pissa" if cfg["pissa_iter"] == -1 else f"pissa_niter_{cfg['pissa_iter']}"
        return peft.LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=cfg["lora_dropout"],
            bias=cfg["lora_bias"],
            use_dora=cfg["use_dora"] or name == "dora",
            use_rslora=cfg["use_rslora"],
            init_lora_weights=init,
            **common,
        )
    if name == "adalora":
        return peft.AdaLoraConfig(
            init_r=cfg["adalora_init_r"],
            target_r=cfg["adalora_target_r"],
            tinit=cfg["adalora_tinit"],
            tfinal=cfg["adalora_tfinal"],
            deltaT=cfg["adalora_delta_t"],
            total_step=max(num_training_steps, 1),
            lora_alpha=alpha,
            lora_dropout=cfg["lora_dropout"],
            **common,
        )
    if name == "ia3":
        if targets == "all-linear":  # IA3 checks feed-forward ⊆ targets, so spell the targets out
            common["target_modules"] = _linear_leaf_names(model)
        return peft.IA3Config(feedforward_modules=_feedforward_names(model, targets), **common)
    if name == "vera":
        return peft.VeraConfig(
            r=cfg["vera_rank"], d_initial=cfg["vera_d_initial"], vera_dropout=cfg["lora_dropout"], **common
        )
    if name == "boft":
        _skip_boft_kernel_build()
        return peft.BOFTConfig(
            boft_block_size=cfg["boft_block_size"],
            boft_block_num=cfg["boft_block_num"],
            boft_n_butterfly_factor=cfg["boft_n_butterfly_factor"],
            boft_dropout=cfg["lora_dropout"],
            **common,
        )
    if name == "fourierft":
        return peft.FourierFTConfig(
            n_frequency=cfg["fourier_n_frequency"], scaling=cfg["fourier_scaling"], **common
        )
    if name == "loha":
        return peft.LoHaConfig(r=r, alpha=alpha, module_dropout=cfg["lora_dropout"], **common)
    if name == "lokr":
        return peft.LoKrConfig(r=r, alpha=alpha, module_dropout=cfg["lora_dropout"], **common)
    if name == "oft":
        return peft.OFTConfig(
            r=0, oft_block_size=cfg["oft_block_size"], module_dropout=cfg["lora_dropout"], **common
        )
    raise LmforgeError(f"unknown tuner {name!r}")


def _skip_boft_kernel_build() -> None:
    """Without CUDA, peft retries (and fails) to compile BOFT's CUDA kernel for every layer, seconds
    each; its pure-torch path is what runs anyway, so report the kernel as absent up front."""
    import torch

    if not torch.cuda.is_available():
        import peft.tuners.boft.layer as boft_layer

        boft_layer.get_fbd_cuda = lambda: None


def _apply_peft(model, cfg, name: str, run_dir: str, num_training_steps: int) -> Tuned:
    try:
        import peft
    except ImportError:
        raise LmforgeError(f"--tuner {name} needs peft: pip install peft") from None
    base = getattr(model, "name_or_path", "") or ""
    if base and Path(base).exists():
        model.name_or_path = model.config._name_or_path = str(Path(base).resolve())
    if cfg.get("quantization_bit"):
        model = peft.prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(cfg.get("gradient_checkpointing"))
        )
    if cfg.get("gradient_checkpointing"):
        model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    model = _load_adapters(model, cfg)
    if isinstance(model, peft.PeftModel):  # continue training the last given adapter
        tuned = Tuned(model, {"adapter": cfg["adapter_name_or_path"]})
    else:
        config = peft_config(model, cfg, name, num_training_steps)
        try:
            with warnings.catch_warnings():  # BOFT's optional CUDA kernel: irrelevant, pure-torch path used
                warnings.filterwarnings("ignore", message=".*(CUDA extension|boft_n_butterfly_factor).*")
                model = peft.get_peft_model(model, config)
        except (ValueError, TypeError, RuntimeError) as e:
            msg = " ".join(str(e).split())
            raise LmforgeError(f"--tuner {name} (--lora_target {cfg['lora_target']}): {msg}") from None
        tuned = Tuned(model, {})
    if name == "adalora":
        tuned.callbacks.append(_AdaLoraBudget(model))
    if name == "pissa" or cfg["pissa_init"]:
        tuned.save = _pissa_saver(model, run_dir)
    return tuned


def _load_adapters(model, cfg):
    """`--adapter_name_or_path A,B`: merge A into the base, continue training B (or merge both and
    start a new adapter with --create_new_adapter)."""
    paths = _split(cfg.get("adapter_name_or_path"))
    if not paths:
        return model
    from peft import PeftModel

    for p in paths:
        if not Path(p, "adapter_config.json").is_file():
            raise LmforgeError(f"--adapter_name_or_path {p}: no adapter_config.json there")
    merge, resume = (paths, None) if cfg["create_new_adapter"] else (paths[:-1], paths[-1])
    for p in merge:
        model = PeftModel.from_pretrained(model, p).merge_and_unload()
    if resume:
        model = PeftModel.from_pretrained(model, resume, is_trainable=True)
    return model


class _AdaLoraBudget:
    """AdaLoRA reallocates rank after each optimizer step, before gradients are cleared."""

    def __new__(cls, model):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_optimizer_step(self, args, state, control, **kwargs):
                model.base_model.update_and_allocate(state.global_step)

        return Callback()


def _pissa_saver(model, run_dir: str) -> Callable[[str], None]:
    """Keep PiSSA's initial adapter, and at the end save the trained one converted to plain LoRA
    (rank 2r) on the original base weights, so it works like any LoRA adapter (peft does the math)."""
    init_dir = Path(run_dir, "pissa_init")
    cfg = model.peft_config["default"]
    if not (init_dir / "adapter_config.json").exists():
        init_lora = cfg.init_lora_weights
        cfg.init_lora_weights = True  # the saved initial adapter loads without redoing the SVD
        model.save_pretrained(str(init_dir))
        cfg.init_lora_weights = init_lora

    def save(out_dir: str) -> None:
        model.save_pretrained(out_dir, path_initial_model_for_weight_conversion=str(init_dir))

    return save
