"""Tuner flags: what is trained (`--tuner`) and the options of each tuner family (SPEC §7).

Names follow LLaMA-Factory (lora_rank, lora_target, freeze_trainable_layers, use_galore, use_badam…);
ms-swift and MiniMind spellings are aliases (lmforge/config/aliases/).
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.fields import arg

PEFT_TUNERS = (
    "lora",
    "dora",
    "pissa",
    "qlora",
    "adalora",
    "ia3",
    "vera",
    "boft",
    "fourierft",
    "loha",
    "lokr",
    "oft",
)
TUNERS = ("full", "freeze", "llama_pro", *PEFT_TUNERS)


@dataclass
class TunerArgs:
    tuner: str = arg(
        "full",
        "What is trained: full, freeze, llama_pro, or a PEFT adapter: lora, dora, pissa, qlora, adalora, "
        "ia3, vera, boft, fourierft, loha, lokr, oft",
        choices=TUNERS,
    )
    # --- LoRA and its variants -------------------------------------------------------------
    lora_rank: int = arg(8, "Adapter rank r (LoRA, DoRA, PiSSA, AdaLoRA's init, LoHa, LoKr)")
    lora_alpha: float | None = arg(None, "LoRA scaling alpha (default: 2 x lora_rank)")
    lora_dropout: float = arg(0.0, "Dropout on the adapter input")
    lora_target: str = arg(
        "all",
        "Modules that get adapters: all (every linear layer but the output head), a comma list "
        "(q_proj,v_proj), or a regex matched against full module names",
        multi=True,
    )
    modules_to_save: str | None = arg(
        None,
        "Comma list of extra modules trained in full and saved with the adapter (e.g. embed_tokens,lm_head)",
        multi=True,
    )
    train_target: str | None = arg(
        None,
        "Audio and vision LLMs: parts that train, comma list of encoder, projector, decoder, embed_tokens, "
        "lm_head (audio default encoder,projector,decoder; vision default: what the --freeze_* flags "
        "leave). Adapters go on every linear layer of encoder/projector/decoder (attention and MLP); "
        "embed_tokens/lm_head train in full",
        multi=True,
    )
    # --- vision LLMs (LLaMA-Factory's names; ms-swift's --freeze_vit is an alias) --------------
    freeze_vision_tower: bool = arg(
        True, "Vision LLMs: keep the vision encoder frozen (no adapters on it); false trains it too"
    )
    freeze_multi_modal_projector: bool = arg(
        True, "Vision LLMs: keep the projector between vision encoder and language model frozen"
    )
    freeze_language_model: bool = arg(
        False, "Vision LLMs: keep the language model frozen (train only what the two flags above free)"
    )
    merge_lora: bool = arg(
        False,
        "After training an adapter, save the merged full model in the run folder (adapter in RUN/adapter)",
    )
    lora_bias: str = arg(
        "none", "Train biases too: none, all, lora_only", choices=("none", "all", "lora_only")
    )
    use_dora: bool = arg(False, "DoRA: weight-decomposed LoRA (--tuner dora is the same)")
    use_rslora: bool = arg(False, "rsLoRA: scale by alpha/sqrt(r) instead of alpha/r")
    init_lora_weights: str = arg(
        "true", "LoRA init: true, gaussian, pissa, pissa_niter_N, olora (as peft's init_lora_weights)"
    )
    pissa_init: bool = arg(
        False, "PiSSA: initialise adapters from the principal singular vectors (--tuner pissa)"
    )
    pissa_iter: int = arg(16, "PiSSA fast-SVD iterations (-1: exact SVD)")
    pissa_convert: bool = arg(
        True, "Save PiSSA adapters converted to plain LoRA on the original base (needed to use them anywhere)"
    )
    loraplus_lr_ratio: float | None = arg(None, "LoRA+: learning-rate ratio of B over A matrices (e.g. 16)")
    loraplus_lr_embedding: float = arg(1e-6, "LoRA+: learning rate of adapted embedding layers")
    adapter_name_or_path: str | None = arg(
        None,
        "Start from existing adapter folder(s), comma-separated; all but the last are merged into the base",
        multi=True,
    )
    create_new_adapter: bool = arg(
        False, "With --adapter_name_or_path: merge them all and train a fresh adapter"
    )
    lora_name: str | None = arg(
        None, "MiniMind train_lora: name the run save_dir/lora/NAME_<hidden> (implies --tuner lora)"
    )
    # --- other PEFT tuners -----------------------------------------------------------------
    adalora_init_r: int = arg(12, "AdaLoRA: initial rank of every adapter")
    adalora_target_r: int = arg(8, "AdaLoRA: average rank budget after pruning")
    adalora_tinit: int = arg(0, "AdaLoRA: warm-up steps before ranks are pruned")
    adalora_tfinal: int = arg(0, "AdaLoRA: final steps with ranks fixed")
    adalora_delta_t: int = arg(1, "AdaLoRA: steps between two rank reallocations")
    vera_rank: int = arg(256, "VeRA: rank of the shared random projections")
    vera_d_initial: float = arg(0.1, "VeRA: initial value of the d scaling vector")
    boft_block_size: int = arg(4, "BOFT: block size (0: set --boft_block_num instead)")
    boft_block_num: int = arg(0, "BOFT: number of blocks (0: set by --boft_block_size)")
    boft_n_butterfly_factor: int = arg(1, "BOFT: butterfly factors (1 = OFT-like block-diagonal)")
    fourier_n_frequency: int = arg(1000, "FourierFT: learnable spectral coefficients per layer")
    fourier_scaling: float = arg(150.0, "FourierFT: scaling of the spectral update")
    oft_block_size: int = arg(32, "OFT: block size of the orthogonal matrices")
    # --- freeze / LLaMA-Pro --------------------------------------------------------------
    freeze_trainable_layers: int = arg(
        2, "freeze / llama_pro: train the last N decoder layers (negative: the first N)"
    )
    freeze_trainable_modules: str = arg(
        "all",
        "freeze / llama_pro: modules trained inside those layers: all, or a comma list (mlp,self_attn)",
        multi=True,
    )
    freeze_extra_modules: str | None = arg(
        None,
        "freeze / llama_pro: modules outside the decoder layers also trained (embed_tokens,norm,lm_head)",
        multi=True,
    )
    expand_layers: int = arg(
        0,
        "llama_pro: insert this many identity-initialised blocks (must divide the layer count); only they train",
    )
    # --- ms-swift's partial full tuning (lmforge/tuners/partial.py) ---------------------------
    freeze_parameters: str | None = arg(
        None, "full: freeze parameters whose names start with these prefixes (comma list)", multi=True
    )
    freeze_parameters_ratio: float = arg(0.0, "full: freeze this bottom fraction (0-1) of all parameters")
    additional_trainable_parameters: str | None = arg(
        None, "full: keep parameters with these name prefixes trainable despite the two above", multi=True
    )
    # --- QLoRA -------------------------------------------------------------------------------
    quantization_bit: int | None = arg(None, "Load the base in 4 or 8 bits (QLoRA; CUDA + bitsandbytes)")
    quantization_type: str = arg("nf4", "4-bit type: nf4 or fp4", choices=("nf4", "fp4"))
    double_quantization: bool = arg(True, "4-bit: also quantise the quantisation constants")
    # --- optimisers for full tuning ----------------------------------------------------------
    use_galore: bool = arg(False, "GaLore: low-rank gradient projection (pip install galore-torch)")
    galore_target: str = arg(
        "all", "GaLore: modules projected: all (every linear layer) or a comma list", multi=True
    )
    galore_rank: int = arg(16, "GaLore: rank of the projected gradients")
    galore_update_interval: int = arg(200, "GaLore: steps between projection updates")
    galore_scale: float = arg(0.25, "GaLore: scale of the projected update")
    galore_proj_type: str = arg(
        "std", "GaLore: projection type", choices=("std", "reverse_std", "right", "left", "full")
    )
    galore_layerwise: bool = arg(False, "GaLore: update layer by layer during backward (saves memory)")
    use_apollo: bool = arg(False, "APOLLO: approximated gradient scaling (pip install apollo-torch)")
    apollo_target: str = arg("all", "APOLLO: modules scaled: all or a comma list", multi=True)
    apollo_rank: int = arg(16, "APOLLO: rank of the auxiliary space")
    apollo_update_interval: int = arg(200, "APOLLO: steps between projection updates")
    apollo_scale: float = arg(32.0, "APOLLO: scale of the update")
    apollo_proj: str = arg("random", "APOLLO: projection: random or svd", choices=("random", "svd"))
    apollo_scale_type: str = arg(
        "channel", "APOLLO: channel or tensor scaling", choices=("channel", "tensor")
    )
    apollo_layerwise: bool = arg(False, "APOLLO: update layer by layer during backward")
    use_badam: bool = arg(False, "BAdam: block-coordinate Adam, one block at a time (pip install badam)")
    badam_mode: str = arg(
        "layer",
        "BAdam: layer (one decoder layer at a time; ratio mode is not offered: its sparse gradients "
        "do not go through gradient clipping)",
        choices=("layer",),
    )
    badam_start_block: int | None = arg(None, "BAdam layer mode: first block index")
    badam_switch_mode: str = arg(
        "ascending", "BAdam layer mode: block order", choices=("ascending", "descending", "random", "fixed")
    )
    badam_switch_interval: int = arg(50, "BAdam layer mode: steps per block (-1: never switch)")
    badam_verbose: int = arg(0, "BAdam: 0 quiet, 1 block switches, 2 trainable parameters")
